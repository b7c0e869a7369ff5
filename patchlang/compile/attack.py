"""Adversarial inputs as queries: the region encoding of :mod:`patchlang.compile.verify` (the network with the
input as the unknowns) plus the norm of the input change, and the bounds that make it cheap.

An attack asks "which input near ``x0`` makes the decision one of the target labels?".  That is a verification
query turned around: the *unsafe* region is "decision in the targets" (:func:`target_spec`), the box is ``x0``'s
neighbourhood cut to the domain, and the Query gains the size of ``x - x0`` as objective
(:func:`encode_attack_query`, through the encoder's ``extend`` hook: there is no second network encoder).

Bounds matter more than the solver.  For a budget of ``k`` changed inputs the first layer's pre-activations can
move only by the ``k`` largest single-input effects (:func:`l0_layer_bounds`), which is far tighter than the whole
box when ``k`` is small; the deeper layers are bounded from that by backward (CROWN) substitution.  Those bounds
are sound only together with the budget row, which the query then carries.
"""

from __future__ import annotations

from collections import OrderedDict
from dataclasses import dataclass

import numpy as np
import scipy.sparse as sp

from ..query import Query, QueryBuilder
from .bounds import LayerBounds, ReluNet, backward_bounds, forward_bounds, spec_lower_bounds
from .verify import UnsafeSpec, encode_region_query

NORMS = ("l0", "l1", "linf")


def target_spec(label: int, targets: list[int], n_out: int, decision: str = "argmax", away: bool | None = None
                ) -> UnsafeSpec:
    """"The decision is one of ``targets``" as an OR of conjunctions ``A y < 0`` (one conjunction per target).

    Away from ``label`` (every other label a target): target ``t`` needs only ``y_t`` above ``y_label``, one row;
    a named target ``t`` must beat every other output (``away`` forces either reading).  ``argmin`` models flip
    the signs.
    """
    sign = 1.0 if decision == "argmax" else -1.0
    if away is None:
        away = sorted(targets) == sorted(j for j in range(n_out) if j != label)
    A, conj = [], []
    for j, t in enumerate(targets):
        for i in ([label] if away else [i for i in range(n_out) if i != t]):
            a = np.zeros(n_out)
            a[i], a[t] = sign, -sign  # y_i - y_t < 0: t beats i
            A.append(a)
            conj.append(j)
    R = len(A)
    return UnsafeSpec(np.array(A).reshape(R, n_out), np.zeros(R), np.array(conj, dtype=np.int64),
                      np.ones(R, dtype=bool), len(targets), [f"decision {t}" for t in targets])


# ============================================================================ bounds


_BOX_CACHE: OrderedDict[tuple, tuple[list[np.ndarray], LayerBounds]] = OrderedDict()
BOX_CACHE_SIZE = 16


def box_layer_bounds(rn: ReluNet, lo: np.ndarray, hi: np.ndarray) -> LayerBounds:
    """Hidden pre-activation bounds over the box (forward symbolic, then backward substitution).

    Memoised on the weight arrays and the box: an attack over a fixed domain asks for the same box for every
    input (and AIGENT for every candidate patch), and the backward pass over a 784-input box is the costliest
    numpy step of the patch method.  The cache keeps the arrays it is keyed on alive, so their ids stay theirs;
    callers must not change the arrays in place (nothing here does) nor the returned bounds."""
    lo2, hi2 = np.asarray(lo, float)[None], np.asarray(hi, float)[None]
    key = (tuple((id(W), W.shape) for W in (*rn.Ws, *rn.bs)), lo2.tobytes(), hi2.tobytes())
    hit = _BOX_CACHE.get(key)
    if hit is not None:
        _BOX_CACHE.move_to_end(key)
        return hit[1]
    bounds = backward_bounds(rn, lo2, hi2, forward_bounds(rn, lo2, hi2))
    _BOX_CACHE[key] = ([*rn.Ws, *rn.bs], bounds)
    if len(_BOX_CACHE) > BOX_CACHE_SIZE:
        _BOX_CACHE.popitem(last=False)
    return bounds


