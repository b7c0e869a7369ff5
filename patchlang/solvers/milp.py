"""Lowering of a Query's piecewise atoms to mixed-integer linear rows, shared by HiGHS and Gurobi.

ReLU ``y = max(0, x)`` with ``l < 0 < u`` (from the variable bounds, which the compiler derived soundly):
``y >= x``, ``y >= 0``, ``y <= x - l (1 - z)``, ``y <= u z`` with binary ``z``.  A disjunction gets one binary
per alternative (at least one set) and each of its rows is relaxed by a big-M computed by interval arithmetic
from the variable bounds; a row whose big-M would be infinite makes the problem unencodable, which we report.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import scipy.sparse as sp

from ..compile.query import Query
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


def lower_to_milp(q: Query) -> LinearModel:
    n = q.n_vars
    relus = q.relus
    n_bin = len(relus) + sum(d.n_alternatives for d in q.disjunctions)
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
    for d in q.disjunctions:
        m = d.A.shape[0]
        k = d.n_alternatives
        z = np.arange(nb, nb + k)
        nb += k
        D = sp.csr_matrix(d.A, shape=(m, n))
        rlo, rhi = _row_range(D, q.lb, q.ub)
        D = sp.csr_matrix(D, shape=(m, N))
        zcol = z[d.alt]
        # lower sides: D x >= lo - M_lo (1 - z)  <=>  D x - M_lo z >= lo - M_lo, with M_lo = lo - rlo
        has_lo = np.isfinite(d.lo)
        has_hi = np.isfinite(d.hi)
        M_lo = np.where(has_lo, d.lo - rlo, 0.0)
        M_hi = np.where(has_hi, rhi - d.hi, 0.0)
        if np.any(~np.isfinite(M_lo)) or np.any(~np.isfinite(M_hi)):
            raise PatchlangError(f"the disjunction '{d.label}' cannot be encoded: its rows are unbounded",
                                 help="add a bound on the change, e.g. `bound linf <= 1`")
        M_lo = np.maximum(M_lo, 0.0)
        M_hi = np.maximum(M_hi, 0.0)
        rows = np.arange(m)
        if np.any(has_lo):
            sel = np.nonzero(has_lo)[0]
            Z = sp.csr_matrix((-M_lo[sel], (np.arange(sel.size), zcol[sel])), shape=(sel.size, N))
            blocks.append(sp.csr_matrix(D[sel] + Z))
            los.append(d.lo[sel] - M_lo[sel]); his.append(np.full(sel.size, np.inf))
        if np.any(has_hi):
            sel = np.nonzero(has_hi)[0]
            Z = sp.csr_matrix((M_hi[sel], (np.arange(sel.size), zcol[sel])), shape=(sel.size, N))
            blocks.append(sp.csr_matrix(D[sel] + Z))
            los.append(np.full(sel.size, -np.inf)); his.append(d.hi[sel] + M_hi[sel])
        del rows
        blocks.append(sp.csr_matrix((np.ones(k), (np.zeros(k, dtype=int), z)), shape=(1, N)))
        los.append(np.array([1.0])); his.append(np.array([np.inf]))
    A = sp.vstack(blocks).tocsr() if len(blocks) > 1 else blocks[0]
    c = np.concatenate([q.c, np.zeros(n_bin)])
    return LinearModel(A, np.concatenate(los), np.concatenate(his), lb, ub, c, integer, q.offset, n)
