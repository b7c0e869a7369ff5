"""Golden tests of the row-direction substitution of a weight edit (patchlang.plan.rows).

When every goal point gives the edited layer one input, the weights act only through the pre-activations and
the substitution is exact: its optimum must equal the unreduced MILP's (cross-checked here on small random nets)
and the hand-derived optimum of the toy net.  With `keep` points of other inputs it reports a genuine patch from
the restriction and the relaxation's bound, which must bracket the unreduced optimum.
"""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest

from patchlang.api import load_program_text, run_program
from patchlang.compile.patch import DeltaLayout, EditSpec
from patchlang.plan.rows import RowReduction, directions
from patchlang.model import network_from_arrays, save_network
from patchlang.solvers.base import OPTIMAL, SolveOptions
from patchlang.plan.budget import Budget
from patchlang.plan.solve import solve_patch
from patchlang.tasks.patch import RunOptions, build_groups

REPO = Path(__file__).resolve().parents[1]
MODELS = REPO / "examples" / "models"
MARGIN = 0.01
ONE_ROW = "one unknown per row"


def run_spec(source: str, base: Path):
    program = load_program_text(source, base, filename=str(base / "spec.patch"))
    return program, run_program(program, RunOptions(write_files=False))


def unreduced_optimum(program) -> float:
    """The plain MILP over every weight (what the row reduction replaces), solved to optimality with HiGHS."""
    task = program.tasks[0]
    bounds = {"linf": min(task.norms.bounds.values()), **task.norms.bounds}  # linf <= l1: the same problem
    task = replace(task, norms=replace(task.norms, bounds=bounds))
    groups = build_groups(task.model.net, task.goals, task.margin)
    plan = solve_patch(task.model.net, task, groups, "highs", SolveOptions(), Budget(),
                       disable=frozenset({"one_unknown_per_row", "keep_bracket"}))
    sol = (plan.best or plan.last).solution
    assert sol.status == OPTIMAL
    return float(sol.objective)


@pytest.mark.parametrize("norm,expected", [("linf", 2 / 7), ("l1", 0.5)])
def test_toy_optimum_by_one_unknown_per_row(norm: str, expected: float) -> None:
    """Toy net, input (3, 4), as in test_milp_golden but with no `bound`: h2 = 2 + 3 d21 + 4 d22 must go off,
    L∞ 2/7 (z = -2 spread as -t(1, 1), 7t = 2), L1 0.5 (all on the input 4).  The lifted L∞ patch puts t on the
    larger input first: (-2/7 on input 4 covers 8/7, the rest 6/7 on input 3 is again 2/7)."""
    _, result = run_spec(f"""
        model toy = "toy.onnx"
        points p = [[3, 4]]
        patch fix on toy {{
            edit layer 0 weights
            require p: y[0] >= y[1]
            minimize {norm}
        }}
    """, MODELS)
    task = result.tasks[0]
    assert task.status == "patched" and task.gap == 0.0
    assert any(ONE_ROW in n for n in task.notes)
    assert task.distances[norm] == pytest.approx(expected, rel=1e-6)
    assert task.distances["l1"] == pytest.approx({"linf": 4 / 7, "l1": 0.5}[norm], rel=1e-6)  # h1 untouched


@pytest.fixture(scope="module")
def random_nets(tmp_path_factory) -> Path:
    """Three random 6 -> 5 ReLU -> 4 ReLU -> 3 nets (seed 10: in four of the six keep cases the relaxation's patch
    breaks q, so the restriction is what answers)."""
    d = tmp_path_factory.mktemp("rows")
    rng = np.random.default_rng(10)
    for k in range(3):
        net = network_from_arrays([rng.normal(size=(5, 6)), rng.normal(size=(4, 5)), rng.normal(size=(3, 4))],
                                  [rng.normal(size=5) * 0.3, rng.normal(size=4) * 0.3, rng.normal(size=3) * 0.3],
                                  name=f"r{k}")
        save_network(net, str(d / f"r{k}.onnx"))
    return d


