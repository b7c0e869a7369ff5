"""Issue 12, input splitting: the backward substitution of compile/bounds.py (rewritten for speed: relaxations
computed once per layer, batched matrix products) gives the same bounds as the textbook formula, and the refined
forward bounds contain the pre-activations of dense samples, for ReLU and smooth (tanh) networks."""

from __future__ import annotations

import numpy as np
import pytest

from patchlang.compile.bounds import (LayerBounds, ReluNet, _backward_from, forward_bounds, layer_relaxation, relu_network,
                                      spec_lower_bounds)
from patchlang.model.build import network_from_arrays


def _net(seed: int, activation: str = "relu", sizes=(4, 12, 12, 12, 3)):
    rng = np.random.default_rng(seed)
    Ws = [rng.standard_normal((sizes[k + 1], sizes[k])) / np.sqrt(sizes[k]) for k in range(len(sizes) - 1)]
    bs = [0.3 * rng.standard_normal(sizes[k + 1]) for k in range(len(sizes) - 1)]
    if activation != "relu":  # a smooth chain directly (the array builder makes piecewise-linear networks only)
        return ReluNet(Ws, bs, acts=[activation] * (len(sizes) - 2))
    return relu_network(network_from_arrays(Ws, bs, activation=activation, name=f"r{seed}"))


def _boxes(rng, B: int, d: int) -> tuple[np.ndarray, np.ndarray]:
    c = rng.uniform(-1, 1, (B, d))
    r = rng.uniform(0.02, 0.7, (B, d))
    return c - r, c + r


def _textbook(rn, top: int, Lam: np.ndarray, const: np.ndarray, lo: np.ndarray, hi: np.ndarray,
              bounds: LayerBounds) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """The backward substitution written out box by box and row by row (the reference)."""
    B, K, _ = Lam.shape
    lb = np.zeros((B, K))
    Lout = np.zeros((B, K, lo.shape[1]))
    cout = np.zeros((B, K))
    for b in range(B):
        for r in range(K):
            lam, c = Lam[b, r].copy(), float(const[b, r])
            for k in range(top, -1, -1):
                a_lo, b_lo, a_up, b_up = (x[0] for x in layer_relaxation(rn, k, bounds.lower[k][b:b + 1],
                                                                         bounds.upper[k][b:b + 1]))
                c += float(np.sum(np.where(lam > 0, lam * b_lo, lam * b_up)))
                lam = np.where(lam > 0, lam * a_lo, lam * a_up)
                c += float(lam @ rn.bs[k])
                lam = lam @ rn.Ws[k]
            lb[b, r] = c + sum(min(v * lo[b, i], v * hi[b, i]) for i, v in enumerate(lam))
            Lout[b, r], cout[b, r] = lam, c
    return lb, Lout, cout


@pytest.mark.parametrize("activation", ["relu", "tanh"])
def test_backward_substitution_matches_the_textbook_formula(activation):
    rng = np.random.default_rng(3)
    rn = _net(3, activation)
    lo, hi = _boxes(rng, 6, 4)
    fb = forward_bounds(rn, lo, hi)
    top = rn.n_hidden - 1
    Lam = rng.standard_normal((6, 5, rn.Ws[top].shape[0])) @ rn.Ws[top]
    const = rng.standard_normal((6, 5))
    want = _textbook(rn, top - 1, Lam, const, lo, hi, fb)
    relaxed = [layer_relaxation(rn, k, fb.lower[k], fb.upper[k]) for k in range(rn.n_hidden)]
    for given in (None, relaxed):
        got = _backward_from(rn, top - 1, Lam.copy(), const.copy(), lo, hi, fb, given)
        for g, w in zip(got, want):
            np.testing.assert_allclose(g, w, rtol=1e-9, atol=1e-9)


@pytest.mark.parametrize("seed,activation", [(0, "relu"), (1, "relu"), (2, "tanh")])
def test_refined_bounds_contain_samples_and_are_tighter(seed, activation):
    rng = np.random.default_rng(seed)
    rn = _net(seed, activation)
    lo, hi = _boxes(rng, 10, 4)
    plain = forward_bounds(rn, lo, hi)
    fine = forward_bounds(rn, lo, hi, refine=True)
    A = rng.standard_normal((3, 3))
    spec, _, _, _ = spec_lower_bounds(rn, A, np.zeros(3), lo, hi, fine)
    for k in range(rn.n_hidden):
        assert np.all(fine.lower[k] >= plain.lower[k] - 1e-12) and np.all(fine.upper[k] <= plain.upper[k] + 1e-12)
    for b in range(10):
        X = np.vstack([rng.uniform(lo[b], hi[b], (3000, 4)), np.where(rng.random((64, 4)) < 0.5, lo[b], hi[b])])
        h = X
        for k in range(rn.n_hidden):
            z = h @ rn.Ws[k].T + rn.bs[k]
            assert np.all(z >= fine.lower[k][b] - 1e-9) and np.all(z <= fine.upper[k][b] + 1e-9)
            h = np.maximum(z, 0.0) if activation == "relu" else np.tanh(z)
        y = h @ rn.Ws[-1].T + rn.bs[-1]
        assert np.all(y @ A.T >= spec[b] - 1e-9)


@pytest.mark.parametrize("refine", [False, True])
def test_a_parent_box_bounds_tighten_its_children_soundly(refine):
    """Input splitting passes a parent box's bounds to its halves (``prior``): still sound, and fewer unstable
    ReLUs (the point of it; single bounds of stable neurons may differ, since the refinement skips those)."""
    rng = np.random.default_rng(5)
    rn = _net(5)
    lo, hi = _boxes(rng, 6, 4)
    parent = forward_bounds(rn, lo, hi, refine=True)
    mid = (lo + hi) / 2
    dim = rng.integers(0, 4, 6)
    clo, chi = lo.copy(), hi.copy()
    clo[np.arange(6), dim] = mid[np.arange(6), dim]  # the upper halves
    alone = forward_bounds(rn, clo, chi, refine=refine)
    within = forward_bounds(rn, clo, chi, refine=refine, prior=parent)
    fewer = within.n_unstable().sum() - alone.n_unstable().sum()
    assert fewer <= 0 and (refine or fewer < 0)  # (on this small net the refined halves gain nothing more)
    for b in range(6):
        h = np.vstack([rng.uniform(clo[b], chi[b], (3000, 4)), np.where(rng.random((64, 4)) < 0.5, clo[b], chi[b])])
        for k in range(rn.n_hidden):
            z = h @ rn.Ws[k].T + rn.bs[k]
            assert np.all(z >= within.lower[k][b] - 1e-9) and np.all(z <= within.upper[k][b] + 1e-9)
            h = np.maximum(z, 0.0)
