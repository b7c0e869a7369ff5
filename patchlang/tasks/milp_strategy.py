"""How a MILP patch problem is prepared before the MILP solver sees it: fixed-phase LPs, derived bounds, warm start.

Why: the MILP's difficulty is its binaries, and their number and big-Ms come from the bounds on the change.
A cheap LP answers two questions at once:

1. *A sound bound.*  Fixing every ReLU phase to the original network's (and each disjunction to its best
   alternative, each l0 indicator to "may change") restricts the problem to an LP
   (:func:`patchlang.compile.fixed_phase.fixed_phase_query`); its answer is a genuine patch, so the optimum is at
   most its objective ``N``.  With objective ``w_inf*linf + w_1*l1 (+ w_0*l0)`` and ``l1 >= linf`` every optimal
   patch has ``linf <= N / (w_inf + w_1)``: that is a sound `bound linf` for the exact MILP, usually far below the
   user's (or none), so far fewer neurons are unstable and the big-Ms are small.
2. *A feasible start.*  The LP answer, propagated through the encoded problem, is an incumbent for the MILP
   solver (HiGHS ``setSolution``, Gurobi ``Start``), which prunes from the first node.

The LP is repeated with the phases of its own answer while that improves (each round's answer is feasible for
the next round's LP, so the objective never increases).  Everything here is checked: the LP answer is applied to
the network and every goal re-evaluated in float64 before it is used as a bound or a start.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field, replace

import numpy as np
import scipy.sparse as sp

from ..compile.bounds_tighten import OBBT_MAX_ATOMS, OBBT_MAX_VARS, deep_relus, obbt, rebound
from ..compile.fixed_phase import fixed_phase_query, propagate, relaxed_phases, relus_of_groups, violation
from ..compile.goals import GoalGroup, clause_slack
from ..compile.patch import DeltaLayout, NormSpec, PatchEncoding, encode_patch, first_edited_position
from ..compile.pointwise import NORMS, RowReduction, directions, edited_inputs, reduce_rows
from ..compile.query import Query, RowBlock, VarBlock
from ..errors import PatchlangError
from ..lang.program import PatchTask
from ..model.ir import Affine, Clip, Network, Relu
from ..solvers.base import FEASIBLE, INFEASIBLE, OPTIMAL, TIMEOUT, Solution, SolveOptions
from ..solvers.highs import HighsBackend
from ..solvers.milp import lower_to_milp
from ..solvers.registry import get_backend

MAX_ROUNDS = 6  # fixed-phase LPs (two may be spent on the relaxation's phases, one on the keep-phase MILP)
KEEP_PHASES_SECONDS = 20.0  # at most this long for the MILP with the `keep` points' phases fixed
LP_SHARE = 0.5  # of a time limit, at most this much goes to the fixed-phase LPs
OBBT_SECONDS = 10.0  # at most this long (and 20% of a time limit) for LP bound tightening
# Relative slack on a derived bound.  Far above the LP's feasibility tolerance, and large enough that the
# neuron the optimum pushes to exactly 0 is not left with a big-M of 1e-7 (MILP presolve mistreats those).
INFLATE = 1e-3
DEFAULT_MIP_GAP = 1e-6  # a claim of minimality should mean it; HiGHS's and Gurobi's default is 1e-4
START_TOL = 1e-6
HUGE_NONZEROS = 5_000_000
HUGE_BINARIES = 50_000


@dataclass
class MilpPlan:
    enc: PatchEncoding
    options: SolveOptions
    notes: list[str] = field(default_factory=list)
    lp_seconds: float = 0.0  # solver time spent while planning (fixed-phase LPs, or the whole bisection)
    lp_objective: float | None = None
    solution: Solution | None = None  # set when planning already solved the problem (linf bisection)


def objective_value(deltas: np.ndarray, norms: NormSpec) -> float:
    """The task's objective at a patch (l0 counts every exactly non-zero delta: an upper bound of it)."""
    values = {"linf": float(np.max(np.abs(deltas))) if deltas.size else 0.0,
              "l1": float(np.sum(np.abs(deltas))), "l0": float(np.count_nonzero(deltas))}
    return float(sum(w * values[n] for w, n in norms.objective))


def derived_bounds(value: float, norms: NormSpec) -> tuple[float, float]:
    """Bounds ``(linf, l1)`` on every optimal patch when some patch has objective ``value``: with weights
    ``w_inf, w_1 >= 0`` and ``l1 >= linf``, ``(w_inf + w_1) linf <= value`` and ``w_1 l1 <= value`` (inf where a
    weight is missing, e.g. a pure l0 objective bounds neither)."""
    w_inf = sum(wt for wt, n in norms.objective if n == "linf")
    w_1 = sum(wt for wt, n in norms.objective if n == "l1")
    linf = value / (w_inf + w_1) if w_inf + w_1 > 0 else np.inf
    return linf, (value / w_1 if w_1 > 0 else np.inf)


