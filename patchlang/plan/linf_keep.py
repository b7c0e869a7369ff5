"""Driver: lazy `keep` rounds of an L∞ LP on two LPs kept warm, the rounds grown on the least-L1 problem itself.

Why: the plain lazy loop solves, every round, the L∞ LP and then its least-L1 follow-up (an L∞ optimum's arbitrary
corner breaks many keep points no optimum needs to break, so the patch tested is the tidied one), both encoded and
solved from scratch: ten rounds of two cold LPs per watermark removal.  Here, when every goal point's outputs are
affine in the deltas (the edited layer is the last affine one), two HiGHS LPs over the deltas are kept for the whole
problem and only grow by the rows of the points added (dual simplex from the last basis):

* ``A``: ``min t`` s.t. ``|delta| <= t`` and the goal rows of the working set: the relaxed optimum ``t_S``;
* ``B``: ``min sum(p + n)`` over ``delta = p - n``, ``0 <= p, n <= b(t_S)`` (``b`` = the tidy step's bound,
  ``t_S (1 + 1e-9)``) and the same goal rows: the least-L1 patch among those of L∞ at most ``b(t_S)``.

Each round tests B's patch on every keep point and adds the broken ones to both LPs.  While B stays feasible at
``b(t_S)``, A is not re-solved (its optimum cannot exceed ``b(t_S)``); when B becomes infeasible, A is re-solved
for the new ``t_S`` and B's bounds are moved.  When B's patch breaks no point: ``t_S`` is a relaxation's optimum,
so ``t* >= t_S``, and B's patch is a patch of the full problem with L∞ ``<= b(t_S)``; it is the least-L1 one among
all patches of the full problem with L∞ ``<= b(t_S)`` (they are all feasible for B).  That is exactly what the plain
path reports (the least-L1 patch within ``b`` of the last round's ``t_S``): the same optimum.

The task's attempts (the candidate labels of a single `away from label` point, plan.away) share the two LPs: an
attempt switches the previous one's own rows off (bounds ``-inf, inf``) and adds its own, the keep rows stay (the
working sets only grow).  An attempt that must beat an incumbent first asks B for a patch of L∞ at most the cutoff:
when there is none, its relaxed optimum is above the cutoff and it cannot win (as the plain path concludes from
its relaxed optimum); otherwise A is solved.  A is always solved from scratch (primal simplex): warm re-solves of A were measured to
stop up to 1e-5 above its optimum on the watermark rows (coefficients up to 1e4); B's re-solves stay warm.
The keep points' rows are built in bulk from their inputs to the edited layer (checked once against the encoder's
own expression of a point, :func:`patchlang.compile.patch.delta_expression`).

Keep rows are added one (point, competing label) row at a time when they can be (last-layer edits, keep points
of one row block each: :meth:`LinfKeepLp._row_mode`): a point a patch breaks is broken on its runner-up's row,
and its other rows only made both LPs larger (measured on the watermark bench: about half the HiGHS time per
removal).  A fresh point brings its tightest row; a patch is tested on every row not in the LPs.  Sharing the LPs
between tasks with the same keep rows was measured too and is slower: each removal breaks other points, so the
rounds barely drop while every LP grows.

Anything unexpected (a point not affine in the deltas, an infeasible A, a solve that is neither optimal nor
infeasible, a run out of time) returns None and the plain lazy path runs instead.
"""

from __future__ import annotations

import time
from dataclasses import replace

import numpy as np
import scipy.sparse as sp

from ..compile.goals import Alternative, GoalGroup, PointGoal
from ..compile.patch import PatchEncoder, delta_expression, first_edited_position
from ..model.ir import Affine, Elementwise, Network
from ..solution import INFEASIBLE, OPTIMAL, Solution
from ..solvers.base import Backend
from .budget import Budget
from .lazy import MAX_ADD, LazyKeep
from .reduction import PatchProblem, StepRecord
from .tidy import primary_bound


def applies(problem: PatchProblem, backend: Backend, lazy: LazyKeep | None) -> bool:
    """A pure L∞ LP (weight 1, no `bound`) with lazy keep groups, plain conjunctions only, and a backend that
    keeps an LP between solves."""
    task = problem.task
    return (lazy is not None and task.problem_class == "LP" and task.norms.objective == [(1.0, "linf")]
            and not task.norms.bounds and "incremental_lp" in backend.capabilities
            and not any(g.is_disjunctive for g in problem.groups))


