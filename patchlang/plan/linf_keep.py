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

Anything unexpected (a point not affine in the deltas, an infeasible A, a solve that is neither optimal nor
infeasible, a run out of time) returns None and the plain lazy path runs instead.
"""

from __future__ import annotations

import time
import numpy as np
import scipy.sparse as sp

from ..compile.goals import PointGoal
from ..compile.patch import PatchEncoder, delta_expression
from ..solution import INFEASIBLE, OPTIMAL, Solution
from ..solvers.base import Backend
from .budget import Budget
from .lazy import LazyKeep
from .reduction import PatchProblem, StepRecord
from .tidy import primary_bound


def applies(problem: PatchProblem, backend: Backend, lazy: LazyKeep | None) -> bool:
    """A pure L∞ LP (weight 1, no `bound`) with lazy keep groups, plain conjunctions only, and a backend that
    keeps an LP between solves."""
    task = problem.task
    return (lazy is not None and task.problem_class == "LP" and task.norms.objective == [(1.0, "linf")]
            and not task.norms.bounds and "incremental_lp" in backend.capabilities
            and not any(g.is_disjunctive for g in problem.groups))


class LinfKeepLp:
    """The two warm LPs' driver for one task (see the module docstring); the goal rows of each point are built once
    and shared by the task's attempts (candidate labels pin other `away` rows but keep the same keep points)."""

    def __init__(self, backend: Backend, lazy: LazyKeep):
        self.backend = backend
        self.lazy = lazy
        self._rows: dict[int, tuple[sp.csr_matrix, np.ndarray, np.ndarray] | None] = {}

    def point_rows(self, problem: PatchProblem, point: PointGoal
                   ) -> tuple[sp.csr_matrix, np.ndarray, np.ndarray] | None:
        """The point's goal rows over the deltas, ``lo <= A @ delta <= hi``, or None when its outputs are not
        affine in the deltas."""
        key = id(point)
        if key not in self._rows:
            expr = delta_expression(problem.net, problem.task.edits, problem.task.norms, point.h)
            if expr is None:
                self._rows[key] = None
            else:
                E, c = expr
                alts = [clause[0] for clause in point.clauses]
                C = np.vstack([a.C for a in alts]) if alts else np.zeros((0, E.shape[0]))
                off = C @ c
                lo = np.concatenate([a.lo for a in alts]) - off if alts else np.zeros(0)
                hi = np.concatenate([a.hi for a in alts]) - off if alts else np.zeros(0)
                self._rows[key] = (sp.csr_matrix(C) @ E, lo, hi)
        return self._rows[key]

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
        """Add the working points not yet in the LPs; False when a point is not affine in the deltas."""
        groups = problem.groups
        new = []
        for i, m in self.lazy.working.items():
            fresh = m & ~self.in_lp[i]
            new += [groups[i].points[j] for j in np.nonzero(fresh)[0]]
            self.in_lp[i] |= fresh
        rows = self.rows(problem, new, self.n)
        if rows is None:
            return False
        self._add(*rows)
        return True

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

        def solve_a(cold: bool = False) -> float | None:
            status, x, _ = lp_a.solve(budget.time_left(), cold)
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
        t = solve_a(cold=True)  # another attempt's basis is a poor start for this one (measured)
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
                if not lazy.add_violated(groups, layout.apply(problem.net, deltas)):
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
