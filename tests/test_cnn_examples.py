"""The convolutional examples (examples/cnn, model examples/models/digits_cnn.onnx built by build_cnn.py).

What they show, with known answers: a patch of the dense layer after the convolutions (an LP; the written file keeps
its graph and only that layer's initializers change), robustness around a test image (a checked counterexample at
radius 0.15; at 0.02 a proof once the convolutions are encoded, else "unknown" with the reason, never "holds"), and
a repair that must end in a proof (refused by `check` while the convolutions cannot be encoded).  Nothing trains.
"""

from __future__ import annotations

import json
import pickle
import sys
from pathlib import Path

import numpy as np
import onnx
import pytest
from onnx import numpy_helper

from patchlang.cli import main
from patchlang.model.loader import load_model
from patchlang.model.runtime import ort_outputs
from patchlang.tasks.falsify_only import unencodable

REPO = Path(__file__).resolve().parents[1]
MODELS = REPO / "examples" / "models"
CNN = MODELS / "digits_cnn.onnx"


def encodable() -> bool:
    return unencodable(load_model(str(CNN))) is None


def run(spec: Path, tmp: Path, capsys) -> tuple[int, dict, str]:
    code = main(["run", str(spec), "--json", str(tmp / "r.json")])
    out = capsys.readouterr()
    return code, json.loads((tmp / "r.json").read_text()), out.out + out.err

def changed_initializers(written_path: Path) -> set[str]:
    """The initializers a patched file changed against the CNN, after asserting it kept the graph's nodes."""
    written, original = onnx.load(str(written_path)), onnx.load(str(CNN))
    assert [n.op_type for n in written.graph.node] == [n.op_type for n in original.graph.node]
    before = {t.name: numpy_helper.to_array(t) for t in original.graph.initializer}
    after = {t.name: numpy_helper.to_array(t) for t in written.graph.initializer}
    return {name for name in before if not np.array_equal(before[name], after[name])}



@pytest.mark.parametrize("name,ops,accuracy", [
    ("digits_cnn.onnx", ["Conv", "Relu", "Conv", "Relu", "Flatten", "Gemm"], 0.9229),
    ("digits_cnn_pool.onnx", ["Conv", "Relu", "MaxPool", "Conv", "Relu", "Flatten", "Gemm"], 0.9263)])
def test_committed_models_are_the_documented_cnns(name, ops, accuracy):
    path = MODELS / name
    model = onnx.load(str(path))
    assert [n.op_type for n in model.graph.node] == ops
    assert {"conv1", "conv2", "fc"} <= {n.name for n in model.graph.node}
    assert model.opset_import[0].version == 13 and path.stat().st_size < 10_000
    data = np.load(MODELS / "digits_test.npz")
    y = ort_outputs(str(path), data["x"].reshape(-1, 1, 8, 8))
    assert np.mean(np.argmax(y, axis=1) == data["y"]) == pytest.approx(accuracy, abs=1e-4)  # build_cnn.py's figure


def test_patch_after_a_max_pooling(tmp_path):
    """The pooled CNN's dense layer is patched like any last layer (an LP), and the patch is checked on the file."""
    from patchlang.api import RunOptions, load_program_text, run_program

    src = ('model net = "digits_cnn_pool.onnx"\npoints test = "digits_test.npz"\n'
           "points wrong = test[0:100] where misclassified(net)\npoints good = test[0:100] where correct(net)\n"
           'patch fix on net {\n  edit layer "fc" biases\n  change wrong to label\n  keep good\n'
           '  minimize linf\n  save "fixed.onnx"\n}\n')
    for f in ("digits_cnn_pool.onnx", "digits_test.npz"):
        (tmp_path / f).write_bytes((MODELS / f).read_bytes())
    result = run_program(load_program_text(src, tmp_path), RunOptions()).tasks[0]
    assert result.problem_class == "LP" and result.status == "patched", result.message
    assert result.objective == pytest.approx(4.38524, rel=1e-4)  # biases alone: a large move (known answer)
    data = np.load(MODELS / "digits_test.npz")
    y = ort_outputs(str(tmp_path / "fixed.onnx"), data["x"][:100])
    assert np.array_equal(np.argmax(y, axis=1), data["y"][:100])


def test_network_with_an_onnxruntime_prefix_pickles(tmp_path):
    """The result cache and worker processes pickle networks; a prefix run by onnxruntime must survive it."""
    net = load_model(str(CNN))
    x = np.load(MODELS / "digits_test.npz")["x"][:5]
    again = pickle.loads(pickle.dumps(net))
    assert np.array_equal(again.forward(x), net.forward(x))


