"""ONNX -> IR: an opaque prefix run by onnxruntime, then a chain of piecewise-linear layers.

How the split is found.  Only the nodes the (first) graph output depends on are considered.  Nodes whose inputs
are all constant (initializers, ``Constant`` nodes, and anything computed from them) are folded into constants.
Every remaining *data* node either fits a single chain of supported ops or it *blocks*: an unsupported op, two
non-constant inputs (a residual ``Add``), or an output used twice (a branch).  The suffix starts after the last
blocking node, so every editable layer is encodable by construction and everything before is evaluated concretely.

Why a probe run.  Shape semantics of ``Reshape``/``Flatten``/broadcasting differ subtly between opsets; instead of
re-implementing them, the importer runs the model once with onnxruntime (batch of one) exposing every chain tensor,
reads the real shapes, and finally checks that the float64 IR reproduces onnxruntime's output on that probe.
"""

from __future__ import annotations

import os
from collections import Counter
from dataclasses import dataclass
from typing import Callable

import numpy as np

from ..errors import ModelError
from .ir import Affine, Clip, Elementwise, Layer, Linear, Network, ParamRef, Prefix, Relu, apply_layer
from .layers import Lifted, Smooth
from .residual import lift_block
from .onnx_lower import (LINEAR_PROBED, LOWERED_OPS, lower_batchnorm, lower_conv, lower_leaky, lower_linear,
                         lower_maxpool)
from .runtime import InputSignature, OrtModel, input_signature, session_options

SHAPE_OPS = frozenset({"Flatten", "Reshape", "Identity", "Squeeze", "Unsqueeze", "Dropout"})
ARITHMETIC_OPS = frozenset({"Add", "Sub", "Mul", "Div"})
SMOOTH_OPS = {"Sigmoid": "sigmoid", "Tanh": "tanh"}  # bounded for `verify`, no exact form (ops.SmoothOp)
SUPPORTED_OPS = (frozenset({"Gemm", "MatMul", "Relu", "Clip"}) | SHAPE_OPS | ARITHMETIC_OPS | LOWERED_OPS
                 | frozenset(SMOOTH_OPS))
AFFINE_OPS = frozenset({"Gemm", "MatMul"})

# Old opsets give Clip's bounds as float32 extremes; anything that large means "no bound".
_FLOAT32_MAX = float(np.finfo(np.float32).max)
_SUPPORTED_HELP = ("the encoded part of a network may contain Gemm, MatMul, Conv, BatchNormalization, "
                   "Add/Sub/Mul/Div by constants, Relu, LeakyRelu, Clip, Sigmoid/Tanh (verify only), MaxPool, "
                   "AveragePool, GlobalAveragePool, "
                   "Flatten/Reshape/Transpose/Squeeze/Unsqueeze/Identity/Dropout in a chain, and residual blocks "
                   "(Add of two branches, Concat on the channel axis); other ops are only allowed before it "
                   "(evaluated concretely)")


# --------------------------------------------------------------------------------------------------- reading
def read_onnx(path: str):
    """Load a ``ModelProto`` (with external data), turning every failure into a :class:`ModelError`."""
    import onnx

    from ..guard import check_input, read_input

    data = read_input(path, "model file")  # a FIFO, device or directory is refused here, never read
    try:
        proto = onnx.load_model_from_string(data)
        external = [t for t in proto.graph.initializer if t.data_location == onnx.TensorProto.EXTERNAL]
        if external:
            from onnx.external_data_helper import load_external_data_for_model

            folder = os.path.dirname(os.path.abspath(path))
            for t in external:  # the same guard as every input: no FIFO, device or directory, nothing outside
                location = {e.key: e.value for e in t.external_data}.get("location", "")
                full = os.path.realpath(os.path.join(folder, location))
                if not full.startswith(os.path.realpath(folder) + os.sep):
                    raise ModelError(f"{path}: tensor `{t.name}` keeps its data outside the model's folder "
                                     f"({location})", help="keep external data files next to the model")
                check_input(full, f"external data file of tensor `{t.name}`")
            load_external_data_for_model(proto, folder)
        return proto
    except Exception as exc:  # protobuf DecodeError, OSError, missing external data, ...
        raise ModelError(f"cannot read ONNX model {path}: {exc}",
                         help="is this really an .onnx file? Re-export it or pass the right format") from exc


def default_opset(proto) -> int:
    """The version of the default ONNX domain the model uses (Clip and friends changed semantics over time)."""
    for entry in proto.opset_import:
        if entry.domain in ("", "ai.onnx"):
            return int(entry.version)
    return 1


