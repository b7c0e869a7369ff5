"""The solver-neutral Query: what every backend receives.

A Query is a minimisation problem over real (optionally integer) variables with sparse linear rows
``row_lo <= A x <= row_hi`` plus *piecewise atoms* that some backends express natively (Z3) and others lower
to mixed-integer rows (HiGHS, Gurobi; see :mod:`patchlang.solvers.milp`):

- ``relus``: pairs ``(y, x)`` meaning ``x_y = max(0, x_x)``; the big-M constants come from the variable
  bounds, which the compiler derives soundly;
- ``disjunctions``: "at least one alternative holds", each alternative a conjunction of linear rows;
- ``products``: triples ``(z, x, y)`` meaning ``x_z = x_x * x_y`` (edits that multiply two unknowns); only
  SMT backends (Z3) take them, the MILP lowering refuses them.

Every row and variable belongs to a labelled block that carries the source span of the statement it came from,
so an infeasibility core or a report can speak the user's words ("keep clean[12]", line 7).
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace
from typing import Any

import numpy as np
import scipy.sparse as sp

from .errors import Span


@dataclass
class VarBlock:
    name: str
    start: int
    size: int
    kind: str  # delta | norm | neuron | binary | input | aux
    span: Span | None = None

    @property
    def slice(self) -> slice:
        return slice(self.start, self.start + self.size)


@dataclass
class RowBlock:
    label: str
    start: int
    size: int
    group: str  # keep | change | require | norm | network | bound | property
    span: Span | None = None
    statement: str = ""  # the user's statement ("keep good") when the rows are one point's goal
    point: str = ""  # that point ("test[12]")

    @property
    def slice(self) -> slice:
        return slice(self.start, self.start + self.size)


@dataclass
class Disjunction:
    """At least one alternative holds; alternative ``k`` is the conjunction of rows with ``alt == k``."""

    A: sp.csr_matrix
    lo: np.ndarray
    hi: np.ndarray
    alt: np.ndarray  # int, one entry per row
    label: str
    group: str
    span: Span | None = None
    statement: str = ""
    point: str = ""

    @property
    def n_alternatives(self) -> int:
        return int(self.alt.max()) + 1 if self.alt.size else 0


@dataclass
class Structure:
    """The query's structure, emitted by the encoder as data so that no step recovers it from block names.

    ``defines``: first variable of each materialized block -> first row of the block of rows defining it (same
    size; row ``i`` reads ``A[i] x = row_lo[i]`` with ``-1`` on its own variable).  ``norms``: the norm blocks by
    norm (``linf``, ``abs``, ``changed``), computed from the deltas.  Rows belong to statements through each
    :class:`RowBlock`'s ``group``/``statement``/``span``; ReLU outputs are named by the ``relus`` atoms."""

    defines: dict[int, int] = field(default_factory=dict)
    norms: dict[str, VarBlock] = field(default_factory=dict)

    def norm_block(self, name: str) -> VarBlock | None:
        return self.norms.get(name)


@dataclass
class Query:
    lb: np.ndarray
    ub: np.ndarray
    integer: np.ndarray
    A: sp.csr_matrix
    row_lo: np.ndarray
    row_hi: np.ndarray
    c: np.ndarray
    offset: float = 0.0
    relus: np.ndarray = field(default_factory=lambda: np.zeros((0, 2), dtype=np.int64))
    disjunctions: list[Disjunction] = field(default_factory=list)
    var_blocks: list[VarBlock] = field(default_factory=list)
    row_blocks: list[RowBlock] = field(default_factory=list)
    name: str = "query"
    products: np.ndarray = field(default_factory=lambda: np.zeros((0, 3), dtype=np.int64))
    # The statement the finite bounds of delta/norm/neuron variables derive from (`bound linf <= c`), if any:
    # an infeasibility explanation must name it when those bounds take part in the conflict.
    var_bound_source: RowBlock | None = None
    # How the encoder built it (None for queries built otherwise, e.g. region queries): see Structure.
    structure: Structure | None = None

    @property
    def n_vars(self) -> int:
        return int(self.lb.size)

    @property
    def n_rows(self) -> int:
        return int(self.row_lo.size)

    @property
    def n_integer(self) -> int:
        return int(np.count_nonzero(self.integer))

    @property
    def problem_class(self) -> str:
        """LP when nothing needs a binary; MILP otherwise (ReLU atoms, disjunctions or integer variables)."""
        if len(self.products):
            return "SMT"
        unstable = len(self.relus) > 0
        if unstable or self.disjunctions or self.n_integer:
            return "MILP"
        return "LP"

    def size_summary(self) -> str:
        extra = []
        if len(self.relus):
            extra.append(f"{len(self.relus)} ReLU atoms")
        if self.disjunctions:
            extra.append(f"{len(self.disjunctions)} disjunctions")
        if self.n_integer:
            extra.append(f"{self.n_integer} integer vars")
        if len(self.products):
            extra.append(f"{len(self.products)} products")
        tail = (", " + ", ".join(extra)) if extra else ""
        return f"{self.n_vars} vars, {self.n_rows} rows, {self.A.nnz} nonzeros{tail}"

    def derive(self, **changes: Any) -> Query:
        """A copy with ``changes``: the one way to derive a query from another.  Every field not named is kept
        (products, atoms, integrality, blocks, spans, structure, the bound's source), so a restriction or a
        re-bounded query can never silently drop a product or turn an integer variable continuous; the arrays
        changed must keep their meaning (same variables, rows only appended)."""
        if "A" in changes and "integer" not in changes and changes["A"].shape[1] != self.n_vars:
            raise ValueError("a derived query with new variables must say which of them are integer")
        return replace(self, **changes)

    def block(self, name: str) -> VarBlock:
        for b in self.var_blocks:
            if b.name == name:
                return b
        raise KeyError(name)

    def row_block_of(self, row: int) -> RowBlock | None:
        for b in self.row_blocks:
            if b.start <= row < b.start + b.size:
                return b
        return None


