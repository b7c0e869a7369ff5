"""Golden MILP tests: edits with ReLUs downstream, disjunctive goals and L0, on hand-made nets with known optima.

Every expected value below is derived by hand in the test's docstring; the margin of strict goals is set
explicitly so the optimum is exact.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from patchlang.api import load_program_text, run_program
from patchlang.errors import PatchlangError, SpecError
from patchlang.model import network_from_arrays, save_network
from patchlang.tasks.patch import RunOptions

REPO = Path(__file__).resolve().parents[1]
MODELS = REPO / "examples" / "models"
MARGIN = 0.01


def run_spec(source: str, base: Path, **run):
    program = load_program_text(source, base, filename=str(base / "spec.patch"))
    return run_program(program, RunOptions(write_files=False, **run))


@pytest.fixture(scope="module")
def nets(tmp_path_factory) -> Path:
    """``hinge.onnx``: 1 -> 2 ReLU -> 1 with a phase flip in its optimum; ``lin3.onnx``: y = x + b on 3 outputs."""
    d = tmp_path_factory.mktemp("milp_nets")
    hinge = network_from_arrays([np.array([[1.0], [-1.0]]), np.array([[-1.0, 2.0]])],
                                [np.array([-0.5, 0.25]), np.array([0.0])], name="hinge")
    save_network(hinge, str(d / "hinge.onnx"))
    lin3 = network_from_arrays([np.eye(3)], [np.zeros(3)], name="lin3")
    save_network(lin3, str(d / "lin3.onnx"))
    return d


HINGE = """
model net = "hinge.onnx"
points p = [[1]]
patch fix on net {{
    edit layer 0 biases
    require p: y[0] >= 0.5
    {body}
}}
"""


# ------------------------------------------------------------------ hidden-layer edits
@pytest.mark.parametrize("norm,expected", [("linf", 2 / 7), ("l1", 0.5)])
def test_toy_hidden_layer_edit(norm: str, expected: float, tmp_path: Path) -> None:
    """Toy net, input (3, 4): hidden pre-activations (-5, 2), outputs (-2, 2).  Editing the hidden weights,
    y0 >= y1 needs relu(h1) >= relu(h2): switching h2 = 2 + 3 d21 + 4 d22 off costs L∞ 2/7 (3t + 4t = 2) or
    L1 0.5 (all on d22); raising h1 instead costs more (L∞ 1/2, L1 1.75)."""
    result = run_spec(f"""
        model toy = "toy.onnx"
        points p = [[3, 4]]
        patch fix on toy {{
            edit layer 0 weights
            require p: y[0] >= y[1]
            minimize {norm}
            bound linf <= 5
        }}
    """, MODELS)
    task = result.tasks[0]
    assert task.status == "patched"
    assert task.problem_class == "MILP"
    assert task.distances[norm] == pytest.approx(expected, rel=1e-6)
    assert task.gap == 0.0


def test_hidden_bias_optimum_needs_a_phase_flip(nets: Path) -> None:
    """hinge: h1 = relu(x - 0.5) = 0.5, h2 = relu(-x + 0.25) = 0, y = -h1 + 2 h2 = -0.5.  y >= 0.5 needs h2 on
    (d2 > 0.75): with h1 on, 2 d2 - d1 >= 2.5 and d1 >= -0.5 give d2 = 1 at best; with h1 off, d1 <= -0.5 and
    d2 >= 1: either way L∞ = 1.  The LP with the original phases (h2 off) has no answer, so the derived bound
    comes from the relaxation's phases."""
    result = run_spec(HINGE.format(body="minimize linf\n    bound linf <= 3"), nets)
    task = result.tasks[0]
    assert task.status == "patched"
    assert task.distances["linf"] == pytest.approx(1.0, rel=1e-6)
    assert any("derived from a fixed-phase LP" in n for n in task.notes)


@pytest.mark.parametrize("body,norm,expected", [
    ("minimize l1\n    bound linf <= 3", "l1", 1.25),  # all on d2: 2 d2 >= 2.5
    ("minimize l1 + 0.1 linf\n    bound linf <= 3", None, 1.375),  # d2 = 1.25 alone: 1.25 + 0.125
    ("minimize l0\n    bound linf <= 2", "l0", 1),  # d2 = 1.25 alone fits
    ("minimize l0\n    bound linf <= 1.1", "l0", 2),  # d2 <= 1.1 then needs d1 <= -0.3
    ("minimize l0\n    bound linf <= 2\n    bound l1 <= 1.3", "l0", 1),
])
def test_hinge_norms(body: str, norm: str | None, expected: float, nets: Path) -> None:
    task = run_spec(HINGE.format(body=body), nets).tasks[0]
    assert task.status == "patched"
    value = task.objective if norm is None else task.distances[norm]
    assert value == pytest.approx(expected, rel=1e-6)


def test_hinge_l0_with_l1_bound_infeasible(nets: Path) -> None:
    """One parameter needs L1 1.25, two need 1.5 (d1 <= -0.5 and d2 >= 1) or more: nothing fits in L1 <= 1.2."""
    result = run_spec(HINGE.format(body="minimize l0\n    bound linf <= 2\n    bound l1 <= 1.2"), nets)
    assert result.tasks[0].status == "no patch"
    assert result.exit_code == 1


