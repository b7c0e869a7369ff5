"""Gurobi through gurobipy's matrix API, from the same Query as HiGHS (lowered by :mod:`.milp`).

Licence: the pip package ships a size-limited licence (2000 variables and 2000 linear constraints).  Whether the
installed licence is limited is found once per process by a tiny probe model (2001 variables); the size of a
problem is then counted *after* the MILP lowering and after splitting ranged rows the way they are passed
(a ranged row is two Gurobi constraints), so the limit is detected before anything is solved.

Automatic choice: gurobi is preferred only for MILPs and only with an unrestricted licence.  With the pip licence
`auto` always uses HiGHS, so whether a problem runs on Gurobi never depends on its size crossing the limit and
results stay reproducible across machines with and without gurobipy (see docs/backends.md, "Gurobi").
"""

from __future__ import annotations

import time
from functools import lru_cache

import numpy as np
import scipy.sparse as sp

from ..query import Query
from ..errors import SolverUnavailable
from .base import (FEASIBLE, INFEASIBLE, OPTIMAL, TIMEOUT, UNBOUNDED, UNKNOWN, Solution, SolveOptions,
                   module_available)
from .milp import LinearModel, lift_start, lower_to_milp

SIZE_LIMIT = 2000  # variables and linear constraints of the pip package's licence
_LIMIT_ERRNO = 10010  # "Model too large for size-limited license"


@lru_cache(maxsize=1)
def _env():
    """One quiet environment per process (``OutputFlag`` is set before ``start`` so no banner is printed)."""
    import gurobipy as gp

    env = gp.Env(empty=True)
    env.setParam("OutputFlag", 0)
    env.start()
    return env


@lru_cache(maxsize=1)
def licence_state() -> str:
    """``"full"``, ``"limited"`` (size-limited pip licence) or ``"none: <reason>"``, probed once."""
    try:
        import gurobipy as gp
    except ImportError:
        return "none: gurobipy is not installed"
    try:
        env = _env()
        probe = gp.Model(env=env)
        probe.addMVar(SIZE_LIMIT + 1, lb=0.0)
        probe.optimize()
        probe.dispose()
        return "full"
    except gp.GurobiError as exc:
        if getattr(exc, "errno", None) == _LIMIT_ERRNO:
            return "limited"
        return f"none: {exc}"


def _split_rows(m: LinearModel) -> tuple[sp.csr_matrix, np.ndarray, np.ndarray, np.ndarray]:
    """Rows as Gurobi takes them: ``(A, sense, rhs, origin)`` with each finite side of a ranged row its own
    constraint (``origin`` maps every Gurobi row back to the model row it came from, for IIS labels)."""
    lo, hi = m.row_lo, m.row_hi
    eq = np.isfinite(lo) & np.isfinite(hi) & (lo == hi)
    ge = np.isfinite(lo) & ~eq
    le = np.isfinite(hi) & ~eq
    parts = [(np.nonzero(eq)[0], "=", lo), (np.nonzero(ge)[0], ">", lo), (np.nonzero(le)[0], "<", hi)]
    origin = np.concatenate([p[0] for p in parts])
    sense = np.concatenate([np.full(p[0].size, p[1]) for p in parts]) if origin.size else np.zeros(0, dtype="<U1")
    rhs = np.concatenate([p[2][p[0]] for p in parts])
    return sp.csr_matrix(m.A)[origin], sense, rhs, origin


def _model_size(m: LinearModel) -> tuple[int, int]:
    lo, hi = m.row_lo, m.row_hi
    eq = np.isfinite(lo) & np.isfinite(hi) & (lo == hi)
    rows = int(np.count_nonzero(eq) + np.count_nonzero(np.isfinite(lo) & ~eq) + np.count_nonzero(np.isfinite(hi) & ~eq))
    return m.n_vars, rows


