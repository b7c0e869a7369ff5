"""The default backend: HiGHS through highspy, passed the whole model at once (``passModel``).

Solver choice for LPs matters a lot here: the patch LPs are short and wide with dense rows (one coefficient
per parameter of the edited layer), where interior point beats dual simplex by a large factor, so LPs above
a small size use IPM (with crossover, so the answer is a vertex and exactly feasible).
"""

from __future__ import annotations

import functools
import os
import sys
import time
from dataclasses import replace

import numpy as np
import scipy.sparse as sp

from ..query import Query
from .base import (FEASIBLE, INFEASIBLE, OPTIMAL, TIMEOUT, UNBOUNDED, UNKNOWN, Solution, SolveOptions,
                   module_available)
from .milp import LinearModel, lift_start, lower_to_milp, split_abs


_BANNER_SHOWN = False


# A MIP solved for its dual bound only (bound tightening): HiGHS's primal heuristics find points, which do not
# move the dual bound; off, a neuron's bound over mnist_fc 256x4's first two layers (30 binaries) took 0.75 s
# instead of 2.9 s (measured), most of it had been sub-MIPs (RINS/RENS)
_BOUND_ONLY_MIP = {"mip_rel_gap": 1e-4, "mip_heuristic_effort": 0.0, "mip_heuristic_run_rins": False,
                   "mip_heuristic_run_rens": False, "mip_heuristic_run_root_reduced_cost": False,
                   "mip_heuristic_run_feasibility_jump": False}


def _mip_bounded():
    """The MIP end states after which HiGHS's ``mip_dual_bound`` is a valid lower bound of the objective."""
    import highspy

    S = highspy.HighsModelStatus
    return {S.kOptimal, S.kTimeLimit, S.kIterationLimit, S.kSolutionLimit, S.kInterrupt}


def _new_highs():
    """A Highs instance; the first one in a process prints a banner on the C-level stdout, which would corrupt
    our report (and JSON on stdout), so that one is created with fd 1 pointed at /dev/null."""
    import highspy

    global _BANNER_SHOWN
    if _BANNER_SHOWN:
        return highspy.Highs()
    _BANNER_SHOWN = True
    sys.stdout.flush()
    saved = os.dup(1)
    devnull = os.open(os.devnull, os.O_WRONLY)
    try:
        os.dup2(devnull, 1)
        return highspy.Highs()
    finally:
        os.dup2(saved, 1)
        os.close(saved)
        os.close(devnull)


