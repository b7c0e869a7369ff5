"""The layer kinds of the network IR: plain data, one dataclass per operator kind.

Why a module of their own: :mod:`.ops` (the operator table, which says what each kind *does*) and :mod:`.ir`
(the network that chains them) both need these types; keeping the data here lets both import it without a cycle.
Every layer acts on flat float64 vectors (row-major flattening of the ONNX tensor of one sample).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Union

import numpy as np

@dataclass(frozen=True)
class ParamRef:
    """Where an effective parameter lives in the ONNX file.

    ``effective = scale * (stored.T if transposed else stored)``, reshaped to the IR shape.  Gemm's
    ``alpha``/``beta`` become ``scale``; MatMul weights stored ``[in, out]`` are ``transposed``.
    """

    initializer: str
    transposed: bool = False
    scale: float = 1.0
    stored_shape: tuple[int, ...] = ()


class _Matrix:
    """Sizes of a layer holding a matrix ``W`` of shape ``(out, in)`` (dense or sparse)."""

    W: Any

    @property
    def in_size(self) -> int:
        return int(self.W.shape[1])

    @property
    def out_size(self) -> int:
        return int(self.W.shape[0])


@dataclass
class Affine(_Matrix):
    """``y = W @ x + b`` with ``W`` of shape ``(out, in)``."""

    W: np.ndarray
    b: np.ndarray
    name: str
    weight_ref: ParamRef | None = None
    bias_ref: ParamRef | None = None


@dataclass
class Relu:
    name: str = "relu"


@dataclass
class Clip:
    """HardTanh / ONNX Clip: ``min(max(x, lo), hi)``."""

    lo: float
    hi: float
    name: str = "clip"


@dataclass
class Elementwise:
    """``y = x * scale + shift`` elementwise with constant vectors (Sub/Add/Mul/Div by constants)."""

    scale: np.ndarray
    shift: np.ndarray
    name: str = "elementwise"


@dataclass
class Linear(_Matrix):
    """A linear ONNX op with constant parameters (Conv, BatchNormalization, AveragePool, GlobalAveragePool,
    Transpose, ...) lowered to ``y = W @ x + b`` on flat vectors.

    Why lowered: every bound and encoder already handles an affine map, so a convolution costs no new encoding.
    ``W`` is a ``scipy.sparse`` CSR matrix (a convolution's matrix is mostly zeros); ``op`` names the ONNX ops it
    came from (``"Conv"``, ``"Conv+BatchNormalization"``).  ``kernel`` (when set) is the provenance of a
    convolution's weights: ``W.data[k] == kernel_values[kernel_index[k]]`` for each stored entry, so a patch can
    move one kernel entry (one unknown) everywhere it is used, and be written back into the ONNX tensor.
    """

    W: Any
    b: np.ndarray
    name: str
    op: str = "Linear"
    weight_ref: ParamRef | None = None
    bias_ref: ParamRef | None = None
    kernel_index: np.ndarray | None = None  # per stored entry of W (CSR order): flat index into the kernel tensor
    kernel: np.ndarray | None = None  # the convolution's weights (float64, the ONNX tensor's shape)
    channel_of_row: np.ndarray | None = None  # output channel of each row (a bias is one value per channel)
    channel_bias: np.ndarray | None = None  # the convolution's bias per output channel (zeros when it has none)

    @property
    def editable(self) -> bool:
        """A convolution's kernel and bias can move; other lowered ops have no parameters."""
        return self.kernel is not None


@dataclass
class LeakyRelu:
    """``y = x`` for ``x >= 0``, ``alpha * x`` otherwise (``0 <= alpha <= 1``)."""

    alpha: float
    name: str = "leakyrelu"


@dataclass
class MaxPool:
    """``y[o] = max(x[windows[o, :]])``: every pooling window as a row of flat input indices.

    Windows cut by padding or the border repeat one of their own indices (``max`` ignores repeats), so every
    row has the same length and the exact encoding stays a balanced tree of pairwise maxima.
    """

    windows: np.ndarray  # (out, k) int64
    in_size: int
    name: str = "maxpool"

    @property
    def out_size(self) -> int:
        return int(self.windows.shape[0])


@dataclass
class Smooth:
    """A smooth monotone activation, elementwise: ``kind`` is ``"sigmoid"`` or ``"tanh"``.

    Why a layer kind of its own: it has no exact piecewise-linear form, so it cannot be encoded for a solver, but it
    has sound linear relaxations (tangents and chords), so `verify` can still *bound* through it.  The operator table
    refuses its exact form (PL301) for every task that needs exactness.
    """

    kind: str  # sigmoid | tanh
    name: str = "smooth"

    @property
    def onnx_op(self) -> str:
        return {"sigmoid": "Sigmoid", "tanh": "Tanh"}[self.kind]


@dataclass
class Block:
    """Parallel branches reading the same vector, merged: ``merge == "add"`` sums their outputs (a residual
    connection; an empty branch is the skip), ``"concat"`` stacks them (ONNX Concat on the channel axis).

    Why a layer and not a graph: series-parallel blocks are what residual networks are made of, and as one layer
    kind the chain stays a chain for every consumer; the operator table gives the block an exact piecewise-linear
    form like any other layer.  A block whose branches hold editable layers is rewritten by the importer so that
    they can be edited (:class:`Lifted`, :mod:`.residual`).
    """

    branches: list[list[Any]]
    merge: str  # add | concat
    name: str = "block"


@dataclass
class Lifted:
    """An editable layer of a residual branch, lifted to the top level of the chain:
    ``y = [x[:before]; inner(x[before:before + n]); x[-after:]]`` (the other branches' values pass unchanged).

    Why: a layer inside a :class:`Block` is not a step of the chain, so `edit layer` could not name it and the
    encoders could not give it unknowns.  The importer rewrites a block with editable layers into an equivalent
    chain (:mod:`.residual`): the branches' values side by side, each editable layer lifted over its slice, the
    rest of each branch a concat block, the merge a sum.  ``inner`` keeps its :class:`ParamRef`, so a patch is
    written back into the same ONNX tensor and the written graph is the original one.
    """

    inner: Any  # Affine | Linear (editable) | Lifted
    before: int
    after: int
    _W: Any = field(default=None, repr=False, compare=False)  # the sparse block-diagonal matrix, built once

    @property
    def name(self) -> str:
        return self.inner.name

    @property
    def weight_ref(self) -> "ParamRef | None":
        return self.inner.weight_ref

    @property
    def bias_ref(self) -> "ParamRef | None":
        return self.inner.bias_ref

    @property
    def in_size(self) -> int:
        return self.before + int(self.inner.in_size) + self.after

    @property
    def out_size(self) -> int:
        return self.before + int(self.inner.out_size) + self.after

    @property
    def W(self) -> Any:
        if self._W is None:
            import scipy.sparse as sp

            eye = [sp.identity(k, format="csr") for k in (self.before, self.after)]
            self._W = sp.block_diag([m for m in (eye[0], sp.csr_matrix(self.inner.W), eye[1]) if m.shape[0]],
                                    format="csr")
        return self._W

    @property
    def b(self) -> np.ndarray:
        return np.concatenate([np.zeros(self.before), np.asarray(self.inner.b, float), np.zeros(self.after)])


Layer = Union[Affine, Relu, Clip, Elementwise, Linear, LeakyRelu, MaxPool, Smooth, Block, Lifted]
