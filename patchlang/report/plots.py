"""Pictures of a patch: where the weights moved (heatmap) and by how much (histogram), one pair per parameter.

Why: a minimal patch is a claim about *which* parameters had to move; a reviewer sees at a glance whether the
change is spread thin (L∞) or concentrated (L1/L0), and whether it touches the rows they expected.

Only matplotlib's Agg canvas is used (no pyplot, no global backend switch), so plotting works headless in CI
and never changes the backend of a program that imports patchlang.  File names are deterministic,
``{task}_{param}_heatmap.png`` / ``{task}_{param}_hist.png``, and every file is written atomically.
"""

from __future__ import annotations

import io
import os
import re

import numpy as np

from ..model.edits import norm_values
from ..tasks.results import RunResult

__all__ = ["write_plots", "plot_name"]

_NONZERO = 1e-9  # same threshold as the L0 count in the report
_METADATA = {"Software": "patchlang"}  # fixed, so identical patches give identical files


def plot_name(task: str, param: str, kind: str) -> str:
    """``{task}_{param}_{kind}.png``; anything but letters, digits, ``.``, ``-`` becomes one ``_``."""
    safe = re.sub(r"_+", "_", re.sub(r"[^A-Za-z0-9._-]", "_", f"{task}_{param}")).strip("_") or "patch"
    return f"{safe}_{kind}.png"


def write_plots(result: RunResult, out_dir: str) -> list[str]:
    """Write a heatmap and a histogram for every parameter changed by a successful patch or repair.

    Returns the written paths in task order, then parameter order.
    """
    written: list[str] = []
    for task in result.tasks:
        if task.kind not in ("patch", "repair") or not task.succeeded or not task.deltas:
            continue
        for param, delta in task.deltas:
            delta = np.asarray(delta, dtype=np.float64)
            heat = os.path.join(out_dir, plot_name(task.name, param, "heatmap"))
            hist = os.path.join(out_dir, plot_name(task.name, param, "hist"))
            _save(_heatmap(task.name, param, delta), heat)
            _save(_histogram(task.name, param, delta), hist)
            written += [heat, hist]
    return written


def _norms_text(delta: np.ndarray) -> str:
    d = norm_values(delta.ravel())
    return f"L∞ {d['linf']:.4g}   L1 {d['l1']:.4g}   L0 {int(d['l0'])} of {delta.size}"


def _figure(width: float, height: float):
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    fig = Figure(figsize=(width, height), dpi=100, layout="constrained")
    FigureCanvasAgg(fig)
    return fig


def _heatmap(task: str, param: str, delta: np.ndarray):
    """Diverging colours centred at 0 (blue down, red up); a vector (biases) is drawn as one row."""
    grid = delta.reshape(1, -1) if delta.ndim <= 1 else delta.reshape(delta.shape[0], -1)
    rows, cols = grid.shape
    vmax = float(np.max(np.abs(grid))) if grid.size else 0.0
    vmax = vmax if vmax > 0 else 1.0
    width = float(np.clip(3.0 + cols * 0.08, 5.0, 10.0))
    height = float(np.clip(2.0 + rows * 0.08, 2.4, 8.0)) if rows > 1 else 2.4
    fig = _figure(width, height)
    ax = fig.add_subplot()
    image = ax.imshow(grid, cmap="RdBu_r", vmin=-vmax, vmax=vmax, aspect="auto", interpolation="nearest")
    fig.colorbar(image, ax=ax, label="change")
    from matplotlib.ticker import MaxNLocator

    ax.xaxis.set_major_locator(MaxNLocator(integer=True))  # unit indices, never 0.5
    ax.yaxis.set_major_locator(MaxNLocator(integer=True))
    if delta.ndim <= 1:
        ax.set_xlabel("output unit")
        ax.set_yticks([])
    else:
        ax.set_xlabel("input (column)")
        ax.set_ylabel("output unit (row)")
    ax.set_title(f"{task}: {param}\n{_norms_text(delta)}", fontsize=10)
    return fig


def _histogram(task: str, param: str, delta: np.ndarray):
    values = delta[np.abs(delta) > _NONZERO].ravel()
    fig = _figure(6.0, 3.6)
    ax = fig.add_subplot()
    if values.size:
        bins = int(np.clip(np.sqrt(values.size) * 2, 10, 60))
        ax.hist(values, bins=bins, color="#4477aa", edgecolor="white", linewidth=0.5)
        ax.axvline(0.0, color="black", linewidth=0.8)
        ax.set_ylabel("parameters")
    else:
        ax.text(0.5, 0.5, "no parameter changed", ha="center", va="center", transform=ax.transAxes)
        ax.set_yticks([])
    ax.set_xlabel("change (nonzero only)")
    ax.set_title(f"{task}: {param}\n{_norms_text(delta)}", fontsize=10)
    return fig


def _save(fig, path: str) -> None:
    """Render to memory, then write atomically: a reader never sees half a PNG."""
    from ..files import write_atomic

    buf = io.BytesIO()
    fig.savefig(buf, format="png", metadata=_METADATA)
    write_atomic(path, buf.getvalue())
