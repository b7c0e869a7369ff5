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

from .alpha import crown_lower, outward, relaxation
from .bounds import LayerBounds, ReluNet, relu_relaxation


@dataclass
class BoxBounds:
    """The optimised bounds of the rows of a batch of boxes."""

    lb: np.ndarray  # (B, R) best lower bound of a_r y - d_r over the iterations (outward-rounded)
    Lam: np.ndarray  # (B, R, d) a sound linear lower bound's coefficients (the last iterate of each box)
    const: np.ndarray  # (B, R)
    steps: int  # gradient steps taken (boxes x steps summed)
    alpha: list[np.ndarray]  # (B, R, n_k) float32 per hidden layer: the slopes where each box stopped


def refuted_conjunctions(lb: np.ndarray, conj: np.ndarray, n_conj: int, thr: np.ndarray) -> np.ndarray:
    """``(B, n_conj)``: conjunctions with some row whose lower bound exceeds its threshold."""
    out = np.zeros((lb.shape[0], n_conj), dtype=bool)
    np.logical_or.at(out.T, conj, (lb > thr).T)
    return out


def optimise_boxes(rn: ReluNet, A: np.ndarray, a0: np.ndarray, conj: np.ndarray, n_conj: int, thr: np.ndarray,
                   lo: np.ndarray, hi: np.ndarray, bounds: LayerBounds, open_: np.ndarray, steps: int = 10,
                   lr: float = 0.2, warm: list[np.ndarray] | None = None) -> BoxBounds:
    """Lower bounds of ``A y + a0`` on each box with optimised lower slopes (see the module docstring).

    ``open_ (B, n_conj)``: the conjunctions still open on each box (a box whose open ones are all refuted stops);
    ``thr (R,)``: a row refutes its conjunction when its bound exceeds it.  The hidden-layer ``bounds`` stay fixed.
    ``warm``: starting slopes ``(B, R, n_k)`` (a parent box's optimised ones: valid for any sub-box, since every
    slope in ``[0, 1]`` is); CROWN's adaptive ones otherwise.
    """
    B, d = lo.shape
    R = A.shape[0]
    n_layers = rn.n_hidden
    alpha = []
    for k, (l, u) in enumerate(zip(bounds.lower, bounds.upper)):
        if warm is not None:
            alpha.append(np.asarray(warm[k], float).copy())
            continue
        a, _, _ = relu_relaxation(l, u)
        alpha.append(np.repeat(a[:, None, :], R, axis=1))
    out = [np.empty(a.shape, np.float32) for a in alpha]
    m = [np.zeros_like(a) for a in alpha]
    v = [np.zeros_like(a) for a in alpha]
    best = np.full((B, R), -np.inf)
    Lam = np.zeros((B, R, d))
    const = np.zeros((B, R))
    act = np.arange(B)  # the boxes still optimised; alpha, m, v, the bounds and the box are kept compact to them
    low, upp, blo, bhi, op = list(bounds.lower), list(bounds.upper), lo, hi, open_
    relax = [relaxation(l, u) for l, u in zip(low, upp)]  # the bounds stay fixed: relax them once, not per step
    b1, b2 = 0.9, 0.999
    taken = 0
    for it in range(max(1, steps)):
        res = crown_lower(rn, n_layers, A, a0, blo, bhi, low, upp, alpha, grad=it < steps - 1, relax=relax)
        taken += act.size
        lb = np.maximum(best[act], outward(res.lb))
        best[act] = lb
        Lam[act] = res.Lam
        const[act] = res.const
        done = ~np.any(op & ~refuted_conjunctions(lb, conj, n_conj, thr), axis=1)
        if it == steps - 1 or np.all(done):
            for k in range(n_layers):
                out[k][act] = alpha[k]
            break
        if np.any(done):
            for k in range(n_layers):
                out[k][act[done]] = alpha[k][done]
            keep = ~done
            act, blo, bhi, op = act[keep], blo[keep], bhi[keep], op[keep]
            low, upp = [x[keep] for x in low], [x[keep] for x in upp]
            relax = [tuple(x[keep] for x in r) for r in relax]
            alpha, m, v = [x[keep] for x in alpha], [x[keep] for x in m], [x[keep] for x in v]
            grads = [g[keep] for g in res.grads]
        else:
            grads = res.grads
        step = lr * 0.98 ** it / (1 - b1 ** (it + 1))
        corr = 1.0 / (1 - b2 ** (it + 1))
        for k in range(n_layers):
            g = grads[k]
            m[k] *= b1
            m[k] += (1 - b1) * g
            v[k] *= b2
            v[k] += (1 - b2) * g * g
            alpha[k] += step * m[k] / (np.sqrt(v[k] * corr) + 1e-12)
            np.clip(alpha[k], 0.0, 1.0, out=alpha[k])
    return BoxBounds(best, Lam, const, taken, out)


def descend_in_boxes(rn: ReluNet, A: np.ndarray, d: np.ndarray, conj: np.ndarray, strict: np.ndarray, n_conj: int,
                     lo: np.ndarray, hi: np.ndarray, steps: int = 8, start: np.ndarray | None = None) -> np.ndarray:
    """Counterexample candidates: projected sign-gradient descent on the satisfaction function
    (:mod:`patchlang.inputs.satisfaction`) inside each box, from ``start`` (default its centre), steps from a quarter
    of the box's width down to 1/100 of it; returns the best points ``(B, d)``.

    Why: some violations live in a sliver (N1,9 property 7: the global falsifier stalls at satisfaction ``2e-4``);
    once the search has narrowed the boxes, a few local steps in the boxes whose centres come closest find it,
    where centres and corners alone need thousands more boxes.  Candidates only: the caller confirms them."""
    from ..inputs.satisfaction import satisfaction_with_rows

    x = (lo + hi) * 0.5 if start is None else np.clip(np.asarray(start, float), lo, hi)
    width = hi - lo
    best_x, best = x.copy(), np.full(x.shape[0], np.inf)
    idx = np.arange(x.shape[0])
    for it in range(steps):
        v, G = rn.forward_with_gradient(x, A)
        s, row = satisfaction_with_rows(v - d, conj, strict, n_conj)
        better = s < best
        best = np.where(better, s, best)
        best_x[better] = x[better]
        g = np.where((row >= 0)[:, None], G[idx, np.maximum(row, 0)], 0.0)
        eta = 0.25 * (0.04 ** (it / max(1, steps - 1)))
        x = np.clip(x - eta * width * np.sign(g), lo, hi)
    return best_x
