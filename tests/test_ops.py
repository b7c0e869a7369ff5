"""The operator table (patchlang.model.ops): every kind's evaluation, exact piecewise-linear form, gradient and
interval bounds agree with each other on random data; a new kind added to the table is covered by adding it to
LAYERS."""

from __future__ import annotations

import numpy as np
import pytest
import scipy.sparse as sp

from patchlang.model.layers import Affine, Block, Clip, Elementwise, LeakyRelu, Linear, MaxPool, Relu
from patchlang.model.ops import (ReluStage, apply_layer, is_linear, layer_interval, layer_stages, layer_vjp,
                                 out_size, relu_width)

RNG = np.random.default_rng(3)
N = 6
LAYERS = [
    Affine(RNG.normal(size=(4, N)), RNG.normal(size=4), "fc"),
    Linear(sp.random(5, N, density=0.5, random_state=1, format="csr"), RNG.normal(size=5), "conv", "Conv"),
    Relu("relu"),
    Clip(-0.5, 0.75, "clip"),
    Clip(-np.inf, 0.3, "clip_hi"),
    Clip(-0.2, np.inf, "clip_lo"),
    Elementwise(RNG.normal(size=N), RNG.normal(size=N), "ew"),
    LeakyRelu(0.1, "leaky"),
    MaxPool(np.array([[0, 1, 2], [2, 3, 3], [4, 5, 0], [1, 1, 1]]), N, "pool"),
    MaxPool(np.array([[0, 1, 2, 3, 4]]), N, "pool5"),
]


def _stage_eval(layer, h):
    for st in layer_stages(layer, h.shape[1]):
        if isinstance(st, ReluStage):
            h = np.maximum(h, 0.0)
        else:
            h = np.asarray(sp.csr_matrix(st.W) @ h.T).T + st.b
    return h


@pytest.mark.parametrize("layer", LAYERS, ids=lambda l: l.name)
def test_stages_are_exact(layer):
    """The piecewise-linear form (what bounds, MILP and Z3 read) computes exactly what evaluation computes."""
    h = RNG.normal(size=(50, N))
    y = apply_layer(layer, h)
    assert y.shape == (50, out_size(layer, N))
    np.testing.assert_allclose(_stage_eval(layer, h), y, atol=1e-12)
    assert is_linear(layer) == (relu_width(layer, N) == 0)


@pytest.mark.parametrize("layer", LAYERS, ids=lambda l: l.name)
def test_interval_contains_samples(layer):
    lo = RNG.normal(size=(1, N)) - 0.5
    hi = lo + RNG.uniform(0.1, 1.0, size=(1, N))
    l, u = layer_interval(layer, lo, hi)
    x = lo + (hi - lo) * RNG.uniform(size=(2000, N))
    y = apply_layer(layer, x)
    assert np.all(y >= l - 1e-12) and np.all(y <= u + 1e-12)


@pytest.mark.parametrize("layer", LAYERS, ids=lambda l: l.name)
def test_vjp_matches_finite_differences(layer):
    x = RNG.normal(size=(1, N))
    g = RNG.normal(size=(1, out_size(layer, N)))
    grad = layer_vjp(layer, x, g)
    eps = 1e-6
    fd = np.array([[(g @ (apply_layer(layer, x + eps * e) - apply_layer(layer, x - eps * e)).T).item() / (2 * eps)
                    for e in np.eye(N)]])
    np.testing.assert_allclose(grad, fd, atol=1e-5)


def test_maxpool_relus_are_stable_after_relu():
    """Carrying ``b`` through ``relu(b) - relu(-b)`` costs nothing when the pool reads non-negative values."""
    from patchlang.compile.bounds import interval_bounds, relu_network
    from patchlang.model.ir import Network

    net = Network("p", "x", (N,), [Affine(np.eye(N), np.zeros(N), "id"), Relu("r"), LAYERS[8],
                                   Affine(np.ones((1, 4)), np.zeros(1), "out")])
    rn = relu_network(net)
    bounds = interval_bounds(rn, np.full((1, N), -1.0), np.full((1, N), 1.0))
    x = RNG.uniform(-1, 1, size=(100, N))
    np.testing.assert_allclose(rn.forward(x), net.forward_suffix(x), atol=1e-12)
    # in the pool's stages only the ``a - b`` neurons can be unstable: the carried ones are fixed by the bounds
    pool_layers = bounds[1:-1]
    carried = [np.count_nonzero((l < 0) & (u > 0)) for l, u in pool_layers]
    assert sum(carried) <= sum(l.shape[1] for l, _ in pool_layers) // 3 + 4


def _block_layers():
    rng = np.random.default_rng(9)
    conv = Linear(sp.random(N, N, density=0.6, random_state=2, format="csr"), rng.normal(size=N), "c", "Conv")
    body = [conv, Relu("r"), Affine(rng.normal(size=(N, N)), rng.normal(size=N), "fc"), LeakyRelu(0.2, "l"),
            Relu("r2")]
    return [Block([body, []], "add", "residual"),
            Block([[Affine(rng.normal(size=(3, N)), np.zeros(3), "a")], [Relu("r3")]], "concat", "cat"),
            Block([[Elementwise(np.full(N, 2.0), np.ones(N), "e")], []], "add", "linear_res")]


@pytest.mark.parametrize("layer", _block_layers(), ids=lambda l: l.name)
def test_block_is_exact_bounded_and_differentiable(layer):
    """Residual Add and Concat blocks: the same three checks as every other kind."""
    test_stages_are_exact(layer)
    test_interval_contains_samples(layer)
    test_vjp_matches_finite_differences(layer)
