"""Writing networks: a patch changes exactly the edited tensors and nothing else in the file."""

from __future__ import annotations

import hashlib
from pathlib import Path

import numpy as np
import onnx
import pytest
from onnx import helper, numpy_helper

from patchlang.errors import ModelError
from patchlang.model import (Affine, Clip, Elementwise, Network, Relu, build_onnx, format_nnet, load_model,
                             network_from_arrays, ort_outputs, patched_proto, save_network)

EXAMPLE_MODELS = Path(__file__).resolve().parents[1] / "examples" / "models"
RNG = np.random.default_rng(0)


def sha256(path: str | Path) -> str:
    return hashlib.sha256(Path(path).read_bytes()).hexdigest()


def initializers(model) -> dict[str, np.ndarray]:
    return {t.name: numpy_helper.to_array(t) for t in model.graph.initializer}


def changed_initializers(before, after) -> set[str]:
    a, b = initializers(before), initializers(after)
    assert a.keys() == b.keys()
    return {k for k in a if a[k].shape != b[k].shape or not np.array_equal(a[k], b[k])}


def assert_file_matches_ir(net, path: str, x: np.ndarray, tol: float = 1e-5) -> None:
    expected = net.forward(x)
    assert np.abs(ort_outputs(path, x) - expected).max() <= tol * (1.0 + np.abs(expected).max())


def structure(model) -> list[tuple]:
    return [(n.op_type, n.name, tuple(n.input), tuple(n.output)) for n in model.graph.node]


# ----------------------------------------------------------------------------------------------- round trips
def test_round_trip_changes_only_the_edited_initializer(tmp_path: Path):
    src = str(EXAMPLE_MODELS / "digits_mlp.onnx")
    digest = sha256(src)
    net = load_model(src)
    W = net.affine(1).W.copy()
    W[3, 7] += 0.25
    patched = net.with_affine(1, W=W)
    out = tmp_path / "sub" / "patched.onnx"  # parent directory is created
    save_network(patched, str(out))

    before, after = onnx.load(src), onnx.load(str(out))
    assert (after.ir_version, after.opset_import) == (before.ir_version, before.opset_import)
    assert structure(after) == structure(before)
    assert changed_initializers(before, after) == {net.affine(1).weight_ref.initializer}
    x = np.load(EXAMPLE_MODELS / "digits_test.npz")["x"][:50]
    assert_file_matches_ir(patched, str(out), x)
    assert not np.allclose(ort_outputs(str(out), x), ort_outputs(src, x))  # the change is really in the file
    np.testing.assert_array_equal(load_model(str(out)).affine(1).W, W)
    assert sha256(src) == digest
    assert [p.name for p in out.parent.iterdir()] == ["patched.onnx"]  # no temporary file left behind


def test_unpatched_network_is_written_unchanged(tmp_path: Path):
    src = str(EXAMPLE_MODELS / "digits_mlp.onnx")
    out = tmp_path / "same.onnx"
    save_network(load_model(src), str(out))
    assert onnx.load(str(out)) == onnx.load(src)


def test_refuses_to_overwrite_the_input_model(tmp_path: Path):
    src = tmp_path / "toy.onnx"
    src.write_bytes((EXAMPLE_MODELS / "toy.onnx").read_bytes())
    net = load_model(str(src))
    digest = sha256(src)
    with pytest.raises(ModelError, match="refusing to overwrite"):
        save_network(net, str(src))
    with pytest.raises(ModelError, match="refusing to overwrite"):
        save_network(net, str(tmp_path / "." / "toy.onnx"))
    assert sha256(src) == digest


def _transposed_scaled_model(write_model) -> str:
    return write_model([
        helper.make_node("MatMul", ["x", "W1"], ["h"], name="mm"),
        helper.make_node("Sub", ["h", "b1"], ["hb"], name="negbias"),  # folds as bias with scale -1
        helper.make_node("Relu", ["hb"], ["r"]),
        helper.make_node("Gemm", ["r", "W2", "C2"], ["y"], name="g", alpha=2.0, beta=0.5),
    ], {"W1": RNG.standard_normal((4, 3)).astype(np.float32), "b1": RNG.standard_normal(3).astype(np.float32),
        "W2": RNG.standard_normal((3, 2)).astype(np.float32), "C2": np.float32(0.3)}, ["N", 4])


