"""Lower linear ONNX ops (Conv, pooling by averaging, Transpose, BatchNormalization) and MaxPool to IR layers.

Why by probing instead of re-implementing each op: strides, pads, dilations, groups, ``auto_pad`` and
``ceil_mode`` have subtle semantics across opsets.  onnxruntime already knows them, so the node is run alone
(under the model's opsets) on a batch of one-hot inputs and the matrix is read off its outputs:

- a linear op without bias maps the one-hot ``e_i`` to column ``i`` of its matrix;
- a convolution is run with a kernel whose entries are their own (1-based) flat indices: each (input, output)
  pair is joined by at most one kernel tap, so the output *is* the tap's index, exactly (integers below 2^24 are
  exact in float32).  That gives the sparsity pattern and each entry's provenance (``Linear.kernel_index``: one
  kernel entry, many matrix entries, the weight-sharing rule), and the values come from the real kernel in
  float64;
- an average's entries are ``1/count``; the probe's float32 reciprocal is rounded back to the integer count;
- a max-pool maps ``e_i`` to 1 exactly on the windows containing ``i``.

BatchNormalization (inference form) is per-channel arithmetic and becomes an :class:`Elementwise` layer directly.
The importer's final self-check compares the whole lowered chain against onnxruntime on a random input.
"""

from __future__ import annotations

import numpy as np
import scipy.sparse as sp

from ..errors import ModelError
from .layers import Elementwise, Layer, LeakyRelu, Linear, MaxPool

CHUNK = 1024  # one-hot inputs per onnxruntime run
LINEAR_PROBED = frozenset({"Conv", "AveragePool", "GlobalAveragePool", "Transpose"})
LOWERED_OPS = LINEAR_PROBED | {"BatchNormalization", "MaxPool", "LeakyRelu"}


def _run_node(node, inputs: dict[str, np.ndarray], data_name: str, batch: np.ndarray, opset_imports) -> np.ndarray:
    """Run ``node`` alone on ``batch`` (float32), reading ``data_name`` then the constant ``inputs`` (in order; any
    other input of the node, such as a convolution's bias, is left out)."""
    import onnxruntime as ort
    from onnx import TensorProto, helper, numpy_helper

    from .runtime import session_options

    inits = [numpy_helper.from_array(np.asarray(v, dtype=np.float32), k) for k, v in inputs.items()]
    out = node.output[0]
    one = helper.make_node(node.op_type, [data_name, *inputs], [out], name=node.name or "probe",
                           **{a.name: helper.get_attribute_value(a) for a in node.attribute})
    graph = helper.make_graph([one], "probe", [helper.make_tensor_value_info(data_name, TensorProto.FLOAT, None)],
                              [helper.make_tensor_value_info(out, TensorProto.FLOAT, None)], inits)
    model = helper.make_model(graph, opset_imports=list(opset_imports))
    model.ir_version = 8
    session = ort.InferenceSession(model.SerializeToString(), session_options(), providers=["CPUExecutionProvider"])
    return np.asarray(session.run([out], {data_name: batch.astype(np.float32)})[0])


def _one_hot_probe(node, inputs: dict[str, np.ndarray], data_name: str, in_shape: tuple[int, ...],
                   out_size: int, opset_imports) -> sp.csr_matrix:
    """``M[o, i]`` = output ``o`` of the node on the one-hot input ``e_i`` (nonzeros only), chunk by chunk."""
    n = int(np.prod(in_shape))
    rows, cols, vals = [], [], []
    for start in range(0, n, CHUNK):
        k = min(CHUNK, n - start)
        batch = np.zeros((k, n), dtype=np.float32)
        batch[np.arange(k), start + np.arange(k)] = 1.0
        y = _run_node(node, inputs, data_name, batch.reshape((k, *in_shape[1:])), opset_imports).reshape(k, -1)
        if y.shape[1] != out_size:
            raise ModelError(f"probing {node.op_type} node '{node.name}' gave {y.shape[1]} outputs, expected "
                             f"{out_size}")
        i, o = np.nonzero(y)
        rows.append(o)
        cols.append(i + start)
        vals.append(y[i, o].astype(np.float64))
    return sp.csr_matrix((np.concatenate(vals), (np.concatenate(rows), np.concatenate(cols))), shape=(out_size, n))