def test_patch_of_the_dense_layer_after_the_convolutions(examples_copy, tmp_path, capsys):
    code, report, out = run(examples_copy / "cnn" / "patch.patch", tmp_path, capsys)
    assert code == 0, out
    task = report["tasks"][0]
    assert task["status"] == "patched" and task["class"] == "LP"
    assert task["objective"] == pytest.approx(0.0283756, rel=1e-4)  # known answer (HiGHS, proven optimal)
    assert changed_initializers(examples_copy / "cnn" / "out" / "digits_cnn_fixed.onnx") == {"fc.weight", "fc.bias"}
    data = np.load(MODELS / "digits_test.npz")
    y = ort_outputs(str(examples_copy / "cnn" / "out" / "digits_cnn_fixed.onnx"), data["x"][:300])
    assert np.array_equal(np.argmax(y, axis=1), data["y"][:300])  # independently: all 300 right


def test_verify_robustness(examples_copy, tmp_path, capsys):
    code, report, out = run(examples_copy / "cnn" / "verify.patch", tmp_path, capsys)
    small, large = report["tasks"]
    assert code == 1 and large["status"] == "violated", out
    x = np.load(examples_copy / "cnn" / "out" / "robust_large_cex.npy").astype(np.float32)
    centre = np.load(MODELS / "digits_test.npz")["x"][0]
    assert x.shape == (1, 8, 8) and np.all(np.abs(x.reshape(-1) - centre) <= 0.15 + 1e-6)
    assert np.all((x >= 0) & (x <= 1))
    assert np.argmax(ort_outputs(str(CNN), x.reshape(1, 1, 8, 8))[0]) != 7  # on the file, independently
    assert small["status"] == "holds", small["message"]  # the convolutions are encoded: a proof, not a search


def test_the_cnn_is_encoded_whole():
    assert encodable()  # Conv, Relu, Flatten, Gemm: nothing is left to an opaque prefix


def test_repair_ends_in_a_proof(examples_copy, tmp_path, capsys):
    code, report, out = run(examples_copy / "cnn" / "repair.patch", tmp_path, capsys)
    assert code == 0 and report["tasks"][0]["status"] == "repaired", out


def test_conv_kernel_patch_changes_only_conv2(examples_copy, tmp_path, capsys):
    code, report, out = run(examples_copy / "cnn" / "conv.patch", tmp_path, capsys)
    task = report["tasks"][0]
    assert code == 0 and task["status"] == "patched" and task["class"] == "MILP", out
    changed = changed_initializers(examples_copy / "cnn" / "out" / "digits_cnn_conv2.onnx")
    conv2 = [n for n in onnx.load(str(CNN)).graph.node if n.op_type == "Conv"][1]
    assert changed and changed <= set(conv2.input[1:])  # only conv2's kernel and bias moved
    data = np.load(MODELS / "digits_test.npz")
    x, y = data["x"][:300], data["y"][:300]
    before_ok = np.argmax(ort_outputs(str(CNN), x.reshape(-1, 1, 8, 8)), axis=1) == y
    after_pred = np.argmax(ort_outputs(str(examples_copy / "cnn" / "out" / "digits_cnn_conv2.onnx"),
                                       x.reshape(-1, 1, 8, 8)), axis=1)
    wrong, good = np.flatnonzero(~before_ok)[:2], np.flatnonzero(before_ok)[:30]
    assert np.array_equal(after_pred[wrong], y[wrong]) and np.array_equal(after_pred[good], y[good])


# ---------------------------------------------------------------------------------------- the training script


def _build_cnn():
    sys.path.insert(0, str(MODELS))
    try:
        import build_cnn
    finally:
        sys.path.remove(str(MODELS))
    return build_cnn


def test_training_script_says_how_to_get_the_train_extra(monkeypatch):
    build_cnn = _build_cnn()
    monkeypatch.setitem(sys.modules, "jax", None)  # as if jax were not installed
    with pytest.raises(SystemExit) as exc:
        build_cnn.train(np.zeros((2, 64), np.float32), np.zeros(2, np.int64))
    assert "train" in str(exc.value) and "pip install" in str(exc.value)


def test_exported_graph_computes_what_was_trained():
    """The ONNX graph (onnx.helper) and the JAX forward pass agree on random parameters: what is trained is what
    is written."""
    jax = pytest.importorskip("jax")
    build_cnn = _build_cnn()
    rng = np.random.default_rng(0)
    for pool in (False, True):
        flat = build_cnn.FLAT_POOL if pool else build_cnn.FLAT
        shapes = {"conv1.weight": build_cnn.CONV1, "conv1.bias": (4,), "conv2.weight": build_cnn.CONV2,
                  "conv2.bias": (8,), "fc.weight": (10, flat), "fc.bias": (10,)}
        params = {k: rng.standard_normal(s).astype(np.float32) for k, s in shapes.items()}
        x = rng.random((7, 1, 8, 8)).astype(np.float32)
        expected = np.asarray(build_cnn.forward(params, x, jax.numpy, jax.lax, pool))
        got = ort_outputs(build_cnn.cnn_onnx(params, pool=pool), x)
        assert np.allclose(got, expected, rtol=1e-4, atol=1e-4), pool
