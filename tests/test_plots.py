"""Weight-change plots: which tasks get plots, file names, figure contents, determinism, atomic writes."""

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
                     "fixed_net_fc2_weight_0_heatmap.png", "fixed_net_fc2_weight_0_hist.png"]
    assert sorted(os.listdir(tmp_path / "out")) == sorted(names)  # no temp files left behind
    for p in paths:
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
    assert len(paths) == 2
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
