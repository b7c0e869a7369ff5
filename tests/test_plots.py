"""Weight-change plots: which tasks get plots, file names, figure contents, determinism, atomic writes, readability
(size, scale, never blank, integer counts) and the index page."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pytest

from patchlang.report import plots
from patchlang.tasks.results import NO_PATCH, PATCHED, RunResult, TaskResult

PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"


def task(name: str, deltas: list[tuple[str, np.ndarray]], status: str = PATCHED, kind: str = "patch") -> TaskResult:
    return TaskResult(name, kind, status, deltas=deltas)


def run_of(*tasks: TaskResult) -> RunResult:
    return RunResult("spec.patch", list(tasks), [], {}, {})


W = np.array([[0.0, 1.0, 0.0], [-0.5, 0.0, 0.25]])
B = np.array([0.0, -2.0])


def test_files_for_successful_patches_only(tmp_path: Path) -> None:
    result = run_of(task("fix", [("layer_1.weight", W), ("layer_1.bias", B)]),
                    task("broken", [("layer_1.weight", W)], status=NO_PATCH),
                    task("fixed_net", [("fc2/weight:0", W)], kind="repair"),
                    task("verify net satisfies p", [], status="holds", kind="verify"))
    paths = plots.write_plots(result, str(tmp_path / "out"))
    names = [os.path.basename(p) for p in paths]
    assert names == ["fix_layer_1.weight_heatmap.png", "fix_layer_1.weight_hist.png",
                     "fix_layer_1.bias_heatmap.png", "fix_layer_1.bias_hist.png",
                     "fixed_net_fc2_weight_0_heatmap.png", "fixed_net_fc2_weight_0_hist.png", "index.html"]
    assert sorted(os.listdir(tmp_path / "out")) == sorted(names)  # no temp files left behind
    for p in paths[:-1]:
        data = Path(p).read_bytes()
        assert data.startswith(PNG_SIGNATURE) and len(data) > 2000
        assert os.stat(p).st_mode & 0o044 == 0o044 & ~_umask()  # readable like any file the user writes


def test_identical_patches_give_identical_files(tmp_path: Path) -> None:
    result = run_of(task("fix", [("layer_1.weight", W)]))
    first = [Path(p).read_bytes() for p in plots.write_plots(result, str(tmp_path / "a"))]
    second = [Path(p).read_bytes() for p in plots.write_plots(result, str(tmp_path / "b"))]
    assert first == second


def test_heatmap_is_diverging_and_centred_with_norms_in_title() -> None:
    fig = plots._heatmap("fix", "layer_1.weight", W)
    ax = fig.axes[0]
    (image,) = ax.get_images()
    assert image.get_array().shape == (2, 3)
    assert image.norm.vmin == -1.0 and image.norm.vmax == 1.0  # centred at 0 on the largest |change|
    assert image.get_cmap().name == "RdBu_r"
    assert len(fig.axes) == 2  # the colour bar
    title = ax.get_title()
    assert "fix: layer_1.weight" in title and "L∞ 1" in title and "L1 1.75" in title and "L0 3 of 6" in title


def test_bias_vector_is_one_row() -> None:
    fig = plots._heatmap("fix", "layer_1.bias", B)
    assert fig.axes[0].get_images()[0].get_array().shape == (1, 2)


def test_histogram_counts_only_nonzero_changes() -> None:
    fig = plots._histogram("fix", "w", W)
    heights = [p.get_height() for p in fig.axes[0].patches]
    assert sum(heights) == 3


def test_unchanged_parameter_still_gets_readable_plots(tmp_path: Path) -> None:
    paths = plots.write_plots(run_of(task("noop", [("b", np.zeros(4))])), str(tmp_path))
    assert len(paths) == 3 and paths[-1].endswith("index.html")
    assert all(_pixel_variance(p) > 0 for p in paths[:2])
    fig = plots._histogram("noop", "b", np.zeros(4))
    assert any("no parameter changed" in t.get_text() for t in fig.axes[0].texts)


@pytest.mark.parametrize("task_name,param,expected", [
    ("fix", "layer_1.weight", "fix_layer_1.weight_heatmap.png"),
    ("repair net p", "/fc 2:W", "repair_net_p_fc_2_W_heatmap.png"),
])
def test_plot_names(task_name: str, param: str, expected: str) -> None:
    assert plots.plot_name(task_name, param, "heatmap") == expected


def test_plotting_does_not_touch_the_global_backend() -> None:
    import matplotlib

    before = matplotlib.get_backend()
    plots._heatmap("fix", "w", W)
    assert matplotlib.get_backend() == before


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


# ---------------------------------------------------------------------------------------------- readability

def _pixels(fig) -> np.ndarray:
    """The figure as rendered by matplotlib's Agg canvas: (height, width, 4) uint8."""
    fig.canvas.draw()
    return np.asarray(fig.canvas.buffer_rgba())


