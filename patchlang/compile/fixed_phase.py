"""Concrete assignments of a patch Query and its *fixed-phase* LP restriction.

Why: a MILP patch problem is hard because of the ReLU phases (and disjunction alternatives) it may choose.
Fixing every phase to the one the network has at a reference patch (first the original network, then the
previous answer) and every disjunction to the alternative that holds best there leaves an LP whose feasible
set is a *subset* of the MILP's: any answer of it is a genuine patch.  Its optimum therefore bounds the MILP
optimum from above, which gives sound big-M bounds (``bound linf <= N``) when the user gave none and a
feasible incumbent (warm start) for the MILP solver.

:func:`propagate` evaluates every variable of a patch Query at given deltas (the network rows define each
materialized neuron from earlier variables, ReLU atoms their outputs, norms their auxiliaries), without
re-encoding anything.  It reads the structure the encoder recorded (:class:`~patchlang.query.Structure`: which
rows define which block, which blocks are norms) and returns None for a query without one, so a missing structure
costs a warm start, never correctness: every start is re-checked against all rows.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import scipy.sparse as sp

from .patch import DeltaLayout
from ..query import Disjunction, Query


@dataclass
class Level:
    """Variables that depend only on variables of earlier levels: ``defined`` by their network rows ``rows``
    (``x[defined] = A[rows] @ x - row_lo[rows]`` while ``x[defined]`` is still 0), and ReLU outputs ``relu_y`` of
    sources ``relu_x``."""

    defined: np.ndarray
    rows: np.ndarray
    relu_y: np.ndarray
    relu_x: np.ndarray


@dataclass
class Schedule:
    """The order in which a patch Query's variables can be evaluated from the deltas, one :class:`Level` per
    network depth, so that evaluating (or bounding) thousands of points costs a few sparse products, not one per
    block.  ``norms``: the ``linf`` / ``abs`` / ``changed`` blocks, computed from the deltas."""

    levels: list[Level]
    deltas: np.ndarray
    norms: list  # VarBlock


def schedule(q: Query, layout: DeltaLayout, source: Query | None = None) -> Schedule | None:
    """The evaluation schedule of ``q`` from the structure its encoder recorded (None without one, or for a block
    it does not cover).  ``source``: the query as encoded when ``q`` was derived from it (its ReLU atoms name every
    ReLU output)."""
    structure = q.structure
    if len(q.products) or structure is None:
        return None
    atoms = (source if source is not None else q).relus
    relu_src = np.full(q.n_vars, -1, dtype=np.int64)
    if len(atoms):
        relu_src[atoms[:, 0]] = atoms[:, 1]
    norm_starts = {b.start for b in structure.norms.values()}
    A = q.A.tocsr()
    depth = np.zeros(q.n_vars, dtype=np.int64)
    steps: dict[int, tuple[list, list, list, list]] = {}
    norms = []
    for block in q.var_blocks:
        idx = np.arange(block.start, block.start + block.size)
        if block.kind == "delta":
            continue
        if block.start in norm_starts:
            norms.append(block)
            continue
        if block.kind != "neuron":
            return None
        first_row = structure.defines.get(block.start)
        if first_row is not None:
            refs = A.indices[A.indptr[first_row]:A.indptr[first_row + block.size]]
            refs = refs[(refs < block.start) | (refs >= block.start + block.size)]
            d = 1 + (int(depth[refs].max()) if refs.size else 0)
            steps.setdefault(d, ([], [], [], []))
            steps[d][0].append(idx)
            steps[d][1].append(np.arange(first_row, first_row + block.size))
        elif np.all(relu_src[idx] >= 0):
            d = 1 + int(depth[relu_src[idx]].max())
            steps.setdefault(d, ([], [], [], []))
            steps[d][2].append(idx)
            steps[d][3].append(relu_src[idx])
        else:
            return None
        depth[idx] = d
    cat = lambda parts: np.concatenate(parts) if parts else np.zeros(0, dtype=np.int64)  # noqa: E731
    levels = [Level(cat(v), cat(r), cat(y), cat(x)) for _, (v, r, y, x) in sorted(steps.items())]
    deltas = np.concatenate(layout.var_index) if layout.var_index else np.zeros(0, dtype=np.int64)
    return Schedule(levels, deltas, norms)


def defining_rows(A: sp.csr_matrix, level: Level) -> sp.csr_matrix:
    """``E`` of the level's rows ``E x - z = -c``: the rows with each defined variable's own entry removed."""
    block = A[level.rows].tocoo()
    keep = block.col != level.defined[block.row]
    return sp.csr_matrix((block.data[keep], (block.row[keep], block.col[keep])), shape=block.shape)


def propagate(q: Query, layout: DeltaLayout, x_delta: np.ndarray, source: Query | None = None) -> np.ndarray | None:
    """Every variable of ``q`` at the given query-variable values of the deltas (other entries ignored)."""
    sch = schedule(q, layout, source)
    if sch is None:
        return None
    x = np.zeros(q.n_vars)
    x[sch.deltas] = x_delta[sch.deltas]
    A = q.A.tocsr()
    for level in sch.levels:
        if level.rows.size:
            x[level.defined] = A[level.rows] @ x - q.row_lo[level.rows]  # their own entries are still 0
        if level.relu_y.size:
            x[level.relu_y] = np.maximum(0.0, x[level.relu_x])
    d = x[sch.deltas]
    kinds = {b.start: name for name, b in q.structure.norms.items()}
    for block in sch.norms:
        idx = np.arange(block.start, block.start + block.size)
        kind = kinds[block.start]
        if kind == "linf" and block.size == 1:
            x[idx] = np.max(np.abs(d)) if d.size else 0.0
        elif kind == "abs" and block.size == d.size:
            x[idx] = np.abs(d)
        elif kind == "changed" and block.size == d.size:
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
    v = dj.A @ x[: dj.A.shape[1]]
    with np.errstate(invalid="ignore"):
        bad = np.maximum(np.nan_to_num(dj.lo - v, nan=0.0, neginf=0.0),
                         np.nan_to_num(v - dj.hi, nan=0.0, neginf=0.0)) / (1.0 + np.abs(v))
    out = np.zeros(dj.n_alternatives)
    np.maximum.at(out, dj.alt, np.maximum(bad, 0.0))
    return out


def _alt_slack(dj: Disjunction, x: np.ndarray) -> np.ndarray:
    """Per alternative, its worst row slack at ``x`` (>= 0 iff it holds): the best one is the one to fix."""
    v = dj.A @ x[: dj.A.shape[1]]
    with np.errstate(invalid="ignore"):
        slack = np.minimum(np.nan_to_num(v - dj.lo, nan=np.inf, posinf=np.inf),
                           np.nan_to_num(dj.hi - v, nan=np.inf, posinf=np.inf))
    out = np.full(dj.n_alternatives, np.inf)
    np.minimum.at(out, dj.alt, slack)
    return out


@dataclass
class Definitions:
    """The network rows of a Query that define a neuron from earlier variables (the encoder's convention: the
    defined neuron is the row's last column), for walking the network backwards from any constraint."""

    rows: np.ndarray  # row indices of definitions
    last: np.ndarray  # per row of the query: its last column (-1 for an empty row)
    neuron: np.ndarray  # per variable: of a neuron block

    def needed(self, q: Query, seed: np.ndarray, rows: np.ndarray | None = None) -> np.ndarray:
        """Variables ``seed`` depends on: closed under "a needed neuron needs its definition's variables" and
        "a needed ReLU output needs its input" (one network level per round)."""
        A = q.A.tocsr()
        rows = self.rows if rows is None else rows
        y, x = (q.relus[:, 0], q.relus[:, 1]) if len(q.relus) else (np.zeros(0, np.int64),) * 2
        needed = np.asarray(seed, dtype=bool).copy()
        while True:
            grow = needed.copy()
            grow[A[rows[needed[self.last[rows]]]].indices] = True
            grow[x[needed[y]]] = True
            if np.array_equal(grow, needed):
                return needed
            needed = grow


def definitions(q: Query) -> Definitions:
    neuron = np.zeros(q.n_vars, dtype=bool)
    for b in q.var_blocks:
        if b.kind == "neuron":
            neuron[b.slice] = True
    network = np.zeros(q.n_rows, dtype=bool)
    for blk in q.row_blocks:
        if blk.group == "network":
            network[blk.slice] = True
    A = q.A.tocsr()
    has = np.diff(A.indptr) > 0
    last = np.full(q.n_rows, -1, dtype=np.int64)
    if np.any(has):
        last[has] = np.maximum.reduceat(A.indices, A.indptr[:-1][has])
    rows = np.nonzero(network & has & neuron[np.maximum(last, 0)])[0]
    return Definitions(rows, last, neuron)


def relus_of_groups(q: Query, groups: set[str]) -> np.ndarray:
    """Per ReLU atom: whether it belongs to a point of a statement of one of ``groups`` (``keep``, ...) *only*,
    i.e. the constraints of those statements depend on it and no other statement's do."""
    net = definitions(q)
    A = q.A.tocsr()
    inside = np.zeros(q.n_vars, dtype=bool)
    outside = np.zeros(q.n_vars, dtype=bool)
    for blk in q.row_blocks:
        if blk.group in ("network", "norm", "bound"):
            continue
        (inside if blk.group in groups else outside)[A[blk.slice].indices] = True
    for d in q.disjunctions:
        cols = d.A.indices[d.A.indices < q.n_vars]
        (inside if d.group in groups else outside)[cols] = True
    if not len(q.relus):
        return np.zeros(0, dtype=bool)
    y = q.relus[:, 0]
    return net.needed(q, inside)[y] & ~net.needed(q, outside)[y]


def relaxed_phases(q: Query, x: np.ndarray, tol: float = 1e-7) -> np.ndarray:
    """The phases an LP-relaxation answer leans to: active where its ReLU input is >= 0 *or* it uses the output
    (``y > 0`` is only possible inside the triangle when the relaxation wants the neuron on)."""
    y, src = q.relus[:, 0], q.relus[:, 1]
    return (x[src] >= 0) | (x[y] > tol * (1.0 + np.abs(x[src])))


def fixed_phase_query(q: Query, x_ref: np.ndarray, active: np.ndarray | None = None,
                      only: np.ndarray | None = None) -> Query:
    """The LP restriction of ``q``: every ReLU atom fixed to its phase at ``x_ref`` (active: ``y = x >= 0``,
    inactive: ``y = 0 >= x``) or to ``active`` when given, every disjunction to its alternative with the best
    slack at ``x_ref``, every integer variable (the l0 indicators) to its upper bound ("may change").  Nothing
    here relaxes a constraint.

    ``only`` (a mask over the ReLU atoms): fix just those; the others stay atoms, and the disjunctions and integer
    variables stay free too: a smaller MILP that is still a restriction (e.g. the `keep` points' phases fixed)."""
    if only is not None:
        only = np.asarray(only, dtype=bool)
        part = fixed_phase_query(q.derive(relus=q.relus[only], disjunctions=[], integer=np.zeros_like(q.integer)),
                                 x_ref, None if active is None else np.asarray(active, dtype=bool)[only])
        return part.derive(relus=q.relus[~only], disjunctions=list(q.disjunctions), integer=q.integer.copy(),
                       lb=np.where(q.integer, q.lb, part.lb), ub=np.where(q.integer, q.ub, part.ub))
    lb, ub = q.lb.copy(), q.ub.copy()
    extra_rows: list[sp.csr_matrix] = []
    extra_lo: list[np.ndarray] = []
    extra_hi: list[np.ndarray] = []
    n = q.n_vars
    if len(q.relus):
        y, src = q.relus[:, 0], q.relus[:, 1]
        active = x_ref[src] >= 0 if active is None else np.asarray(active, dtype=bool)
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
    integer[fix] = False  # fixed to "may change": integrality is moot; an unbounded integer stays integer
    A = sp.vstack([q.A, *extra_rows]).tocsr() if extra_rows else q.A
    # a copy that keeps every other field (products, spans, structure, the bound's source): only the atoms go
    return q.derive(lb=lb, ub=ub, integer=integer, A=A, row_lo=np.concatenate([q.row_lo, *extra_lo]),
                   row_hi=np.concatenate([q.row_hi, *extra_hi]), relus=np.zeros((0, 2), dtype=np.int64),
                   disjunctions=[], var_blocks=list(q.var_blocks), row_blocks=list(q.row_blocks),
                   name=q.name + ".fixed_phase")