def goals_hold(net: Network, groups: list[GoalGroup], tol: float = 1e-6) -> bool:
    """Every clause of every point holds on ``net`` in float64 (the independent check, before trusting an LP)."""
    for g in groups:
        if not g.points:
            continue
        y = net.forward_suffix(np.stack([p.h for p in g.points]))
        scale = 1.0 + float(np.max(np.abs(y)))
        for p, out in zip(g.points, y):
            if any(clause_slack(c, out) < -tol * scale for c in p.clauses):
                return False
    return True


def within_bounds(deltas: np.ndarray, norms: NormSpec) -> bool:
    values = {"linf": float(np.max(np.abs(deltas))) if deltas.size else 0.0,
              "l1": float(np.sum(np.abs(deltas))), "l0": float(np.count_nonzero(deltas))}
    return all(values[n] <= b * (1 + 1e-9) + 1e-9 for n, b in norms.bounds.items())


def _delta_vector(layout: DeltaLayout, deltas: np.ndarray, n_vars: int) -> np.ndarray:
    x = np.zeros(n_vars)
    x[np.concatenate(layout.var_index)] = deltas
    return x


def start_for(enc: PatchEncoding, deltas: np.ndarray) -> np.ndarray | None:
    """A complete, checked feasible assignment of ``enc.query`` for a patch given by its deltas, or None
    (propagated through the encoder's own query, ``enc.source``, when ``enc.query`` was derived from it)."""
    q = enc.query
    x = propagate(enc.source or q, enc.layout, _delta_vector(enc.layout, deltas, q.n_vars))
    if x is None or violation(q, x) > START_TOL:
        return None
    return x


def with_start(options: SolveOptions, enc: PatchEncoding, deltas: np.ndarray | None) -> SolveOptions:
    """``options`` with a warm start for ``enc`` built from ``deltas`` (unchanged when it is not feasible)."""
    if deltas is None or enc.query.problem_class != "MILP":
        return options
    x = start_for(enc, deltas)
    return replace(options, start=x) if x is not None else options


def _relaxation_point(q: Query, options: SolveOptions) -> np.ndarray | None:
    """The LP relaxation's answer (binaries continuous), a reference whose phases often admit a patch when the
    original network's do not; None when the relaxation cannot be built (unbounded ReLUs) or solved."""
    try:
        m = lower_to_milp(q)
    except PatchlangError:
        return None
    m.integer[:] = False
    sol = HighsBackend().solve_linear(m, options, is_mip=False)
    return sol.x[: q.n_vars] if sol.status == OPTIMAL and sol.x is not None else None


def _fixed_phase_search(net: Network, enc: PatchEncoding, groups: list[GoalGroup], norms: NormSpec,
                        options: SolveOptions) -> tuple[np.ndarray | None, float | None, int]:
    """Best deltas found by fixed-phase LPs (checked on the network), their objective, and the LPs solved.

    The first reference is the original network; if its phases admit no patch, the LP relaxation's answer is
    tried (the network's phases at its deltas, then the phases the relaxation leans to), then a smaller MILP
    in which only the `keep` points' ReLUs are fixed to their original phases (a restriction too: the points to
    change may switch phases, which is what fully fixed LPs cannot do); once an answer is found, the phases at
    that answer are tried while the objective drops.  With a time limit, these get at most ``LP_SHARE`` of it
    (the MILP needs the rest); the third value is then negative when they ran out of time."""
    q = enc.query
    start = time.perf_counter()
    deadline = None if options.time_limit is None else start + LP_SHARE * options.time_limit
    x0 = propagate(q, enc.layout, np.zeros(q.n_vars))
    if x0 is None:
        return None, None, 0
    highs = get_backend("highs")
    lp_options = replace(options, start=None, mip_gap=None)
    # (reference, phases or None, mask of the ReLUs to fix or None for all)
    refs: list[tuple[np.ndarray, np.ndarray | None, np.ndarray | None]] = [(x0, None, None)]
    best: tuple[np.ndarray, float] | None = None
    rounds = 0
    tried_relaxation = tried_keep = False
    while refs and rounds < MAX_ROUNDS:
        x_ref, active, only = refs.pop(0)
        rounds += 1
        end = deadline if only is None else min(deadline or np.inf, time.perf_counter() + KEEP_PHASES_SECONDS)
        if end is not None:
            if time.perf_counter() >= end:
                return (best[0], best[1], rounds) if best else (None, None, -rounds)
            lp_options = replace(lp_options, time_limit=end - time.perf_counter())
        sol = highs.solve(fixed_phase_query(q, x_ref, active, only), lp_options)
        if best is None and sol.status == TIMEOUT and only is None:
            return None, None, -rounds
        deltas = enc.layout.deltas(sol.x) if sol.x is not None else None
        ok = (sol.status in (OPTIMAL, FEASIBLE) and deltas is not None and within_bounds(deltas, norms)
              and goals_hold(enc.layout.apply(net, sol.x), groups))
        if ok:
            value = objective_value(deltas, norms)
            if best is not None and value >= best[1] * (1 - 1e-6):
                break
            best = (deltas, value)
            x_next = propagate(q, enc.layout, sol.x)
            refs = [(x_next, None, None)] if x_next is not None else []
        elif best is None and not refs and not tried_relaxation:
            tried_relaxation = True
            relaxed = _relaxation_point(q, lp_options)
            if relaxed is not None:
                x_true = propagate(q, enc.layout, relaxed)
                refs = ([(x_true, None, None)] if x_true is not None else []) + [
                    (relaxed, relaxed_phases(q, relaxed), None)]
        if best is None and not refs and tried_relaxation and not tried_keep:
            tried_keep = True
            keep = relus_of_groups(q, {"keep"}) if len(q.relus) else np.zeros(0, dtype=bool)
            if np.any(keep) and not np.all(keep):
                refs = [(x0, None, keep)]
    return (best[0], best[1], rounds) if best else (None, None, rounds)


