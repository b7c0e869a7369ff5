"""Lowering of a Query's piecewise atoms to mixed-integer linear rows, shared by HiGHS and Gurobi.

ReLU ``y = max(0, x)`` with ``l < 0 < u`` (from the variable bounds, which the compiler derived soundly):
``y >= x``, ``y >= 0``, ``y <= x - l (1 - z)``, ``y <= u z`` with binary ``z``.  A disjunction gets the fewest
binaries the bounds allow (see :class:`_DisjunctionPlan`: impossible alternatives dropped, two alternatives
share one binary, k > 2 get one each and "at least one") and each of its rows is relaxed by a big-M computed by
interval arithmetic over that row's own expression; a row whose big-M would be infinite makes the problem
unencodable, which we report.  :func:`lift_start` extends a feasible assignment of the Query to the binaries,
for warm starts.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import scipy.sparse as sp

from ..query import Query
from ..errors import PatchlangError


@dataclass
class LinearModel:
    """``min c x + offset`` s.t. ``row_lo <= A x <= row_hi``, ``lb <= x <= ub``, ``x[integer]`` integral."""

    A: sp.csr_matrix
    row_lo: np.ndarray
    row_hi: np.ndarray
    lb: np.ndarray
    ub: np.ndarray
    c: np.ndarray
    integer: np.ndarray
    offset: float
    n_original: int  # the Query's variables come first
    relu_z: np.ndarray | None = None  # binary of each ReLU atom (same order as Query.relus)
    # per disjunction, per alternative: (binary index or -1, a, b) with "alternative enforced" w = a*z + b;
    # None for an alternative that cannot hold; an all -1 plan means the disjunction needed no binary.
    disj_layout: list[np.ndarray] | None = None
    # per disjunction, the rows ``[start, stop)`` of ``A`` that lower it (an infeasible subset names them)
    disj_rows: list[tuple[int, int]] | None = None

    @property
    def n_vars(self) -> int:
        return int(self.lb.size)


def _row_range(A: sp.csr_matrix, lb: np.ndarray, ub: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    Ap = A.maximum(0).tocsr()
    An = A.minimum(0).tocsr()
    with np.errstate(invalid="ignore"):
        lo = Ap @ np.where(np.isfinite(lb), lb, -1e300) + An @ np.where(np.isfinite(ub), ub, 1e300)
        hi = Ap @ np.where(np.isfinite(ub), ub, 1e300) + An @ np.where(np.isfinite(lb), lb, -1e300)
    lo[np.abs(lo) > 1e250] = -np.inf
    hi[np.abs(hi) > 1e250] = np.inf
    return lo, hi


@dataclass
class _DisjunctionPlan:
    """How one disjunction is lowered with the fewest binaries, decided from the variable bounds alone.

    An alternative whose rows cannot hold within the bounds is dropped; a disjunction with an alternative that
    always holds needs nothing; one surviving alternative becomes plain rows; two share one binary (``z`` and
    ``1 - z``); more get one binary each and "at least one" row.  Rows that always hold are never relaxed.
    Big-Ms are the exact interval ranges of each row's own expression (not of its outputs separately)."""

    alive: np.ndarray  # bool per alternative
    redundant: bool
    rlo: np.ndarray
    rhi: np.ndarray
    row_true: np.ndarray  # bool per row: holds for every value within the bounds

    @property
    def n_binaries(self) -> int:
        k = int(np.count_nonzero(self.alive))
        return 0 if self.redundant or k <= 1 else (1 if k == 2 else k)

    def binary_of_alt(self, start: int) -> np.ndarray:
        """Per alternative ``(binary index or -1, a, b)``: the alternative is enforced when ``a*z + b == 1``."""
        k = self.alive.size
        lay = np.tile(np.array([-1.0, 0.0, 1.0]), (k, 1))  # no binary: enforced unconditionally (if alive)
        alive = np.nonzero(self.alive)[0]
        if self.n_binaries == 1:
            lay[alive[0]] = (start, 1.0, 0.0)
            lay[alive[1]] = (start, -1.0, 1.0)
        elif self.n_binaries > 1:
            lay[alive, 0] = start + np.arange(alive.size)
            lay[alive, 1] = 1.0
            lay[alive, 2] = 0.0
        return lay

    def rows(self, d, n: int, N: int, lay: np.ndarray) -> tuple[list, list, list]:
        blocks: list = []
        los: list = []
        his: list = []
        if self.redundant:
            return blocks, los, his
        if not np.any(self.alive):  # no alternative can hold: one visibly infeasible row
            return [sp.csr_matrix((1, N))], [np.array([1.0])], [np.array([np.inf])]
        D = sp.csr_matrix(sp.csr_matrix(d.A, shape=(d.A.shape[0], n)), shape=(d.A.shape[0], N))
        need = self.alive[d.alt] & ~self.row_true
        zrow, arow, brow = lay[d.alt, 0], lay[d.alt, 1], lay[d.alt, 2]
        relaxed = zrow >= 0
        for side in ("lo", "hi"):
            bound = d.lo if side == "lo" else d.hi
            sel = np.nonzero(need & np.isfinite(bound))[0]
            if not sel.size:
                continue
            M = (bound - self.rlo if side == "lo" else self.rhi - bound)[sel]
            M = np.where(relaxed[sel], np.maximum(M, 0.0), 0.0)
            if not np.all(np.isfinite(M)):
                raise PatchlangError(f"the disjunction '{d.label}' cannot be encoded: its rows are unbounded",
                                     help="add a bound on the change, e.g. `bound linf <= 1`")
            # lo side: D x >= lo - M (1 - w) with w = a z + b  <=>  D x - M a z >= lo - M (1 - b)
            sign = -1.0 if side == "lo" else 1.0
            r = np.nonzero(relaxed[sel])[0]
            Z = sp.csr_matrix((sign * M[r] * arow[sel][r], (r, zrow[sel][r].astype(np.int64))), shape=(sel.size, N))
            blocks.append(sp.csr_matrix(D[sel] + Z))
            shifted = bound[sel] + sign * M * (1.0 - brow[sel])
            if side == "lo":
                los.append(shifted); his.append(np.full(sel.size, np.inf))
            else:
                los.append(np.full(sel.size, -np.inf)); his.append(shifted)
        if self.n_binaries > 2:
            z = lay[self.alive, 0].astype(np.int64)
            blocks.append(sp.csr_matrix((np.ones(z.size), (np.zeros(z.size, dtype=np.int64), z)), shape=(1, N)))
            los.append(np.array([1.0])); his.append(np.array([np.inf]))
        return blocks, los, his


