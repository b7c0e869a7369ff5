"""Importing networks: the IR must compute exactly what onnxruntime computes on the original file."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from onnx import helper

from patchlang.errors import ModelError
from patchlang.model import Clip, OrtModel, load_model, ort_outputs

EXAMPLE_MODELS = Path(__file__).resolve().parents[1] / "examples" / "models"
RNG = np.random.default_rng(0)


def f32(*shape: int) -> np.ndarray:
    return RNG.standard_normal(shape).astype(np.float32)


def kinds(net) -> list[str]:
    return [type(layer).__name__ for layer in net.layers]


def assert_matches_ort(net, path: str, x: np.ndarray, tol: float = 1e-4) -> None:
    expected = OrtModel(path).run(x)
    got = net.forward(x)
    scale = 1.0 + np.abs(expected).max()
    assert got.shape == expected.shape
    assert np.abs(got - expected).max() <= tol * scale


# ----------------------------------------------------------------------------------------------- example models
def test_toy_network_values():
    net = load_model(str(EXAMPLE_MODELS / "toy.onnx"))
    assert kinds(net) == ["Affine", "Relu", "Affine"]
    np.testing.assert_array_equal(net.affine(0).W, [[1, -2], [2, -1]])
    np.testing.assert_array_equal(net.affine(1).W, [[1, -1], [-1, 1]])
    np.testing.assert_array_equal(net.affine(0).b, [0, 0])
    np.testing.assert_array_equal(net.forward(np.array([[3.0, 4.0]])), [[-2.0, 2.0]])
    assert net.input_shape == (2,) and net.prefix is None and not net.batch_fixed


def test_digits_model_agrees_with_onnxruntime():
    path = str(EXAMPLE_MODELS / "digits_mlp.onnx")
    data = np.load(EXAMPLE_MODELS / "digits_test.npz")
    net = load_model(path)
    assert kinds(net) == ["Affine", "Relu", "Affine"]
    assert (net.affine(0).in_size, net.affine(0).out_size, net.output_size) == (64, 32, 10)
    assert np.abs(net.forward(data["x"]) - ort_outputs(path, data["x"])).max() < 1e-4
    accuracy = np.mean(net.labels(data["x"]) == data["y"])
    assert 0.9 < accuracy < 1.0  # some misclassified points for the repair examples
    assert data["x"].dtype == np.float32 and data["y"].dtype == np.int64


# ----------------------------------------------------------------------------------------------- hand-made graphs
def test_matmul_add_folds_into_one_affine_and_gemm_scales(write_model):
    W1, b1, W2, C2 = f32(4, 3), f32(3), f32(2, 3), f32(1, 2)
    path = write_model([
        helper.make_node("MatMul", ["x", "W1"], ["h"], name="mm"),
        helper.make_node("Add", ["h", "b1"], ["hb"], name="bias"),
        helper.make_node("Relu", ["hb"], ["r"]),
        helper.make_node("Gemm", ["r", "W2", "C2"], ["y"], name="out", alpha=2.0, beta=0.5, transB=1),
    ], {"W1": W1, "b1": b1, "W2": W2, "C2": C2}, ["N", 4])
    net = load_model(path)
    assert kinds(net) == ["Affine", "Relu", "Affine"]
    first, second = net.affine(0), net.affine(1)
    assert first.name == "mm" and first.weight_ref.transposed and first.bias_ref.initializer == "b1"
    assert second.weight_ref.scale == 2.0 and second.bias_ref.scale == 0.5
    np.testing.assert_allclose(second.W, 2.0 * W2)
    np.testing.assert_allclose(second.b, 0.5 * C2.ravel())
    assert net.layers[1].name == "Relu_2"  # anonymous nodes are named {op}_{index}
    assert_matches_ort(net, path, f32(6, 4))


def test_elementwise_and_clip(write_model):
    mean, std = f32(1, 3), np.abs(f32(3)) + 0.5
    path = write_model([
        helper.make_node("Sub", ["x", "mean"], ["a"]),
        helper.make_node("Div", ["a", "std"], ["b"]),
        helper.make_node("Gemm", ["b", "W", "c"], ["h"], transB=1),
        helper.make_node("Clip", ["h", "lo", "hi"], ["k"]),
        helper.make_node("Mul", ["two", "k"], ["m"]),  # constant first: commutative, still fine
        helper.make_node("Sub", ["one", "m"], ["y"]),  # c - x: scale -1
    ], {"mean": mean, "std": std, "W": f32(4, 3), "c": f32(4), "lo": np.float32(-0.5), "hi": np.float32(0.7),
        "two": np.float32(2.0), "one": np.ones(4, np.float32)}, ["N", 3])
    net = load_model(path)
    assert kinds(net) == ["Elementwise", "Elementwise", "Affine", "Clip", "Elementwise", "Elementwise"]
    clip = net.layers[3]
    assert isinstance(clip, Clip) and (clip.lo, clip.hi) == pytest.approx((-0.5, 0.7))
    assert net.suffix_in_size == 3
    assert_matches_ort(net, path, f32(5, 3) * 3)


def test_clip_attributes_in_old_opsets_and_relu_like_clip(write_model):
    path = write_model([
        helper.make_node("Gemm", ["x", "W", "c"], ["h"], transB=1),
        helper.make_node("Clip", ["h"], ["k"], min=-1.0, max=1.0),
        helper.make_node("Clip", ["k"], ["r"], min=0.0),
        helper.make_node("Gemm", ["r", "W2", "c2"], ["y"], transB=1),
    ], {"W": f32(5, 3), "c": f32(5), "W2": f32(2, 5), "c2": f32(2)}, ["N", 3], opset=9, ir_version=4)
    net = load_model(path)
    assert kinds(net) == ["Affine", "Clip", "Relu", "Affine"]  # Clip(0, +inf) is a ReLU
    assert_matches_ort(net, path, f32(5, 3) * 3)


def test_weights_in_constant_nodes_and_derived_constants(write_model):
    W = f32(3, 4)
    path = write_model([
        helper.make_node("Constant", [], ["Wc"], value=helper.make_tensor("Wc", 1, W.shape, W.ravel())),
        helper.make_node("Transpose", ["Wt"], ["WtT"], perm=[1, 0]),
        helper.make_node("MatMul", ["x", "Wc"], ["h"]),
        helper.make_node("Relu", ["h"], ["r"]),
        helper.make_node("MatMul", ["r", "WtT"], ["y"]),
    ], {"Wt": f32(2, 4)}, ["N", 3])
    net = load_model(path)
    assert kinds(net) == ["Affine", "Relu", "Affine"]
    assert net.affine(0).weight_ref.initializer == "Wc" and net.affine(1).weight_ref.initializer == "WtT"
    assert net.affine(1).bias_ref is None and not np.any(net.affine(1).b)
    assert_matches_ort(net, path, f32(4, 3))


def test_constants_are_folded_with_the_models_opset(write_model):
    # Unsqueeze takes its axes as an attribute before opset 13; folding must not use the newest semantics.
    path = write_model([
        helper.make_node("Unsqueeze", ["c"], ["c2"], axes=[0]),
        helper.make_node("Gemm", ["x", "W", "c2"], ["y"], transB=1, name="g"),
    ], {"W": f32(2, 3), "c": f32(2)}, ["N", 3], opset=11, ir_version=6)
    net = load_model(path)
    assert net.affine(0).bias_ref.initializer == "c2"
    assert_matches_ort(net, path, f32(4, 3))


def test_identity_shape_ops_and_fixed_batch(write_model):
    path = write_model([
        helper.make_node("Reshape", ["x", "shape"], ["a"]),
        helper.make_node("Dropout", ["a"], ["b"]),
        helper.make_node("Gemm", ["b", "W", "c"], ["h"], transB=1),
        helper.make_node("Unsqueeze", ["h", "axes"], ["u"]),
        helper.make_node("Squeeze", ["u", "axes"], ["i"]),
        helper.make_node("Identity", ["i"], ["y"]),
    ], {"shape": np.array([1, 6], np.int64), "W": f32(2, 6), "c": f32(2), "axes": np.array([2], np.int64)},
        [1, 2, 3])
    net = load_model(path)
    assert kinds(net) == ["Affine"]
    assert net.batch_fixed and net.input_rank_has_batch and net.input_shape == (2, 3)
    assert_matches_ort(net, path, f32(7, 2, 3))  # OrtModel loops over the fixed batch


def test_input_without_batch_axis(write_model):
    path = write_model([
        helper.make_node("Unsqueeze", ["x", "axes"], ["u"]),
        helper.make_node("Gemm", ["u", "W", "c"], ["y"], transB=1),
    ], {"axes": np.array([0], np.int64), "W": f32(3, 4), "c": f32(3)}, [4])
    net = load_model(path)
    assert not net.input_rank_has_batch and net.input_shape == (4,)
    assert_matches_ort(net, path, f32(3, 4))


def test_unsupported_ops_become_an_opaque_prefix(write_model):
    path = write_model([
        helper.make_node("Gemm", ["x", "W0", "c0"], ["h0"], transB=1, name="first"),
        helper.make_node("Softplus", ["h0"], ["s"], name="smooth"),
        helper.make_node("Gemm", ["s", "W1", "c1"], ["h1"], transB=1, name="second"),
        helper.make_node("Relu", ["h1"], ["r"]),
        helper.make_node("Gemm", ["r", "W2", "c2"], ["y"], transB=1, name="last"),
    ], {"W0": f32(5, 3), "c0": f32(5), "W1": f32(4, 5), "c1": f32(4), "W2": f32(2, 4), "c2": f32(2)}, ["N", 3])
    net = load_model(path)
    assert net.layer_names() == ["second", "last"]  # 'first' is before the Softplus: not editable
    assert net.prefix is not None and "Softplus" in net.prefix.description and "smooth" in net.prefix.description
    assert net.suffix_in_size == 5
    assert_matches_ort(net, path, f32(6, 3))


def test_residual_branch_becomes_a_block(write_model):
    path = write_model([
        helper.make_node("Gemm", ["x", "W0", "c0"], ["h0"], transB=1),
        helper.make_node("Relu", ["h0"], ["r0"]),
        helper.make_node("Gemm", ["r0", "W1", "c1"], ["h1"], transB=1),
        helper.make_node("Add", ["h1", "r0"], ["res"], name="skip"),
        helper.make_node("Relu", ["res"], ["r1"]),
        helper.make_node("Gemm", ["r1", "W2", "c2"], ["y"], transB=1, name="head"),
    ], {"W0": f32(4, 3), "c0": f32(4), "W1": f32(4, 4), "c1": f32(4), "W2": f32(2, 4), "c2": f32(2)}, ["N", 3])
    net = load_model(path)
    # issue 11: a residual Add of two branches is part of the chain, not an opaque prefix; the branch's Gemm is
    # editable: lifted over its copy of the input (fork, lifted layer, sum; model/residual.py)
    assert kinds(net) == ["Affine", "Relu", "Linear", "Lifted", "Linear", "Relu", "Affine"] and net.prefix is None
    assert net.layers[2].name == "skip.fork" and net.layers[4].name == "skip.sum"
    assert len(net.layer_names()) == 3 and net.layer_names()[-1] == "head"
    assert_matches_ort(net, path, f32(6, 3))


# ----------------------------------------------------------------------------------------------- errors
def test_unsupported_last_op_is_reported_with_node_and_op(write_model):
    path = write_model([
        helper.make_node("Gemm", ["x", "W", "c"], ["h"], transB=1, name="dense"),
        helper.make_node("Softplus", ["h"], ["y"], name="final_softplus"),
    ], {"W": f32(2, 3), "c": f32(2)}, ["N", 3])
    with pytest.raises(ModelError) as info:
        load_model(path)
    assert "Softplus" in info.value.message and "final_softplus" in info.value.message
    assert info.value.help


def test_gemm_with_transposed_input_is_refused(write_model):
    path = write_model([helper.make_node("Gemm", ["x", "W"], ["y"], transA=1, name="g")], {"W": f32(3, 2)}, [3, 1])
    with pytest.raises(ModelError, match="transA"):
        load_model(path)


def test_network_without_affine_layer(write_model):
    path = write_model([helper.make_node("Relu", ["x"], ["y"])], {}, ["N", 3])
    with pytest.raises(ModelError, match="no affine"):
        load_model(path)


@pytest.mark.parametrize("name, content, pattern", [
    ("missing.onnx", None, "not found"),
    ("garbage.onnx", b"\x00\xffnot a model", "cannot read ONNX"),
    ("model.h5", b"x", "cannot tell the format"),
    ("short.nnet", b"// comment\n3,2,2,\n", "invalid NNet"),
])
def test_loader_errors(tmp_path: Path, name: str, content: bytes | None, pattern: str):
    path = tmp_path / name
    if content is not None:
        path.write_bytes(content)
    with pytest.raises(ModelError, match=pattern) as info:
        load_model(str(path))
    assert info.value.help


def test_loader_format_override(tmp_path: Path):
    src = (EXAMPLE_MODELS / "toy.onnx").read_bytes()
    path = tmp_path / "toy.bin"
    path.write_bytes(src)
    assert load_model(str(path), fmt="onnx", name="t").name == "t"


# ----------------------------------------------------------------------------------------------- shared benchmarks
def _benchmark_onnx_files(shared: Path) -> list[Path]:
    bench = shared / "benchmarks"
    files = sorted(bench.glob("*/onnx/*.onnx")) + sorted(bench.glob("*/*.onnx"))
    assert len(files) >= 45 + 1 + 2 + 1 + 2
    return files


@pytest.mark.shared
def test_every_benchmark_network_agrees_with_onnxruntime(shared_dir: Path):
    rng = np.random.default_rng(1)
    for path in _benchmark_onnx_files(shared_dir):
        net = load_model(str(path))
        scale = 255.0 if "watermark" in str(path) else 1.0  # mnist_wm takes raw pixels
        x = rng.uniform(0.0, scale, (3, *net.input_shape))
        assert_matches_ort(net, str(path), x, tol=2e-5)
        assert net.affine_indices(), path


@pytest.mark.shared
def test_benchmark_structure(shared_dir: Path):
    bench = shared_dir / "benchmarks"
    acas = load_model(str(bench / "acasxu/onnx/ACASXU_run2a_1_1_batch_2000.onnx"))
    assert acas.batch_fixed and acas.input_shape == (1, 1, 5) and len(acas.affine_indices()) == 7
    assert all(a.weight_ref.transposed and a.bias_ref for a in (acas.affine(k) for k in range(7)))
    wm = load_model(str(bench / "watermark_mnist/mnist_wm.onnx"))
    assert wm.input_shape == (28, 28, 1) and not wm.batch_fixed
    assert wm.affine(1).bias_ref is None and not np.any(wm.affine(1).b)
    cifar = load_model(str(bench / "cifar10/onnx/cifar_base_kw.onnx"))
    # issue 11: the convolutions are in the operator table (sparse affine maps), so nothing is opaque any more
    assert cifar.prefix is None and cifar.suffix_in_size == 3072 and len(cifar.affine_indices()) == 4
    assert [cifar.affine(k).op for k in range(2)] == ["Conv", "Conv"] and cifar.affine(0).kernel.shape == (8, 3, 4, 4)
    fc = load_model(str(bench / "mnist_fc/onnx/mnist-net_256x2.onnx"))
    assert fc.input_name == "0" and fc.input_shape == (784, 1) and not fc.affine(0).weight_ref.transposed


@pytest.mark.shared
def test_nnet_agrees_with_onnx_on_acasxu(shared_dir: Path):
    acas = shared_dir / "benchmarks" / "acasxu"
    x = np.random.default_rng(2).uniform(-0.5, 0.5, (20, 5))
    worst = 0.0
    for i in range(1, 6):
        for j in range(1, 10):
            nnet = load_model(str(acas / f"nnet/ACASXU_experimental_v2a_{i}_{j}.nnet"))
            onnx_net = load_model(str(acas / f"onnx/ACASXU_run2a_{i}_{j}_batch_2000.onnx"))
            worst = max(worst, float(np.abs(nnet.forward(x) - onnx_net.forward(x)).max()))
    assert worst <= 1e-5
    nnet = load_model(str(acas / "nnet/ACASXU_experimental_v2a_1_1.nnet"))
    assert nnet.source_format == "nnet" and nnet.proto is None and nnet.input_shape == (5,)
    np.testing.assert_allclose(nnet.metadata["input_mean"], [19791.091, 0, 0, 650, 600])
    np.testing.assert_allclose(nnet.metadata["input_range"][1], 2 * np.pi, rtol=1e-9)
    assert nnet.metadata["output_mean"] == pytest.approx(7.518884) and nnet.metadata["output_range"] == 373.94992