def size_estimate(net: Network, task: PatchTask, groups: list[GoalGroup]) -> tuple[int, int]:
    """Upper estimates ``(nonzeros, binaries)`` of a task's MILP, from the spec alone (before anything is built):
    each point carries one coefficient per edited parameter and may need a binary per ReLU after the first edit
    and per alternative of its clauses."""
    n_points = sum(len(g.points) for g in groups)
    params = sum(int(np.count_nonzero(e.mask)) for e in task.edits)
    start = first_edited_position(net, task.edits)
    later = net.layers[start + 1:]
    widths = [net.layers[i].out_size for i in range(start, len(net.layers) - 1)
              if isinstance(net.layers[i], Affine) and isinstance(net.layers[i + 1], (Relu, Clip))]
    relus = sum(widths) * (2 if any(isinstance(layer, Clip) for layer in later) else 1)
    alts = sum(len(c) for g in groups for p in g.points for c in p.clauses if len(c) > 1)
    return n_points * params, n_points * relus + alts


def huge_warning(net: Network, task: PatchTask, groups: list[GoalGroup]) -> str | None:
    """A warning when the MILP about to be built is beyond what solves in minutes (None otherwise)."""
    nnz, binaries = size_estimate(net, task, groups)
    if nnz <= HUGE_NONZEROS and binaries <= HUGE_BINARIES:
        return None
    return (f"warning: a very large MILP (up to {nnz} nonzeros and {binaries} binaries before bounds fix ReLU "
            "phases) may not finish; fewer points, fewer editable parameters or a small `bound linf` help")


def plan_milp(net: Network, task: PatchTask, groups: list[GoalGroup], options: SolveOptions) -> MilpPlan:
    """Encode the task's MILP with the tightest sound bound we can derive and a warm start."""
    t0 = time.perf_counter()
    enc = encode_patch(net, task.edits, groups, task.norms, name=task.name)
    if enc.query.problem_class != "MILP":
        return MilpPlan(enc, options)
    if options.mip_gap is None:
        options = replace(options, mip_gap=DEFAULT_MIP_GAP)
    t1 = time.perf_counter()
    deltas, value, rounds = _fixed_phase_search(net, enc, groups, task.norms, options)
    lp_seconds = time.perf_counter() - t1
    notes: list[str] = []
    user = task.norms.bounds.get("linf", np.inf)
    if deltas is None and rounds < 0 and not np.isfinite(user):
        stop = Solution(status=TIMEOUT, backend="highs", message="time limit while deriving a bound on the change")
        return MilpPlan(enc, options, ["no `bound linf` was given and none could be derived within the time limit "
                                       "(the fixed-phase LPs did not finish)"], lp_seconds, solution=stop)
    if deltas is None:
        if not np.isfinite(user):
            raise PatchlangError(
                f"patch `{task.name}` needs a `bound linf` on the change to encode the ReLUs after the edit "
                "exactly, and none could be derived: no LP with the ReLU phases fixed (as in the original network, "
                "or as an LP relaxation suggests) has an answer",
                help="add `bound linf <= c` to the patch block (any c that surely allows a patch)")
        return MilpPlan(enc, options, notes, lp_seconds)
    linf, l1 = derived_bounds(value, task.norms)
    linf = min(user, linf * (1 + INFLATE) + 1e-12)
    l1 = min(task.norms.bounds.get("l1", np.inf), l1 * (1 + INFLATE) + 1e-12)
    if linf < user or np.isfinite(l1):
        enc = _restrict(net, task, groups, enc, linf, l1)
        said = " and ".join(f"{n} <= {b:.6g}" for n, b in (("linf", linf), ("l1", l1))
                            if np.isfinite(b) and b < task.norms.bounds.get(n, np.inf))
        if said:
            notes.append(f"bound {said} derived from a fixed-phase LP patch with objective {value:.6g} "
                         f"({rounds} LP round(s)); sound: every optimal patch lies within it")
    enc, obbt_note = _tighten_deep(enc, options)
    if obbt_note:
        notes.append(obbt_note)
    plan = MilpPlan(enc, with_start(options, enc, deltas), notes, lp_seconds, value)
    if plan.options.start is not None:
        plan.notes.append(f"MILP warm-started from the fixed-phase LP patch (objective {value:.6g})")
    return plan


