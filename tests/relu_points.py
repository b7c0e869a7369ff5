"""What a dense ReLU chain computes at sample points: the ground truth that every bound test checks against."""

from __future__ import annotations

import numpy as np

from patchlang.compile.bounds import relu_network
from patchlang.model.build import network_from_arrays


def pre_activations(rn, X: np.ndarray) -> tuple[list[np.ndarray], np.ndarray]:
    """The pre-activations of every hidden layer of ``rn`` (a ReluNet) at the points ``X``, and its outputs."""
    zs, h = [], X
    for W, b in zip(rn.Ws[:-1], rn.bs[:-1]):
        z = h @ W.T + b
        zs.append(z)
        h = np.maximum(z, 0.0)
    return zs, h @ rn.Ws[-1].T + rn.bs[-1]


def deep_box(seed: int, sizes=(6, 12, 12, 12, 3)):
    """A random 3-hidden-layer network, a random box and 30000 samples in it."""
    rng = np.random.default_rng(seed)
    Ws = [rng.standard_normal((sizes[k + 1], sizes[k])) / np.sqrt(sizes[k]) for k in range(len(sizes) - 1)]
    bs = [0.3 * rng.standard_normal(sizes[k + 1]) for k in range(len(sizes) - 1)]
    net = network_from_arrays(Ws, bs, activation="relu", name=f"r{seed}")
    lo = rng.uniform(-1, 0, (1, sizes[0]))
    hi = lo + rng.uniform(0.3, 1.0, (1, sizes[0]))
    return net, relu_network(net), lo, hi, lo + rng.random((30000, sizes[0])) * (hi - lo)