def _plan_disjunction(d, q: Query) -> _DisjunctionPlan:
    D = sp.csr_matrix(d.A, shape=(d.A.shape[0], q.n_vars))
    rlo, rhi = _row_range(D, q.lb, q.ub)
    k = d.n_alternatives
    has_lo, has_hi = np.isfinite(d.lo), np.isfinite(d.hi)
    row_true = (~has_lo | (rlo >= d.lo)) & (~has_hi | (rhi <= d.hi))
    # dropped only when clearly impossible: a tolerance on the safe side keeps borderline alternatives
    tol_lo = 1e-9 * (1.0 + np.abs(np.where(has_lo, d.lo, 0.0)))
    tol_hi = 1e-9 * (1.0 + np.abs(np.where(has_hi, d.hi, 0.0)))
    impossible = (has_lo & (rhi < d.lo - tol_lo)) | (has_hi & (rlo > d.hi + tol_hi))
    alive = np.bincount(d.alt[impossible], minlength=k) == 0
    always = np.bincount(d.alt[~row_true], minlength=k) == 0
    return _DisjunctionPlan(alive, bool(np.any(always & alive)), rlo, rhi, row_true)


SPLIT_MIN_PAIRS = 5000  # below this the |x| <= u rows cost nothing worth a reformulation
MIN_BIG_M = 1e-5


@dataclass
class AbsSplit:
    """``x = p - n``, ``u = p + n`` (``p, n >= 0``) for pairs of rows ``x - u <= 0``, ``-x - u <= 0`` whose ``u`` has
    a positive cost: the L1 norm without its two rows per parameter.

    Why: an L1 patch of a hidden layer has one ``|delta| <= u`` pair per weight (117 600 for a 150x784 layer);
    HiGHS needs minutes on those rows, and seconds once they are gone.  Every feasible ``(p, n)`` maps to a
    feasible original point (``u = p + n >= |x|``) with the same cost, and an optimal one has ``min(p, n) = 0``,
    so the optimum is the same.  ``p`` takes ``x``'s column, ``n`` takes ``u``'s."""

    x: np.ndarray
    u: np.ndarray
    model: LinearModel

    def to_new(self, x_old: np.ndarray) -> np.ndarray:
        out = x_old.copy()
        out[self.x] = np.maximum(x_old[self.x], 0.0)
        out[self.u] = np.maximum(-x_old[self.x], 0.0)
        return out

    def to_old(self, x_new: np.ndarray) -> np.ndarray:
        """``u = |x|`` (not ``p + n``): never costlier, and feasible because ``u`` only ever bounds from above."""
        out = x_new.copy()
        out[self.x] = x_new[self.x] - x_new[self.u]
        out[self.u] = np.abs(out[self.x])
        return out


