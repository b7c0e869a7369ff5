"""Complete verification of a property over input boxes: the unsafe region, its Query, and the input-split search.

A property is reduced to *cases*: an input box and an **unsafe output region** in one normal form,
:class:`UnsafeSpec` (an OR of conjunctions of rows ``a·y <= d``).  The property holds on the box iff no input in
the box maps into the unsafe region.  Two complete procedures decide that, both sound by construction:

1. :func:`encode_region_query` lowers "some ``x`` in the box reaches the unsafe region" to the solver-neutral
   :class:`~patchlang.query.Query` (input variables with box bounds, ReLU atoms only for the neurons
   whose phase the bounds leave open, a disjunction when several conjunctions are open).  Feasible means a
   counterexample candidate, infeasible means the box is safe.  Any backend solves it (HiGHS, Gurobi, Marabou).
2. :func:`search_box` splits the input box (branch on the input dimension whose bound coefficient times width is
   largest) and decides most sub-boxes with symbolic bounds alone (:mod:`patchlang.compile.bounds`): a conjunction
   is refuted on a box when one of its rows has a lower bound above the tolerance.  Box centres and the corners
   minimising each linear bound are evaluated as counterexample candidates; boxes whose bounds leave few
   unstable ReLUs (or all stable: then the network is affine there) go to the Query of (1).

Soundness: the unsafe rows are enlarged by ``tol`` (``a·y <= d + tol``) in every bound test and every Query, so
float rounding cannot turn a reachable unsafe point into a "holds".  Candidates are only *candidates*: the caller
confirms each one (float64 IR and onnxruntime float32 on the original file) before reporting a violation.
"""

from __future__ import annotations

import inspect
import itertools
import time
from dataclasses import dataclass, field
from functools import partial
from typing import Any, Callable

import numpy as np
import scipy.sparse as sp

from ..errors import PatchlangError
from .bounds import LayerBounds, ReluNet, affine_interval, backward_bounds, forward_bounds, spec_lower_bounds
from .box_alpha import descend_in_boxes, optimise_boxes, refuted_conjunctions
from .goals import Alternative, Clause
from .walk import NetworkWalker
from ..query import Query, QueryBuilder

DEFAULT_TOL = 1e-6
MAX_CONJUNCTIONS = 4096


# ============================================================================ the unsafe region


@dataclass
class UnsafeSpec:
    """OR over conjunctions ``j`` of AND over its rows ``r``: ``A[r] @ y <= d[r]`` (``<`` where ``strict``).

    A conjunction with no rows is "every output is unsafe".  ``texts`` describe each conjunction in the user's
    words (for reports).
    """

    A: np.ndarray  # (R, n_out)
    d: np.ndarray  # (R,)
    conj: np.ndarray  # (R,) conjunction of each row
    strict: np.ndarray  # (R,) bool
    n_conj: int
    texts: list[str] = field(default_factory=list)

    def __post_init__(self) -> None:
        self.A = np.asarray(self.A, float).reshape(-1, self.A.shape[-1] if np.ndim(self.A) == 2 else 0)
        self.d = np.asarray(self.d, float).reshape(-1)
        self.conj = np.asarray(self.conj, np.int64).reshape(-1)
        self.strict = np.asarray(self.strict, bool).reshape(-1)

    @property
    def always_unsafe(self) -> bool:
        counts = np.bincount(self.conj, minlength=self.n_conj)
        return bool(np.any(counts == 0))

    def row_values(self, y: np.ndarray) -> np.ndarray:
        """``A y - d`` for outputs ``(N, n_out)``: ``(N, R)``; a row's atom holds where this is ``<= 0``."""
        return np.atleast_2d(y) @ self.A.T - self.d

    def satisfaction(self, y: np.ndarray) -> np.ndarray:
        """Per point, the property's satisfaction: ``< 0`` exactly where ``y`` is unsafe (strictness honoured);
        see :mod:`patchlang.inputs.satisfaction` for the definition and the sign rule."""
        from ..inputs.satisfaction import satisfaction_values

        return satisfaction_values(self.row_values(y), self.conj, self.strict, self.n_conj)

    def violated(self, y: np.ndarray, tol: float = 0.0) -> np.ndarray:
        """Which points are unsafe, honouring strictness (``tol`` > 0 enlarges the region)."""
        v = self.row_values(y)
        ok = np.where(self.strict, v < tol, v <= tol) if tol == 0.0 else v <= tol
        hit = np.ones((ok.shape[0], self.n_conj), dtype=bool)
        if self.conj.size:
            np.logical_and.at(hit.T, self.conj, ok.T)
        return hit.any(axis=1)

    def which(self, y: np.ndarray) -> list[int]:
        """The conjunctions a single output vector satisfies (honouring strictness)."""
        v = self.row_values(y)[0]
        ok = np.where(self.strict, v < 0, v <= 0)
        return [j for j in range(self.n_conj) if np.all(ok[self.conj == j])]

    def safe_clauses(self, n_out: int, margin: float) -> list[Clause]:
        """The property as output clauses for a patch: for every conjunction, some row is violated by ``margin``.

        ``not (a y <= d)`` is ``a y > d``, required as ``a y >= d + margin``; an always-unsafe conjunction
        yields an empty clause, which no patch can satisfy.
        """
        clauses: list[Clause] = []
        for j in range(self.n_conj):
            rows = np.nonzero(self.conj == j)[0]
            clauses.append([Alternative(self.A[r:r + 1].copy(), np.array([self.d[r] + margin]), np.array([np.inf]))
                            for r in rows])
        return clauses