def l0_layer_bounds(rn: ReluNet, x0: np.ndarray, lo: np.ndarray, hi: np.ndarray, k: int,
                    box: LayerBounds | None = None) -> LayerBounds:
    """Sound pre-activation bounds over the inputs in ``[lo, hi]`` that differ from ``x0`` in at most ``k``
    coordinates.

    First layer: ``z(x0)`` plus the sum of the ``k`` largest gains ``max(W_ji (hi_i - x0_i), W_ji (lo_i - x0_i),
    0)`` (and the same for losses), which is exact per neuron.  Deeper layers: backward substitution over the box
    of first-layer activations.  Intersected with ``box`` (the bounds over the whole box) when given.
    """
    W, b = rn.Ws[0], rn.bs[0]
    z0 = W @ x0 + b
    up_gain = np.maximum(np.maximum(W * (hi - x0), W * (lo - x0)), 0.0)
    down_gain = np.minimum(np.minimum(W * (hi - x0), W * (lo - x0)), 0.0)
    k = int(min(max(k, 0), W.shape[1]))
    if k == 0:
        u0, l0 = z0.copy(), z0.copy()
    else:
        u0 = z0 + np.sum(-np.partition(-up_gain, k - 1, axis=1)[:, :k], axis=1)
        l0 = z0 + np.sum(np.partition(down_gain, k - 1, axis=1)[:, :k], axis=1)
    slack = 1e-9 * (1.0 + np.abs(z0))  # float rounding of the sums above
    l0, u0 = l0 - slack, u0 + slack
    lowers, uppers = [l0[None]], [u0[None]]
    if rn.n_hidden > 1:
        sub = ReluNet(rn.Ws[1:], rn.bs[1:])
        hlo, hhi = np.maximum(l0, 0.0)[None], np.maximum(u0, 0.0)[None]
        deeper = backward_bounds(sub, hlo, hhi, forward_bounds(sub, hlo, hhi))
        lowers += deeper.lower
        uppers += deeper.upper
    if box is not None:
        lowers = [np.maximum(a, b_) for a, b_ in zip(lowers, box.lower)]
        uppers = [np.maximum(np.minimum(a, b_), lw) for a, b_, lw in zip(uppers, box.upper, lowers)]
    return LayerBounds(lowers, uppers)


def l0_concretize(Lam: np.ndarray, const: np.ndarray, x0: np.ndarray, lo: np.ndarray, hi: np.ndarray, k: int
                  ) -> tuple[np.ndarray, np.ndarray]:
    """Minimum of ``Lam x + const`` (rows ``(R, d)``) over the inputs of ``[lo, hi]`` differing from ``x0`` in at
    most ``k`` coordinates: the value at ``x0`` less the ``k`` largest per-input decreases.  Also returns those
    decreases ``(R, d)`` (the *gains* an input offers towards lowering each row)."""
    gains = -np.minimum(np.minimum(Lam * (lo - x0), Lam * (hi - x0)), 0.0)
    base = Lam @ x0 + const
    k = int(min(max(k, 0), gains.shape[1]))
    if k == 0:
        return base, gains
    return base - np.sum(-np.partition(-gains, k - 1, axis=1)[:, :k], axis=1), gains


def l0_crown_bounds(rn: ReluNet, x0: np.ndarray, lo: np.ndarray, hi: np.ndarray, k: int,
                    box: LayerBounds | None = None) -> LayerBounds:
    """:func:`l0_layer_bounds` tightened by backward substitution down to the input, concretised over the
    budget of ``k`` changed inputs (:func:`l0_concretize`) instead of the first layer's box: keeps the
    correlation between first-layer neurons that the box loses."""
    base = l0_layer_bounds(rn, x0, lo, hi, k, box)
    lowers, uppers = [base.lower[0]], [base.upper[0]]
    for m in range(1, rn.n_hidden):
        n = rn.Ws[m].shape[0]
        sub = ReluNet(rn.Ws[:m + 1], rn.bs[:m + 1])
        C = np.vstack([np.eye(n), -np.eye(n)])
        _, Lam, const, _ = spec_lower_bounds(sub, C, np.zeros(2 * n), lo[None], hi[None],
                                             LayerBounds(lowers, uppers))
        lb, _ = l0_concretize(Lam[0], const[0], x0, lo, hi, k)
        slack = 1e-9 * (1.0 + np.abs(lb))
        l = np.maximum(lb[:n] - slack[:n], base.lower[m][0])
        u = np.minimum(-lb[n:] + slack[n:], base.upper[m][0])
        lowers.append(l[None])
        uppers.append(np.maximum(u, l)[None])
    return LayerBounds(lowers, uppers)


