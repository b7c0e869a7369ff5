"""Driver: the keep bracket, for a weight edit whose points to change share one input but `keep` points do not.

Two surrogates over one unknown per row are solved (:mod:`patchlang.plan.rows`): the *relaxation* without the
points whose input differs (exact for the rest, so its optimum is a lower bound for the task; if its patch happens
to keep every other point it is the optimum) and the *restriction* to the columns where every other point's input
is zero (those points are then untouched, and every answer is a genuine patch).  For L∞, wider column sets are
tried for a better incumbent.  The restriction's patch is reported with the relaxation's bound; when the
restriction has no patch the task falls through to the plain encoding over every weight.
"""

from __future__ import annotations

import time
from dataclasses import replace
from typing import Callable

import numpy as np

from ..compile.goals import GoalGroup
from ..errors import PatchlangError
from ..solution import FEASIBLE, INFEASIBLE, OPTIMAL
from .budget import Budget
from .checks import goals_hold
from .reduction import Answer, Inverse, PatchProblem, Reduction, StepRecord
from .rows import RowReduction, RowSetup, directions, implied_linf, lift, reduce_rows, row_setup, surrogate_problem

DEFAULT_MIP_GAP = 1e-6
WIDER_QUANTILES = (0.02, 0.1, 0.3)
WIDER_STOP_SHARE = 0.25  # stop widening when less than this share of the task's time limit is left

SubSolver = Callable[[PatchProblem, Budget], tuple[Answer, PatchProblem, list[StepRecord]]]


def only(groups: list[GoalGroup], keep: np.ndarray) -> list[GoalGroup]:
    """The groups with only the points flagged in ``keep`` (flags in group order)."""
    out, k = [], 0
    for g in groups:
        out.append(replace(g, points=[p for i, p in enumerate(g.points) if keep[k + i]]))
        k += len(g.points)
    return out


def max_other(setup: RowSetup, columns: np.ndarray) -> float:
    """The largest |input| of the points outside the shared input on ``columns``."""
    other = np.abs(setup.inputs[~setup.same][:, columns])
    return float(other.max()) if other.size else 0.0


def wider_supports(setup: RowSetup, support: np.ndarray) -> list[np.ndarray]:
    """Column sets beyond ``support`` (where the other points are zero), widening by the other points' largest
    |input| per column (quantiles of it), for the L∞ direction: more columns spread a row's change further
    (smaller L∞) and the other points, now touched, are encoded exactly in the surrogate.  A heuristic for the
    incumbent; the bound does not depend on it."""
    peak = np.abs(setup.inputs[~setup.same]).max(axis=0)
    levels = np.quantile(peak[peak > 0], WIDER_QUANTILES) if np.any(peak > 0) else []
    return [peak <= v for v in levels]