def _atom_text(a: np.ndarray, d: float, strict: bool) -> str:
    terms = [f"{'-' if c < 0 else '+'} {'' if abs(c) == 1 else f'{abs(c):g}*'}y[{j}]" for j, c in enumerate(a) if c]
    lhs = " ".join(terms) or "0"
    lhs = lhs[2:] if lhs.startswith("+ ") else "-" + lhs[2:]
    return f"{lhs} {'<' if strict else '<='} {d:g}"


def _make_spec(conjs: list[list[tuple[np.ndarray, float, bool]]], n_out: int) -> UnsafeSpec:
    A, d, cj, st, texts = [], [], [], [], []
    for j, rows in enumerate(conjs):
        for a, rhs, strict in rows:
            A.append(np.asarray(a, float))
            d.append(float(rhs))
            cj.append(j)
            st.append(bool(strict))
        texts.append(" and ".join(_atom_text(a, rhs, s) for a, rhs, s in rows) or "any output")
    A_arr = np.array(A).reshape(len(A), n_out) if A else np.zeros((0, n_out))
    return UnsafeSpec(A_arr, np.array(d), np.array(cj, dtype=np.int64), np.array(st, dtype=bool), len(conjs), texts)


def unsafe_from_vnnlib(dnf: list[list[Any]], n_out: int) -> UnsafeSpec:
    """A VNN-LIB unsafe DNF (lists of :class:`~patchlang.inputs.vnnlib.LinearAtom`) in normal form."""
    conjs = []
    for conj in dnf:
        rows = []
        for atom in conj:
            a = np.zeros(n_out)
            for j, c in atom.coeffs.items():
                a[j] += c
            rows.append((a, atom.rhs, False) if atom.op == "<=" else (-a, -atom.rhs, False))
        conjs.append(rows)
    return _make_spec(conjs, n_out)


def unsafe_from_clauses(clauses: list[Clause], n_out: int) -> UnsafeSpec:
    """The negation of a CNF of alternatives (the property's ``ensure``): an OR of conjunctions.

    ``not clause`` = every alternative fails; an alternative ``lo <= C y <= hi`` fails when one of its rows
    leaves that range (``C_r y < lo_r`` or ``C_r y > hi_r``), so each clause expands into the product of its
    alternatives' failure sides.
    """
    conjs: list[list[tuple[np.ndarray, float, bool]]] = []
    for clause in clauses:
        options = []
        for alt in clause:
            sides = []
            for r in range(alt.C.shape[0]):
                if np.isfinite(alt.lo[r]):
                    sides.append((alt.C[r].astype(float), float(alt.lo[r]), True))
                if np.isfinite(alt.hi[r]):
                    sides.append((-alt.C[r].astype(float), -float(alt.hi[r]), True))
            options.append(sides)
        if any(len(o) == 0 for o in options):
            continue  # an alternative that always holds: the clause can never fail
        count = int(np.prod([len(o) for o in options])) if options else 1
        if len(conjs) + count > MAX_CONJUNCTIONS:
            raise PatchlangError(f"the property's negation has more than {MAX_CONJUNCTIONS} cases",
                                 help="split the property into several smaller ones")
        for combo in itertools.product(*options):
            conjs.append(list(combo))
    return _make_spec(conjs, n_out)


@dataclass
class RegionCase:
    """One input box and the unsafe outputs for it; ``label`` names the box (e.g. a point's index)."""

    lo: np.ndarray
    hi: np.ndarray
    spec: UnsafeSpec
    label: str = ""


# ============================================================================ the Query


@dataclass
class RegionEncoding:
    query: Query
    inputs: np.ndarray  # variable index of each input
    outputs: np.ndarray  # variable index of each output
    n_unstable: int


