"""Step: the least-L1 patch among the optimal ones (for an L∞ or L0 objective).

Why: an L∞ optimum is far from unique (every parameter may sit anywhere in the box ``|delta| <= t*``), an L0
optimum's changed parameters sit anywhere within the big-M bound; the patch users want moves only what the goals
need.  A second solve keeps the primary norm at its optimum (to 1e-9) and minimises L1.

``apply`` changes nothing; the inverse does the follow-up on an optimal answer, from the main encoding with the
optimum as warm start for a MILP (no second encoding of every point), or from a fresh encoding for an LP.  An
answer is used only if it is optimal, passes the float64 goal check on every goal and is no worse than the start;
otherwise (and directly for very many parameters) the least-L1 patch *with the optimum's ReLU phases* (an LP).
"""

from __future__ import annotations

from dataclasses import replace
from typing import Callable

import numpy as np
import scipy.sparse as sp

from ..compile.bounds_tighten import rebound
from ..compile.fixed_phase import fixed_phase_query, propagate, violation
from ..compile.patch import DeltaLayout, PatchEncoding
from ..model.edits import NormSpec, objective_value
from ..query import Query, RowBlock, VarBlock
from ..solution import OPTIMAL, Solution
from ..solvers.base import Backend
from .budget import Budget
from .checks import START_TOL, delta_vector, goals_hold
from .reduction import Answer, Inverse, PatchProblem, Reduction, StepRecord

DEFAULT_MIP_GAP = 1e-6
PHASES_ONLY_DELTAS = 20_000  # from this many parameters on, only the LP with the optimum's phases is tried

FreshSolver = Callable[[PatchProblem, Budget], Answer]


def primary_norm(problem: PatchProblem) -> str | None:
    """The norm a least-L1 follow-up keeps optimal: a single-norm L∞ or L0 objective, else None."""
    objective = problem.task.norms.objective
    return objective[0][1] if len(objective) == 1 and objective[0][1] in ("linf", "l0") else None


def with_l1_objective(q: Query, layout: DeltaLayout, extra: list[tuple[sp.csr_matrix, float]]) -> Query:
    """``q`` with its objective replaced by the L1 norm of the deltas (new variables ``u >= |delta|``) and
    ``extra`` rows ``row @ x <= rhs`` over its existing variables."""
    d = np.concatenate(layout.var_index)
    n, k = q.n_vars, d.size
    N = n + k
    r = np.arange(k)
    u = n + r
    rows = [sp.csr_matrix(q.A, shape=(q.n_rows, N))]
    for sign in (1.0, -1.0):  # sign*delta - u <= 0
        rows.append(sp.csr_matrix((np.r_[np.full(k, sign), -np.ones(k)], (np.r_[r, r], np.r_[d, u])), shape=(k, N)))
    los, his = [q.row_lo, np.full(2 * k, -np.inf)], [q.row_hi, np.zeros(2 * k)]
    for row, rhs in extra:
        rows.append(sp.csr_matrix(row, shape=(1, N)))
        los.append(np.array([-np.inf]))
        his.append(np.array([rhs]))
    blocks = list(q.row_blocks) + [RowBlock("l1 norm", q.n_rows, 2 * k, "norm"),
                                   RowBlock("bound on the first objective", q.n_rows + 2 * k, len(extra), "bound")]
    return q.derive(lb=np.r_[q.lb, np.zeros(k)], ub=np.r_[q.ub, np.full(k, np.inf)],
                   integer=np.r_[q.integer, np.zeros(k, dtype=bool)], A=sp.vstack(rows).tocsr(),
                   row_lo=np.concatenate(los), row_hi=np.concatenate(his), c=np.r_[np.zeros(n), np.ones(k)],
                   offset=0.0, disjunctions=list(q.disjunctions),
                   var_blocks=list(q.var_blocks) + [VarBlock("abs", n, k, "norm")], row_blocks=blocks,
                   name=q.name + ".tidy")


def primary_bound(problem: PatchProblem, sol: Solution, primary: str) -> float:
    """The bound that keeps the primary norm at the optimum ``sol.objective``."""
    t = float(sol.objective or 0.0)
    if primary == "l0":
        return float(np.round(t))
    bound = t + 1e-9 * max(1.0, t) if t > 1e-12 else 0.0
    return min(bound, problem.task.norms.bounds.get("linf", np.inf))


