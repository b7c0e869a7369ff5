"""The reduction protocol (CVXPY-style): a step turns a problem into an easier one and maps answers back.

A :class:`Reduction` says whether it applies (``accepts``, from the problem and the chosen backend's declared
capabilities), transforms the problem (``apply`` returns the new problem and an :class:`Inverse`), and the inverse
maps a solution of the new problem back (``invert``).  A :class:`Chain` applies its steps in order, has the last
problem solved, and inverts in reverse.  Each applied step leaves a :class:`StepRecord`: plain data (what it did,
its figures) from which the report layer writes prose; no algorithm here formats a sentence for the user.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from dataclasses import dataclass, field, replace
from typing import Any, Callable

import numpy as np

from ..compile.goals import GoalGroup
from ..compile.patch import DeltaLayout, PatchEncoding
from ..lang.program import PatchTask
from ..model.ir import Network
from ..solution import Solution, SolveOptions
from .budget import Budget
from .steps import StepRecord  # noqa: F401  (re-exported: the steps import it from here)


@dataclass
class PatchProblem:
    """A patch problem on its way through the chain.

    ``net``/``task``/``groups`` describe it before lowering; ``enc`` is its encoding once the encode step ran.
    ``start_value`` is the objective of the checked warm start in ``options.start``; ``solution`` is set by a step
    (a driver) that already solved the problem.  ``check_groups``: the goals a follow-up answer must keep (all of
    them, when lazy keep rounds solve a subset)."""

    net: Network
    task: PatchTask
    groups: list[GoalGroup]
    options: SolveOptions
    enc: PatchEncoding | None = None
    start_value: float | None = None
    solution: Solution | None = None
    check_groups: list[GoalGroup] | None = None
    surrogate: bool = False  # the problem is a row-direction surrogate of the task's (see plan.rows)

    @property
    def goals_to_check(self) -> list[GoalGroup]:
        return self.check_groups if self.check_groups is not None else self.groups


@dataclass
class Answer:
    """A solution and where it lives: the encoding it solves and the patch it stands for (deltas on the task's own
    edits; an inverse may lift it, e.g. from the row surrogate back onto the weights)."""

    solution: Solution
    enc: PatchEncoding | None
    patch: tuple[DeltaLayout, np.ndarray] | None = None

    def __post_init__(self) -> None:
        if self.patch is None and self.enc is not None and self.solution.x is not None:
            self.patch = (self.enc.layout, self.solution.x)

    @property
    def status(self) -> str:
        return self.solution.status


class Inverse:
    """Maps an answer of the reduced problem back to the problem the step received; the identity by default."""

    def __init__(self, record: StepRecord | None, invert: Callable[[Answer], Answer] | None = None,
                 sub_records: list[StepRecord] | None = None):
        self.record = record
        self._invert = invert
        self.sub_records = sub_records or []  # records of the sub-chains a driver ran and whose answer it kept

    def invert(self, answer: Answer) -> Answer:
        return self._invert(answer) if self._invert is not None else answer


class Reduction(ABC):
    """One step of a chain.  Subclasses set ``name`` and ``requires`` (capabilities the backend must declare)."""

    name: str = ""
    requires: frozenset[str] = frozenset()

    def accepts(self, problem: PatchProblem, capabilities: frozenset[str]) -> bool:
        """Whether the step applies to ``problem`` with a backend declaring ``capabilities``."""
        return self.requires <= capabilities and problem.solution is None

    @abstractmethod
    def apply(self, problem: PatchProblem, budget: Budget) -> tuple[PatchProblem, Inverse]:
        """The reduced problem and the inverse that maps its answers back."""


Solver = Callable[[PatchProblem, Budget], Solution]


@dataclass
class Chain:
    """Steps applied in order; the last problem solved by ``solver``; answers inverted in reverse order."""

    steps: list[Reduction]
    capabilities: frozenset[str]
    records: list[StepRecord] = field(default_factory=list)

    def reduce(self, problem: PatchProblem, budget: Budget) -> tuple[PatchProblem, list[Inverse]]:
        """Apply every step that accepts, in order: the reduced problem and the inverses, in application order."""
        inverses: list[Inverse] = []
        for step in self.steps:
            if not step.accepts(problem, self.capabilities):
                continue
            problem, inverse = step.apply(problem, budget)
            inverses.append(inverse)
            if inverse.record is not None:  # its figures may still be filled in while inverting
                self.records.append(inverse.record)
            self.records.extend(inverse.sub_records)
        return problem, inverses

    def solve(self, problem: PatchProblem, budget: Budget, solver: Solver) -> tuple[Answer, PatchProblem]:
        """The answer to ``problem`` (and the last reduced problem, whose encoding a report describes)."""
        problem, inverses = self.reduce(problem, budget)
        sol = problem.solution if problem.solution is not None else solver(problem, budget)
        answer = Answer(sol, problem.enc)
        for inverse in reversed(inverses):
            answer = inverse.invert(answer)
        return answer, problem


def with_solution(problem: PatchProblem, solution: Solution) -> PatchProblem:
    """``problem`` marked as solved (a driver's answer): later steps do not apply, the chain does not solve it."""
    return replace(problem, solution=solution)
