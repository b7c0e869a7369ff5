"""Why no patch exists: a small set of the user's own statements that cannot all hold.

The Query of an infeasible task is split into *droppable groups*, each one statement for one point ("keep good"
on test[12]), one `bound` statement, or the bounds a `bound linf` statement puts on every changed parameter (and
everything derived from them).  Rows that only define things (the network's layers, the norms' auxiliary
variables, ReLU atoms) are always kept: dropping them would not relax any wish of the user's.

A first conflict comes from HiGHS's irreducible infeasible subset (LPs) or Z3's unsat core under assumptions
(everything else, and as the fall-back); a deletion filter then drops every group whose removal leaves the rest
still infeasible, so each statement named is needed for the conflict (when the filter finishes in time).
The conflict is re-checked before it is reported: an explanation must never be wrong.
"""

from __future__ import annotations

import re
import time
from dataclasses import dataclass, replace

import numpy as np

from ..compile.query import Query
from ..errors import PatchlangError, Span
from ..solvers.base import INFEASIBLE, SolveOptions
from ..solvers.z3backend import Tracking

GOAL_GROUPS = ("change", "require", "keep", "property", "bound")
BOUND_KINDS = ("delta", "norm", "neuron")
DEFAULT_BUDGET = 60.0  # seconds for an explanation when the task has no time limit


@dataclass
class Item:
    """One droppable group: a statement (for one point, when it is per point) or a bound."""

    statement: str
    point: str
    group: str  # change | require | keep | property | bound
    span: Span | None


@dataclass
class Explanation:
    lines: list[str]  # one per statement, e.g. "keep good: test[12], test[40] (line 8)"
    sentence: str  # "change ... (line 9) conflicts with keep ... (line 8) under bound linf <= 0.1 (line 11)"
    minimal: bool
    method: str
    calls: int


def tracked_items(q: Query) -> tuple[list[Item], Tracking]:
    """The droppable groups of ``q`` and the matching :class:`Tracking` (see the module docstring)."""
    items: list[Item] = []
    row_group = np.full(q.n_rows, -1, dtype=np.int64)
    bound_vars = np.zeros(q.n_vars, dtype=bool)
    bound_group = -1
    src = q.var_bound_source
    if src is not None:
        for b in q.var_blocks:
            if b.kind in BOUND_KINDS:
                sl = b.slice
                bound_vars[sl] = np.isfinite(q.lb[sl]) | np.isfinite(q.ub[sl])
        bound_group = len(items)
        items.append(Item(src.label, "", "bound", src.span))
    for blk in q.row_blocks:
        if blk.group in GOAL_GROUPS:
            row_group[blk.slice] = len(items)
            items.append(Item(blk.statement or blk.label, blk.point, blk.group, blk.span))
        elif blk.label.startswith("l0 indicator") and bound_group >= 0:
            row_group[blk.slice] = bound_group  # its big-M is the linf bound
    disj_group = []
    for d in q.disjunctions:
        if d.group in GOAL_GROUPS:
            disj_group.append(len(items))
            items.append(Item(d.statement or d.label, d.point, d.group, d.span))
        else:
            disj_group.append(-1)
    return items, Tracking(row_group, disj_group, bound_vars, bound_group, len(items))


def restrict(q: Query, tracking: Tracking, keep: set[int]) -> Query:
    """``q`` with only the groups in ``keep`` (and every untracked constraint), as a feasibility problem."""
    drop_rows = (tracking.row_group >= 0) & ~np.isin(tracking.row_group, list(keep))
    row_lo, row_hi = q.row_lo.copy(), q.row_hi.copy()
    row_lo[drop_rows], row_hi[drop_rows] = -np.inf, np.inf
    lb, ub = q.lb.copy(), q.ub.copy()
    if tracking.bound_group >= 0 and tracking.bound_group not in keep:
        lb[tracking.bound_vars], ub[tracking.bound_vars] = -np.inf, np.inf
    disj = [d for d, g in zip(q.disjunctions, tracking.disj_group) if g < 0 or g in keep]
    return replace(q, lb=lb, ub=ub, row_lo=row_lo, row_hi=row_hi, disjunctions=disj, c=np.zeros(q.n_vars),
                   offset=0.0)


# --------------------------------------------------------------------------------------------- finding a core
def _highs_core(q: Query, tracking: Tracking, options: SolveOptions, deadline: float
                ) -> tuple[list[int], bool, int] | None:
    """HiGHS's infeasible subset of the LP, mapped to groups (every group when HiGHS has none to give), then
    shrunk with HiGHS; None when HiGHS cannot help."""
    from ..solvers.highs import HighsBackend
    from ..solvers.milp import lower_to_milp

    backend = HighsBackend()
    if not backend.available():
        return None
    iis = backend.iis(lower_to_milp(q), replace(options, time_limit=max(1.0, deadline - time.perf_counter())))
    everything = set(range(tracking.n_groups))
    ids = everything
    if iis is not None:
        rows, cols = iis
        ids = {int(g) for g in tracking.row_group[rows] if g >= 0}
        if tracking.bound_group >= 0 and np.any(tracking.bound_vars[cols]):
            ids.add(tracking.bound_group)
    calls = 1

    def infeasible(keep: set[int]) -> bool | None:
        nonlocal calls
        calls += 1
        left = deadline - time.perf_counter()
        if left <= 0:
            return None
        opts = replace(options, time_limit=left, feasibility_only=True)
        st = backend.solve(restrict(q, tracking, keep), opts).status
        return True if st == INFEASIBLE else (False if st in ("optimal", "feasible") else None)

    if ids != everything and infeasible(ids) is not True:  # never report a set not shown to conflict
        ids = everything
    if ids == everything and infeasible(ids) is not True:  # a feasible query: nothing to explain
        return None
    kept, minimal = shrink(sorted(ids), infeasible)
    return kept, minimal, calls