def _tighten_deep(enc: PatchEncoding, options: SolveOptions) -> tuple[PatchEncoding, str]:
    """LP-based bounds for the ReLUs behind other ReLUs (where intervals are loose), when there are few of them and
    the problem is small enough for two LPs per ReLU to pay (:func:`~patchlang.compile.bounds_tighten.obbt`)."""
    q = enc.query
    if q.problem_class != "MILP" or q.n_vars > OBBT_MAX_VARS:
        return enc, ""
    atoms = deep_relus(q, enc.layout, enc.source)
    if not atoms.size or atoms.size > OBBT_MAX_ATOMS:
        return enc, ""
    budget = OBBT_SECONDS if options.time_limit is None else min(OBBT_SECONDS, 0.2 * options.time_limit)
    tight = obbt(q, atoms, budget)
    fixed = len(q.relus) - len(tight.relus)
    out = PatchEncoding(tight, enc.layout, len(tight.relus), enc.n_points, source=enc.source or q)
    return out, (f"LP bound tightening of {atoms.size} ReLUs behind other ReLUs: {fixed} phase(s) fixed, "
                 "the other big-Ms smaller")


def _restrict(net: Network, task: PatchTask, groups: list[GoalGroup], enc: PatchEncoding, bound: float,
              l1: float = np.inf) -> PatchEncoding:
    """``enc`` restricted to ``|delta| <= bound`` (and an L1 budget, which tightens the bounds of neurons fed by
    the edited layer): re-bounded in place when possible, else encoded again."""
    q = rebound(enc.query, enc.layout, bound, enc.source, l1)
    if q is not None:
        return PatchEncoding(q, enc.layout, len(q.relus), enc.n_points, source=enc.source or enc.query)
    norms = NormSpec(objective=task.norms.objective, bounds={**task.norms.bounds, "linf": bound},
                     bound_spans=task.norms.bound_spans)
    return encode_patch(net, task.edits, groups, norms, name=task.name)


def prepare_encoding(net: Network, task: PatchTask, groups: list[GoalGroup], options: SolveOptions) -> MilpPlan:
    """The hook `run_patch` calls: the plain encoding for LP/SMT tasks, :func:`plan_rows` for a weight edit whose
    goal points share one input, :func:`plan_milp` for MILPs, and :func:`linf_bisection` for L∞ MILPs over very
    many parameters."""
    if task.problem_class != "MILP":
        return MilpPlan(encode_patch(net, task.edits, groups, task.norms, name=task.name), options)
    rows = plan_rows(net, task, groups, options)
    if rows is not None:
        return rows
    warning = huge_warning(net, task, groups)  # decided from the spec, before building anything
    plan = linf_bisection(net, task, groups, options) if bisection_applies(task) else plan_milp(net, task, groups,
                                                                                                  options)
    if warning:
        plan.notes.insert(0, warning)
    return plan


@dataclass
class RowSetup:
    """What :func:`plan_rows` needs: the weight edit, the norm, each goal point's input to the edited layer, the
    input shared by the points to change, and which points have exactly that input."""

    edit: object
    norm: str
    inputs: np.ndarray
    shared: np.ndarray
    same: np.ndarray


def row_setup(net: Network, task: PatchTask, groups: list[GoalGroup]) -> RowSetup | None:
    """The row-direction substitution applies: a MILP editing the weights of one layer, minimal L1 or L∞ with no
    bound on another norm (the closed-form cheapest change per row holds for that norm alone), and every point
    outside `keep` (those the patch must change) with one and the same input to the edited layer."""
    if task.problem_class != "MILP" or len(task.edits) != 1 or task.edits[0].kind != "weights":
        return None
    if len(task.norms.objective) != 1:
        return None
    weight, norm = task.norms.objective[0]
    if weight <= 0 or norm not in NORMS or not set(task.norms.bounds) <= {norm}:
        return None
    edit = task.edits[0]
    X = edited_inputs(net, edit, groups)
    change = np.concatenate([np.full(len(g.points), g.group != "keep") for g in groups]) if groups else np.zeros(0)
    if not np.any(change):
        return None
    shared = X[np.nonzero(change)[0][0]]
    same = np.all(X == shared[None, :], axis=1)
    if not np.all(same[change.astype(bool)]):
        return None
    return RowSetup(edit, norm, X, shared, same)


def _with_reduction(plan: MilpPlan, red: RowReduction) -> MilpPlan:
    return replace(plan, enc=replace(plan.enc, reduction=red))


def _only(groups: list[GoalGroup], keep: np.ndarray) -> list[GoalGroup]:
    """The groups with only the points flagged in ``keep`` (flags in group order)."""
    out, k = [], 0
    for g in groups:
        out.append(replace(g, points=[p for i, p in enumerate(g.points) if keep[k + i]]))
        k += len(g.points)
    return out


def solve_plan(plan: MilpPlan, options: SolveOptions) -> Solution:
    """A plan's solution (solved here with HiGHS unless planning already did), the warm start standing in for a
    solver stopped before it reported any patch (:func:`with_start_incumbent`)."""
    if plan.solution is not None:
        return plan.solution
    opts = replace(plan.options, time_limit=options.time_limit)
    return with_start_incumbent(get_backend("highs").solve(plan.enc.query, opts), opts, plan.lp_objective)