def _pixel_variance(path: str) -> float:
    from matplotlib.image import imread

    return float(np.var(imread(path)[..., :3]))


def _bar_pixels(fig) -> int:
    """Pixels of the histogram's bar colour inside the axes: 0 means the plot looks blank."""
    rgba = _pixels(fig)
    bar = np.array([0x44, 0x77, 0xAA])
    return int(np.count_nonzero(np.all(np.abs(rgba[..., :3].astype(int) - bar) <= 8, axis=-1)))


REPAIR_LIKE = 1.0006666 + np.array([[0.0, 5e-8], [-3e-8, 2e-8]])  # the regions repair: all changes equal to 1e-7


def test_near_constant_changes_still_draw_a_bar() -> None:
    fig = plots._histogram("toy_strong", "layer_1.weight", REPAIR_LIKE)
    assert _bar_pixels(fig) > 500  # a real bar, not a sliver narrower than a pixel
    assert sum(p.get_height() for p in fig.axes[0].patches) == 4


@pytest.mark.parametrize("delta", [W, B, REPAIR_LIKE, np.zeros((3, 4)), np.full(5, 1e-3),
                                   np.linspace(-2, 3, 600).reshape(20, 30)])
def test_no_picture_is_blank_and_all_are_wide(delta: np.ndarray, tmp_path: Path) -> None:
    paths = plots.write_plots(run_of(task("t", [("p", delta)])), str(tmp_path))
    for p in paths[:-1]:
        assert _pixel_variance(p) > 0, p
        from matplotlib.image import imread

        assert imread(p).shape[1] == 1200, p  # docs/tutorial.md, section 9, says so


def test_histogram_counts_have_integer_ticks() -> None:
    fig = plots._histogram("fix", "w", np.array([0.1, 0.2, 0.2]))
    fig.canvas.draw()
    ticks = fig.axes[0].get_yticks()
    assert len(ticks) >= 2 and all(float(t).is_integer() for t in ticks)


def test_heatmap_uses_symmetric_log_for_changes_over_many_decades() -> None:
    from matplotlib.colors import SymLogNorm

    delta = np.array([[1e-5, -1e-4, 1e-3], [-1e-2, 0.1, 1.0]])
    fig = plots._heatmap("fix", "w", delta)
    image = fig.axes[0].get_images()[0]
    assert isinstance(image.norm, SymLogNorm)
    assert "symmetric log" in fig.axes[0].get_title()


def test_heatmap_clips_outliers_at_the_99th_percentile() -> None:
    delta = np.full((10, 10), 0.01)
    delta[0, 0] = 5.0
    fig = plots._heatmap("fix", "w", delta)
    image = fig.axes[0].get_images()[0]
    assert image.norm.vmax == pytest.approx(np.percentile(np.abs(delta), 99))
    assert "clipped" in fig.axes[0].get_title()