def test_derived_bound_without_user_bound(tmp_path: Path) -> None:
    """No `bound linf`: the fixed-phase LP gives a sound one (noted) and the optimum is unchanged (2/7)."""
    result = run_spec("""
        model toy = "toy.onnx"
        points p = [[3, 4]]
        patch fix on toy {
            edit layer 0 weights
            require p: y[0] >= y[1]
            minimize linf
        }
    """, MODELS)
    task = result.tasks[0]
    assert task.distances["linf"] == pytest.approx(2 / 7, rel=1e-6)
    assert any("derived from a fixed-phase LP" in n for n in task.notes)


def test_no_bound_and_no_fixed_phase_answer_derives_one_from_trial_bounds(nets: Path) -> None:
    """hinge without `bound linf`: the original-phase LP has no answer and the relaxation is unbounded; a MILP
    under a growing trial bound finds a genuine patch, whose objective bounds every optimum (the same optimum as
    with `bound linf <= 3`)."""
    task = run_spec(HINGE.format(body="minimize linf"), nets).tasks[0]
    assert task.status == "patched"
    assert task.distances["linf"] == pytest.approx(1.0, rel=1e-6)
    assert any("trial bounds" in n for n in task.notes)


def test_no_bound_and_no_patch_at_all_is_a_clear_error(nets: Path) -> None:
    """Without any bound and with no patch under any trial bound, the task cannot be encoded: a clear error."""
    with pytest.raises(PatchlangError, match="bound linf"):
        run_spec(HINGE.format(body="minimize linf\n    require p: y[0] <= -100"), nets)


def test_weights_of_two_layers_rejected_by_check(nets: Path) -> None:
    with pytest.raises(SpecError) as err:
        load_program_text("""
            model net = "hinge.onnx"
            points p = [[1]]
            patch fix on net {
                edit layers 0, 1 weights
                require p: y[0] >= 0.5
            }
        """, nets, filename=str(nets / "spec.patch"))
    assert any(d.code == "PL230" for d in err.value.diagnostics)


# ------------------------------------------------------------------ disjunctive goals (lin3: y = x + b)
LIN3 = """
model net = "lin3.onnx"{decide}
points a = [[1, 0, 0.5], [0.2, 1, 0]]
points b = [[1, 0, 0.5]]
points o = [[0, 0, 0]]
patch fix on net {{
    edit layer 0 biases
    {goal}
    margin {margin}
    minimize linf
}}
"""


@pytest.mark.parametrize("decide,points", [("", "a"), (" decide argmin", "neg")])
def test_away_from_label_on_two_points(decide: str, points: str, nets: Path) -> None:
    """a[0] = (1, 0, .5) has label 0, a[1] = (.2, 1, 0) label 1.  Both via output 2: d2 - d0 >= .5 + m and
    d2 - d1 >= 1 + m, so 2t >= 1 + m; the other combinations need t >= .65 or more.  With argmin on the negated
    points the problem is the mirror image (d -> -d): the same optimum."""
    spec = LIN3.format(decide=decide, goal=f"change {points} away from label", margin=MARGIN)
    spec = spec.replace('points o =', 'points neg = [[-1, 0, -0.5], [-0.2, -1, 0]]\npoints o =')
    task = run_spec(spec, nets).tasks[0]
    assert task.status == "patched"
    assert task.problem_class == "MILP"
    assert task.distances["linf"] == pytest.approx((1 + MARGIN) / 2, rel=1e-6)


def test_change_to_one_of(nets: Path) -> None:
    """b = (1, 0, .5), label 0.  To 2: d2 - d0 >= .5 + m (and d2 - d1 >= -.5 + m): t = (.5 + m)/2; to 1 would
    need d1 - d0 >= 1 + m."""
    task = run_spec(LIN3.format(decide="", goal="change b to one of {1, 2}", margin=MARGIN), nets).tasks[0]
    assert task.problem_class == "MILP"
    assert task.distances["linf"] == pytest.approx((0.5 + MARGIN) / 2, rel=1e-6)
    assert int(task.patched.labels(np.array([[1.0, 0.0, 0.5]]))[0]) == 2


@pytest.mark.parametrize("cnf,expected", [
    ("y[0] >= y[1] + 1 or y[2] >= 2", 0.5),  # d0 - d1 >= 1 beats d2 >= 2
    ("y[0] >= y[1] + 1 or y[2] >= 2 and y[1] >= 0.8", 1.8),  # d1 >= .8 forces d0 >= 1.8 (vs d2 >= 2)
])
def test_cnf_require(cnf: str, expected: float, nets: Path) -> None:
    task = run_spec(LIN3.format(decide="", goal=f"require o: {cnf}", margin=0), nets).tasks[0]
    assert task.status == "patched"
    assert task.distances["linf"] == pytest.approx(expected, rel=1e-6)


# ------------------------------------------------------------------ L0 on the toy net's output layer
@pytest.mark.parametrize("bound,expected", [(2.0, 1), (1.5, 2)])
def test_l0_counts(bound: float, expected: int, tmp_path: Path) -> None:
    """y0 - y1 = 2 (d01 - d11 - 2) at h = (0, 2): one parameter moves by 2 if the bound allows it, else two."""
    task = run_spec(f"""
        model toy = "toy.onnx"
        points p = [[3, 4]]
        patch fix on toy {{
            edit layer -1 weights
            require p: y[0] >= y[1]
            minimize l0
            bound linf <= {bound}
        }}
    """, MODELS).tasks[0]
    assert task.status == "patched"
    assert task.distances["l0"] == expected