RANDOM = """
model net = "r{k}.onnx"
points p = [[1.0, 0.0, 0.5, 2.0, 0.0, 0.25]]
points q = [[0.0, 1.5, 0.0, 2.0, 1.0, 0.0], [0.0, 0.5, 0.0, 1.0, 2.0, 0.0]]
patch fix on net {{
    edit layer 0 weights
    change p away from label
    {keep}
    minimize {norm}
    bound {norm} <= 10
    margin {margin}
}}
"""


@pytest.mark.parametrize("k", [0, 1, 2])
@pytest.mark.parametrize("norm", ["linf", "l1"])
def test_exact_reduction_matches_the_unreduced_milp(random_nets: Path, k: int, norm: str) -> None:
    """One point: the optimum over one unknown per row is the optimum over all 30 weights (the plain MILP)."""
    program, result = run_spec(RANDOM.format(k=k, keep="", norm=norm, margin=MARGIN), random_nets)
    task = result.tasks[0]
    assert task.status == "patched" and task.gap == 0.0
    assert any(ONE_ROW in n for n in task.notes)
    assert task.objective == pytest.approx(unreduced_optimum(program), rel=1e-6, abs=1e-9)
    assert task.distances[norm] == pytest.approx(task.objective, rel=1e-6, abs=1e-9)


@pytest.mark.parametrize("k", [0, 1, 2])
@pytest.mark.parametrize("norm", ["linf", "l1"])
def test_keep_points_are_bracketed_by_relaxation_and_restriction(random_nets: Path, k: int, norm: str) -> None:
    """`keep q` (inputs zero on columns 0, 2, 5): the patch is checked on every point, its objective is at
    least the unreduced optimum (it is a genuine patch), and the reported bound at most that optimum."""
    program, result = run_spec(RANDOM.format(k=k, keep="keep q", norm=norm, margin=MARGIN), random_nets)
    task = result.tasks[0]
    assert task.status == "patched"
    assert all(c.ok for c in task.checks)
    best = unreduced_optimum(program)
    assert task.distances[norm] >= best * (1 - 1e-6) - 1e-9
    assert task.bound is not None and task.bound <= best * (1 + 1e-6) + 1e-9
    changed = np.abs(task.deltas[0][1]) > 0
    if not task.gap:  # the relaxation's patch kept q: any column may have moved
        return
    assert not np.any(changed[:, [1, 3, 4]])  # the restriction leaves q's columns alone


def test_linf_lift_is_least_l1_with_the_same_effect() -> None:
    """Row with inputs (1, 3, 0, 2), delta 0.5 spread as sign(x): z = 0.5 * 6 = 3.  With cap 0.5 (the largest
    |delta|) the least-L1 row puts 0.5 on the input 3 (1.5), 0.5 on the input 2 (1.0), 0.5 on the input 1 (0.5):
    all needed, L1 1.5.  A second row with delta -0.25 (z = -1.5) needs only the input 3: -0.5."""
    x = np.array([1.0, 3.0, 0.0, 2.0])
    mask = np.ones((2, 4), dtype=bool)
    R = directions(x, mask, "linf")
    red = RowReduction(net=None, edit=replace(EditSpec(0, "weights", np.zeros((2, 6), dtype=bool))),  # type: ignore
                       groups=[], original=EditSpec(0, "weights", mask), directions=R, norm="linf", shared=x,
                       exact=True)
    red.edit.mask[:, 4:] = np.eye(2, dtype=bool)
    layout = DeltaLayout([red.edit], [np.array([0, 1])])
    _, values = red.lift(layout, np.array([0.5, -0.25]))
    dW = values.reshape(2, 4)
    assert np.allclose(dW, [[0.5, 0.5, 0.0, 0.5], [0.0, -0.5, 0.0, 0.0]])
    assert np.allclose(dW @ x, [3.0, -1.5])
    assert np.allclose(directions(x, mask, "l1"), [[0, 1, 0, 0], [0, 1, 0, 0]])