def encode_region_query(rn: ReluNet, lo: np.ndarray, hi: np.ndarray, spec: UnsafeSpec, conj_open: np.ndarray | None,
                        bounds: LayerBounds | None = None, tol: float = DEFAULT_TOL, name: str = "verify",
                        extend: Callable[[QueryBuilder, np.ndarray], None] | None = None,
                        objective: np.ndarray | None = None) -> RegionEncoding:
    """"Some input in ``[lo, hi]`` has outputs in the (``tol``-enlarged) unsafe region" as a Query.

    ``bounds`` are sound pre-activation bounds for this box (computed when absent); ReLUs they fix cost nothing,
    the others become ``relu`` atoms.  ``conj_open`` selects the conjunctions still to refute (default all).
    ``extend(builder, input_vars)`` adds rows, variables and an objective over the inputs before the Query is
    frozen (the attack's norm of the input change: :mod:`patchlang.compile.attack`); a negative ``tol`` asks for
    outputs that far *inside* the unsafe region.  ``objective``: coefficients on the outputs to minimise (the
    verdict does not depend on it; it guides a MILP solver's search, see branch_and_bound's MILP fallback).
    """
    if rn.smooth:
        raise PatchlangError(f"the network has {'/'.join(rn.smooth)} activations: no exact query can be built over "
                             "an input region (they have sound bounds only)",
                             help="`verify` decides such networks by input splitting with bounds alone", code="PL301")
    lo = np.asarray(lo, float).reshape(-1)
    hi = np.asarray(hi, float).reshape(-1)
    if bounds is None:
        fb = forward_bounds(rn, lo[None], hi[None])
        bounds = backward_bounds(rn, lo[None], hi[None], fb) if rn.input_size > 20 else fb
    qb = QueryBuilder(name)
    x = qb.add_vars(lo.size, lo, hi, name="input", kind="input")
    walk = NetworkWalker(qb, define=False)  # the same walker as the patch encoder (compile.walk)
    h_idx = x  # variable index per coordinate of the current layer's input; -1 means the constant 0
    for k in range(rn.n_hidden + 1):
        W, b = rn.Ws[k], rn.bs[k]
        if k < rn.n_hidden:
            l, u = bounds.lower[k][0], bounds.upper[k][0]
        else:  # outputs: interval bounds from the last hidden layer's post-activation bounds
            in_lo = np.maximum(bounds.lower[k - 1][0], 0.0) if k else lo
            in_hi = np.maximum(bounds.upper[k - 1][0], 0.0) if k else hi
            l, u = (v[0] for v in affine_interval(W, b, in_lo[None], in_hi[None]))
        z = walk.dense_layer(h_idx, W, b, l - 1e-9 * (1 + np.abs(l)), u + 1e-9 * (1 + np.abs(u)), f"z{k}",
                             f"layer {k}")
        if k == rn.n_hidden:
            y = z
            break
        h_idx = walk.relu_of_vars(z, l, u, f"relu{k}")
    n_unstable = walk.n_unstable
    open_j = np.arange(spec.n_conj) if conj_open is None else np.nonzero(conj_open)[0]
    if open_j.size == 0:
        raise PatchlangError("internal: no unsafe conjunction left to encode")
    n = qb.n_vars

    def rows_of(j: int) -> tuple[sp.csr_matrix, np.ndarray]:
        rows = np.nonzero(spec.conj == j)[0]
        A = spec.A[rows]
        M = sp.coo_matrix(A)
        return sp.csr_matrix((M.data, (M.row, y[M.col])), shape=(rows.size, n)), spec.d[rows] + tol

    if open_j.size == 1:
        M, rhs = rows_of(int(open_j[0]))
        if M.shape[0]:
            qb.add_rows(M, -np.inf, rhs, label=spec.texts[open_j[0]] if spec.texts else "unsafe", group="property")
    else:
        mats, his, alts = [], [], []
        for k, j in enumerate(open_j):
            M, rhs = rows_of(int(j))
            if M.shape[0] == 0:  # an always-unsafe alternative: the disjunction is trivially true
                mats, his, alts = [], [], []
                break
            mats.append(M)
            his.append(rhs)
            alts.append(np.full(M.shape[0], k))
        if mats:
            qb.add_disjunction(sp.vstack(mats).tocsr(), np.full(sum(m.shape[0] for m in mats), -np.inf),
                               np.concatenate(his), np.concatenate(alts), label="unsafe region", group="property")
    if extend is not None:
        extend(qb, x)
    if objective is not None:
        qb.add_objective(y, np.asarray(objective, float))
    return RegionEncoding(qb.build(), x, y, n_unstable)


# ============================================================================ the input-split search


@dataclass
class SearchOptions:
    tol: float = DEFAULT_TOL
    # boxes bounded together: small batches keep the search nearly depth-first and their arrays in cache (N1,9
    # property 7's counterexample: 3,600 boxes at 256, 20,000 at 2,048; proofs cost about the same either way)
    batch: int = 256
    milp_unstable: int = 25  # boxes this deep with at most this many unstable ReLUs go to the Query
    # (boxes with no unstable ReLU at all, where the network is affine, always do); at depth 20 ACAS Xu's N1,1
    # property 6 takes 4.6 s CPU instead of 11 s (its 17 leaves cost 7 s), but proofs of repaired networks (tight
    # margins) may lean on these leaves (the N2,9 property 8 repair had not finished after 10 min CPU at depth 20,
    # cause not confirmed), so 14 stays
    milp_depth: int = 14
    # at most this many such MILP leaves per case: with the optimised slopes, splitting further is cheaper than a
    # MILP (N4,2 property 2: 76 s with 2,099 leaves, 9 s CPU without)
    milp_leaves: int = 16
    max_boxes: int = 5_000_000
    deadline: float | None = None  # time.perf_counter() value
    split: bool = True  # False: one Query for the whole box (plain MILP)
    heuristic: str = "smear"  # smear | width | lookahead
    bounds: str = "hybrid"  # hybrid | backward | forward
    progress: Callable[[dict[str, Any]], None] | None = None  # called about once a second on long searches
    alpha_steps: int = 5  # projected-gradient steps on the slopes of boxes plain CROWN leaves open (0: none)
    alpha_lr: float = 0.2
    stats: dict[str, Any] | None = None  # counters the search adds to (alpha steps)
    descend: int = 16  # boxes per batch (closest centres first) searched by local gradient descent for violations


@dataclass
class SearchResult:
    status: str  # holds | violated | unknown
    x: np.ndarray | None = None
    reason: str = ""
    boxes: int = 0
    queries: int = 0
    evaluations: int = 0
    max_depth: int = 0
    unconfirmed: int = 0
    conj: list[int] = field(default_factory=list)
    deep_leaves: int = 0  # MILP leaves with unstable ReLUs so far (see SearchOptions.milp_leaves)


