"""What `round significand N` did to the model, in the report's words.

Rounding every parameter to a few significand bits makes exact (SMT) problems much smaller, but it changes the
network before any patch is made: the user must see how much, on the very points the task is about (its keep
and change sets) and on every point set an `assert accuracy(...)` measures.
"""

from __future__ import annotations

import numpy as np

from ..model.ir import Network
from ..inputs.points import PointSet


def rounding_note(original: Network, rounded: Network, bits: int, name: str, points: PointSet) -> str:
    """``rounded to 10 bits: keep good: 199/200 predictions unchanged, accuracy 0.995 -> 0.99``."""
    before = original.labels(points.x)
    after = rounded.labels(points.x)
    same = int(np.count_nonzero(before == after))
    text = f"rounded to {bits} bits: {name}: {same}/{len(points)} predictions unchanged"
    if points.y is not None and len(points):
        acc0 = float(np.mean(before == points.y))
        acc1 = float(np.mean(after == points.y))
        text += f", accuracy {acc0:.4g} -> {acc1:.4g}"
    return text


def round_significand(net: Network, bits: int) -> Network:
    """Keep ``bits`` significand bits of every affine parameter (smaller exact problems, as in bias patching)."""
    out = net
    for k in range(len(net.affine_indices())):
        for kind in ("weights", "biases"):
            out = out.with_params(k, kind, _round_bits(net.params(k, kind), bits))
    return out


def _round_bits(a: np.ndarray, bits: int) -> np.ndarray:
    m, e = np.frexp(a)
    return np.ldexp(np.round(m * 2.0**bits) / 2.0**bits, e)


def rounding_notes(original: Network, rounded: Network, bits: int, sets: list[tuple[str, PointSet]]
                   ) -> list[str]:
    """One note per named point set (each set once)."""
    seen: set[str] = set()
    out = []
    for name, points in sets:
        if name in seen or not len(points):
            continue
        seen.add(name)
        out.append(rounding_note(original, rounded, bits, name, points))
    return out


def add_assertion_notes(program, results: dict) -> None:
    """For a task that rounded its model, how rounding moved the accuracy on each set an assertion measures."""
    from ..lang import ast as A

    for a in program.assertions:
        if not isinstance(a.node, A.AssertAccuracy) or a.points is None or a.node.subject not in results:
            continue
        try:
            task = program.task(a.node.subject)
        except KeyError:
            continue
        bits = getattr(task, "round_bits", None) or getattr(getattr(task, "patch", None), "round_bits", None)
        if bits is None:
            continue
        original = task.model.net
        name = _source_text(program.source, a.node.points.span) or "the points of line %d" % a.span.line
        note = rounding_note(original, round_significand(original, bits), bits, name, a.points)
        if note not in results[a.node.subject].notes:
            results[a.node.subject].notes.append(note)


def _source_text(source: str, span) -> str:
    """The text a one-line span covers (how the user wrote a point set), or ''."""
    if span is None or not span.line or span.end_line != span.line or span.end_column <= span.column:
        return ""
    lines = source.splitlines()
    return lines[span.line - 1][span.column - 1: span.end_column - 1] if span.line <= len(lines) else ""