class IncrementalLp:
    """One HiGHS LP kept between solves, for LPs that grow by rows (lazy `keep` rounds) and whose column bounds
    change: ``add_rows`` / ``set_bounds`` leave the last basis dual feasible, so each ``solve`` continues with the
    dual simplex from it instead of starting over.  The model is given whole (numpy arrays), never per
    coefficient.  A warm solve that ends neither optimal nor infeasible is repeated cold (from scratch)."""

    def __init__(self, c: np.ndarray, lb: np.ndarray, ub: np.ndarray, options: SolveOptions):
        import highspy

        self.inf = highspy.kHighsInf
        self.h = _new_highs()
        self.h.setOptionValue("output_flag", bool(options.verbose))
        self.h.setOptionValue("random_seed", int(options.seed))
        self.h.setOptionValue("solver", "simplex")
        self.h.setOptionValue("simplex_strategy", 1)  # dual: added rows and moved bounds keep the basis dual feasible
        self.n = int(c.size)
        self.h.addVars(self.n, self._fin(lb), self._fin(ub))
        self.h.changeColsCost(self.n, np.arange(self.n, dtype=np.int32), np.asarray(c, dtype=np.float64))
        self.rows = 0
        self.solves = 0

    def _fin(self, v: np.ndarray) -> np.ndarray:
        v = np.asarray(v, dtype=np.float64)
        return np.where(np.isfinite(v), v, np.where(v > 0, self.inf, -self.inf))

    def add_rows(self, A: sp.csr_matrix, lo: np.ndarray, hi: np.ndarray) -> None:
        A = sp.csr_matrix(A)
        if A.shape[0] == 0:
            return
        self.h.addRows(A.shape[0], self._fin(lo), self._fin(hi), int(A.nnz), A.indptr[:-1].astype(np.int32),
                       A.indices.astype(np.int32), A.data.astype(np.float64))
        self.rows += A.shape[0]

    def set_row_bounds(self, rows: np.ndarray, lo: np.ndarray, hi: np.ndarray) -> None:
        """New bounds of existing rows (``-inf, inf`` switches a row off)."""
        if rows.size:
            self.h.changeRowsBounds(int(rows.size), rows.astype(np.int32), self._fin(lo), self._fin(hi))

    def set_bounds(self, cols: np.ndarray, lb: np.ndarray, ub: np.ndarray) -> None:
        self.h.changeColsBounds(int(cols.size), cols.astype(np.int32), self._fin(lb), self._fin(ub))

    def solve(self, time_limit: float | None, cold: bool = False) -> tuple[str, np.ndarray | None, float | None]:
        """(status, x, objective): ``optimal`` or ``infeasible`` are definite answers; anything else is not.
        ``cold``: forget the last basis first (when the model changed too much for it to help)."""
        import highspy

        S = highspy.HighsModelStatus
        if cold:
            self.h.clearSolver()
            self.h.setOptionValue("simplex_strategy", 4)  # primal: faster than dual from scratch here (measured)
        self.h.setOptionValue("time_limit", float(time_limit) if time_limit is not None else self.inf)
        for attempt in range(2):
            self.h.run()
            self.h.setOptionValue("simplex_strategy", 1)
            self.solves += 1
            status = self.h.getModelStatus()
            if status == S.kOptimal:
                x = np.asarray(self.h.getSolution().col_value, dtype=np.float64)
                return OPTIMAL, x, float(self.h.getInfo().objective_function_value)
            if status == S.kInfeasible:
                return INFEASIBLE, None, None
            if status == S.kTimeLimit or attempt:
                break
            self.h.clearSolver()  # neither answer from the warm basis: once more from scratch
        return (TIMEOUT if status == S.kTimeLimit else UNKNOWN), None, None


