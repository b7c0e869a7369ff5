"""The one public entry point of planning for patch problems (used by `patch` and `repair` tasks alike).

:func:`solve_patch` runs the candidate-label driver (plan.away) when it applies, each attempt through the
:class:`~patchlang.plan.chain.Planner` (lazy `keep` rounds around the chain of reductions), and returns a
:class:`PlanResult`: the best answer, the last problem solved, every attempt's status, the step records.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from ..compile.goals import GoalGroup
from ..lang.program import PatchTask
from ..model.ir import Network
from ..query import Query
from ..solution import FEASIBLE, INFEASIBLE, OPTIMAL, SolveOptions
from .away import attempts_record, away_attempts, better, pin_away, single_away_candidates, tie_tol
from .budget import Budget
from .chain import Outcome, Planner
from .reduction import StepRecord


@dataclass
class PlanResult:
    """``best``: the best outcome with a patch (None when no attempt found one); ``last``: the last attempt's
    outcome; ``statuses``: every attempt's status, in order (all ``infeasible`` proves there is no patch)."""

    best: Outcome | None
    last: Outcome
    statuses: list[str]
    steps: list[StepRecord] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)
    build_seconds: float = 0.0
    solve_seconds: float = 0.0
    # the queries of the attempts that were proven infeasible, so the verdict can be re-checked independently
    infeasible: list[Query] = field(default_factory=list)


def solve_patch(net: Network, task: PatchTask, groups: list[GoalGroup], backend_name: str, options: SolveOptions,
                budget: Budget, disable: frozenset[str] = frozenset()) -> PlanResult:
    """Plan and solve the patch problem ``task`` over ``groups`` on ``net`` with the backend ``backend_name``
    (``auto`` lets patchlang choose), within ``budget``; ``disable`` switches steps off by name (see
    :data:`patchlang.plan.chain.STEP_NAMES`)."""
    planner = Planner(backend_name, disable)
    candidates = single_away_candidates(net, task)
    attempts: list[tuple[int | None, float]] = [(None, -np.inf)]  # (pinned label, lower bound of its optimum)
    if candidates is not None:
        gi, labels = candidates
        attempts = away_attempts(net, task, groups[gi].points[0], labels)
    lazy = planner.lazy_keep(net, task, groups)
    # with several candidates only the winner is tidied (lazy rounds tidy each round's patch to test it)
    tidy_each = candidates is None or lazy is not None
    best: tuple[Outcome, int | None] | None = None
    outcomes: list[Outcome] = []
    for label, lower in attempts:
        if best is not None and lower > (best[0].solution.objective or 0.0) + tie_tol(best[0].solution):
            break  # attempts are sorted by lower bound: no later candidate can beat (or tie) the incumbent
        pinned = groups if label is None else pin_away(groups, gi, label)
        cutoff = (best[0].solution.objective or 0.0) + tie_tol(best[0].solution) if best is not None else np.inf
        out = planner.solve(net, task, pinned, options, budget, lazy, cutoff, tidy=tidy_each)
        outcomes.append(out)
        sol = out.solution
        if sol.x is not None and sol.status in (OPTIMAL, FEASIBLE):
            if best is None or better(sol, label, best[0].solution, best[1]):
                best = (out, label)
    if best is not None and not tidy_each:
        tidied = planner.tidy(best[0], budget)
        outcomes = [tidied if o is best[0] else o for o in outcomes]
        best = (tidied, best[1])
    records = [r for o in outcomes for r in o.steps]
    if lazy is not None:
        records.append(lazy.record(groups))
    if candidates is not None:
        records.append(attempts_record(len(outcomes), len(attempts)))
    return PlanResult(best[0] if best else None, outcomes[-1], [o.solution.status for o in outcomes], records,
                      planner.notes, sum(o.build_seconds for o in outcomes), sum(o.solve_seconds for o in outcomes),
                      [o.problem.enc.query for o in outcomes
                       if o.solution.status == INFEASIBLE and o.problem.enc is not None])