def test_unchanged_parameters_are_grey_not_white() -> None:
    fig = plots._heatmap("fix", "w", np.array([[0.0, 1.0], [-1.0, 0.0]]))
    image = fig.axes[0].get_images()[0]
    assert np.ma.getmaskarray(image.get_array()).tolist() == [[True, False], [False, True]]


def test_index_lists_every_picture_and_the_figures(tmp_path: Path) -> None:
    from patchlang.tasks.results import AssertionResult

    fix = task("fix", [("layer_1.weight", W), ("layer_1.bias", B)])
    fix.objective, fix.gap, fix.distances = 1.0, 0.0, {"linf": 1.0, "l1": 3.75, "l0": 4.0}
    fix.files = ["out/fixed.onnx"]
    verify = task("verify net satisfies p", [], status="violated", kind="verify")
    verify.message = "counterexample in box 0, confirmed by onnxruntime"
    result = run_of(fix, verify)
    result.assertions.append(AssertionResult("assert distance(fix, linf) <= 1.5", 9, True, 1.0))
    paths = plots.write_plots(result, str(tmp_path))
    page = Path(paths[-1]).read_text(encoding="utf-8")
    pngs = sorted(p.name for p in tmp_path.glob("*.png"))
    assert pngs and sorted(os.path.basename(p) for p in paths[:-1]) == pngs
    for name in pngs:
        assert f'src="{name}"' in page
    for figure in ("patched", "violated", "counterexample in box 0", "3.75", "out/fixed.onnx", "assert distance(fix, linf) &lt;= 1.5"):
        assert figure in page, figure
    assert sorted(os.listdir(tmp_path)) == sorted(pngs + ["index.html"])  # atomic: no temp file left


def test_index_escapes_every_user_string(tmp_path: Path) -> None:
    evil = "<script>alert(1)</script>"
    bad = task(evil, [("w\"><img src=x onerror=alert(1)>", W)])
    bad.files = [f"out/{evil}.onnx"]
    result = RunResult(f"{evil}.patch", [bad], [], {}, {})
    page = Path(plots.write_plots(result, str(tmp_path))[-1]).read_text(encoding="utf-8")
    assert "<script>" not in page and "onerror=alert(1)>" not in page
    assert "&lt;script&gt;" in page


def test_index_without_pictures_says_so(tmp_path: Path) -> None:
    paths = plots.write_plots(run_of(task("verify net satisfies p", [], status="holds", kind="verify")),
                              str(tmp_path))
    assert [os.path.basename(p) for p in paths] == ["index.html"]
    assert "nothing to draw" in Path(paths[0]).read_text(encoding="utf-8")


def test_heatmap_says_when_most_changes_sit_at_the_linf_bound() -> None:
    delta = np.array([[0.4, -0.4, 0.4], [0.1, -0.4, 0.0]])
    assert "4 of the 5 changes are exactly ±L∞" in plots._heatmap("fix", "w", delta).axes[0].get_title()
    assert "exactly" not in plots._heatmap("fix", "w", W).axes[0].get_title()


def test_help_and_reference_say_plots_are_relative_to_the_current_directory() -> None:
    """`--plots DIR` is a command-line path (current directory); a spec's `save` path is relative to the spec."""
    from patchlang.cli import _parser

    run = _parser()._subparsers._group_actions[0].choices["run"]
    help_text = " ".join(run.format_help().split())
    assert "relative to the current directory" in help_text and "relative to the spec" in help_text
    reference = " ".join((Path(__file__).resolve().parents[1] / "docs" / "language.md").read_text(
        encoding="utf-8").split())
    assert "relative to the **spec's folder**" in reference and "relative to the **current directory**" in reference
    assert "is relative to the current directory; `save` paths to the spec" in reference  # the --plots option


def test_symmetric_log_colour_bar_has_few_labels() -> None:
    delta = np.array([[1e-6, -1e-5, 1e-4], [-1e-3, 1e-2, 1.0]])
    fig = plots._heatmap("fix", "w", delta)
    ticks = fig.axes[1].get_yticks()
    assert 0.0 in ticks and len(ticks) <= 9
