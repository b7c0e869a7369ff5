"""Sound bounds of a ReLU network over input boxes, many boxes at once (numpy, vectorised per layer).

Why this module: complete verification is only fast when most of the work is done by cheap *incomplete* bounds.
Every bound here is sound (up to float64 rounding, which the verifier absorbs with an explicit tolerance):

- :func:`relu_network` folds the IR into one canonical chain ``affine, relu, affine, relu, ..., affine`` from
  each layer's exact piecewise-linear form in the operator table (:mod:`patchlang.model.ops`): a clip becomes
  two ReLUs (``lo + relu(z-lo) - relu(z-hi)``), a max-pool a tree of ``b + relu(a - b)``, a convolution one
  affine map;
- :func:`interval_bounds`: plain interval arithmetic (the baseline, and an intersection partner);
- :func:`forward_bounds`: symbolic forward propagation of a lower and an upper *linear function of the input*
  for every neuron (Neurify / forward-LiRPA style).  With few inputs (ACAS Xu has 5) this costs almost
  nothing and gives the pre-activation bounds that fix stable ReLUs;
- :func:`spec_lower_bounds`: CROWN/DeepPoly-style *backward* substitution of linear output specifications
  ``C y + d`` through the relaxed network down to the input box, which is tighter than concretising forward
  functions because the specification's rows are combined before any relaxation is applied.  It also returns the
  linear coefficients on the input (used to pick the input dimension to split) and the box corner minimising the
  linear bound (a cheap counterexample candidate).

Shapes: ``lo``/``hi`` are ``(B, d)`` (B boxes); per-layer bounds are ``(B, n_i)``.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

import scipy.sparse as sp

from ..errors import PatchlangError
from ..model.ir import Network
from ..model.ops import ReluStage, act_apply, act_derivative, activation, layer_stages, matrix, relax_activation


@dataclass
class ReluNet:
    """``y = W_L relu(... relu(W_0 x + b_0) ...) + b_L`` in float64; ``Ws[k]`` has shape ``(out, in)``."""

    Ws: list[np.ndarray]
    bs: list[np.ndarray]
    # the same matrices as CSR where they are mostly zeros (a convolution's), for products with many vectors;
    # None (or a None entry) where the dense matrix is used
    sparse: list[sp.csr_matrix | None] | None = None
    _transposed: dict[int, sp.csr_matrix] = field(default_factory=dict, repr=False)
    # the activation after each hidden layer: None (all ReLU), or per layer "relu" | "sigmoid" | "tanh"; only
    # relu_network(net, smooth=True) builds smooth ones (bounds only: no exact encoding, see `smooth`)
    acts: list[str] | None = None

    def act(self, k: int) -> str:
        """The activation after hidden layer ``k``."""
        return "relu" if self.acts is None else self.acts[k]

    @property
    def smooth(self) -> list[str]:
        """The smooth activations' kinds (empty for a piecewise-linear network, which every encoder handles)."""
        return [] if self.acts is None else sorted({a for a in self.acts if a != "relu"})

    def _product(self, k: int, H: np.ndarray, transposed: bool) -> np.ndarray:
        """``H @ Ws[k].T`` (or ``H @ Ws[k]`` when ``transposed``) for a 2-D ``H``, sparse when that is cheaper."""
        S = self.sparse[k] if self.sparse is not None else None
        if S is None:
            return H @ (self.Ws[k] if transposed else self.Ws[k].T)
        if transposed:
            if k not in self._transposed:
                self._transposed[k] = S.T.tocsr()
            S = self._transposed[k]
        return np.asarray(S @ np.ascontiguousarray(H.T)).T

    @property
    def n_hidden(self) -> int:
        return len(self.Ws) - 1

    @property
    def input_size(self) -> int:
        return int(self.Ws[0].shape[1])

    @property
    def output_size(self) -> int:
        return int(self.Ws[-1].shape[0])

    @property
    def n_neurons(self) -> int:
        return int(sum(W.shape[0] for W in self.Ws[:-1]))

    def forward(self, x: np.ndarray) -> np.ndarray:
        """Outputs ``(N, out)`` for inputs ``(N, d)`` in float64."""
        h = np.asarray(x, dtype=np.float64)
        for k in range(self.n_hidden):
            h = act_apply(self.act(k), self._product(k, h, False) + self.bs[k])
        return h @ self.Ws[-1].T + self.bs[-1]

    def forward_with_gradient(self, x: np.ndarray, C: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """``(C y(x), d(C y)/dx)`` for inputs ``(N, d)``: values ``(N, k)`` and gradients ``(N, k, d)``.

        For ReLU layers the gradient is the product of the weights masked by the activation pattern (ties at 0
        count as inactive, a valid subgradient); a smooth layer scales by its derivative instead.
        """
        h = np.asarray(x, dtype=np.float64)
        masks = []
        for k in range(self.n_hidden):
            z = self._product(k, h, False) + self.bs[k]
            if self.act(k) == "relu":
                m = z > 0
                h = np.where(m, z, 0.0)
            else:
                m = act_derivative(self.act(k), z)
                h = act_apply(self.act(k), z)
            masks.append(m)
        y = h @ self.Ws[-1].T + self.bs[-1]
        N, K = h.shape[0], C.shape[0]
        G = np.broadcast_to(C @ self.Ws[-1], (N, K, self.Ws[-1].shape[1]))
        for k in range(self.n_hidden - 1, -1, -1):  # one product for the whole batch (a conv layer is large)
            Gm = np.ascontiguousarray(G * masks[k][:, None, :]).reshape(N * K, -1)
            G = self._product(k, Gm, True).reshape(N, K, -1)
        return y @ C.T, G


def relu_network(net: Network, smooth: bool = False) -> ReluNet:
    """The network's layers folded into the canonical affine/ReLU chain (see the module docstring).

    Raises a :class:`PatchlangError` when the network starts with an opaque prefix: its ops are evaluated
    concretely and cannot be bounded over a region.  A smooth layer (sigmoid, tanh) is PL301 unless ``smooth``:
    then it becomes an activation of its own kind (``ReluNet.acts``), which the bound routines relax soundly but
    no exact encoder accepts; only `verify` asks for that (every other caller needs the exact chain).
    """
    if net.prefix is not None:
        raise PatchlangError(
            f"model `{net.name}` has operations that are not piecewise linear, so it cannot be bounded over an "
            f"input region: {net.prefix.blocker or 'an op'} ({net.prefix.description})",
            help="verification bounds every op from the input on; the supported operators are listed in "
                 "docs/language.md (\"Supported operators\"; Sigmoid/Tanh are bounded for verify); "
                 "`falsify only with ...` still searches for counterexamples on any network onnxruntime runs",
            code="PL300")
    Ws: list[np.ndarray] = []
    bs: list[np.ndarray] = []
    n = net.suffix_in_size
    W: sp.csr_matrix | None = None  # pending affine map since the last ReLU stage (None: identity)
    b: np.ndarray | None = None
    acts: list[str] = []
    for layer in net.layers:
        kind = activation(layer) if smooth else None
        for stage in ([ReluStage()] if kind is not None else layer_stages(layer, n)):
            if isinstance(stage, ReluStage):
                Ws.append(_dense(W, n))
                bs.append(np.zeros(n) if b is None else b)
                acts.append(kind or "relu")
                W = b = None
                continue
            S = matrix(stage.W)
            W, b = (S, np.asarray(stage.b, float).copy()) if W is None else (S @ W, S @ b + stage.b)
            n = S.shape[0]
    Ws.append(_dense(W, n))
    bs.append(np.zeros(n) if b is None else b)
    sparse = [sp.csr_matrix(W) if W.size > 100_000 and np.count_nonzero(W) < 0.1 * W.size else None for W in Ws]
    return ReluNet(Ws, bs, sparse if any(s is not None for s in sparse) else None,
                   acts=acts if any(a != "relu" for a in acts) else None)


def _dense(W: sp.csr_matrix | None, n: int) -> np.ndarray:
    """The pending map as the dense float64 matrix the bound routines multiply with (identity when empty)."""
    return np.eye(n) if W is None else np.asarray(W.toarray(), dtype=np.float64)


# ============================================================================ interval arithmetic


def affine_interval(W: np.ndarray, b: np.ndarray, lo: np.ndarray, hi: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Bounds of ``W h + b`` for ``lo <= h <= hi`` (batched ``(B, n)``), via centre and radius."""
    c = (lo + hi) * 0.5
    r = (hi - lo) * 0.5
    mid = c @ W.T + b
    rad = r @ np.abs(W).T
    return mid - rad, mid + rad


def interval_bounds(rn: ReluNet, lo: np.ndarray, hi: np.ndarray) -> list[tuple[np.ndarray, np.ndarray]]:
    """Pre-activation bounds of every hidden layer and the output layer by interval arithmetic."""
    out = []
    l, u = np.atleast_2d(lo), np.atleast_2d(hi)
    for k, (W, b) in enumerate(zip(rn.Ws, rn.bs)):
        zl, zu = affine_interval(W, b, l, u)
        out.append((zl, zu))
        if k < rn.n_hidden:  # every activation is monotone
            l, u = act_apply(rn.act(k), zl), act_apply(rn.act(k), zu)
    return out


# ============================================================================ relaxations


def relu_relaxation(l: np.ndarray, u: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Slopes of the linear ReLU bounds ``alpha z <= relu(z) <= s z + t`` valid for ``l <= z <= u``.

    Stable neurons get exact slopes (1 or 0); unstable ones the triangle's upper side ``s = u/(u-l)``,
    ``t = -s l``, and the CROWN-adaptive lower slope (1 when ``u > -l``, else 0).
    """
    alpha, _, s, t = relax_activation("relu", l, u)  # the operator table's relaxation (intercept 0 below)
    return alpha, s, t


def layer_relaxation(rn: ReluNet, k: int, l: np.ndarray, u: np.ndarray
                     ) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """``(a_lo, b_lo, a_up, b_up)`` with ``a_lo z + b_lo <= act_k(z) <= a_up z + b_up`` on ``[l, u]``, every slope
    non-negative: the ReLU triangle (intercept 0 below) or a smooth layer's tangents and chords
    (:func:`patchlang.model.ops.relax_activation`)."""
    if rn.act(k) == "relu":
        alpha, s, t = relu_relaxation(l, u)
        return alpha, np.zeros_like(alpha), s, t
    return relax_activation(rn.act(k), l, u)


def needs_refinement(rn: ReluNet, k: int, l: np.ndarray, u: np.ndarray) -> np.ndarray:
    """Neurons of hidden layer ``k`` whose relaxation is loose: unstable ReLUs; every smooth neuron of non-zero
    width (a smooth activation is never exact over an interval)."""
    if rn.act(k) == "relu":
        return (l < 0) & (u > 0)
    return u > l


Relaxation = tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]  # (a_lo, b_lo, a_up, b_up) of one layer


@dataclass
class LayerBounds:
    """Pre-activation bounds ``(B, n_k)`` of every hidden layer, for a batch of boxes."""

    lower: list[np.ndarray]
    upper: list[np.ndarray]

    def n_unstable(self) -> np.ndarray:
        """Unstable ReLUs per box ``(B,)``."""
        return sum(np.count_nonzero((l < 0) & (u > 0), axis=1) for l, u in zip(self.lower, self.upper))

    def take(self, idx: np.ndarray) -> "LayerBounds":
        return LayerBounds([l[idx] for l in self.lower], [u[idx] for u in self.upper])


def _concretise(Aw: np.ndarray, ab: np.ndarray, c: np.ndarray, r: np.ndarray, upper: bool) -> np.ndarray:
    """min (or max) of ``Aw x + ab`` over the box with centre ``c`` and radius ``r`` (batched)."""
    mid = np.einsum("bnd,bd->bn", Aw, c) + ab
    rad = np.einsum("bnd,bd->bn", np.abs(Aw), r)
    return mid + rad if upper else mid - rad


def forward_bounds(rn: ReluNet, lo: np.ndarray, hi: np.ndarray, refine: bool = False,
                   prior: LayerBounds | None = None) -> LayerBounds:
    """Hidden pre-activation bounds by symbolic forward propagation, intersected with interval bounds.

    Each neuron carries ``L(x) <= z <= U(x)`` with ``L``, ``U`` affine in the input; through an affine layer the
    positive weights take ``U`` for the upper function and ``L`` for the lower one (and vice versa); through a
    ReLU the upper function is scaled by the triangle slope and the lower one by the adaptive slope.  Costs
    ``O(B n^2 d)`` per layer, which is tiny when the input dimension ``d`` is small.

    With ``refine``, the neurons these bounds leave unstable are bounded again by backward substitution
    (:func:`_backward`, DeepPoly/CROWN), box by box only for those rows, before the next layer is propagated:
    nearly the tightness of full backward bounds at a fraction of the cost, because on small boxes most neurons
    are already stable.  ``prior``: bounds known to hold on each box (e.g. its parent box's, in input splitting),
    intersected with each layer's before the refinement, so neurons they fix cost no backward pass.
    """
    lo = np.atleast_2d(np.asarray(lo, float))
    hi = np.atleast_2d(np.asarray(hi, float))
    B, d = lo.shape
    c, r = (lo + hi) * 0.5, (hi - lo) * 0.5
    # symbolic functions in (B, d, n) layout so that every product with a weight matrix is one GEMM
    Lw = np.broadcast_to(np.eye(d), (B, d, d))
    Lb = np.zeros((B, d))
    Uw, Ub = Lw, Lb
    il, iu = lo, hi  # interval bounds of the current layer's inputs
    lowers: list[np.ndarray] = []
    uppers: list[np.ndarray] = []
    relaxed: list[Relaxation] = []  # each layer's relaxation, reused by the backward refinement of later layers
    for k, (W, b) in enumerate(zip(rn.Ws[:-1], rn.bs[:-1])):
        WpT, WnT = np.maximum(W, 0.0).T, np.minimum(W, 0.0).T
        zLw = _mm(Lw, WpT) + _mm(Uw, WnT)
        zUw = _mm(Uw, WpT) + _mm(Lw, WnT)
        zLb = Lb @ WpT + Ub @ WnT + b
        zUb = Ub @ WpT + Lb @ WnT + b
        l = np.einsum("bdn,bd->bn", zLw, c) - np.einsum("bdn,bd->bn", np.abs(zLw), r) + zLb
        u = np.einsum("bdn,bd->bn", zUw, c) + np.einsum("bdn,bd->bn", np.abs(zUw), r) + zUb
        jl, ju = affine_interval(W, b, il, iu)
        l, u = np.maximum(l, jl), np.minimum(u, ju)
        if prior is not None:
            l, u = np.maximum(l, prior.lower[k]), np.minimum(u, prior.upper[k])
        if refine and k > 0:
            l, u = _refine_unstable(rn, k, l, u, lo, hi, LayerBounds(lowers, uppers), relaxed)
        u = np.maximum(u, l)
        lowers.append(l)
        uppers.append(u)
        alpha, beta, s, t = layer_relaxation(rn, k, l, u)
        relaxed.append((alpha, beta, s, t))
        Lw = zLw * alpha[:, None, :]
        Lb = zLb * alpha + beta
        Uw = zUw * s[:, None, :]
        Ub = zUb * s + t
        il, iu = act_apply(rn.act(k), l), act_apply(rn.act(k), u)
    return LayerBounds(lowers, uppers)


def _refine_unstable(rn: ReluNet, k: int, l: np.ndarray, u: np.ndarray, lo: np.ndarray, hi: np.ndarray,
                     prev: LayerBounds, relaxed: list[Relaxation] | None = None, group: int = 64
                     ) -> tuple[np.ndarray, np.ndarray]:
    """Backward bounds for the neurons of layer ``k`` that ``l``/``u`` leave unstable, box by box.

    Boxes are sorted by their number of unstable neurons and processed in groups padded to the group's
    largest count, so a few wide boxes do not make every box pay for fifty rows.  ``relaxed``: the relaxations
    of ``prev``'s layers (:func:`layer_relaxation`), computed once instead of once per group and layer.
    """
    unstable = needs_refinement(rn, k, l, u)
    m = unstable.sum(axis=1)
    if not np.any(m):
        return l, u
    l, u = l.copy(), u.copy()
    order = np.argsort(m, kind="stable")
    order = order[m[order] > 0]
    Wk, bk = rn.Ws[k], rn.bs[k]
    if relaxed is None:
        relaxed = [layer_relaxation(rn, j, prev.lower[j], prev.upper[j]) for j in range(k)]
    # in the sorted order once, so that every group below takes slices (views), not copies
    rel = [tuple(x[order] for x in r) for r in relaxed[:k]]
    lo_s, hi_s = lo[order], hi[order]
    for start in range(0, order.size, group):
        sel = order[start:start + group]
        part = slice(start, start + group)
        mmax = int(m[sel].max())
        idx = np.argsort(~unstable[sel], axis=1, kind="stable")[:, :mmax]  # unstable first, then padding
        rows = Wk[idx]  # (G, mmax, n_in)
        Lam = np.concatenate([rows, -rows], axis=1)
        const = np.concatenate([bk[idx], -bk[idx]], axis=1)
        lb, _, _ = _backward_from(rn, k - 1, Lam, const, lo_s[part], hi_s[part], prev,
                                  [tuple(x[part] for x in r) for r in rel])
        bi = sel[:, None]
        l[bi, idx] = np.maximum(l[bi, idx], lb[:, :mmax])
        u[bi, idx] = np.minimum(u[bi, idx], -lb[:, mmax:])
    return l, u


def backward_bounds(rn: ReluNet, lo: np.ndarray, hi: np.ndarray, bounds: LayerBounds | None = None
                    ) -> LayerBounds:
    """Hidden pre-activation bounds by full backward substitution (DeepPoly/CROWN) for every layer.

    Much tighter than :func:`forward_bounds` (each bound picks its own relaxation of every earlier ReLU), at
    ``O(B n^3 L)`` cost.  The first layer's bounds are exact by interval arithmetic.  ``bounds`` (e.g. from
    :func:`forward_bounds`) are intersected layer by layer when given.
    """
    lo = np.atleast_2d(np.asarray(lo, float))
    hi = np.atleast_2d(np.asarray(hi, float))
    lowers: list[np.ndarray] = []
    uppers: list[np.ndarray] = []
    for k in range(rn.n_hidden):
        n = rn.Ws[k].shape[0]
        if k == 0:
            l, u = affine_interval(rn.Ws[0], rn.bs[0], lo, hi)
        else:
            C = np.vstack([np.eye(n), -np.eye(n)])
            both, _, _ = _backward(rn, k, C, np.zeros(2 * n), lo, hi, LayerBounds(lowers, uppers))
            l, u = both[:, :n], -both[:, n:]
        if bounds is not None:
            l, u = np.maximum(l, bounds.lower[k]), np.minimum(u, bounds.upper[k])
        lowers.append(l)
        uppers.append(np.maximum(u, l))
    return LayerBounds(lowers, uppers)


def _mm(Lam: np.ndarray, W: np.ndarray) -> np.ndarray:
    """``Lam @ W`` for a batch ``(B, k, n)`` and a shared ``(n, m)`` as one GEMM (numpy would loop over B)."""
    B, k, n = Lam.shape
    return (np.ascontiguousarray(Lam).reshape(B * k, n) @ W).reshape(B, k, W.shape[1])


def _backward(rn: ReluNet, layer: int, C: np.ndarray, d: np.ndarray, lo: np.ndarray, hi: np.ndarray,
              bounds: LayerBounds) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Lower bound of ``C z_layer + d`` (``z_layer`` the pre-activation of affine layer ``layer``).

    Returns ``(lb (B, k), coefficients on the input (B, k, d_in), constant (B, k))`` of the linear lower bound.
    """
    B = lo.shape[0]
    C = np.asarray(C, float)
    if C.ndim == 2:
        CW = C @ rn.Ws[layer]
        Lam = np.broadcast_to(CW, (B, *CW.shape)).copy()
        const = np.broadcast_to(C @ rn.bs[layer] + d, (B, C.shape[0])).copy()
    else:
        Lam = _mm(C, rn.Ws[layer])
        const = C @ rn.bs[layer] + d
    return _backward_from(rn, layer - 1, Lam, const, lo, hi, bounds)


def _backward_from(rn: ReluNet, top: int, Lam: np.ndarray, const: np.ndarray, lo: np.ndarray, hi: np.ndarray,
                   bounds: LayerBounds, relaxed: list[Relaxation] | None = None
                   ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Continue a backward substitution whose coefficients ``Lam (B, k, n_top)`` act on the post-activation of
    hidden layer ``top`` (``-1``: the input), down to the input box.  ``relaxed``: the layers' relaxations when
    the caller has them already (then ``bounds`` is not read).

    Per layer: the intercepts of the upper lines met by negative coefficients go to the constant (a batched
    matrix-vector product), each coefficient is scaled by its side's slope (one ``where`` picks the slope: fewer
    temporaries than scaling both sides), and the bias and weights are applied as one GEMM over all boxes and rows."""
    B, K = Lam.shape[0], Lam.shape[1]
    for k in range(top, -1, -1):
        alpha, beta, s, t = relaxed[k] if relaxed is not None else \
            layer_relaxation(rn, k, bounds.lower[k], bounds.upper[k])
        const = const + np.matmul(np.minimum(Lam, 0.0), t[:, :, None])[..., 0]
        if rn.act(k) != "relu":
            const += np.matmul(np.maximum(Lam, 0.0), beta[:, :, None])[..., 0]
        Lam = Lam * np.where(Lam > 0, alpha[:, None, :], s[:, None, :])  # the lower slope where positive
        flat = Lam.reshape(B * K, -1)
        const += (flat @ rn.bs[k]).reshape(B, K)
        Lam = (flat @ rn.Ws[k]).reshape(B, K, -1)
    c, r = (lo + hi) * 0.5, (hi - lo) * 0.5
    lb = np.matmul(Lam, c[:, :, None])[..., 0] - np.matmul(np.abs(Lam), r[:, :, None])[..., 0] + const
    return lb, Lam, const


def spec_lower_bounds(rn: ReluNet, C: np.ndarray, d: np.ndarray, lo: np.ndarray, hi: np.ndarray,
                      bounds: LayerBounds) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Lower bounds of ``C y + d`` over each box, by backward substitution from the output.

    Returns ``(lb (B, k), Lam (B, k, d_in), const (B, k), corner (B, k, d_in))``: ``Lam x + const`` is the
    linear lower bound on the box (its coefficients times the box width say which input dimension matters
    most), and ``corner`` the box corner where that linear bound is smallest (a counterexample candidate).
    """
    lo = np.atleast_2d(np.asarray(lo, float))
    hi = np.atleast_2d(np.asarray(hi, float))
    lb, Lam, const = _backward(rn, rn.n_hidden, C, d, lo, hi, bounds)
    corner = np.where(Lam > 0, lo[:, None, :], hi[:, None, :])
    return lb, Lam, const, corner