class KeepBracket(Reduction):
    """Relaxation/restriction pair over one unknown per row (see the module docstring); ``solve`` solves a
    surrogate problem with the rest of the chain (encode, bound, tightening) and the chosen backend."""

    name = "keep_bracket"
    requires = frozenset({"milp", "bigm"})

    def __init__(self, solve: SubSolver):
        self.solve = solve

    def accepts(self, problem: PatchProblem, capabilities: frozenset[str]) -> bool:
        if not super().accepts(problem, capabilities) or problem.enc is not None or problem.surrogate:
            return False
        setup = row_setup(problem.net, problem.task, problem.groups)
        return setup is not None and not bool(np.all(setup.same))

    def _surrogate(self, problem: PatchProblem, setup: RowSetup, groups: list[GoalGroup], support, shared,
                   exact: bool) -> tuple[RowReduction, PatchProblem]:
        red = reduce_rows(problem.net, setup.edit, groups, setup.norm,
                          directions(setup.shared, setup.edit.mask, setup.norm, support), shared, exact=exact)
        return red, surrogate_problem(replace(problem, groups=groups), red)

    def apply(self, problem: PatchProblem, budget: Budget) -> tuple[PatchProblem, Inverse]:
        setup = row_setup(problem.net, problem.task, problem.groups)
        assert setup is not None
        t0 = time.perf_counter()
        gap = problem.options.mip_gap if problem.options.mip_gap is not None else DEFAULT_MIP_GAP
        others = int(np.count_nonzero(~setup.same))
        summary = {"weights": int(np.count_nonzero(setup.edit.mask)), "others": others, "norm": setup.norm}
        record = StepRecord(self.name, summary)

        lo_red, lo_problem = self._surrogate(problem, setup, only(problem.groups, setup.same), None, setup.shared,
                                             True)
        lo_answer, lo_solved, lo_records = self.solve(lo_problem, budget.share(0.5))
        lo_sol = lo_answer.solution
        lo = lo_sol.objective if lo_sol.status == OPTIMAL else lo_sol.bound
        summary["lower"] = lo
        if lo_sol.status == INFEASIBLE:  # a relaxation without a patch: the task has none either
            summary["outcome"] = "relaxation_infeasible"
            return self._solved(lo_solved, lo_sol, lo_red, record, t0, [])
        if lo_sol.x is not None and lo_sol.status == OPTIMAL:
            layout, values = lift(lo_red, lo_answer).patch
            if goals_hold(layout.apply(problem.net, values), problem.groups):
                summary["outcome"] = "relaxation_keeps_all"
                return self._solved(lo_solved, lo_sol, lo_red, record, t0, lo_records)

        support = np.all(setup.inputs[~setup.same] == 0, axis=0)
        hi_red, hi_problem = self._surrogate(problem, setup, problem.groups, support, setup.shared, False)
        hi_answer, hi_solved, hi_records = self.solve(hi_problem, budget)
        hi_sol = hi_answer.solution
        summary.update(support=int(np.count_nonzero(support)))
        if hi_sol.x is None or hi_sol.status not in (OPTIMAL, FEASIBLE):
            # the restriction has no patch (or none in time): the plain problem over every weight, in the time left
            summary.update(outcome="fallback", restriction_status=hi_sol.status, seconds=time.perf_counter() - t0)
            return replace(problem, task=implied_linf(problem.task)), Inverse(record)
        hi = float(hi_sol.objective)

        def closed(v: float) -> bool:
            return lo is not None and lo_sol.status == OPTIMAL and v - lo <= gap * max(v, 1e-12)

        total = problem.options.time_limit
        for wider in wider_supports(setup, support) if setup.norm == "linf" else []:  # L1: one column per row
            left = budget.time_left()
            if closed(hi) or (left is not None and total is not None and left < WIDER_STOP_SHARE * total):
                break
            R = directions(setup.shared, setup.edit.mask, setup.norm, wider)
            if np.array_equal(R, hi_red.directions):
                continue
            red = reduce_rows(problem.net, setup.edit, problem.groups, setup.norm, R, None, exact=False)
            try:
                answer, solved, records = self.solve(surrogate_problem(problem, red), budget.share(0.5))
            except PatchlangError:
                continue  # no bound derivable for this support: it is only a heuristic
            sol = answer.solution
            if sol.x is not None and sol.status in (OPTIMAL, FEASIBLE) and sol.objective < hi * (1 - 1e-9):
                hi_sol, hi_solved, hi, hi_red, hi_records = sol, solved, float(sol.objective), red, records
                summary.update(support=int(np.count_nonzero(wider)), widened_to=max_other(setup, wider))
        done = hi_sol.status == OPTIMAL and closed(hi)
        summary.update(outcome="restriction", upper=hi)
        answer = replace(hi_sol, status=OPTIMAL if done else FEASIBLE, bound=lo, seconds=time.perf_counter() - t0,
                         message=f"optimum in [{lo if lo is not None else 0.0:.9g}, {hi:.9g}]")
        return self._solved(hi_solved, answer, hi_red, record, t0, hi_records)

    @staticmethod
    def _solved(solved: PatchProblem, sol, red: RowReduction, record: StepRecord, t0: float,
                records: list[StepRecord]) -> tuple[PatchProblem, Inverse]:
        record.summary["seconds"] = time.perf_counter() - t0
        return replace(solved, solution=sol), Inverse(record, lambda a: lift(red, a), records)