def l0_open_inputs(rn: ReluNet, spec: UnsafeSpec, bounds: LayerBounds, x0: np.ndarray, lo: np.ndarray,
                   hi: np.ndarray, k: int, margin: float) -> tuple[np.ndarray, list[np.ndarray]]:
    """Per target (conjunction): refuted or not, and the inputs an attack with at most ``k`` changes can use.

    ``g(x) = Lam x + const`` is a sound linear lower bound of each unsafe row over the budget (``bounds`` must
    be valid there); an attack changing the set ``S`` needs, for every row of its target, the gains of ``S`` to
    reach ``T = g(x0) + margin``.  So the target is refuted when the ``k`` largest gains fall short, and an input
    can take part only if its gain plus the ``k - 1`` largest others' reaches ``T`` (the rest stay at ``x0``).
    """
    _, Lam, const, _ = spec_lower_bounds(rn, spec.A, -spec.d, lo[None], hi[None], bounds)
    lb, gains = l0_concretize(Lam[0], const[0], x0, lo, hi, k)
    tol = 1e-9 * (1.0 + np.abs(Lam[0] @ x0) + np.abs(const[0]))
    refuted_row = lb > -margin + tol
    refuted = np.zeros(spec.n_conj, dtype=bool)
    np.logical_or.at(refuted, spec.conj, refuted_row)
    need = Lam[0] @ x0 + const[0] + margin - tol  # T per row
    if k > 1:
        srt = -np.sort(-gains, axis=1)
        top_k1 = srt[:, : k - 1].sum(axis=1)
        kth = srt[:, k - 2]  # the smallest of the k - 1 largest
    else:
        top_k1, kth = np.zeros(gains.shape[0]), np.full(gains.shape[0], np.inf)
    usable_row = (gains >= (need - top_k1)[:, None]) | (gains >= kth[:, None]) & (gains > 0)
    usable = []
    for j in range(spec.n_conj):
        rows = np.nonzero(spec.conj == j)[0]
        ok = np.all(usable_row[rows], axis=0) & (hi > lo) if rows.size else (hi > lo)
        usable.append(np.nonzero(ok)[0])
    return refuted, usable


def refuted_targets(rn: ReluNet, spec: UnsafeSpec, bounds: LayerBounds, margin: float) -> np.ndarray:
    """Which conjunctions (targets) the bounds alone rule out: some row's lower bound exceeds ``-margin``.

    Evaluated on the network above the first layer, over the first layer's activation box, so that it is valid
    for whatever input set the bounds were computed for (the whole box or a budget of changed inputs).
    """
    hlo = np.maximum(bounds.lower[0], 0.0)
    hhi = np.maximum(bounds.upper[0], 0.0)
    if rn.n_hidden == 0:  # pragma: no cover - a purely affine model has no hidden layer to bound from
        return np.zeros(spec.n_conj, dtype=bool)
    sub = ReluNet(rn.Ws[1:], rn.bs[1:])
    sb = LayerBounds(bounds.lower[1:], bounds.upper[1:])
    lb, _, _, _ = spec_lower_bounds(sub, spec.A, -spec.d, hlo, hhi, sb)
    row_out = lb[0] > -margin + 1e-9 * (1.0 + np.abs(spec.d))
    out = np.zeros(spec.n_conj, dtype=bool)
    np.logical_or.at(out, spec.conj, row_out)
    return out


# ============================================================================ the Query


@dataclass
class AttackEncoding:
    query: Query
    inputs: np.ndarray  # variable index of each input
    outputs: np.ndarray
    norm: np.ndarray  # l0: one binary per movable input; l1: |x_i - x0_i| per movable input; linf: one variable
    movable: np.ndarray  # the inputs that may move (hi > lo)
    n_unstable: int


