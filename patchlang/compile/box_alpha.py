"""Optimised specification bounds for a batch of input boxes (the input-split search's α-CROWN step).

Why: on ACAS Xu-sized networks (5 inputs, 300 ReLUs) CROWN's adaptive lower slope (1 where ``u > -l``, else 0)
is often far from the best one for the property's rows, so the input-split search keeps bisecting boxes that a
better relaxation would already refute: on N4,2 property 2, 250,000 boxes with the adaptive slopes and under
10,000 with ten projected-gradient steps on the slopes.  This module spends those steps only where they pay:

- only on boxes plain CROWN left open (the caller refutes the easy ones first);
- each step refutes what it can, and a box leaves the batch as soon as every conjunction it still had open is
  refuted by some row's bound (so the batch shrinks step by step, and most boxes stop after two or three steps);
- one slope per (box, row, neuron) (:func:`patchlang.compile.alpha.crown_lower`), Adam ascent on the bound itself
  with its exact gradient.

Every iterate is a sound bound (slopes clipped to ``[0, 1]``), so the element-wise best over the iterations is
one too; bounds are pushed outward by the rounding margin before a comparison.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from .alpha import crown_lower, outward
from .bounds import LayerBounds, ReluNet, relu_relaxation


@dataclass
class BoxBounds:
    """The optimised bounds of the rows of a batch of boxes."""

    lb: np.ndarray  # (B, R) best lower bound of a_r y - d_r over the iterations (outward-rounded)
    Lam: np.ndarray  # (B, R, d) a sound linear lower bound's coefficients (the last iterate of each box)
    const: np.ndarray  # (B, R)
    steps: int  # gradient steps taken (boxes x steps summed)


def refuted_conjunctions(lb: np.ndarray, conj: np.ndarray, n_conj: int, thr: np.ndarray) -> np.ndarray:
    """``(B, n_conj)``: conjunctions with some row whose lower bound exceeds its threshold."""
    out = np.zeros((lb.shape[0], n_conj), dtype=bool)
    np.logical_or.at(out.T, conj, (lb > thr).T)
    return out


def optimise_boxes(rn: ReluNet, A: np.ndarray, a0: np.ndarray, conj: np.ndarray, n_conj: int, thr: np.ndarray,
                   lo: np.ndarray, hi: np.ndarray, bounds: LayerBounds, open_: np.ndarray, steps: int = 10,
                   lr: float = 0.2) -> BoxBounds:
    """Lower bounds of ``A y + a0`` on each box with optimised lower slopes (see the module docstring).

    ``open_ (B, n_conj)``: the conjunctions still open on each box (a box whose open ones are all refuted stops);
    ``thr (R,)``: a row refutes its conjunction when its bound exceeds it.  The hidden-layer ``bounds`` stay fixed.
    """
    B, d = lo.shape
    R = A.shape[0]
    n_layers = rn.n_hidden
    alpha = []
    for l, u in zip(bounds.lower, bounds.upper):
        a, _, _ = relu_relaxation(l, u)
        alpha.append(np.repeat(a[:, None, :], R, axis=1))
    m = [np.zeros_like(a) for a in alpha]
    v = [np.zeros_like(a) for a in alpha]
    best = np.full((B, R), -np.inf)
    Lam = np.zeros((B, R, d))
    const = np.zeros((B, R))
    act = np.arange(B)  # the boxes still optimised
    b1, b2 = 0.9, 0.999
    taken = 0
    for it in range(max(1, steps)):
        res = crown_lower(rn, n_layers, A, a0, lo[act], hi[act], [l[act] for l in bounds.lower],
                          [u[act] for u in bounds.upper], [a[act] for a in alpha], grad=it < steps - 1)
        taken += act.size
        lb = outward(res.lb)
        better = lb > best[act]
        best[act] = np.where(better, lb, best[act])
        Lam[act] = res.Lam
        const[act] = res.const
        done = ~np.any(open_[act] & ~refuted_conjunctions(best[act], conj, n_conj, thr), axis=1)
        if it == steps - 1 or np.all(done):
            break
        keep = ~done
        decay = 0.98 ** it
        for k in range(n_layers):
            g = res.grads[k][keep]
            ia = act[keep]
            m[k][ia] = b1 * m[k][ia] + (1 - b1) * g
            v[k][ia] = b2 * v[k][ia] + (1 - b2) * g * g
            mh = m[k][ia] / (1 - b1 ** (it + 1))
            vh = v[k][ia] / (1 - b2 ** (it + 1))
            alpha[k][ia] = np.clip(alpha[k][ia] + lr * decay * mh / (np.sqrt(vh) + 1e-12), 0.0, 1.0)
        act = act[keep]
    return BoxBounds(best, Lam, const, taken)
