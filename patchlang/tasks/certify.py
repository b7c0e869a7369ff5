"""Certify "no patch exists" the way a patch is certified: independently of the solver that claimed it.

A patch is trusted only after the patched network is re-evaluated in float64 and with onnxruntime; an
infeasibility claim gets its own check before it is reported (:func:`certify_infeasible`):

1. **LP** (no integers after lowering): a *Farkas certificate*.  HiGHS's dual ray ``y`` (presolve off) proves
   infeasibility when, for every ``x`` within the column bounds, ``y^T A x <= max_x c^T x < min_s y^T s`` over the
   row ranges (``c = A^T y``).  The inequality is checked in **exact rational arithmetic** on the float64 values of
   ``y``, ``A`` and the bounds, so no rounding can fake it.
2. Otherwise, or when the ray does not verify: a **second solve** by another backend: Z3 in exact rational
   arithmetic on small problems, Gurobi when installed and licensed, SCIP (OR-Tools, the ``recheck`` extra) when
   installed; failing all, HiGHS again with different settings (another algorithm, no presolve, another seed),
   which is a re-check but not an independent proof, and is reported as such.
3. When nothing could re-check it within the budget, the claim is reported as *not independently certified*.

If the second solver finds a solution, the claim is withdrawn: the task becomes inconclusive ("solvers
disagree"), never a silent "no patch".
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Callable
from fractions import Fraction

import numpy as np

from ..query import Query
from ..solution import FEASIBLE, INFEASIBLE, OPTIMAL, SolveOptions

EXACT_MAX_NNZ = 200_000  # a Farkas check in Fractions over more nonzeros than this is too slow to be worth it
Z3_MAX_VARS = 300  # Z3's exact simplex re-solves problems this small in well under a second
Z3_MAX_ROWS = 2_000
SECOND_SOLVE_SECONDS = 20.0


@dataclass
class Certificate:
    """How an infeasibility claim was re-checked: ``certified`` True (independently proven), False (a re-check by
    the same kind of solver, or none), or None (the second solver *found a solution*: the claim is wrong)."""

    certified: bool | None
    method: str

    @property
    def refuted(self) -> bool:
        return self.certified is None


def certify_infeasible(q: Query, seed: int = 0, time_budget: float | None = None) -> Certificate:
    """Re-check that ``q`` has no feasible point (see the module docstring)."""
    t0 = time.perf_counter()
    budget = SECOND_SOLVE_SECONDS if time_budget is None else max(1.0, min(time_budget, SECOND_SOLVE_SECONDS))
    if len(q.products):  # only Z3 takes products, and it decided the claim in exact arithmetic itself
        return Certificate(False, "decided by Z3 in exact rational arithmetic (no second backend takes "
                                  "products of unknowns): not independently certified")
    from ..solvers.milp import lower_to_milp

    m = lower_to_milp(q)
    if not np.any(m.integer):
        ray = _dual_ray(m, seed, budget)
        if ray is not None and farkas_holds(m, ray):
            return Certificate(True, "Farkas certificate (HiGHS dual ray) verified in exact rational arithmetic")
    remaining = budget - (time.perf_counter() - t0)
    return _second_solve(q, seed, max(1.0, remaining))


# ---------------------------------------------------------------------------- Farkas

def _dual_ray(m, seed: int, budget: float) -> np.ndarray | None:
    import highspy

    from ..solvers.highs import _new_highs, to_highs_lp

    h = _new_highs()
    h.setOptionValue("output_flag", False)
    h.setOptionValue("presolve", "off")  # a ray of the presolved model does not speak about the original rows
    h.setOptionValue("random_seed", int(seed))
    h.setOptionValue("time_limit", float(budget))
    h.passModel(to_highs_lp(m, False))
    h.run()
    if h.getModelStatus() != highspy.HighsModelStatus.kInfeasible:
        return None
    status, has_ray, ray = h.getDualRay()
    if status == highspy.HighsStatus.kError or not has_ray:
        return None
    return np.asarray(ray, dtype=np.float64)


def farkas_holds(m, y: np.ndarray) -> bool:
    """Whether ``y`` (or ``-y``) proves ``{x : row_lo <= A x <= row_hi, lb <= x <= ub}`` empty, exactly."""
    y = np.where(np.abs(y) > 1e-13 * max(1.0, float(np.max(np.abs(y)))), y, 0.0)  # drop round-off entries
    rows = np.flatnonzero(y)
    if rows.size == 0:
        return False
    A = m.A.tocsr()[rows]
    if A.nnz > EXACT_MAX_NNZ:
        return False
    return any(_farkas_exact(A, sign * y[rows], m.row_lo[rows], m.row_hi[rows], m.lb, m.ub) for sign in (1.0, -1.0))


def _farkas_exact(A, y: np.ndarray, row_lo: np.ndarray, row_hi: np.ndarray, lb: np.ndarray, ub: np.ndarray) -> bool:
    # min over the row ranges of y^T s: each row at the bound its multiplier's sign asks for
    low = Fraction(0)
    for yr, lo, hi in zip(y.tolist(), row_lo.tolist(), row_hi.tolist()):
        bound = lo if yr > 0 else hi
        if not np.isfinite(bound):
            return False
        low += Fraction(yr) * Fraction(bound)
    # c = A^T y exactly, then max over the column box of c^T x
    c: dict[int, Fraction] = {}
    A = A.tocoo()
    ys = [Fraction(v) for v in y.tolist()]
    for r, j, a in zip(A.row.tolist(), A.col.tolist(), A.data.tolist()):
        c[j] = c.get(j, Fraction(0)) + ys[r] * Fraction(a)
    high = Fraction(0)
    for j, cj in c.items():
        if cj == 0:
            continue
        bound = ub[j] if cj > 0 else lb[j]
        if not np.isfinite(bound):
            return False
        high += cj * Fraction(float(bound))
    return low > high


# ---------------------------------------------------------------------------- second solve

def _second_solve(q: Query, seed: int, budget: float) -> Certificate:
    from ..errors import PatchlangError
    from ..solvers.registry import get_backend

    opts = SolveOptions(time_limit=budget, seed=seed + 1)
    tried = []
    if q.n_vars <= Z3_MAX_VARS and q.n_rows <= Z3_MAX_ROWS:
        verdict = _try(lambda: get_backend("z3").solve(q, opts), "Z3 (exact rational arithmetic)", tried)
        if verdict is not None:
            return verdict
    try:
        gurobi = get_backend("gurobi")
    except PatchlangError:
        gurobi = None
    if gurobi is not None:
        verdict = _try(lambda: gurobi.solve(q, opts), "Gurobi", tried)
        if verdict is not None:
            return verdict
    from ..solvers import scip

    if scip.available():  # another branch-and-bound code: independent of HiGHS (issue 10)
        verdict = _try(lambda: scip.scip_verdict(q, opts), scip.NAME, tried)
        if verdict is not None:
            return verdict
    else:
        tried.append(f"{scip.NAME}: not installed (pip install 'patchlang[recheck]')")
    other = SolveOptions(time_limit=budget, seed=seed + 1, extra={"presolve": "off"})
    verdict = _try(lambda: get_backend("highs").solve(q, other), "HiGHS again (no presolve, another seed)", tried,
                   independent=False)
    if verdict is not None:
        if verdict.certified is False and tried:  # say why no independent backend answered
            verdict = Certificate(False, f"{verdict.method}; no independent backend could ({'; '.join(tried)})")
        return verdict
    return Certificate(False, "not independently certified (" + ("; ".join(tried) or "no second backend") + ")")


def _try(solve, name: str, tried: list[str], independent: bool = True) -> Certificate | None:
    from ..errors import PatchlangError

    try:
        sol = solve()
    except (PatchlangError, ImportError, MemoryError) as exc:
        tried.append(f"{name}: {getattr(exc, 'message', exc)}")
        return None
    if sol.status == INFEASIBLE:
        if independent:
            return Certificate(True, f"confirmed by a second backend: {name} finds no solution either")
        return Certificate(False, f"re-checked by {name}, which finds no solution either; not independently "
                                  "certified (same solver)")
    if sol.status in (OPTIMAL, FEASIBLE) and sol.x is not None:
        return Certificate(None, f"{name} finds a solution: the solvers disagree")
    tried.append(f"{name}: {sol.status}")
    return None


def certify_no_patch(result, queries: list[Query], seed: int = 0, deadline: float | None = None) -> None:
    """Re-check a "no patch" answer (every query infeasible) and say in ``result`` how it was certified.

    ``result.details["certificate"]`` and a note state the method; if a second solver finds a solution, the
    task becomes inconclusive instead of "no patch".
    """
    from .results import INCONCLUSIVE

    methods = []
    for q in queries:
        left = None if deadline is None else deadline - time.perf_counter()
        cert = certify_infeasible(q, seed, left)
        if cert.refuted:
            result.status = INCONCLUSIVE
            result.message = (f"the solver reported no patch, but the independent re-check disagrees ({cert.method}); "
                              "not reported as `no patch`: try another backend or a larger margin")
            result.details["certificate"] = {"certified": False, "method": cert.method, "refuted": True}
            return
        methods.append(cert)
    certified = bool(methods) and all(c.certified for c in methods)
    method = methods[0].method if len({c.method for c in methods}) == 1 else "; ".join(c.method for c in methods)
    if len(queries) > 1:
        method = f"{len(queries)} sub-problems: {method}"
    result.details["certificate"] = {"certified": certified, "method": method}
    result.notes.append(("no patch: certified independently: " if certified else "no patch: ") + method)


# ---------------------------------------------------------------------------- "holds"

HOLDS_MAX_RELUS = 48  # Z3 re-proves a box with this many ReLU atoms (no bounds to lean on) in about a second
HOLDS_MAX_INPUTS = 16
HOLDS_MAX_CASES = 64
TOO_LARGE = "not independently certified"
SECOND_METHOD_SECONDS = 60.0  # the second complete search on a network too large for Z3 (issue 10): at most,
SECOND_METHOD_MIN = 1.0  # at least,
SECOND_METHOD_FACTOR = 3.0  # and otherwise this many times the first proof


def certify_holds(net, cases, seed: int = 0, time_budget: float = SECOND_SOLVE_SECONDS) -> Certificate:
    """Re-prove "the property holds" independently of the search that claimed it.

    The search proves most boxes with symbolic bounds (float64, enlarged toward unsafe) and MILP leaves (HiGHS).
    The re-check shares none of that: per box, one query where every ReLU is an exact ``max(0, x)`` atom and no
    hidden bound is assumed, solved by Z3 in exact rational arithmetic.  Only small networks qualify; larger ones
    are reported as not independently certified.
    """
    from ..compile.bounds import LayerBounds, relu_network
    from ..compile.verify import encode_region_query
    from ..errors import PatchlangError
    from ..solvers.registry import get_backend

    rn = relu_network(net, smooth=True)
    if rn.smooth:
        return Certificate(False, f"{TOO_LARGE} ({'/'.join(rn.smooth)} activations have no exact form for Z3)")
    n_relus = sum(W.shape[0] for W in rn.Ws[:-1])
    if n_relus > HOLDS_MAX_RELUS or rn.input_size > HOLDS_MAX_INPUTS or len(cases) > HOLDS_MAX_CASES:
        return Certificate(False, f"{TOO_LARGE} (the exact re-check by Z3 takes networks of at most "
                                  f"{HOLDS_MAX_RELUS} ReLUs and {HOLDS_MAX_INPUTS} inputs; this one has {n_relus} "
                                  f"and {rn.input_size})")
    try:
        z3 = get_backend("z3")
    except PatchlangError as exc:
        return Certificate(False, f"not independently certified (Z3 unavailable: {exc.message})")
    t_end = time.perf_counter() + time_budget
    for case in cases:
        left = t_end - time.perf_counter()
        if left <= 0:
            return Certificate(False, "not independently certified (the exact re-check ran out of time)")
        loose = LayerBounds(*_interval_bounds(rn, np.asarray(case.lo, float), np.asarray(case.hi, float)))
        q = encode_region_query(rn, case.lo, case.hi, case.spec, None, bounds=loose, tol=0.0, name="recheck").query
        sol = z3.solve(q, SolveOptions(time_limit=left, seed=seed + 1))
        if sol.status in (OPTIMAL, FEASIBLE) and sol.x is not None:
            return Certificate(None, f"Z3 finds an input in {case.label} that reaches the unsafe region")
        if sol.status != INFEASIBLE:
            return Certificate(False, f"not independently certified (Z3: {sol.status} on {case.label})")
    return Certificate(True, f"re-proven by Z3 in exact rational arithmetic ({len(cases)} box(es), every ReLU "
                             "an exact atom, only loose interval bounds assumed)")


def _interval_bounds(rn, lo: np.ndarray, hi: np.ndarray) -> tuple[list[np.ndarray], list[np.ndarray]]:
    """Plain interval arithmetic (not the search's symbolic bounds), widened by 1% and 1e-6: loose but sound."""
    lowers, uppers = [], []
    h_lo, h_hi = lo, hi
    for W, b in zip(rn.Ws[:-1], rn.bs[:-1]):
        mid, rad = (h_lo + h_hi) / 2, (h_hi - h_lo) / 2
        c, r = W @ mid + b, np.abs(W) @ rad
        pad = 0.01 * r + 1e-6 * (1 + np.abs(c))
        l, u = c - r - pad, c + r + pad
        lowers.append(l[None])
        uppers.append(u[None])
        h_lo, h_hi = np.maximum(l, 0.0), np.maximum(u, 0.0)
    return lowers, uppers


def second_method_budget(first_seconds: float, time_budget: float | None = None) -> float:
    """Seconds for the second complete search: ``SECOND_METHOD_FACTOR`` times the first proof, at least
    ``SECOND_METHOD_MIN``, at most ``SECOND_METHOD_SECONDS`` and the task's own budget (a re-check should not
    cost a run much more than its proof; ``bench/acasxu.py`` uses the same rule)."""
    return min(SECOND_METHOD_SECONDS, max(SECOND_METHOD_MIN, SECOND_METHOD_FACTOR * first_seconds),
               np.inf if time_budget is None else time_budget)


def record_holds(result, net, cases, seed: int = 0, time_budget: float | None = None,
                 second_method: Callable[..., tuple[bool | None, str]] | None = None,
                 first_seconds: float = 0.0) -> None:
    """Re-check a "holds" verdict (:func:`certify_holds`) and say in ``result`` how it was certified; a re-check
    that finds an unsafe input withdraws the claim (the task becomes undecided, never a silent "holds").

    ``second_method(net, cases, used, seed, budget)``: for a network too large for the exact Z3 re-check, the
    other complete search (``tasks.verify.second_method_holds``), given ``SECOND_METHOD_FACTOR`` times the first
    proof's ``first_seconds`` (at least ``SECOND_METHOD_MIN``, at most ``SECOND_METHOD_SECONDS``: a re-check
    should not cost a run much more than its proof); ``used`` is the method of the first proof
    (``result.details["method"]``, when known)."""
    from .results import UNKNOWN

    budget = max(1.0, min(SECOND_SOLVE_SECONDS, SECOND_SOLVE_SECONDS if time_budget is None else time_budget))
    cert = certify_holds(net, cases, seed, budget)
    if cert.certified is False and second_method is not None and cert.method.startswith(TOO_LARGE):
        left = second_method_budget(first_seconds, time_budget)
        if left >= 1.0:
            certified, method = second_method(net, cases, result.details.get("method"), seed, left)
            cert = Certificate(certified, method if certified is not False
                               else f"{method}; {cert.method[len(TOO_LARGE):].strip()}")
    result.details["certificate"] = {"certified": bool(cert.certified), "method": cert.method,
                                     **({"refuted": True} if cert.refuted else {})}
    if cert.refuted:
        result.status = UNKNOWN
        result.message = (f"the search proved the property, but the independent re-check disagrees ({cert.method}); "
                          "not reported as holding")
        return
    result.notes.append(("holds: certified independently: " if cert.certified else "holds: ") + cert.method)
