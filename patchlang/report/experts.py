"""Text for NNrepair's constructs: the weights localization chose (in `patchlang check`), the experts, the
activation patterns and each combination's figures (in the run report)."""

from __future__ import annotations

from typing import Any


def localization_lines(task: Any) -> list[str]:
    """What `check` prints under a task: each `edit top ...`'s chosen weights with their defect scores, and for an
    experts block each expert's (and each class's activation pattern, with support and precision)."""
    out: list[str] = []
    for loc in getattr(task, "localized", []) or []:
        out.extend(loc.lines())
    for e in getattr(task, "experts", []) or []:
        out.append(f"expert {e.label}: {e.n_failing} failing input(s); {e.patch.problem_class}")
        for loc in e.patch.localized:
            out.extend("  " + line for line in loc.lines())
    for label, p in sorted((getattr(task, "patterns", None) or {}).items()):
        out.append("pattern " + p.describe())
    return out