class LeastL1Tidy(Reduction):
    """See the module docstring.  ``fresh`` solves a problem from a fresh encoding with the chosen backend (the LP
    case); the MILP follow-up from the main encoding needs a big-M backend."""

    name = "least_l1_tidy"

    def __init__(self, backend: Backend, fresh: FreshSolver):
        self.backend = backend
        self.fresh = fresh

    def accepts(self, problem: PatchProblem, capabilities: frozenset[str]) -> bool:
        return primary_norm(problem) is not None and problem.task.problem_class != "SMT"

    def apply(self, problem: PatchProblem, budget: Budget) -> tuple[PatchProblem, Inverse]:
        record = StepRecord(self.name, {"primary": primary_norm(problem), "applied": False})
        return problem, Inverse(record, lambda answer: self.refine(problem, answer, budget, record))

    def refine(self, received: PatchProblem, answer: Answer, budget: Budget, record: StepRecord) -> Answer:
        """The least-L1 answer with the same primary optimum, or ``answer`` unchanged.  ``received``: the problem
        as this step received it (its network and goals; the answer's encoding is the one that was solved)."""
        sol, primary = answer.solution, primary_norm(received)
        if sol.status != OPTIMAL or sol.x is None or primary is None or answer.enc is None:
            return answer
        bound = primary_bound(received, sol, primary)
        problem = replace(received, enc=answer.enc)
        tidy = self._from_main(problem, sol, primary, bound, budget)
        if tidy is None and problem.enc.query.problem_class != "MILP" and not received.surrogate:
            norms = NormSpec(objective=[(1.0, "l1")], bounds={**problem.task.norms.bounds, primary: bound},
                             bound_spans=problem.task.norms.bound_spans)
            tidy_problem = replace(received, task=replace(received.task, norms=norms), enc=None, solution=None,
                                   options=replace(received.options, start=None))
            fresh = self.fresh(tidy_problem, budget)
            if fresh.solution.status == OPTIMAL and fresh.solution.x is not None:
                tidy = (fresh.solution, fresh.enc)
        if tidy is None:
            return answer
        tsol, enc = tidy
        tsol.objective, tsol.bound = sol.objective, sol.bound  # the task's objective is still the primary norm
        tsol.seconds += sol.seconds
        record.summary.update(applied=True, surrogate=received.surrogate,
                              phases_fixed=bool(tsol.stats.get("tidy_phases_fixed")))
        return Answer(tsol, enc)

    def _from_main(self, problem: PatchProblem, sol: Solution, primary: str, bound: float, budget: Budget
                   ) -> tuple[Solution, PatchEncoding] | None:
        """The follow-up of a MILP optimum from its own encoding, warm-started at the optimum (None when the main
        problem is not a MILP, the backend does not lower to big-M, or the structure is not understood)."""
        main = problem.enc
        q = main.query
        if q.problem_class != "MILP" or "bigm" not in self.backend.capabilities:
            return None
        extra: list[tuple[sp.csr_matrix, float]] = []
        if primary == "linf":
            q = rebound(q, main.layout, bound, main.source)
        else:
            changed = q.structure.norm_block("changed") if q.structure is not None else None
            if changed is None:
                return None
            extra.append((sp.csr_matrix((np.ones(changed.size), (np.zeros(changed.size, dtype=np.int64),
                                                                  np.arange(changed.start, changed.start + changed.size))),
                                        shape=(1, q.n_vars)), bound))
        if q is None:
            return None
        tq = with_l1_objective(q, main.layout, extra)
        enc = PatchEncoding(tq, main.layout, len(tq.relus), main.n_points)
        deltas = main.layout.deltas(sol.x)
        x = propagate(main.source or main.query, main.layout, delta_vector(main.layout, deltas, main.query.n_vars))
        if x is None:
            return None
        x = np.r_[x, np.abs(deltas)]
        if violation(tq, x) > START_TOL:
            return None
        gap = problem.options.mip_gap if problem.options.mip_gap is not None else DEFAULT_MIP_GAP
        options = replace(problem.options, start=x, mip_gap=gap)
        limit = float(np.sum(np.abs(deltas)))
        l1 = NormSpec(objective=[(1.0, "l1")], bounds={})

        def usable(s: Solution) -> bool:
            if s.status != OPTIMAL or s.x is None:
                return False
            d = main.layout.deltas(s.x)
            return (objective_value(d, l1) <= limit * (1 + 1e-9) + 1e-12 and np.max(np.abs(d)) <= bound * (1 + 1e-9)
                    and goals_hold(main.layout.apply(problem.net, s.x), problem.goals_to_check))

        if tq.problem_class == "MILP" and main.layout.size < PHASES_ONLY_DELTAS:
            s = self.backend.solve(tq, budget.options(options))
            if usable(s):
                return s, enc
        s = self.backend.solve(fixed_phase_query(tq, x), budget.options(replace(options, start=None)))
        if not usable(s):
            return None
        s.stats["tidy_phases_fixed"] = True
        return s, enc
