"""The picture of an attack: for each attacked input with an adversarial one, the original, the adversarial input
and their difference side by side (one row per input, at most :data:`MAX_ROWS`).

Why: "2 pixels changed" is a claim a reader checks by eye; the difference column shows exactly which inputs
moved and which way (blue down, red up, white unchanged).  Inputs are drawn as square images when their size is
a square (64 -> 8x8, 784 -> 28x28), else as one row.  Drawn with matplotlib's Agg canvas, written atomically.
"""

from __future__ import annotations

import math
import re

import numpy as np

MAX_ROWS = 12


def grid_name(task: str) -> str:
    safe = re.sub(r"_+", "_", re.sub(r"[^A-Za-z0-9._-]", "_", task)).strip("_") or "attack"
    return f"{safe}_adversarial.png"


def _as_image(v: np.ndarray) -> np.ndarray:
    v = np.asarray(v, float).reshape(-1)
    side = math.isqrt(v.size)
    return v.reshape(side, side) if side * side == v.size else v.reshape(1, -1)


def attack_figure(task: str, rows: list[dict], original: np.ndarray, adversarial: np.ndarray):
    """The figure (or None when no input has an adversarial one)."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    picked = [i for i, r in enumerate(rows) if r["status"] == "found"][:MAX_ROWS]
    if not picked:
        return None
    fig = Figure(figsize=(12.0, 1.0 + 3.0 * len(picked)), dpi=100, layout="constrained")
    FigureCanvasAgg(fig)
    lo, hi = float(np.min(original)), float(np.max(original))
    for n, i in enumerate(picked):
        r = rows[i]
        diff = adversarial[i].astype(float) - original[i].astype(float)
        span = float(np.max(np.abs(diff))) or 1.0
        panels = [(original[i], f"{r['index']}: label {r['label']}", "gray", lo, hi),
                  (adversarial[i], f"adversarial: label {r['new_label']}", "gray", lo, hi),
                  (diff, f"difference: {r['l0']} changed, L∞ {r['linf']:.3g}", "RdBu_r", -span, span)]
        for c, (img, title, cmap, vmin, vmax) in enumerate(panels):
            ax = fig.add_subplot(len(picked), 3, 3 * n + c + 1)
            ax.imshow(_as_image(img), cmap=cmap, vmin=vmin, vmax=vmax, interpolation="nearest")
            ax.set_title(title, fontsize=10)
            ax.set_xticks([])
            ax.set_yticks([])
    fig.suptitle(f"attack {task}: original, adversarial, difference")
    return fig
