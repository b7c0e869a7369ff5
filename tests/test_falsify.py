"""Falsification: finds violations cheaply, never claims one that is not there, counts its evaluations."""

from __future__ import annotations

import numpy as np

from patchlang.compile import goals as G
from patchlang.compile.bounds import relu_network
from patchlang.compile.verify import RegionCase, unsafe_from_clauses
from patchlang.model.build import network_from_arrays
from patchlang.tasks.falsify import FalsifyOptions, falsify_case


def _net(seed: int = 11):
    rng = np.random.default_rng(seed)
    sizes = (3, 12, 12, 4)
    Ws = [rng.standard_normal((sizes[k + 1], sizes[k])) / np.sqrt(sizes[k]) for k in range(3)]
    bs = [0.2 * rng.standard_normal(sizes[k + 1]) for k in range(3)]
    return relu_network(network_from_arrays(Ws, bs))


def test_finds_a_narrow_violation_and_reports_evaluations():
    rn = _net()
    lo, hi = -np.ones(3), np.ones(3)
    X = np.random.default_rng(5).uniform(lo, hi, (200_000, 3))
    peak = rn.forward(X)[:, 2].max()
    # only a sliver near the maximum violates: random sampling with 2000 points rarely hits it
    spec = unsafe_from_clauses([[G.linear_atom(np.eye(4)[2], "<=", peak - 1e-3, 0.0)]], 4)
    r = falsify_case(rn, RegionCase(lo, hi, spec), FalsifyOptions(samples=200, seed=0))
    assert r.x is not None
    assert np.all(r.x >= lo) and np.all(r.x <= hi)
    assert rn.forward(r.x[None])[0, 2] > peak - 1e-3
    assert r.best < 0 and r.evaluations > 200


def test_no_counterexample_when_the_property_holds():
    rn = _net()
    lo, hi = -np.ones(3), np.ones(3)
    spec = unsafe_from_clauses([[G.linear_atom(np.eye(4)[0], "<=", 1e3, 0.0)]], 4)
    r = falsify_case(rn, RegionCase(lo, hi, spec), FalsifyOptions(seed=0))
    assert r.x is None and r.best > 0 and r.evaluations > 0


def test_deterministic_and_collects_distinct_points():
    rn = _net()
    lo, hi = -np.ones(3), np.ones(3)
    spec = unsafe_from_clauses([G.label_is(0, 4, 0.0, "argmax")], 4)  # any input not classified 0
    a = falsify_case(rn, RegionCase(lo, hi, spec), FalsifyOptions(seed=3), keep=5)
    b = falsify_case(rn, RegionCase(lo, hi, spec), FalsifyOptions(seed=3), keep=5)
    assert a.candidates is not None and len(a.candidates) == 5
    assert all(np.array_equal(p, q) for p, q in zip(a.candidates, b.candidates))
    assert np.all(spec.violated(rn.forward(np.array(a.candidates))))