LeafSolver = Callable[[Query], Any]  # returns a Solution (status, x)
Confirm = Callable[[np.ndarray], bool]


def searched_by_bound(solve: LeafSolver) -> LeafSolver:
    """``solve`` asked for a search by bound when it takes ``bound_only`` (the verifier's leaf solver does: HiGHS
    without primal heuristics), else ``solve`` as it is.  For Queries whose answer is mostly a proof: measured on
    the 186 ACAS Xu instances, the input-split leaves' 56 MILPs took 5.1 s instead of 10.1 s, the whole run 47.0 s
    instead of 53.3 s, the violated instances' points found as fast (7.0 s instead of 7.3 s), every verdict the
    same.  A partial, not a closure: a picklable ``solve`` stays picklable for worker processes."""
    if "bound_only" in inspect.signature(solve).parameters:
        return partial(solve, bound_only=True)
    return solve


def search_box(rn: ReluNet, case: RegionCase, solve: LeafSolver, confirm: Confirm,
               options: SearchOptions | None = None) -> SearchResult:
    """Decide one case completely (or until the deadline): see the module docstring."""
    opt = options or SearchOptions()
    spec = case.spec
    lo0 = np.asarray(case.lo, float).reshape(1, -1)
    hi0 = np.asarray(case.hi, float).reshape(1, -1)
    res = SearchResult("unknown")
    if spec.always_unsafe:
        x = (lo0[0] + hi0[0]) / 2
        if confirm(x):
            res.status, res.x = "violated", x
            return res
    if not opt.split:
        return _one_query_per_conjunction(rn, lo0, hi0, spec, solve, confirm, opt, res)

    stack = _Boxes()
    stack.push(lo0, hi0, np.ones((1, spec.n_conj), bool), np.zeros(1, np.int64), None, None)
    undecided = 0
    last_report = time.perf_counter()
    while stack.pending:
        if opt.progress is not None and time.perf_counter() - last_report >= 1.0:
            last_report = time.perf_counter()
            opt.progress({"method": "input-split", "domains": res.boxes, "left": stack.pending})
        if opt.deadline is not None and time.perf_counter() > opt.deadline:
            res.reason = f"time limit reached with {stack.pending} sub-boxes left ({res.boxes} examined)"
            return res
        if res.boxes > opt.max_boxes:
            res.reason = f"gave up after {res.boxes} sub-boxes"
            return res
        lo, hi, op, dep, warm, prior = stack.pop(opt.batch)
        res.boxes += lo.shape[0]
        res.max_depth = max(res.max_depth, int(dep.max()))
        boxes = _open_boxes(rn, spec, lo, hi, op, dep, opt, warm, prior)
        if boxes is None:
            continue
        found = _try_candidates(rn, spec, boxes, confirm, res, opt.descend)
        if found is not None:
            return found
        found, leaf, stuck = _solve_leaves(rn, spec, boxes, solve, confirm, opt, res)
        if found is not None:
            return found
        undecided += stuck
        if np.any(~leaf):
            _split(rn, spec, boxes, ~leaf, opt, lo0, hi0, stack)
    if undecided:
        res.status = "unknown"
        res.reason = f"{undecided} sub-box(es) undecided: {res.reason}"
        return res
    res.status = "holds"
    return res


class _Boxes:
    """The sub-boxes still to examine, stacked in chunks of ``(lo, hi, open conjunctions, depth, slopes, prior)``.

    The slopes (float32 ``(B, R, n_k)`` per hidden layer, the parent's optimised ones) warm-start the children's
    optimisation; ``prior`` (the parent's hidden-layer bounds, lower then upper per layer) bounds every child too,
    since a child box lies inside its parent: intersected with the child's own bounds it fixes more ReLUs before
    the costly refinement runs.  Either is absent (None) where nothing was computed yet."""

    def __init__(self) -> None:
        self.chunks: list[tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray, list[np.ndarray] | None,
                                list[np.ndarray] | None]] = []
        self.pending = 0

    def pop(self, batch: int) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray, list[np.ndarray] | None,
                                       list[np.ndarray] | None]:
        """Up to ``batch`` boxes from the top (depth first keeps the stack small); slopes (or priors) only when
        every box taken has them (of one shape)."""
        parts = []
        taken = 0
        while self.chunks and taken < batch:
            chunk = self.chunks[-1]
            k = min(batch - taken, chunk[0].shape[0])
            parts.append(tuple(_rows(x, slice(-k, None)) for x in chunk))
            if k == chunk[0].shape[0]:
                self.chunks.pop()
            else:
                self.chunks[-1] = tuple(_rows(x, slice(None, -k)) for x in chunk)  # type: ignore[assignment]
            taken += k
        self.pending -= taken
        lo, hi, op, dep = (np.concatenate([p[i] for p in parts]) for i in range(4))
        return lo, hi, op, dep, _joined([p[4] for p in parts]), _joined([p[5] for p in parts])

    def push(self, lo: np.ndarray, hi: np.ndarray, op: np.ndarray, dep: np.ndarray,
             warm: list[np.ndarray] | None, prior: list[np.ndarray] | None = None) -> None:
        self.chunks.append((lo, hi, op, dep, warm, prior))
        self.pending += lo.shape[0]


