"""IR -> a fresh ONNX model, for networks that have no file of their own (NNet imports, built-in examples).

Networks imported from ONNX are never rebuilt: they are written by patching a copy of their own proto
(:mod:`.onnx_export`).  Here the layout is fixed and simple: an optional ``Flatten``, ``Gemm`` with ``transB=1``
(``W`` stored ``[out, in]`` exactly as in the IR), ``Relu``, ``Clip``, ``Mul``+``Add`` for elementwise layers, and
a dynamic batch axis ``N``.  The IR version is always set explicitly because onnx 1.23 would otherwise write
IR 14, which onnxruntime rejects.
"""

from __future__ import annotations

from typing import Sequence

import numpy as np

from ..errors import ModelError
from .ir import Affine, Clip, Layer, Network, ParamRef, Relu
from .ops import op_of


class _GraphWriter:
    """Accumulates nodes and float32 initializers with unique, readable names."""

    def __init__(self, input_name: str, opset: int):
        self.nodes: list = []
        self.initializers: list = []
        self.opset = opset
        self.tensor = input_name
        self.used: set[str] = {input_name}

    def unique(self, base: str) -> str:
        name, k = base, 1
        while name in self.used:
            name, k = f"{base}_{k}", k + 1
        self.used.add(name)
        return name

    def constant(self, name: str, value: np.ndarray) -> str:
        from onnx import numpy_helper

        name = self.unique(name)
        self.initializers.append(numpy_helper.from_array(np.asarray(value, dtype=np.float32), name))
        return name

    def constant_int64(self, name: str, value) -> str:
        """An int64 initializer (axes, depths): the few ONNX inputs that must not be float."""
        from onnx import numpy_helper

        name = self.unique(name)
        self.initializers.append(numpy_helper.from_array(np.asarray(value, dtype=np.int64), name))
        return name

    def node(self, op: str, name: str, extra_inputs: Sequence[str] = (), **attrs) -> None:
        """Append ``op`` reading the current tensor (plus ``extra_inputs``); its output becomes current."""
        from onnx import helper

        out = self.unique(f"{name}_out")
        self.nodes.append(helper.make_node(op, [self.tensor, *extra_inputs], [out], name=name, **attrs))
        self.tensor = out

    def layer(self, layer: Layer) -> tuple[str, str] | None:
        """Add the nodes of one layer (the operator table says which); for an affine layer return its (weight,
        bias) initializer names."""
        return op_of(layer).to_onnx(layer, self, self.unique(layer.name or type(layer).__name__.lower()))

    def clip(self, layer: Clip, name: str) -> None:
        """Clip's bounds are attributes before opset 11 and optional inputs since; infinite bounds are omitted."""
        bounds = {"min": layer.lo, "max": layer.hi}
        finite = {k: float(v) for k, v in bounds.items() if np.isfinite(v)}
        if self.opset < 11:
            self.node("Clip", name, **finite)
        else:
            inputs = [self.constant(f"{name}.{k}", np.array(finite[k])) if k in finite else "" for k in ("min", "max")]
            while inputs and not inputs[-1]:
                inputs.pop()
            self.node("Clip", name, inputs)


def _build(layers: list[Layer], input_shape: tuple[int, ...], input_name: str, output_name: str,
           opset: int, ir_version: int):
    """The model and, per affine layer, the names of its weight and bias initializers."""
    from onnx import TensorProto, checker, helper

    writer = _GraphWriter(input_name, opset)
    writer.used.add(output_name)
    if len(input_shape) > 1:
        writer.node("Flatten", writer.unique("flatten"), axis=1)
    refs = [r for r in (writer.layer(layer) for layer in layers) if r is not None]
    out_size = next((l.out_size for l in reversed(layers) if isinstance(l, Affine)), int(np.prod(input_shape)))
    # Rename the last tensor to the requested output name (an Identity when there is no node to rename).
    if writer.nodes:
        writer.nodes[-1].output[0] = output_name
    else:
        writer.nodes.append(helper.make_node("Identity", [input_name], [output_name], name="identity"))
    graph = helper.make_graph(
        writer.nodes, "patchlang",
        [helper.make_tensor_value_info(input_name, TensorProto.FLOAT, ["N", *input_shape])],
        [helper.make_tensor_value_info(output_name, TensorProto.FLOAT, ["N", out_size])],
        writer.initializers)
    model = helper.make_model(graph, producer_name="patchlang", opset_imports=[helper.make_opsetid("", opset)])
    model.ir_version = ir_version
    checker.check_model(model)
    return model, refs


def build_onnx(layers: list[Layer], input_shape: tuple[int, ...], input_name: str = "input",
               output_name: str = "output", opset: int = 13, ir_version: int = 8):
    """A new ``onnx.ModelProto`` computing ``layers`` (no prefix) on inputs of per-sample shape ``input_shape``."""
    return _build(layers, tuple(input_shape), input_name, output_name, opset, ir_version)[0]


_ACTIVATIONS = {"relu": lambda k: Relu(f"relu_{k}"), "hardtanh": lambda k: Clip(-1.0, 1.0, f"hardtanh_{k}"),
                "linear": None}


def network_from_arrays(weights: list[np.ndarray], biases: list[np.ndarray], activation: str = "relu",
                        name: str = "net", input_shape: tuple[int, ...] | None = None) -> Network:
    """A network from ``W`` (shape ``(out, in)``) and ``b`` lists, with its ONNX proto so it saves like an import.

    ``activation`` (``relu``, ``hardtanh`` or ``linear``) goes between consecutive affine layers.  Parameters are
    rounded to float32 so that the float64 IR computes exactly what the written file computes.
    """
    if activation not in _ACTIVATIONS:
        raise ModelError(f"unknown activation '{activation}'", help=f"use one of {', '.join(_ACTIVATIONS)}")
    if len(weights) != len(biases) or not weights:
        raise ModelError("network_from_arrays needs one bias per weight matrix and at least one layer")
    layers: list[Layer] = []
    for k, (W, b) in enumerate(zip(weights, biases)):
        if k and _ACTIVATIONS[activation] is not None:
            layers.append(_ACTIVATIONS[activation](k - 1))
        W32 = np.asarray(W, dtype=np.float32).astype(np.float64)
        b32 = np.asarray(b, dtype=np.float32).astype(np.float64).reshape(-1)
        if W32.ndim != 2 or b32.size != W32.shape[0]:
            raise ModelError(f"layer {k}: weight of shape {W32.shape} and bias of size {b32.size} do not match")
        layers.append(Affine(W=W32, b=b32, name=f"layer_{k}"))
    shape = tuple(input_shape) if input_shape is not None else (layers[0].in_size,)
    proto, refs = _build(layers, shape, "input", "output", 13, 8)
    for layer, (w, b) in zip((l for l in layers if isinstance(l, Affine)), refs):
        layer.weight_ref = ParamRef(w, stored_shape=layer.W.shape)
        layer.bias_ref = ParamRef(b, stored_shape=layer.b.shape)
    return Network(name=name, input_name="input", input_shape=shape, layers=layers, proto=proto,
                   source_format="builtin",
                   metadata={"onnx_affine_outputs": _affine_outputs(proto), "ir_version": 8, "opset": 13})


def _affine_outputs(proto) -> list[str]:
    return [n.output[0] for n in proto.graph.node if n.op_type == "Gemm"]


GraphWriter = _GraphWriter  # public: model.combine writes a shared prefix and several heads with it
