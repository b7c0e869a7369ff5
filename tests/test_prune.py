"""Pruning the ReLUs dead over a box (patchlang.compile.prune): the pruned network computes the same outputs on
dense samples of the box, the kept bounds still contain the samples' pre-activations, and branch and bound over
the pruned network agrees with one plain MILP (the verdict cross-checks of tests/test_bab.py run through it)."""

from __future__ import annotations

import numpy as np
import pytest

from patchlang.compile.bounds import backward_bounds, forward_bounds, relu_network
from patchlang.compile.prune import prune_inactive
from patchlang.model.build import network_from_arrays

from relu_points import pre_activations


def net(seed: int, sizes=(5, 20, 20, 20, 3)):
    rng = np.random.default_rng(seed)
    Ws = [rng.standard_normal((sizes[k + 1], sizes[k])) / np.sqrt(sizes[k]) for k in range(len(sizes) - 1)]
    bs = [rng.standard_normal(sizes[k + 1]) - 0.8 for k in range(len(sizes) - 1)]  # many dead neurons
    return relu_network(network_from_arrays(Ws, bs, activation="relu", name=f"p{seed}"))


@pytest.mark.parametrize("seed", range(6))
def test_pruned_network_agrees_on_dense_samples(seed):
    rn = net(seed)
    rng = np.random.default_rng(seed)
    lo = rng.uniform(-1, 0, (1, 5))
    hi = lo + rng.uniform(0.1, 0.8, (1, 5))
    bb = backward_bounds(rn, lo, hi, forward_bounds(rn, lo, hi))
    small, kept = prune_inactive(rn, bb)
    assert sum(W.shape[0] for W in small.Ws[:-1]) <= sum(W.shape[0] for W in rn.Ws[:-1])
    X = lo + rng.random((20000, 5)) * (hi - lo)
    zs, Y = pre_activations(rn, X)
    zs_small, Y_small = pre_activations(small, X)
    assert np.allclose(Y, Y_small, rtol=0, atol=1e-12)
    for k, z in enumerate(zs_small):
        assert z.shape[1] >= 1
        assert np.all(z >= kept.lower[k][0] - 1e-9) and np.all(z <= kept.upper[k][0] + 1e-9)
    for k, (z, u) in enumerate(zip(zs, bb.upper)):  # what was dropped is dead on every sample
        assert np.all(z[:, u[0] <= 0] <= 1e-9)


def test_a_wholly_dead_layer_keeps_one_neuron():
    rn = net(0, (3, 4, 4, 2))
    rn.bs[1][:] = -100.0
    lo, hi = np.zeros((1, 3)), np.ones((1, 3))
    bb = backward_bounds(rn, lo, hi)
    small, kept = prune_inactive(rn, bb)
    assert small.Ws[1].shape[0] == 1 and kept.upper[1].shape == (1, 1)
    X = np.random.default_rng(0).random((1000, 3))
    assert np.allclose(pre_activations(rn, X)[1], pre_activations(small, X)[1], rtol=0, atol=1e-12)


@pytest.mark.parametrize("seed", range(4))
def test_relu_split_over_a_pruned_network_agrees_with_plain_milp(seed):
    """Many dead neurons (negative biases): thresholds just above and below the sampled maximum; a "holds" must
    be an infeasible MILP over the whole network, a "violated" a real counterexample (leaves' MILPs, which run
    over the pruned network, both off and on)."""
    from patchlang.compile import goals as G
    from patchlang.compile.branch_and_bound import BabOptions, BabStats, relu_split_search
    from patchlang.compile.verify import RegionCase, encode_region_query, unsafe_from_clauses
    from patchlang.solvers.base import INFEASIBLE, SolveOptions
    from patchlang.solvers.highs import HighsBackend

    rn = net(10 + seed, (6, 16, 16, 16, 3))
    rng = np.random.default_rng(seed)
    lo = rng.uniform(-1, 0, 6)
    hi = lo + rng.uniform(0.3, 1.0, 6)
    X = lo + rng.random((30000, 6)) * (hi - lo)
    k = seed % 3
    peak = rn.forward(X)[:, k].max()
    solve = lambda q: HighsBackend().solve(q, SolveOptions(time_limit=30, threads=1))  # noqa: E731
    for t in (peak + 0.02 * (abs(peak) + 0.1), peak - 0.05 * (abs(peak) + 0.1)):
        spec = unsafe_from_clauses([[G.linear_atom(np.eye(3)[k], "<=", t, 0.0)]], 3)
        milp = solve(encode_region_query(rn, lo, hi, spec, None).query)
        for leaves in (0, 4):
            stats = BabStats()
            res = relu_split_search(rn, RegionCase(lo, hi, spec), solve,
                                    lambda x: bool(spec.violated(rn.forward(x[None]))[0]),
                                    BabOptions(milp_unstable=leaves, batch=8), stats)
            assert res.status in ("holds", "violated")
            if res.status == "holds":
                assert milp.status == INFEASIBLE and not np.any(rn.forward(X)[:, k] > t)
            else:
                assert milp.status != INFEASIBLE and rn.forward(res.x[None])[0, k] > t
