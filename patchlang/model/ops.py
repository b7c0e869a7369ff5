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
from .layers import Affine, Block, Clip, Elementwise, Layer, LeakyRelu, Lifted, Linear, MaxPool, Relu, Smooth

__all__ = ["LinearStage", "ReluStage", "Stage", "OpKind", "op_of", "apply_layer", "layer_vjp", "layer_stages",
           "layer_interval", "is_linear", "is_editable", "params", "with_params", "param_entries", "relu_width",
           "out_size", "in_size", "matrix", "activation", "relax_activation", "act_apply", "act_derivative",
           "SMOOTH_KINDS"]


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

    def activation(self, layer: Any) -> str | None:
        """An elementwise activation with sound linear relaxations but no exact piecewise-linear form (sigmoid,
        tanh): bound consumers treat the layer as one activation stage of this kind; exact consumers get PL301
        from ``stages``.  ``None`` for every piecewise-linear kind."""
        return None

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


# ============================================================================ smooth activations (bounds only)
SMOOTH_KINDS = ("sigmoid", "tanh")
_RELAX_EPS = 1e-12  # widening of every smooth relaxation: absorbs float64 rounding of exp/tanh and the root search
_ROOT_STEPS = 60  # bisection steps for the tangent point (halves [0, u] each time: below 1e-15 relative)


def act_apply(kind: str, z: np.ndarray) -> np.ndarray:
    """The activation ``kind`` (relu, sigmoid, tanh) elementwise in float64."""
    if kind == "relu":
        return np.maximum(z, 0.0)
    if kind == "sigmoid":
        return 0.5 * (1.0 + np.tanh(0.5 * z))  # = 1 / (1 + exp(-z)) without overflow
    if kind == "tanh":
        return np.tanh(z)
    raise TypeError(f"unknown activation {kind!r}")


def act_derivative(kind: str, z: np.ndarray) -> np.ndarray:
    """Its derivative (ReLU: 1 where ``z > 0``, the subgradient the gradient code uses)."""
    if kind == "relu":
        return (z > 0).astype(float)
    s = act_apply(kind, z)
    return s * (1.0 - s) if kind == "sigmoid" else 1.0 - s * s


