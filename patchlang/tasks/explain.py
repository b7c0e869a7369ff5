"""Why no patch exists, in the user's words: the statements of a conflict as lines and one sentence.

Finding the conflict is planning (:mod:`patchlang.plan.conflict`: droppable groups, a deletion filter over
solver checks, within a budget); this module turns the groups it returns into the report's text.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

import numpy as np

from ..errors import Span
from ..plan.budget import Budget
from ..plan.conflict import Item, find_core
from ..query import Query
from ..solution import SolveOptions
from ..solvers.base import Backend


@dataclass
class Explanation:
    lines: list[str]  # one per statement, e.g. "keep good: test[12], test[40] (line 8)"
    sentence: str  # "change ... (line 9) conflicts with keep ... (line 8) under bound linf <= 0.1 (line 11)"
    minimal: bool
    method: str
    calls: int


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


def explain_infeasible(q: Query, options: SolveOptions, budget: Budget | float | None = None, prefer: str = "",
                       reference: np.ndarray | None = None, backend: Backend | None = None) -> Explanation | None:
    """A conflict among the statements of an infeasible query, in the user's words (None if none found)."""
    found = find_core(q, options, budget, prefer, reference, backend)
    if found is None:
        return None
    items, ids, minimal, method, calls = found
    lines, sentence = describe(items, ids)
    return Explanation(lines, sentence, minimal, method, calls)