BATCH_ENTRIES = 4_000_000  # dense (rows x deltas) entries per chunk of points in batch_rows


def last_layer_map(net: Network, edits, layout) -> tuple[int, np.ndarray, np.ndarray, np.ndarray] | None:
    """For edits of the last affine layer only (followed by elementwise layers at most): ``(start, scale, k, j)``
    such that a point whose input to that layer is ``x`` has outputs ``E @ delta + c`` with, for each delta ``d``,
    ``E[k[d], d] = scale[k[d]] * x1[j[d]]`` (``x1 = [x, 1]``: ``j = len(x)`` for a bias).  None otherwise."""
    start = first_edited_position(net, edits)
    affine = net.affine_indices()
    if start != affine[-1] or any(affine[e.layer] != start for e in edits):
        return None
    layer = net.layers[start]
    if not isinstance(layer, Affine):
        return None
    n_out, n_in = layer.W.shape
    scale = np.ones(n_out)
    for later in net.layers[start + 1:]:
        if not isinstance(later, Elementwise):
            return None
        scale = scale * np.broadcast_to(np.asarray(later.scale, dtype=np.float64).reshape(-1), (n_out,))
    k = np.zeros(layout.size, dtype=np.int64)
    j = np.zeros(layout.size, dtype=np.int64)
    for e, idx in zip(edits, layout.var_index):
        if e.kind == "weights":
            kk, jj = np.nonzero(e.mask)  # row-major, the order of the delta variables
        else:
            kk = np.nonzero(np.asarray(e.mask).reshape(-1))[0]
            jj = np.full(kk.size, n_in)
        k[idx], j[idx] = kk, jj
    return start, scale, k, j


def batch_rows(points: list[PointGoal], X: np.ndarray, Y: np.ndarray, scale: np.ndarray, k: np.ndarray,
               j: np.ndarray) -> tuple[sp.csr_matrix, np.ndarray, np.ndarray]:
    """The goal rows over the deltas of many points at once (see :func:`last_layer_map`): inputs ``X`` of the
    edited layer, original outputs ``Y`` (the outputs at ``delta = 0``)."""
    X1 = np.hstack([X, np.ones((X.shape[0], 1))])
    mats, los, his = [], [], []
    chunk: list[np.ndarray] = []

    def flush() -> None:
        if chunk:
            mats.append(sp.csr_matrix(np.vstack(chunk)))
            chunk.clear()

    size = 0
    for p, point in enumerate(points):
        alts = [clause[0] for clause in point.clauses]
        if not alts:
            continue
        C = np.vstack([a.C for a in alts])
        off = C @ Y[p]
        chunk.append((C * scale[None, :])[:, k] * X1[p, j][None, :])
        los.append(np.concatenate([a.lo for a in alts]) - off)
        his.append(np.concatenate([a.hi for a in alts]) - off)
        size += C.shape[0] * k.size
        if size > BATCH_ENTRIES:
            flush()
            size = 0
    flush()
    if not mats:
        return sp.csr_matrix((0, k.size)), np.zeros(0), np.zeros(0)
    return sp.vstack(mats).tocsr(), np.concatenate(los), np.concatenate(his)


