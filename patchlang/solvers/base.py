"""What a backend is, what it returns, and how one is chosen.

Backends declare capabilities (CVXPY-style) so that the planner can pick one before solving and explain the
choice; they never re-encode the network, they only translate a :class:`~patchlang.compile.query.Query`.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Protocol

import numpy as np

from ..compile.query import Query

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


def module_available(module: str) -> bool:
    """Whether an optional solver package imports; a broken install counts as absent, never as a crash."""
    import importlib

    try:
        importlib.import_module(module)
    except Exception:
        return False
    return True


class Backend(Protocol):
    name: str
    capabilities: frozenset[str]  # subset of {"lp", "milp", "smt", "exact", "core", "nonlinear"}

    def available(self) -> bool: ...

    def version(self) -> str: ...

    def check_size(self, query: Query) -> str | None:
        """A reason why this backend cannot take this query (licence limit), or None."""
        ...

    def solve(self, query: Query, options: SolveOptions) -> Solution: ...
