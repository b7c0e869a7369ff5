"""What a solve is asked (:class:`SolveOptions`) and what it answers (:class:`Solution`): plain data.

Why a module of its own: the compiler's region search, the planner and every backend speak of statuses and
options; none of them should import the solvers package (or each other) for that.  A status is the one way to
say how a solve ended: ``infeasible`` (proven), ``timeout``/``unknown`` (nothing proven), ``optimal``/``feasible``.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np

# Solution statuses
OPTIMAL = "optimal"
FEASIBLE = "feasible"  # a solution, optimality not proven (time limit with incumbent, or no objective)
INFEASIBLE = "infeasible"
UNBOUNDED = "unbounded"
TIMEOUT = "timeout"  # no solution and no proof of infeasibility
UNKNOWN = "unknown"


@dataclass
class SolveOptions:
    time_limit: float | None = None
    mip_gap: float | None = None
    threads: int | None = None
    seed: int = 0
    verbose: bool = False
    feasibility_only: bool = False
    extra: dict[str, Any] = field(default_factory=dict)
    # A known feasible assignment of the Query's variables (e.g. from the fixed-phase LP): MILP backends lift it
    # to their binaries (solvers.milp.lift_start) and pass it as incumbent; None when there is none.
    start: np.ndarray | None = None
    # Feasibility questions that are usually infeasible (verification leaves): try the MILP's LP relaxation first;
    # when even the relaxation is infeasible, so is the MILP, without any branching.  A hint: backends may ignore it.
    relaxation_first: bool = False


@dataclass
class Solution:
    status: str
    x: np.ndarray | None = None
    objective: float | None = None
    bound: float | None = None  # best proven lower bound (minimisation)
    backend: str = ""
    backend_version: str = ""
    seconds: float = 0.0
    message: str = ""
    core: list[str] = field(default_factory=list)  # labels of rows in an infeasible subset, when known
    stats: dict[str, Any] = field(default_factory=dict)

    @property
    def has_solution(self) -> bool:
        return self.x is not None

    @property
    def gap(self) -> float | None:
        """Relative optimality gap, 0 for a proven optimum."""
        if self.status == OPTIMAL:
            return 0.0
        if self.objective is None or self.bound is None:
            return None
        return abs(self.objective - self.bound) / max(1e-10, abs(self.objective))
