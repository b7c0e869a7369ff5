"""Combining per-class experts (NNrepair) into one standard ONNX network, and the same combination in float64.

The experts are copies of one network that differ from some layer position ``s`` on (the first edited layer), so
the combined model runs the shared prefix ``layers[:s]`` once and every expert's head ``layers[s:]`` on its output.
The rule that picks the answer is written with ordinary ONNX operators, so any runtime runs the file:

* ``naive``: the original network's decision ``l`` picks expert ``l``'s outputs (a class without an expert uses the
  original head): ArgMax, OneHot, Mul, ReduceSum;
* ``confidence``: the most confident expert answers, confidence being the margin of its decision (its largest
  output minus its second largest; a softmax saturates to 1.0 in float32 and would tie): TopK, Mul, ReduceSum,
  ArgMax, OneHot, ...;
* ``voting``: each expert votes for its decision; the outputs are the votes plus half the original's softmax (which
  breaks ties and never outweighs a vote): ArgMax, OneHot, ReduceSum, Softmax, Add;
* ``merged``: one network whose parameters are the original's plus every expert's change (disjoint for
  last-layer experts, which each move the row of their own class): no overhead at all.

:func:`combine64` computes the same thing in float64 from the IR; the experts task checks the file against it.
"""

from __future__ import annotations

from dataclasses import replace

import numpy as np

from ..errors import ModelError
from .build import GraphWriter
from .ir import Affine, Network, decide

RULES = ("naive", "confidence", "voting", "merged")
OPSET = 13


def shared_start(original: Network, heads: list[Network]) -> int:
    """The first layer position whose parameters differ in some head (the last affine layer if none does)."""
    idx = original.affine_indices()
    for pos in idx:
        a = original.layers[pos]
        for h in heads:
            b = h.layers[pos]
            if not (np.array_equal(a.W, b.W) and np.array_equal(a.b, b.b)):
                return pos
    return idx[-1]


def merged_network(original: Network, heads: list[Network]) -> Network:
    """The original plus the sum of every head's parameter change."""
    out = original
    for k, pos in enumerate(original.affine_indices()):
        base: Affine = original.layers[pos]
        dW = sum((h.layers[pos].W - base.W for h in heads), np.zeros_like(base.W))
        db = sum((h.layers[pos].b - base.b for h in heads), np.zeros_like(base.b))
        if np.any(dW) or np.any(db):
            out = out.with_affine(k, W=base.W + dW, b=base.b + db)
    return out


def _softmax(z: np.ndarray, axis: int = -1) -> np.ndarray:
    e = np.exp(z - z.max(axis=axis, keepdims=True))
    return e / e.sum(axis=axis, keepdims=True)


def combine64(original: Network, heads: list[Network], rule: str, x: np.ndarray) -> np.ndarray:
    """The combination's outputs in float64.  ``heads``: for ``naive`` one per class (in class order), else the
    experts; with no head the original answers."""
    if rule == "merged":
        return merged_network(original, heads).forward(x)
    if not heads:
        return original.forward(x)
    s = shared_start(original, heads)
    h = original.forward_suffix(original.to_suffix_input(x), 0, s)
    outs = np.stack([head.forward_suffix(h, s) for head in heads])  # (K, N, n_out)
    rows = np.arange(outs.shape[1])
    if rule == "naive":
        return outs[decide(original.forward_suffix(h, s), original.decision), rows]
    if rule == "confidence":
        top2 = np.sort(outs, axis=2)[:, :, -2:]
        return outs[np.argmax(top2[:, :, 1] - top2[:, :, 0], axis=0), rows]
    if rule == "voting":
        n_out = outs.shape[2]
        votes = np.eye(n_out)[np.argmax(outs, axis=2)].sum(axis=0)
        return votes + 0.5 * _softmax(original.forward_suffix(h, s))
    raise ValueError(f"unknown combination {rule!r}")


