"""Build the smooth network of examples/verify/smooth.patch: 2 inputs -> 6 tanh -> 6 sigmoid -> 3 scores -> Softmax.

Sigmoid and Tanh are bounded for `verify` (sound tangent/chord relaxations, input splitting) but have no exact
encoding; the final Softmax is stripped on import (labels are decided by the logits before it).  Weights are written
out here (no training, no random numbers), so the answers in the .patch file are the same on every machine.
Run from anywhere: ``python examples/verify/build_smooth.py``.
"""

import sys
from pathlib import Path

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

sys.path.insert(0, str(Path(__file__).resolve().parent))

from build_net import W1 as _W1, W2 as _W2, W3 as _W3, b1, b2 as _b2, b3 as _b3  # noqa: E402 (same folder)

# the tiny ReLU network's weights, steeper: the S-curves matter on the unit square
W1, W2, W3 = 1.5 * _W1, 2.0 * _W2, 2.0 * _W3
b2, b3 = 2.0 * _b2, 2.0 * _b3


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
