"""Pictures of a patch: where the weights moved (heatmap) and by how much (histogram), one pair per parameter,
and an ``index.html`` that shows every picture next to the report's figures.

Why: a minimal patch is a claim about *which* parameters had to move; a reviewer sees at a glance whether the
change is spread thin (L∞) or concentrated (L1/L0), and whether it touches the rows they expected.

Only matplotlib's Agg canvas is used (no pyplot, no global backend switch), so plotting works headless in CI
and never changes the backend of a program that imports patchlang.  File names are deterministic,
``{task}_{param}_heatmap.png`` / ``{task}_{param}_hist.png``, and every file is written atomically.

Readability rules: figures are at least 1200 px wide; a heatmap whose changes span several orders of magnitude
uses a symmetric log scale, one with a few outliers is clipped at the 99th percentile of the changes (the colour
bar says so), and parameters that did not move at all are grey, so "unchanged" never looks like "changed a
little"; histogram bins span the axis from 0 to the largest change, so a bar is never thinner than a pixel even
when every change is the same value to 1e-8; count axes have integer ticks.
"""

from __future__ import annotations

import html
import io
import os
import re
from urllib.parse import quote

import numpy as np

from ..model.edits import norm_values
from ..tasks.results import RunResult, TaskResult

__all__ = ["write_plots", "plot_name", "index_html", "INDEX"]

INDEX = "index.html"
_NONZERO = 1e-9  # same threshold as the L0 count in the report
_METADATA = {"Software": "patchlang"}  # fixed, so identical patches give identical files
_DPI = 100
_WIDTH = 12.0  # inches: 1200 px
_UNCHANGED = "#d9d9d9"  # parameters that did not move
_BAR = "#4477aa"
_LOG_SPAN = 30.0  # largest / smallest nonzero |change| above which the heatmap uses a symmetric log scale
_CLIP_RATIO = 3.0  # clip the colour scale when the largest change exceeds the 99th percentile this many times


def plot_name(task: str, param: str, kind: str) -> str:
    """``{task}_{param}_{kind}.png``; anything but letters, digits, ``.``, ``-`` becomes one ``_``."""
    safe = re.sub(r"_+", "_", re.sub(r"[^A-Za-z0-9._-]", "_", f"{task}_{param}")).strip("_") or "patch"
    return f"{safe}_{kind}.png"


def write_plots(result: RunResult, out_dir: str) -> list[str]:
    """Write a heatmap and a histogram for every parameter changed by a successful patch or repair, then
    ``index.html`` with every picture and the report's figures.

    Returns the written paths: the pictures in task order, then parameter order; ``index.html`` last.
    """
    written: list[str] = []
    pictures: dict[int, list[tuple[str, str, str | None]]] = {}  # task index -> (param, picture, hist or None)
    for i, task in enumerate(result.tasks):
        if task.kind == "attack":
            grid = _attack_grid(task, out_dir)
            if grid is not None:
                written.append(grid)
                pictures.setdefault(i, []).append(("original, adversarial, difference",
                                                   os.path.basename(grid), None))
            continue
        if task.kind not in ("patch", "repair") or not task.succeeded or not task.deltas:
            continue
        for param, delta in task.deltas:
            delta = np.asarray(delta, dtype=np.float64)
            heat_name, hist_name = plot_name(task.name, param, "heatmap"), plot_name(task.name, param, "hist")
            heat, hist = os.path.join(out_dir, heat_name), os.path.join(out_dir, hist_name)
            _save(_heatmap(task.name, param, delta), heat)
            _save(_histogram(task.name, param, delta), hist)
            written += [heat, hist]
            pictures.setdefault(i, []).append((param, heat_name, hist_name))
    from ..guard import write_output

    index = os.path.join(out_dir, INDEX)
    write_output(index, index_html(result, pictures).encode("utf-8"), "the plots' index.html")
    return written + [index]


def _attack_grid(task: TaskResult, out_dir: str) -> str | None:
    """The attack's picture grid (:mod:`.attack_plots`), or None when there is nothing to draw."""
    from .attack_plots import attack_figure, grid_name

    images = task.details.get("images")
    if images is None:
        return None
    fig = attack_figure(task.name, task.details.get("inputs", []), images[0], images[1])
    if fig is None:
        return None
    path = os.path.join(out_dir, grid_name(task.name))
    _save(fig, path)
    return path


def _norms_text(delta: np.ndarray) -> str:
    d = norm_values(delta.ravel())
    return f"L∞ {d['linf']:.4g}   L1 {d['l1']:.4g}   L0 {int(d['l0'])} of {delta.size}"


def _figure(width: float, height: float):
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    fig = Figure(figsize=(width, height), dpi=_DPI, layout="constrained")
    FigureCanvasAgg(fig)
    return fig


