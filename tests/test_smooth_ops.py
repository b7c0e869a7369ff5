"""Sigmoid and Tanh (issue 11, item 2): imported as smooth layers with sound linear relaxations.

`verify` proves "holds" through them by input splitting with bounds alone (no exact leaves), finds checked
counterexamples as before, and says "unknown" otherwise; every task that needs an exact encoding across one refuses
with PL301 naming the node, while an edit after the last smooth op (everything downstream piecewise linear) works.
The soundness tests compare every bound with dense samples; the verdict tests with a dense-sampling falsifier.
"""

from __future__ import annotations

import numpy as np
import pytest
from onnx import helper

from conftest import make_model
from patchlang.compile.bounds import backward_bounds, forward_bounds, interval_bounds, relu_network, spec_lower_bounds
from patchlang.compile.verify import RegionCase, unsafe_from_vnnlib
from patchlang.errors import PatchlangError
from patchlang.inputs.vnnlib import LinearAtom
from patchlang.model.onnx_import import load_onnx
from patchlang.model.ops import act_apply, relax_activation
from patchlang.tasks.verify import verify_cases

KINDS = ("sigmoid", "tanh")


@pytest.mark.parametrize("kind", KINDS)
def test_relaxation_contains_the_activation_on_dense_samples(kind):
    """Every region of the S-curve (convex, concave, both; wide, narrow, far out, zero width)."""
    rng = np.random.default_rng(0)
    c = rng.normal(0, 4, 4000)
    w = np.concatenate([rng.exponential(2.0, 3000), np.zeros(500), rng.exponential(1e-7, 500)])
    l, u = c - w / 2, c + w / 2
    a_lo, b_lo, a_up, b_up = relax_activation(kind, l, u)
    assert np.all(a_lo >= 0) and np.all(a_up >= 0)
    t = np.linspace(0, 1, 201)[:, None]
    z = l + t * (u - l)
    y = act_apply(kind, z)
    assert np.all(a_lo * z + b_lo <= y + 1e-13)
    assert np.all(a_up * z + b_up >= y - 1e-13)
    # not vacuous: on a narrow interval the two lines are close (the relaxation is tight where it should be)
    gap = (a_up - a_lo) * z + (b_up - b_lo)
    narrow = (u - l) < 0.05
    assert np.all(gap[:, narrow] < 1e-3)


def _random_smooth_model(seed: int, acts=("Tanh", "Relu", "Sigmoid"), sizes=(3, 8, 8, 6, 4)):
    rng = np.random.default_rng(seed)
    nodes, inits, prev = [], {}, "x"
    for k in range(len(sizes) - 1):
        inits[f"W{k}"] = rng.normal(0, 1.2, (sizes[k + 1], sizes[k])).astype(np.float32)
        inits[f"b{k}"] = rng.normal(0, 0.5, sizes[k + 1]).astype(np.float32)
        out = "y" if k == len(sizes) - 2 else f"z{k}"
        nodes.append(helper.make_node("Gemm", [prev, f"W{k}", f"b{k}"], [out], transB=1, name=f"fc{k}"))
        if out != "y":
            nodes.append(helper.make_node(acts[k % len(acts)], [out], [f"h{k}"], name=f"act{k}"))
            prev = f"h{k}"
    return make_model(nodes, inits, ["N", sizes[0]])


def _load(tmp_path, model, name="m.onnx"):
    import onnx

    onnx.save(model, str(tmp_path / name))
    return load_onnx(str(tmp_path / name)), str(tmp_path / name)