def split_abs(m: LinearModel, min_pairs: int = SPLIT_MIN_PAIRS) -> AbsSplit | None:
    """The :class:`AbsSplit` of ``m`` when it has at least ``min_pairs`` L1 pairs, else None."""
    A = m.A.tocsr()
    nnz = np.diff(A.indptr)
    rows = np.nonzero((nnz == 2) & ~np.isfinite(m.row_lo) & (m.row_hi == 0))[0]
    if rows.size < 2 * min_pairs:
        return None
    at = A.indptr[rows][:, None] + np.arange(2)
    cols, vals = A.indices[at], A.data[at]
    order = np.argsort(cols, axis=1)  # u is created after x
    cols, vals = np.take_along_axis(cols, order, 1), np.take_along_axis(vals, order, 1)
    x, u, sx, su = cols[:, 0], cols[:, 1], vals[:, 0], vals[:, 1]
    ok = (su == -1.0) & (np.abs(sx) == 1.0) & (m.c[u] > 0) & ~m.integer[u] & ~m.integer[x]
    key = x.astype(np.int64) * m.n_vars + u
    plus, minus = ok & (sx > 0), ok & (sx < 0)
    _, ip, im = np.intersect1d(key[plus], key[minus], assume_unique=False, return_indices=True)
    if ip.size < min_pairs:
        return None
    P = np.stack([x[plus][ip], u[plus][ip], rows[plus][ip], rows[minus][im]], axis=1).astype(np.int64)
    X, U = P[:, 0], P[:, 1]
    if np.unique(X).size != X.size or np.unique(U).size != U.size or np.intersect1d(X, U).size:
        return None
    keep_rows = np.ones(A.shape[0], dtype=bool)
    keep_rows[P[:, 2:].ravel()] = False
    if not _only_bounds_from_above(A[keep_rows], m.row_lo[keep_rows], m.row_hi[keep_rows], U):
        return None
    if np.any(m.lb[U] > 0) or np.any(m.ub[U] < np.maximum(m.ub[X], -m.lb[X])):
        return None
    n = m.n_vars
    other = np.setdiff1d(np.arange(n), np.r_[X, U])
    # old = S @ new:  x = p - n,  u = p + n   (p in x's column, n in u's)
    S = sp.csr_matrix((np.r_[np.ones(other.size), np.ones(X.size), -np.ones(X.size), np.ones(X.size), np.ones(X.size)],
                       (np.r_[other, X, X, U, U], np.r_[other, X, U, X, U])), shape=(n, n))
    lb, ub = m.lb.copy(), m.ub.copy()
    lb[X], lb[U] = 0.0, 0.0
    ub[X], ub[U] = np.maximum(m.ub[X], 0.0), np.maximum(-m.lb[X], 0.0)
    new = LinearModel(sp.csr_matrix((A @ S)[keep_rows]), m.row_lo[keep_rows], m.row_hi[keep_rows], lb, ub,
                      np.asarray(S.T @ m.c).ravel(), m.integer, m.offset, m.n_original, m.relu_z, m.disj_layout)
    return AbsSplit(X, U, new)


def _only_bounds_from_above(A: sp.csr_matrix, lo: np.ndarray, hi: np.ndarray, cols: np.ndarray) -> bool:
    """Lowering any of ``cols`` keeps every row satisfied: positive entries only in rows with no lower side,
    negative ones only in rows with no upper side (e.g. `bound l1 <= c`)."""
    sub = sp.csc_matrix(A)[:, cols].tocoo()
    pos = sub.data > 0
    return bool(np.all(~np.isfinite(lo[sub.row[pos]])) and np.all(~np.isfinite(hi[sub.row[~pos]])))