class HighsBackend:
    name = "highs"
    # bigm: ReLUs and disjunctions lowered to big-M rows (finite bounds help); relaxation: the LP relaxation of that
    # lowering on request; bound_tightening: LP bounds of chosen variables, re-solving one model warm
    # incremental_lp: an LP kept between solves, grown by rows and re-solved from its basis (IncrementalLp)
    capabilities = frozenset({"lp", "milp", "core", "bigm", "warm_start", "relaxation", "bound_tightening",
                              "incremental_lp"})
    bound_only_options = _BOUND_ONLY_MIP  # for MILPs expected to be infeasible (a proof, not a point, is wanted)

    @staticmethod
    def incremental_lp(c: np.ndarray, lb: np.ndarray, ub: np.ndarray, options: SolveOptions) -> IncrementalLp:
        """An LP over ``c``, ``lb <= x <= ub`` (no rows yet) kept between solves: see :class:`IncrementalLp`."""
        return IncrementalLp(c, lb, ub, options)

    def available(self) -> bool:
        return module_available("highspy")

    def version(self) -> str:
        return _highspy_version()

    def check_size(self, query: Query) -> str | None:
        return None

    def solve(self, query: Query, options: SolveOptions) -> Solution:
        t0 = time.perf_counter()
        model = lower_to_milp(query)
        is_mip = bool(np.any(model.integer))
        start = lift_start(query, model, options.start) if is_mip and options.start is not None else None
        split = split_abs(model)  # thousands of L1 pairs |x| <= u: x = p - n instead (milp.AbsSplit)
        if split is not None:
            model, start = split.model, (split.to_new(start) if start is not None else None)
        rows, cols = model.A.shape
        if not is_mip and cols > 50_000 and cols > 20 * rows and "presolve" not in options.extra:
            # a few hundred rows over a whole layer's weights: HiGHS's presolve can spend minutes on such an LP
            # that dual simplex solves in a fraction of a second
            options = replace(options, extra={**options.extra, "presolve": "off"})
        if is_mip and options.relaxation_first:
            relaxed = self.solve_linear(replace(model, integer=np.zeros_like(model.integer)), options, is_mip=False)
            if relaxed.status == INFEASIBLE:
                relaxed.message = "the LP relaxation is infeasible"
                relaxed.seconds = time.perf_counter() - t0
                return relaxed
            if options.time_limit is not None:
                options = replace(options, time_limit=max(1e-3, options.time_limit - (time.perf_counter() - t0)))
        sol = self.solve_linear(model, options, is_mip=is_mip, start=start)
        if sol.x is not None:
            sol.x = (split.to_old(sol.x) if split is not None else sol.x)[: model.n_original]
        sol.seconds = time.perf_counter() - t0
        return sol

    def relaxation(self, query: Query, options: SolveOptions) -> Solution:
        """The LP relaxation of the query's MILP lowering (binaries continuous): a lower bound, and a reference
        point for planning.  Raises PatchlangError when the lowering needs finite bounds it lacks."""
        m = lower_to_milp(query)
        return self.solve_linear(replace(m, integer=np.zeros_like(m.integer)), options, is_mip=False)

    def tighten_bounds(self, query: Query, variables: np.ndarray, deadline: float | None = None,
                       integer: bool = False, solve_seconds: float | None = None, relu_inputs: bool = False
                       ) -> tuple[np.ndarray, np.ndarray]:
        """Optimization-based bound tightening: the smallest and largest value of each of ``variables`` over the
        LP relaxation of the whole MILP (every constraint, binaries continuous), as new ``(lb, ub)`` of the query.
        Sound because every feasible point of the MILP is a point of its relaxation.  One HiGHS model, re-solved
        from the previous basis with a new objective for each bound; stops at ``deadline`` (perf_counter).

        ``integer``: over the MILP itself (binaries kept), each solve limited to ``solve_seconds``; a MIP stopped
        early gives its *dual* bound (never the incumbent, which is only a point), so it is sound at any time.
        ``relu_inputs``: the variables are ReLU inputs, where only the sign matters most: the side nearer to zero
        is bounded first, and the other is skipped once the first fixes the sign (the ReLU is then linear)."""
        import highspy

        m = lower_to_milp(query)
        is_mip = integer and bool(np.any(m.integer))
        h = _new_highs()
        h.setOptionValue("output_flag", False)
        if is_mip:
            for key, value in _BOUND_ONLY_MIP.items():
                h.setOptionValue(key, value)
            highspy.Highs.resetGlobalScheduler(True)  # see solve_linear: a new thread count needs a fresh scheduler
            h.setOptionValue("threads", 1)
        h.passModel(to_highs_lp(m, is_mip))
        lb, ub = query.lb.copy(), query.ub.copy()
        zero = np.zeros(m.n_vars)
        all_cols = np.arange(m.n_vars, dtype=np.int32)
        S = highspy.HighsModelStatus
        bounded = _mip_bounded()
        for x in variables:
            senses = (1.0, -1.0)
            if relu_inputs and ub[x] < -lb[x]:
                senses = (-1.0, 1.0)  # the upper bound is nearer to zero: it may make the ReLU inactive
            for sense in senses:
                if relu_inputs and (lb[x] >= 0 or ub[x] <= 0):
                    break
                now = time.perf_counter()
                if deadline is not None and now > deadline:
                    return lb, ub
                if is_mip:
                    left = solve_seconds if solve_seconds is not None else np.inf
                    if deadline is not None:
                        left = min(left, deadline - now)
                    h.setOptionValue("time_limit", float(max(left, 1e-3)) if np.isfinite(left) else highspy.kHighsInf)
                    h.clearSolver()  # a MIP starts over anyway; no incumbent of another objective is kept
                cost = zero.copy()
                cost[x] = sense
                h.changeColsCost(m.n_vars, all_cols, cost)
                h.run()
                status = h.getModelStatus()
                if is_mip:
                    value = float(h.getInfo().mip_dual_bound)  # a lower bound of the objective, optimal or not
                    if status not in bounded or not np.isfinite(value):
                        continue
                    slack = 1e-6 * (1.0 + abs(value))  # the MIP's feasibility tolerance: never cut a feasible point
                else:
                    if status != S.kOptimal:
                        continue
                    value = h.getInfo().objective_function_value
                    slack = 1e-7 * (1.0 + abs(value))  # the LP's own tolerance: never cut a feasible point
                value *= sense
                if sense > 0:
                    lb[x] = max(lb[x], value - slack)
                else:
                    ub[x] = min(ub[x], value + slack)
        return lb, ub

    def solve_linear(self, m: LinearModel, options: SolveOptions, is_mip: bool,
                     start: np.ndarray | None = None) -> Solution:
        import highspy

        h = _new_highs()
        h.setOptionValue("output_flag", bool(options.verbose))
        h.setOptionValue("random_seed", int(options.seed))
        if options.time_limit is not None:
            h.setOptionValue("time_limit", float(options.time_limit))
        if options.threads is not None:
            # HiGHS keeps one thread scheduler per process: a different thread count than an earlier solve's
            # makes run() fail ("Not Set") unless the scheduler is reset first.
            highspy.Highs.resetGlobalScheduler(True)
            h.setOptionValue("threads", int(options.threads))
        if is_mip and options.mip_gap is not None:
            h.setOptionValue("mip_rel_gap", float(options.mip_gap))
        if not is_mip:
            solver = options.extra.get("lp_solver", self._lp_solver(m))
            h.setOptionValue("solver", "simplex" if solver == "primal" else solver)
            if solver == "primal":
                h.setOptionValue("simplex_strategy", 4)
        for key, value in options.extra.items():
            if key != "lp_solver":
                h.setOptionValue(key, value)
        h.passModel(to_highs_lp(m, is_mip))
        if start is not None:  # a feasible incumbent (plan.fixed_phase_bound): HiGHS prunes with it from the root
            h.setSolution(int(start.size), np.arange(start.size, dtype=np.int32), start.astype(np.float64))
        h.run()
        status = h.getModelStatus()
        info = h.getInfo()
        S = highspy.HighsModelStatus
        x = None
        has_primal = info.primal_solution_status == 2  # kSolutionStatusFeasible
        if has_primal:
            x = np.asarray(h.getSolution().col_value, dtype=np.float64)
        objective = float(info.objective_function_value) if has_primal else None
        bound = float(info.mip_dual_bound) if is_mip else objective
        if status == S.kOptimal:
            st = OPTIMAL
        elif status == S.kInfeasible:
            st = INFEASIBLE
        elif status in (S.kUnbounded, S.kUnboundedOrInfeasible):
            st = UNBOUNDED if status == S.kUnbounded else INFEASIBLE
        elif status in (S.kTimeLimit, S.kIterationLimit, S.kSolutionLimit, S.kInterrupt):
            st = FEASIBLE if has_primal else TIMEOUT
        else:
            st = FEASIBLE if has_primal else UNKNOWN
        if st == INFEASIBLE and status == S.kUnboundedOrInfeasible:
            # HiGHS could not tell which; rerun without presolve for a definite answer.
            h.setOptionValue("presolve", "off")
            h.run()
            if h.getModelStatus() == S.kUnbounded:
                st = UNBOUNDED
        return Solution(status=st, x=x, objective=objective, bound=bound, backend=self.name,
                        backend_version=self.version(), message=h.modelStatusToString(status),
                        stats={"mip_gap": float(info.mip_gap) if is_mip else 0.0,
                               "nodes": int(info.mip_node_count) if is_mip else 0})

    def iis(self, m: LinearModel, options: SolveOptions) -> tuple[np.ndarray, np.ndarray] | None:
        """An infeasible subset of an infeasible LP as (row indices, column indices whose bounds take part), or
        None when HiGHS cannot give one (MIP, feasible model, or an error).

        HiGHS's IIS first; HiGHS 1.16 sometimes returns a "valid" but empty one, and then the rows of a Farkas
        certificate (the dual ray, without presolve) are used, with every column (their bounds may take part).
        Either may be larger than irreducible: callers re-check and shrink it."""
        import highspy

        if np.any(m.integer):
            return None
        h = _new_highs()
        h.setOptionValue("output_flag", bool(options.verbose))
        h.setOptionValue("random_seed", int(options.seed))
        if options.time_limit is not None:
            h.setOptionValue("time_limit", float(options.time_limit))
        h.passModel(to_highs_lp(m, False))
        h.run()
        if h.getModelStatus() != highspy.HighsModelStatus.kInfeasible:
            return None
        status, iis = h.getIis()
        if status != highspy.HighsStatus.kError and iis.valid_ and (len(iis.row_index_) or len(iis.col_index_)):
            return np.asarray(iis.row_index_, dtype=np.int64), np.asarray(iis.col_index_, dtype=np.int64)
        h.setOptionValue("presolve", "off")
        h.passModel(to_highs_lp(m, False))
        h.run()
        status, has_ray, ray = h.getDualRay()
        if status == highspy.HighsStatus.kError or not has_ray:
            return None
        ray = np.asarray(ray, dtype=np.float64)
        rows = np.nonzero(np.abs(ray) > 1e-9 * max(1.0, float(np.max(np.abs(ray)))))[0]
        return rows.astype(np.int64), np.arange(m.n_vars, dtype=np.int64)

    @staticmethod
    def _lp_solver(m: LinearModel) -> str:
        """The LP algorithm by size and shape (``lp_solver`` in `using highs(...)` overrides it; "primal" is the
        primal simplex).  Measured on the watermark LPs (bench/watermark.py): with a dense column (the L∞ bound
        variable in every norm row), interior point wins above ~100k nonzeros (100 points at once: 1.0 s vs 1.9 s
        dual, 6.8 s primal simplex) and the primal simplex between 20k and 100k (a single point with `keep` on
        150 points: 0.3 s vs 1.0 s); HiGHS's own choice (dual simplex) wins on small and on least-L1 problems."""
        if m.A.nnz > 200_000:
            return "ipm"
        if m.A.nnz > 20_000 and np.bincount(m.A.indices, minlength=m.n_vars).max() > 1_000:
            return "ipm" if m.A.nnz > 100_000 else "primal"
        return "choose"