class GurobiBackend:
    name = "gurobi"
    capabilities = frozenset({"lp", "milp", "core", "bigm", "warm_start"})

    def available(self) -> bool:
        return module_available("gurobipy")

    def version(self) -> str:
        try:
            import gurobipy as gp

            return ".".join(str(v) for v in gp.gurobi.version())
        except Exception:  # pragma: no cover - broken installs
            return "unknown"

    def check_size(self, query: Query) -> str | None:
        """Why this installation cannot solve ``query`` (no licence, or over the pip licence's size), or None."""
        state = licence_state()
        if state.startswith("none"):
            return f"no usable Gurobi licence ({state[6:]})"
        if state == "full":
            return None
        if query.n_vars > SIZE_LIMIT or query.n_rows > SIZE_LIMIT:  # lowering only adds: no need to lower
            return (f"the problem has {query.n_vars} variables and {query.n_rows} constraints, over the "
                    f"size-limited licence's {SIZE_LIMIT}")
        n_vars, n_rows = _model_size(lower_to_milp(query))
        if n_vars > SIZE_LIMIT or n_rows > SIZE_LIMIT:
            return (f"after the MILP lowering the problem has {n_vars} variables and {n_rows} constraints, over "
                    f"the size-limited licence's {SIZE_LIMIT}")
        return None

    def prefer_automatically(self, query: Query) -> bool:
        """Only MILPs, and only with an unrestricted licence (see the module docstring for why)."""
        return query.problem_class == "MILP" and licence_state() == "full"

    def solve(self, query: Query, options: SolveOptions) -> Solution:
        import gurobipy as gp
        from gurobipy import GRB

        t0 = time.perf_counter()
        m = lower_to_milp(query)
        is_mip = bool(np.any(m.integer))
        try:
            model = gp.Model(query.name, env=_env())
        except gp.GurobiError as exc:
            raise SolverUnavailable(f"gurobi cannot start: {exc}", help="use `using highs`") from exc
        try:
            self._set_params(model, options, is_mip)
            vtype = np.where(m.integer, GRB.INTEGER, GRB.CONTINUOUS) if is_mip else GRB.CONTINUOUS
            x = model.addMVar(m.n_vars, lb=np.where(np.isfinite(m.lb), m.lb, -GRB.INFINITY),
                              ub=np.where(np.isfinite(m.ub), m.ub, GRB.INFINITY), obj=m.c, vtype=vtype)
            model.ObjCon = float(m.offset)
            A, sense, rhs, origin = _split_rows(m)
            if A.shape[0]:
                model.addMConstr(A, x, sense, rhs)
            if is_mip and options.start is not None:
                start = lift_start(query, m, np.asarray(options.start, dtype=np.float64))
                if start is not None:
                    x.Start = start
            try:
                model.optimize()
            except gp.GurobiError as exc:
                if getattr(exc, "errno", None) == _LIMIT_ERRNO:
                    raise SolverUnavailable("gurobi refused the problem: over the size-limited licence",
                                            help="remove `using gurobi` to let patchlang use highs") from exc
                raise
            sol = self._solution(model, x, m, is_mip, options)
            if sol.status == INFEASIBLE:
                sol.core = self._core(model, query, m, origin)
        finally:
            model.dispose()
        if sol.x is not None:
            sol.x = sol.x[: m.n_original]
        sol.seconds = time.perf_counter() - t0
        return sol

    @staticmethod
    def _set_params(model, options: SolveOptions, is_mip: bool) -> None:
        model.Params.OutputFlag = 1 if options.verbose else 0
        model.Params.Seed = int(options.seed)
        # Gurobi's defaults (1e-6 rows, 1e-5 integrality) let a big-M row with a "binary" of 1e-5 bend a goal by
        # ~1e-5, enough for the independent float64 check to reject the patch; the tightest values it allows
        # make its answers as exact as HiGHS's.
        model.Params.FeasibilityTol = 1e-9
        model.Params.IntFeasTol = 1e-9
        if options.time_limit is not None:
            model.Params.TimeLimit = float(options.time_limit)
        if options.threads is not None:
            model.Params.Threads = int(options.threads)
        if is_mip and options.mip_gap is not None:
            model.Params.MIPGap = float(options.mip_gap)
        for key, value in options.extra.items():
            model.setParam(key, value)

    def _solution(self, model, x, m: LinearModel, is_mip: bool, options: SolveOptions) -> Solution:
        from gurobipy import GRB

        status = model.Status
        if status == GRB.INF_OR_UNBD:
            # Presolve could not tell which: switch off dual reductions for a definite answer.
            model.Params.DualReductions = 0
            model.optimize()
            status = model.Status
        has = model.SolCount > 0
        xs = np.asarray(x.X, dtype=np.float64) if has else None
        objective = float(model.ObjVal) if has else None
        bound = float(model.ObjBound) if is_mip and status != GRB.INFEASIBLE else objective
        if status == GRB.OPTIMAL:
            st = OPTIMAL
        elif status == GRB.INFEASIBLE:
            st = INFEASIBLE
        elif status == GRB.UNBOUNDED:
            st = UNBOUNDED
        elif status in (GRB.TIME_LIMIT, GRB.NODE_LIMIT, GRB.ITERATION_LIMIT, GRB.SOLUTION_LIMIT,
                        GRB.INTERRUPTED, GRB.SUBOPTIMAL):
            st = FEASIBLE if has else TIMEOUT
        else:
            st = FEASIBLE if has else UNKNOWN
        gap = float(model.MIPGap) if is_mip and has else 0.0
        return Solution(status=st, x=xs, objective=objective, bound=bound, backend=self.name,
                        backend_version=self.version(), message=f"gurobi status {status}",
                        stats={"mip_gap": gap, "nodes": int(model.NodeCount) if is_mip else 0})

    @staticmethod
    def _core(model, query: Query, m: LinearModel, origin: np.ndarray) -> list[str]:
        """Labels of the query rows in an irreducible infeasible subset (rows the lowering added for ReLUs or
        disjunctions are named by their atom kind only); empty when Gurobi cannot compute one quickly."""
        import gurobipy as gp

        try:
            model.Params.TimeLimit = 10.0
            model.computeIIS()
            in_iis = np.array(model.getAttr("IISConstr", model.getConstrs()), dtype=bool)
            xs = model.getVars()[: m.n_original]
            bounds_used = any(model.getAttr("IISLB", xs)) or any(model.getAttr("IISUB", xs))
        except gp.GurobiError:
            return []
        labels: list[str] = []
        source = getattr(query, "var_bound_source", None)
        if bounds_used and source is not None:
            labels.append(source.label)
        for row in np.unique(origin[in_iis]):
            block = query.row_block_of(int(row)) if row < query.n_rows else None
            label = block.label if block is not None else "the ReLU / disjunction encoding"
            if label not in labels:
                labels.append(label)
        return labels