def _rows(x: np.ndarray | list[np.ndarray] | None, sel: slice) -> np.ndarray | list[np.ndarray] | None:
    """The boxes ``sel`` of an array, or of every array of a per-layer list (None stays None)."""
    if x is None:
        return None
    return [a[sel] for a in x] if isinstance(x, list) else x[sel]


def _joined(lists: list[list[np.ndarray] | None]) -> list[np.ndarray] | None:
    """Per-layer lists of several chunks concatenated, or None unless every chunk has one of the same shapes."""
    if any(w is None for w in lists) or len({tuple(a.shape[1:] for a in w) for w in lists}) != 1:  # type: ignore
        return None
    return [np.concatenate([w[k] for w in lists]) for k in range(len(lists[0]))]  # type: ignore[index]


@dataclass
class _Open:
    """Boxes with at least one conjunction the bounds do not refute, and what the bounds said about them."""

    lo: np.ndarray
    hi: np.ndarray
    op: np.ndarray
    dep: np.ndarray
    Lam: np.ndarray
    corner: np.ndarray
    best_row: np.ndarray  # (B, n_conj): the most promising row of each open conjunction, -1 where closed
    fb: LayerBounds
    alpha: list[np.ndarray] | None = None  # the optimised slopes (warm start for the children)


def _open_boxes(rn: ReluNet, spec: UnsafeSpec, lo: np.ndarray, hi: np.ndarray, op: np.ndarray, dep: np.ndarray,
                opt: SearchOptions, warm: list[np.ndarray] | None = None, prior: list[np.ndarray] | None = None
                ) -> _Open | None:
    """Bound every box (within ``prior``, bounds valid on an enclosing box); close the conjunctions the bounds
    refute; None when no box has one left open."""
    n = rn.n_hidden
    fb = layer_bounds(rn, lo, hi, opt.bounds, None if prior is None else LayerBounds(prior[:n], prior[n:]))
    lb, Lam, const, _ = spec_lower_bounds(rn, spec.A, -spec.d, lo, hi, fb)
    thr = opt.tol * (1.0 + np.abs(spec.d))
    op = op & ~refuted_conjunctions(lb, spec.conj, spec.n_conj, thr)
    op &= ~_refuted_by_combinations(spec, Lam, const, lo, hi, opt.tol)
    alive = op.any(axis=1)
    if opt.alpha_steps > 0 and np.any(alive):
        # optimised slopes, only where plain CROWN left a conjunction open (issue 12)
        ii = np.nonzero(alive)[0]
        ob = optimise_boxes(rn, spec.A, -spec.d, spec.conj, spec.n_conj, thr, lo[ii], hi[ii], fb.take(ii), op[ii],
                            steps=opt.alpha_steps, lr=opt.alpha_lr,
                            warm=None if warm is None else [w[ii] for w in warm])
        stats = opt.stats if opt.stats is not None else {}
        stats["alpha steps"] = stats.get("alpha steps", 0) + ob.steps
        lb = lb.copy()
        lb[ii] = np.maximum(lb[ii], ob.lb)
        # (the split heuristic keeps plain CROWN's coefficients: with the optimised ones it needs twice the boxes)
        sub = op[ii] & ~refuted_conjunctions(lb[ii], spec.conj, spec.n_conj, thr)
        sub &= ~_refuted_by_combinations(spec, ob.Lam, ob.const, lo[ii], hi[ii], opt.tol)
        op = op.copy()
        op[ii] = sub
        alive = op.any(axis=1)
    if not np.any(alive):
        return None
    keep = np.nonzero(alive)[0]
    corner = np.where(Lam[keep] > 0, lo[keep][:, None, :], hi[keep][:, None, :])
    alpha = None
    if opt.alpha_steps > 0:
        pos = np.searchsorted(ii, keep)  # every box still alive was optimised
        alpha = [a[pos] for a in ob.alpha]
    return _Open(lo[alive], hi[alive], op[alive], dep[alive], Lam[alive], corner,
                 _best_rows(lb[alive], spec, op[alive]), fb.take(keep), alpha)


def _try_candidates(rn: ReluNet, spec: UnsafeSpec, b: _Open, confirm: Confirm, res: SearchResult,
                    descend: int = 0) -> SearchResult | None:
    """Counterexample candidates: the centres and, per open conjunction, the corner of its most promising row;
    then local descents from the candidates that come closest to the unsafe region (a centre or a corner: some
    violations sit on the box's faces); the result with a confirmed violation, or None."""
    n = b.lo.shape[0]
    cand, owner = [(b.lo + b.hi) / 2], [np.arange(n)]
    for j in range(spec.n_conj):
        sel = b.best_row[:, j] >= 0
        if np.any(sel):
            cand.append(b.corner[np.nonzero(sel)[0], b.best_row[sel, j]])
            owner.append(np.nonzero(sel)[0])
    cand_x = np.concatenate(cand)
    box_of = np.concatenate(owner)
    y = rn.forward(cand_x)
    res.evaluations += cand_x.shape[0]
    for i in np.nonzero(spec.violated(y))[0][:8]:
        if confirm(cand_x[i]):
            res.status, res.x, res.conj = "violated", cand_x[i], spec.which(y[i:i + 1])
            return res
        res.unconfirmed += 1
    if descend > 0:  # a few local descents from the candidates closest to the unsafe region, in their boxes
        pick = np.argsort(spec.satisfaction(y), kind="stable")[:descend]
        box = box_of[pick]
        x = descend_in_boxes(rn, spec.A, spec.d, spec.conj, spec.strict, spec.n_conj, b.lo[box], b.hi[box],
                             start=cand_x[pick])
        y = rn.forward(x)
        res.evaluations += 9 * pick.size
        for i in np.nonzero(spec.violated(y))[0][:8]:
            if confirm(x[i]):
                res.status, res.x, res.conj = "violated", x[i], spec.which(y[i:i + 1])
                return res
            res.unconfirmed += 1
    return None


