"""IR -> ONNX file: write a patch back by replacing parameter values in a copy of the original proto.

Why not rebuild the model: users diff, deploy and re-verify the patched file with their own tools, so everything
the patch did not touch (node names, other initializers, opset, IR version, metadata, the prefix) must stay
byte-for-byte the same.  Each affine layer's :class:`~patchlang.model.ir.ParamRef` says which tensor its
parameters came from and how (transpose, Gemm ``alpha``/``beta``); the inverse is applied and the tensor replaced
only if its value actually changed.  A bias that did not exist in the file gets a new initializer and an ``Add``.
"""

from __future__ import annotations

import numpy as np

from ..errors import ModelError
from ..files import write_atomic
from .ir import Linear, Network, ParamRef
from .layers import Lifted
from .onnx_import import evaluate_node


# --------------------------------------------------------------------------------------------------- tensors
class _TensorStore:
    """Reads and replaces the tensors ParamRefs name in a (copied) model: initializers, Constant nodes, or
    tensors the importer folded from constants ("derived"; they get a fresh initializer and their readers are
    rewired to it)."""

    def __init__(self, model, derived: dict[str, np.ndarray]):
        graph = model.graph
        self.model = model
        self.initializers = {t.name: k for k, t in enumerate(graph.initializer)}
        self.constants = {n.output[0]: n for n in graph.node if n.op_type == "Constant"}
        self.derived = derived
        self.names = ({t.name for t in graph.initializer} | {vi.name for vi in graph.input}
                      | {n.name for n in graph.node} | {t for n in graph.node for t in (*n.input, *n.output)})
        self.written: dict[str, np.ndarray] = {}

    def unique(self, base: str) -> str:
        name, k = base, 1
        while name in self.names:
            name, k = f"{base}_{k}", k + 1
        self.names.add(name)
        return name

    def read(self, name: str) -> np.ndarray | None:
        """The tensor's current value (``None`` for a derived tensor the importer did not record)."""
        from onnx import numpy_helper

        if name in self.initializers:
            return numpy_helper.to_array(self.model.graph.initializer[self.initializers[name]])
        if name in self.constants:
            return evaluate_node(self.constants[name], {}, self.model.opset_import)[0]
        return self.derived.get(name)

    def write(self, ref: ParamRef, effective: np.ndarray, layer: str) -> None:
        """Store ``effective`` (an IR parameter) into the tensor ``ref`` names, if its value changed."""
        current = self.read(ref.initializer)
        stored = _stored_value(ref, effective, layer)
        if current is not None:
            stored = stored.astype(current.dtype)
            if stored.shape == current.shape and np.array_equal(stored, current):
                return
        else:
            stored = stored.astype(np.float32)
        previous = self.written.get(ref.initializer)
        if previous is not None and not np.array_equal(previous, stored):
            raise ModelError(f"layer '{layer}' shares the tensor '{ref.initializer}' with another layer and the "
                             f"patch gives them different values", help="edit only one of the layers sharing it")
        self.written[ref.initializer] = stored
        self._replace(ref.initializer, stored)

    def _replace(self, name: str, value: np.ndarray) -> None:
        from onnx import helper, numpy_helper

        tensor = numpy_helper.from_array(value, name)
        graph = self.model.graph
        if name in self.initializers:
            graph.initializer[self.initializers[name]].CopyFrom(tensor)
            self._fix_declared_shape(name, value.shape)
        elif name in self.constants:
            node = self.constants[name]
            del node.attribute[:]
            node.attribute.append(helper.make_attribute("value", tensor))
        else:
            fresh = self.unique(f"{name}_patched")
            graph.initializer.append(numpy_helper.from_array(value, fresh))
            for node in graph.node:
                for k, t in enumerate(node.input):
                    if t == name:
                        node.input[k] = fresh

    def _fix_declared_shape(self, name: str, shape: tuple[int, ...]) -> None:
        """IR < 4 files also list initializers as graph inputs with a shape, which must follow a reshaped bias."""
        for vi in self.model.graph.input:
            if vi.name == name and vi.type.tensor_type.HasField("shape"):
                dims = vi.type.tensor_type.shape.dim
                if [d.dim_value for d in dims] != list(shape):
                    del dims[:]
                    for size in shape:
                        dims.add().dim_value = int(size)


def _stored_value(ref: ParamRef, effective: np.ndarray, layer: str) -> np.ndarray:
    """Invert ``effective = scale * (stored.T if transposed else stored)``.

    A bias broadcast from a smaller tensor (a scalar ``C``) keeps its stored shape while all its values are
    equal, and otherwise is written at full size, which every op that broadcast it still accepts.
    """
    if ref.scale == 0.0:
        raise ModelError(f"layer '{layer}': the parameter '{ref.initializer}' is multiplied by 0 in the model "
                         "(Gemm alpha/beta = 0), so a patch cannot be written into it")
    stored = np.asarray(effective, dtype=np.float64) / ref.scale
    if ref.transposed:
        stored = stored.T
    size = int(np.prod(ref.stored_shape)) if ref.stored_shape else 1
    if stored.size == size:
        return stored.reshape(ref.stored_shape)
    flat = stored.reshape(-1)
    if np.all(flat == flat[0]):
        return np.full(ref.stored_shape, flat[0])
    return flat


