"""Step: LP bound tightening of the ReLUs behind other ReLUs, where interval bounds are loose.

Why: a ReLU whose input interval straddles zero costs a binary and a big-M; intervals propagated through two
ReLU layers are far wider than the true range.  The smallest and largest value of each such input over the LP
relaxation of the whole MILP are sound bounds (every MILP point is a relaxation point); ReLUs whose phase they fix
become linear.  Two LPs per ReLU: worth it only for few deep ReLUs in a small problem.
"""

from __future__ import annotations

import time
from dataclasses import replace

import numpy as np

from ..compile.bounds_tighten import deep_relus, drop_stable_relus
from ..query import Query
from ..solvers.base import Backend
from .budget import Budget
from .reduction import Inverse, PatchProblem, Reduction, StepRecord

OBBT_MAX_ATOMS = 200  # two LPs per ReLU: only where few deep ReLUs remain
OBBT_MAX_VARS = 50_000
OBBT_SECONDS = 10.0  # at most this long (and 20% of the time left)
OBBT_SHARE = 0.2


def obbt(backend: Backend, q: Query, atoms: np.ndarray, budget: Budget) -> Query:
    """``q`` with the inputs of the ReLU atoms ``atoms`` bounded by the backend's LPs, stable ReLUs made linear."""
    if not atoms.size:
        return q
    lb, ub = backend.tighten_bounds(q, q.relus[atoms, 1], budget.deadline)
    return drop_stable_relus(q, lb, ub)


class LpTightening(Reduction):
    """Tightened bounds for the deep ReLUs of a small MILP; the inverse is the identity (same variables)."""

    name = "lp_bound_tightening"
    requires = frozenset({"milp", "bigm", "bound_tightening"})

    def __init__(self, backend: Backend):
        self.backend = backend

    def atoms(self, problem: PatchProblem) -> np.ndarray:
        enc = problem.enc
        if enc is None or enc.query.problem_class != "MILP" or enc.query.n_vars > OBBT_MAX_VARS:
            return np.zeros(0, dtype=np.int64)
        atoms = deep_relus(enc.query, enc.layout, enc.source)
        return atoms if atoms.size <= OBBT_MAX_ATOMS else np.zeros(0, dtype=np.int64)

    def accepts(self, problem: PatchProblem, capabilities: frozenset[str]) -> bool:
        """Only once the fixed-phase bound holds a checked patch (``start_value``): its derived bound makes the
        intervals, hence the LPs, small; without one the LPs cost more than the MILP they would help."""
        return (super().accepts(problem, capabilities) and problem.start_value is not None
                and self.atoms(problem).size > 0)

    def apply(self, problem: PatchProblem, budget: Budget) -> tuple[PatchProblem, Inverse]:
        enc = problem.enc
        atoms = self.atoms(problem)
        t0 = time.perf_counter()
        left = budget.time_left()
        tight = obbt(self.backend, enc.query, atoms,
                     budget.cap(OBBT_SECONDS if left is None else min(OBBT_SECONDS, OBBT_SHARE * left)))
        fixed = len(enc.query.relus) - len(tight.relus)
        out = replace(enc, query=tight, n_unstable=len(tight.relus), source=enc.source or enc.query)
        record = StepRecord(self.name, {"relus": int(atoms.size), "fixed": int(fixed),
                                        "seconds": time.perf_counter() - t0})
        return replace(problem, enc=out), Inverse(record)