def _colour_scale(grid: np.ndarray):
    """(norm, extend, note): linear and centred at 0 by default; symmetric log when the nonzero changes span
    more than ``_LOG_SPAN``; clipped at the 99th percentile when a few outliers would wash out the rest."""
    from matplotlib.colors import Normalize, SymLogNorm

    mags = np.abs(grid[np.abs(grid) > _NONZERO])
    if mags.size == 0:
        return Normalize(vmin=-1.0, vmax=1.0), "neither", ""
    vmax = float(mags.max())
    p99 = float(np.percentile(mags, 99))
    if mags.size >= 20 and vmax > _CLIP_RATIO * p99:
        return Normalize(vmin=-p99, vmax=p99), "both", f"colours clipped at ±{p99:.3g} (99th percentile)"
    small = float(np.percentile(mags, 5))
    if vmax > _LOG_SPAN * small:
        return (SymLogNorm(linthresh=small, linscale=0.5, vmin=-vmax, vmax=vmax, base=10), "neither",
                f"symmetric log scale, linear below {small:.2g}")
    return Normalize(vmin=-vmax, vmax=vmax), "neither", ""


def _symlog_ticks(linthresh: float, vmax: float) -> list[float]:
    """0 and at most four decades a side, from the linear threshold up to the largest change, so the colour bar's
    labels never overlap."""
    lo, hi = int(np.ceil(np.log10(linthresh))), int(np.floor(np.log10(vmax)))
    decades = list(range(lo, hi + 1)) or [hi]
    step = max(1, int(np.ceil(len(decades) / 4)))
    ups = [10.0 ** d for d in decades[::-step]]
    return sorted([-t for t in ups] + [0.0] + ups)


def _heatmap(task: str, param: str, delta: np.ndarray):
    """Diverging colours centred at 0 (blue down, red up, grey unchanged); a vector (biases) is one row."""
    import matplotlib
    from matplotlib.ticker import MaxNLocator

    grid = delta.reshape(1, -1) if delta.ndim <= 1 else delta.reshape(delta.shape[0], -1)
    rows, cols = grid.shape
    norm, extend, note = _colour_scale(grid)
    height = float(np.clip(2.5 + rows * 0.12, 4.0, 10.0)) if rows > 1 else 3.2
    fig = _figure(_WIDTH, height)
    ax = fig.add_subplot()
    cmap = matplotlib.colormaps["RdBu_r"].with_extremes(bad=_UNCHANGED)
    shown = np.ma.masked_where(np.abs(grid) <= _NONZERO, grid)
    image = ax.imshow(shown, cmap=cmap, norm=norm, aspect="auto", interpolation="nearest")
    bar = fig.colorbar(image, ax=ax, label="change (grey: unchanged)", extend=extend)
    if hasattr(norm, "linthresh"):
        bar.set_ticks(_symlog_ticks(norm.linthresh, norm.vmax))
    ax.xaxis.set_major_locator(MaxNLocator(integer=True))  # unit indices, never 0.5
    ax.yaxis.set_major_locator(MaxNLocator(integer=True))
    if delta.ndim <= 1:
        ax.set_xlabel("output unit")
        ax.set_yticks([])
    else:
        ax.set_xlabel("input (column)")
        ax.set_ylabel("output unit (row)")
    title = f"{task}: {param}\n{_norms_text(delta)}"
    at_max = _at_linf(grid)
    if at_max:
        note = f"{at_max}; {note}" if note else at_max
    ax.set_title(title + (f"\n{note}" if note else ""), fontsize=11)
    if not np.any(np.abs(grid) > _NONZERO):
        ax.text(0.5, 0.5, "no parameter changed", ha="center", va="center", transform=ax.transAxes)
    return fig


def _at_linf(grid: np.ndarray) -> str:
    """"k of the n changes are ±L∞" when that is most of them: why an L∞-minimal heatmap is mostly dark, said
    in words (the optimum spreads the change thinly: every useful parameter moves as far as allowed)."""
    mags = np.abs(grid[np.abs(grid) > _NONZERO])
    if mags.size < 2:
        return ""
    k = int(np.count_nonzero(mags >= mags.max() * (1 - 1e-6)))
    return f"{k} of the {mags.size} changes are exactly ±L∞" if k * 2 >= mags.size else ""


def _histogram(task: str, param: str, delta: np.ndarray):
    """Counts of the nonzero changes.  The bins cover [min(0, changes), max(0, changes)], so they are a fixed
    fraction of the axis wide: near-identical changes (a repair that moves every weight by t ± 5e-8) make one
    visible bar instead of a sliver narrower than a pixel."""
    from matplotlib.ticker import MaxNLocator

    values = delta[np.abs(delta) > _NONZERO].ravel()
    fig = _figure(_WIDTH, 5.0)
    ax = fig.add_subplot()
    if values.size:
        lo, hi = min(0.0, float(values.min())), max(0.0, float(values.max()))
        bins = int(np.clip(np.sqrt(values.size) * 2, 20, 80))
        ax.hist(values, bins=np.linspace(lo, hi, bins + 1), color=_BAR, edgecolor="white", linewidth=0.5)
        ax.axvline(0.0, color="black", linewidth=0.8)
        ax.set_ylabel("parameters")
        ax.yaxis.set_major_locator(MaxNLocator(integer=True))  # counts: 1, 2, 3, never 0.25
        ax.set_xlim(lo - 0.02 * (hi - lo), hi + 0.02 * (hi - lo))
    else:
        ax.text(0.5, 0.5, "no parameter changed", ha="center", va="center", transform=ax.transAxes)
        ax.set_yticks([])
    ax.set_xlabel("change (nonzero only)")
    ax.set_title(f"{task}: {param}\n{_norms_text(delta)}", fontsize=11)
    return fig