def node_label(node, index: int) -> str:
    """A node's name, or ``{op}_{index}`` for anonymous nodes (index = position in ``graph.node``)."""
    return node.name or f"{node.op_type}_{index}"


@dataclass
class _Const:
    """A constant tensor and where it lives: ``initializer``, ``constant`` (a Constant node) or ``derived``."""

    value: np.ndarray
    kind: str


@dataclass
class _DataNode:
    """A node on the data path, with its position in ``graph.node`` and why it cannot be in the suffix."""

    index: int
    node: object
    blocker: str | None = None
    # a residual block (Add of two branches, or Concat): the tensor the branches read and their nodes
    fork: str | None = None
    branches: list[list["_DataNode"]] | None = None

    @property
    def op(self) -> str:
        return self.node.op_type

    @property
    def label(self) -> str:
        return node_label(self.node, self.index)

    def describe(self) -> str:
        return f"{self.op} node '{self.label}'"


# --------------------------------------------------------------------------------------------------- graph analysis
class _GraphView:
    """The parts of the ONNX graph the importer needs: real input, output, constants and the data nodes."""

    def __init__(self, proto):
        from onnx import numpy_helper

        graph = proto.graph
        self.proto = proto
        self.opset = default_opset(proto)
        self.consts: dict[str, _Const] = {
            t.name: _Const(numpy_helper.to_array(t), "initializer") for t in graph.initializer}
        inputs = [vi for vi in graph.input if vi.name not in self.consts]
        if len(inputs) != 1:
            raise ModelError(f"the model has {len(inputs)} non-constant inputs "
                             f"({', '.join(vi.name for vi in inputs) or 'none'}); patchlang needs exactly one")
        self.input = inputs[0]
        if not graph.output:
            raise ModelError("the model graph has no output")
        self.output_name: str = graph.output[0].name
        self.data_nodes = self._fold_constants(self._needed_nodes())
        self.tail = self._strip_tail()

    def _strip_tail(self) -> dict[str, str] | None:
        """A final Softmax/LogSoftmax over the classes is monotone: it never changes which output is largest, so
        the chain ends before it (``output_name`` becomes its input) and label properties hold unchanged; the
        checker refuses properties over output values on such a model (PL302), the files written keep the node.
        Returns ``{"op", "node", "output"}`` of the stripped node, or None."""
        last = self.data_nodes[-1] if self.data_nodes else None
        if last is None or last.op not in TAIL_OPS or self.output_name not in last.node.output:
            return None
        data = self.data_inputs(last.node)
        if len(data) != 1 or sum(data[0] in self.data_inputs(dn.node) for dn in self.data_nodes) != 1:
            return None  # the logits are read elsewhere too: not a plain tail
        from onnx.helper import get_attribute_value

        axis = next((get_attribute_value(a) for a in last.node.attribute if a.name == "axis"), None)
        self.data_nodes = self.data_nodes[:-1]
        tail = {"op": last.op, "node": last.label, "output": self.output_name, "logits": data[0],
                "axis": str(-1 if axis is None and self.opset >= 13 else (1 if axis is None else axis))}
        self.output_name = data[0]
        return tail

    def _needed_nodes(self) -> list[tuple[int, object]]:
        """Nodes the first graph output depends on, in graph (topological) order."""
        producer = {out: i for i, node in enumerate(self.proto.graph.node) for out in node.output if out}
        needed: set[int] = set()
        stack = [self.output_name]
        while stack:
            i = producer.get(stack.pop())
            if i is None or i in needed:
                continue
            needed.add(i)
            stack.extend(t for t in self.proto.graph.node[i].input if t)
        return [(i, self.proto.graph.node[i]) for i in sorted(needed)]

    def _fold_constants(self, nodes: list[tuple[int, object]]) -> list[_DataNode]:
        """Evaluate constant-only nodes (``Constant``, ``Transpose`` of a weight, shape arithmetic...).

        Returns the remaining data nodes.  Folding means weights given through a ``Constant`` node or a
        ``Cast``/``Transpose`` of an initializer still become editable layers.
        """
        data: list[_DataNode] = []
        for index, node in nodes:
            if all(t in self.consts for t in node.input if t):
                kind = "constant" if node.op_type == "Constant" else "derived"
                for name, value in zip(node.output, self._evaluate(node, index)):
                    self.consts[name] = _Const(np.asarray(value), kind)
            else:
                data.append(_DataNode(index, node))
        return data

    def _evaluate(self, node, index: int) -> list[np.ndarray]:
        try:
            return evaluate_node(node, {t: self.consts[t].value for t in node.input if t}, self.proto.opset_import)
        except Exception as exc:
            raise ModelError(f"cannot evaluate the constant {node.op_type} node '{node_label(node, index)}': {exc}",
                             help="simplify the model (e.g. with onnxsim) so constants are plain initializers") from exc

    def data_inputs(self, node) -> list[str]:
        return [t for t in node.input if t and t not in self.consts]

    def inputs_of(self, dn: _DataNode) -> list[str]:
        """The data tensors a data node reads (a collapsed block reads its fork)."""
        return [dn.fork] if dn.fork is not None else self.data_inputs(dn.node)

    def const(self, name: str) -> np.ndarray:
        return self.consts[name].value

    def fanout(self) -> Counter:
        """How many data nodes read each tensor (the selected graph output counts as one more reader)."""
        uses: Counter = Counter(t for dn in self.data_nodes for t in set(self.inputs_of(dn)))
        uses[self.output_name] += 1
        return uses


