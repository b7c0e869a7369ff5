"""Results of tasks, as the report sees them.  Plain data; no solving, no formatting."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np

from ..model.ir import Network
from ..plan.steps import StepRecord

# task statuses
PATCHED = "patched"  # a patch was found and independently checked
NO_PATCH = "no patch"  # proven infeasible: no patch within the given edits/bounds exists
INCONCLUSIVE = "inconclusive"  # time limit or solver gave up
UNSOUND = "check failed"  # solver claimed success but the independent check disagrees: never ship
HOLDS = "holds"
VIOLATED = "violated"
UNKNOWN = "unknown"
REPAIRED = "repaired"
NOT_REPAIRED = "not repaired"
ATTACKED = "attacked"  # an attack task ran to its end: per-input results and metrics; its assertions judge them


@dataclass
class GoalCheck:
    """Independent re-evaluation of one statement's constraints on the patched network."""

    text: str
    line: int
    n_points: int
    satisfied64: int
    satisfied32: int | None
    min_slack64: float  # smallest slack beyond the constraint bounds (which include the requested margin)
    min_slack32: float | None
    requested_margin: float
    strict: bool = True  # the statement has strict inequalities (label goals, `<`, `>`, `is max`): the margin applies
    tolerance64: float = 0.0  # the float64 check accepts slack >= -tolerance64 (relative: 1e-6 * (1 + max |y|))
    allowance32: float | None = None  # the float32 check accepts slack above -allowance32
    group: str = ""  # keep | change | require | property

    @property
    def ok(self) -> bool:
        return self.satisfied64 == self.n_points and (self.satisfied32 is None or self.satisfied32 == self.n_points)


@dataclass
class SavedCheck:
    """How to re-run the independent check of one saved file without the spec (what a cache hit re-runs).

    ``network``: the patched network (``TaskResult.patched``, float64) and the file ``path`` (onnxruntime, float32)
    must satisfy every goal again, each group at its points ``x`` with ``margin``; ``path`` is None when nothing was
    saved (the float64 check alone).  ``counterexample``: the float32 input saved at ``path`` must lie in ``box``
    and violate the property on the model file ``model`` (onnxruntime): every group's clauses fail there."""

    kind: str  # network | counterexample
    path: str | None
    groups: list[tuple[Any, np.ndarray, float, int, bool]] = field(default_factory=list)  # (GoalGroup, x, margin,
    #                                                                                       line, strict)
    model: str | None = None
    box: tuple[np.ndarray, np.ndarray] | None = None


@dataclass
class TaskResult:
    name: str
    kind: str  # patch | verify | repair
    status: str
    line: int = 0
    problem_class: str = ""
    class_reason: str = ""
    backend: str = ""
    backend_version: str = ""
    query_size: dict[str, int] = field(default_factory=dict)
    objective: float | None = None
    bound: float | None = None
    gap: float | None = None
    distances: dict[str, float] = field(default_factory=dict)
    checks: list[GoalCheck] = field(default_factory=list)
    seconds: dict[str, float] = field(default_factory=dict)
    files: list[str] = field(default_factory=list)
    message: str = ""
    notes: list[str] = field(default_factory=list)
    core: list[str] = field(default_factory=list)
    details: dict[str, Any] = field(default_factory=dict)
    patched: Network | None = None
    deltas: list[tuple[str, np.ndarray]] = field(default_factory=list)  # (parameter label, delta array)
    steps: list[StepRecord] = field(default_factory=list)  # the planning steps applied, in order, with their figures
    minimized: list[tuple[float, str]] = field(default_factory=list)  # the objective's (weight, norm) terms
    recheck: list[SavedCheck] = field(default_factory=list, repr=False)  # for the cache (never reported)

    @property
    def succeeded(self) -> bool:
        return self.status in (PATCHED, HOLDS, REPAIRED, ATTACKED)

    @property
    def failed(self) -> bool:
        """A check the spec asserts did not hold (exit code 1)."""
        return self.status in (NO_PATCH, UNSOUND, VIOLATED, NOT_REPAIRED)

    @property
    def inconclusive(self) -> bool:
        return self.status in (INCONCLUSIVE, UNKNOWN)


@dataclass
class AssertionResult:
    text: str
    line: int
    holds: bool | None  # None: could not be decided (its task was inconclusive)
    value: float | None = None
    message: str = ""
    covers_task: str | None = None  # `assert not exists(t)` makes t's "no patch" the expected outcome


@dataclass
class RunResult:
    spec_path: str
    tasks: list[TaskResult]
    assertions: list[AssertionResult]
    input_files: dict[str, str]
    versions: dict[str, str]
    seconds: float = 0.0
    warnings: list[str] = field(default_factory=list)
    # How the run ended: finished | interrupted | spec error | usage error | internal error; what did not run.
    outcome: str = "finished"
    errors: list[str] = field(default_factory=list)
    not_run: list[tuple[str, str, str]] = field(default_factory=list)  # (task, kind, why)

    @property
    def exit_code(self) -> int:
        if self.outcome in ("spec error", "usage error"):
            return 2
        if self.outcome == "internal error":
            return 101
        code = self._verdict_code()
        return 3 if code == 0 and self.outcome == "interrupted" else code

    def _verdict_code(self) -> int:
        if any(a.holds is False for a in self.assertions):
            return 1
        covered = {a.covers_task for a in self.assertions if a.covers_task}
        for t in self.tasks:
            if t.failed and (t.name not in covered or t.status == UNSOUND):
                return 1
        if any(t.inconclusive for t in self.tasks) or any(a.holds is None for a in self.assertions):
            return 3
        return 0