def _save(fig, path: str) -> None:
    """Render to memory, then write atomically: a reader never sees half a PNG."""
    from ..guard import write_output

    buf = io.BytesIO()
    fig.savefig(buf, format="png", metadata=_METADATA)
    write_output(path, buf.getvalue(), f"the plot {os.path.basename(path)}")


# ---------------------------------------------------------------------------------------------------- index.html

def _fmt(value) -> str:
    if value is None:
        return ""
    if isinstance(value, float):
        return f"{value:.6g}"
    return str(value)


def _e(value) -> str:
    return html.escape(_fmt(value), quote=True)


def _shorten(text: str, limit: int = 300) -> str:
    return text if len(text) <= limit else text[:limit - 1] + "…"


def _task_row(task: TaskResult) -> str:
    d = task.distances or {}
    cells = [task.name, task.kind, task.line or "", task.status, task.problem_class, task.objective,
             "" if task.gap is None else task.gap, d.get("linf"), d.get("l1"),
             None if d.get("l0") is None else int(d["l0"]), _shorten(task.message),
             "<br>".join(_e(f) for f in task.files)]
    out = [f"<td>{_e(c)}</td>" for c in cells[:-1]] + [f"<td>{cells[-1]}</td>"]
    cls = "ok" if task.succeeded else "bad" if task.failed else "warn"
    return f'<tr class="{cls}">' + "".join(out) + "</tr>"


def index_html(result: RunResult, pictures: dict[int, list[tuple[str, str, str | None]]]) -> str:
    """A self-contained page: the run's verdict, a table of the tasks' figures, the assertions, every picture.
    Every string that comes from the spec or the file system is escaped."""
    verdict = {0: "all holds", 1: "a check failed", 3: "inconclusive"}.get(result.exit_code, "error")
    parts = [
        "<!DOCTYPE html>",
        '<html lang="en"><head><meta charset="utf-8">',
        f"<title>patchlang: {_e(os.path.basename(result.spec_path))}</title>",
        "<style>body{font-family:sans-serif;margin:2em;max-width:1300px}"
        "table{border-collapse:collapse;margin:1em 0}td,th{border:1px solid #ccc;padding:.3em .6em;"
        "text-align:left;vertical-align:top}th{background:#f3f3f3}tr.ok td:nth-child(4){color:#1a7f37}"
        "tr.bad td:nth-child(4){color:#cf222e}tr.warn td:nth-child(4){color:#9a6700}"
        "img{max-width:100%;border:1px solid #eee;margin:.5em 0}</style></head><body>",
        f"<h1>patchlang: {_e(result.spec_path)}</h1>",
        f"<p>{_e(verdict)} (exit {_e(result.exit_code)}), {_e(len(result.tasks))} task(s), "
        f"{_e(round(result.seconds, 2))} s</p>",
        "<h2>Tasks</h2><table><tr><th>task</th><th>kind</th><th>line</th><th>status</th><th>class</th>"
        "<th>objective</th><th>gap</th><th>L∞</th><th>L1</th><th>L0</th><th>result</th><th>files</th></tr>",
    ]
    parts += [_task_row(t) for t in result.tasks]
    parts.append("</table>")
    if result.assertions:
        parts.append("<h2>Assertions</h2><table><tr><th>line</th><th>assertion</th><th>result</th>"
                     "<th>value</th></tr>")
        for a in result.assertions:
            outcome = {True: "ok", False: "FAIL", None: "undecided"}[a.holds]
            parts.append(f"<tr><td>{_e(a.line)}</td><td><code>{_e(a.text)}</code></td><td>{_e(outcome)}</td>"
                         f"<td>{_e(a.value)}</td></tr>")
        parts.append("</table>")
    parts.append("<h2>Pictures</h2>")
    if not pictures:
        parts.append("<p>No task changed any parameter, so there is nothing to draw.</p>")
    for i, entries in sorted(pictures.items()):
        task = result.tasks[i]
        parts.append(f"<h3>{_e(task.name)} (line {_e(task.line)}): {_e(task.status)}</h3>")
        for param, heat, hist in entries:
            parts.append(f"<h4>{_e(param)}</h4>")
            for name, what in ((heat, "heatmap"), (hist, "histogram")):
                if name is None:
                    continue
                parts.append(f'<p><img src="{html.escape(quote(name), quote=True)}" '
                             f'alt="{_e(f"{task.name}: {param} {what}")}"></p>')
    parts.append("</body></html>")
    return "\n".join(parts) + "\n"