def _solve_leaves(rn: ReluNet, spec: UnsafeSpec, b: _Open, solve: LeafSolver, confirm: Confirm,
                  opt: SearchOptions, res: SearchResult) -> tuple[SearchResult | None, np.ndarray, int]:
    """Boxes with few unstable ReLUs go to the exact Query: (a confirmed violation or None, the leaf mask, how
    many leaves stayed undecided)."""
    unstable = b.fb.n_unstable()
    deep = (unstable <= opt.milp_unstable) & (b.dep >= opt.milp_depth) & (unstable > 0)
    if rn.smooth:  # no exact query through a sigmoid/tanh: bounds and splitting alone decide every box
        deep[:] = False
    budget = max(0, opt.milp_leaves - res.deep_leaves)
    if np.count_nonzero(deep) > budget:
        deep[np.nonzero(deep)[0][budget:]] = False
    res.deep_leaves += int(np.count_nonzero(deep))
    leaf = (unstable == 0) | deep
    if rn.smooth:
        leaf[:] = False
    undecided = 0
    solve = searched_by_bound(solve)
    for i in np.nonzero(leaf)[0]:
        if opt.deadline is not None and time.perf_counter() > opt.deadline:
            undecided += 1
            res.reason = "time limit reached while solving leaf boxes"
            continue
        sub = _leaf(rn, b.lo[i], b.hi[i], b.op[i], b.fb.take(np.array([i])), spec, solve, confirm, opt,
                    SearchResult("unknown"), final=False)
        res.queries += sub.queries
        res.unconfirmed += sub.unconfirmed
        if sub.status == "violated":
            sub.boxes, sub.evaluations, sub.max_depth = res.boxes, res.evaluations, res.max_depth
            sub.queries = res.queries
            return sub, leaf, undecided
        if sub.status == "unknown":
            undecided += 1
            res.reason = sub.reason
    return None, leaf, undecided


def _split(rn: ReluNet, spec: UnsafeSpec, b: _Open, split: np.ndarray, opt: SearchOptions, lo0: np.ndarray,
           hi0: np.ndarray, stack: _Boxes) -> None:
    """Halve each box of ``split`` along its chosen dimension; both halves go on the stack."""
    lo, hi, op, dep, Lam, best_row = b.lo[split], b.hi[split], b.op[split], b.dep[split], b.Lam[split], \
        b.best_row[split]
    dim = _choose_split(rn, spec, lo, hi, op, Lam, best_row, opt, lo0, hi0, b.fb.take(np.nonzero(split)[0]))
    idx = np.arange(lo.shape[0])
    mid = (lo[idx, dim] + hi[idx, dim]) / 2
    hi_left, lo_right = hi.copy(), lo.copy()
    hi_left[idx, dim] = mid
    lo_right[idx, dim] = mid
    warm = None if b.alpha is None else [np.concatenate([a[split], a[split]]) for a in b.alpha]
    prior = [np.concatenate([a[split], a[split]]) for a in b.fb.lower + b.fb.upper]
    lo2, hi2 = np.concatenate([lo_right, lo]), np.concatenate([hi, hi_left])
    # the children whose centres come closest to the unsafe region are popped first (the stack's top is its end):
    # a violation is found sooner, and a proof examines the same boxes in another order
    order = np.argsort(-spec.satisfaction(rn.forward((lo2 + hi2) * 0.5)), kind="stable")
    op2, dep2 = np.concatenate([op, op]), np.concatenate([dep + 1, dep + 1])
    stack.push(lo2[order], hi2[order], op2[order], dep2[order], None if warm is None else [w[order] for w in warm],
               [a[order] for a in prior])


def _one_query_per_conjunction(rn: ReluNet, lo: np.ndarray, hi: np.ndarray, spec: UnsafeSpec, solve: LeafSolver,
                               confirm: Confirm, opt: SearchOptions, res: SearchResult) -> SearchResult:
    """No splitting (many inputs): refute what the bounds can, then one exact Query per remaining conjunction.

    One Query per conjunction (``y_j >= y_label`` for one ``j``) is much easier for a MILP solver than one
    disjunction over all of them, and the bounds usually close most conjunctions before any solver runs.
    """
    bounds = backward_bounds(rn, lo, hi, forward_bounds(rn, lo, hi)) if rn.input_size > 20 else \
        forward_bounds(rn, lo, hi, refine=True)
    lb, Lam, const, _ = spec_lower_bounds(rn, spec.A, -spec.d, lo, hi, bounds)
    refuted_row = lb > opt.tol * (1.0 + np.abs(spec.d))
    refuted = np.zeros((1, spec.n_conj), dtype=bool)
    np.logical_or.at(refuted.T, spec.conj, refuted_row.T)
    refuted |= _refuted_by_combinations(spec, Lam, const, lo, hi, opt.tol)
    open_j = [j for j in range(spec.n_conj) if not refuted[0, j]]
    # the conjunction whose best row is furthest from refuted first: the likeliest to be violated
    open_j.sort(key=lambda j: float(np.max(lb[0, spec.conj == j], initial=-np.inf)))
    reasons = []
    for j in open_j:
        if opt.deadline is not None and time.perf_counter() > opt.deadline:
            reasons.append("time limit reached")
            break
        mask = np.zeros(spec.n_conj, dtype=bool)
        mask[j] = True
        sub = _leaf(rn, lo[0], hi[0], mask, bounds, spec, solve, confirm, opt, SearchResult("unknown"), final=True)
        res.queries += sub.queries
        res.unconfirmed += sub.unconfirmed
        if sub.status == "violated":
            sub.queries = res.queries
            return sub
        if sub.status != "holds":
            reasons.append(sub.reason)
    res.boxes = 1
    if reasons:
        res.status, res.reason = "unknown", reasons[0]
    else:
        res.status = "holds"
    return res


