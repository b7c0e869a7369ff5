"""verify's random restarts (tasks/falsify.py ``_restarts``): per-conjunction descents from random points find
counterexamples behind a flat plateau at the box centre, as on VNN-COMP's MNIST networks; each is confirmed in
float64 and onnxruntime; deterministic by seed; only networks with many inputs pay for them."""

from __future__ import annotations

import numpy as np

from patchlang.compile import goals as G
from patchlang.compile.bounds import relu_network
from patchlang.compile.verify import RegionCase, unsafe_from_clauses
from patchlang.model.build import network_from_arrays
from patchlang.model.runtime import OrtModel
from patchlang.model.onnx_export import patched_proto
from patchlang.tasks.falsify import FalsifyOptions, falsify_case
from patchlang.tasks.verify import RESTART_SHARE, restart_seconds, verify_cases

D = 40


def _plateau_net(threshold: float = 0.3):
    """On [-1, 1]^D: y0 = 1 and y1 = 0.25 relu(w·x - threshold), w = 1/sqrt(D).  At the centre the ReLU is off
    (zero gradient, so a descent from there never moves); label 0 fails only where w·x >= threshold + 4, near the
    all-ones vertex (7 standard deviations out for uniform points): only starts with w·x > threshold climb there."""
    w = np.ones((1, D)) / np.sqrt(D)
    return network_from_arrays([w, np.array([[0.0], [0.25]])], [np.array([-threshold]), np.array([1.0, 0.0])])


def _case() -> RegionCase:
    ensure = [[G.linear_atom(np.array([1.0, -1.0]), ">=", 0.0, 0.0)]]  # y0 >= y1: label 0 kept
    return RegionCase(-np.ones(D), np.ones(D), unsafe_from_clauses(ensure, 2))


def _restarts_only(**kw) -> FalsifyOptions:
    """The targeted stages alone: no sampling, no descent from samples, no polish."""
    return FalsifyOptions(samples=0, steps=0, polish=0, targeted=True, **kw)


def test_restarts_find_the_counterexample_the_centre_descent_misses():
    rn, case = relu_network(_plateau_net()), _case()
    without = falsify_case(rn, case, _restarts_only())
    assert without.x is None
    found = falsify_case(rn, case, _restarts_only(restart_seconds=1e6, restart_rounds=3))
    assert found.x is not None and np.all(found.x >= case.lo) and np.all(found.x <= case.hi)
    y = rn.forward(found.x[None])[0]
    assert y[1] >= y[0] and np.sum(found.x) > 20  # near the all-ones corner, where it must be


def test_restarts_are_deterministic_by_seed():
    rn, case = relu_network(_plateau_net()), _case()
    opts = dict(restart_seconds=1e6, restart_rounds=2, seed=4)
    a = falsify_case(rn, case, _restarts_only(**opts), keep=3)
    b = falsify_case(rn, case, _restarts_only(**opts), keep=3)
    assert a.candidates is not None and len(a.candidates) == 3
    assert all(np.array_equal(p, q) for p, q in zip(a.candidates, b.candidates))
    assert a.evaluations == b.evaluations


def test_a_property_that_holds_stops_the_restarts_by_patience():
    """Out of reach (the threshold puts the unsafe region outside the box): no candidate, and the rounds stop once
    the best value stalls, not at the (huge) time share or round cap."""
    rn, case = relu_network(_plateau_net(threshold=3.0)), _case()
    opt = _restarts_only(restart_seconds=1e6, restart_rounds=1000, restart_patience=2, restart_starts=4)
    r = falsify_case(rn, case, opt)
    per_round = 4 * (opt.restart_steps + 1)
    assert r.x is None and r.evaluations <= 10 * per_round


def test_verify_confirms_the_restart_counterexample_with_onnxruntime():
    net, case = _plateau_net(), _case()
    v = verify_cases(net, [case], timeout=30.0)
    assert v.status == "violated" and v.found_by == "falsification"
    assert v.y32 is not None  # the Confirmer ran the file in onnxruntime
    y32 = OrtModel(patched_proto(net), input_shape=net.input_shape).run(v.x32.reshape(1, -1))[0]
    assert y32[1] >= y32[0] and np.all(v.x32 >= case.lo) and np.all(v.x32 <= case.hi)


def test_only_networks_with_many_inputs_pay_for_restarts():
    small = relu_network(network_from_arrays([np.ones((3, 5)), np.ones((2, 3))], [np.zeros(3), np.zeros(2)]))
    big = relu_network(_plateau_net())
    assert restart_seconds(small, 120.0, 1) == 0.0  # ACAS Xu's 5 inputs: the sampling stage covers the box
    assert restart_seconds(big, 120.0, 2) == RESTART_SHARE * 120.0 / 2