def with_start_incumbent(sol: Solution, options: SolveOptions, value: float | None) -> Solution:
    """A MILP stopped by the time limit before it reported any patch: the warm start (the checked fixed-phase LP
    patch, objective ``value``) is a patch all the same, so it is the incumbent, with the solver's bound.

    Why: on very wide MILPs (a hidden layer of 150x784 weights) the solver can spend the whole limit before
    taking up its start, and "no patch found" would hide a patch we hold."""
    if sol.status != TIMEOUT or sol.x is not None or options.start is None or value is None:
        return sol
    return replace(sol, status=FEASIBLE, x=options.start, objective=value,
                   message=sol.message + "; incumbent: the fixed-phase LP patch (warm start)")


def plan_rows(net: Network, task: PatchTask, groups: list[GoalGroup], options: SolveOptions) -> MilpPlan | None:
    """One unknown per row of the edited weights instead of one per weight (:mod:`patchlang.compile.pointwise`),
    or None when :func:`row_setup` does not apply.

    Every goal point with the same input: the substitution is exact, the surrogate MILP (n_out unknowns) is
    planned as usual and `run_patch` solves it.  Otherwise (`keep` points with their own inputs) two surrogates
    are solved here: the *relaxation* without the points whose input differs (exact for the rest, so its optimum
    is a lower bound for the task; if its patch happens to keep every other point it is the optimum) and the
    *restriction* to the columns where every other point's input is zero (those points are then untouched, and
    every answer is a genuine patch).  The restriction's patch is reported with the relaxation's bound."""
    setup = row_setup(net, task, groups)
    if setup is None:
        return None
    edit, norm, shared = setup.edit, setup.norm, setup.shared
    n = int(np.count_nonzero(edit.mask))
    rows = edit.mask.shape[0]
    what = {"l1": "all of a row's change on its largest input", "linf": "a row's change spread as sign(x)"}[norm]
    if np.all(setup.same):
        red = reduce_rows(net, edit, groups, norm, directions(shared, edit.mask, norm), shared, exact=True)
        plan = _with_reduction(_plan_surrogate(red, task, options), red)
        plan.notes.insert(0, f"every goal point gives the edited layer the same input, so the {n} weights act only "
                             f"through the {rows} pre-activations: solved exactly over one unknown per row "
                             f"({what} is the cheapest {norm} change), then lifted back onto the weights")
        return plan
    t0 = time.perf_counter()
    deadline = None if options.time_limit is None else t0 + options.time_limit
    gap = options.mip_gap if options.mip_gap is not None else DEFAULT_MIP_GAP

    def until(share: float) -> SolveOptions:
        if deadline is None:
            return options
        return replace(options, time_limit=max(share * (deadline - time.perf_counter()), 1e-3))

    lo_red = reduce_rows(net, edit, _only(groups, setup.same), norm, directions(shared, edit.mask, norm), shared,
                         exact=True)
    lo_plan = _with_reduction(_plan_surrogate(lo_red, task, until(0.5)), lo_red)
    lo_sol = solve_plan(lo_plan, until(0.5))
    others = int(np.count_nonzero(~setup.same))
    lo = lo_sol.objective if lo_sol.status == OPTIMAL else lo_sol.bound
    lo_note = (f"lower bound {lo:.6g}: exact optimum without the {others} point(s) whose input differs (one unknown "
               f"per row of the {n} weights)" if lo is not None else "")
    if lo_sol.status == INFEASIBLE:  # a relaxation without a patch: the task has none either
        return replace(lo_plan, notes=[f"no patch even without the {others} point(s) whose input differs (exact, one "
                                       f"unknown per row of the {n} weights)"], solution=lo_sol,
                       lp_seconds=time.perf_counter() - t0)
    if lo_sol.x is not None and lo_sol.status == OPTIMAL:
        layout, values = lo_plan.enc.patch_of(lo_sol.x)
        if goals_hold(layout.apply(net, values), groups):
            note = (f"the exact optimum without the {others} point(s) whose input differs keeps them too: optimal "
                    f"(one unknown per row of the {n} weights)")
            return replace(lo_plan, notes=[note] + lo_plan.notes, lp_seconds=time.perf_counter() - t0)
    support = np.all(setup.inputs[~setup.same] == 0, axis=0)
    hi_red = reduce_rows(net, edit, groups, norm, directions(shared, edit.mask, norm, support), shared, exact=False)
    hi_plan = _with_reduction(_plan_surrogate(hi_red, task, until(1.0)), hi_red)
    hi_sol = solve_plan(hi_plan, until(1.0))
    said = (f"restricted to the {int(np.count_nonzero(support))} input columns where the {others} other point(s) "
            f"are zero (they stay untouched), one unknown per row: every answer is a genuine patch")
    seconds = time.perf_counter() - t0
    if hi_sol.x is None or hi_sol.status not in (OPTIMAL, FEASIBLE):
        # the restriction has no patch (or none in time): the plain MILP over every weight, in the time left
        plan = plan_milp(net, _implied_linf(task), groups, until(1.0))
        plan.notes.insert(0, f"no patch with the {others} other point(s) untouched ({hi_sol.status}): "
                             "solved over every weight" + (f"; {lo_note}" if lo_note else ""))
        return replace(plan, lp_seconds=plan.lp_seconds + seconds)
    hi = float(hi_sol.objective)
    closed = (lambda v: lo is not None and lo_sol.status == OPTIMAL and v - lo <= gap * max(v, 1e-12))  # noqa: E731
    for wider in _wider_supports(setup, support) if norm == "linf" else []:  # L1: one column per row anyway
        if closed(hi) or (deadline is not None and deadline - time.perf_counter() < 0.25 * options.time_limit):
            break
        R = directions(shared, edit.mask, norm, wider)
        if np.array_equal(R, hi_red.directions):
            continue
        red = reduce_rows(net, edit, groups, norm, R, None, exact=False)  # the other points see it: lift as is
        try:
            plan = _with_reduction(_plan_surrogate(red, task, until(0.5)), red)
        except PatchlangError:
            continue  # no bound derivable for this support: it is only a heuristic
        sol = solve_plan(plan, until(0.5))
        if sol.x is not None and sol.status in (OPTIMAL, FEASIBLE) and sol.objective < hi * (1 - 1e-9):
            hi_sol, hi_plan, hi, hi_red = sol, plan, float(sol.objective), red
            said = (f"restricted to one unknown per row along sign(x) on the {int(np.count_nonzero(wider))} "
                        f"input columns where the {others} other point(s) are at most {_max_other(setup, wider):.3g} "
                        "(tried from the columns where they are zero up): every answer is a genuine patch")
    done = hi_sol.status == OPTIMAL and closed(hi)
    notes = [said] + hi_plan.notes + ([lo_note] if lo_note else [])
    seconds = time.perf_counter() - t0
    answer = replace(hi_sol, status=OPTIMAL if done else FEASIBLE, bound=lo, seconds=seconds,
                     message=f"optimum in [{lo if lo is not None else 0.0:.9g}, {hi:.9g}]")
    return replace(hi_plan, notes=notes, lp_seconds=seconds, lp_objective=hi, solution=answer)