def _upper_line(kind: str, l: np.ndarray, u: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """A line ``a z + b >= act(z)`` on ``[l, u]`` for an S-shaped ``act`` (convex below 0, concave above).

    - ``u <= 0`` (convex): the chord;
    - ``l >= 0`` (concave): the tangent at the midpoint;
    - ``l < 0 < u``: the tangent at the point ``d`` in ``[0, u]`` whose tangent passes through ``(l, act(l))``, or
      the chord when the tangent at ``u`` already passes below it (auto_LiRPA's BoundSigmoid/BoundTanh).  Any
      ``d`` at or right of that root is sound (the bisection keeps the right end), and so is the chord then:
      its slope is at most ``act'(u)``, the smallest slope on the concave part.
    """
    f = lambda z: act_apply(kind, z)  # noqa: E731
    df = lambda z: act_derivative(kind, z)  # noqa: E731
    fl, fu = f(l), f(u)
    width = u - l
    chord_a = np.where(width > 0, (fu - fl) / np.where(width > 0, width, 1.0), 0.0)
    chord_b = fl - chord_a * l
    m = 0.5 * (l + u)
    tan_a, tan_b = df(m), f(m) - df(m) * m
    # mixed signs: the tangent point by bisection on g(d) = tangent_d(l) - act(l), increasing in d on [0, u]
    mixed = (l < 0) & (u > 0)
    lo_d = np.zeros_like(l)
    hi_d = np.where(mixed, u, 0.0)
    g = lambda d: f(d) + df(d) * (l - d) - fl  # noqa: E731
    use_chord = mixed & (g(hi_d) < 0)
    for _ in range(_ROOT_STEPS):
        mid = 0.5 * (lo_d + hi_d)
        ok = g(mid) >= 0
        hi_d = np.where(ok, mid, hi_d)
        lo_d = np.where(ok, lo_d, mid)
    mix_a, mix_b = df(hi_d), f(hi_d) - df(hi_d) * hi_d
    mix_a = np.where(use_chord, chord_a, mix_a)
    mix_b = np.where(use_chord, chord_b, mix_b)
    a = np.where(u <= 0, chord_a, np.where(l >= 0, tan_a, mix_a))
    b = np.where(u <= 0, chord_b, np.where(l >= 0, tan_b, mix_b))
    return a, b


def relax_activation(kind: str, l: np.ndarray, u: np.ndarray
                     ) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Sound linear bounds ``a_lo z + b_lo <= act(z) <= a_up z + b_up`` for ``l <= z <= u`` (elementwise), with
    non-negative slopes (every activation here is monotone), so forward propagation may scale the symbolic lower
    function by ``a_lo`` and the upper one by ``a_up``.

    ReLU: the triangle (upper) and the CROWN-adaptive lower slope, intercept 0.  Sigmoid/tanh: tangents and chords
    per convexity region (:func:`_upper_line`); the lower line is the upper line of the point reflection
    ``act(z) = c - act(-z)`` (``c`` = 1 for the sigmoid, 0 for tanh), widened by a rounding margin.  A box of
    (near) zero width gets the constant bounds ``act(l) <= act(z) <= act(u)``.
    """
    l = np.asarray(l, float)
    u = np.asarray(u, float)
    if kind == "relu":
        active = l >= 0
        unstable = (l < 0) & (u > 0)
        denom = np.where(unstable, u - l, 1.0)
        s = np.where(active, 1.0, np.where(unstable, u / denom, 0.0))
        t = np.where(unstable, -s * l, 0.0)
        alpha = np.where(active, 1.0, np.where(unstable, (u > -l).astype(float), 0.0))
        return alpha, np.zeros_like(alpha), s, t
    u = np.maximum(u, l)
    c = 1.0 if kind == "sigmoid" else 0.0
    a_up, b_up = _upper_line(kind, l, u)
    a_neg, b_neg = _upper_line(kind, -u, -l)  # act(w) <= a_neg w + b_neg on [-u, -l]
    a_lo, b_lo = a_neg, c - b_neg
    eps = _RELAX_EPS * (1.0 + np.abs(l) + np.abs(u))
    flat = (u - l) <= 1e-9 * (1.0 + np.abs(l))
    fl, fu = act_apply(kind, l), act_apply(kind, u)
    a_lo = np.where(flat, 0.0, np.maximum(a_lo, 0.0))
    a_up = np.where(flat, 0.0, np.maximum(a_up, 0.0))
    b_lo = np.where(flat, fl, b_lo) - eps
    b_up = np.where(flat, fu, b_up) + eps
    return a_lo, b_lo, a_up, b_up


class SmoothOp(OpKind):
    """Sigmoid and tanh: evaluation, gradient and interval bounds (monotone); linear relaxations for the bound
    consumers (:func:`relax_activation`); no exact form, so every encoder that needs one refuses with PL301."""

    layer_type = Smooth

    def activation(self, layer: Smooth) -> str:
        return layer.kind

    def stages(self, layer: Smooth, n: int) -> list[Stage]:
        from ..errors import PatchlangError

        raise PatchlangError(
            f"{layer.onnx_op} node '{layer.name}' is smooth, not piecewise linear: it has sound bounds for `verify` "
            "but no exact encoding, and this task needs one (a MILP/SMT encoding or the exact re-check crosses it)",
            help=f"edit only layers after the last {layer.onnx_op} (everything downstream is then piecewise linear), "
                 "or use `verify` (bounds through it) / `falsify only` (black box); Sigmoid and Tanh are verify-only "
                 "(docs/language.md, \"Supported operators\")", code="PL301")

    def apply(self, layer: Smooth, h: np.ndarray) -> np.ndarray:
        return act_apply(layer.kind, h)

    def vjp(self, layer: Smooth, x: np.ndarray, g: np.ndarray) -> np.ndarray:
        return g * act_derivative(layer.kind, x)

    def interval(self, layer: Smooth, lo: np.ndarray, hi: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        return act_apply(layer.kind, lo), act_apply(layer.kind, hi)

    def to_onnx(self, layer: Smooth, writer: Any, name: str) -> None:
        writer.node(layer.onnx_op, name)


class LiftedOp(AffineOp):
    """An editable layer over one slice of the vector, the rest passing unchanged: one affine stage (the
    block-diagonal matrix ``W``/``b`` the layer builds, sizes as a dense layer's), and the inner layer's parameters
    with their entries shifted by the slice's offset."""

    layer_type = Lifted

    def _split(self, layer: Lifted, h: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        a, m = layer.before, int(layer.inner.in_size)
        return h[:, :a], h[:, a:a + m], h[:, a + m:]

    def apply(self, layer: Lifted, h: np.ndarray) -> np.ndarray:
        left, mid, right = self._split(layer, h)
        return np.concatenate([left, apply_layer(layer.inner, mid), right], axis=1)

    def vjp(self, layer: Lifted, x: np.ndarray, g: np.ndarray) -> np.ndarray:
        a, m = layer.before, int(layer.inner.out_size)
        _, mid, _ = self._split(layer, x)
        return np.concatenate([g[:, :a], layer_vjp(layer.inner, mid, g[:, a:a + m]), g[:, a + m:]], axis=1)

    def to_onnx(self, layer: Lifted, writer: Any, name: str) -> None:
        return OpKind.to_onnx(self, layer, writer, name)

    def params(self, layer: Lifted, kind: str) -> np.ndarray:
        return params(layer.inner, kind)

    def with_params(self, layer: Lifted, kind: str, values: np.ndarray) -> Lifted:
        return replace(layer, inner=with_params(layer.inner, kind, values), _W=None)

    def param_entries(self, layer: Lifted, kind: str, mask: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        r, j, k = param_entries(layer.inner, kind, mask)
        return r + layer.before, np.where(j >= 0, j + layer.before, -1), k


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
    AffineOp(), LinearOp(), ReluOp(), ClipOp(), ElementwiseOp(), LeakyReluOp(), MaxPoolOp(), SmoothOp(), BlockOp(), LiftedOp())}


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


def activation(layer: Layer) -> str | None:
    """The activation kind of a smooth layer (``"sigmoid"``/``"tanh"``), ``None`` for every piecewise-linear one."""
    return op_of(layer).activation(layer)


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
    if isinstance(layer, Lifted):
        return is_editable(layer.inner)
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
