"""Tighter sound bounds for an encoded patch Query, without re-encoding the network.

Why: every big-M of the MILP lowering and every decision "this ReLU is stable, it needs no binary" comes from
variable bounds.  The encoder derives them by interval arithmetic from the bound on the change known at encoding
time; when a smaller bound becomes known later (a derived ``bound linf <= N`` from a fixed-phase LP, or an
incumbent's objective), :func:`rebound` pushes it through the network rows in the order the encoder created them
(each materialized neuron is defined from earlier variables), intersects every interval with the old one, and
turns the ReLU atoms whose phase the new bounds fix into linear rows.  The result is the same problem restricted
to ``|delta| <= linf``: exact for every patch within that bound, and far smaller when the bound is tight.

Like :mod:`.fixed_phase` it relies on the encoder's block conventions (a materialized block's defining rows carry
its name); :func:`rebound` returns None when it meets a block it does not understand, and the caller re-encodes.
"""

from __future__ import annotations

import numpy as np
import scipy.sparse as sp

from .fixed_phase import defining_rows, schedule
from .patch import DeltaLayout
from .walk import interval_of as _interval
from ..query import Query, RowBlock


def rebound(q: Query, layout: DeltaLayout, linf: float, source: Query | None = None, l1: float = np.inf
            ) -> Query | None:
    """``q`` restricted to ``|delta| <= linf`` (and ``sum |delta| <= l1``) with every bound recomputed; None when a
    block is not understood.  ``source``: the query as encoded when ``q`` is itself a rebound one (its ReLU atoms
    name every ReLU output, including those ``q`` already made linear)."""
    sch = schedule(q, layout, source)
    if sch is None:
        return None
    lb, ub = q.lb.copy(), q.ub.copy()
    lb[sch.deltas] = np.maximum(lb[sch.deltas], -linf)
    ub[sch.deltas] = np.minimum(ub[sch.deltas], linf)
    is_delta = np.zeros(q.n_vars, dtype=bool)
    is_delta[sch.deltas] = True
    A = q.A.tocsr()
    for level in sch.levels:
        if level.rows.size:
            lo, hi = norm_interval(defining_rows(A, level), -q.row_lo[level.rows], lb, ub, is_delta, l1)
            lb[level.defined] = np.maximum(lb[level.defined], lo)
            ub[level.defined] = np.minimum(ub[level.defined], hi)
        if level.relu_y.size:
            lb[level.relu_y] = np.maximum(lb[level.relu_y], np.maximum(lb[level.relu_x], 0.0))
            ub[level.relu_y] = np.minimum(ub[level.relu_y], np.maximum(ub[level.relu_x], 0.0))
    for block in sch.norms:
        if block.start in {q.structure.norms[n].start for n in ("linf", "abs") if n in q.structure.norms}:
            ub[block.slice] = np.minimum(ub[block.slice], min(linf, l1))
    return drop_stable_relus(q, lb, ub)


def norm_interval(E: sp.csr_matrix, c: np.ndarray, lb: np.ndarray, ub: np.ndarray, is_delta: np.ndarray,
                  l1: float) -> tuple[np.ndarray, np.ndarray]:
    """Bounds of ``E x + c``: interval arithmetic, except that the deltas' part of each row, when the deltas lie
    in a box ``[-L, L]``, is also within ``+-l1 * max|coefficient|`` (Hölder with the L1 budget), which is far
    tighter than ``L * sum|coefficient|`` for a row over a whole input image."""
    lo, hi = _interval(E, c, lb, ub)
    if not np.isfinite(l1):
        return lo, hi
    coo = E.tocoo()
    on_delta = is_delta[coo.col]
    Ed = sp.csr_matrix((coo.data[on_delta], (coo.row[on_delta], coo.col[on_delta])), shape=E.shape)
    Er = sp.csr_matrix((coo.data[~on_delta], (coo.row[~on_delta], coo.col[~on_delta])), shape=E.shape)
    d = np.nonzero(is_delta)[0]
    if not np.allclose(lb[d], -ub[d]):  # not a symmetric box: keep plain intervals
        return lo, hi
    rlo, rhi = _interval(Er, c, lb, ub)
    absd = abs(Ed)
    box = absd @ ub  # the box's own half-width of the delta part (L * sum|coefficient| per row)
    budget = l1 * (np.asarray(absd.max(axis=1).todense()).ravel() if Ed.nnz else np.zeros(E.shape[0]))
    w = np.minimum(box, budget)
    return np.maximum(lo, rlo - w), np.minimum(hi, rhi + w)


def drop_stable_relus(q: Query, lb: np.ndarray, ub: np.ndarray) -> Query:
    """A copy of ``q`` with new bounds in which ReLUs with a fixed phase are linear: ``y = x`` (active) as a row,
    ``y = 0`` (inactive) as a bound."""
    rows_A, rows_lo, rows_hi = [q.A], [q.row_lo], [q.row_hi]
    blocks = list(q.row_blocks)
    relus = q.relus
    if len(relus):
        y, x = relus[:, 0], relus[:, 1]
        active = lb[x] >= 0
        inactive = ub[x] <= 0
        lb[y[inactive]] = 0.0
        ub[y[inactive]] = 0.0
        ya, xa = y[active], x[active]
        k = ya.size
        if k:
            r = np.arange(k)
            blocks.append(RowBlock("ReLUs made linear by tighter bounds", q.n_rows, k, "network"))
            rows_A.append(sp.csr_matrix((np.r_[np.ones(k), -np.ones(k)], (np.r_[r, r], np.r_[ya, xa])),
                                        shape=(k, q.n_vars)))
            rows_lo.append(np.zeros(k))
            rows_hi.append(np.zeros(k))
        relus = relus[~(active | inactive)]
    A = sp.vstack(rows_A).tocsr() if len(rows_A) > 1 else q.A
    return q.derive(lb=lb, ub=ub, A=A, row_lo=np.concatenate(rows_lo), row_hi=np.concatenate(rows_hi),
                   relus=relus, disjunctions=list(q.disjunctions), row_blocks=blocks)


def deep_relus(q: Query, layout: DeltaLayout, source: Query | None = None) -> np.ndarray:
    """Indices (into ``q.relus``) of the ReLU atoms whose input depends on another ReLU's output: the ones interval
    arithmetic bounds loosely (inputs of the first ReLU layer after an edit are exact boxes already)."""
    sch = schedule(q, layout, source)
    if sch is None or not len(q.relus):
        return np.zeros(0, dtype=np.int64)
    relu_levels = [i for i, level in enumerate(sch.levels) if level.relu_y.size]
    if len(relu_levels) < 2:
        return np.zeros(0, dtype=np.int64)
    shallow = np.zeros(q.n_vars, dtype=bool)
    for level in sch.levels[: relu_levels[0] + 1]:
        shallow[level.defined] = True
        shallow[level.relu_y] = True
    return np.nonzero(~shallow[q.relus[:, 1]])[0]