class QueryBuilder:
    """Accumulates variables and rows as whole arrays (COO triplets), then freezes them into a Query.

    Rows are added in blocks from numpy/scipy arrays, never one coefficient at a time, so that building a
    problem with millions of nonzeros stays a handful of array concatenations.
    """

    def __init__(self, name: str = "query"):
        self.name = name
        self._lb: list[np.ndarray] = []
        self._ub: list[np.ndarray] = []
        self._int: list[np.ndarray] = []
        self.n_vars = 0
        self._rows: list[sp.coo_matrix] = []
        self._row_lo: list[np.ndarray] = []
        self._row_hi: list[np.ndarray] = []
        self.n_rows = 0
        self.var_blocks: list[VarBlock] = []
        self.row_blocks: list[RowBlock] = []
        self.relus: list[np.ndarray] = []
        self.disjunctions: list[Disjunction] = []
        self.products: list[np.ndarray] = []
        self.var_bound_source: RowBlock | None = None
        self.structure = Structure()
        self._c: dict[int, float] = {}
        self._c_arrays: list[tuple[np.ndarray, np.ndarray]] = []
        self.offset = 0.0

    # ------------------------------------------------------------------ variables
    def add_vars(self, n: int, lb: float | np.ndarray = -np.inf, ub: float | np.ndarray = np.inf, *,
                 integer: bool = False, name: str = "x", kind: str = "aux", span: Span | None = None) -> np.ndarray:
        idx = np.arange(self.n_vars, self.n_vars + n, dtype=np.int64)
        self._lb.append(np.broadcast_to(np.asarray(lb, dtype=np.float64), (n,)).copy())
        self._ub.append(np.broadcast_to(np.asarray(ub, dtype=np.float64), (n,)).copy())
        self._int.append(np.full(n, integer, dtype=bool))
        self.var_blocks.append(VarBlock(name, self.n_vars, n, kind, span))
        self.n_vars += n
        return idx

    def var_bounds(self) -> tuple[np.ndarray, np.ndarray]:
        """All bounds so far (read-only views of the builder's state).  The pieces are merged into one array on
        each call, so the encoder's per-point calls copy one big array plus a few new blocks instead of
        re-joining thousands of small ones (which made encoding quadratic in the number of points)."""
        if len(self._lb) != 1:
            self._lb = [np.concatenate(self._lb) if self._lb else np.zeros(0)]
            self._ub = [np.concatenate(self._ub) if self._ub else np.zeros(0)]
        return self._lb[0], self._ub[0]

    def tighten_bounds(self, idx: np.ndarray, lb: np.ndarray, ub: np.ndarray) -> None:
        """Intersect the bounds of existing variables (used once sound bounds are known)."""
        lb_all, ub_all = self.var_bounds()
        lb_all[idx] = np.maximum(lb_all[idx], lb)
        ub_all[idx] = np.minimum(ub_all[idx], ub)
        self._lb, self._ub = [lb_all], [ub_all]

    # ------------------------------------------------------------------ rows
    def add_rows(self, M: sp.spmatrix | np.ndarray, lo: float | np.ndarray, hi: float | np.ndarray, *,
                 label: str, group: str, span: Span | None = None, statement: str = "",
                 point: str = "") -> np.ndarray:
        """Add ``lo <= M x <= hi``; ``M`` has ``n_vars`` columns (or fewer: the rest are zero)."""
        M = sp.coo_matrix(M)
        m = M.shape[0]
        if m == 0:
            return np.zeros(0, dtype=np.int64)
        coo = sp.coo_matrix((M.data, (M.row + self.n_rows, M.col)), shape=(self.n_rows + m, max(M.shape[1], 1)))
        self._rows.append(coo)
        self._row_lo.append(np.broadcast_to(np.asarray(lo, dtype=np.float64), (m,)).copy())
        self._row_hi.append(np.broadcast_to(np.asarray(hi, dtype=np.float64), (m,)).copy())
        idx = np.arange(self.n_rows, self.n_rows + m, dtype=np.int64)
        self.row_blocks.append(RowBlock(label, self.n_rows, m, group, span, statement, point))
        self.n_rows += m
        return idx

    def define(self, variables: np.ndarray, rows: np.ndarray) -> None:
        """Record that ``rows`` (consecutive) define the materialized ``variables`` (consecutive, same count)."""
        if len(variables):
            self.structure.defines[int(variables[0])] = int(rows[0])

    def mark_norm(self, name: str, variables: np.ndarray) -> None:
        """Record that ``variables`` (the block just added) hold the norm ``name`` of the deltas."""
        self.structure.norms[name] = next(b for b in reversed(self.var_blocks) if b.start == int(variables[0]))

    def add_relu(self, y: np.ndarray, x: np.ndarray) -> None:
        self.relus.append(np.stack([np.asarray(y, dtype=np.int64), np.asarray(x, dtype=np.int64)], axis=1))

    def add_disjunction(self, M: sp.spmatrix, lo: np.ndarray, hi: np.ndarray, alt: np.ndarray, *, label: str,
                        group: str, span: Span | None = None, statement: str = "", point: str = "") -> None:
        self.disjunctions.append(Disjunction(sp.csr_matrix(M), np.asarray(lo, float), np.asarray(hi, float),
                                             np.asarray(alt, dtype=np.int64), label, group, span, statement, point))

    def add_product(self, z: np.ndarray, x: np.ndarray, y: np.ndarray) -> None:
        """``x_z = x_x * x_y`` elementwise (a nonlinear atom: SMT backends only)."""
        self.products.append(np.stack([np.asarray(a, dtype=np.int64).reshape(-1) for a in (z, x, y)], axis=1))

    # ------------------------------------------------------------------ objective
    def add_objective(self, idx: np.ndarray, coef: float | np.ndarray) -> None:
        idx = np.asarray(idx, dtype=np.int64)
        self._c_arrays.append((idx, np.broadcast_to(np.asarray(coef, dtype=np.float64), idx.shape).copy()))

    # ------------------------------------------------------------------ freeze
    def build(self) -> Query:
        n = self.n_vars
        lb, ub = (a.copy() for a in self.var_bounds())
        integer = np.concatenate(self._int) if self._int else np.zeros(0, dtype=bool)
        if self._rows:
            rows = np.concatenate([r.row for r in self._rows])
            cols = np.concatenate([r.col for r in self._rows])
            vals = np.concatenate([r.data for r in self._rows])
            A = sp.csr_matrix((vals, (rows, cols)), shape=(self.n_rows, n))
            A.sum_duplicates()
            A.eliminate_zeros()
        else:
            A = sp.csr_matrix((0, n))
        c = np.zeros(n)
        for idx, coef in self._c_arrays:
            np.add.at(c, idx, coef)
        relus = np.concatenate(self.relus) if self.relus else np.zeros((0, 2), dtype=np.int64)
        disj = []
        for d in self.disjunctions:
            D = d.A
            if D.shape[1] < n:
                D = sp.csr_matrix((D.data, D.indices, D.indptr), shape=(D.shape[0], n))
            disj.append(Disjunction(D, d.lo, d.hi, d.alt, d.label, d.group, d.span, d.statement, d.point))
        products = np.concatenate(self.products) if self.products else np.zeros((0, 3), dtype=np.int64)
        return Query(lb=lb, ub=ub, integer=integer, A=A,
                     row_lo=np.concatenate(self._row_lo) if self._row_lo else np.zeros(0),
                     row_hi=np.concatenate(self._row_hi) if self._row_hi else np.zeros(0),
                     c=c, offset=self.offset, relus=relus, disjunctions=disj, var_blocks=list(self.var_blocks),
                     row_blocks=list(self.row_blocks), name=self.name, products=products,
                     var_bound_source=self.var_bound_source,
                     structure=Structure(dict(self.structure.defines), dict(self.structure.norms)))
