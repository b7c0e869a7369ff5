"""Driver: minimal L∞ by bisection on ``t`` over feasibility MILPs in which ``|delta| <= t`` are variable bounds.

Why: pure L∞ over many parameters puts every ``|delta| <= t`` row on the one column of ``t``, a dense column that
makes every LP of the MILP crawl (a hidden layer of 150x784: minutes per LP).  As bounds there is no ``t``
column, and the smaller ``t``, the more ReLU phases the bounds fix.

``t`` grows by 4x from a small start until a patch exists, then the feasibility MILPs bisect between the proven
lower bound (the largest infeasible ``t``) and the best patch's actual ``max |delta|``.  Stops when they are within
the MIP gap (reported optimal, like a MIP solver's optimum within its gap) or when the budget runs out (the best
patch, with its gap).  The encoding is built once and re-bounded for each smaller ``t``.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field, replace

import numpy as np

from ..compile.bounds_tighten import rebound
from ..compile.patch import PatchEncoding, encode_patch
from ..model.edits import NormSpec
from ..solution import FEASIBLE, INFEASIBLE, OPTIMAL, TIMEOUT, Solution, SolveOptions
from ..solvers.base import Backend
from .budget import Budget
from .fixed_phase_bound import edited_scale
from .reduction import Inverse, PatchProblem, Reduction, StepRecord

BISECT_MIN_DELTAS = 20_000
MAX_BISECTIONS = 200
DEFAULT_MIP_GAP = 1e-6
# HiGHS's tolerances, tightened: a patch may otherwise exceed |delta| <= t by 1e-6 and the bracket never closes
# (Gurobi's are set to 1e-9 by its backend already)
TIGHT_HIGHS = {"mip_feasibility_tolerance": 1e-9, "primal_feasibility_tolerance": 1e-9}


def bisection_applies(problem: PatchProblem) -> bool:
    """Pure L∞ over many parameters (see the module docstring)."""
    task = problem.task
    n = sum(int(np.count_nonzero(e.mask)) for e in task.edits)
    return n >= BISECT_MIN_DELTAS and len(task.norms.objective) == 1 and task.norms.objective[0][1] == "linf"


@dataclass
class Bracket:
    """The bisection's state: no patch within ``lo`` (proven), a patch within ``hi``, the best patch so far."""

    lo: float = 0.0
    hi: float = np.inf
    best: tuple[Solution, PatchEncoding, float] | None = None  # (solution, its encoding, its max |delta|)
    calls: int = 0
    stopped: bool = False
    last: PatchEncoding | None = None
    statuses: list[str] = field(default_factory=list)


class LinfBisection(Reduction):
    """Solves the problem by bisection (the returned problem is marked solved); the inverse is the identity."""

    name = "linf_bisection"
    requires = frozenset({"milp", "bigm"})

    def __init__(self, backend: Backend):
        self.backend = backend

    def accepts(self, problem: PatchProblem, capabilities: frozenset[str]) -> bool:
        return (super().accepts(problem, capabilities) and problem.enc is None
                and problem.task.problem_class == "MILP" and bisection_applies(problem))

    def _options(self, options: SolveOptions) -> SolveOptions:
        extra = {**TIGHT_HIGHS, **options.extra} if self.backend.name == "highs" else options.extra
        return replace(options, start=None, extra=extra)

    def apply(self, problem: PatchProblem, budget: Budget) -> tuple[PatchProblem, Inverse]:
        t0 = time.perf_counter()
        task, options = problem.task, problem.options
        gap = options.mip_gap if options.mip_gap is not None else DEFAULT_MIP_GAP
        user = task.norms.bounds.get("linf", np.inf)
        feas = NormSpec(objective=[], bounds=dict(task.norms.bounds), bound_spans=task.norms.bound_spans)
        cache: list[PatchEncoding] = []
        state = Bracket()

        def encoding(t: float) -> PatchEncoding:
            fresh = replace(feas, bounds={**feas.bounds, "linf": t})
            if not cache or t > float(np.max(cache[0].query.ub[np.concatenate(cache[0].layout.var_index)])):
                cache[:] = [encode_patch(problem.net, task.edits, problem.groups, fresh, name=task.name)]
                return cache[0]
            b = cache[0]
            q = rebound(b.query, b.layout, t, b.source)
            if q is None:
                return encode_patch(problem.net, task.edits, problem.groups, fresh)
            return PatchEncoding(q, b.layout, len(q.relus), b.n_points, source=b.source or b.query)

        def solve(t: float) -> float | None:
            """Solve at ``t``; the patch's max |delta| (None without a patch)."""
            state.calls += 1
            enc = state.last = encoding(t)
            sol = self.backend.solve(enc.query, budget.options(self._options(options)))
            state.statuses.append(sol.status)
            if sol.x is None or sol.status not in (OPTIMAL, FEASIBLE):
                return None if sol.status == INFEASIBLE else _stop(state)
            m = float(np.max(np.abs(enc.layout.deltas(sol.x))))
            if state.best is None or m < state.best[2]:
                state.best = (sol, enc, m)
            return m

        scale = edited_scale(problem)
        t = min(user, 1e-4 * scale)
        for _ in range(MAX_BISECTIONS):
            if budget.expired:
                state.stopped = True
                break
            if np.isfinite(state.hi) and (state.hi - state.lo <= gap * state.hi or state.hi <= 1e-12):
                break
            m = solve(t)
            if state.stopped:
                break
            if m is not None:
                state.hi = min(state.hi, t, m)
            else:
                state.lo = max(state.lo, t)
            if state.best is None:
                if state.lo >= user or t >= 1e6 * scale:
                    break
                t = min(4.0 * t, user)
                continue
            t = (state.lo + state.hi) / 2.0
        else:
            state.stopped = True  # MAX_BISECTIONS: report what was reached
        return self._result(problem, state, gap, t0)

    def _result(self, problem: PatchProblem, state: Bracket, gap: float, t0: float
                ) -> tuple[PatchProblem, Inverse]:
        seconds = time.perf_counter() - t0
        n = sum(int(np.count_nonzero(e.mask)) for e in problem.task.edits)
        record = StepRecord(self.name, {"calls": state.calls, "parameters": n, "lower": state.lo,
                                        "seconds": seconds})
        version = self.backend.version()
        if state.best is None:
            status = TIMEOUT if state.stopped else INFEASIBLE
            empty = Solution(status=status, backend=self.backend.name, backend_version=version, bound=state.lo,
                             message="bisection: " + ("time limit" if state.stopped else "no bound tried admits a patch"))
            # the last encoding tried (none when the budget ran out before the first MILP): what a report describes
            return replace(problem, enc=state.last, solution=empty), Inverse(record)
        sol, enc, hi = state.best
        done = hi - state.lo <= gap * hi + 1e-9 * max(1.0, hi) or hi <= 1e-12  # a patch may exceed t by a tolerance
        record.summary["upper"] = hi
        answer = Solution(status=OPTIMAL if done else FEASIBLE, x=sol.x, objective=hi, bound=state.lo,
                          backend=self.backend.name, backend_version=version, seconds=seconds,
                          message=f"bisection: optimum in [{state.lo:.9g}, {hi:.9g}]")
        return replace(problem, enc=enc, solution=answer, start_value=hi), Inverse(record)


def _stop(state: Bracket) -> None:
    """A solve that neither found a patch nor proved there is none (time limit): the bisection stops."""
    state.stopped = True
    return None