@functools.lru_cache(maxsize=1)
def _highspy_version() -> str:
    """Cached: reading package metadata costs about a millisecond, once per solve otherwise."""
    try:
        from importlib.metadata import version

        return version("highspy")
    except Exception:  # pragma: no cover - metadata missing in odd installs
        return "unknown"


def to_highs_lp(m: LinearModel, is_mip: bool):
    """The ``HighsLp`` of a lowered model, built from whole arrays (used to solve, explain and export)."""
    import highspy

    inf = highspy.kHighsInf
    lp = highspy.HighsLp()
    lp.num_col_ = m.n_vars
    lp.num_row_ = m.A.shape[0]
    lp.col_cost_ = m.c
    lp.col_lower_ = np.where(np.isfinite(m.lb), m.lb, -inf)
    lp.col_upper_ = np.where(np.isfinite(m.ub), m.ub, inf)
    lp.row_lower_ = np.where(np.isfinite(m.row_lo), m.row_lo, -inf)
    lp.row_upper_ = np.where(np.isfinite(m.row_hi), m.row_hi, inf)
    lp.offset_ = float(m.offset)
    A = m.A.tocsc()
    lp.a_matrix_.format_ = highspy.MatrixFormat.kColwise
    lp.a_matrix_.start_ = A.indptr.astype(np.int32)
    lp.a_matrix_.index_ = A.indices.astype(np.int32)
    lp.a_matrix_.value_ = A.data.astype(np.float64)
    if is_mip:
        lp.integrality_ = [highspy.HighsVarType.kInteger if i else highspy.HighsVarType.kContinuous
                           for i in m.integer]
    return lp
