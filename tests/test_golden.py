"""Golden tests: answers known from the papers or derivable by hand."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from patchlang.api import load_program_text, run_program
from patchlang.tasks.patch import RunOptions

REPO = Path(__file__).resolve().parents[1]
MODELS = REPO / "examples" / "models"


def run_spec(source: str, tmp_path: Path):
    program = load_program_text(source, MODELS, filename=str(tmp_path / "spec.patch"))
    return run_program(program, RunOptions(write_files=False))


@pytest.mark.parametrize("norm,expected", [("linf", 1.0), ("l1", 2.0)])
def test_toy_network_output_layer_fix(norm: str, expected: float, tmp_path: Path) -> None:
    """Input (3,4) gives (-2, 2); making y0 >= y1 needs d01 - d11 >= 2 (h = (0, 2)): L∞ 1, L1 2."""
    result = run_spec(f"""
        model toy = "toy.onnx"
        points p = [[3, 4]]
        patch fix on toy {{
            edit layer -1 weights
            require p: y[0] >= y[1]
            minimize {norm}
        }}
    """, tmp_path)
    task = result.tasks[0]
    assert task.status == "patched"
    assert task.problem_class == "LP"
    assert task.distances[norm] == pytest.approx(expected, abs=1e-7)
    assert task.gap == 0.0
    # the columns multiplying h0 = 0 must not move in the tidy (least L1) solution
    delta = dict(task.deltas)
    key = next(iter(delta))
    assert np.allclose(delta[key][:, 0], 0.0)
    y = task.patched.forward(np.array([[3.0, 4.0]]))[0]
    assert y[0] >= y[1] - 1e-9


def test_toy_infeasible_under_bound(tmp_path: Path) -> None:
    result = run_spec("""
        model toy = "toy.onnx"
        points p = [[3, 4]]
        patch fix on toy {
            edit layer -1 weights
            require p: y[0] >= y[1]
            bound linf <= 0.99
        }
        assert not exists(fix)
    """, tmp_path)
    assert result.tasks[0].status == "no patch"
    assert result.assertions[0].holds is True
    assert result.exit_code == 0


def test_toy_strict_label_margin(tmp_path: Path) -> None:
    """`change p to 0` is strict: the distance is 1 + margin / (2 * |h|_1) = 1 + 0.01/4."""
    result = run_spec("""
        model toy = "toy.onnx"
        points p = [[3, 4]]
        patch fix on toy {
            edit layer -1 weights
            change p to 0
            margin 0.01
        }
    """, tmp_path)
    assert result.tasks[0].distances["linf"] == pytest.approx(1 + 0.01 / 4, abs=1e-7)


def test_single_point_last_layer_closed_form(tmp_path: Path) -> None:
    """For one point at the last layer, minimal L∞ to reach label j is (m - (y_j - y_l)) / (2 |h|_1)."""
    from patchlang.model.loader import load_model

    net = load_model(str(MODELS / "digits_mlp.onnx"))
    data = np.load(MODELS / "digits_test.npz")
    x = data["x"][:1]
    acts = net.activations(x)
    h = acts[-2][0]
    y = acts[-1][0]
    label = int(np.argmax(y))
    margin = 1e-3
    # weights and biases move: the bias acts as an input fixed at 1
    norm1 = np.abs(h).sum() + 1.0
    best = min((margin - (y[j] - y[label])) / (2 * norm1) for j in range(10) if j != label)
    result = run_spec("""
        model net = "digits_mlp.onnx"
        points t = "digits_test.npz"[0:1]
        patch away on net {
            edit layer -1 weights and biases
            change t away from label
        }
    """, tmp_path)
    assert result.tasks[0].distances["linf"] == pytest.approx(best, rel=1e-6)
