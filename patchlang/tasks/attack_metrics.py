"""The figures attacks are compared by, from the per-input rows of :mod:`patchlang.tasks.attack`.

Success rate ("defect detection"), changed inputs (count and share), L1 / L2 / L∞ sizes, time per input, the
share proven minimal, and the **Pielou evenness** of the new labels: ``H / ln S`` with ``H`` the Shannon entropy of
the new labels' frequencies and ``S`` the number of distinct new labels (1 when every label is hit equally often,
near 0 when almost every attack lands on the same label; undefined, None, with fewer than two labels), taken over
at most :data:`EVENNESS_PER_CLASS` successful inputs per original class (the first ones, in input order), as the
AIGENT paper does, so a class with many inputs does not decide it alone.  Sizes are
over the successful inputs only; rates over the inputs attacked (skipped ones, e.g. already misclassified, are left
out).
"""

from __future__ import annotations

from typing import Any

import numpy as np


EVENNESS_PER_CLASS = 50  # successful inputs per original class that the evenness is computed over


def pielou_evenness(labels: list[int]) -> float | None:
    """``H / ln S`` of the labels' frequencies (None with fewer than two distinct labels)."""
    if not labels:
        return None
    _, counts = np.unique(np.asarray(labels), return_counts=True)
    if counts.size < 2:
        return None
    p = counts / counts.sum()
    return float(-np.sum(p * np.log(p)) / np.log(counts.size))


def capped_per_class(rows: list[dict[str, Any]], cap: int = EVENNESS_PER_CLASS) -> list[int]:
    """The new labels of the first ``cap`` rows of each original label (rows in input order)."""
    seen: dict[int, int] = {}
    out: list[int] = []
    for r in rows:
        n = seen.get(r["label"], 0)
        if n < cap:
            seen[r["label"]] = n + 1
            out.append(r["new_label"])
    return out


def summary(rows: list[dict[str, Any]], n_inputs: int) -> dict[str, Any]:
    """Every metric of :data:`patchlang.lang.program.ATTACK_METRICS` (None where it has no value)."""
    attacked = [r for r in rows if r["status"] != "skipped"]
    ok = [r for r in attacked if r["status"] == "found"]

    def med(key: str) -> float | None:
        return float(np.median([r[key] for r in ok])) if ok else None

    out: dict[str, Any] = {
        "attacked": len(attacked),
        "successes": len(ok),
        "success_rate": len(ok) / len(attacked) if attacked else 0.0,
        "proven_rate": (sum(1 for r in attacked if r["proven_min"]) / len(attacked)) if attacked else 0.0,
        "median_l0": med("l0"),
        "mean_l0": float(np.mean([r["l0"] for r in ok])) if ok else None,
        "median_l0_percent": (100.0 * med("l0") / max(n_inputs, 1)) if ok else None,
        "median_l1": med("l1"),
        "median_l2": med("l2"),
        "median_linf": med("linf"),
        "median_seconds": float(np.median([r["seconds"] for r in attacked])) if attacked else 0.0,
        "evenness": pielou_evenness(capped_per_class(ok)),
    }
    return out