def evaluate_node(node, feeds: dict[str, np.ndarray], opset_imports) -> list[np.ndarray]:
    """Run one node with onnx's reference evaluator under the model's own opsets.

    The node is wrapped in a one-node model because op semantics change between opsets (``Unsqueeze``'s axes
    moved from an attribute to an input) and a bare node would be evaluated with the newest ones.
    """
    import onnx
    from onnx import helper
    from onnx.reference import ReferenceEvaluator

    graph = helper.make_graph([node], "fold", [onnx.ValueInfoProto(name=t) for t in feeds],
                              [onnx.ValueInfoProto(name=t) for t in node.output if t])
    model = helper.make_model(graph, opset_imports=list(opset_imports))
    return [np.asarray(v) for v in ReferenceEvaluator(model).run(None, feeds)]


def _blocker(view: _GraphView, dn: _DataNode, fanout: Counter) -> str | None:
    """Why ``dn`` cannot be part of the piecewise-linear suffix, or ``None`` when it can."""
    node = dn.node
    if dn.branches is not None:
        return _block_blocker(view, dn, fanout)
    if node.op_type not in SUPPORTED_OPS:
        return f"{node.op_type} is not a supported piecewise-linear op"
    data = view.data_inputs(node)
    if len(data) != 1:
        return f"it has {len(data)} non-constant inputs (a merge of branches)"
    if fanout[node.output[0]] > 1 or any(fanout[t] for t in node.output[1:]):
        return "its output is used more than once (a branch)"
    if node.op_type in AFFINE_OPS | {"Div"} and node.input[0] != data[0]:
        return f"the constant is its first operand ({node.op_type}(constant, x))"
    if node.op_type in AFFINE_OPS and view.const(node.input[1]).ndim != 2:
        return "its weight is not a matrix"
    if node.op_type in LOWERED_OPS and node.input[0] != data[0]:
        return "its data input is not its first operand"
    if node.op_type == "Transpose":
        perm = next((list(a.ints) for a in node.attribute if a.name == "perm"), None)
        if perm is None or perm[0] != 0:
            return "it moves the batch axis"
    return None


MERGE_OPS = frozenset({"Add", "Concat"})
TAIL_OPS = frozenset({"Softmax", "LogSoftmax"})  # stripped from the end of the graph (_GraphView._strip_tail)


def _collapse_blocks(view: _GraphView) -> None:
    """Replace each series-parallel block by one data node: a merge (``Add`` of two data tensors, or ``Concat``)
    whose inputs are chains of single-input nodes (possibly empty: the skip connection) that all start at the same
    tensor, read by nothing else.  Blocks are found in topological order, so a block may sit inside a later
    block's branch."""
    fanout = view.fanout()
    producer = {out: dn for dn in view.data_nodes for out in dn.node.output if out}
    removed: set[int] = set()
    for dn in view.data_nodes:
        node = dn.node
        ins = view.data_inputs(node)
        if node.op_type not in MERGE_OPS or len(ins) < 2 or len(set(ins)) != len(ins):
            continue
        if node.op_type == "Add" and len(ins) != 2 or len(ins) != len([t for t in node.input if t]):
            continue  # Add of three? Concat with a constant part: not a block
        branches, forks = [], set()
        for t in ins:
            chain: list[_DataNode] = []
            while fanout[t] == 1 and t in producer and len(view.inputs_of(producer[t])) == 1:
                p = producer[t]
                if p.fork is None and p.node.op_type in MERGE_OPS and len(view.data_inputs(p.node)) > 1:
                    break
                chain.insert(0, p)
                t = view.inputs_of(p)[0]
            branches.append(chain)
            forks.add(t)
        if len(forks) != 1:
            continue
        fork = forks.pop()
        if fanout[fork] != len(ins):
            continue  # something else also reads the fork
        dn.fork, dn.branches = fork, branches
        removed.update(inner.index for chain in branches for inner in chain)
    view.data_nodes = [dn for dn in view.data_nodes if dn.index not in removed]