def combination_onnx(original: Network, heads: list[Network], rule: str):
    """The combination as a standard ``onnx.ModelProto`` (opset 13, dynamic batch)."""
    from onnx import TensorProto, checker, helper

    from .build import build_onnx

    if original.prefix is not None:
        raise ModelError("a network with an opaque prefix cannot be combined into one file here",
                         help="combine experts of networks made of dense layers")
    if rule == "merged" or not heads:
        net = merged_network(original, heads) if rule == "merged" else original
        return build_onnx(net.layers, original.input_shape, input_name="input")
    if original.decision != "argmax":
        raise ModelError("combinations are defined for argmax classifiers")
    s = shared_start(original, heads)
    w = GraphWriter("input", OPSET)
    w.used.add("output")
    if len(original.input_shape) > 1:
        w.node("Flatten", w.unique("flatten"), axis=1)
    for layer in original.layers[:s]:
        w.layer(layer)
    shared = w.tensor

    def head(net: Network, name: str) -> str:
        w.tensor = shared
        for layer in net.layers[s:]:
            w.layer(replace(layer, name=f"{name}_{layer.name}"))
        return w.tensor

    def op(kind: str, inputs: list[str], name: str, **attrs) -> str:
        out = w.unique(f"{name}_out")
        w.nodes.append(helper.make_node(kind, inputs, [out], name=w.unique(name), **attrs))
        return out

    axes = {a: w.constant_int64(f"axes_{a}", [a]) for a in (1, 2)}
    stacked = op("Concat", [op("Unsqueeze", [head(h, f"expert{k}"), axes[1]], f"unsqueeze{k}")
                            for k, h in enumerate(heads)], "stack", axis=1)  # (N, K, n_out)
    n_out = original.output_size
    onehot_values = w.constant("onehot_values", np.array([0.0, 1.0]))

    def select(index: str) -> str:
        mask = op("OneHot", [index, w.constant_int64("depth_k", len(heads)), onehot_values], "onehot_expert", axis=-1)
        picked = op("Mul", [stacked, op("Unsqueeze", [mask, axes[2]], "mask3")], "pick")
        return op("ReduceSum", [picked, axes[1]], "select", keepdims=0)

    if rule == "naive":
        result = select(op("ArgMax", [head(original, "original")], "original_label", axis=1, keepdims=0))
    elif rule == "confidence":
        top2 = w.unique("top2_out")
        w.nodes.append(helper.make_node("TopK", [stacked, w.constant_int64("k2", [2])], [top2, w.unique("top2_idx")],
                                        name=w.unique("top2"), axis=2))
        signed = op("Mul", [top2, w.constant("first_minus_second", np.array([1.0, -1.0]))], "signed")
        conf = op("ReduceSum", [signed, axes[2]], "confidence", keepdims=0)
        result = select(op("ArgMax", [conf], "most_confident", axis=1, keepdims=0))
    elif rule == "voting":
        labels = op("ArgMax", [stacked], "expert_labels", axis=2, keepdims=0)
        ballots = op("OneHot", [labels, w.constant_int64("depth_out", n_out), onehot_values], "ballots", axis=-1)
        votes = op("ReduceSum", [ballots, axes[1]], "votes", keepdims=0)
        tie = op("Mul", [op("Softmax", [head(original, "original")], "original_softmax", axis=1),
                         w.constant("half", np.array(0.5))], "tie_break")
        result = op("Add", [votes, tie], "voted")
    else:
        raise ValueError(f"unknown combination {rule!r}")
    w.nodes.append(helper.make_node("Identity", [result], ["output"], name=w.unique("output")))
    graph = helper.make_graph(
        w.nodes, f"patchlang_experts_{rule}",
        [helper.make_tensor_value_info("input", TensorProto.FLOAT, ["N", *original.input_shape])],
        [helper.make_tensor_value_info("output", TensorProto.FLOAT, ["N", n_out])], w.initializers)
    model = helper.make_model(graph, producer_name="patchlang", opset_imports=[helper.make_opsetid("", OPSET)])
    model.ir_version = 8
    checker.check_model(model)
    return model
