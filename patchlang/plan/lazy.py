"""Driver: lazy `keep` points ("cutting planes") for LP and MILP patch problems with many `keep` points.

Why: `keep clean` on 1000 points adds thousands of dense rows (one per point and competing label), yet at the
optimum only a few points are tight.  We solve with a working subset of the keep points, evaluate the patch on
all of them in float64, add the points it breaks, and repeat until it breaks none.  Each round solves a
relaxation of the full problem (a subset of its rows), and a relaxation's optimum that satisfies every row is an
optimum of the full problem, so the answer is exactly the one of the plain encoding.  Points are only ever added,
so the loop ends, at worst with every point in the working set (the plain problem).
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from typing import Callable

import numpy as np

from ..compile.goals import GoalGroup, slacks
from ..model.ir import Network
from ..solution import FEASIBLE, OPTIMAL, TIMEOUT, Solution
from .budget import Budget
from .reduction import Answer, PatchProblem, StepRecord

LAZY_MIN_POINTS = 64  # smaller keep sets are encoded whole: a second round would cost more than it saves
INITIAL_POINTS = 32  # the most fragile points start in the set (smallest slack per unit of input size)
MAX_ADD = 64  # per round, at most this many of the most violated points are added (plus twice the set size)


class LazyKeep:
    """Working sets of the large `keep` groups of one patch problem, and the rounds that grow them."""

    def __init__(self, net: Network, groups: list[GoalGroup], start: int, eligible: list[int]):
        self.net = net
        self.start = start
        self.inputs = {i: net.forward_suffix(np.stack([p.h for p in groups[i].points]), 0, start) for i in eligible}
        self.working: dict[int, np.ndarray] = {}
        self.rounds = 0
        self._stacked: dict[tuple[int, int], tuple[np.ndarray, np.ndarray, np.ndarray] | None] = {}
        for i in eligible:
            y = net.forward_suffix(self.inputs[i], start)
            # a change of size t moves an output by at most about t * ||input of the edited layer||_1
            fragility = slacks(groups[i], y) / (1.0 + np.abs(self.inputs[i]).sum(axis=1))
            order = np.argsort(fragility, kind="stable")
            mask = np.zeros(len(groups[i].points), dtype=bool)
            mask[order[:INITIAL_POINTS]] = True
            self.working[i] = mask

    @staticmethod
    def eligible(groups: list[GoalGroup]) -> list[int]:
        """Keep groups large enough to be worth it whose points are plain conjunctions (no disjunction)."""
        return [i for i, g in enumerate(groups)
                if g.group == "keep" and len(g.points) >= LAZY_MIN_POINTS and not g.is_disjunctive]

    def subset(self, groups: list[GoalGroup]) -> list[GoalGroup]:
        """The groups with every lazy group cut down to its working set."""
        return [replace(g, points=[p for p, w in zip(g.points, self.working[i]) if w]) if i in self.working else g
                for i, g in enumerate(groups)]

    def add_violated(self, groups: list[GoalGroup], patched: Network) -> int:
        """Add the points outside the working sets that ``patched`` breaks; returns how many were added."""
        self.rounds += 1
        added = 0
        for i, mask in self.working.items():
            y = patched.forward_suffix(self.inputs[i], self.start)
            slack = self._slacks(i, groups[i], y)
            tol = 1e-9 * (1.0 + float(np.max(np.abs(y))))
            bad = np.nonzero(~mask & (slack < -tol))[0]
            if bad.size:
                cap = MAX_ADD + 2 * int(np.count_nonzero(mask))
                bad = bad[np.argsort(slack[bad], kind="stable")[:cap]]
                mask[bad] = True
                added += int(bad.size)
        return added

    def _slacks(self, i: int, group: GoalGroup, y: np.ndarray) -> np.ndarray:
        """:func:`slacks` of group ``i``, at once for all points when each has one clause of one alternative of
        the same shape (keep points: one row per competing label), else point by point."""
        key = (i, id(group))
        if key not in self._stacked:
            alts = [p.clauses[0][0] for p in group.points
                    if len(p.clauses) == 1 and len(p.clauses[0]) == 1]
            same = len(alts) == len(group.points) and len({a.C.shape for a in alts}) == 1
            self._stacked[key] = (np.stack([a.C for a in alts]), np.stack([a.lo for a in alts]),
                                np.stack([a.hi for a in alts])) if same and alts else None
        stacked = self._stacked[key]
        if stacked is None:
            return slacks(group, y)
        C, lo, hi = stacked
        v = np.einsum("prk,pk->pr", C, y)
        return np.min(np.minimum(v - lo, hi - v), axis=1) if C.shape[1] else np.full(len(y), np.inf)

    def record(self, groups: list[GoalGroup]) -> StepRecord:
        """How many points of each lazy group were needed, and in how many rounds."""
        return StepRecord("lazy_keep", {"rounds": self.rounds, "groups": [
            {"label": groups[i].label, "needed": int(np.count_nonzero(m)), "points": len(groups[i].points)}
            for i, m in self.working.items()]})


RoundSolver = Callable[[PatchProblem, Budget, bool], tuple[Answer, PatchProblem]]


@dataclass
class Rounds:
    """The lazy loop's result: the answer, the last problem solved, and the strongest bound any round proved."""

    answer: Answer
    problem: PatchProblem
    bound: float | None = None


def solve_lazily(problem: PatchProblem, budget: Budget, lazy: LazyKeep | None, solve_round: RoundSolver,
                 tidy_each_round: bool, cutoff: float = np.inf) -> Rounds:
    """Round after round until no keep point outside the working sets is broken: the same optimum as encoding
    them all.  ``solve_round(problem, budget, tidy)`` runs the chain on one round's problem.

    Every round solves a relaxation (a subset of the rows), so its bound holds for the whole problem and an
    infeasible round proves the whole problem infeasible.  A round whose (relaxed, so lower) optimum is above
    ``cutoff`` ends the loop: that answer cannot win.  Running out of time with points still broken gives no
    answer (never a patch that breaks a point it was not asked about).  With ``tidy_each_round`` the patch tested
    is the least-L1 one among the optimal ones (an L∞ optimum's arbitrary corner breaks many points no optimum
    needs to break)."""
    groups = problem.groups
    best_bound: float | None = None
    while True:
        sub = replace(problem, groups=lazy.subset(groups), check_groups=groups) if lazy is not None else problem
        answer, solved = solve_round(sub, budget, tidy_each_round and lazy is not None)
        sol = answer.solution
        if sol.bound is not None and np.isfinite(sol.bound) and sol.status in (OPTIMAL, FEASIBLE, TIMEOUT):
            best_bound = sol.bound if best_bound is None else max(best_bound, sol.bound)
        if lazy is None or sol.x is None or sol.status not in (OPTIMAL, FEASIBLE):
            if sol.status == TIMEOUT and best_bound is not None:
                sol.bound = best_bound  # an earlier round's optimum may be the strongest bound known
            return Rounds(answer, solved, best_bound)
        if sol.status == OPTIMAL and (sol.objective or 0.0) > cutoff:
            return Rounds(answer, solved, best_bound)
        layout, x = answer.patch
        if not lazy.add_violated(groups, layout.apply(problem.net, x)):
            if sol.status == FEASIBLE and best_bound is not None:
                sol.bound = best_bound
            return Rounds(answer, solved, best_bound)
        if budget.expired:
            stop = Solution(TIMEOUT, backend=sol.backend, backend_version=sol.backend_version, bound=best_bound,
                            message="time limit reached while adding keep points lazily")
            return Rounds(Answer(stop, solved.enc), solved, best_bound)