def _block_blocker(view: _GraphView, dn: _DataNode, fanout: Counter) -> str | None:
    assert dn.branches is not None
    if dn.node.op_type == "Concat":
        from onnx.helper import get_attribute_value

        axis = next((get_attribute_value(a) for a in dn.node.attribute if a.name == "axis"), None)
        if axis != 1:
            return f"it concatenates along axis {axis}, not the channel axis 1"
    if fanout[dn.node.output[0]] > 1:
        return "its output is used more than once (a branch)"
    for chain in dn.branches:
        for inner in chain:
            why = _blocker(view, inner, fanout)
            if why is not None:
                return f"its branch holds {inner.describe()}: {why}"
    return None


def _split(view: _GraphView) -> tuple[list[_DataNode], list[_DataNode], str]:
    """Split the data nodes into (prefix, chain) and return the tensor the chain starts from."""
    _collapse_blocks(view)
    fanout = view.fanout()
    for dn in view.data_nodes:
        dn.blocker = _blocker(view, dn, fanout)
    cut = max((k for k, dn in enumerate(view.data_nodes) if dn.blocker), default=-1)
    prefix, chain = view.data_nodes[:cut + 1], view.data_nodes[cut + 1:]
    start = view.input.name if cut < 0 else _chain_start(view, prefix[-1], chain)
    _check_chain(view, chain, start)
    if not any(dn.op in AFFINE_OPS for dn in chain):
        raise _no_affine_error(prefix[-1] if prefix else None)
    return prefix, chain, start


def _chain_start(view: _GraphView, last: _DataNode, chain: list[_DataNode]) -> str:
    """The output of the last blocking node that the chain reads (or the graph output if the chain is empty)."""
    read = {view.inputs_of(chain[0])[0]} if chain else {view.output_name}
    outs = [t for t in last.node.output if t in read]
    if not outs:
        raise ModelError(f"cannot follow the graph after {last.describe()}: the next node does not read its output",
                         help="patchlang expects the layers after the last unsupported op to form a single chain")
    return outs[0]


def _check_chain(view: _GraphView, chain: list[_DataNode], start: str) -> None:
    """Every chain node must read the previous one's output and the chain must end at the graph output."""
    tensor = start
    for dn in chain:
        if view.inputs_of(dn)[0] != tensor:
            raise ModelError(f"{dn.describe()} does not continue the chain of layers (it reads "
                             f"'{view.inputs_of(dn)[0]}', expected '{tensor}')", help=_SUPPORTED_HELP)
        tensor = dn.node.output[0]
    if tensor != view.output_name:
        raise ModelError(f"the layer chain ends at '{tensor}', not at the graph output '{view.output_name}'",
                         help=_SUPPORTED_HELP)


def _no_affine_error(blocking: _DataNode | None) -> ModelError:
    if blocking is None:
        return ModelError("the network has no affine (Gemm/MatMul) layer to edit", help=_SUPPORTED_HELP)
    return ModelError(
        f"no editable affine layer after {blocking.describe()}: {blocking.blocker}; patchlang can only encode the "
        f"layers after the last unsupported node, and there are none",
        help=_SUPPORTED_HELP + f"; remove or replace the {blocking.op} at the end of the network")


# --------------------------------------------------------------------------------------------------- probe
def _with_outputs(proto, names: list[str]):
    """A copy of ``proto`` whose graph outputs are ``names`` (onnxruntime infers their types)."""
    import onnx

    copy = onnx.ModelProto()
    copy.CopyFrom(proto)
    del copy.graph.output[:]
    copy.graph.output.extend(onnx.ValueInfoProto(name=n) for n in names)
    return copy


