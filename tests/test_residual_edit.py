"""Editing layers inside a residual block (issue 11, item 3).

The importer lifts a branch's editable layers to the top of the chain (model/residual.py), so `edit layer` names
them and the patch encoder carries their unknowns through the rest of the branch and the merge.  Golden answers:
the least L-inf bias change of the branch's last layer (everything after it affine: an LP) against an LP built by
hand with scipy; a MILP edit earlier in the branch checked in float64 and onnxruntime; the written graph is the
original one with only the edited tensor changed.
"""

from __future__ import annotations

import numpy as np
import onnx
import pytest
from onnx import helper, numpy_helper

from conftest import make_model
from patchlang.api import load_program_text, run_program
from patchlang.model.layers import Lifted
from patchlang.model.onnx_import import load_onnx
from patchlang.model.runtime import ort_outputs
from patchlang.tasks.patch import RunOptions

RNG = np.random.default_rng(7)
P = {"W0": RNG.normal(0, 1, (3, 2)), "b0": RNG.normal(0, 0.3, 3), "Wa": RNG.normal(0, 1, (3, 3)),
     "ba": RNG.normal(0, 0.3, 3), "Wb": RNG.normal(0, 1, (3, 3)), "bb": RNG.normal(0, 0.3, 3),
     "Wo": RNG.normal(0, 1, (3, 3)), "bo": RNG.normal(0, 0.3, 3)}
P = {k: v.astype(np.float32) for k, v in P.items()}
X = np.array([[0.5, -0.4], [-0.8, 0.3], [0.2, 0.9], [-0.1, -0.7], [0.9, 0.1]], np.float32)
MARGIN = 0.05


def _save(tmp_path) -> str:
    """x -> fc0 -> relu = r;  r + fc_b(relu(fc_a(r))) -> out: a residual Add whose branch has two dense layers."""
    nodes = [helper.make_node("Gemm", ["x", "W0", "b0"], ["h"], transB=1, name="fc0"),
             helper.make_node("Relu", ["h"], ["r"], name="relu0"),
             helper.make_node("Gemm", ["r", "Wa", "ba"], ["a"], transB=1, name="fc_a"),
             helper.make_node("Relu", ["a"], ["ra"], name="relu_a"),
             helper.make_node("Gemm", ["ra", "Wb", "bb"], ["bt"], transB=1, name="fc_b"),
             helper.make_node("Add", ["bt", "r"], ["s"], name="skip"),
             helper.make_node("Gemm", ["s", "Wo", "bo"], ["y"], transB=1, name="out")]
    path = str(tmp_path / "res.onnx")
    onnx.save(make_model(nodes, P, ["N", 2]), path)
    return path


def _f64(x: np.ndarray, db: np.ndarray | None = None) -> tuple[np.ndarray, np.ndarray]:
    """(the sum before `out`, the outputs) in float64, with ``db`` added to fc_b's bias."""
    p = {k: v.astype(np.float64) for k, v in P.items()}
    r = np.maximum(x @ p["W0"].T + p["b0"], 0)
    s = np.maximum(r @ p["Wa"].T + p["ba"], 0) @ p["Wb"].T + p["bb"] + (0 if db is None else db) + r
    return s, s @ p["Wo"].T + p["bo"]


def test_the_branch_layers_are_editable_and_the_function_is_the_same(tmp_path):
    net = load_onnx(_save(tmp_path))
    assert net.layer_names() == ["fc0", "fc_a", "fc_b", "out"]
    assert isinstance(net.affine(1), Lifted) and isinstance(net.affine(2), Lifted)
    np.testing.assert_allclose(net.forward(X.astype(np.float64)), _f64(X.astype(np.float64))[1], atol=1e-9)
    np.testing.assert_allclose(ort_outputs(net.source_path, X), _f64(X.astype(np.float64))[1], atol=1e-5)


def _spec(edit: str, target: int, keep: str) -> str:
    return ('model m = "res.onnx"\npoints pts = "pts.npy"\n'
            f"patch fix on m {{\n    {edit}\n    change pts[0] to {target}\n    keep pts[{keep}]\n"
            f'    margin {MARGIN}\n    minimize linf\n    save "fixed.onnx"\n}}\n')


def _run(tmp_path, edit: str, keep: str = "1:3", target: int | None = None):
    path = _save(tmp_path)
    np.save(tmp_path / "pts.npy", X)
    y = _f64(X.astype(np.float64))[1]
    target = int(np.argsort(y[0])[-2]) if target is None else target
    result = run_program(load_program_text(_spec(edit, target, keep), tmp_path), RunOptions())
    return result.tasks[0], path, target, y


def _changed_initializers(before: str, after: str) -> set[str]:
    a = {t.name: numpy_helper.to_array(t) for t in onnx.load(before).graph.initializer}
    b = {t.name: numpy_helper.to_array(t) for t in onnx.load(after).graph.initializer}
    assert a.keys() == b.keys()
    return {k for k in a if not np.array_equal(a[k], b[k])}