def test_inverse_of_transpose_and_scale(tmp_path: Path, write_model):
    src = _transposed_scaled_model(write_model)
    net = load_model(src)
    assert net.affine(0).bias_ref.scale == -1.0 and net.affine(1).weight_ref.transposed
    patched = net.with_affine(0, W=net.affine(0).W + 0.5, b=net.affine(0).b + 1.0)
    patched = patched.with_affine(1, W=patched.affine(1).W * 3, b=patched.affine(1).b + 0.25)  # scalar C stays scalar
    out = str(tmp_path / "p.onnx")
    save_network(patched, out)
    x = RNG.standard_normal((5, 4))
    assert_file_matches_ir(patched, out, x)
    after = initializers(onnx.load(out))
    assert after["C2"].shape == () and after["W1"].shape == (4, 3) and after["W2"].dtype == np.float32
    reloaded = load_model(out)
    for k in range(2):
        np.testing.assert_allclose(reloaded.affine(k).W, patched.affine(k).W, rtol=1e-6)
        np.testing.assert_allclose(reloaded.affine(k).b, patched.affine(k).b, rtol=1e-6)


def test_broadcast_bias_is_widened_when_it_stops_being_uniform(tmp_path: Path, write_model):
    net = load_model(_transposed_scaled_model(write_model))
    patched = net.with_affine(1, b=np.array([1.0, -1.0]))
    out = str(tmp_path / "p.onnx")
    save_network(patched, out)
    assert initializers(onnx.load(out))["C2"].shape == (2,)
    assert_file_matches_ir(patched, out, RNG.standard_normal((5, 4)))


def test_new_bias_gets_an_add_node(tmp_path: Path, write_model):
    src = write_model([
        helper.make_node("Gemm", ["x", "W1", "c1"], ["h"], transB=1),
        helper.make_node("Relu", ["h"], ["r"]),
        helper.make_node("MatMul", ["r", "W2"], ["y"], name="head"),
    ], {"W1": RNG.standard_normal((3, 4)).astype(np.float32), "c1": np.zeros(3, np.float32),
        "W2": RNG.standard_normal((3, 2)).astype(np.float32)}, ["N", 4], opset=11, ir_version=6, output_dims=["N", 2])
    net = load_model(src)
    assert net.affine(1).bias_ref is None
    patched = net.with_affine(1, b=np.array([0.5, -2.0]))
    out = str(tmp_path / "p.onnx")
    save_network(patched, out)
    model = onnx.load(out)
    onnx.checker.check_model(model)
    assert (model.ir_version, model.opset_import[0].version) == (6, 11)
    assert [n.op_type for n in model.graph.node] == ["Gemm", "Relu", "MatMul", "Add"]
    assert model.graph.output[0].name == "y"
    assert_file_matches_ir(patched, out, RNG.standard_normal((5, 4)))
    reloaded = load_model(out)
    np.testing.assert_allclose(reloaded.affine(1).b, [0.5, -2.0])
    assert reloaded.affine(1).bias_ref is not None


def test_weights_in_constant_nodes_and_derived_tensors(tmp_path: Path, write_model):
    W = RNG.standard_normal((3, 4)).astype(np.float32)
    src = write_model([
        helper.make_node("Constant", [], ["Wc"], value=helper.make_tensor("Wc", 1, W.shape, W.ravel())),
        helper.make_node("Transpose", ["Wt"], ["WtT"], perm=[1, 0]),
        helper.make_node("MatMul", ["x", "Wc"], ["h"]),
        helper.make_node("Relu", ["h"], ["r"]),
        helper.make_node("MatMul", ["r", "WtT"], ["y"]),
    ], {"Wt": RNG.standard_normal((2, 4)).astype(np.float32)}, ["N", 3])
    net = load_model(src)
    assert onnx.load(src) == patched_proto(net)  # untouched derived tensors are not rewritten
    patched = net.with_affine(0, W=net.affine(0).W * 2).with_affine(1, W=net.affine(1).W - 1)
    out = str(tmp_path / "p.onnx")
    save_network(patched, out)
    assert_file_matches_ir(patched, out, RNG.standard_normal((5, 3)))


# ----------------------------------------------------------------------------------------------- building and NNet
def test_build_onnx_all_layer_kinds(tmp_path: Path):
    layers = [
        Elementwise(scale=np.full(6, 2.0), shift=np.arange(6.0), name="norm"),
        Affine(W=RNG.standard_normal((4, 6)), b=RNG.standard_normal(4), name="fc"),
        Clip(-0.5, np.inf, name="clip"),
        Relu(),
        Affine(W=RNG.standard_normal((3, 4)), b=np.zeros(3), name="fc"),  # duplicate names are made unique
    ]
    for opset in (9, 13):
        model = build_onnx(layers, (2, 3), opset=opset, ir_version=4 if opset == 9 else 8)
        assert model.ir_version == (4 if opset == 9 else 8)
        assert model.graph.node[0].op_type == "Flatten"
        path = str(tmp_path / f"b{opset}.onnx")
        onnx.save(model, path)
        assert_file_matches_ir(Network("n", "input", (2, 3), list(layers)), path, RNG.standard_normal((5, 2, 3)))


