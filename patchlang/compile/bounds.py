"""Sound bounds of a ReLU network over input boxes, many boxes at once (numpy, vectorised per layer).

Why this module: complete verification is only fast when most of the work is done by cheap *incomplete* bounds.
Every bound here is sound (up to float64 rounding, which the verifier absorbs with an explicit tolerance):

- :func:`relu_network` folds the IR (affine, elementwise scale/shift, ReLU, HardTanh/Clip) into one canonical
  chain ``affine, relu, affine, relu, ..., affine``; a clip becomes two ReLUs (``lo + relu(z-lo) - relu(z-hi)``);
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

from dataclasses import dataclass

import numpy as np

from ..errors import PatchlangError
from ..model.ir import Affine, Clip, Elementwise, Network, Relu


@dataclass
class ReluNet:
    """``y = W_L relu(... relu(W_0 x + b_0) ...) + b_L`` in float64; ``Ws[k]`` has shape ``(out, in)``."""

    Ws: list[np.ndarray]
    bs: list[np.ndarray]

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
        for W, b in zip(self.Ws[:-1], self.bs[:-1]):
            h = np.maximum(h @ W.T + b, 0.0)
        return h @ self.Ws[-1].T + self.bs[-1]

    def forward_with_gradient(self, x: np.ndarray, C: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """``(C y(x), d(C y)/dx)`` for inputs ``(N, d)``: values ``(N, k)`` and gradients ``(N, k, d)``.

        The network is piecewise linear, so the gradient is the product of the weights masked by the activation
        pattern (ties at 0 count as inactive, a valid subgradient).
        """
        h = np.asarray(x, dtype=np.float64)
        masks = []
        for W, b in zip(self.Ws[:-1], self.bs[:-1]):
            z = h @ W.T + b
            m = z > 0
            masks.append(m)
            h = np.where(m, z, 0.0)
        y = h @ self.Ws[-1].T + self.bs[-1]
        G = np.broadcast_to(C @ self.Ws[-1], (h.shape[0], C.shape[0], self.Ws[-1].shape[1]))
        for W, m in zip(reversed(self.Ws[:-1]), reversed(masks)):
            G = (G * m[:, None, :]) @ W
        return y @ C.T, G


def relu_network(net: Network) -> ReluNet:
    """The network's layers folded into the canonical affine/ReLU chain (see the module docstring).

    Raises a :class:`PatchlangError` when the network starts with an opaque prefix: its ops are evaluated
    concretely and cannot be bounded over a region.
    """
    if net.prefix is not None:
        raise PatchlangError(
            f"model `{net.name}` starts with operations that are not piecewise linear ({net.prefix.description}), "
            "so it cannot be verified over an input region",
            help="verification needs a network of affine, ReLU and clip layers from the input on")
    Ws: list[np.ndarray] = []
    bs: list[np.ndarray] = []
    n = net.suffix_in_size
    W: np.ndarray | None = None  # pending affine map since the last activation (None: identity)
    b: np.ndarray | None = None

    def pending(size: int) -> tuple[np.ndarray, np.ndarray]:
        return (np.eye(size), np.zeros(size)) if W is None else (W, b)  # type: ignore[return-value]

    for layer in net.layers:
        if isinstance(layer, Affine):
            if W is None:
                W, b = layer.W.astype(np.float64), layer.b.astype(np.float64)
            else:
                W, b = layer.W @ W, layer.W @ b + layer.b
            n = layer.out_size
        elif isinstance(layer, Elementwise):
            s = np.broadcast_to(np.asarray(layer.scale, float).reshape(-1), (n,))
            t = np.broadcast_to(np.asarray(layer.shift, float).reshape(-1), (n,))
            W0, b0 = pending(n)
            W, b = s[:, None] * W0, s * b0 + t
        elif isinstance(layer, Relu):
            W0, b0 = pending(n)
            Ws.append(W0)
            bs.append(b0)
            W = b = None
        elif isinstance(layer, Clip):
            W0, b0 = pending(n)
            Ws.append(np.vstack([W0, W0]))
            bs.append(np.concatenate([b0 - layer.lo, b0 - layer.hi]))
            W, b = np.hstack([np.eye(n), -np.eye(n)]), np.full(n, float(layer.lo))
        else:
            raise PatchlangError(f"layer {layer!r} cannot be verified")
    W0, b0 = pending(n)
    Ws.append(W0)
    bs.append(b0)
    return ReluNet(Ws, bs)


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
        l, u = np.maximum(zl, 0.0), np.maximum(zu, 0.0)
    return out


# ============================================================================ relaxations


def relu_relaxation(l: np.ndarray, u: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Slopes of the linear ReLU bounds ``alpha z <= relu(z) <= s z + t`` valid for ``l <= z <= u``.

    Stable neurons get exact slopes (1 or 0); unstable ones the triangle's upper side ``s = u/(u-l)``,
    ``t = -s l``, and the CROWN-adaptive lower slope (1 when ``u > -l``, else 0).
    """
    active = l >= 0
    unstable = (l < 0) & (u > 0)
    denom = np.where(unstable, u - l, 1.0)
    s = np.where(active, 1.0, np.where(unstable, u / denom, 0.0))
    t = np.where(unstable, -s * l, 0.0)
    alpha = np.where(active, 1.0, np.where(unstable, (u > -l).astype(float), 0.0))
    return alpha, s, t


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