def encode_attack_query(rn: ReluNet, x0: np.ndarray, lo: np.ndarray, hi: np.ndarray, spec: UnsafeSpec,
                        conj_open: np.ndarray | None, norm: str, bounds: LayerBounds, margin: float,
                        budget: float | None = None, minimize: bool = True) -> AttackEncoding:
    """Some ``x`` in ``[lo, hi]`` whose outputs lie ``margin`` inside the target region, the size of
    ``x - x0`` in ``norm`` at most ``budget`` and (``minimize``) as small as possible.

    ``bounds`` must be sound for every ``x`` the query allows (with an l0 ``budget`` they may be the
    :func:`l0_layer_bounds` of that budget).
    """
    x0 = np.asarray(x0, float)
    movable = np.nonzero(hi > lo)[0]
    holder: dict[str, np.ndarray] = {}

    def extend(qb: QueryBuilder, x: np.ndarray) -> None:
        m = movable.size
        up, down = hi[movable] - x0[movable], x0[movable] - lo[movable]
        xi = x[movable]
        r = np.arange(m)
        if norm == "l0":
            v = qb.add_vars(m, 0.0, 1.0, integer=True, name="changed", kind="binary")
            # x_i - x0_i <= up_i b_i  and  x0_i - x_i <= down_i b_i: an input moves only when its indicator is on
            M1 = sp.coo_matrix((np.concatenate([np.ones(m), -up]), (np.concatenate([r, r]), np.concatenate([xi, v]))),
                               shape=(m, qb.n_vars))
            M2 = sp.coo_matrix((np.concatenate([-np.ones(m), -down]), (np.concatenate([r, r]),
                                                                       np.concatenate([xi, v]))), shape=(m, qb.n_vars))
            qb.add_rows(M1, -np.inf, x0[movable], label="changed inputs (up)", group="norm")
            qb.add_rows(M2, -np.inf, -x0[movable], label="changed inputs (down)", group="norm")
        elif norm == "l1":
            v = qb.add_vars(m, 0.0, np.maximum(up, down), name="abs change", kind="norm")
            for sign in (1.0, -1.0):  # t_i >= +-(x_i - x0_i)
                M = sp.coo_matrix((np.concatenate([np.full(m, sign), -np.ones(m)]),
                                   (np.concatenate([r, r]), np.concatenate([xi, v]))), shape=(m, qb.n_vars))
                qb.add_rows(M, -np.inf, sign * x0[movable], label="abs change", group="norm")
        else:
            v = qb.add_vars(1, 0.0, float(np.max(np.maximum(up, down), initial=0.0)), name="linf change", kind="norm")
            for sign in (1.0, -1.0):
                M = sp.coo_matrix((np.concatenate([np.full(m, sign), -np.ones(m)]),
                                   (np.concatenate([r, r]), np.concatenate([xi, np.full(m, v[0])]))),
                                  shape=(m, qb.n_vars))
                qb.add_rows(M, -np.inf, sign * x0[movable], label="linf change", group="norm")
        if budget is not None and np.isfinite(budget):
            qb.add_rows(sp.coo_matrix((np.ones(v.size), (np.zeros(v.size, dtype=np.int64), v)), shape=(1, qb.n_vars)),
                        -np.inf, float(budget), label=f"bound {norm} <= {budget:g}", group="bound")
        if minimize:
            qb.add_objective(v, 1.0)
        holder["norm"] = v

    enc = encode_region_query(rn, lo, hi, spec, conj_open, bounds, tol=-margin, name="attack", extend=extend)
    return AttackEncoding(enc.query, enc.inputs, enc.outputs, holder["norm"], movable, enc.n_unstable)


def attack_start(rn: ReluNet, enc: AttackEncoding, bounds: LayerBounds, x: np.ndarray, x0: np.ndarray,
                 norm: str) -> np.ndarray:
    """A full assignment of the Query's variables for the input ``x`` (a MIP start): the inputs, every layer's
    pre-activations, the open ReLUs' outputs and the norm variables, in the encoder's variable order."""
    q = enc.query
    start = np.zeros(q.n_vars)
    start[enc.inputs] = x
    h = np.asarray(x, float)
    blocks = {b.name: b for b in q.var_blocks}
    for k in range(rn.n_hidden + 1):
        z = rn.Ws[k] @ h + rn.bs[k]
        start[blocks[f"z{k}"].slice] = z
        if k == rn.n_hidden:
            break
        l, u = bounds.lower[k][0], bounds.upper[k][0]
        unstable = ~((l >= 0) | (u <= 0))
        if f"relu{k}" in blocks:
            start[blocks[f"relu{k}"].slice] = np.maximum(z[unstable], 0.0)
        h = np.maximum(z, 0.0)
    d = (x - x0)[enc.movable]
    if norm == "l0":
        start[enc.norm] = (np.abs(d) > 0).astype(float)
    elif norm == "l1":
        start[enc.norm] = np.abs(d)
    else:
        start[enc.norm] = np.max(np.abs(d), initial=0.0)
    return start


# ============================================================================ one changed input, exactly


@dataclass
class LineWalk:
    """Per movable input ``i``: whether changing ``x0_i`` alone (within ``[lo_i, hi_i]``) can reach the target
    region with ``margin``, and where."""

    inputs: np.ndarray  # the movable inputs, in order
    found: np.ndarray  # bool per input: a candidate value exists (by the relaxed test)
    value: np.ndarray  # the candidate value of that input (nan where none)
    pieces: int  # linear pieces walked in total