def affine_roots(q: Query, v: np.ndarray, max_steps: int = 8) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Write each variable ``v[i]`` as ``alpha[i] * x[root[i]] + beta[i]`` by following equality rows with two
    nonzeros towards earlier variables (the encoder defines each materialized neuron from earlier ones, so a
    neuron fed by one bias delta is ``delta + const`` after one or two such rows)."""
    A = q.A.tocsr()
    nnz = np.diff(A.indptr)
    rows = np.nonzero((nnz == 2) & (q.row_lo == q.row_hi))[0]
    parent = np.full(q.n_vars, -1, dtype=np.int64)
    p_alpha = np.zeros(q.n_vars)
    p_beta = np.zeros(q.n_vars)
    if rows.size:
        cols = A.indices[A.indptr[rows][:, None] + np.arange(2)]
        vals = A.data[A.indptr[rows][:, None] + np.arange(2)]
        late = np.argmax(cols, axis=1)  # the later variable is the one the row defines
        early = 1 - late
        r = np.arange(rows.size)
        j, i = cols[r, late], cols[r, early]
        aj, ai = vals[r, late], vals[r, early]
        # ai x_i + aj x_j = rhs  =>  x_j = (-ai/aj) x_i + rhs/aj
        parent[j], p_alpha[j], p_beta[j] = i, -ai / aj, q.row_lo[rows] / aj
    root = np.asarray(v, dtype=np.int64).copy()
    alpha = np.ones(root.size)
    beta = np.zeros(root.size)
    for _ in range(max_steps):
        step = parent[root] >= 0
        if not np.any(step):
            break
        s = np.nonzero(step)[0]
        beta[s] += alpha[s] * p_beta[root[s]]
        alpha[s] *= p_alpha[root[s]]
        root[s] = parent[root[s]]
    return root, alpha, beta


def relu_order_rows(q: Query, z: np.ndarray, N: int) -> sp.csr_matrix | None:
    """Valid ordering rows between the phase binaries of ReLUs whose inputs are affine in one shared variable.

    If ``x_p = alpha_p v + beta_p`` with ``alpha_p > 0``, the ReLU is active iff ``v > theta_p = -beta_p/alpha_p``;
    so with thresholds sorted, each phase implies the next one's (``z_later <= z_earlier``), and conversely for
    ``alpha_p < 0``.  The binaries ``z = [x > 0]`` of any feasible point satisfy these rows, so nothing feasible is
    cut off, while the LP relaxation gets much tighter (bias patching: every point's copy of a hidden neuron is
    ``bias delta + const``).  None when no two ReLUs share a root."""
    x = q.relus[:, 1]
    root, alpha, beta = affine_roots(q, x)
    ok = alpha != 0
    if not np.any(ok):
        return None
    theta = np.where(ok, -beta / np.where(ok, alpha, 1.0), 0.0)
    sign = np.sign(alpha)
    # active iff sign * v > sign * theta: sort by (root, sign, sign * theta) so that each phase implies the next's
    idx = np.nonzero(ok)[0]
    order = idx[np.lexsort((sign[idx] * theta[idx], sign[idx], root[idx]))]
    same = (root[order[1:]] == root[order[:-1]]) & (sign[order[1:]] == sign[order[:-1]])
    if not np.any(same):
        return None
    first, second = order[:-1][same], order[1:][same]  # second's threshold is higher: active(second) => active(first)
    k = first.size
    r = np.arange(k)
    return sp.csr_matrix((np.r_[np.ones(k), -np.ones(k)], (np.r_[r, r], np.r_[z[second], z[first]])), shape=(k, N))


def lift_start(q: Query, m: "LinearModel", x: np.ndarray) -> np.ndarray | None:
    """A feasible assignment ``x`` of the Query's variables extended to the model's binaries (ReLU phase
    indicators and the disjunction binaries of an alternative that holds), or None when some disjunction has
    no alternative that holds at ``x`` (then ``x`` is no start)."""
    full = np.zeros(m.n_vars)
    full[: m.n_original] = x
    if m.relu_z is not None and len(q.relus):
        full[m.relu_z] = (x[q.relus[:, 1]] > 0).astype(float)
    for d, lay in zip(q.disjunctions, m.disj_layout or []):
        if not np.any(lay[:, 0] >= 0):
            continue
        v = sp.csr_matrix(d.A, shape=(d.A.shape[0], q.n_vars)) @ x
        tol = 1e-7 * (1.0 + np.abs(v))
        ok = (v >= d.lo - tol) & (v <= d.hi + tol)
        alt_ok = np.bincount(d.alt[~ok], minlength=lay.shape[0]) == 0
        cands = np.nonzero(alt_ok & (lay[:, 0] >= 0))[0]
        if not cands.size:
            return None
        zi, a, b = lay[cands[0]]
        full[int(zi)] = (1.0 - b) / a
    return full


def lower_to_milp(q: Query) -> LinearModel:
    if len(q.products):
        raise PatchlangError(f"this problem multiplies unknowns ({len(q.products)} products of two edited "
                             "quantities): it is not an LP or MILP",
                             help="say `using z3` in the patch block (exact nonlinear search; it may not end), "
                                  "or edit the weights of one layer only")
    n = q.n_vars
    relus = q.relus
    plans = [_plan_disjunction(d, q) for d in q.disjunctions]
    n_bin = len(relus) + sum(p.n_binaries for p in plans)
    lb = np.concatenate([q.lb, np.zeros(n_bin)])
    ub = np.concatenate([q.ub, np.ones(n_bin)])
    integer = np.concatenate([q.integer, np.ones(n_bin, dtype=bool)])
    N = n + n_bin
    blocks = [sp.csr_matrix(q.A, shape=(q.n_rows, N))]
    los, his = [q.row_lo], [q.row_hi]
    nb = n
    if len(relus):
        y, x = relus[:, 0], relus[:, 1]
        l, u = q.lb[x], q.ub[x]
        if not (np.all(np.isfinite(l)) and np.all(np.isfinite(u))):
            raise PatchlangError("a ReLU has no finite bounds, so it cannot be encoded as a MILP",
                                 help="add a bound on the change, e.g. `bound linf <= 1`")
        # Big-Ms of 1e-9 (a neuron the optimum pushes to exactly 0, bounded again at that optimum) make MIP
        # presolve declare feasible models infeasible; a looser big-M is always valid, so none is below MIN_BIG_M.
        l, u = np.minimum(l, -MIN_BIG_M), np.maximum(u, MIN_BIG_M)
        k = len(relus)
        z = np.arange(nb, nb + k)
        nb += k
        r = np.arange(k)
        # y - x >= 0
        blocks.append(sp.csr_matrix((np.r_[np.ones(k), -np.ones(k)], (np.r_[r, r], np.r_[y, x])), shape=(k, N)))
        los.append(np.zeros(k)); his.append(np.full(k, np.inf))
        # y - x - l z <= -l      (y <= x - l (1 - z))
        blocks.append(sp.csr_matrix((np.r_[np.ones(k), -np.ones(k), -l], (np.r_[r, r, r], np.r_[y, x, z])),
                                    shape=(k, N)))
        los.append(np.full(k, -np.inf)); his.append(-l)
        # y - u z <= 0
        blocks.append(sp.csr_matrix((np.r_[np.ones(k), -u], (np.r_[r, r], np.r_[y, z])), shape=(k, N)))
        los.append(np.full(k, -np.inf)); his.append(np.zeros(k))
        lb[y] = np.maximum(lb[y], 0.0)
        order = relu_order_rows(q, z, N)
        if order is not None:
            blocks.append(order)
            los.append(np.full(order.shape[0], -np.inf)); his.append(np.zeros(order.shape[0]))
    disj_layout = []
    disj_rows = []
    row = sum(b.shape[0] for b in blocks)
    for d, plan in zip(q.disjunctions, plans):
        zi = plan.binary_of_alt(nb)
        nb += plan.n_binaries
        disj_layout.append(zi)
        rows_b, lo_b, hi_b = plan.rows(d, n, N, zi)
        blocks.extend(rows_b); los.extend(lo_b); his.extend(hi_b)
        stop = row + sum(b.shape[0] for b in rows_b)
        disj_rows.append((row, stop))
        row = stop
    A = sp.vstack(blocks).tocsr() if len(blocks) > 1 else blocks[0]
    c = np.concatenate([q.c, np.zeros(n_bin)])
    relu_z = np.arange(n, n + len(relus))
    return LinearModel(A, np.concatenate(los), np.concatenate(his), lb, ub, c, integer, q.offset, n, relu_z,
                       disj_layout, disj_rows)