@pytest.mark.parametrize("seed", range(4))
def test_bounds_contain_dense_samples_on_random_smooth_nets(tmp_path, seed):
    net, _ = _load(tmp_path, _random_smooth_model(seed))
    with pytest.raises(PatchlangError) as err:
        relu_network(net)  # the exact chain refuses them
    assert err.value.code == "PL301"
    rn = relu_network(net, smooth=True)
    assert rn.smooth == ["sigmoid", "tanh"]
    rng = np.random.default_rng(seed)
    lo = rng.uniform(-1, 0.5, (3, 3))
    hi = lo + rng.uniform(0.05, 1.0, (3, 3))
    X = lo[:, None, :] + rng.uniform(0, 1, (3, 3000, 3)) * (hi - lo)[:, None, :]
    Y = net.forward(X.reshape(-1, 3)).reshape(3, 3000, -1)
    assert np.allclose(Y, rn.forward(X.reshape(-1, 3)).reshape(Y.shape))
    # pre-activations of every hidden layer inside every kind of bound
    Z, h = [], X.reshape(-1, 3)
    for k in range(rn.n_hidden):
        z = h @ rn.Ws[k].T + rn.bs[k]
        Z.append(z.reshape(3, 3000, -1))
        h = act_apply(rn.act(k), z)
    iv = interval_bounds(rn, lo, hi)
    fb = forward_bounds(rn, lo, hi, refine=True)
    bb = backward_bounds(rn, lo, hi, fb)
    for k in range(rn.n_hidden):
        for l, u in ((iv[k][0], iv[k][1]), (fb.lower[k], fb.upper[k]), (bb.lower[k], bb.upper[k])):
            assert np.all(Z[k] >= l[:, None, :] - 1e-9) and np.all(Z[k] <= u[:, None, :] + 1e-9)
    C = rng.normal(size=(5, Y.shape[2]))
    d = rng.normal(size=5)
    lb, Lam, const, _ = spec_lower_bounds(rn, C, d, lo, hi, bb)
    vals = Y @ C.T + d
    assert np.all(vals.min(axis=1) >= lb - 1e-9)
    # the linear lower bound holds pointwise too, and it is not vacuous
    lin = np.einsum("bkd,bnd->bnk", Lam, X) + const[:, None, :]
    assert np.all(vals >= lin - 1e-9)
    # narrow boxes: the bound is nearly the true minimum (the relaxations are tangents, not just intervals)
    c = (lo + hi) / 2
    lbn, _, _, _ = spec_lower_bounds(rn, C, d, c - 1e-4, c + 1e-4, backward_bounds(rn, c - 1e-4, c + 1e-4))
    yc = rn.forward(c) @ C.T + d
    assert np.all(yc >= lbn) and np.all(yc - lbn < 1e-2)


def _sigmoid_head(tmp_path):
    """``y = [sigmoid(2 x0 - x1), 1 - sigmoid(2 x0 - x1)]`` as Gemm, Sigmoid, Gemm."""
    W1 = np.array([[2.0, -1.0]], np.float32)
    W2 = np.array([[1.0], [-1.0]], np.float32)
    b2 = np.array([0.0, 1.0], np.float32)
    model = make_model([helper.make_node("Gemm", ["x", "W1", "b1"], ["z"], transB=1, name="fc1"),
                        helper.make_node("Sigmoid", ["z"], ["s"], name="squash"),
                        helper.make_node("Gemm", ["s", "W2", "b2"], ["y"], transB=1, name="fc2")],
                       {"W1": W1, "b1": np.zeros(1, np.float32), "W2": W2, "b2": b2}, ["N", 2])
    return _load(tmp_path, model, "sig.onnx")


def test_golden_sigmoid_holds_and_violated(tmp_path):
    """sigmoid(2 x0 - x1) over x in [0, 1] x [0, 1] ranges over [sigmoid(-1), sigmoid(2)] = [0.269, 0.881]."""
    net, _ = _sigmoid_head(tmp_path)

    def case(lo, hi, bound):
        spec = unsafe_from_vnnlib([[LinearAtom({0: 1.0}, ">=", bound)]], 2)  # unsafe: y0 >= bound
        return [RegionCase(np.array(lo, float), np.array(hi, float), spec, "box")]

    holds = verify_cases(net, case([0, 0], [1, 1], 0.885), timeout=30)
    assert holds.status == "holds", holds.reason
    assert holds.stats["method"] == "input-split" and holds.stats["smooth"] == ["sigmoid"]
    bad = verify_cases(net, case([0, 0], [1, 1], 0.875), timeout=30)
    assert bad.status == "violated" and bad.y64[0] >= 0.875
    assert bad.y32 is not None and bad.y32[0] >= 0.875  # onnxruntime agrees
    # no falsification: the proof search alone, 1e-4 above the true maximum (the search's tolerance is 1e-6)
    tight = verify_cases(net, case([0, 0], [1, 1], float(act_apply("sigmoid", np.array(2.0))) + 1e-4), timeout=30,
                         falsify=False)
    assert tight.status == "holds"


