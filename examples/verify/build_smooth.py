"""Build the smooth network of examples/verify/smooth.patch: 2 inputs -> 6 tanh -> 6 sigmoid -> 3 scores -> Softmax.

Sigmoid and Tanh are bounded for `verify` (sound tangent/chord relaxations, input splitting) but have no exact
encoding; the final Softmax is stripped on import (labels are decided by the logits before it).  Weights are written
out here (no training, no random numbers), so the answers in the .patch file are the same on every machine.
Run from anywhere: ``python examples/verify/build_smooth.py``.
"""

from pathlib import Path

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

W1 = np.array([[1.5, 0.5], [-1.5, 0.5], [0.5, 1.5], [0.5, -1.5], [1.0, 1.0], [-1.0, -1.0]])
b1 = np.array([0.0, 0.0, -0.25, -0.25, -0.5, 0.5])
W2 = np.array([[2.0, 0.0, 1.0, 0.0, 1.0, 0.0],
               [0.0, 2.0, 0.0, 1.0, 0.0, 1.0],
               [1.0, 1.0, 2.0, 0.0, 0.0, 0.0],
               [0.0, 0.0, 0.0, 2.0, 2.0, 0.0],
               [-1.0, 1.0, 0.0, 0.0, 0.0, 2.0],
               [1.0, -1.0, 1.0, -1.0, 0.0, 0.0]])
b2 = np.array([0.0, 0.2, -0.2, 0.0, 0.0, 0.2])
W3 = np.array([[2.0, -1.0, 0.0, 1.0, -2.0, 1.0],
               [-1.0, 2.0, 1.0, -1.0, 1.0, 0.0],
               [0.0, 0.0, 2.0, 2.0, 0.0, -2.0]])
b3 = np.array([0.2, 0.0, -1.2])


def model() -> onnx.ModelProto:
    inits = {"W1": W1, "b1": b1, "W2": W2, "b2": b2, "W3": W3, "b3": b3}
    nodes = [helper.make_node("Gemm", ["x", "W1", "b1"], ["h1"], transB=1, name="fc1"),
             helper.make_node("Tanh", ["h1"], ["t1"], name="tanh1"),
             helper.make_node("Gemm", ["t1", "W2", "b2"], ["h2"], transB=1, name="fc2"),
             helper.make_node("Sigmoid", ["h2"], ["s2"], name="sigmoid2"),
             helper.make_node("Gemm", ["s2", "W3", "b3"], ["logits"], transB=1, name="fc3"),
             helper.make_node("Softmax", ["logits"], ["y"], name="probs", axis=-1)]
    graph = helper.make_graph(
        nodes, "smooth", [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["N", 2])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["N", 3])],
        [numpy_helper.from_array(np.asarray(v, np.float32), k) for k, v in inits.items()])
    m = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)])
    m.ir_version = 8
    return m


def main() -> None:
    out = Path(__file__).resolve().parent / "smooth.onnx"
    onnx.save(model(), str(out))
    print(f"wrote {out}")


if __name__ == "__main__":
    main()