def _max_other(setup: RowSetup, columns: np.ndarray) -> float:
    """The largest |input| of the points outside the shared input on ``columns``."""
    other = np.abs(setup.inputs[~setup.same][:, columns])
    return float(other.max()) if other.size else 0.0


WIDER_QUANTILES = (0.02, 0.1, 0.3)


def _wider_supports(setup: RowSetup, support: np.ndarray) -> list[np.ndarray]:
    """Column sets beyond ``support`` (where the other points are zero), widening by the other points' largest
    |input| per column (quantiles of it), for the L∞ direction: more columns spread a row's change further
    (smaller L∞) and the other points, now touched, are encoded exactly in the surrogate.  A heuristic for the
    incumbent; the bound does not depend on it."""
    peak = np.abs(setup.inputs[~setup.same]).max(axis=0)
    levels = np.quantile(peak[peak > 0], WIDER_QUANTILES) if np.any(peak > 0) else []
    return [peak <= v for v in levels]


def _plan_surrogate(red: RowReduction, task: PatchTask, options: SolveOptions) -> MilpPlan:
    """:func:`plan_milp` on the surrogate network with its one edit (same norms, goals and margins)."""
    return plan_milp(red.net, replace(_implied_linf(task), edits=[red.edit]), red.groups, options)


def _implied_linf(task: PatchTask) -> PatchTask:
    """The task with a `bound l1` also bounding every delta (``|delta| <= l1``): the same problem, and the ReLUs'
    big-Ms need a per-delta bound."""
    bounds = dict(task.norms.bounds)
    if "l1" not in bounds:
        return task
    bounds["linf"] = min(bounds["l1"], bounds.get("linf", np.inf))
    return replace(task, norms=replace(task.norms, bounds=bounds))


BISECT_MIN_DELTAS = 20_000
MAX_BISECTIONS = 200


def bisection_applies(task: PatchTask) -> bool:
    """Pure L∞ over many parameters: the encoding's ``|delta| <= t`` rows all share the column of ``t``, a dense
    column that makes every LP of the MILP crawl (a hidden layer of 150x784: minutes per LP)."""
    n = sum(int(np.count_nonzero(e.mask)) for e in task.edits)
    return n >= BISECT_MIN_DELTAS and len(task.norms.objective) == 1 and task.norms.objective[0][1] == "linf"