def single_input_walk(rn: ReluNet, x0: np.ndarray, lo: np.ndarray, hi: np.ndarray, spec: UnsafeSpec,
                      margin: float, max_steps: int = 100_000) -> LineWalk:
    """Decide "some single input change reaches the targets" exactly, for every input at once.

    Along ``x0 + t e_i`` the network is piecewise linear in ``t``: walk the pieces from ``lo_i`` to ``hi_i``
    (all inputs in lockstep, vectorised), carrying every neuron's pre-activation as ``a + s t`` under the
    activation pattern just right of ``t``; the next breakpoint is the nearest root of an active piece.  On each
    piece every unsafe row is affine in ``t``, so whether some ``t`` meets a conjunction's rows is an interval
    intersection.  The test is relaxed by a small tolerance (a candidate is only a candidate: the caller
    confirms it), so a float rounding can add candidates but never hide an attack.
    """
    idx = np.nonzero(hi > lo)[0]
    P = idx.size
    t = (lo - x0)[idx].astype(float)
    t_end = (hi - x0)[idx].astype(float)
    found = np.zeros(P, dtype=bool)
    value = np.full(P, np.nan)
    alive = np.ones(P, dtype=bool)
    z00 = rn.Ws[0] @ x0 + rn.bs[0]
    s0_all = rn.Ws[0][:, idx].T  # (P, n0)
    pieces = 0
    for _ in range(max_steps):
        live = np.nonzero(alive)[0]
        if live.size == 0:
            break
        tl = t[live]
        a = np.broadcast_to(z00, (live.size, z00.size)).copy()
        s = s0_all[live].copy()
        nxt = t_end[live].copy()
        for k in range(rn.n_hidden):
            z = a + s * tl[:, None]
            eps = 1e-12 * (1.0 + np.abs(a))
            on = (z > eps) | ((np.abs(z) <= eps) & (s > 0))
            with np.errstate(divide="ignore", invalid="ignore"):
                root = np.where(s != 0, -a / s, np.inf)
            root = np.where(root > tl[:, None] + 1e-12 * (1.0 + np.abs(tl[:, None])), root, np.inf)
            nxt = np.minimum(nxt, root.min(axis=1))
            a = np.where(on, a, 0.0) @ rn.Ws[k + 1].T + rn.bs[k + 1]
            s = np.where(on, s, 0.0) @ rn.Ws[k + 1].T
        pieces += live.size
        va = a @ spec.A.T - spec.d  # (L, R): row value = va + vs * t
        vs = s @ spec.A.T
        tol = 1e-7 * (1.0 + np.abs(va) + np.abs(vs) * np.maximum(np.abs(tl), np.abs(nxt))[:, None])
        rhs = -margin + tol - va
        with np.errstate(divide="ignore", invalid="ignore"):
            lim = rhs / vs
        upper = np.where(vs > 0, lim, np.inf)
        lower = np.where(vs < 0, lim, -np.inf)
        never = (vs == 0) & (rhs < 0)
        for j in range(spec.n_conj):
            rows = spec.conj == j
            L = np.maximum(tl, lower[:, rows].max(axis=1, initial=-np.inf))
            U = np.minimum(nxt, upper[:, rows].min(axis=1, initial=np.inf))
            ok = (L <= U) & ~never[:, rows].any(axis=1) & ~found[live]
            if np.any(ok):
                hit = live[ok]
                found[hit] = True
                value[hit] = x0[idx[hit]] + (L[ok] + U[ok]) / 2
        t[live] = nxt
        alive[live] = (nxt < t_end[live]) & ~found[live]
    else:  # pragma: no cover - far more pieces than any network here has
        raise RuntimeError("single_input_walk: too many linear pieces")
    return LineWalk(idx, found, value, pieces)


def equality_spec(values: np.ndarray, rows: np.ndarray) -> UnsafeSpec:
    """"Output ``m`` equals ``values[m]``" for each ``m`` in ``rows``, as one conjunction (``y_m <= v`` and
    ``-y_m <= -v``); with margin 0 the attack query then reproduces those values exactly."""
    n = values.size
    rows = np.asarray(rows, dtype=np.int64)
    A = np.zeros((2 * rows.size, n))
    A[np.arange(rows.size), rows] = 1.0
    A[rows.size + np.arange(rows.size), rows] = -1.0
    d = np.concatenate([values[rows], -values[rows]])
    return UnsafeSpec(A, d, np.zeros(2 * rows.size, dtype=np.int64), np.zeros(2 * rows.size, dtype=bool), 1,
                      ["reproduce the layer values"])
