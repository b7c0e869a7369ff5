"""Concrete float32 evaluation of ONNX models with onnxruntime.

Why a wrapper: patchlang evaluates models in two places, the opaque :class:`~patchlang.model.ir.Prefix` of an
imported network and the check of every written patch ("trust nothing").  Real ONNX files disagree about the
batch axis: some have a dynamic one (``[N, 28, 28, 1]``), some fix it to 1 (ACAS Xu ``[1, 1, 1, 5]``) and some
have none at all.  :class:`OrtModel` hides that: it always takes ``(N, *input_shape)`` or flat ``(N, d)`` and
returns ``(N, out)``, looping sample by sample when the file cannot take a batch.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Sequence

import numpy as np

from ..errors import ModelError

_ORT_NUMPY_TYPES = {
    "tensor(float)": np.float32,
    "tensor(double)": np.float64,
    "tensor(float16)": np.float16,
    "tensor(int64)": np.int64,
    "tensor(int32)": np.int32,
    "tensor(uint8)": np.uint8,
    "tensor(int8)": np.int8,
    "tensor(bool)": np.bool_,
}


@dataclass(frozen=True)
class InputSignature:
    """How a model's input tensor relates to one sample.

    ``shape`` is the per-sample shape (no batch axis); ``has_batch`` says whether the ONNX input has a leading
    batch axis and ``batch_fixed`` whether that axis is the constant 1 (so batches must be fed one by one).
    """

    shape: tuple[int, ...]
    has_batch: bool
    batch_fixed: bool

    @property
    def size(self) -> int:
        return int(np.prod(self.shape)) if self.shape else 1

    def onnx_shape(self, n: int) -> tuple[int, ...]:
        """The shape of the ONNX input tensor holding ``n`` samples (``n`` must be 1 unless the batch is free)."""
        return (n, *self.shape) if self.has_batch else self.shape

    @property
    def loops(self) -> bool:
        """Whether a batch has to be fed sample by sample."""
        return self.batch_fixed or not self.has_batch


def input_signature(dims: Sequence[int | str | None]) -> InputSignature:
    """Interpret the declared dimensions of an ONNX input (ints, or ``None``/strings for symbolic ones).

    The rules: a symbolic first axis is a free batch axis; a first axis of exactly 1 on a tensor of rank >= 2 is a
    batch axis fixed to 1; anything else (rank 0 or 1, or a fixed first axis > 1) has no batch axis and the whole
    tensor is one sample.  Symbolic dimensions elsewhere cannot be fed a flat vector, hence the error.
    """
    dims = [d if isinstance(d, int) and d > 0 else None for d in dims]
    if dims and dims[0] is None:
        has_batch, fixed, per_sample = True, False, dims[1:]
    elif len(dims) >= 2 and dims[0] == 1:
        has_batch, fixed, per_sample = True, True, dims[1:]
    else:
        has_batch, fixed, per_sample = False, False, dims
    if any(d is None for d in per_sample):
        raise ModelError(
            f"the model input has symbolic dimensions besides the batch axis: {list(dims)}",
            help="fix the per-sample input shape, e.g. with onnx.tools.update_model_dims.update_inputs_outputs_dims",
        )
    return InputSignature(tuple(int(d) for d in per_sample), has_batch, fixed)


def session_options(threads: int = 1) -> Any:
    """Quiet, deterministic session options (onnxruntime warns about every unused initializer otherwise)."""
    import onnxruntime as ort

    opts = ort.SessionOptions()
    opts.log_severity_level = 3
    opts.intra_op_num_threads = threads
    opts.inter_op_num_threads = 1
    return opts


TAIL_OPS = ("Softmax", "LogSoftmax")


def without_tail(source: Any) -> Any:
    """``source`` (path or serialized bytes) with a final Softmax/LogSoftmax cut off: its output becomes the logits.

    Why: the importer strips that monotone tail (label decisions are the same either way) and the IR computes the
    logits, so every onnxruntime check of a file (the model, a written patch, a saved counterexample) must read the
    same tensor to compare like with like.  The file itself keeps the node.  A source without such a tail is
    returned as it is (a cheap byte search first: most models never mention a softmax, and a cache hit must not pay
    for importing onnx)."""
    data = source
    if isinstance(source, str):
        with open(source, "rb") as f:
            data = f.read()
    if not isinstance(data, (bytes, bytearray)) or b"Softmax" not in data:
        return source
    import onnx

    proto = onnx.load_model_from_string(bytes(data))
    if isinstance(source, str) and any(t.data_location == onnx.TensorProto.EXTERNAL for t in proto.graph.initializer):
        return source  # external weights live beside the file: leave it alone
    out = proto.graph.output[0].name if proto.graph.output else None
    node = next((n for n in proto.graph.node if out in n.output), None)
    if node is None or node.op_type not in TAIL_OPS or not node.input:
        return source
    del proto.graph.output[:]
    proto.graph.output.extend([onnx.ValueInfoProto(name=node.input[0])])
    return proto.SerializeToString()


class OrtModel:
    """An onnxruntime session with patchlang's batch conventions (see the module docstring).

    ``model`` is a path, a ``ModelProto`` or serialized bytes; the session is created once and reused.
    ``input_shape`` overrides the per-sample shape read from the model (needed only for unusual inputs).
    A final Softmax/LogSoftmax is not run (``strip_tail``, see :func:`without_tail`): outputs are the logits the
    IR computes.
    """

    def __init__(self, model: Any, input_shape: tuple[int, ...] | None = None, threads: int = 1,
                 strip_tail: bool = True):
        import onnxruntime as ort

        source = model.SerializeToString() if hasattr(model, "SerializeToString") else model
        if strip_tail:
            source = without_tail(source)
        self._init_args = (source, input_shape, threads)  # what __getstate__ pickles (a session cannot be)
        try:
            self.session = ort.InferenceSession(source, session_options(threads), providers=["CPUExecutionProvider"])
        except Exception as exc:  # onnxruntime raises its own exception types for every kind of failure
            raise ModelError(f"onnxruntime cannot load the model: {exc}",
                             help="check that the file is a valid ONNX model whose opset onnxruntime supports") from exc
        inputs = self.session.get_inputs()
        if len(inputs) != 1:
            raise ModelError(f"the model has {len(inputs)} inputs ({', '.join(i.name for i in inputs)}); "
                             "patchlang needs exactly one")
        self.input_name: str = inputs[0].name
        self.input_dtype = _ORT_NUMPY_TYPES.get(inputs[0].type, np.float32)
        sig = input_signature(inputs[0].shape)
        if input_shape is not None and tuple(input_shape) != sig.shape:
            sig = InputSignature(tuple(int(d) for d in input_shape), sig.has_batch, sig.batch_fixed)
        self.signature = sig
        self.output_name: str = self.session.get_outputs()[0].name

    @property
    def input_shape(self) -> tuple[int, ...]:
        return self.signature.shape

    def __getstate__(self) -> tuple:
        """Pickled as the model and options, the session rebuilt on load: a network whose opaque prefix runs here
        must survive the result cache and worker processes (an InferenceSession cannot be pickled)."""
        source, input_shape, threads = self._init_args
        if not isinstance(source, (bytes, bytearray)):  # a path: pickle the bytes, the file may change
            with open(source, "rb") as f:
                source = f.read()
        return (bytes(source), input_shape, threads)

    def __setstate__(self, state: tuple) -> None:
        self.__init__(*state)

    def _as_batch(self, x: np.ndarray) -> np.ndarray:
        """``x`` as ``(N, *input_shape)`` in the input's dtype, accepting flat ``(N, d)`` or a single sample."""
        x = np.asarray(x)
        sig = self.signature
        if x.shape == sig.shape or (x.ndim == 1 and x.size == sig.size):
            x = x.reshape(1, -1)
        if x.ndim == 0 or x[0].size != sig.size:
            raise ModelError(f"input batch of shape {x.shape} does not fit the model input shape {sig.shape}")
        return x.reshape((x.shape[0], *sig.shape)).astype(self.input_dtype, copy=False)

    def _run_one(self, feed: np.ndarray) -> np.ndarray:
        return self.session.run([self.output_name], {self.input_name: feed})[0]

    def run(self, x: np.ndarray) -> np.ndarray:
        """Outputs ``(N, out)`` in float32 for a batch ``x`` (``(N, *input_shape)`` or flat ``(N, d)``)."""
        batch = self._as_batch(x)
        n = batch.shape[0]
        sig = self.signature
        if n == 0:
            return np.zeros((0, 0), dtype=np.float32)
        if sig.loops:
            outs = [self._run_one(batch[i].reshape(sig.onnx_shape(1))).reshape(1, -1) for i in range(n)]
            out = np.concatenate(outs, axis=0)
        else:
            out = self._run_one(batch).reshape(n, -1)
        return out.astype(np.float32, copy=False)

    __call__ = run


def ort_outputs(path_or_proto: Any, x: np.ndarray, input_shape: tuple[int, ...] | None = None) -> np.ndarray:
    """One-shot convenience: outputs ``(N, out)`` float32 of a model file or ``ModelProto`` on ``x``."""
    return OrtModel(path_or_proto, input_shape=input_shape).run(x)
