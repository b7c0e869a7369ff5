"""Concrete assignments of a patch Query and its *fixed-phase* LP restriction.

Why: a MILP patch problem is hard because of the ReLU phases (and disjunction alternatives) it may choose.
Fixing every phase to the one the network has at a reference patch (first the original network, then the
previous answer) and every disjunction to the alternative that holds best there leaves an LP whose feasible
set is a *subset* of the MILP's: any answer of it is a genuine patch.  Its optimum therefore bounds the MILP
optimum from above, which gives sound big-M bounds (``bound linf <= N``) when the user gave none and a
feasible incumbent (warm start) for the MILP solver.

:func:`propagate` evaluates every variable of a patch Query at given deltas (the network rows define each
materialized neuron from earlier variables, ReLU atoms their outputs, norms their auxiliaries), without
re-encoding anything.  It relies on the encoder's block conventions (a materialized block's defining rows carry
its name; norm blocks are ``linf``, ``abs``, ``changed``) and returns None for anything it does not recognise,
so a convention change costs a warm start, never correctness: every start is re-checked against all rows.
"""

from __future__ import annotations

import numpy as np
import scipy.sparse as sp

from .patch import DeltaLayout
from .query import Disjunction, Query

FEAS_TOL = 1e-7


def propagate(q: Query, layout: DeltaLayout, x_delta: np.ndarray) -> np.ndarray | None:
    """Every variable of ``q`` at the given query-variable values of the deltas (other entries ignored)."""
    if len(getattr(q, "products", ())):
        return None
    x = np.zeros(q.n_vars)
    deltas = np.concatenate(layout.var_index) if layout.var_index else np.zeros(0, dtype=np.int64)
    x[deltas] = x_delta[deltas]
    network = {b.label: b for b in q.row_blocks if b.group == "network"}
    relu_src = np.full(q.n_vars, -1, dtype=np.int64)
    if len(q.relus):
        relu_src[q.relus[:, 0]] = q.relus[:, 1]
    A = q.A.tocsr()
    d = x[deltas]
    for block in q.var_blocks:
        idx = np.arange(block.start, block.start + block.size)
        if block.kind == "delta":
            continue
        if block.kind == "neuron":
            rows = network.get(block.name)
            if rows is not None and rows.size == block.size:
                # rows read  E x - z = -c  (z's own entries are still 0 here)
                x[idx] = A[rows.slice] @ x - q.row_lo[rows.slice]
            elif np.all(relu_src[idx] >= 0):
                x[idx] = np.maximum(0.0, x[relu_src[idx]])
            else:
                return None
        elif block.name == "linf" and block.size == 1:
            x[idx] = np.max(np.abs(d)) if d.size else 0.0
        elif block.name == "abs" and block.size == d.size:
            x[idx] = np.abs(d)
        elif block.name == "changed" and block.size == d.size:
            x[idx] = (d != 0).astype(float)
        else:
            return None
    return x


def violation(q: Query, x: np.ndarray) -> float:
    """Largest violation of a row, a bound or a ReLU atom at ``x`` (scaled like the solvers' tolerances);
    disjunctions count as satisfied when one alternative holds."""
    ax = q.A @ x
    worst = 0.0
    with np.errstate(invalid="ignore"):
        worst = max(worst, _excess(q.row_lo - ax, ax), _excess(ax - q.row_hi, ax))
        worst = max(worst, _excess(q.lb - x, x), _excess(x - q.ub, x))
    if len(q.relus):
        y, src = x[q.relus[:, 0]], x[q.relus[:, 1]]
        worst = max(worst, _excess(np.abs(y - np.maximum(src, 0.0)), y))
    for dj in q.disjunctions:
        worst = max(worst, min(_alt_violations(dj, x)) if dj.n_alternatives else np.inf)
    return worst


def _excess(v: np.ndarray, scale: np.ndarray) -> float:
    if not v.size:
        return 0.0
    r = np.nan_to_num(v, nan=0.0, posinf=np.inf, neginf=0.0) / (1.0 + np.abs(scale))
    return float(max(0.0, np.max(r)))


def _alt_violations(dj: Disjunction, x: np.ndarray) -> np.ndarray:
    """Per alternative, how far its rows are from holding (0 when it holds)."""
    v = dj.A @ x
    with np.errstate(invalid="ignore"):
        bad = np.maximum(np.nan_to_num(dj.lo - v, nan=0.0, neginf=0.0),
                         np.nan_to_num(v - dj.hi, nan=0.0, neginf=0.0)) / (1.0 + np.abs(v))
    out = np.zeros(dj.n_alternatives)
    np.maximum.at(out, dj.alt, np.maximum(bad, 0.0))
    return out


def _alt_slack(dj: Disjunction, x: np.ndarray) -> np.ndarray:
    """Per alternative, its worst row slack at ``x`` (>= 0 iff it holds): the best one is the one to fix."""
    v = dj.A @ x
    with np.errstate(invalid="ignore"):
        slack = np.minimum(np.nan_to_num(v - dj.lo, nan=np.inf, posinf=np.inf),
                           np.nan_to_num(dj.hi - v, nan=np.inf, posinf=np.inf))
    out = np.full(dj.n_alternatives, np.inf)
    np.minimum.at(out, dj.alt, slack)
    return out


def fixed_phase_query(q: Query, x_ref: np.ndarray) -> Query:
    """The LP restriction of ``q``: every ReLU atom fixed to its phase at ``x_ref`` (active: ``y = x >= 0``,
    inactive: ``y = 0 >= x``), every disjunction to its alternative with the best slack at ``x_ref``, every
    integer variable (the l0 indicators) to its upper bound ("may change").  Nothing here relaxes a constraint."""
    lb, ub = q.lb.copy(), q.ub.copy()
    extra_rows: list[sp.csr_matrix] = []
    extra_lo: list[np.ndarray] = []
    extra_hi: list[np.ndarray] = []
    n = q.n_vars
    if len(q.relus):
        y, src = q.relus[:, 0], q.relus[:, 1]
        active = x_ref[src] >= 0
        lb[src[active]] = np.maximum(lb[src[active]], 0.0)
        ub[src[~active]] = np.minimum(ub[src[~active]], 0.0)
        ub[y[~active]] = 0.0
        ya, sa = y[active], src[active]
        k = ya.size
        r = np.arange(k)
        extra_rows.append(sp.csr_matrix((np.r_[np.ones(k), -np.ones(k)], (np.r_[r, r], np.r_[ya, sa])), shape=(k, n)))
        extra_lo.append(np.zeros(k))
        extra_hi.append(np.zeros(k))
    for dj in q.disjunctions:
        best = int(np.argmax(_alt_slack(dj, x_ref)))
        sel = np.nonzero(dj.alt == best)[0]
        extra_rows.append(sp.csr_matrix(dj.A, shape=(dj.A.shape[0], n))[sel])
        extra_lo.append(dj.lo[sel])
        extra_hi.append(dj.hi[sel])
    integer = q.integer.copy()
    fix = integer & np.isfinite(ub)
    lb[fix] = ub[fix]
    integer[:] = False
    A = sp.vstack([q.A, *extra_rows]).tocsr() if extra_rows else q.A
    return Query(lb=lb, ub=ub, integer=integer, A=A,
                 row_lo=np.concatenate([q.row_lo, *extra_lo]), row_hi=np.concatenate([q.row_hi, *extra_hi]),
                 c=q.c, offset=q.offset, var_blocks=list(q.var_blocks), row_blocks=list(q.row_blocks),
                 name=q.name + ".fixed_phase")