def _probe_input(sig: InputSignature, dtype) -> np.ndarray:
    """A deterministic batch of one, random rather than zeros so the final self-check exercises the weights.

    Uniform in [0, 1) like normalised pixels: a prefix with ``Log``/``Sqrt`` must not turn it into NaN.
    """
    return np.random.default_rng(0).uniform(0.0, 1.0, sig.onnx_shape(1)).astype(dtype)


def _probe(view: _GraphView, chain: list[_DataNode], start: str, sig: InputSignature) -> dict[str, np.ndarray]:
    """Run the model once, exposing the chain's input and every chain node's output."""
    import onnxruntime as ort
    from onnx.helper import tensor_dtype_to_np_dtype

    dtype = tensor_dtype_to_np_dtype(view.input.type.tensor_type.elem_type)
    feed = _probe_input(sig, dtype)
    names = ([] if start == view.input.name else [start]) + [
        inner.node.output[0] for dn in chain for inner in (*(n for b in dn.branches or [] for n in b), dn)]
    try:
        session = ort.InferenceSession(_with_outputs(view.proto, names).SerializeToString(), session_options(),
                                       providers=["CPUExecutionProvider"])
        values = dict(zip(names, session.run(names, {view.input.name: feed})))
    except Exception as exc:
        raise ModelError(f"onnxruntime cannot run the model: {exc}",
                         help="check that the model is valid (onnx.checker) and its opset is supported") from exc
    values[view.input.name] = feed
    return values


# --------------------------------------------------------------------------------------------------- conversion
@dataclass
class _Step:
    """One chain node being converted, with the observed shapes (batch of one) of its input and output."""

    dn: _DataNode
    view: _GraphView
    in_shape: tuple[int, ...]
    out_shape: tuple[int, ...]

    @property
    def node(self):
        return self.dn.node

    def attr(self, name: str, default):
        from onnx.helper import get_attribute_value

        for a in self.node.attribute:
            if a.name == name:
                return get_attribute_value(a)
        return default

    def const_input(self, pos: int) -> np.ndarray | None:
        names = self.node.input
        return self.view.const(names[pos]) if pos < len(names) and names[pos] else None

    def ref(self, pos: int, transposed: bool = False, scale: float = 1.0) -> ParamRef:
        name = self.node.input[pos]
        shape = tuple(self.view.const(name).shape)
        return ParamRef(name, transposed=transposed, scale=float(scale), stored_shape=shape)

    def error(self, message: str) -> ModelError:
        return ModelError(f"{self.dn.describe()}: {message}", help=_SUPPORTED_HELP)

    def per_sample(self, const: np.ndarray) -> np.ndarray:
        """A constant operand broadcast to the tensor it acts on, flattened to one value per feature."""
        if np.broadcast_shapes(const.shape, self.in_shape) != self.in_shape:
            raise self.error(f"constant of shape {list(const.shape)} does not broadcast to the tensor's shape "
                             f"{list(self.in_shape)} without enlarging it")
        return np.broadcast_to(const.astype(np.float64), self.in_shape).reshape(-1).copy()


