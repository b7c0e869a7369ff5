"""The public entry point of planning: the chain of reductions for a patch task, built from the task and the chosen
backend's declared capabilities, and the drivers around it.

Order (each step applies only when its ``accepts`` says so; see docs/backends.md, "How a task becomes solver calls"):

1. ``one_unknown_per_row`` (plan.rows) or ``keep_bracket`` (plan.bracket): weight edits whose points to change
   share one input;
2. ``linf_bisection`` (plan.bisection): pure L∞ over very many parameters (solves the problem itself);
3. ``encode`` (plan.encode): the one encoder;
4. ``fixed_phase_bound`` (plan.fixed_phase_bound): derived bound and checked warm start for MILPs;
5. ``lp_bound_tightening`` (plan.tighten): deep ReLUs of small MILPs;
6. the chosen backend solves;
7. inverses in reverse: ``least_l1_tidy`` (plan.tidy) refines an optimum, the fixed-phase bound offers its warm
   start as incumbent, the row reduction lifts the patch back onto the weights.

``lazy_keep`` (plan.lazy) runs the chain round after round on growing subsets of large `keep` groups.

A backend the user named is never replaced: the planning steps solve with it, and a step whose needs it does not
declare (``requires``) does not apply.  With ``auto`` the planning steps use HiGHS.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field, replace

import numpy as np

from ..compile.goals import GoalGroup
from ..compile.patch import first_edited_position
from ..lang.program import PatchTask
from ..model.ir import Network
from ..solution import Solution, SolveOptions
from ..solvers.base import Backend
from ..solvers.registry import choose_backend, get_backend
from .bisection import LinfBisection
from .bracket import KeepBracket
from .budget import Budget
from .encode import Encode
from .fixed_phase_bound import FixedPhaseBound
from .lazy import LazyKeep, solve_lazily
from .linf_keep import LinfKeepLp, applies as linf_keep_applies, record as linf_keep_record
from .reduction import Answer, Chain, PatchProblem, Reduction, StepRecord
from .rows import RowSubstitution, row_setup
from .tidy import LeastL1Tidy, primary_norm
from .tighten import LpTightening

AUTO = ("auto", "milp")
STEP_NAMES = ("one_unknown_per_row", "keep_bracket", "linf_bisection", "encode", "fixed_phase_bound",
              "lp_bound_tightening", "least_l1_tidy", "lazy_keep")


def hidden_goal_steps(groups: list[GoalGroup]) -> frozenset[str]:
    """The steps to switch off when a group constrains hidden pre-activations (``GoalGroup.at``): every step but
    the plain encoding, since the others evaluate goals on the network's outputs."""
    if any(g.at is not None for g in groups):
        return frozenset(s for s in STEP_NAMES if s != "encode")
    return frozenset()


def planning_backend(name: str) -> Backend:
    """The backend the planning steps solve with: the one the user named, or HiGHS when patchlang may choose."""
    return get_backend("highs" if name in AUTO else name)


@dataclass
class Outcome:
    """What planning and solving produced: the answer (its patch on the task's own edits), the last problem
    solved (its encoding describes the query), the records of the steps applied, backend-choice notes, timings."""

    answer: Answer
    problem: PatchProblem
    steps: list[StepRecord] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)
    build_seconds: float = 0.0
    solve_seconds: float = 0.0

    @property
    def solution(self) -> Solution:
        return self.answer.solution