@pytest.mark.parametrize("keep", ["1:3", "1:5"])
def test_last_branch_layer_bias_is_an_lp_with_the_hand_built_optimum(tmp_path, keep):
    """keep 1:3 has a patch; with 1:5 point 3 (whose outputs are close to point 0's) makes the hand LP
    infeasible, and the encoder must say "no patch"."""
    from scipy.optimize import linprog

    task, path, target, y = _run(tmp_path, 'edit layer "fc_b" biases', keep)
    assert task.problem_class == "LP", task.class_reason
    # the hand-built LP: variables (d0, d1, d2, t), minimise t; y(x) = Wo (s(x) + d) + bo is affine in d
    s, _ = _f64(X.astype(np.float64))
    Wo, bo = P["Wo"].astype(np.float64), P["bo"].astype(np.float64)
    n = 3 if keep == "1:3" else 5
    labels = [target] + list(np.argmax(y[1:n], axis=1))
    A, rhs = [], []
    for x_s, lab in zip(s[:n], labels):
        for j in range(3):
            if j != lab:  # (Wo[lab] - Wo[j]) (s + d) + bo[lab] - bo[j] >= margin
                g = Wo[lab] - Wo[j]
                A.append(np.append(-g, 0.0))
                rhs.append(g @ x_s + bo[lab] - bo[j] - MARGIN)
    for i in range(3):  # |d_i| <= t
        for sign in (1, -1):
            row = np.zeros(4)
            row[i], row[3] = sign, -1
            A.append(row)
            rhs.append(0.0)
    lp = linprog(np.array([0, 0, 0, 1.0]), A_ub=np.array(A), b_ub=np.array(rhs), bounds=[(None, None)] * 4)
    if keep == "1:5":
        assert lp.status == 2 and task.status == "no patch", task.message
        return
    assert lp.status == 0 and task.status == "patched", task.message
    (label, delta), = task.deltas
    assert label == "fc_b.bias"
    assert abs(np.abs(delta).max() - lp.fun) < 1e-6 * (1 + lp.fun)
    out = str(tmp_path / "fixed.onnx")
    assert _changed_initializers(path, out) == {"bb"}
    assert [n.op_type for n in onnx.load(out).graph.node] == [n.op_type for n in onnx.load(path).graph.node]
    y32 = ort_outputs(out, X)
    assert np.argmax(y32[0]) == target and np.array_equal(np.argmax(y32[1:3], axis=1), np.argmax(y[1:3], axis=1))
    np.testing.assert_allclose(y32, _f64(X.astype(np.float64), delta)[1], atol=1e-4)


def _brute_force_fc_a_biases(target: int, n: int, bound: float) -> float | None:
    """The least L-inf change of fc_a's biases (3 unknowns) by enumerating every ReLU pattern of the branch at the
    ``n`` points (2^(3n) LPs): the exact optimum the MILP must reach, or None when no pattern admits a patch."""
    import itertools

    from scipy.optimize import linprog

    p = {k: v.astype(np.float64) for k, v in P.items()}
    x = X[:n].astype(np.float64)
    r = np.maximum(x @ p["W0"].T + p["b0"], 0)
    pre = r @ p["Wa"].T + p["ba"]  # + d
    y0 = _f64(x)[1]
    labels = [target] + list(np.argmax(y0[1:n], axis=1))
    best = None
    for bits in itertools.product((0, 1), repeat=3 * n):
        m = np.array(bits, float).reshape(n, 3)
        A, rhs = [], []
        for i in range(n):
            for k in range(3):  # active: pre + d >= 0; inactive: pre + d <= 0
                row = np.zeros(4)
                row[k] = -1.0 if m[i, k] else 1.0
                A.append(row)
                rhs.append(pre[i, k] if m[i, k] else -pre[i, k])
            # y = Wo (Wb (m * (pre + d)) + bb + r) + bo = M d + c
            M = p["Wo"] @ p["Wb"] @ np.diag(m[i])
            c = p["Wo"] @ (p["Wb"] @ (m[i] * pre[i]) + p["bb"] + r[i]) + p["bo"]
            for j in range(3):
                if j != labels[i]:
                    g = M[labels[i]] - M[j]
                    A.append(np.append(-g, 0.0))
                    rhs.append(c[labels[i]] - c[j] - MARGIN)
        for k in range(3):
            for sign in (1, -1):
                row = np.zeros(4)
                row[k], row[3] = sign, -1
                A.append(row)
                rhs.append(0.0)
        lp = linprog(np.array([0, 0, 0, 1.0]), A_ub=np.array(A), b_ub=np.array(rhs),
                     bounds=[(-bound, bound)] * 3 + [(0, bound)])
        if lp.status == 0 and (best is None or lp.fun < best):
            best = float(lp.fun)
    return best


@pytest.mark.parametrize("target,exists", [(2, True), (1, False)])
def test_a_branch_edit_before_its_relu_matches_the_brute_force_optimum(tmp_path, target, exists):
    """`edit layer 1 biases` (fc_a, by index): a MILP through the branch's ReLU, the skip and the merge; label 2
    has a patch (L-inf 1.504), label 1 none within the bound."""
    task, path, target, y = _run(tmp_path, "edit layer 1 biases\n    bound linf <= 3", target=target)
    assert task.problem_class == "MILP", task.class_reason
    best = _brute_force_fc_a_biases(target, 3, 3.0)
    assert (best is not None) == exists
    if best is None:
        assert task.status == "no patch", task.message
        return
    assert task.status == "patched", task.message
    (label, delta), = task.deltas
    assert label == "fc_a.bias" and abs(float(np.abs(delta).max()) - best) < 1e-5 * (1 + best)
    out = str(tmp_path / "fixed.onnx")
    assert _changed_initializers(path, out) == {"ba"}
    y32 = ort_outputs(out, X)
    assert np.argmax(y32[0]) == target and np.array_equal(np.argmax(y32[1:3], axis=1), np.argmax(y[1:3], axis=1))
    np.testing.assert_allclose(load_onnx(out).forward(X.astype(np.float64)), y32, atol=1e-4)