def shrink(ids: list[int], infeasible) -> tuple[list[int], bool]:
    """Deletion filter in halving chunks: drop chunks whose removal keeps the set infeasible, down to single
    groups (so the result is irreducible when it ends in time: ``(groups, True)``).  ``infeasible(set)`` answers
    True / False / None (no answer in time)."""
    keep = list(ids)
    chunk = max(1, len(keep) // 2)
    while True:
        i = 0
        while i < len(keep):
            trial = keep[:i] + keep[i + chunk:]
            verdict = infeasible(set(trial)) if trial else False
            if verdict is None:
                return keep, False
            if verdict:
                keep = trial
            else:
                i += chunk
        if chunk == 1:
            return keep, True
        chunk = max(1, chunk // 2)


def _z3_core(q: Query, tracking: Tracking, options: SolveOptions, deadline: float
             ) -> tuple[list[int], bool, int] | None:
    from ..solvers.z3backend import Z3Backend

    backend = Z3Backend()
    if not backend.available():
        return None
    opts = replace(options, time_limit=max(1.0, deadline - time.perf_counter()))
    ids, minimal, calls = backend.core(q, tracking, opts)
    if ids is None:
        return None
    return ids, minimal, calls


def find_core(q: Query, options: SolveOptions, budget: float | None = None, prefer: str = ""
              ) -> tuple[list[Item], list[int], bool, str, int] | None:
    """``(items, conflicting item ids, minimal?, method, solver calls)`` or None if no conflict was found.

    LPs go to HiGHS's IIS first unless ``prefer`` is ``"z3"`` (the user asked for exact arithmetic); Z3's
    unsat cores handle everything else and are the fall-back when HiGHS has no (checkable) IIS."""
    items, tracking = tracked_items(q)
    if not items:
        return None
    budget = budget if budget is not None else (options.time_limit or DEFAULT_BUDGET)
    deadline = time.perf_counter() + budget
    finders = [(_z3_core, "Z3 unsat core + deletion filter")]
    if q.problem_class == "LP":
        highs = (_highs_core, "HiGHS IIS + deletion filter")
        finders = finders + [highs] if prefer == "z3" else [highs] + finders
    for finder, method in finders:
        if time.perf_counter() >= deadline:
            break
        try:
            found = finder(q, tracking, options, deadline)
        except PatchlangError:
            found = None
        if found is not None:
            ids, minimal, calls = found
            return items, ids, minimal, method, calls
    return None


# --------------------------------------------------------------------------------------------- the user's words
_ORDER = {"change": 0, "require": 1, "property": 2, "keep": 3, "bound": 4}


def _where(span: Span | None) -> str:
    return f" (line {span.line})" if span is not None and span.line else ""


def describe(items: list[Item], ids: list[int]) -> tuple[list[str], str]:
    """One line per statement (its conflicting points listed) and one sentence for the whole conflict."""
    by_statement: dict[tuple[str, int, str], list[Item]] = {}
    for i in ids:
        it = items[i]
        key = (it.statement, it.span.line if it.span else 0, it.group)
        by_statement.setdefault(key, []).append(it)
    entries = sorted(by_statement.items(), key=lambda kv: (_ORDER.get(kv[0][2], 9), kv[0][1], kv[0][0]))
    lines: list[str] = []
    goals: list[str] = []
    bounds: list[str] = []
    for (statement, _, group), its in entries:
        points = sorted((it.point for it in its if it.point), key=_natural)
        text = statement
        if points and not (len(points) == 1 and points[0] in statement):
            shown = ", ".join(points[:8]) + (f" and {len(points) - 8} more" if len(points) > 8 else "")
            text = f"{statement}: {shown}"
        text += _where(its[0].span)
        lines.append(text)
        (bounds if group == "bound" else goals).append(text)
    if len(goals) >= 2:
        sentence = f"{goals[0]} conflicts with {_and(goals[1:])}"
    elif goals:
        sentence = f"{goals[0]} cannot hold"
    else:
        sentence = "the bounds cannot all hold"
    if bounds:
        sentence += f" under {_and(bounds)}"
    elif goals:
        sentence += " with the allowed edits" if len(goals) < 2 else " whatever the change"
    return lines, sentence


def _natural(text: str) -> tuple:
    """``p[9]`` before ``p[10]``."""
    return tuple(int(t) if t.isdigit() else t for t in re.split(r"(\d+)", text))


def _and(parts: list[str]) -> str:
    return parts[0] if len(parts) == 1 else ", ".join(parts[:-1]) + " and " + parts[-1]


def explain_infeasible(q: Query, options: SolveOptions, budget: float | None = None, prefer: str = ""
                       ) -> Explanation | None:
    """A conflict among the statements of an infeasible query, in the user's words (None if none found)."""
    found = find_core(q, options, budget, prefer)
    if found is None:
        return None
    items, ids, minimal, method, calls = found
    lines, sentence = describe(items, ids)
    return Explanation(lines, sentence, minimal, method, calls)
