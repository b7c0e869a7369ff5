"""The operator table: what each layer kind of the IR does, in one place.

Why a table: evaluation, gradients, bounds, the solver encodings and the ONNX writer used to repeat the same
``isinstance`` chain over the layer kinds, so a new operator meant editing five modules and forgetting one was a
silent bug.  Each kind now owns, here:

- ``apply``: float64 evaluation on flat vectors ``(N, n)``;
- ``vjp``: the gradient with respect to the layer's input (fine-tuning's backpropagation);
- ``stages``: its **exact piecewise-linear form**, a list of affine maps and ReLUs whose composition *is* the
  layer (``clip = lo + relu(x - lo) - relu(x - hi)``, ``leaky = relu(x) - a relu(-x)``, ``max(a, b) =
  b + relu(a - b)``).  This one form is what every symbolic consumer reads: the interval, CROWN and alpha
  bounds (:func:`patchlang.compile.bounds.relu_network` folds the stages into its affine/ReLU chain, so each ReLU
  gets the usual triangle relaxation), the MILP (a ReLU atom per unstable neuron, big-M from the bounds) and
  the Z3 encoding (the same ReLU atoms, exact): compile has a single stage encoder, never one per operator;
- ``interval``: direct interval bounds of the layer (tighter than through the stages for MaxPool);
- ``to_onnx``: how the layer is written to a fresh ONNX graph (networks built in memory), or a clear refusal.

Linear ONNX ops (Conv, BatchNormalization, average pooling, Transpose) are imported as :class:`Linear` layers: an
affine map held as a sparse matrix, so they need nothing beyond one affine stage.  Layers here act on flat
vectors; shapes are the importer's business.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from typing import Any, Union

import numpy as np

from ..errors import ModelError
from .layers import Affine, Block, Clip, Elementwise, Layer, LeakyRelu, Linear, MaxPool, Relu

__all__ = ["LinearStage", "ReluStage", "Stage", "OpKind", "op_of", "apply_layer", "layer_vjp", "layer_stages",
           "layer_interval", "is_linear", "is_editable", "params", "with_params", "param_entries", "relu_width",
           "out_size", "in_size", "matrix"]


# ============================================================================ the piecewise-linear form
@dataclass
class LinearStage:
    """``z = W @ h + b``; ``W`` dense or ``scipy.sparse`` of shape ``(out, in)``."""

    W: Any
    b: np.ndarray


@dataclass
class ReluStage:
    """``z = max(h, 0)`` elementwise."""


Stage = Union[LinearStage, ReluStage]


class _LazySparse:
    """``scipy.sparse``, imported on first use: evaluating a dense network (a cache hit's re-check, a worker's
    start) never needs it, and importing it costs about 0.15 s."""

    def __getattr__(self, name: str) -> Any:
        import scipy.sparse

        return getattr(scipy.sparse, name)


sp = _LazySparse()


def matrix(W: Any) -> sp.csr_matrix:
    """``W`` as a CSR matrix (dense arrays are converted; sparse ones are not copied when already CSR)."""
    return W if sp.isspmatrix_csr(W) else sp.csr_matrix(W)


def _linear_apply(W: Any, b: np.ndarray, h: np.ndarray) -> np.ndarray:
    """``h @ W.T + b`` for a batch ``(N, in)`` with a dense or sparse ``W`` (result always a dense array)."""
    if isinstance(W, np.ndarray):
        return h @ W.T + b
    return np.asarray((W @ h.T).T) + b


def _identity_pair(n: int, second: float) -> tuple[sp.csr_matrix, sp.csr_matrix]:
    """``[I; -I]`` (duplicate with a sign flip) and ``[I, second * I]`` (recombine): the two halves of
    ``relu(x) + second * relu(-x)``."""
    eye = sp.identity(n, format="csr")
    return sp.vstack([eye, -eye]).tocsr(), sp.hstack([eye, second * eye]).tocsr()


def _stage_apply(stages: list[Stage], h: np.ndarray) -> np.ndarray:
    for st in stages:
        h = np.maximum(h, 0.0) if isinstance(st, ReluStage) else _linear_apply(st.W, st.b, h)
    return h


def _stage_vjp(stages: list[Stage], x: np.ndarray, g: np.ndarray) -> np.ndarray:
    """Backpropagate ``g`` through the stages at input ``x`` (ties at a ReLU's kink count as inactive)."""
    acts = [x]
    for st in stages:
        acts.append(_stage_apply([st], acts[-1]))
    for st, inp in zip(reversed(stages), reversed(acts[:-1])):
        g = g * (inp > 0) if isinstance(st, ReluStage) else np.asarray(matrix(st.W).T @ g.T).T
    return g


def _stage_interval(stages: list[Stage], lo: np.ndarray, hi: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    for st in stages:
        if isinstance(st, ReluStage):
            lo, hi = np.maximum(lo, 0.0), np.maximum(hi, 0.0)
        else:
            c, r = (lo + hi) * 0.5, (hi - lo) * 0.5
            mid = _linear_apply(st.W, st.b, c)
            rad = np.asarray((abs(matrix(st.W)) @ r.T).T)
            lo, hi = mid - rad, mid + rad
    return lo, hi


# ============================================================================ the table
class OpKind:
    """One operator kind.  Subclasses override what differs; the defaults derive everything from ``stages``."""

    layer_type: type = object
    linear: bool = False  # the layer is one affine map (no ReLU stage)

    def in_size(self, layer: Any) -> int | None:
        """The input size when the layer fixes it (``None``: elementwise, any size)."""
        return None

    def out_size(self, layer: Any, n: int) -> int:
        return n

    def stages(self, layer: Any, n: int) -> list[Stage]:
        raise NotImplementedError

    def apply(self, layer: Any, h: np.ndarray) -> np.ndarray:
        return _stage_apply(self.stages(layer, h.shape[1]), h)

    def vjp(self, layer: Any, x: np.ndarray, g: np.ndarray) -> np.ndarray:
        return _stage_vjp(self.stages(layer, x.shape[1]), x, g)

    def interval(self, layer: Any, lo: np.ndarray, hi: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        return _stage_interval(self.stages(layer, lo.shape[1]), lo, hi)

    def to_onnx(self, layer: Any, writer: Any, name: str) -> tuple[str, str] | None:
        raise ModelError(f"layer '{layer.name}' ({type(layer).__name__}) cannot be written to a new ONNX graph",
                         help="networks with convolutions or pooling are written by patching their own ONNX file")

    # ------------------------------------------------------------------ editable parameters
    editable: bool = False

    def params(self, layer: Any, kind: str) -> np.ndarray:
        """The parameter tensor an `edit` of ``kind`` (weights | biases) moves: one unknown per entry."""
        raise ModelError(f"layer '{layer.name}' has no parameters to edit")

    def with_params(self, layer: Any, kind: str, values: np.ndarray) -> Any:
        """A copy of the layer with that tensor replaced."""
        raise ModelError(f"layer '{layer.name}' has no parameters to edit")

    def param_entries(self, layer: Any, kind: str, mask: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Where the masked parameters enter the layer's affine map: ``(row, col, k)`` per matrix entry (``col`` is
        -1 for a bias), ``k`` the position of its parameter among the masked ones (row-major: the order of the
        unknowns).  A parameter shared by many entries (a convolution's kernel) is one ``k`` in many of them."""
        raise ModelError(f"layer '{layer.name}' has no parameters to edit")


class AffineOp(OpKind):
    layer_type = Affine
    linear = True

    def in_size(self, layer: Affine) -> int:
        return layer.in_size

    def out_size(self, layer: Affine, n: int) -> int:
        return layer.out_size

    def stages(self, layer: Affine, n: int) -> list[Stage]:
        return [LinearStage(layer.W, layer.b)]

    def apply(self, layer: Affine, h: np.ndarray) -> np.ndarray:
        return h @ layer.W.T + layer.b

    def vjp(self, layer: Affine, x: np.ndarray, g: np.ndarray) -> np.ndarray:
        return g @ layer.W

    editable = True

    def params(self, layer: Affine, kind: str) -> np.ndarray:
        return layer.W if kind == "weights" else layer.b

    def with_params(self, layer: Affine, kind: str, values: np.ndarray) -> Affine:
        values = np.asarray(values, dtype=np.float64)
        return replace(layer, W=values) if kind == "weights" else replace(layer, b=values)

    def param_entries(self, layer: Affine, kind: str, mask: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        if kind == "weights":
            r, j = np.nonzero(mask)
        else:
            (r,) = np.nonzero(mask)
            j = np.full(r.size, -1)
        return r, j, np.arange(r.size)

    def to_onnx(self, layer: Affine, writer: Any, name: str) -> tuple[str, str]:
        w = writer.constant(f"{name}.weight", layer.W)
        b = writer.constant(f"{name}.bias", layer.b)
        writer.node("Gemm", name, [w, b], transB=1)
        return w, b


class LinearOp(AffineOp):
    """Same algebra as :class:`AffineOp` on a sparse matrix."""

    layer_type = Linear

    def apply(self, layer: Linear, h: np.ndarray) -> np.ndarray:
        return _linear_apply(layer.W, layer.b, h)

    def vjp(self, layer: Linear, x: np.ndarray, g: np.ndarray) -> np.ndarray:
        return np.asarray((matrix(layer.W).T @ g.T).T)

    def to_onnx(self, layer: Linear, writer: Any, name: str) -> tuple[str, str] | None:
        return OpKind.to_onnx(self, layer, writer, name)

    def params(self, layer: Linear, kind: str) -> np.ndarray:
        if not layer.editable:
            return OpKind.params(self, layer, kind)
        return layer.kernel if kind == "weights" else layer.channel_bias

    def with_params(self, layer: Linear, kind: str, values: np.ndarray) -> Linear:
        values = np.asarray(values, dtype=np.float64)
        if not layer.editable:
            return OpKind.with_params(self, layer, kind, values)
        if kind == "weights":
            W = matrix(layer.W).copy()
            W.data = values.reshape(-1)[layer.kernel_index]
            return replace(layer, W=W, kernel=values.reshape(layer.kernel.shape).copy())
        return replace(layer, b=values[layer.channel_of_row], channel_bias=values.copy())

    def param_entries(self, layer: Linear, kind: str, mask: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        if not layer.editable:
            return OpKind.param_entries(self, layer, kind, mask)
        flat = np.asarray(mask, dtype=bool).reshape(-1)
        rank = np.cumsum(flat) - 1  # position of each parameter among the masked ones
        if kind == "weights":
            W = matrix(layer.W)
            rows = np.repeat(np.arange(W.shape[0]), np.diff(W.indptr))
            sel = flat[layer.kernel_index]
            return rows[sel], W.indices[sel], rank[layer.kernel_index[sel]]
        (r,) = np.nonzero(flat[layer.channel_of_row])
        return r, np.full(r.size, -1), rank[layer.channel_of_row[r]]


class ReluOp(OpKind):
    layer_type = Relu

    def stages(self, layer: Relu, n: int) -> list[Stage]:
        return [ReluStage()]

    def apply(self, layer: Relu, h: np.ndarray) -> np.ndarray:
        return np.maximum(h, 0.0)

    def vjp(self, layer: Relu, x: np.ndarray, g: np.ndarray) -> np.ndarray:
        return g * (x > 0)

    def to_onnx(self, layer: Relu, writer: Any, name: str) -> None:
        writer.node("Relu", name)


class ClipOp(OpKind):
    """``lo + relu(x - lo) - relu(x - hi)``; a missing (infinite) side drops its ReLU."""

    layer_type = Clip

    def stages(self, layer: Clip, n: int) -> list[Stage]:
        lo, hi = float(layer.lo), float(layer.hi)
        eye = sp.identity(n, format="csr")
        if np.isfinite(lo) and np.isfinite(hi):
            return [LinearStage(sp.vstack([eye, eye]).tocsr(), np.concatenate([np.full(n, -lo), np.full(n, -hi)])),
                    ReluStage(), LinearStage(sp.hstack([eye, -eye]).tocsr(), np.full(n, lo))]
        if np.isfinite(lo):
            return [LinearStage(eye, np.full(n, -lo)), ReluStage(), LinearStage(eye, np.full(n, lo))]
        if np.isfinite(hi):  # hi - relu(hi - x)
            return [LinearStage(-eye, np.full(n, hi)), ReluStage(), LinearStage(-eye, np.full(n, hi))]
        return []

    def apply(self, layer: Clip, h: np.ndarray) -> np.ndarray:
        return np.clip(h, layer.lo, layer.hi)

    def vjp(self, layer: Clip, x: np.ndarray, g: np.ndarray) -> np.ndarray:
        return g * ((x > layer.lo) & (x < layer.hi))

    def interval(self, layer: Clip, lo: np.ndarray, hi: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        return np.clip(lo, layer.lo, layer.hi), np.clip(hi, layer.lo, layer.hi)

    def to_onnx(self, layer: Clip, writer: Any, name: str) -> None:
        writer.clip(layer, name)


class ElementwiseOp(OpKind):
    layer_type = Elementwise
    linear = True

    def in_size(self, layer: Elementwise) -> int:
        return int(np.size(layer.scale))

    def stages(self, layer: Elementwise, n: int) -> list[Stage]:
        s = np.broadcast_to(np.asarray(layer.scale, float).reshape(-1), (n,))
        t = np.broadcast_to(np.asarray(layer.shift, float).reshape(-1), (n,))
        return [LinearStage(sp.diags(s).tocsr(), t.copy())]

    def apply(self, layer: Elementwise, h: np.ndarray) -> np.ndarray:
        return h * layer.scale.reshape(-1) + layer.shift.reshape(-1)

    def vjp(self, layer: Elementwise, x: np.ndarray, g: np.ndarray) -> np.ndarray:
        return g * np.asarray(layer.scale, float).reshape(-1)

    def to_onnx(self, layer: Elementwise, writer: Any, name: str) -> None:
        writer.node("Mul", name, [writer.constant(f"{name}.scale", np.ravel(layer.scale))])
        writer.node("Add", writer.unique(f"{name}_shift"), [writer.constant(f"{name}.shift", np.ravel(layer.shift))])


class LeakyReluOp(OpKind):
    """``relu(x) - alpha relu(-x)``: exact with two ReLUs per neuron (one of them stable wherever the sign of
    ``x`` is known)."""

    layer_type = LeakyRelu

    def stages(self, layer: LeakyRelu, n: int) -> list[Stage]:
        split, join = _identity_pair(n, -float(layer.alpha))
        return [LinearStage(split, np.zeros(2 * n)), ReluStage(), LinearStage(join, np.zeros(n))]

    def apply(self, layer: LeakyRelu, h: np.ndarray) -> np.ndarray:
        return np.where(h >= 0, h, layer.alpha * h)

    def vjp(self, layer: LeakyRelu, x: np.ndarray, g: np.ndarray) -> np.ndarray:
        return g * np.where(x > 0, 1.0, layer.alpha)

    def interval(self, layer: LeakyRelu, lo: np.ndarray, hi: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        return self.apply(layer, lo), self.apply(layer, hi)  # monotone for alpha >= 0

    def to_onnx(self, layer: LeakyRelu, writer: Any, name: str) -> None:
        writer.node("LeakyRelu", name, alpha=float(layer.alpha))


class MaxPoolOp(OpKind):
    """A balanced tree of ``max(a, b) = b + relu(a - b)``; ``b`` itself crosses each ReLU stage as
    ``relu(b) - relu(-b)``, which is exact, and stable (free) whenever the sign of ``b`` is known (after a ReLU)."""

    layer_type = MaxPool

    def in_size(self, layer: MaxPool) -> int:
        return int(layer.in_size)

    def out_size(self, layer: MaxPool, n: int) -> int:
        return layer.out_size

    def stages(self, layer: MaxPool, n: int) -> list[Stage]:
        win = np.asarray(layer.windows, dtype=np.int64)
        n_out, k = win.shape
        # gather: the vector becomes the windows' entries, output-major (value (o, j) at o * k + j)
        stages: list[Stage] = [LinearStage(sp.csr_matrix((np.ones(win.size), (np.arange(win.size), win.ravel())),
                                                         shape=(win.size, n)), np.zeros(win.size))]
        while k > 1:
            pairs, odd = k // 2, k % 2
            m = pairs * 3 + odd * 2  # per output: (a - b, b, -b) per pair, (c, -c) for a carried odd entry
            k_next = pairs + odd
            rows, cols, vals = [], [], []
            jrows, jcols, jvals = [], [], []
            base_in = np.arange(n_out)[:, None] * k
            base_mid = np.arange(n_out)[:, None] * m
            base_out = np.arange(n_out)[:, None] * k_next
            for p in range(pairs):
                a, b, r = base_in + 2 * p, base_in + 2 * p + 1, base_mid + 3 * p
                for rr, cc, vv in ((r, a, 1.0), (r, b, -1.0), (r + 1, b, 1.0), (r + 2, b, -1.0)):
                    rows.append(rr.ravel()), cols.append(cc.ravel()), vals.append(np.full(n_out, vv))
                for rr, vv in ((r, 1.0), (r + 1, 1.0), (r + 2, -1.0)):
                    jrows.append((base_out + p).ravel()), jcols.append(rr.ravel()), jvals.append(np.full(n_out, vv))
            if odd:
                c, r = base_in + k - 1, base_mid + 3 * pairs
                rows += [r.ravel(), (r + 1).ravel()]
                cols += [c.ravel(), c.ravel()]
                vals += [np.ones(n_out), -np.ones(n_out)]
                jrows += [(base_out + pairs).ravel()] * 2
                jcols += [r.ravel(), (r + 1).ravel()]
                jvals += [np.ones(n_out), -np.ones(n_out)]
            split = sp.csr_matrix((np.concatenate(vals), (np.concatenate(rows), np.concatenate(cols))),
                                  shape=(n_out * m, n_out * k))
            join = sp.csr_matrix((np.concatenate(jvals), (np.concatenate(jrows), np.concatenate(jcols))),
                                 shape=(n_out * k_next, n_out * m))
            stages += [LinearStage(split, np.zeros(n_out * m)), ReluStage(), LinearStage(join, np.zeros(n_out * k_next))]
            k = k_next
        return stages

    def apply(self, layer: MaxPool, h: np.ndarray) -> np.ndarray:
        return h[:, layer.windows].max(axis=2)

    def vjp(self, layer: MaxPool, x: np.ndarray, g: np.ndarray) -> np.ndarray:
        vals = x[:, layer.windows]  # (N, out, k)
        arg = layer.windows[np.arange(layer.out_size)[None, :], vals.argmax(axis=2)]  # (N, out)
        out = np.zeros_like(x)
        np.add.at(out, (np.arange(x.shape[0])[:, None], arg), g)
        return out

    def interval(self, layer: MaxPool, lo: np.ndarray, hi: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        return lo[:, layer.windows].max(axis=2), hi[:, layer.windows].max(axis=2)


def _chain_sizes(layers: list[Any], n: int) -> list[int]:
    sizes = [n]
    for layer in layers:
        sizes.append(op_of(layer).out_size(layer, sizes[-1]))
    return sizes


def _alternating(layers: list[Any], n: int) -> list[Any]:
    """A branch's stages as ``[L0, L1, ..., Lm]``: affine maps with one ReLU stage between consecutive ones
    (consecutive affine stages composed, an identity inserted between consecutive ReLUs)."""
    maps: list[Any] = [sp.identity(n, format="csr")]
    biases: list[np.ndarray] = [np.zeros(n)]
    size = n
    for layer in layers:
        for st in op_of(layer).stages(layer, size):
            if isinstance(st, ReluStage):
                maps.append(sp.identity(size, format="csr"))
                biases.append(np.zeros(size))
            else:
                S = matrix(st.W)
                maps[-1], biases[-1] = S @ maps[-1], S @ biases[-1] + st.b
                size = S.shape[0]
    return [LinearStage(M.tocsr(), b) for M, b in zip(maps, biases)]


def _carry(stages: list[Any], extra: int) -> list[Any]:
    """Pad a branch with ``extra`` ReLU stages that carry its value unchanged: ``v = relu(v) - relu(-v)``."""
    if extra == 0:
        return stages
    last = stages[-1]
    size = last.W.shape[0]
    split, join = _identity_pair(size, -1.0)
    out = stages[:-1] + [LinearStage(split @ last.W, split @ last.b)]
    for _ in range(extra - 1):
        out.append(LinearStage((split @ join).tocsr(), np.zeros(2 * size)))
    out.append(LinearStage(join, np.zeros(size)))
    return out


class BlockOp(OpKind):
    """Branches side by side: the first affine stages stacked (all read the same input), the later ones
    block-diagonal, branches with fewer ReLU stages padded by exact carries, the last stage summing (add) or
    stacking (concat) the branches."""

    layer_type = Block

    def in_size(self, layer: Block) -> int | None:
        for branch in layer.branches:
            for inner in branch:
                size = in_size(inner)
                if size is not None:
                    return size
                if not isinstance(inner, (Relu, Clip, LeakyRelu)):
                    break
        return None

    def out_size(self, layer: Block, n: int) -> int:
        sizes = [_chain_sizes(b, n)[-1] for b in layer.branches]
        return sizes[0] if layer.merge == "add" else int(sum(sizes))

    def stages(self, layer: Block, n: int) -> list[Stage]:
        alts = [_alternating(b, n) for b in layer.branches]
        depth = max(len(a) for a in alts)
        alts = [_carry(a, depth - len(a)) for a in alts]
        out: list[Stage] = []
        for t in range(depth):
            Ws, bs = [a[t].W for a in alts], [a[t].b for a in alts]
            if t == depth - 1 and layer.merge == "add":
                # after a ReLU stage each branch reads its own slice; without one they all read the input
                W = sp.hstack(Ws).tocsr() if depth > 1 else sum(Ws[1:], Ws[0]).tocsr()
                b = np.sum(bs, axis=0)
            elif t == 0:
                W, b = sp.vstack(Ws).tocsr(), np.concatenate(bs)
            else:
                W, b = sp.block_diag(Ws, format="csr"), np.concatenate(bs)
            if t > 0:
                out.append(ReluStage())
            out.append(LinearStage(W, b))
        return out

    def _branches(self, layer: Block, h: np.ndarray) -> list[list[np.ndarray]]:
        traces = []
        for branch in layer.branches:
            acts = [h]
            for inner in branch:
                acts.append(apply_layer(inner, acts[-1]))
            traces.append(acts)
        return traces

    def apply(self, layer: Block, h: np.ndarray) -> np.ndarray:
        outs = [t[-1] for t in self._branches(layer, h)]
        return np.sum(outs, axis=0) if layer.merge == "add" else np.concatenate(outs, axis=1)

    def vjp(self, layer: Block, x: np.ndarray, g: np.ndarray) -> np.ndarray:
        total = np.zeros_like(x)
        start = 0
        for branch, acts in zip(layer.branches, self._branches(layer, x)):
            size = acts[-1].shape[1]
            gb = g if layer.merge == "add" else g[:, start:start + size]
            start += size
            for inner, a in zip(reversed(branch), reversed(acts[:-1])):
                gb = layer_vjp(inner, a, gb)
            total = total + gb
        return total

    def interval(self, layer: Block, lo: np.ndarray, hi: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        ls, us = [], []
        for branch in layer.branches:
            l, u = lo, hi
            for inner in branch:
                l, u = layer_interval(inner, l, u)
            ls.append(l)
            us.append(u)
        if layer.merge == "add":
            return np.sum(ls, axis=0), np.sum(us, axis=0)
        return np.concatenate(ls, axis=1), np.concatenate(us, axis=1)


_TABLE: dict[type, OpKind] = {op.layer_type: op for op in (
    AffineOp(), LinearOp(), ReluOp(), ClipOp(), ElementwiseOp(), LeakyReluOp(), MaxPoolOp(), BlockOp())}


def op_of(layer: Layer) -> OpKind:
    """The table entry of a layer (a :class:`TypeError` for a kind the table lacks: a programming error)."""
    try:
        return _TABLE[type(layer)]
    except KeyError:
        raise TypeError(f"no operator kind for layer {layer!r}") from None


# ============================================================================ shorthands every consumer uses
def apply_layer(layer: Layer, h: np.ndarray) -> np.ndarray:
    return op_of(layer).apply(layer, h)


def layer_vjp(layer: Layer, x: np.ndarray, g: np.ndarray) -> np.ndarray:
    return op_of(layer).vjp(layer, x, g)


def layer_stages(layer: Layer, n: int) -> list[Stage]:
    return op_of(layer).stages(layer, n)


def layer_interval(layer: Layer, lo: np.ndarray, hi: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    return op_of(layer).interval(layer, lo, hi)


def is_linear(layer: Layer) -> bool:
    """The layer is one affine map: nothing after an edit makes the problem a MILP because of it."""
    if isinstance(layer, Block):
        return all(is_linear(inner) for branch in layer.branches for inner in branch)
    return op_of(layer).linear


def in_size(layer: Layer) -> int | None:
    return op_of(layer).in_size(layer)


def out_size(layer: Layer, n: int) -> int:
    return op_of(layer).out_size(layer, n)


def is_editable(layer: Layer) -> bool:
    """Whether `edit layer` can name this layer (what `layer k` in a spec counts)."""
    kind = op_of(layer)
    return kind.editable and (not isinstance(layer, Linear) or layer.editable)


def params(layer: Layer, kind: str) -> np.ndarray:
    return op_of(layer).params(layer, kind)


def with_params(layer: Layer, kind: str, values: np.ndarray) -> Layer:
    return op_of(layer).with_params(layer, kind, values)


def param_entries(layer: Layer, kind: str, mask: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    return op_of(layer).param_entries(layer, kind, mask)


def relu_width(layer: Layer, n: int) -> int:
    """How many ReLU neurons the layer's exact form has for an input of size ``n`` (MILP size estimates)."""
    total, size = 0, n
    for st in layer_stages(layer, n):
        if isinstance(st, ReluStage):
            total += size
        else:
            size = int(st.W.shape[0])
    return total
