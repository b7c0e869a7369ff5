"""One time budget for a whole task: every planning LP, lazy round, MILP and follow-up draws on the same deadline.

Why: a `time_limit` bounds the *task*, not each solver call.  Before this object the deadline was carried by four
helpers (``_until``, ``until``, ``left``, local deadlines); a step now receives a :class:`Budget` and asks it for
the time left, a share of it, or solver options carrying it.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, replace

from ..solvers.base import SolveOptions

MIN_CALL_SECONDS = 1e-3  # a solver call never gets a zero or negative limit (solvers read 0 as "no limit")


@dataclass(frozen=True)
class Budget:
    """A deadline on the ``time.perf_counter`` clock, or none (``deadline is None``: unlimited)."""

    deadline: float | None = None

    @classmethod
    def seconds(cls, limit: float | None) -> Budget:
        """A budget of ``limit`` seconds from now (unlimited for None)."""
        return cls(None if limit is None else time.perf_counter() + limit)

    @classmethod
    def of(cls, options: SolveOptions) -> Budget:
        """The budget of a task whose options carry its time limit."""
        return cls.seconds(options.time_limit)

    def time_left(self) -> float | None:
        """Seconds left (never negative), None when unlimited."""
        return None if self.deadline is None else max(self.deadline - time.perf_counter(), 0.0)

    @property
    def expired(self) -> bool:
        return self.deadline is not None and time.perf_counter() >= self.deadline

    def share(self, fraction: float) -> Budget:
        """A budget ending after ``fraction`` of the time left (unlimited stays unlimited)."""
        left = self.time_left()
        return self if left is None else Budget(time.perf_counter() + fraction * left)

    def cap(self, seconds: float) -> Budget:
        """This budget, ending at the latest ``seconds`` from now."""
        end = time.perf_counter() + seconds
        return Budget(end if self.deadline is None else min(end, self.deadline))

    def options(self, options: SolveOptions) -> SolveOptions:
        """``options`` with the time left as time limit (unchanged when unlimited)."""
        left = self.time_left()
        return options if left is None else replace(options, time_limit=max(left, MIN_CALL_SECONDS))