def test_network_from_arrays_saves_like_an_import(tmp_path: Path):
    net = network_from_arrays([np.eye(2), np.ones((1, 2))], [np.zeros(2), np.zeros(1)], activation="hardtanh")
    assert [type(l).__name__ for l in net.layers] == ["Affine", "Clip", "Affine"]
    patched = net.with_affine(1, b=np.array([3.0]))
    out = str(tmp_path / "n.onnx")
    save_network(patched, out)
    assert changed_initializers(net.proto, onnx.load(out)) == {patched.affine(1).bias_ref.initializer}
    assert_file_matches_ir(patched, out, RNG.standard_normal((4, 2)))


def test_nnet_round_trip_and_limits(tmp_path: Path):
    net = load_model(str(EXAMPLE_MODELS / "toy.onnx"))
    out = tmp_path / "toy.nnet"
    save_network(net, str(out))
    again = load_model(str(out))
    x = RNG.standard_normal((4, 2))
    np.testing.assert_array_equal(again.forward(x), net.forward(x))
    assert again.metadata["output_range"] == 1.0
    save_network(again, str(tmp_path / "toy_again.onnx"))  # a network without proto is built fresh
    assert_file_matches_ir(again, str(tmp_path / "toy_again.onnx"), x)
    clipped = network_from_arrays([np.eye(2), np.eye(2)], [np.zeros(2)] * 2, activation="hardtanh")
    with pytest.raises(ModelError, match="cannot be written as NNet"):
        format_nnet(clipped)


# ----------------------------------------------------------------------------------------------- shared benchmarks
@pytest.mark.shared
def test_acasxu_patch_keeps_ir3_and_opset8(shared_dir: Path, tmp_path: Path):
    src = shared_dir / "benchmarks/acasxu/onnx/ACASXU_run2a_1_1_batch_2000.onnx"
    net = load_model(str(src))
    patched = net.with_affine(-1, b=net.affine(-1).b + 0.01)
    out = str(tmp_path / "acas.onnx")
    save_network(patched, out)
    before, after = onnx.load(str(src)), onnx.load(out)
    assert (after.ir_version, after.opset_import[0].version) == (3, 8)
    assert changed_initializers(before, after) == {"linear_7_Add_B"}
    assert_file_matches_ir(patched, out, RNG.uniform(-0.5, 0.5, (5, 1, 1, 5)))


@pytest.mark.shared
def test_acasxu_nnet_written_back(shared_dir: Path, tmp_path: Path):
    src = shared_dir / "benchmarks/acasxu/nnet/ACASXU_experimental_v2a_2_3.nnet"
    net = load_model(str(src))
    out = tmp_path / "acas.nnet"
    save_network(net, str(out))
    again = load_model(str(out))
    x = RNG.uniform(-0.5, 0.5, (5, 5))
    np.testing.assert_array_equal(again.forward(x), net.forward(x))
    for key in ("input_min", "input_max", "input_mean", "input_range"):
        np.testing.assert_array_equal(again.metadata[key], net.metadata[key])


@pytest.mark.shared
def test_watermark_new_bias_and_cifar_prefix(shared_dir: Path, tmp_path: Path):
    bench = shared_dir / "benchmarks"
    wm = load_model(str(bench / "watermark_mnist/mnist_wm.onnx"))
    patched = wm.with_affine(1, b=np.linspace(-1, 1, 10))
    out = str(tmp_path / "wm.onnx")
    save_network(patched, out)
    assert_file_matches_ir(patched, out, RNG.uniform(0, 255, (3, 28, 28, 1)))

    cifar = load_model(str(bench / "cifar10/onnx/cifar_base_kw.onnx"))
    patched = cifar.with_affine(2, W=cifar.affine(2).W * 1.1)  # layers 0 and 1 are its convolutions (issue 11)
    out = str(tmp_path / "cifar.onnx")
    save_network(patched, out)
    original = onnx.load(str(bench / "cifar10/onnx/cifar_base_kw.onnx"))
    assert changed_initializers(original, onnx.load(out)) == {"5.weight"}
    assert_file_matches_ir(patched, out, RNG.uniform(0, 1, (2, 3, 32, 32)))
    # a convolution's kernel is written back as the kernel tensor, never as the lowered matrix
    patched = cifar.with_params(1, "weights", cifar.params(1, "weights") * 0.9)
    save_network(patched, out)
    assert changed_initializers(original, onnx.load(out)) == {cifar.affine(1).weight_ref.initializer}
    assert_file_matches_ir(patched, out, RNG.uniform(0, 1, (2, 3, 32, 32)))
