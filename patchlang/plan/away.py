"""Driver: a single `away from label` point solved as one LP per candidate label, best lower bound first.

Why: with one point to move away from its label and nothing else disjunctive, the disjunction "some other label
beats the old one" is exactly the best of the LPs that pin one alternative each, which avoids binaries entirely.
Candidates are ordered by a closed-form lower bound of their optimum and those that cannot beat the incumbent are
skipped (with the point alone at the last layer the bound is exact and only the winner is solved).
"""

from __future__ import annotations

from dataclasses import replace

import numpy as np

from ..compile.goals import Alternative, GoalGroup, PointGoal
from ..compile.patch import alternative_lower_bound, delta_expression
from ..lang.program import PatchTask
from ..model.ir import Network
from ..solution import Solution
from .reduction import StepRecord


def single_away_candidates(net: Network, task: PatchTask) -> tuple[int, list[int]] | None:
    """(goal index, candidate labels) when exactly one point must move away from its label and the task is an LP."""
    if task.problem_class != "LP":
        return None
    away = [(i, g) for i, g in enumerate(task.goals) if g.kind == "away" and len(g.points)]
    if len(away) != 1 or len(away[0][1].points) != 1:
        return None
    i, g = away[0]
    own = int(g.points.y[0]) if g.points.y is not None else int(net.labels(g.points.x[:1])[0])
    return i, [j for j in range(net.output_size) if j != own]


def away_alternative(point: PointGoal, label: int) -> Alternative:
    """The alternative of the point's `away from label` clause in which output ``label`` beats the old label."""
    (clause,) = point.clauses
    return next(a for a in clause if a.C[0, label] != 0)


def pin_away(groups: list[GoalGroup], gi: int, label: int) -> list[GoalGroup]:
    """The goals with the single `away from label` point pinned to one alternative of its clause: the clause is
    the disjunction of these alternatives, so the best of these LPs is exactly the disjunctive optimum."""
    point = groups[gi].points[0]
    pinned = replace(groups[gi], points=[replace(point, clauses=[[away_alternative(point, label)]])])
    return [pinned if i == gi else g for i, g in enumerate(groups)]


def away_attempts(net: Network, task: PatchTask, point: PointGoal, labels: list[int]
                   ) -> list[tuple[int | None, float]]:
    """Candidate labels with a lower bound on their optimum, best first (ties by label, as the plain order).

    The bound ignores every other goal, so it is valid for the full problem; with the point alone at the last
    layer it is the exact optimum and only the winning candidate is ever solved."""
    expr = delta_expression(net, task.edits, task.norms, point.h)
    out = []
    for lab in labels:
        lower = -np.inf if expr is None else alternative_lower_bound(*expr, away_alternative(point, lab), task.norms)
        out.append((lab, lower))
    return sorted(out, key=lambda a: (a[1], a[0]))


def tie_tol(sol: Solution) -> float:
    """Objectives of separately solved LPs closer than this are treated as equal (solver tolerances)."""
    return 1e-9 * max(1.0, abs(sol.objective or 0.0))


def better(sol: Solution, label: int | None, best: Solution, best_label: int | None) -> bool:
    """Strictly better objective, or equal within tolerance and a lower label (the order without pruning)."""
    a, b = sol.objective or 0.0, best.objective or 0.0
    if a < b - tie_tol(best):
        return True
    return abs(a - b) <= tie_tol(best) and label is not None and best_label is not None and label < best_label




def attempts_record(solved: int, attempts: int) -> StepRecord:
    return StepRecord("away_candidates", {"solved": solved, "candidates": attempts})