def linf_bisection(net: Network, task: PatchTask, groups: list[GoalGroup], options: SolveOptions) -> MilpPlan:
    """Minimal L∞ by bisection on ``t`` over feasibility problems in which ``|delta| <= t`` are plain variable
    bounds (no ``t`` column, and the bounds fix more ReLU phases the smaller ``t`` gets).

    ``t`` grows by 4x from a small start (small ``t``: few unstable ReLUs, fast) until a patch exists, then the
    feasibility MILPs bisect between the proven lower bound (the largest infeasible ``t``) and the best patch's
    actual ``max |delta|``.  Stops when they are within the MIP gap (reported optimal, like a
    MIP solver's optimum within its gap) or at the time limit (the best patch, with its gap).  The encoding is built
    once and re-bounded for each smaller ``t`` (:func:`~patchlang.compile.bounds_tighten.rebound`)."""
    t0 = time.perf_counter()
    gap = options.mip_gap if options.mip_gap is not None else DEFAULT_MIP_GAP
    deadline = t0 + options.time_limit if options.time_limit is not None else None
    user = task.norms.bounds.get("linf", np.inf)
    feas_norms = NormSpec(objective=[], bounds=dict(task.norms.bounds), bound_spans=task.norms.bound_spans)
    highs = get_backend("highs")
    base: list[PatchEncoding] = []
    calls = {"milp": 0}

    def encoding(t: float) -> PatchEncoding:
        if not base or t > float(np.max(base[0].query.ub[np.concatenate(base[0].layout.var_index)])):
            base[:] = [encode_patch(net, task.edits, groups,
                                    replace(feas_norms, bounds={**feas_norms.bounds, "linf": t}), name=task.name)]
            return base[0]
        b = base[0]
        q = rebound(b.query, b.layout, t, b.source)
        if q is None:
            return encode_patch(net, task.edits, groups, replace(feas_norms, bounds={**feas_norms.bounds, "linf": t}))
        return PatchEncoding(q, b.layout, len(q.relus), b.n_points, source=b.source or b.query)

    def left() -> float | None:
        return None if deadline is None else max(deadline - time.perf_counter(), 1e-3)

    def solve(t: float) -> tuple[Solution, PatchEncoding, float | None]:
        """(solution, encoding, max |delta| of its patch or None)."""
        calls["milp"] += 1
        enc = encoding(t)
        # tight tolerances: a patch may otherwise exceed |delta| <= t by 1e-6 and the bracket never closes
        tight = {"mip_feasibility_tolerance": 1e-9, "primal_feasibility_tolerance": 1e-9, **options.extra}
        sol = highs.solve(enc.query, replace(options, time_limit=left(), start=None, extra=tight))
        if sol.x is None or sol.status not in (OPTIMAL, FEASIBLE):
            return sol, enc, None
        return sol, enc, float(np.max(np.abs(enc.layout.deltas(sol.x))))

    best = None  # (solution, encoding, max |delta|)
    lo, hi = 0.0, np.inf  # no patch within lo (proven); a patch within hi (up to the solver's bound tolerance)
    stopped = False
    # grow t from a small multiple of the edited parameters' scale (small t: few unstable ReLUs, fast MILPs)
    scale = max((float(np.max(np.abs(_edited_values(net, e)))) for e in task.edits), default=1.0) or 1.0
    t = min(user, 1e-4 * scale)
    for _ in range(MAX_BISECTIONS):
        if deadline is not None and time.perf_counter() >= deadline:
            stopped = True
            break
        if np.isfinite(hi) and (hi - lo <= gap * hi or hi <= 1e-12):
            break
        sol, enc, m = solve(t)
        if m is not None:
            hi = min(hi, t, m)
            best = (sol, enc, m) if best is None or m < best[2] else best
        elif sol.status == INFEASIBLE:
            lo = max(lo, t)
        else:
            stopped = True
            break
        if best is None:
            if lo >= user or t >= 1e6 * scale:
                break
            t = min(4.0 * t, user)
            continue
        t = (lo + hi) / 2.0
    else:
        stopped = True  # MAX_BISECTIONS: report what was reached
    seconds = time.perf_counter() - t0
    n = sum(int(np.count_nonzero(e.mask)) for e in task.edits)
    note = f"minimal L∞ by bisection over {calls['milp']} feasibility MILPs ({n} parameters, |delta| <= t as bounds)"
    if best is None:
        status = TIMEOUT if stopped else INFEASIBLE
        empty = Solution(status=status, backend="highs", backend_version=highs.version(), bound=lo,
                         message="bisection: " + ("time limit" if stopped else "no bound tried admits a patch"))
        return MilpPlan(enc, options, [note], seconds, solution=empty)
    sol, enc, hi = best
    done = hi - lo <= gap * hi + 1e-9 * max(1.0, hi) or hi <= 1e-12  # the patch may exceed t by a bound tolerance
    answer = Solution(status=OPTIMAL if done else FEASIBLE, x=sol.x, objective=hi, bound=lo, backend="highs",
                      backend_version=highs.version(), seconds=seconds,
                      message=f"bisection: optimum in [{lo:.9g}, {hi:.9g}]")
    return MilpPlan(enc, options, [note + f"; optimum in [{lo:.9g}, {hi:.9g}]"], seconds, hi, solution=answer)


def _edited_values(net: Network, e) -> np.ndarray:
    layer = net.affine(e.layer)
    values = (layer.W if e.kind == "weights" else layer.b)[e.mask]
    return values if values.size else np.zeros(1)


