"""What a patch may move and how its size is measured: the edit and norm specs, and the one definition of each norm.

Why here: the front end (lang) builds these from the `.patch` text and the compiler (compile) lowers them; a module
both import keeps the front end from importing the compiler.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from ..errors import Span


@dataclass
class EditSpec:
    """One group of editable parameters of affine layer ``layer`` (index among affine layers)."""

    layer: int
    kind: str  # weights | biases
    mask: np.ndarray  # bool: shape of W for weights, of b for biases
    span: Span | None = None
    label: str = ""


@dataclass
class NormSpec:
    objective: list[tuple[float, str]] = field(default_factory=lambda: [(1.0, "linf")])
    bounds: dict[str, float] = field(default_factory=dict)  # norm -> upper bound
    bound_spans: dict[str, Span | None] = field(default_factory=dict)


def norm_values(deltas: np.ndarray) -> dict[str, float]:
    """``linf``, ``l1`` and ``l0`` of a patch's deltas: the one definition every report, bound and objective uses.

    L0 counts every delta that is not exactly zero: the patched network really differs in that parameter, and a
    count below the true one could make a bound derived from it unsound (see plan.fixed_phase_bound)."""
    if deltas.size == 0:
        return {"linf": 0.0, "l1": 0.0, "l0": 0.0}
    a = np.abs(deltas)
    return {"linf": float(np.max(a)), "l1": float(np.sum(a)), "l0": float(np.count_nonzero(a))}


def objective_value(deltas: np.ndarray, norms: NormSpec) -> float:
    """The task's objective ``sum w * norm`` at a patch."""
    values = norm_values(deltas)
    return float(sum(w * values[n] for w, n in norms.objective))


def within_bounds(deltas: np.ndarray, norms: NormSpec) -> bool:
    """Every `bound` of the task holds at a patch (to a relative 1e-9: a solver's answer sits on its bounds)."""
    values = norm_values(deltas)
    return all(values[n] <= b * (1 + 1e-9) + 1e-9 for n, b in norms.bounds.items())
