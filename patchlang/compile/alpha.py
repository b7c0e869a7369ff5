"""Optimised ReLU relaxation slopes (α-CROWN style), batched over domains, with exact gradients in numpy.

A CROWN lower bound of ``A y`` over a box is a function of the lower slopes ``alpha`` of the unstable ReLUs
(``alpha z <= relu(z)`` is valid for every ``alpha`` in ``[0, 1]``), so every choice gives a sound bound and the
best one can be searched for by projected gradient ascent.  The bound is piecewise linear in ``alpha``; its
gradient is exact and cheap: with ``x*`` the box corner minimising the final linear function, the derivative of
the bound with respect to ``alpha_k[i]`` is ``max(Lam_k[i], 0) * G_k[i]``, where ``Lam_k`` is the coefficient of
``relu(z_k)`` met during back-substitution and ``G_k`` is the value at ``x*`` of the relaxed network's linear
expression for ``z_k`` (one forward pass through the same relaxations, see :func:`crown_lower`).

Everything is batched: ``B`` domains (boxes, or one box with different ReLU phases fixed), ``K`` specification
rows each, and one slope per (domain, row, neuron), so every row gets its own relaxation.

Phase splits are expressed through the pre-activation bounds: a neuron fixed active has ``l >= 0``, one fixed
inactive ``u <= 0``; :func:`~patchlang.compile.bounds.relu_relaxation` then relaxes it exactly, and every later
layer's bounds are computed from (and intersected with) these clamped bounds, so the phase is enforced in all of
them.  The union of the two children of a split covers the parent domain, so the bounds stay sound.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from .bounds import LayerBounds, ReluNet, _mm, relu_relaxation

ROUNDING = 1e-9  # relative outward margin subtracted from every optimised bound


def outward(lb: np.ndarray) -> np.ndarray:
    """A lower bound pushed down by the float rounding margin ``1e-9 (1 + |lb|)``."""
    return lb - ROUNDING * (1.0 + np.abs(lb))


@dataclass
class CrownResult:
    lb: np.ndarray  # (B, K) lower bounds of A y + a0
    Lam: np.ndarray  # (B, K, d) coefficients of the linear lower bound on the input
    const: np.ndarray  # (B, K)
    x_star: np.ndarray  # (B, K, d) the box corner minimising each linear bound
    grads: list[np.ndarray] | None  # d lb / d alpha_k, (B, K, n_k), zero for stable neurons
    pos: list[np.ndarray]  # max(Lam_k, 0) per hidden layer (B, K, n_k): used to choose a neuron to split
    neg: list[np.ndarray]  # min(Lam_k, 0)
    beta_grads: list[np.ndarray] | None = None


def crown_lower(rn: ReluNet, top: int, A: np.ndarray, a0: np.ndarray, lo: np.ndarray, hi: np.ndarray,
                lower: list[np.ndarray], upper: list[np.ndarray], alpha: list[np.ndarray] | None = None,
                grad: bool = False, phase: list[np.ndarray] | None = None,
                beta: list[np.ndarray] | None = None,
                relax: list[tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]] | None = None) -> CrownResult:
    """Lower bound of ``A z_top + a0`` (``z_top``: pre-activation of affine layer ``top``; ``top = n_hidden`` is
    the output) over each box, by back-substitution through the ReLUs of layers ``top-1 .. 0``.

    ``A`` is ``(K, n_top)`` shared or ``(B, K, n_top)``; ``a0`` ``(K,)`` or ``(B, K)``; ``lower``/``upper`` the
    pre-activation bounds ``(B, n_k)`` of layers ``0 .. top-1``; ``alpha`` per layer ``(B, K, n_k)`` in
    ``[0, 1]`` (``None``: CROWN's adaptive choice).  With ``grad``, also the exact gradient of ``lb`` w.r.t.
    ``alpha`` (ties at a zero coefficient take one side, a valid choice of the piecewise-linear bound's slope).
    ``relax``: :func:`relaxations` of ``lower``/``upper``, when the caller evaluates the same bounds many times.
    """
    lo = np.atleast_2d(lo)
    hi = np.atleast_2d(hi)
    B = lo.shape[0]
    dt = rn.Ws[top].dtype  # float64, or float32 for the search iterates of :func:`optimise` (``fast``)
    A = np.asarray(A, dt)
    if A.ndim == 2:
        Lam = np.broadcast_to(A @ rn.Ws[top], (B, A.shape[0], rn.Ws[top].shape[1])).copy()
    else:
        Lam = _mm(A, rn.Ws[top])
    K = Lam.shape[1]
    const = np.broadcast_to(A @ rn.bs[top] + a0, (B, K)).astype(dt)
    pos_l: list[np.ndarray] = [None] * top  # type: ignore[list-item]
    neg_l: list[np.ndarray] = [None] * top  # type: ignore[list-item]
    aeff_l: list[np.ndarray] = [None] * top  # type: ignore[list-item]
    s_l: list[np.ndarray] = [None] * top  # type: ignore[list-item]
    t_l: list[np.ndarray] = [None] * top  # type: ignore[list-item]
    unst_l: list[np.ndarray] = [None] * top  # type: ignore[list-item]
    for k in range(top - 1, -1, -1):
        a_def, s, t, unstable = relax[k] if relax is not None else relaxation(lower[k], upper[k])
        if alpha is None:
            a = a_def[:, None, :]
        else:
            a = np.where(unstable[:, None, :], np.clip(alpha[k], 0.0, 1.0), a_def[:, None, :])
        pos = np.maximum(Lam, 0.0)
        neg = np.minimum(Lam, 0.0)
        const += (neg * t[:, None, :]).sum(axis=2)
        Lz = pos * a + neg * s[:, None, :]
        if beta is not None and phase is not None:
            Lz = Lz + phase[k][:, None, :] * np.maximum(beta[k], 0.0)
        const += Lz @ rn.bs[k]
        pos_l[k], neg_l[k], aeff_l[k], s_l[k], t_l[k], unst_l[k] = pos, neg, a, s, t, unstable
        Lam = _mm(Lz, rn.Ws[k])
    c, r = (lo + hi) * 0.5, (hi - lo) * 0.5
    lb = np.einsum("bkd,bd->bk", Lam, c) - np.einsum("bkd,bd->bk", np.abs(Lam), r) + const
    x_star = c[:, None, :] - np.sign(Lam) * r[:, None, :]
    grads = None
    bgrads = None
    if grad:
        grads = []
        bgrads = []
        G = _mm(x_star, rn.Ws[0].T) + rn.bs[0]  # value of z_0's expression at x*
        for k in range(top):
            grads.append(G * pos_l[k] * unst_l[k][:, None, :])
            if phase is not None:
                bgrads.append(G * phase[k][:, None, :])
            if k + 1 < top:
                Ah = np.where(pos_l[k] > 0, G * aeff_l[k],
                              np.where(neg_l[k] < 0, G * s_l[k][:, None, :] + t_l[k][:, None, :], 0.0))
                G = _mm(Ah, rn.Ws[k + 1].T) + rn.bs[k + 1]
    return CrownResult(lb, Lam, const, x_star, grads, pos_l, neg_l, bgrads)


def relaxation(l: np.ndarray, u: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """The ReLU relaxation of bounds ``l``/``u`` and the mask of unstable neurons (fixed while slopes move)."""
    a_def, s, t = relu_relaxation(l, u)
    return a_def.astype(l.dtype), s.astype(l.dtype), t.astype(l.dtype), (l < 0) & (u > 0)


def init_alpha(lower: list[np.ndarray], upper: list[np.ndarray], K: int, upto: int | None = None
               ) -> list[np.ndarray]:
    """CROWN's adaptive slopes (1 where ``u > -l``) as a starting point, one per row: ``(B, K, n_k)``."""
    out = []
    for l, u in list(zip(lower, upper))[:upto]:
        a, _, _ = relu_relaxation(l, u)
        out.append(np.repeat(a[:, None, :], K, axis=1))
    return out


def single(rn: ReluNet) -> ReluNet:
    """``rn`` in float32 (cached on it): for search iterates only, never for a bound that is reported."""
    cached = getattr(rn, "_float32", None)
    if cached is None:
        cached = ReluNet([W.astype(np.float32) for W in rn.Ws], [b.astype(np.float32) for b in rn.bs])
        rn._float32 = cached  # type: ignore[attr-defined]
    return cached


def optimise(rn: ReluNet, top: int, A: np.ndarray, a0: np.ndarray, lo: np.ndarray, hi: np.ndarray,
             lower: list[np.ndarray], upper: list[np.ndarray], alpha: list[np.ndarray] | None = None,
             steps: int = 20, lr: float = 0.1, stop_above: np.ndarray | float | None = None,
             on_step=None, phase: list[np.ndarray] | None = None, beta: list[np.ndarray] | None = None,
             lr_beta: float = 0.05, fast: bool = False
             ) -> tuple[CrownResult, np.ndarray, list[np.ndarray], list[np.ndarray] | None]:
    """Projected Adam ascent on the slopes (and split multipliers); returns ``(last result, best lb per row,
    best alphas, best betas)``.

    Every iterate is a sound bound (``alpha`` is clipped to ``[0, 1]``, ``beta`` to ``>= 0`` inside
    :func:`crown_lower` as well), so the element-wise best over the iterations is one too.  ``stop_above``: a
    domain whose every row exceeds it leaves the batch (a refutation needs no better bound; the later steps
    then cost only the domains left: on mnist_fc many children are refuted after a step or two); the result
    returned then holds each domain's last iterate, without gradients (the last step computes none either).  ``on_step`` (tests) is
    called with each iterate's ``(alpha, lb)``.

    ``fast``: the iterates are computed in float32 (half the cost of the products) and only *choose* the
    parameters; the bound returned is then one float64 evaluation of the chosen ones (each row's bound depends on
    its own slopes and multipliers only), so it is as sound as in float64 throughout.
    """
    if fast:
        f32 = np.float32
        res, _, al, be = optimise(single(rn), top, np.asarray(A, f32), np.asarray(a0, f32), np.asarray(lo, f32),
                                  np.asarray(hi, f32), [np.asarray(x, f32) for x in lower],
                                  [np.asarray(x, f32) for x in upper],
                                  None if alpha is None else [np.asarray(a, f32) for a in alpha], steps, lr,
                                  stop_above, on_step, None if phase is None else [np.asarray(p, f32) for p in phase],
                                  None if beta is None else [np.asarray(b, f32) for b in beta], lr_beta)
        al = [a.astype(float) for a in al]
        be = None if be is None else [b.astype(float) for b in be]
        res = crown_lower(rn, top, A, a0, lo, hi, lower, upper, al, phase=phase, beta=be)
        return res, res.lb, al, be
    lo = np.atleast_2d(lo)
    hi = np.atleast_2d(hi)
    B = lo.shape[0]
    K = np.asarray(A).shape[-2]
    dt = lo.dtype
    alpha = [a.astype(dt) for a in (alpha if alpha is not None else init_alpha(lower, upper, K, top))]
    use_beta = phase is not None
    if use_beta:
        beta = [b.astype(dt) for b in beta] if beta is not None else [np.zeros((B, K, p.shape[1]), dt) for p in phase]
    # every parameter in one array (B, K, N), the layers' slopes then multipliers as views of it: the Adam step
    # is a few operations on one array instead of a few per layer and kind (small arrays: numpy's per-call cost)
    blocks = alpha + (beta if use_beta else [])  # type: ignore[operator]
    cuts = np.cumsum([0] + [x.shape[2] for x in blocks])
    n_a = len(alpha)
    P = np.concatenate(blocks, axis=2) if blocks else np.zeros((B, K, 0), dt)
    ceiling = np.concatenate([np.full(x.shape[2], 1.0 if k < n_a else np.inf, dt) for k, x in enumerate(blocks)]
                             + [np.zeros(0, dt)])
    rate = np.concatenate([np.full(x.shape[2], lr if k < n_a else lr_beta, dt) for k, x in enumerate(blocks)]
                          + [np.zeros(0, dt)])

    def split(X: np.ndarray) -> list[np.ndarray]:
        return [X[:, :, cuts[k]:cuts[k + 1]] for k in range(len(blocks))]

    m = np.zeros_like(P)
    v = np.zeros_like(P)
    best = np.full((B, K), -np.inf)
    best_P = P.copy()
    b1, b2 = 0.9, 0.999
    # the domains still iterated (``act``) and their inputs; a domain whose every row is above ``stop_above`` is
    # retired (its bound needs no improvement) and the rest go on in a smaller batch, once an eighth of the batch
    # is done (compacting costs about as much as a step)
    act = np.arange(B)
    w = _Work(lo, hi, list(lower[:top]), list(upper[:top]), [relaxation(lower[k], upper[k]) for k in range(top)],
              None if phase is None else list(phase), np.asarray(A), np.asarray(a0),
              None if stop_above is None else np.broadcast_to(np.asarray(stop_above, float), (B, K)))
    retired: list[tuple[np.ndarray, CrownResult]] = []  # each retired domain's last result
    last = max(1, steps) - 1
    for it in range(last + 1):
        params = split(P)
        res = crown_lower(rn, top, w.A, w.a0, w.lo, w.hi, w.lower, w.upper, params[:n_a], grad=it < last,
                          phase=w.phase, beta=params[n_a:] if use_beta else None, relax=w.relax)
        if on_step is not None:
            on_step(params[:n_a], res.lb)
        cur = best[act]
        better = res.lb > cur
        if np.any(better):
            best[act] = np.where(better, res.lb, cur)
            best_P[act] = np.where(better[:, :, None], P, best_P[act])
        if it == last or P.shape[2] == 0:
            break
        if w.stop is not None:
            done = np.all(best[act] > w.stop, axis=1)
            if np.all(done):
                break
            if done.sum() >= max(1, act.size // 8):
                retired.append((act[done], _rows(res, done)))
                keep = ~done
                act = act[keep]
                res = _rows(res, keep)
                P, m, v = P[keep], m[keep], v[keep]
                w = w.rows(keep)
        g = np.concatenate(res.grads + (res.beta_grads if use_beta else []), axis=2)  # type: ignore[operator]
        m = b1 * m + (1 - b1) * g
        v = b2 * v + (1 - b2) * g * g
        step = (0.98 ** it) * rate * ((m / (1 - b1 ** (it + 1))) / (np.sqrt(v / (1 - b2 ** (it + 1))) + 1e-12))
        P = np.clip(P + step, 0.0, ceiling)
    best_params = split(best_P)
    if retired:
        res = _merge(retired + [(act, res)], B)
    return res, best, best_params[:n_a], (best_params[n_a:] if use_beta else None)  # type: ignore[return-value]


@dataclass
class _Work:
    """The inputs of :func:`optimise` for the domains still iterated (a per-domain ``A``, ``a0`` or threshold
    is subset with them; shared ones are kept)."""

    lo: np.ndarray
    hi: np.ndarray
    lower: list[np.ndarray]
    upper: list[np.ndarray]
    relax: list[tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]]
    phase: list[np.ndarray] | None
    A: np.ndarray
    a0: np.ndarray
    stop: np.ndarray | None

    def rows(self, keep: np.ndarray) -> "_Work":
        return _Work(self.lo[keep], self.hi[keep], [x[keep] for x in self.lower], [x[keep] for x in self.upper],
                     [tuple(x[keep] for x in r) for r in self.relax],  # type: ignore[misc]
                     None if self.phase is None else [x[keep] for x in self.phase],
                     self.A[keep] if self.A.ndim == 3 else self.A, self.a0[keep] if self.a0.ndim == 2 else self.a0,
                     None if self.stop is None else self.stop[keep])


def _rows(r: CrownResult, keep: np.ndarray) -> CrownResult:
    """The domains ``keep`` of a result."""
    def sub(x: list[np.ndarray] | None) -> list[np.ndarray] | None:
        return None if x is None else [a[keep] for a in x]
    return CrownResult(r.lb[keep], r.Lam[keep], r.const[keep], r.x_star[keep], sub(r.grads), sub(r.pos),
                       sub(r.neg), sub(r.beta_grads))


def _merge(parts: list[tuple[np.ndarray, CrownResult]], B: int) -> CrownResult:
    """One result of ``B`` domains from results of disjoint subsets (``(indices, result)``); no gradients."""
    def put(get) -> np.ndarray:
        first = get(parts[0][1])
        out = np.empty((B,) + first.shape[1:], first.dtype)
        for idx, r in parts:
            out[idx] = get(r)
        return out
    n = len(parts[0][1].pos)
    return CrownResult(put(lambda r: r.lb), put(lambda r: r.Lam), put(lambda r: r.const), put(lambda r: r.x_star),
                       None, [put(lambda r, k=k: r.pos[k]) for k in range(n)],
                       [put(lambda r, k=k: r.neg[k]) for k in range(n)])


def optimised_layer_bounds(rn: ReluNet, lo: np.ndarray, hi: np.ndarray, start: LayerBounds | None = None,
                           steps: int = 20, lr: float = 0.1, from_layer: int = 1) -> tuple[LayerBounds, np.ndarray]:
    """Pre-activation bounds of every hidden layer with optimised slopes, layer by layer, intersected with
    ``start`` (default: CROWN bounds; or a domain's bounds with split phases clamped).

    Only neurons that the current bounds leave unstable are bounded again (two rows each: lower and upper), and
    only in layers ``>= from_layer``; boxes are padded to the batch's largest count.  ``steps = 0``: plain CROWN
    slopes.  Returns the bounds and, per box, whether its domain is empty (some lower bound above its upper
    bound: the split phases contradict each other there).
    """
    lo = np.atleast_2d(np.asarray(lo, float))
    hi = np.atleast_2d(np.asarray(hi, float))
    B = lo.shape[0]
    if start is None:
        from .bounds import backward_bounds

        start = backward_bounds(rn, lo, hi)
    lower: list[np.ndarray] = []
    upper: list[np.ndarray] = []
    empty = np.zeros(B, bool)
    bi = np.arange(B)[:, None]
    for k in range(rn.n_hidden):
        l, u = start.lower[k].copy(), start.upper[k].copy()
        if k >= from_layer:
            sel = (l < 0) & (u > 0)
            cnt = sel.sum(axis=1)
            mmax = int(cnt.max()) if B else 0
            if mmax:
                idx = np.argsort(~sel, axis=1, kind="stable")[:, :mmax]
                n = rn.Ws[k].shape[0]
                E = np.zeros((B, 2 * mmax, n))
                ri = np.arange(mmax)[None, :]
                E[bi, ri, idx] = 1.0
                E[bi, mmax + ri, idx] = -1.0
                a0 = np.zeros((B, 2 * mmax))
                if steps > 0:
                    _, best, _, _ = optimise(rn, k, E, a0, lo, hi, lower, upper, steps=steps, lr=lr)
                else:
                    best = crown_lower(rn, k, E, a0, lo, hi, lower, upper).lb
                best = outward(best)
                valid = ri < cnt[:, None]
                l[bi, idx] = np.maximum(l[bi, idx], np.where(valid, best[:, :mmax], -np.inf))
                u[bi, idx] = np.minimum(u[bi, idx], np.where(valid, -best[:, mmax:], np.inf))
        empty |= np.any(l > u, axis=1)
        lower.append(l)
        upper.append(np.maximum(u, l))
    return LayerBounds(lower, upper), empty
