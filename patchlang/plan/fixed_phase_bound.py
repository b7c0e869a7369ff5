"""Step: a sound `bound linf`/`bound l1` and a checked warm start for a MILP patch problem, from fixed-phase LPs.

Why: the MILP's difficulty is its binaries, and their number and big-Ms come from the bounds on the change.
Fixing every ReLU phase to the original network's (each disjunction to its best alternative, each l0 indicator to
"may change") restricts the problem to an LP (:func:`patchlang.compile.fixed_phase.fixed_phase_query`); its answer
is a genuine patch, so the optimum is at most its objective ``N``.  With objective ``w_inf*linf + w_1*l1 (+ w_0*l0)``
and ``l1 >= linf`` every optimal patch has ``linf <= N / (w_inf + w_1)``: a sound bound, usually far below the
user's (or none), so far fewer neurons are unstable and the big-Ms are small.  The LP answer, propagated through
the encoded problem, is also an incumbent for the MILP solver.

The LP is repeated with the phases of its own answer while that improves.  When the original phases admit no
patch, the LP relaxation's phases are tried, then a MILP with only the `keep` points' phases fixed, and, when the
user gave no bound at all, MILPs under growing trial bounds (any patch they find is genuine, so its objective gives
the same sound bound).  Every answer is applied to the network and every goal re-evaluated in float64 first.

Inverse: a MILP stopped by the time limit before it reported any patch gets the warm start as incumbent.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, replace

import numpy as np

from ..compile.bounds_tighten import rebound
from ..compile.fixed_phase import fixed_phase_query, propagate, relaxed_phases, relus_of_groups
from ..compile.patch import PatchEncoding, encode_patch
from ..errors import PatchlangError
from ..model.edits import NormSpec, objective_value, within_bounds
from ..query import Query
from ..solution import FEASIBLE, OPTIMAL, TIMEOUT, Solution, SolveOptions
from ..solvers.base import Backend
from .budget import Budget
from .checks import goals_hold, with_start
from .reduction import Answer, Inverse, PatchProblem, Reduction, StepRecord

MAX_ROUNDS = 6  # fixed-phase LPs (two may be spent on the relaxation's phases, one on the keep-phase MILP)
KEEP_PHASES_SECONDS = 20.0  # at most this long for the MILP with the `keep` points' phases fixed
LP_SHARE = 0.5  # of the time left, at most this much goes to the fixed-phase LPs
# Relative slack on a derived bound.  Far above the LP's feasibility tolerance, and large enough that the
# neuron the optimum pushes to exactly 0 is not left with a big-M of 1e-7 (MILP presolve mistreats those).
INFLATE = 1e-3
TRIAL_GROWTH = 4.0  # trial bounds grow by this factor ...
TRIAL_RANGE = (1e-3, 1e4)  # ... over this range, relative to the edited parameters' largest magnitude


@dataclass
class Search:
    """What the fixed-phase search found: the best checked deltas, their objective, and the calls it made."""

    deltas: np.ndarray | None = None
    value: float | None = None
    rounds: int = 0
    timed_out: bool = False
    how: str = ""  # fixed_phase | trial_bound


def derived_bounds(value: float, norms: NormSpec) -> tuple[float, float]:
    """Bounds ``(linf, l1)`` on every optimal patch when some patch has objective ``value``: with weights
    ``w_inf, w_1 >= 0`` and ``l1 >= linf``, ``(w_inf + w_1) linf <= value`` and ``w_1 l1 <= value`` (inf where a
    weight is missing, e.g. a pure l0 objective bounds neither)."""
    w_inf = sum(wt for wt, n in norms.objective if n == "linf")
    w_1 = sum(wt for wt, n in norms.objective if n == "l1")
    linf = value / (w_inf + w_1) if w_inf + w_1 > 0 else np.inf
    return linf, (value / w_1 if w_1 > 0 else np.inf)


def edited_scale(problem: PatchProblem) -> float:
    """The largest magnitude among the edited parameters (1 when they are all zero): the scale of a change."""
    net = problem.net
    values = [np.abs(net.params(e.layer, e.kind)[e.mask])
              for e in problem.task.edits]
    return max((float(v.max()) for v in values if v.size), default=1.0) or 1.0


class FixedPhaseBound(Reduction):
    """Derived bound + warm start for a MILP (see the module docstring).  Needs a backend that lowers ReLUs to
    big-M rows (``bigm``): for others (Z3's exact ``ite`` terms) a bound buys nothing."""

    name = "fixed_phase_bound"
    requires = frozenset({"lp", "milp", "bigm"})

    def __init__(self, backend: Backend):
        self.backend = backend

    def accepts(self, problem: PatchProblem, capabilities: frozenset[str]) -> bool:
        return (super().accepts(problem, capabilities) and problem.enc is not None
                and problem.enc.query.problem_class == "MILP")

    def apply(self, problem: PatchProblem, budget: Budget) -> tuple[PatchProblem, Inverse]:
        enc, norms = problem.enc, problem.task.norms
        assert enc is not None
        t0 = time.perf_counter()
        found = self.search(problem, budget.share(LP_SHARE))
        user = norms.bounds.get("linf", np.inf)
        if found.deltas is None and not np.isfinite(user) and not budget.expired:
            found = self.trial_bounds(problem, budget.share(LP_SHARE), found)
        record = StepRecord(self.name, {"rounds": found.rounds, "seconds": time.perf_counter() - t0,
                                        "found_by": found.how})
        if found.deltas is None:
            if np.isfinite(user):
                return problem, Inverse(record)
            if found.timed_out or budget.expired:
                stop = Solution(status=TIMEOUT, backend=self.backend.name,
                                message="time limit while deriving a bound on the change")
                record.summary["outcome"] = "timeout"
                return replace(problem, solution=stop), Inverse(record)
            raise PatchlangError(
                f"patch `{problem.task.name}` needs a `bound linf` on the change to encode the ReLUs after the edit "
                "exactly, and none could be derived: no LP with the ReLU phases fixed (as in the original network, "
                "or as an LP relaxation suggests) and no trial bound up to "
                f"{TRIAL_RANGE[1]:g} x the edited parameters' scale has an answer",
                help="add `bound linf <= c` to the patch block (any c that surely allows a patch)")
        linf, l1 = derived_bounds(found.value, norms)
        linf = min(user, linf * (1 + INFLATE) + 1e-12)
        l1 = min(norms.bounds.get("l1", np.inf), l1 * (1 + INFLATE) + 1e-12)
        derived = {n: b for n, b in (("linf", linf), ("l1", l1)) if np.isfinite(b) and b < norms.bounds.get(n, np.inf)}
        if linf < user or np.isfinite(l1):
            enc = restrict(problem, enc, linf, l1)
        record.summary.update(objective=found.value, derived=derived)
        options = with_start(problem.options, enc, found.deltas)
        record.summary["warm_start"] = options.start is not None
        reduced = replace(problem, enc=enc, options=options, start_value=found.value)
        return reduced, Inverse(record, lambda a: Answer(with_start_incumbent(a.solution, options, found.value),
                                                         a.enc))

    def search(self, problem: PatchProblem, budget: Budget) -> Search:
        """Best deltas found by fixed-phase LPs (checked on the network).

        The first reference is the original network; if its phases admit no patch, the LP relaxation's answer is
        tried (the network's phases at its deltas, then the phases the relaxation leans to), then a smaller MILP
        in which only the `keep` points' ReLUs are fixed to their original phases (a restriction too: the points
        to change may switch phases); once an answer is found, the phases at that answer are tried while the
        objective drops."""
        enc, norms, net = problem.enc, problem.task.norms, problem.net
        q = enc.query
        x0 = propagate(q, enc.layout, np.zeros(q.n_vars))
        out = Search(how="fixed_phase")
        if x0 is None:
            return out
        lp_options = replace(problem.options, start=None, mip_gap=None)
        refs: list[tuple[np.ndarray, np.ndarray | None, np.ndarray | None]] = [(x0, None, None)]
        tried_relaxation = tried_keep = False
        while refs and out.rounds < MAX_ROUNDS:
            x_ref, active, only = refs.pop(0)
            out.rounds += 1
            step = budget if only is None else budget.cap(KEEP_PHASES_SECONDS)
            if step.expired:
                out.timed_out = out.deltas is None
                return out
            try:
                sol = self.backend.solve(fixed_phase_query(q, x_ref, active, only), step.options(lp_options))
            except PatchlangError:  # a partly fixed MILP may keep a ReLU without finite bounds: no answer here
                sol = Solution(status="unknown")
            if out.deltas is None and sol.status == TIMEOUT and only is None:
                out.timed_out = True
                return out
            deltas = enc.layout.deltas(sol.x) if sol.x is not None else None
            ok = (sol.status in (OPTIMAL, FEASIBLE) and deltas is not None and within_bounds(deltas, norms)
                  and goals_hold(enc.layout.apply(net, sol.x), problem.groups))
            if ok:
                value = objective_value(deltas, norms)
                if out.value is not None and value >= out.value * (1 - 1e-6):
                    break
                out.deltas, out.value = deltas, value
                x_next = propagate(q, enc.layout, sol.x)
                refs = [(x_next, None, None)] if x_next is not None else []
            elif out.deltas is None and not refs and not tried_relaxation:
                tried_relaxation = True
                relaxed = self.relaxation_point(q, budget.options(lp_options))
                if relaxed is not None:
                    x_true = propagate(q, enc.layout, relaxed)
                    refs = ([(x_true, None, None)] if x_true is not None else []) + [
                        (relaxed, relaxed_phases(q, relaxed), None)]
            if out.deltas is None and not refs and tried_relaxation and not tried_keep:
                tried_keep = True
                keep = relus_of_groups(q, {"keep"}) if len(q.relus) else np.zeros(0, dtype=bool)
                if np.any(keep) and not np.all(keep):
                    refs = [(x0, None, keep)]
        return out

    def relaxation_point(self, q: Query, options: SolveOptions) -> np.ndarray | None:
        """The LP relaxation's answer (binaries continuous), a reference whose phases often admit a patch when the
        original network's do not; None when the backend offers no relaxation, or it cannot be built (unbounded
        ReLUs) or solved."""
        relax = getattr(self.backend, "relaxation", None)
        if relax is None or "relaxation" not in self.backend.capabilities:
            return None
        try:
            sol = relax(q, options)
        except PatchlangError:
            return None
        return sol.x[: q.n_vars] if sol.status == OPTIMAL and sol.x is not None else None

    def trial_bounds(self, problem: PatchProblem, budget: Budget, found: Search) -> Search:
        """No bound given and no fixed-phase LP answered: MILPs under growing trial bounds ``|delta| <= B``.  The
        first patch found is genuine, so its objective bounds every optimal patch; no conclusion is drawn from a
        trial bound without a patch (a larger change might allow one)."""
        scale = edited_scale(problem)
        b, top = TRIAL_RANGE[0] * scale, TRIAL_RANGE[1] * scale
        norms = problem.task.norms
        while b <= top and not budget.expired:
            trial = NormSpec(objective=norms.objective, bounds={**norms.bounds, "linf": b},
                             bound_spans=norms.bound_spans)
            enc = encode_patch(problem.net, problem.task.edits, problem.groups, trial, name=problem.task.name)
            found.rounds += 1
            sol = self.backend.solve(enc.query, budget.options(replace(problem.options, start=None)))
            if sol.x is not None and sol.status in (OPTIMAL, FEASIBLE):
                deltas = enc.layout.deltas(sol.x)
                # a genuine patch of the task: every goal and every bound the task itself states
                if within_bounds(deltas, norms) and goals_hold(enc.layout.apply(problem.net, sol.x), problem.groups):
                    return Search(deltas, objective_value(deltas, norms), found.rounds, how="trial_bound")
            elif sol.status == TIMEOUT:
                found.timed_out = True
                return found
            b *= TRIAL_GROWTH
        found.timed_out = budget.expired
        return found


def restrict(problem: PatchProblem, enc: PatchEncoding, bound: float, l1: float = np.inf) -> PatchEncoding:
    """``enc`` restricted to ``|delta| <= bound`` (and an L1 budget, which tightens the bounds of neurons fed by
    the edited layer): re-bounded in place when possible, else encoded again."""
    q = rebound(enc.query, enc.layout, bound, enc.source, l1)
    if q is not None:
        return replace(enc, query=q, n_unstable=len(q.relus), source=enc.source or enc.query)
    norms = problem.task.norms
    norms = NormSpec(objective=norms.objective, bounds={**norms.bounds, "linf": bound}, bound_spans=norms.bound_spans)
    return encode_patch(problem.net, problem.task.edits, problem.groups, norms, name=problem.task.name)


def with_start_incumbent(sol: Solution, options: SolveOptions, value: float | None) -> Solution:
    """A MILP stopped by the time limit before it reported any patch: the warm start (the checked fixed-phase LP
    patch, objective ``value``) is a patch all the same, so it is the incumbent, with the solver's bound.

    Why: on very wide MILPs (a hidden layer of 150x784 weights) the solver can spend the whole limit before
    taking up its start, and "no patch found" would hide a patch we hold."""
    if sol.status != TIMEOUT or sol.x is not None or options.start is None or value is None:
        return sol
    return replace(sol, status=FEASIBLE, x=options.start, objective=value,
                   message=sol.message + "; incumbent: the fixed-phase LP patch (warm start)")
