"""What a backend is, what it returns, and how one is chosen.

Backends declare capabilities (CVXPY-style) so that the planner can pick one before solving and explain the
choice; they never re-encode the network, they only translate a :class:`~patchlang.query.Query`.
"""

from __future__ import annotations

from typing import Protocol

from ..query import Query
from ..solution import (FEASIBLE, INFEASIBLE, OPTIMAL, TIMEOUT, UNBOUNDED, UNKNOWN,  # noqa: F401 (re-exported)
                        Solution, SolveOptions)



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