def forward_bounds(rn: ReluNet, lo: np.ndarray, hi: np.ndarray) -> LayerBounds:
    """Hidden pre-activation bounds by symbolic forward propagation, intersected with interval bounds.

    Each neuron carries ``L(x) <= z <= U(x)`` with ``L``, ``U`` affine in the input; through an affine layer the
    positive weights take ``U`` for the upper function and ``L`` for the lower one (and vice versa); through a
    ReLU the upper function is scaled by the triangle slope and the lower one by the adaptive slope.  Costs
    ``O(B n^2 d)`` per layer, which is tiny when the input dimension ``d`` is small.
    """
    lo = np.atleast_2d(np.asarray(lo, float))
    hi = np.atleast_2d(np.asarray(hi, float))
    B, d = lo.shape
    c, r = (lo + hi) * 0.5, (hi - lo) * 0.5
    Lw = np.broadcast_to(np.eye(d), (B, d, d))
    Lb = np.zeros((B, d))
    Uw, Ub = Lw, Lb
    il, iu = lo, hi  # interval bounds of the current layer's inputs
    lowers, uppers = [], []
    for W, b in zip(rn.Ws[:-1], rn.bs[:-1]):
        Wp, Wn = np.maximum(W, 0.0), np.minimum(W, 0.0)
        zLw = Wp @ Lw + Wn @ Uw
        zUw = Wp @ Uw + Wn @ Lw
        zLb = Lb @ Wp.T + Ub @ Wn.T + b
        zUb = Ub @ Wp.T + Lb @ Wn.T + b
        l = _concretise(zLw, zLb, c, r, upper=False)
        u = _concretise(zUw, zUb, c, r, upper=True)
        jl, ju = affine_interval(W, b, il, iu)
        l, u = np.maximum(l, jl), np.minimum(u, ju)
        u = np.maximum(u, l)
        lowers.append(l)
        uppers.append(u)
        alpha, s, t = relu_relaxation(l, u)
        Lw = zLw * alpha[:, :, None]
        Lb = zLb * alpha
        Uw = zUw * s[:, :, None]
        Ub = zUb * s + t
        il, iu = np.maximum(l, 0.0), np.maximum(u, 0.0)
    return LayerBounds(lowers, uppers)


def backward_bounds(rn: ReluNet, lo: np.ndarray, hi: np.ndarray, bounds: LayerBounds | None = None
                    ) -> LayerBounds:
    """Hidden pre-activation bounds by full backward substitution (DeepPoly/CROWN) for every layer.

    Tighter than :func:`forward_bounds` when the input is high-dimensional (MNIST), at ``O(B n^3 L)`` cost.
    ``bounds`` (e.g. from :func:`forward_bounds`) are intersected layer by layer when given.
    """
    lo = np.atleast_2d(np.asarray(lo, float))
    hi = np.atleast_2d(np.asarray(hi, float))
    lowers: list[np.ndarray] = []
    uppers: list[np.ndarray] = []
    for k in range(rn.n_hidden):
        n = rn.Ws[k].shape[0]
        partial = LayerBounds(lowers, uppers)
        eye = np.eye(n)
        l, _, _ = _backward(rn, k, eye, np.zeros(n), lo, hi, partial)
        nu, _, _ = _backward(rn, k, -eye, np.zeros(n), lo, hi, partial)
        u = -nu
        if bounds is not None:
            l, u = np.maximum(l, bounds.lower[k]), np.minimum(u, bounds.upper[k])
        lowers.append(l)
        uppers.append(np.maximum(u, l))
    return LayerBounds(lowers, uppers)


def _backward(rn: ReluNet, layer: int, C: np.ndarray, d: np.ndarray, lo: np.ndarray, hi: np.ndarray,
              bounds: LayerBounds) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Lower bound of ``C z_layer + d`` (``z_layer`` the pre-activation of affine layer ``layer``).

    Returns ``(lb (B, k), coefficients on the input (B, k, d_in), constant (B, k))`` of the linear lower bound.
    """
    B = lo.shape[0]
    C = np.asarray(C, float)
    if C.ndim == 2:
        Lam = np.broadcast_to(C @ rn.Ws[layer], (B, C.shape[0], rn.Ws[layer].shape[1]))
        const = np.broadcast_to(C @ rn.bs[layer] + d, (B, C.shape[0])).copy()
    else:
        Lam = C @ rn.Ws[layer]
        const = C @ rn.bs[layer] + d
    for k in range(layer - 1, -1, -1):
        alpha, s, t = relu_relaxation(bounds.lower[k], bounds.upper[k])
        pos = Lam > 0
        slope = np.where(pos, alpha[:, None, :], s[:, None, :])
        const = const + np.einsum("bkn,bn->bk", np.where(pos, 0.0, Lam), t)
        Lam = Lam * slope
        const = const + Lam @ rn.bs[k]
        Lam = Lam @ rn.Ws[k]
    c, r = (lo + hi) * 0.5, (hi - lo) * 0.5
    lb = np.einsum("bkd,bd->bk", Lam, c) - np.einsum("bkd,bd->bk", np.abs(Lam), r) + const
    return lb, Lam, const


def spec_lower_bounds(rn: ReluNet, C: np.ndarray, d: np.ndarray, lo: np.ndarray, hi: np.ndarray,
                      bounds: LayerBounds) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Lower bounds of ``C y + d`` over each box, by backward substitution from the output.

    Returns ``(lb (B, k), Lam (B, k, d_in), corner (B, k, d_in))``: ``Lam`` are the input coefficients of the
    linear lower bound (their magnitude times the box width says which input dimension matters most), and
    ``corner`` the box corner where that linear bound is smallest (a counterexample candidate).
    """
    lo = np.atleast_2d(np.asarray(lo, float))
    hi = np.atleast_2d(np.asarray(hi, float))
    lb, Lam, _ = _backward(rn, rn.n_hidden, C, d, lo, hi, bounds)
    corner = np.where(Lam > 0, lo[:, None, :], hi[:, None, :])
    return lb, Lam, corner