def _with_l1_objective(q: Query, layout: DeltaLayout, extra: list[tuple[sp.csr_matrix, float]]) -> Query:
    """``q`` with its objective replaced by the L1 norm of the deltas (new variables ``u >= |delta|``) and
    ``extra`` rows ``row @ x <= rhs`` over its existing variables."""
    d = np.concatenate(layout.var_index)
    n, k = q.n_vars, d.size
    N = n + k
    r = np.arange(k)
    u = n + r
    rows = [sp.csr_matrix(q.A, shape=(q.n_rows, N))]
    for sign in (1.0, -1.0):  # sign*delta - u <= 0
        rows.append(sp.csr_matrix((np.r_[np.full(k, sign), -np.ones(k)], (np.r_[r, r], np.r_[d, u])), shape=(k, N)))
    los, his = [q.row_lo, np.full(2 * k, -np.inf)], [q.row_hi, np.zeros(2 * k)]
    for row, rhs in extra:
        rows.append(sp.csr_matrix(row, shape=(1, N)))
        los.append(np.array([-np.inf]))
        his.append(np.array([rhs]))
    blocks = list(q.row_blocks) + [RowBlock("l1 norm", q.n_rows, 2 * k, "norm"),
                                   RowBlock("bound on the first objective", q.n_rows + 2 * k, len(extra), "bound")]
    return Query(lb=np.r_[q.lb, np.zeros(k)], ub=np.r_[q.ub, np.full(k, np.inf)],
                 integer=np.r_[q.integer, np.zeros(k, dtype=bool)], A=sp.vstack(rows).tocsr(),
                 row_lo=np.concatenate(los), row_hi=np.concatenate(his), c=np.r_[np.zeros(n), np.ones(k)],
                 relus=q.relus, disjunctions=list(q.disjunctions),
                 var_blocks=list(q.var_blocks) + [VarBlock("abs", n, k, "norm")], row_blocks=blocks,
                 name=q.name + ".tidy", var_bound_source=q.var_bound_source)


def plan_tidy(main: PatchEncoding, sol: Solution, primary: str, bound: float, options: SolveOptions,
              net: Network, groups: list[GoalGroup]) -> MilpPlan | None:
    """The least-L1 follow-up of a MILP optimum (``primary`` kept within ``bound``), solved here from the main
    encoding with the optimum as warm start: no second encoding of every point.

    The optimum sits on a sliver (``linf <= t*`` exactly), where MIP presolve is fragile; an answer is used only if
    it is optimal, passes the float64 goal check and is no worse than the start.  Otherwise, and directly for
    very many parameters, the least-L1 patch *with the optimum's ReLU phases* is taken (an LP, noted as such).
    None when the main problem is not a MILP or its structure is not understood (the caller encodes the tidy
    problem itself)."""
    q = main.query
    if q.problem_class != "MILP" or sol.x is None:
        return None
    extra: list[tuple[sp.csr_matrix, float]] = []
    if primary == "linf":
        q = rebound(q, main.layout, bound, main.source)
    else:
        changed = next((b for b in q.var_blocks if b.name == "changed" and b.kind == "binary"), None)
        if changed is None:
            return None
        extra.append((sp.csr_matrix((np.ones(changed.size), (np.zeros(changed.size, dtype=np.int64),
                                                              np.arange(changed.start, changed.start + changed.size))),
                                    shape=(1, q.n_vars)), bound))
    if q is None:
        return None
    tq = _with_l1_objective(q, main.layout, extra)
    enc = PatchEncoding(tq, main.layout, len(tq.relus), main.n_points, source=None, reduction=main.reduction)
    deltas = main.layout.deltas(sol.x)
    x = propagate(main.source or main.query, main.layout, _delta_vector(main.layout, deltas, main.query.n_vars))
    if x is None:
        return None
    x = np.r_[x, np.abs(deltas)]
    if violation(tq, x) > START_TOL:
        return None
    options = replace(options, start=x, mip_gap=options.mip_gap if options.mip_gap is not None else DEFAULT_MIP_GAP)
    highs = get_backend("highs")
    limit = float(np.sum(np.abs(deltas)))
    norms = NormSpec(objective=[(1.0, "l1")], bounds={})

    def usable(s: Solution) -> bool:
        if s.status != OPTIMAL or s.x is None:
            return False
        d = main.layout.deltas(s.x)
        return (objective_value(d, norms) <= limit * (1 + 1e-9) + 1e-12 and np.max(np.abs(d)) <= bound * (1 + 1e-9)
                and goals_hold(main.layout.apply(net, s.x), groups))

    if tq.problem_class == "MILP" and main.layout.size < BISECT_MIN_DELTAS:
        s = highs.solve(tq, options)
        if usable(s):
            return MilpPlan(enc, options, solution=s)
    s = highs.solve(fixed_phase_query(tq, x), replace(options, start=None))
    if not usable(s):
        return None
    s.stats["tidy_note"] = "with the ReLU phases of the minimal patch found"
    return MilpPlan(enc, options, solution=s)


def bound_reached(sol: Solution) -> str:
    """What a solver that stopped early proved: ``"; every patch has objective >= B"`` (empty when nothing)."""
    if sol.bound is None or not np.isfinite(sol.bound) or sol.bound <= 0:
        return ""
    text = f"; every patch has objective >= {sol.bound:.6g}"
    if sol.objective is not None:
        text += f" (best found {sol.objective:.6g})"
    return text
