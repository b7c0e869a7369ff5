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

from .patch import DeltaLayout, _interval
from .query import Query, RowBlock


def _defining_rows(A: sp.csr_matrix, rows: slice, own: slice) -> sp.csr_matrix:
    """The rows ``E x - z = -c`` of a materialized block with ``z``'s own entries removed (leaves ``E``)."""
    block = A[rows].tocoo()
    keep = (block.col < own.start) | (block.col >= own.stop)
    return sp.csr_matrix((block.data[keep], (block.row[keep], block.col[keep])), shape=block.shape)


def rebound(q: Query, layout: DeltaLayout, linf: float) -> Query | None:
    """``q`` restricted to ``|delta| <= linf`` with every bound recomputed; None when a block is not understood."""
    lb, ub = q.lb.copy(), q.ub.copy()
    deltas = np.concatenate(layout.var_index) if layout.var_index else np.zeros(0, dtype=np.int64)
    lb[deltas] = np.maximum(lb[deltas], -linf)
    ub[deltas] = np.minimum(ub[deltas], linf)
    network = {b.label: b for b in q.row_blocks if b.group == "network"}
    relu_src = np.full(q.n_vars, -1, dtype=np.int64)
    if len(q.relus):
        relu_src[q.relus[:, 0]] = q.relus[:, 1]
    A = q.A.tocsr()
    for block in q.var_blocks:
        idx = np.arange(block.start, block.start + block.size)
        if block.kind == "delta":
            continue
        if block.kind == "neuron":
            rows = network.get(block.name)
            if rows is not None and rows.size == block.size:
                E = _defining_rows(A, rows.slice, block.slice)
                lo, hi = _interval(E, -q.row_lo[rows.slice], lb, ub)
            elif np.any(relu_src[idx] >= 0):
                # ReLU outputs; those of atoms an earlier rebound made linear keep their bounds (still sound)
                idx = idx[relu_src[idx] >= 0]
                src = relu_src[idx]
                lo, hi = np.maximum(lb[src], 0.0), np.maximum(ub[src], 0.0)
            else:
                return None
            lb[idx] = np.maximum(lb[idx], lo)
            ub[idx] = np.minimum(ub[idx], hi)
        elif block.kind == "norm" and block.name in ("linf", "abs"):
            ub[idx] = np.minimum(ub[idx], linf)
        elif block.kind not in ("norm", "binary"):
            return None
    return _drop_stable_relus(q, lb, ub)


def _drop_stable_relus(q: Query, lb: np.ndarray, ub: np.ndarray) -> Query:
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
    return Query(lb=lb, ub=ub, integer=q.integer, A=A, row_lo=np.concatenate(rows_lo),
                 row_hi=np.concatenate(rows_hi), c=q.c, offset=q.offset, relus=relus,
                 disjunctions=list(q.disjunctions), var_blocks=list(q.var_blocks), row_blocks=blocks,
                 name=q.name, var_bound_source=q.var_bound_source)