class LinfKeepLp:
    """The two warm LPs' driver for one task (see the module docstring); the goal rows of each point are built once
    and shared by the task's attempts (candidate labels pin other `away` rows but keep the same keep points)."""

    def __init__(self, backend: Backend, lazy: LazyKeep):
        self.backend = backend
        self.lazy = lazy
        self._rows: dict[int, tuple[PointGoal, tuple[sp.csr_matrix, np.ndarray, np.ndarray] | None]] = {}
        self._map: tuple | bool | None = None  # last_layer_map's answer (False: rows point by point)
        self._checked = False
        # row mode (see _row_mode): per lazy group, the points' stacked rows and which of their rows are in the LPs
        self._stacks: dict[int, tuple[np.ndarray, ...]] = {}
        self.rows_in: dict[int, np.ndarray] | None = None

    def point_rows(self, problem: PatchProblem, point: PointGoal
                   ) -> tuple[sp.csr_matrix, np.ndarray, np.ndarray] | None:
        """The point's goal rows over the deltas, ``lo <= A @ delta <= hi``, or None when its outputs are not
        affine in the deltas."""
        key = id(point)
        if key not in self._rows or self._rows[key][0] is not point:  # (an id may be reused once freed)
            expr = delta_expression(problem.net, problem.task.edits, problem.task.norms, point.h)
            if expr is None:
                self._rows[key] = (point, None)
            else:
                E, c = expr
                alts = [clause[0] for clause in point.clauses]
                C = np.vstack([a.C for a in alts]) if alts else np.zeros((0, E.shape[0]))
                off = C @ c
                lo = np.concatenate([a.lo for a in alts]) - off if alts else np.zeros(0)
                hi = np.concatenate([a.hi for a in alts]) - off if alts else np.zeros(0)
                self._rows[key] = (point, (sp.csr_matrix(C) @ E, lo, hi))
        return self._rows[key][1]

    def rows(self, problem: PatchProblem, points: list[PointGoal], n: int
             ) -> tuple[sp.csr_matrix, np.ndarray, np.ndarray] | None:
        parts = [self.point_rows(problem, p) for p in points]
        if any(r is None for r in parts):
            return None
        if not parts:
            return sp.csr_matrix((0, n)), np.zeros(0), np.zeros(0)
        return (sp.vstack([sp.csr_matrix(r[0], shape=(r[0].shape[0], n)) for r in parts]).tocsr(),
                np.concatenate([r[1] for r in parts]), np.concatenate([r[2] for r in parts]))

    def _models(self, problem: PatchProblem, n: int, budget: Budget) -> None:
        """The two LPs, without goal rows yet (built once per task)."""
        opts = budget.options(problem.options)
        ident = sp.identity(n, format="csr")
        tcol = sp.csr_matrix(np.ones((n, 1)))
        self.lp_a = self.backend.incremental_lp(np.r_[np.zeros(n), 1.0], np.r_[np.full(n, -np.inf), 0.0],
                                                np.full(n + 1, np.inf), opts)  # [delta, t]
        self.lp_a.add_rows(sp.vstack([sp.hstack([ident, -tcol]), sp.hstack([-ident, -tcol])]).tocsr(),
                           np.full(2 * n, -np.inf), np.zeros(2 * n))
        self.lp_b = self.backend.incremental_lp(np.ones(2 * n), np.zeros(2 * n), np.zeros(2 * n), opts)  # [p, n]
        self.in_lp = {i: np.zeros_like(m) for i, m in self.lazy.working.items()}
        self.fixed_rows = (np.zeros(0, dtype=np.int64), np.zeros(0, dtype=np.int64))  # the last attempt's, per LP
        self.n = n

    def _add(self, A: sp.csr_matrix, lo: np.ndarray, hi: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Goal rows added to both LPs; their row indices in A and in B."""
        ra = np.arange(self.lp_a.rows, self.lp_a.rows + A.shape[0])
        rb = np.arange(self.lp_b.rows, self.lp_b.rows + A.shape[0])
        self.lp_a.add_rows(sp.hstack([A, sp.csr_matrix((A.shape[0], 1))]).tocsr(), lo, hi)
        self.lp_b.add_rows(sp.hstack([A, -A]).tocsr(), lo, hi)
        return ra, rb

    def _sync(self, problem: PatchProblem) -> bool:
        """Add the working points not yet in the LPs; False when a point is not affine in the deltas.  In row mode
        a fresh point brings its tightest row only (the smallest slack of the unpatched network)."""
        groups = problem.groups
        if self.rows_in is None and self._row_mode(problem):
            self.rows_in = {i: np.zeros(self._stacks[i][1].shape, dtype=bool) for i in self.lazy.working}
        for i, m in self.lazy.working.items():
            fresh = np.nonzero(m & ~self.in_lp[i])[0]
            if not fresh.size:
                continue
            if self.rows_in is not None:
                C, lo, hi, _, Y = self._stacks[i]
                v = np.einsum("prk,pk->pr", C[fresh], Y[fresh])
                tight = np.argmin(np.minimum(v - lo[fresh], hi[fresh] - v), axis=1)
                self._add_pairs(i, fresh, tight)
                continue
            points = [groups[i].points[j] for j in fresh]
            rows = self._batch(problem, i, fresh, points)
            if rows is None:
                rows = self.rows(problem, points, self.n)
            if rows is None:
                return False
            self._add(*rows)
            self.in_lp[i][fresh] = True
        return True

    def _row_mode(self, problem: PatchProblem) -> bool:
        """Whether keep rows can be added one (point, competing label) row at a time: last-layer edits (rows
        built in bulk, checked against the encoder) and every lazy point one clause of one alternative of one
        shape (a keep point: one row per competing label).  Why: a point the patch breaks is broken on one or
        two of its rows (the runner-up's), and its other rows only make both LPs larger."""
        if self._map is False:
            return False
        for i in self.lazy.working:
            g = problem.groups[i]
            alts = [p.clauses[0][0] for p in g.points if len(p.clauses) == 1 and len(p.clauses[0]) == 1]
            if not alts or len(alts) != len(g.points) or len({a.C.shape for a in alts}) != 1:
                return False
            X = self.lazy.inputs[i]
            self._stacks[i] = (np.stack([a.C for a in alts]), np.stack([a.lo for a in alts]),
                               np.stack([a.hi for a in alts]), X, problem.net.forward_suffix(X, self.lazy.start))
        i = next(iter(self.lazy.working))
        return self._batch(problem, i, np.arange(1), problem.groups[i].points[:1]) is not None  # map and check

    def _add_pairs(self, i: int, p: np.ndarray, r: np.ndarray) -> None:
        """Rows ``r`` of points ``p`` of lazy group ``i`` added to both LPs (row mode)."""
        C, lo, hi, X, Y = self._stacks[i]
        _, scale, k, j = self._map
        Cs = C[p, r]
        off = np.einsum("mk,mk->m", Cs, Y[p])
        X1 = np.hstack([X[p], np.ones((p.size, 1))])
        self._add(sp.csr_matrix((Cs * scale[None, :])[:, k] * X1[:, j]), lo[p, r] - off, hi[p, r] - off)
        self.rows_in[i][p, r] = True
        self.in_lp[i][p] = True
        self.lazy.working[i][p] = True

    def _grow(self, problem: PatchProblem, patched: Network) -> int:
        """Add what ``patched`` breaks: the keep points outside the working sets (``LazyKeep.add_violated``), or
        in row mode the broken rows not in the LPs, most broken first (at most ``MAX_ADD`` plus twice the rows
        already in); how many were added."""
        if self.rows_in is None:
            return self.lazy.add_violated(problem.groups, patched)
        self.lazy.rounds += 1
        added = 0
        for i, inside in self.rows_in.items():
            C, lo, hi, X, _ = self._stacks[i]
            y = patched.forward_suffix(X, self.lazy.start)
            v = np.einsum("prk,pk->pr", C, y)
            slack = np.minimum(v - lo, hi - v)
            tol = 1e-9 * (1.0 + float(np.max(np.abs(y))))
            p, r = np.nonzero(~inside & (slack < -tol))
            if p.size:
                order = np.argsort(slack[p, r], kind="stable")[:MAX_ADD + 2 * int(np.count_nonzero(inside))]
                self._add_pairs(i, p[order], r[order])
                added += int(order.size)
        return added

    def solved_groups(self, groups: list[GoalGroup]) -> list[GoalGroup]:
        """The goals as the LPs hold them, for the report's query: lazy groups cut to their working points and,
        in row mode, each of those points cut to its rows in the LPs."""
        sub = self.lazy.subset(groups)
        if self.rows_in is None:
            return sub
        out = []
        for i, g in enumerate(groups):
            if i not in self.rows_in:
                out.append(sub[i])
                continue
            points = []
            for p, working, rows in zip(g.points, self.lazy.working[i], self.rows_in[i]):
                if working:
                    a = p.clauses[0][0]
                    points.append(replace(p, clauses=[[Alternative(a.C[rows], a.lo[rows], a.hi[rows])]]))
            out.append(replace(g, points=points))
        return out

    def _batch(self, problem: PatchProblem, i: int, index: np.ndarray, points: list[PointGoal]
               ) -> tuple[sp.csr_matrix, np.ndarray, np.ndarray] | None:
        """The rows of lazy group ``i``'s points ``index`` built at once (last-layer edits), or None.  The first
        batch is compared with the encoder's own expression of its first point; any difference: None for good."""
        if self._map is False:
            return None
        if self._map is None:
            layout = PatchEncoder(problem.net, problem.task.edits, problem.task.norms, "deltas").layout
            got = last_layer_map(problem.net, problem.task.edits, layout)
            if got is None or got[0] != self.lazy.start:
                self._map = False
                return None
            self._map = got
        _, scale, k, j = self._map
        X = self.lazy.inputs[i][index]
        Y = problem.net.forward_suffix(X, self.lazy.start)
        rows = batch_rows(points, X, Y, scale, k, j)
        if not self._checked:
            ref = self.point_rows(problem, points[0])
            r = ref[0].shape[0] if ref is not None else 0
            ok = (ref is not None and rows[0].shape[0] >= r
                  and np.allclose(rows[0][:r].toarray(), ref[0].toarray(), rtol=1e-12, atol=1e-12)
                  and np.allclose(rows[1][:r], ref[1], rtol=1e-9, atol=1e-9)
                  and np.allclose(rows[2][:r], ref[2], rtol=1e-9, atol=1e-9))
            if not ok:
                self._map = False
                return None
            self._checked = True
        return rows

    def solve(self, problem: PatchProblem, budget: Budget, cutoff: float
              ) -> tuple[Solution, np.ndarray | None, object] | None:
        """``(solution, deltas, layout)``: the least-L1 L∞-optimal patch (deltas None when the relaxed optimum is
        above ``cutoff``: this attempt cannot win), or None (the plain path decides).

        The LPs are kept across the task's attempts: each attempt switches the previous attempt's own rows (its
        non-lazy goals, e.g. the pinned `away` row) off and adds its own; the keep points' rows stay (the working
        sets only grow, for every attempt)."""
        t0 = time.perf_counter()
        groups, lazy = problem.groups, self.lazy
        layout = PatchEncoder(problem.net, problem.task.edits, problem.task.norms, "deltas").layout
        n = layout.size
        if getattr(self, "lp_a", None) is None or self.n != n:
            self._models(problem, n, budget)
        lp_a, lp_b = self.lp_a, self.lp_b
        solves0 = lp_a.solves + lp_b.solves
        fixed = [p for i, g in enumerate(groups) if i not in lazy.working for p in g.points]
        rows = self.rows(problem, fixed, n)
        if rows is None:
            return None
        off_a, off_b = self.fixed_rows
        for lp, off in ((lp_a, off_a), (lp_b, off_b)):
            lp.set_row_bounds(off, np.full(off.size, -np.inf), np.full(off.size, np.inf))
        self.fixed_rows = self._add(*rows)
        if not self._sync(problem):
            return None

        def solve_a() -> float | None:
            # always from scratch: on these badly scaled rows (outputs up to 1e4) a warm dual re-solve of A stops
            # within its tolerances up to 1e-5 above the optimum (measured), a cold one as the plain path does
            status, x, _ = lp_a.solve(budget.time_left(), cold=True)
            return float(x[n]) if status == OPTIMAL and x is not None else None

        def done(sol: Solution, deltas: np.ndarray | None):
            sol.seconds = time.perf_counter() - t0
            sol.stats.update(warm_lp_solves=lp_a.solves + lp_b.solves - solves0)
            return sol, deltas, layout

        cols = np.arange(2 * n)
        if np.isfinite(cutoff):
            # can this attempt reach the incumbent at all?  B at L∞ <= cutoff (warm from the last attempt's basis):
            # infeasible means the relaxed optimum is above the cutoff, so the attempt cannot win
            lp_b.set_bounds(cols, np.zeros(2 * n), np.full(2 * n, cutoff))
            status, _, _ = lp_b.solve(budget.time_left())
            if status == INFEASIBLE:
                return done(Solution(OPTIMAL, bound=cutoff, backend=self.backend.name,
                                     backend_version=self.backend.version(),
                                     message="no patch within the incumbent's L∞ on the working set"), None)
        t = solve_a()
        if t is None:
            return None
        while True:
            if t > cutoff:
                return done(Solution(OPTIMAL, objective=t, bound=t, backend=self.backend.name,
                                     backend_version=self.backend.version(), message="above the incumbent"), None)
            bound = primary_bound(problem, Solution(OPTIMAL, objective=t), "linf")
            lp_b.set_bounds(cols, np.zeros(2 * n), np.full(2 * n, bound))
            while True:
                status, x, _ = lp_b.solve(budget.time_left())
                if status != OPTIMAL or x is None:
                    break
                deltas = x[:n] - x[n:]
                if not self._grow(problem, layout.apply(problem.net, deltas)):
                    return done(Solution(OPTIMAL, x=deltas, objective=t, bound=t, backend=self.backend.name,
                                         backend_version=self.backend.version(), message="optimal"), deltas)
                if budget.expired or not self._sync(problem):
                    return None
            if status != INFEASIBLE:
                return None
            t_new = solve_a()
            if t_new is None or t_new <= bound:  # B infeasible at a bound A says is enough: let the plain path decide
                return None
            t = t_new


def record(solves: int) -> StepRecord:
    return StepRecord("least_l1_tidy", {"primary": "linf", "applied": True, "surrogate": False,
                                        "phases_fixed": False, "warm_lp_solves": solves})