def lower_conv(node, label: str, kernel: np.ndarray, bias: np.ndarray | None, data_name: str,
               in_shape: tuple[int, ...], out_shape: tuple[int, ...], opset_imports) -> Linear:
    """A convolution as a sparse :class:`Linear` layer whose entries remember their kernel entry."""
    kernel = np.asarray(kernel, dtype=np.float64)
    if kernel.size >= 2 ** 24:
        raise ModelError(f"Conv node '{label}': a kernel of {kernel.size} entries is too large to lower")
    index_kernel = (np.arange(kernel.size, dtype=np.float64) + 1).reshape(kernel.shape)
    out_size = int(np.prod(out_shape))
    pattern = _one_hot_probe(node, {node.input[1]: index_kernel}, data_name, in_shape, out_size, opset_imports)
    pattern.sort_indices()
    kernel_index = np.rint(pattern.data).astype(np.int64) - 1
    if np.any(np.abs(pattern.data - (kernel_index + 1)) > 1e-3) or np.any(kernel_index < 0):
        raise ModelError(f"Conv node '{label}': an input meets the same output through several kernel taps",
                         help="this convolution cannot be lowered; it may stay before the edited layers")
    W = sp.csr_matrix((kernel.reshape(-1)[kernel_index], pattern.indices.copy(), pattern.indptr.copy()),
                      shape=pattern.shape)
    channels = int(out_shape[1])
    channel_of_row = np.repeat(np.arange(channels), out_size // channels)
    channel_bias = np.zeros(channels) if bias is None else np.asarray(bias, dtype=np.float64).reshape(-1)
    return Linear(W=W, b=channel_bias[channel_of_row], name=label, op="Conv", kernel_index=kernel_index,
                  kernel=kernel.copy(), channel_of_row=channel_of_row, channel_bias=channel_bias.copy())


def lower_linear(node, label: str, data_name: str, in_shape: tuple[int, ...], out_shape: tuple[int, ...],
                 opset_imports) -> Linear:
    """AveragePool, GlobalAveragePool, Transpose: no parameters, entries ``1/count`` (1 for a transpose)."""
    M = _one_hot_probe(node, {}, data_name, in_shape, int(np.prod(out_shape)), opset_imports)
    M.data = 1.0 / np.rint(1.0 / M.data)
    return Linear(W=M, b=np.zeros(M.shape[0]), name=label, op=node.op_type)


def lower_maxpool(node, label: str, data_name: str, in_shape: tuple[int, ...], out_shape: tuple[int, ...],
                  opset_imports) -> MaxPool:
    M = _one_hot_probe(node, {}, data_name, in_shape, int(np.prod(out_shape)), opset_imports)
    counts = np.diff(M.indptr)
    if np.any(counts == 0):
        raise ModelError(f"MaxPool node '{label}': a window covers no input")
    k = int(counts.max())
    windows = np.empty((M.shape[0], k), dtype=np.int64)
    for o in range(M.shape[0]):  # rows are short; repeats of the first index pad them (max ignores repeats)
        idx = M.indices[M.indptr[o]:M.indptr[o + 1]]
        windows[o] = np.concatenate([idx, np.full(k - idx.size, idx[0])])
    return MaxPool(windows=windows, in_size=int(np.prod(in_shape)), name=label)


def lower_batchnorm(label: str, params: list[np.ndarray], epsilon: float, in_shape: tuple[int, ...]) -> Elementwise:
    """Inference BatchNormalization: ``(x - mean) / sqrt(var + eps) * scale + B`` per channel (axis 1)."""
    scale, B, mean, var = (np.asarray(p, dtype=np.float64).reshape(-1) for p in params)
    s = scale / np.sqrt(var + epsilon)
    t = B - mean * s
    per_channel = int(np.prod(in_shape[2:])) if len(in_shape) > 2 else 1
    return Elementwise(scale=np.repeat(s, per_channel), shift=np.repeat(t, per_channel), name=label)


def lower_leaky(label: str, alpha: float) -> Layer:
    if not 0.0 <= alpha <= 1.0:
        raise ModelError(f"LeakyRelu node '{label}': alpha {alpha} outside [0, 1] is not supported")
    return LeakyRelu(alpha=float(alpha), name=label)
