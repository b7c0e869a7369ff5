"""Gradients of a network's layers by hand-written backpropagation (numpy, float64).

Why not jax or torch: fine-tuning (`repair ... by finetune`) needs gradients of a loss over the IR's own chain
of layers; each kind's input gradient comes from the operator table (:mod:`.ops`).  Written out in numpy it is a few lines, needs no
optional dependency, and so the fine-tuning path is tested wherever patchlang's tests run.
"""

from __future__ import annotations

import numpy as np

from .layers import Affine, Layer
from .ops import apply_layer, layer_vjp

__all__ = ["forward_trace", "backward"]


def forward_trace(layers: list[Layer], h: np.ndarray) -> list[np.ndarray]:
    """``[h0, h1, ...]``: the input of every layer and the final output (float64, ``(N, ·)``)."""
    acts = [np.asarray(h, dtype=np.float64)]
    for layer in layers:
        acts.append(apply_layer(layer, acts[-1]))
    return acts


def backward(layers: list[Layer], acts: list[np.ndarray], dy: np.ndarray) -> dict[int, tuple[np.ndarray, np.ndarray]]:
    """``{layer index: (dL/dW, dL/db)}`` for every affine layer, given ``dL/dy`` at the output (``(N, out)``)."""
    grads: dict[int, tuple[np.ndarray, np.ndarray]] = {}
    g = np.asarray(dy, dtype=np.float64)
    for i in range(len(layers) - 1, -1, -1):
        layer, x = layers[i], acts[i]
        if isinstance(layer, Affine):  # the only kind with trainable parameters
            grads[i] = (g.T @ x, g.sum(axis=0))
        if i > 0:
            g = layer_vjp(layer, x, g)
    return grads