@pytest.mark.parametrize("seed", range(5))
def test_verdicts_agree_with_dense_sampling(tmp_path, seed):
    """Never "holds" where a sample is unsafe; "violated" only with a confirmed point."""
    net, _ = _load(tmp_path, _random_smooth_model(seed + 10, sizes=(2, 6, 6, 3)))
    rng = np.random.default_rng(seed)
    lo = rng.uniform(-1, 0, 2)
    hi = lo + 0.6
    grid = np.stack(np.meshgrid(*[np.linspace(lo[i], hi[i], 120) for i in range(2)]), -1).reshape(-1, 2)
    Y = net.forward(grid)
    j = int(np.argmax(Y.mean(axis=0)))
    other = (j + 1) % 3
    diff = Y[:, other] - Y[:, j]  # unsafe: y_other >= y_j + margin
    for margin in (float(diff.max()) - 0.05, float(diff.max()) + 0.05):
        spec = unsafe_from_vnnlib([[LinearAtom({other: 1.0, j: -1.0}, ">=", margin)]], 3)
        v = verify_cases(net, [RegionCase(lo, hi, spec, "box")], timeout=20)
        sampled_unsafe = bool(np.any(diff >= margin))
        if sampled_unsafe:
            assert v.status == "violated"
        else:
            assert v.status in ("holds", "unknown")
        if v.status == "violated":
            assert v.y64[other] - v.y64[j] >= margin


def _run(tmp_path, src: str):
    from patchlang.api import load_program_text, run_program
    from patchlang.tasks.patch import RunOptions

    (tmp_path / "t.patch").write_text(src)
    return run_program(load_program_text(src, tmp_path), RunOptions())


def test_verify_spec_holds_through_sigmoid(tmp_path):
    """From a spec: proven, the report says bounds only, and the certificate is honest about the re-check."""
    _sigmoid_head(tmp_path)
    r = _run(tmp_path, 'model m = "sig.onnx"\n'
                       "property p { input box lo [0, 0] hi [1, 1] ensure y[0] <= 0.9 }\n"
                       "verify m satisfies p\n").tasks[0]
    assert r.status == "holds", r.message
    assert "smooth" in r.class_reason
    assert r.details["certificate"]["certified"] is False
    assert "sigmoid" in r.details["certificate"]["method"]


def test_patch_after_the_last_smooth_op_works_and_before_it_is_pl301(tmp_path):
    _sigmoid_head(tmp_path)
    head = ('model m = "sig.onnx"\npoints p = [[1.0, 0.0]]\n')
    r = _run(tmp_path, head + 'patch fixed on m {\n  edit layer "fc2" biases\n  change p to 1\n'
                              '  minimize linf\n  save "fixed.onnx"\n}\n').tasks[0]
    assert r.status == "patched", r.message
    from patchlang.model.runtime import ort_outputs

    y = ort_outputs(str(tmp_path / "fixed.onnx"), np.array([[1.0, 0.0]], np.float32))
    assert np.argmax(y[0]) == 1
    # golden: y = [s, 1 - s] with s = sigmoid(2); label 1 needs d1 - d0 >= 2 s - 1, so the least L-inf is s - 1/2
    import onnx
    from onnx import numpy_helper

    b2 = {i.name: numpy_helper.to_array(i) for i in onnx.load(str(tmp_path / "fixed.onnx")).graph.initializer}["b2"]
    linf = float(np.abs(b2 - np.array([0.0, 1.0])).max())
    assert abs(linf - (float(act_apply("sigmoid", np.array(2.0))) - 0.5)) < 1e-3
    with pytest.raises(PatchlangError) as err:
        _run(tmp_path, head + 'patch bad on m {\n  edit layer "fc1" biases\n  change p to 1\n'
                              '  minimize linf\n}\n')
    assert err.value.code == "PL301" and "Sigmoid node 'squash'" in err.value.message
    assert err.value.diagnostics[0].span.line == 4  # `check` places it at the edit statement


def test_written_files_keep_the_smooth_nodes(tmp_path):
    """A network built in memory with a smooth layer writes it as its ONNX op."""
    from patchlang.model.build import build_onnx
    from patchlang.model.runtime import ort_outputs

    net, _ = _load(tmp_path, _random_smooth_model(1))
    proto = build_onnx(net.layers, net.input_shape)
    assert {"Sigmoid", "Tanh"} <= {n.op_type for n in proto.graph.node}
    import onnx

    onnx.save(proto, str(tmp_path / "built.onnx"))
    X = np.random.default_rng(0).uniform(-1, 1, (5, 3)).astype(np.float32)
    assert np.allclose(ort_outputs(str(tmp_path / "built.onnx"), X), net.forward(X.astype(np.float64)), atol=1e-5)