def _append_bias(store: _TensorStore, tensor: str, bias: np.ndarray, layer: str, dtype) -> None:
    """Add ``bias`` after the node producing ``tensor``: the node's output is renamed and the new ``Add`` takes
    over the old name, so every reader (and a graph output) is unchanged and the node order stays topological."""
    from onnx import helper, numpy_helper

    graph = store.model.graph
    pos = next((k for k, n in enumerate(graph.node) if tensor in n.output), None)
    if pos is None:
        raise ModelError(f"layer '{layer}': cannot find the node producing '{tensor}' to add its new bias")
    producer = graph.node[pos]
    before = store.unique(f"{tensor}_before_bias")
    producer.output[list(producer.output).index(tensor)] = before
    init = store.unique(f"{layer}.bias_added")
    graph.initializer.append(numpy_helper.from_array(np.asarray(bias).astype(dtype), init))
    add = helper.make_node("Add", [before, init], [tensor], name=store.unique(f"{layer}_bias_added"))
    graph.node.insert(pos + 1, add)


def _write_conv(store: _TensorStore, layer: Linear, output: str | None) -> None:
    """A convolution's kernel into its tensor; its bias into its tensor, or, for a Conv without one that the patch
    gave a bias, a new initializer passed as the node's third input (the graph keeps its nodes)."""
    assert layer.weight_ref is not None and layer.kernel is not None and layer.channel_bias is not None
    store.write(layer.weight_ref, layer.kernel, layer.name)
    if layer.bias_ref is not None:
        store.write(layer.bias_ref, layer.channel_bias, layer.name)
        return
    if not np.any(layer.channel_bias):
        return
    node = next((n for n in store.model.graph.node if output is not None and output in n.output), None)
    if node is None or node.op_type != "Conv":
        raise ModelError(f"layer '{layer.name}' has a new bias but its Conv node cannot be found")
    from onnx import numpy_helper

    name = store.unique(f"{layer.name}.bias_added")
    store.model.graph.initializer.append(numpy_helper.from_array(layer.channel_bias.astype(np.float32), name))
    while len(node.input) < 2:
        node.input.append("")
    if len(node.input) == 2:
        node.input.append(name)
    else:
        node.input[2] = name


# --------------------------------------------------------------------------------------------------- entry points
def _patch_copy(net: Network):
    import onnx

    model = onnx.ModelProto()
    model.CopyFrom(net.proto)
    store = _TensorStore(model, net.metadata.get("onnx_derived_constants", {}))
    outputs = net.metadata.get("onnx_affine_outputs", [])
    for k, index in enumerate(net.affine_indices()):
        layer = net.layers[index]
        while isinstance(layer, Lifted):  # a layer of a residual branch: its own tensors
            layer = layer.inner
        if layer.weight_ref is None:
            raise ModelError(f"layer '{layer.name}' is not linked to a tensor of the model file",
                             help="networks built in memory without a proto are written with build_onnx")
        if isinstance(layer, Linear):  # a convolution: its kernel and per-channel bias, never the lowered matrix
            _write_conv(store, layer, outputs[k] if k < len(outputs) else None)
            continue
        store.write(layer.weight_ref, layer.W, layer.name)
        if layer.bias_ref is not None:
            store.write(layer.bias_ref, layer.b, layer.name)
        elif np.any(layer.b):
            if k >= len(outputs):
                raise ModelError(f"layer '{layer.name}' has a new bias but the model does not record where it goes")
            weight = store.read(layer.weight_ref.initializer)
            _append_bias(store, outputs[k], layer.b, layer.name, np.float32 if weight is None else weight.dtype)
    return model


def patched_proto(net: Network):
    """The ``ModelProto`` to write for ``net``: a patched copy of its own proto, or a fresh build without one."""
    if net.proto is not None:
        return _patch_copy(net)
    if net.prefix is not None:
        raise ModelError(f"network '{net.name}' has an opaque prefix but no ONNX model to write it from")
    from .build import build_onnx

    return build_onnx(net.layers, net.input_shape, input_name=net.input_name)


def save_network(net: Network, path: str) -> None:
    """Write ``net`` to ``path`` atomically: NNet text for ``.nnet``, ONNX otherwise. Never over its source."""
    if path.lower().endswith(".nnet"):
        from .nnet_export import save_nnet

        save_nnet(net, path)
        return
    write_atomic(path, patched_proto(net).SerializeToString(), protected=net.source_path)
