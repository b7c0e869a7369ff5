"""The verifier skips falsifying a case that one CROWN pass already proves: that check must never call a
violated case proven, and must prove the easy ones (or it would only cost time)."""

from __future__ import annotations

import numpy as np
import pytest

from patchlang.compile import goals as G
from patchlang.compile.bounds import relu_network
from patchlang.compile.verify import RegionCase, unsafe_from_clauses
from patchlang.model.build import network_from_arrays
from patchlang.tasks.verify import proven_by_crown, verify_cases


def random_case(seed: int):
    rng = np.random.default_rng(seed)
    sizes = (4, 12, 12, 3)
    Ws = [rng.standard_normal((sizes[k + 1], sizes[k])) / np.sqrt(sizes[k]) for k in range(len(sizes) - 1)]
    bs = [0.3 * rng.standard_normal(sizes[k + 1]) for k in range(len(sizes) - 1)]
    net = network_from_arrays(Ws, bs, activation="relu", name=f"c{seed}")
    lo = rng.uniform(-1, 0, 4)
    hi = lo + rng.uniform(0.05, 0.6, 4)
    X = lo + rng.random((20000, 4)) * (hi - lo)
    return net, relu_network(net), lo, hi, X


@pytest.mark.parametrize("seed", range(8))
def test_crown_check_never_proves_a_sampled_violation_and_proves_loose_thresholds(seed):
    net, rn, lo, hi, X = random_case(seed)
    Y = rn.forward(X)
    k = seed % 3
    peak = Y[:, k].max()
    proven = []
    for t in peak + np.array([-0.05, 0.0, 0.01, 0.1, 0.5, 2.0, 10.0]) * (abs(peak) + 0.1):
        ensure = [[G.linear_atom(np.eye(3)[k], "<=", t, 0.0)]]  # unsafe: y_k > t
        case = RegionCase(lo, hi, unsafe_from_clauses(ensure, 3))
        ok = proven_by_crown(rn, case)
        if ok:
            assert not np.any(Y[:, k] > t), "a case with a sampled violation was called proven"
            assert verify_cases(net, [case], timeout=30, seed=seed).status == "holds"
        proven.append(ok)
    assert not proven[0]  # the sampled maximum exceeds the threshold
    assert proven[-1]  # a threshold far above every output is proven by bounds alone


def test_disjunction_needs_every_conjunction_refuted():
    net, rn, lo, hi, X = random_case(3)
    Y = rn.forward(X)
    far = Y.max(axis=0) + 10.0 * (np.abs(Y).max() + 1.0)
    # unsafe: y_0 > far_0  OR  y_1 > (a threshold the samples exceed)
    ensure = [[G.linear_atom(np.eye(3)[0], "<=", far[0], 0.0)], [G.linear_atom(np.eye(3)[1], "<=", Y[:, 1].min(), 0.0)]]
    assert not proven_by_crown(rn, RegionCase(lo, hi, unsafe_from_clauses(ensure, 3)))
    ensure[1] = [G.linear_atom(np.eye(3)[1], "<=", far[1], 0.0)]
    assert proven_by_crown(rn, RegionCase(lo, hi, unsafe_from_clauses(ensure, 3)))


def test_a_proven_case_with_many_inputs_is_not_falsified():
    """Where the falsifier would run restarts (more than 20 inputs), a case CROWN proves costs no evaluation."""
    rng = np.random.default_rng(7)
    sizes = (30, 16, 3)
    Ws = [rng.standard_normal((sizes[k + 1], sizes[k])) / np.sqrt(sizes[k]) for k in range(2)]
    bs = [0.3 * rng.standard_normal(sizes[k + 1]) for k in range(2)]
    net = network_from_arrays(Ws, bs, activation="relu", name="wide")
    rn = relu_network(net)
    lo = rng.uniform(-1, 0, 30)
    hi = lo + 0.01
    peak = rn.forward(lo[None] + rng.random((5000, 30)) * (hi - lo))[:, 0].max()
    loose = RegionCase(lo, hi, unsafe_from_clauses([[G.linear_atom(np.eye(3)[0], "<=", peak + 5.0, 0.0)]], 3))
    tight = RegionCase(lo, hi, unsafe_from_clauses([[G.linear_atom(np.eye(3)[0], "<=", peak - 0.01, 0.0)]], 3))
    assert proven_by_crown(rn, loose) and not proven_by_crown(rn, tight)
    v = verify_cases(net, [loose], timeout=30)
    assert v.status == "holds" and v.stats["evaluations"] == 0
    assert verify_cases(net, [tight], timeout=30).status == "violated"
