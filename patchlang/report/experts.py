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


def experts_lines(r: Any) -> list[str]:
    """The run report's lines for an experts task: one per expert, per pattern and per combination."""
    out: list[str] = []
    for e in r.details.get("experts", []):
        dist = f", linf {e['linf']:.4g}" if e.get("linf") is not None else ""
        out.append(f"expert    class {e['class']}: {e['status']} ({e['failing']} failing, {e['edited']} weights"
                   f"{dist}, {e['seconds']:.2f}s)")
    for p in r.details.get("patterns", []):
        out.append(f"pattern   class {p['class']}: {len(p['neurons'])} neurons, support {100 * p['support']:.1f}%, "
                   f"precision {100 * p['precision']:.1f}%")
    for c in r.details.get("combinations", []):
        acc = ", ".join(f"{k.split('_')[0]} {100 * c[k]:.1f}%" for k in ("failing_accuracy", "passing_accuracy")
                        if c.get(k) is not None)
        over = f", {c['overhead']:.2f}x time" if c.get("overhead") else ""
        out.append(f"combined  {c['combination']}{' (F1 filter)' if c['f1_filter'] else ''}: {c['experts']} "
                   f"expert(s); {acc}{over}; onnxruntime agrees on {c['agree']}/{c['checked']}")
    return out


def experts_headline(r: Any) -> str | None:
    """The first line of an experts task's report (None for other tasks): how many classes got an expert, and
    whether each is a proven minimal change for its class."""
    rows = r.details.get("experts")
    if rows is None:
        return None
    found = [e for e in rows if e["status"] == "patched"]
    if not found:
        return f"{r.name}: {r.status}: no class got an expert"
    minimal = "each a proven minimal change for its class" if all(e.get("minimal") for e in found) else \
        "not every expert proven minimal"
    return f"{r.name}: {r.status}: {len(found)} of {len(rows)} class expert(s); {minimal}"
