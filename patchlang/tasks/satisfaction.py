"""The satisfaction function of a whole property on a model: ``< 0`` exactly where the property is violated.

    >>> from patchlang.api import load_program, satisfaction
    >>> program = load_program("examples/verify/verify.patch")
    >>> f = satisfaction(program.properties["never_two"], program.models["net"].net, x)  # (N,) float64

Per input point: the smallest satisfaction (:mod:`patchlang.inputs.satisfaction`) over the property's input
boxes that contain it, ``+inf`` for a point outside every box (the property says nothing there).
"""

from __future__ import annotations

import numpy as np

from ..lang.program import PropertySpec
from ..model.ir import Network
from .verify import property_cases

__all__ = ["satisfaction", "case_satisfaction"]


def case_satisfaction(cases, x: np.ndarray, y: np.ndarray) -> np.ndarray:
    """Per point, the smallest satisfaction over the cases (input boxes) containing it."""
    x = np.asarray(x, dtype=np.float64).reshape(len(y), -1)
    f = np.full(len(x), np.inf)
    for case in cases:
        inside = np.all((x >= case.lo) & (x <= case.hi), axis=1)
        if np.any(inside):
            f[inside] = np.minimum(f[inside], case.spec.satisfaction(np.asarray(y, np.float64)[inside]))
    return f


def satisfaction(prop: PropertySpec, net: Network, x: np.ndarray, outputs: np.ndarray | None = None) -> np.ndarray:
    """The satisfaction of ``prop`` at inputs ``x`` (``(N, ...)``); ``outputs`` (``(N, out)``) if already known,
    else the network is evaluated in float64."""
    x = np.asarray(x, dtype=np.float64)
    x = x.reshape(1, -1) if x.ndim == 1 else x.reshape(x.shape[0], -1)
    y = net.forward(x) if outputs is None else np.atleast_2d(np.asarray(outputs, np.float64))
    return case_satisfaction(property_cases(prop, net), x, y)
