"""Increase/decrease marking (AIGENT's middle-layer patch as an LP): marks and the marked LP against answers
worked out by hand, and the patch method reporting the marking it used."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from patchlang.api import load_program_text, run_program
from patchlang.compile.attack_marks import DECREASE, INCREASE, NO_EFFECT, mark, marked_patch
from patchlang.compile.bounds import ReluNet
from patchlang.solution import SolveOptions
from patchlang.solvers.registry import choose_backend
from patchlang.tasks.patch import RunOptions

MARGIN = 1e-3


def _solve(query, options):
    backend, _ = choose_backend("highs", query, "MILP")
    return backend.solve(query, options)


def _net() -> ReluNet:
    """x0 = (1, 0): h1 = (1, 0), z1 = (1, 0) (neuron 1 off), y = (h2_0, 0.5 + 2 h2_1) = (1, 0.5): label 0.
    Towards 1 the wanted change (-1, +1) reaches layer 1's outputs as (-1, +2): neuron 0 *decrease*, neuron 1
    *increase*; only the edges from input 0 (h1_0 = 1 > 0) may move.  With x0's phases (neuron 1 stays off)
    the cheapest patch lowers z1_0 by 0.5 + margin; with the increase-marked neuron on, raising z1_1 by
    (0.5 + margin) / 2 is cheaper."""
    return ReluNet([np.eye(2), np.eye(2), np.array([[1.0, 0.0], [0.0, 2.0]])],
                   [np.zeros(2), np.zeros(2), np.array([0.0, 0.5])])


def test_marks_follow_the_wanted_output_change_backwards() -> None:
    mk = mark(_net(), np.array([1.0, 0.0]), 1, label=0, target=1)
    assert mk.neurons.tolist() == [DECREASE, INCREASE]
    assert mk.edges.tolist() == [[-1, 0], [1, 0]]  # input 1 is 0 at x0: its edges do not move
    # argmin models want the opposite change
    assert mark(_net(), np.array([1.0, 0.0]), 1, 0, 1, "argmin").neurons.tolist() == [INCREASE, DECREASE]
    # a neuron whose every path to the outputs is off has no effect
    dead = ReluNet([np.eye(2), np.eye(2), np.array([[1.0, 0.0], [1.0, 0.0]]), np.eye(2)],
                   [np.zeros(2), np.zeros(2), np.array([0.0, -5.0]), np.zeros(2)])
    assert mark(dead, np.array([1.0, 0.0]), 1, 0, 1).neurons.tolist() == [DECREASE, NO_EFFECT]


def test_marked_lp_gives_the_known_patches() -> None:
    rn, x0 = _net(), np.array([1.0, 0.0])
    found = marked_patch("argmax", rn, x0, 1, 0, [1], False, MARGIN, _solve, SolveOptions(threads=1),
                         lambda: 10.0)
    by_phase = {p.phases: p for p in found}
    at_x0, on = by_phase["phases at x0"], by_phase["increase-marked on"]
    assert at_x0.l1 == pytest.approx(0.5 + MARGIN, rel=1e-6)
    assert at_x0.dW == pytest.approx(np.array([[-(0.5 + MARGIN), 0.0], [0.0, 0.0]]), abs=1e-7)
    assert on.l1 == pytest.approx((0.5 + MARGIN) / 2, rel=1e-6)
    assert on.dW == pytest.approx(np.array([[0.0, 0.0], [(0.5 + MARGIN) / 2, 0.0]]), abs=1e-7)
    assert found[0] is at_x0  # x0's phases first: the likeliest to be reproducible from below
    for p in found:  # every edge moved in its marked direction, and the patched network says 1
        assert np.all(p.dW * p.marking.edges >= 0) and np.all(p.dW[p.marking.edges == 0] == 0)
        assert p.new_label == 1
        Ws = [rn.Ws[0], rn.Ws[1] + p.dW, rn.Ws[2]]
        assert int(np.argmax(ReluNet(Ws, rn.bs).forward(x0[None])[0])) == 1


def test_patch_method_reports_the_marking(tmp_path: Path) -> None:
    from patchlang.model.build import network_from_arrays
    from patchlang.model.onnx_export import save_network

    net = network_from_arrays([np.eye(4), np.eye(4), np.array([[1.0, 1, 1, 1], [0, 0, 0, 0]])],
                              [np.zeros(4), np.zeros(4), np.array([0.0, 2.5])])
    save_network(net, str(tmp_path / "sum.onnx"))
    np.savez(tmp_path / "pts.npz", x=np.ones((1, 4), np.float32), y=np.array([0]))
    text = """model net = "sum.onnx"
points p = "pts.npz"
attack adv on net {
    inputs p
    target away from label
    domain [0, 1]
    minimize l0
    method patch
}
"""
    program = load_program_text(text, tmp_path, filename=str(tmp_path / "a.patch"))
    row = run_program(program, RunOptions(write_files=False)).tasks[0].details["inputs"][0]
    assert row["status"] == "found" and row["l0"] == 2
    assert row["marking"].startswith("sign-marked LP (layer 1 towards 1: 0 increase, 4 decrease"), row


def test_box_bounds_memo_is_keyed_on_network_and_box() -> None:
    from patchlang.compile.attack import box_layer_bounds
    from patchlang.compile.bounds import backward_bounds, forward_bounds

    rng = np.random.default_rng(3)
    rn = ReluNet([rng.normal(size=(5, 4)), rng.normal(size=(3, 5))], [rng.normal(size=5), rng.normal(size=3)])
    lo, hi = np.zeros(4), np.ones(4)
    first = box_layer_bounds(rn, lo, hi)
    assert box_layer_bounds(rn, lo.copy(), hi.copy()) is first  # same arrays, same box: the memo
    half = box_layer_bounds(rn, lo, hi / 2)  # another box: computed afresh
    direct = backward_bounds(rn, lo[None], (hi / 2)[None], forward_bounds(rn, lo[None], (hi / 2)[None]))
    for a, b in zip(half.upper + half.lower, direct.upper + direct.lower):
        np.testing.assert_array_equal(a, b)
    other = ReluNet([rn.Ws[0] * 2, rn.Ws[1]], rn.bs)  # another network over the same box
    assert box_layer_bounds(other, lo, hi) is not first