def layer_bounds(rn: ReluNet, lo: np.ndarray, hi: np.ndarray, method: str, prior: LayerBounds | None = None
                 ) -> LayerBounds:
    """Hidden-layer bounds for a batch of boxes: forward symbolic (cheap) or backward substitution (tight);
    ``prior``: bounds valid on boxes enclosing these (a parent's), intersected layer by layer."""
    if method == "forward":
        return forward_bounds(rn, lo, hi, prior=prior)
    if method == "backward":
        return backward_bounds(rn, lo, hi, prior)
    return forward_bounds(rn, lo, hi, refine=True, prior=prior)


def _simplex_grid(k: int, m: int) -> np.ndarray:
    """All weight vectors of ``k`` non-negative multiples of ``1/m`` summing to 1 (``(P, k)``)."""
    pts = [c for c in itertools.product(range(m + 1), repeat=k) if sum(c) == m]
    return np.array(pts, dtype=float) / m


_GRIDS: dict[int, np.ndarray] = {}


def _refuted_by_combinations(spec: UnsafeSpec, Lam: np.ndarray, const: np.ndarray, lo: np.ndarray, hi: np.ndarray,
                             tol: float) -> np.ndarray:
    """Conjunctions refuted by a convex combination of their rows' linear lower bounds.

    Each row ``r`` has a sound linear lower bound ``g_r(x) = Lam_r x + const_r <= a_r y - d_r`` on the box; an
    unsafe point needs every ``g_r(x) <= tol``, so if ``min_x sum_r w_r g_r(x) > tol`` for some weights ``w`` on the
    simplex, no point of the box is unsafe for that conjunction (weak duality of the tiny LP over ``x``).  The
    weights are a grid on the simplex (rows of up to 6 per conjunction); cheap because the input dimension is
    small, and it decides boxes where different rows are refuted in different parts of the box.
    """
    B = lo.shape[0]
    out = np.zeros((B, spec.n_conj), dtype=bool)
    c, r = (lo + hi) * 0.5, (hi - lo) * 0.5
    for j in range(spec.n_conj):
        rows = np.nonzero(spec.conj == j)[0]
        k = rows.size
        if k < 2 or k > 6:
            continue
        if k not in _GRIDS:
            _GRIDS[k] = _simplex_grid(k, {2: 16, 3: 12, 4: 8, 5: 6, 6: 5}[k])
        w = _GRIDS[k]  # (P, k)
        G = np.einsum("pk,bkd->bpd", w, Lam[:, rows])
        g0 = const[:, rows] @ w.T  # (B, P)
        low = np.einsum("bpd,bd->bp", G, c) - np.einsum("bpd,bd->bp", np.abs(G), r) + g0
        t = tol * (1.0 + float(np.max(np.abs(spec.d[rows]))))
        out[:, j] = np.any(low > t, axis=1)
    return out


def _best_rows(lb: np.ndarray, spec: UnsafeSpec, op: np.ndarray) -> np.ndarray:
    """For each box and open conjunction, the row with the largest lower bound (closest to refuting it)."""
    B = lb.shape[0]
    best = np.full((B, spec.n_conj), -1, dtype=np.int64)
    for j in range(spec.n_conj):
        rows = np.nonzero(spec.conj == j)[0]
        if rows.size == 0:
            continue
        pick = rows[np.argmax(lb[:, rows], axis=1)]
        best[:, j] = np.where(op[:, j], pick, -1)
    return best