class _ChainBuilder:
    """Turns chain nodes into IR layers, folding a bias ``Add``/``Sub`` into the affine layer before it."""

    def __init__(self) -> None:
        self.layers: list[Layer] = []
        self.affine_outputs: list[str] = []  # tensor produced by each affine's node (where a new bias would go)
        self.handlers: dict[str, Callable[[_Step], None]] = {
            "Gemm": self.gemm, "MatMul": self.matmul, "Relu": self.relu, "Clip": self.clip,
            **{op: self.arithmetic for op in ARITHMETIC_OPS}, **{op: self.identity for op in SHAPE_OPS},
            **{op: self.probed for op in LINEAR_PROBED}, "MaxPool": self.maxpool,
            "BatchNormalization": self.batchnorm, "LeakyRelu": self.leaky,
            **{op: self.smooth for op in SMOOTH_OPS}}

    def add(self, step: _Step, values: dict[str, np.ndarray] | None = None) -> None:
        if step.dn.branches is not None:
            self.block(step, values or {})
            return
        self.handlers[step.node.op_type](step)

    def block(self, step: _Step, values: dict[str, np.ndarray]) -> None:
        """A residual Add / Concat: each branch built by a builder of its own; a block whose branches hold editable
        layers is rewritten so that they can be edited (:func:`.residual.lift_block`)."""
        assert step.dn.branches is not None and step.dn.fork is not None
        branches, ends, outputs = [], [], []
        for chain in step.dn.branches:
            sub = _ChainBuilder()
            tensor = step.dn.fork
            for inner in chain:
                sub.add(_Step(inner, step.view, tuple(values[tensor].shape), tuple(values[inner.node.output[0]].shape)),
                        values)
                tensor = inner.node.output[0]
            branches.append(sub.layers)
            outputs.extend(sub.affine_outputs)  # lift_block lifts branch by branch, each in its own order
            ends.append(tuple(values[tensor].shape))
        if step.node.op_type == "Add" and ends[0] != ends[1]:
            raise step.error(f"it adds tensors of shapes {list(ends[0])} and {list(ends[1])} (broadcasting two "
                             "branches is not supported)")
        self.layers.extend(lift_block(branches, "add" if step.node.op_type == "Add" else "concat", step.dn.label,
                                      int(np.prod(values[step.dn.fork].shape))))
        self.affine_outputs.extend(outputs)

    def _affine(self, step: _Step, W: np.ndarray, b: np.ndarray, wref: ParamRef, bref: ParamRef | None) -> None:
        in_size, out_size = int(np.prod(step.in_shape)), int(np.prod(step.out_shape))
        if W.shape != (out_size, in_size):
            raise step.error(f"weight of effective shape {list(W.shape)} does not map the input size {in_size} "
                             f"to the output size {out_size} (batched matrix products are not supported)")
        self.layers.append(Affine(W=W, b=b, name=step.dn.label, weight_ref=wref, bias_ref=bref))
        self.affine_outputs.append(step.node.output[0])

    def gemm(self, step: _Step) -> None:
        if step.attr("transA", 0):
            raise step.error("transA=1 is not supported (the input would be transposed)")
        alpha, beta = float(step.attr("alpha", 1.0)), float(step.attr("beta", 1.0))
        trans_b = bool(step.attr("transB", 0))
        B = step.const_input(1).astype(np.float64)
        W = alpha * (B if trans_b else B.T)
        C = step.const_input(2)
        if C is None or beta == 0.0:
            b, bref = np.zeros(W.shape[0]), None
        else:
            b = beta * np.broadcast_to(C.astype(np.float64), step.out_shape).reshape(-1).copy()
            bref = step.ref(2, scale=beta)
        self._affine(step, W, b, step.ref(1, transposed=not trans_b, scale=alpha), bref)

    def matmul(self, step: _Step) -> None:
        W = step.const_input(1).astype(np.float64).T
        self._affine(step, W, np.zeros(W.shape[0]), step.ref(1, transposed=True), None)

    def relu(self, step: _Step) -> None:
        self.layers.append(Relu(step.dn.label))

    def clip(self, step: _Step) -> None:
        if step.view.opset < 11:
            lo, hi = float(step.attr("min", -np.inf)), float(step.attr("max", np.inf))
        else:
            lo_c, hi_c = step.const_input(1), step.const_input(2)
            lo = -np.inf if lo_c is None else float(lo_c.reshape(-1)[0])
            hi = np.inf if hi_c is None else float(hi_c.reshape(-1)[0])
        lo = -np.inf if lo <= -_FLOAT32_MAX else lo
        hi = np.inf if hi >= _FLOAT32_MAX else hi
        # Clip(0, inf) is a ReLU; saying so lets the encoder use its cheaper ReLU handling.
        self.layers.append(Relu(step.dn.label) if (lo, hi) == (0.0, np.inf) else Clip(lo, hi, step.dn.label))

    def probed(self, step: _Step) -> None:
        """A linear op lowered to a sparse affine map (see :mod:`.onnx_lower`)."""
        node, label = step.node, step.dn.label
        if len(step.in_shape) < 2 or step.in_shape[0] != 1:
            raise step.error(f"its input of shape {list(step.in_shape)} has no batch axis")
        opsets = step.view.proto.opset_import
        if node.op_type == "Conv":
            layer = lower_conv(node, label, step.const_input(1), step.const_input(2), node.input[0], step.in_shape,
                               step.out_shape, opsets)
            layer.weight_ref = step.ref(1)
            layer.bias_ref = step.ref(2) if step.const_input(2) is not None else None
            self.affine_outputs.append(node.output[0])  # editable: `layer k` counts it
        else:
            layer = lower_linear(node, label, node.input[0], step.in_shape, step.out_shape, opsets)
        self.layers.append(layer)

    def maxpool(self, step: _Step) -> None:
        if len(step.in_shape) < 2 or step.in_shape[0] != 1:
            raise step.error(f"its input of shape {list(step.in_shape)} has no batch axis")
        self.layers.append(lower_maxpool(step.node, step.dn.label, step.node.input[0], step.in_shape,
                                         step.out_shape, step.view.proto.opset_import))

    def batchnorm(self, step: _Step) -> None:
        if step.attr("training_mode", 0):
            raise step.error("training_mode=1 is not supported (inference statistics only)")
        params = [step.const_input(k) for k in range(1, 5)]
        self.layers.append(lower_batchnorm(step.dn.label, params, float(step.attr("epsilon", 1e-5)), step.in_shape))

    def leaky(self, step: _Step) -> None:
        self.layers.append(lower_leaky(step.dn.label, float(step.attr("alpha", 0.01))))

    def smooth(self, step: _Step) -> None:
        self.layers.append(Smooth(kind=SMOOTH_OPS[step.node.op_type], name=step.dn.label))

    def identity(self, step: _Step) -> None:
        """Reshapes act on row-major flat vectors as the identity; Dropout is the identity at inference."""

    def arithmetic(self, step: _Step) -> None:
        op, data_first = step.node.op_type, step.node.input[0] == step.view.data_inputs(step.node)[0]
        c_pos = 1 if data_first else 0
        c = step.per_sample(step.const_input(c_pos))
        if op in ("Add", "Sub") and self._fold_bias(step, c_pos, c, op == "Sub" and data_first):
            return
        scale, shift = _elementwise_params(op, c, data_first)
        if np.all(scale == 1.0) and not np.any(shift):
            return  # e.g. ACAS Xu's "Sub zeros": an identity layer would only lengthen the chain
        self.layers.append(Elementwise(scale=scale, shift=shift, name=step.dn.label))

    def _fold_bias(self, step: _Step, c_pos: int, c: np.ndarray, negate: bool) -> bool:
        """``MatMul`` then ``Add`` of a constant is one affine layer whose bias is editable (stays in the file)."""
        last = self.layers[-1] if self.layers else None
        if not isinstance(last, Affine) or last.bias_ref is not None or np.any(last.b) or c.size != last.out_size:
            return False
        last.b = -c if negate else c
        last.bias_ref = step.ref(c_pos, scale=-1.0 if negate else 1.0)
        return True


