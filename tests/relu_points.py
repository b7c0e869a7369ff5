"""What a dense ReLU chain computes at sample points: the ground truth that every bound test checks against."""

from __future__ import annotations

import numpy as np


def pre_activations(rn, X: np.ndarray) -> tuple[list[np.ndarray], np.ndarray]:
    """The pre-activations of every hidden layer of ``rn`` (a ReluNet) at the points ``X``, and its outputs."""
    zs, h = [], X
    for W, b in zip(rn.Ws[:-1], rn.bs[:-1]):
        z = h @ W.T + b
        zs.append(z)
        h = np.maximum(z, 0.0)
    return zs, h @ rn.Ws[-1].T + rn.bs[-1]
