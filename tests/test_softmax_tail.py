"""A model ending in Softmax/LogSoftmax after its last Gemm (issue 11, item 2).

The monotone tail never changes the label, so the importer strips it (the IR computes the logits) and every label
statement works as on the logits; the report says so; statements over output values are PL302 naming the node;
written files keep the node; every onnxruntime check reads the logits of the file, like the IR.
"""

from __future__ import annotations

import numpy as np
import onnx
import pytest
from onnx import helper, numpy_helper

from conftest import make_model
from patchlang.api import load_program_text, run_program
from patchlang.errors import SpecError
from patchlang.model.onnx_import import load_onnx
from patchlang.model.runtime import ort_outputs
from patchlang.tasks.patch import RunOptions

W1 = np.array([[1.0, -1.0], [0.5, 1.0], [-1.0, 0.3]], np.float32)
W2 = np.array([[1.0, 0.0, -1.0], [0.0, 1.0, 0.5], [-0.5, 0.2, 1.0]], np.float32)


def _model(tmp_path, tail="Softmax", opset=13):
    nodes = [helper.make_node("Gemm", ["x", "W1", "b1"], ["h"], transB=1, name="fc1"),
             helper.make_node("Relu", ["h"], ["r"], name="relu"),
             helper.make_node("Gemm", ["r", "W2", "b2"], ["logits"], transB=1, name="fc2"),
             helper.make_node(tail, ["logits"], ["y"], name="probs")]
    inits = {"W1": W1, "b1": np.zeros(3, np.float32), "W2": W2, "b2": np.zeros(3, np.float32)}
    onnx.save(make_model(nodes, inits, ["N", 2], opset=opset), str(tmp_path / "m.onnx"))
    return str(tmp_path / "m.onnx")


def _logits(x):
    return np.maximum(x @ W1.T.astype(np.float64), 0) @ W2.T.astype(np.float64)


@pytest.mark.parametrize("tail", ["Softmax", "LogSoftmax"])
def test_the_tail_is_stripped_and_the_labels_are_the_same(tmp_path, tail):
    path = _model(tmp_path, tail)
    net = load_onnx(path)
    assert net.tail["op"] == tail and net.tail["node"] == "probs"
    assert net.layer_names() == ["fc1", "fc2"]
    X = np.random.default_rng(0).uniform(-2, 2, (50, 2))
    assert np.allclose(net.forward(X), _logits(X))
    raw = ort_outputs(path, X.astype(np.float32))  # onnxruntime checks read the logits of the file too
    assert np.allclose(raw, _logits(X), atol=1e-5)
    import onnxruntime as ort

    probs = ort.InferenceSession(path, providers=["CPUExecutionProvider"]).run(None, {"x": X.astype(np.float32)})[0]
    assert np.array_equal(np.argmax(probs, axis=1), net.labels(X))


def test_verify_and_patch_on_labels_keep_the_node_in_the_written_file(tmp_path):
    _model(tmp_path)
    src = ('model m = "m.onnx"\npoints p = [[1.0, 0.5]]\npoints q = [[-1.0, 1.0], [0.5, -1.0]]\n'
           "property robust { input within linf 0.01 of q ensure label stays }\n"
           "verify m satisfies robust\n"
           'patch fix on m {\n  edit layer "fc2" biases\n  change p to 1\n  keep q\n  minimize linf\n'
           '  save "fixed.onnx"\n}\n')
    result = run_program(load_program_text(src, tmp_path), RunOptions())
    v, p = result.tasks
    assert v.status == "holds", v.message
    assert p.status == "patched", p.message
    for r in (v, p):
        assert any("Softmax node 'probs'" in n and "logits" in n for n in r.notes)
    written = onnx.load(str(tmp_path / "fixed.onnx"))
    assert [n.op_type for n in written.graph.node][-1] == "Softmax"
    import onnxruntime as ort

    sess = ort.InferenceSession(str(tmp_path / "fixed.onnx"), providers=["CPUExecutionProvider"])
    probs = sess.run(None, {"x": np.array([[1.0, 0.5]], np.float32)})[0]
    assert np.argmax(probs[0]) == 1 and abs(float(probs.sum()) - 1.0) < 1e-5
    # golden: only b2 moved, by the least L-inf that makes logit 1 the largest at p
    b2 = {i.name: numpy_helper.to_array(i) for i in written.graph.initializer}["b2"]
    z = _logits(np.array([1.0, 0.5]))
    assert abs(float(np.abs(b2).max()) - (z.max() - z[1]) / 2) < 1e-3


@pytest.mark.parametrize("stmt", [
    "property p { input box lo [0, 0] hi [1, 1] ensure y[0] <= 0.9 }\nverify m satisfies p\n",
    'points q = [[1.0, 0.5]]\npatch f on m {\n  edit layer "fc2" biases\n  keep q outputs within 0.1\n'
    "  minimize linf\n}\n",
    'points q = [[1.0, 0.5]]\npatch f on m {\n  edit layer "fc2" biases\n  require q: y[1] >= 0.5\n'
    "  minimize linf\n}\n",
])
def test_statements_over_output_values_are_pl302_naming_the_node(tmp_path, stmt):
    _model(tmp_path)
    with pytest.raises(SpecError) as err:
        load_program_text('model m = "m.onnx"\n' + stmt, tmp_path)
    d = err.value.diagnostics[0]
    assert d.code == "PL302" and "Softmax node 'probs'" in d.message and d.help
    # comparisons between outputs are fine
    load_program_text('model m = "m.onnx"\nproperty p { input box lo [0, 0] hi [1, 1] ensure y[0] >= y[1] }\n'
                      "verify m satisfies p\n", tmp_path)


def test_a_softmax_over_another_axis_is_refused(tmp_path):
    nodes = [helper.make_node("Gemm", ["x", "W", "b"], ["h"], transB=1, name="fc"),
             helper.make_node("Reshape", ["h", "shape"], ["r"], name="rs"),
             helper.make_node("Softmax", ["r"], ["y"], name="sm", axis=1)]
    inits = {"W": np.ones((4, 2), np.float32), "b": np.zeros(4, np.float32),
             "shape": np.array([-1, 2, 2], np.int64)}
    onnx.save(make_model(nodes, inits, ["N", 2]), str(tmp_path / "a.onnx"))
    from patchlang.errors import ModelError

    with pytest.raises(ModelError) as err:
        load_onnx(str(tmp_path / "a.onnx"))
    assert err.value.code == "PL302" and "'sm'" in err.value.message