def _choose_split(rn: ReluNet, spec: UnsafeSpec, lo: np.ndarray, hi: np.ndarray, op: np.ndarray, Lam: np.ndarray,
                  best_row: np.ndarray, opt: SearchOptions, lo0: np.ndarray, hi0: np.ndarray, bounds: LayerBounds
                  ) -> np.ndarray:
    """Which input dimension to bisect, per box.

    ``lookahead`` bounds both halves for every dimension and keeps the dimension whose worse half gets the best
    bound (2d extra bound computations per box, but far fewer boxes); ``width`` bisects the widest dimension
    relative to the original box; ``smear`` weighs widths by the bound's input coefficients.
    """
    if opt.heuristic == "width":
        rel = (hi - lo) / np.maximum(hi0 - lo0, 1e-300)
        return np.argmax(rel, axis=1)
    if opt.heuristic == "smear":
        return _split_dims(Lam, best_row, hi - lo, _influence(rn, bounds, hi - lo))
    B, d = lo.shape
    tol = opt.tol * (1.0 + np.abs(spec.d))
    score = np.full((B, d), -np.inf)
    for i in range(d):
        mid = (lo[:, i] + hi[:, i]) / 2
        l2 = np.concatenate([lo, lo])
        h2 = np.concatenate([hi, hi])
        h2[:B, i] = mid
        l2[B:, i] = mid
        fb = layer_bounds(rn, l2, h2, opt.bounds)
        lb, _, _, _ = spec_lower_bounds(rn, spec.A, -spec.d, l2, h2, fb)
        lb = np.minimum(lb, tol)  # refuted is refuted: no credit beyond it
        per = np.full((2 * B, spec.n_conj), 0.0)
        for j in range(spec.n_conj):
            rows = np.nonzero(spec.conj == j)[0]
            if rows.size:
                per[:, j] = lb[:, rows].max(axis=1)
        op2 = np.concatenate([op, op])
        child = np.where(op2, per, 0.0).sum(axis=1)
        score[:, i] = np.minimum(child[:B], child[B:]) + 1e-3 * (child[:B] + child[B:])
    score = np.where(hi - lo > 0, score, -np.inf)
    return np.argmax(score, axis=1)


def _influence(rn: ReluNet, bounds: LayerBounds, width: np.ndarray) -> np.ndarray:
    """How much each input dimension's width feeds the unstable ReLUs: ``sum_k unstable_k @ P_k * width`` with
    ``P_k = |W_k| ... |W_0|`` row-normalised (a fixed matrix per layer)."""
    P = getattr(rn, "_influence", None)
    if P is None:
        P, M = [], np.eye(rn.input_size)
        for W in rn.Ws[:-1]:
            M = np.abs(W) @ M
            P.append(M / np.maximum(M.sum(axis=1, keepdims=True), 1e-300))
        rn._influence = P  # type: ignore[attr-defined]
    score = np.zeros_like(width)
    for Pk, l, u in zip(P, bounds.lower, bounds.upper):
        score += ((l < 0) & (u > 0)).astype(float) @ Pk
    return score * width


def _split_dims(Lam: np.ndarray, best_row: np.ndarray, width: np.ndarray, influence: np.ndarray) -> np.ndarray:
    """The input dimension to split: largest ``|coefficient| * width`` summed over the open conjunctions' rows
    (the smear of the bound), plus the dimension's share in feeding unstable ReLUs; each normalised per box.

    The second term matters when a relaxation flattens the bound's dependence on a wide dimension that is in fact
    what keeps many ReLUs unstable."""
    B = Lam.shape[0]
    score = np.zeros_like(width)
    for j in range(best_row.shape[1]):
        sel = best_row[:, j] >= 0
        if np.any(sel):
            ii = np.nonzero(sel)[0]
            score[ii] += np.abs(Lam[ii, best_row[ii, j]]) * width[ii]
    score = score / np.maximum(score.max(axis=1, keepdims=True), 1e-300)
    score += influence / np.maximum(influence.max(axis=1, keepdims=True), 1e-300)
    score = np.where(width > 0, score + 1e-12 * width, -1.0)
    return np.argmax(score, axis=1) if B else np.zeros(0, np.int64)


def _leaf(rn: ReluNet, lo: np.ndarray, hi: np.ndarray, conj_open: np.ndarray, bounds: LayerBounds | None,
          spec: UnsafeSpec, solve: LeafSolver, confirm: Confirm, opt: SearchOptions, res: SearchResult,
          final: bool, objective: np.ndarray | None = None) -> SearchResult:
    """Decide one box with the exact Query (``objective``: see :func:`encode_region_query`)."""
    from ..solution import FEASIBLE, INFEASIBLE, OPTIMAL

    enc = encode_region_query(rn, lo, hi, spec, conj_open, bounds, opt.tol, objective=objective)
    res.queries += 1
    sol = solve(enc.query)
    if sol.status == INFEASIBLE:
        res.status = "holds"
        return res
    if sol.x is not None and sol.status in (OPTIMAL, FEASIBLE):
        x = np.clip(sol.x[enc.inputs], lo, hi)
        if confirm(x):
            res.status, res.x = "violated", x
            res.conj = spec.which(rn.forward(x[None]))
            return res
        # the solver returns points on the boundary of the enlarged region: ask for one strictly inside
        shrink = -1e-4 * (1.0 + float(np.max(np.abs(spec.d), initial=0.0)))
        deep = encode_region_query(rn, lo, hi, spec, conj_open, bounds, shrink, objective=objective)
        res.queries += 1
        sol2 = solve(deep.query)
        if sol2.x is not None and sol2.status in (OPTIMAL, FEASIBLE):
            x = np.clip(sol2.x[deep.inputs], lo, hi)
            if confirm(x):
                res.status, res.x = "violated", x
                res.conj = spec.which(rn.forward(x[None]))
                return res
        res.unconfirmed += 1
        res.status = "unknown"
        res.reason = ("the solver found a point within the tolerance of the unsafe region that does not confirm "
                      "(a boundary case)")
        return res
    res.status = "unknown"
    res.reason = f"the solver stopped without an answer ({sol.status}: {sol.message})"
    return res
