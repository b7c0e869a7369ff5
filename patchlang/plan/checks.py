"""Independent checks a step runs before it trusts an answer it made itself (a bound, a warm start, a follow-up).

Why: a planning LP answers within tolerances and on a restriction; its patch is applied to the network and
every goal re-evaluated in float64 before it becomes a bound or an incumbent.
"""

from __future__ import annotations

from dataclasses import replace

import numpy as np

from ..compile.fixed_phase import propagate, violation
from ..compile.goals import GoalGroup, clause_slack, group_values
from ..compile.patch import DeltaLayout, PatchEncoding
from ..model.ir import Network
from ..solution import SolveOptions

START_TOL = 1e-6


def goals_hold(net: Network, groups: list[GoalGroup], tol: float = 1e-6) -> bool:
    """Every clause of every point holds on ``net`` in float64."""
    for g in groups:
        if not g.points:
            continue
        y = group_values(net, g, np.stack([p.h for p in g.points]))
        scale = 1.0 + float(np.max(np.abs(y)))
        for p, out in zip(g.points, y):
            if any(clause_slack(c, out) < -tol * scale for c in p.clauses):
                return False
    return True


def delta_vector(layout: DeltaLayout, deltas: np.ndarray, n_vars: int) -> np.ndarray:
    """A vector over the query's variables holding ``deltas`` at the delta variables (zero elsewhere)."""
    x = np.zeros(n_vars)
    x[np.concatenate(layout.var_index)] = deltas
    return x


def start_for(enc: PatchEncoding, deltas: np.ndarray) -> np.ndarray | None:
    """A complete, checked feasible assignment of ``enc.query`` for a patch given by its deltas, or None
    (propagated through the encoder's own query, ``enc.source``, when ``enc.query`` was derived from it)."""
    q = enc.query
    x = propagate(enc.source or q, enc.layout, delta_vector(enc.layout, deltas, q.n_vars))
    if x is None or violation(q, x) > START_TOL:
        return None
    return x


def with_start(options: SolveOptions, enc: PatchEncoding, deltas: np.ndarray | None) -> SolveOptions:
    """``options`` with a warm start for ``enc`` built from ``deltas`` (unchanged when it is not feasible)."""
    if deltas is None or enc.query.problem_class != "MILP":
        return options
    x = start_for(enc, deltas)
    return replace(options, start=x) if x is not None else options