class Planner:
    """Builds and runs the chain for one task with one backend name (``auto`` or a named backend)."""

    def __init__(self, backend_name: str, disable: frozenset[str] = frozenset()):
        unknown = set(disable) - set(STEP_NAMES)
        if unknown:
            raise ValueError(f"unknown planning step(s): {', '.join(sorted(unknown))}")
        self.backend_name = backend_name
        self.disable = frozenset(disable)
        self.backend = planning_backend(backend_name)
        self.capabilities = frozenset(self.backend.capabilities)
        self.encode = Encode()
        self.records: list[StepRecord] = []
        self.notes: list[str] = []
        self._linf_keep: LinfKeepLp | None = None

    # ------------------------------------------------------------------ the chain
    def steps(self, tidy: bool, rows: bool = True) -> list[Reduction]:
        """The chain's steps in order: row reductions first (they change the network), then the tidy (so that its
        inverse runs after every query step's and before the lift), then the query steps."""
        steps: list[Reduction] = [RowSubstitution(), KeepBracket(self.solve_surrogate)] if rows else []
        if tidy:
            steps.append(LeastL1Tidy(self.backend, self.solve_fresh))
        steps += [LinfBisection(self.backend), self.encode, FixedPhaseBound(self.backend), LpTightening(self.backend)]
        return [s for s in steps if s.name not in self.disable]

    def chain(self, tidy: bool, rows: bool = True) -> Chain:
        return Chain(self.steps(tidy, rows), self.capabilities, self.records)

    def solve_query(self, problem: PatchProblem, budget: Budget) -> Solution:
        """The chosen backend solves the encoded problem (``auto`` chooses here, from the query)."""
        enc = problem.enc
        klass = "SMT" if problem.task.problem_class == "SMT" else enc.query.problem_class
        backend, notes = choose_backend(self.backend_name, enc.query, klass)
        self.notes.extend(n for n in notes if n not in self.notes)
        return backend.solve(enc.query, budget.options(problem.options))

    def run(self, problem: PatchProblem, budget: Budget, tidy: bool, rows: bool = True
            ) -> tuple[Answer, PatchProblem]:
        return self.chain(tidy, rows).solve(problem, budget, self.solve_query)

    def prepare(self, net: Network, task: PatchTask, groups: list[GoalGroup], options: SolveOptions,
                budget: Budget | None = None) -> PatchProblem:
        """The problem as the chosen backend would receive it (encoded, bounded, warm-started), unsolved: what the
        query steps make of it, for inspection and tests."""
        problem = PatchProblem(net, task, groups, options)
        return self.chain(tidy=False, rows=False).reduce(problem, budget or Budget.of(options))[0]

    def solve_surrogate(self, problem: PatchProblem, budget: Budget
                        ) -> tuple[Answer, PatchProblem, list[StepRecord]]:
        """A row surrogate solved by the query steps of the chain (for the keep bracket), with their records (the
        bracket reports those of the surrogate whose answer it keeps)."""
        chain = Chain(self.steps(tidy=False, rows=False), self.capabilities)
        answer, solved = chain.solve(problem, budget, self.solve_query)
        return answer, solved, chain.records

    def solve_fresh(self, problem: PatchProblem, budget: Budget) -> Answer:
        """A follow-up problem (the least-L1 one) encoded afresh and solved, without further planning."""
        return Chain([self.encode], self.capabilities).solve(problem, budget, self.solve_query)[0]

    def tidy(self, outcome: Outcome, budget: Budget) -> Outcome:
        """``outcome`` with its answer followed up by the least-L1 step (when it applies)."""
        answer, record = self._follow_up(outcome.problem, outcome.answer, budget)
        if record is None:
            return outcome
        return replace(outcome, answer=answer, steps=outcome.steps + [record])

    def _follow_up(self, problem: PatchProblem, answer: Answer, budget: Budget) -> tuple[Answer, StepRecord | None]:
        """The least-L1 step applied to a solved problem on its own (outside a chain): the answer and its record."""
        step = LeastL1Tidy(self.backend, self.solve_fresh)
        if "least_l1_tidy" in self.disable or not step.accepts(problem, self.capabilities):
            return answer, None
        _, inverse = step.apply(problem, budget)
        answer = inverse.invert(answer)
        self.records.append(inverse.record)
        return answer, inverse.record

    # ------------------------------------------------------------------ drivers
    def rows_apply(self, net: Network, task: PatchTask, groups: list[GoalGroup]) -> bool:
        return (row_setup(net, task, groups) is not None and {"milp", "bigm"} <= self.capabilities
                and not {"one_unknown_per_row", "keep_bracket"} <= self.disable)

    def lazy_keep(self, net: Network, task: PatchTask, groups: list[GoalGroup]) -> LazyKeep | None:
        """Working sets for the large `keep` groups of an LP or MILP, or None (see :mod:`patchlang.plan.lazy`).

        For a MILP the gain is larger than for an LP: every keep point carries its own copy of the ReLUs after
        the edit (binaries), and a thousand of them make the MILP intractable while the few that the optimum
        breaks are cheap.  Not with the row reduction: there the keep points are cheap, all encoded at once."""
        eligible = LazyKeep.eligible(groups)
        if "lazy_keep" in self.disable or task.problem_class not in ("LP", "MILP") or not eligible:
            return None
        if self.rows_apply(net, task, groups):
            return None
        return LazyKeep(net, groups, first_edited_position(net, task.edits), eligible)

    def solve(self, net: Network, task: PatchTask, groups: list[GoalGroup], options: SolveOptions, budget: Budget,
              lazy: LazyKeep | None = None, cutoff: float = np.inf, tidy: bool = True) -> Outcome:
        """Plan and solve one patch problem (lazily when ``lazy`` is given); the answer's patch is on the task's
        own edits and network.  ``tidy=False``: no least-L1 follow-up here (the caller tidies the answer it keeps,
        :meth:`tidy`)."""
        t0 = time.perf_counter()
        before = len(self.records)
        problem = PatchProblem(net, task, groups, options)
        milp_lazy = lazy is not None and task.problem_class == "MILP"
        linf_lp = task.problem_class == "LP" and primary_norm(problem) == "linf"
        tidy = tidy and "least_l1_tidy" not in self.disable and primary_norm(problem) is not None
        if tidy and linf_keep_applies(problem, self.backend, lazy):
            fast = self._solve_linf_keep(problem, budget, lazy, cutoff, t0)
            if fast is not None:
                return fast
        last_round = [before]  # where the records of the last lazy round start

        def one_round(p: PatchProblem, b: Budget, t: bool) -> tuple[Answer, PatchProblem]:
            last_round[0] = len(self.records)
            return self.run(p, b, tidy=tidy and (lazy is None or (t and linf_lp)))

        rounds = solve_lazily(problem, budget, lazy, one_round, tidy_each_round=linf_lp, cutoff=cutoff)
        answer = rounds.answer
        if milp_lazy and tidy:  # the follow-up once the working sets are final, checked on every goal
            answer = self._follow_up(replace(rounds.problem, check_groups=groups), answer, budget)[0]
        seconds = time.perf_counter() - t0
        build = self.encode.seconds
        self.encode.seconds = 0.0
        # only the last round's steps: earlier rounds ran the same chain on fewer keep points (the lazy driver's
        # own record counts the rounds)
        return Outcome(answer, rounds.problem, self.records[last_round[0]:], list(self.notes), build,
                       seconds - build)

    def _solve_linf_keep(self, problem: PatchProblem, budget: Budget, lazy: LazyKeep, cutoff: float, t0: float
                         ) -> Outcome | None:
        """The lazy L∞ rounds on two warm LPs (:mod:`patchlang.plan.linf_keep`), or None (the plain path runs).
        The answer's encoding is the final working set's, as the LPs hold it (for the report's query size)."""
        if self._linf_keep is None or self._linf_keep.lazy is not lazy:
            self._linf_keep = LinfKeepLp(self.backend, lazy)
        got = self._linf_keep.solve(problem, budget, cutoff)
        if got is None:
            return None
        sol, deltas, layout = got
        if deltas is None:  # above the incumbent: no patch offered
            return Outcome(Answer(sol, None), problem, [], list(self.notes), 0.0, time.perf_counter() - t0)
        t1 = time.perf_counter()
        final, inverse = self.encode.apply(replace(problem, groups=self._linf_keep.solved_groups(problem.groups),
                                                   check_groups=problem.groups), budget)
        self.encode.seconds = 0.0
        build = time.perf_counter() - t1
        records = [linf_keep_record(int(sol.stats.get("warm_lp_solves", 0))), inverse.record]  # the chain's order
        self.records.extend(records)
        answer = Answer(sol, final.enc, (layout, deltas))
        return Outcome(answer, final, records, list(self.notes), build, time.perf_counter() - t0 - build)