def _elementwise_params(op: str, c: np.ndarray, data_first: bool) -> tuple[np.ndarray, np.ndarray]:
    """``(scale, shift)`` with ``op(x, c) == x * scale + shift`` (or ``op(c, x)`` when the constant comes first)."""
    ones, zeros = np.ones(c.size), np.zeros(c.size)
    if op == "Add":
        return ones, c
    if op == "Sub":
        return (ones, -c) if data_first else (-ones, c)
    if op == "Mul":
        return c, zeros
    if np.any(c == 0):
        raise ModelError("division by a constant containing zeros", help=_SUPPORTED_HELP)
    return 1.0 / c, zeros


# --------------------------------------------------------------------------------------------------- prefix + check
def _make_prefix(view: _GraphView, prefix: list[_DataNode], start: str, sig: InputSignature) -> Prefix:
    """The opaque front: a copy of the model whose output is the chain's input, with a cached session."""
    ort_model = OrtModel(_with_outputs(view.proto, [start]), input_shape=sig.shape)
    counts = Counter(dn.op for dn in prefix)
    ops = ", ".join(f"{n}x{op}" if n > 1 else op for op, n in counts.items())
    description = f"{len(prefix)} ONNX nodes up to {prefix[-1].describe()} ({ops})"
    return Prefix(run=ort_model.run, output_name=start, description=description,
                  blocker=f"{prefix[-1].describe()}: {prefix[-1].blocker}")


def _self_check(layers: list[Layer], h0: np.ndarray, expected: np.ndarray, path: str) -> None:
    """The float64 IR must reproduce onnxruntime's float32 output on the probe, or the import misread something."""
    h = np.asarray(h0, dtype=np.float64).reshape(1, -1)
    if not (np.all(np.isfinite(h)) and np.all(np.isfinite(expected))):
        return  # nothing meaningful to compare; the shapes were still read from the probe
    for layer in layers:
        h = apply_layer(layer, h)
    expected = np.asarray(expected, dtype=np.float64).reshape(1, -1)
    tol = 1e-3 * (1.0 + float(np.abs(expected).max(initial=0.0)))
    if h.shape != expected.shape or not np.allclose(h, expected, rtol=1e-3, atol=tol):
        diff = float(np.abs(h - expected).max()) if h.shape == expected.shape else float("nan")
        raise ModelError(f"importing {path}: the IR disagrees with onnxruntime (max difference {diff:.3g}, "
                         f"shapes {h.shape} vs {expected.shape})",
                         help="the model uses an op variant patchlang misreads; please report it with the model")


def _check_tail(view: _GraphView, logits: np.ndarray) -> None:
    """The stripped Softmax must act on the class axis of a ``(batch, classes)`` tensor (or, before opset 13 with
    ``axis=1``, on every feature flattened): only then is it monotone in the sense the label rules need."""
    tail = view.tail
    assert tail is not None
    rank, axis = np.ndim(logits), int(tail["axis"])
    if rank == 2 and axis in (-1, 1) or view.opset < 13 and axis == 1:
        return
    raise ModelError(f"{tail['op']} node '{tail['node']}' at the end of the network acts on axis {axis} of a "
                     f"tensor of shape {list(np.shape(logits))}, not on the classes of a (batch, classes) output",
                     help="export the model without the final softmax (patchlang reads the logits)", code="PL302")


def _derived_constants(view: _GraphView, layers: list[Layer]) -> dict[str, np.ndarray]:
    """Parameters folded from constant subgraphs: the exporter needs their values to tell whether they changed."""
    refs = [r for layer in layers if isinstance(layer, (Affine, Linear, Lifted))
            for r in (layer.weight_ref, layer.bias_ref) if r]
    return {r.initializer: view.const(r.initializer) for r in refs if view.consts[r.initializer].kind == "derived"}


def _input_dims(view: _GraphView) -> list[int | None]:
    ttype = view.input.type.tensor_type
    if not ttype.HasField("shape"):
        raise ModelError(f"the model input '{view.input.name}' has no declared shape",
                         help="give the input a shape when exporting the model")
    return [d.dim_value if d.HasField("dim_value") else None for d in ttype.shape.dim]


# --------------------------------------------------------------------------------------------------- entry point
def load_onnx(path: str, name: str | None = None) -> Network:
    """Import an ONNX file as a :class:`Network` (see the module docstring for how the prefix is chosen).

    A malformed file (a tensor whose data does not match its shape or type, a graph that does not hang together)
    is a :class:`ModelError` naming what is wrong, never a crash."""
    proto = read_onnx(path)
    try:
        return _import(proto, path, name)
    except ModelError:
        raise
    except Exception as exc:  # noqa: BLE001 - a malformed file surfaces anywhere in the import
        import onnx

        try:
            onnx.checker.check_model(proto)
        except Exception as bad:  # noqa: BLE001 - the checker's own exception types vary between versions
            raise ModelError(f"malformed ONNX model {path}: {str(bad).strip().splitlines()[0][:300]}",
                             help="re-export the model; `python -m onnx.checker` style checks fail on it") from None
        raise ModelError(f"cannot import ONNX model {path}: {type(exc).__name__}: {exc}",
                         help="the file may be malformed; if other tools read it, please report this") from exc


def _import(proto, path: str, name: str | None) -> Network:
    view = _GraphView(proto)
    sig = input_signature(_input_dims(view))
    prefix_nodes, chain, start = _split(view)
    values = _probe(view, chain, start, sig)

    builder = _ChainBuilder()
    shape_of = start
    for dn in chain:
        builder.add(_Step(dn, view, tuple(values[shape_of].shape), tuple(values[dn.node.output[0]].shape)), values)
        shape_of = dn.node.output[0]
    _self_check(builder.layers, values[start], values[view.output_name], path)
    if view.tail is not None:
        _check_tail(view, values[view.output_name])

    return Network(
        name=name or os.path.splitext(os.path.basename(path))[0],
        input_name=view.input.name,
        input_shape=sig.shape,
        layers=builder.layers,
        prefix=_make_prefix(view, prefix_nodes, start, sig) if prefix_nodes else None,
        proto=proto,
        source_path=os.path.abspath(path),
        source_format="onnx",
        batch_fixed=sig.batch_fixed,
        input_rank_has_batch=sig.has_batch,
        metadata={
            "onnx_affine_outputs": builder.affine_outputs,
            "onnx_derived_constants": _derived_constants(view, builder.layers),
            "onnx_output_name": view.output_name,
            "ir_version": int(proto.ir_version),
            "opset": view.opset,
            **({"onnx_tail": view.tail} if view.tail is not None else {}),
        },
    )
