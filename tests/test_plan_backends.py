"""A backend the user named is never silently replaced, and the bugs of issue 9 stay fixed.

The planning steps solve with the chosen backend when it declares what they need; a named backend lacking it
(Z3: no big-M lowering) makes the step not apply.  A spy makes every HiGHS entry point fail, so any planning call
that went to HiGHS behind the user's back fails the test.
"""

from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np
import pytest

from patchlang.api import load_program_text, run_program
from patchlang.cli import main
from patchlang.errors import SpecError
from patchlang.model import network_from_arrays, save_network
from patchlang.solvers import highs as highs_module
from patchlang.tasks.patch import RunOptions

REPO = Path(__file__).resolve().parents[1]
MODELS = REPO / "examples" / "models"
HIDDEN_KEEP = """
model toy = "toy.onnx"
points p = [[3, 4]]
points q = [[1, 0], [0, 1], [2, 2]]
patch fix on toy {{
    edit layer 0 weights
    require p: y[0] >= y[1]
    keep q
    minimize linf
    {extra}
}}
"""


def run(source: str, backend: str | None = None):
    program = load_program_text(source, MODELS, filename=str(MODELS / "x.patch"))
    return run_program(program, RunOptions(write_files=False, backend=backend)).tasks[0]


@pytest.fixture
def no_highs(monkeypatch: pytest.MonkeyPatch) -> None:
    """Every way into HiGHS fails the test."""
    def spy(*args, **kwargs):
        raise AssertionError("HiGHS was called although another backend was named")

    for name in ("solve", "solve_linear", "relaxation", "tighten_bounds", "iis"):
        monkeypatch.setattr(highs_module.HighsBackend, name, spy)


def test_keep_without_bound_derives_one(tmp_path: Path) -> None:
    """Regression: `edit layer 0 weights` + `keep` on the toy network without `bound linf` stopped with "a ReLU has
    no finite bounds"; the bound is derived (here by trial bounds) and the optimum is the one with `bound linf <= 5`."""
    derived = run(HIDDEN_KEEP.format(extra=""))
    given = run(HIDDEN_KEEP.format(extra="bound linf <= 5"))
    assert derived.status == given.status == "patched"
    assert derived.distances["linf"] == pytest.approx(given.distances["linf"], rel=1e-6)
    assert derived.distances["linf"] == pytest.approx(2.0005, rel=1e-4)


def test_using_z3_never_calls_highs(no_highs) -> None:
    """Z3 takes ReLUs as exact `ite` terms: no big-M, so no bound derivation, tightening or row reduction apply, and
    nothing is solved by HiGHS (toy hidden-layer edit: the known optimum 2/7)."""
    task = run(HIDDEN_KEEP.format(extra="bound linf <= 1").replace("keep q\n", ""), backend="z3")
    assert task.status == "patched" and task.backend == "z3"
    assert task.distances["linf"] == pytest.approx(2 / 7, rel=1e-6)
    names = {s.name for s in task.steps}
    assert not names & {"fixed_phase_bound", "lp_bound_tightening", "one_unknown_per_row", "keep_bracket"}


def test_using_gurobi_plans_with_gurobi(no_highs) -> None:
    """With `using gurobi` every planning LP/MILP (fixed-phase bound, keep bracket, tidy) goes to Gurobi."""
    from patchlang.solvers.gurobi import licence_state

    if licence_state().startswith("none"):
        pytest.skip("Gurobi cannot run here")
    task = run(HIDDEN_KEEP.format(extra=""), backend="gurobi")
    assert task.status == "patched" and task.backend == "gurobi"
    assert task.distances["linf"] == pytest.approx(2.0005, rel=1e-4)
    assert "fixed_phase_bound" in {s.name for s in task.steps}


def test_away_from_label_on_a_one_output_model_is_a_check_error(tmp_path: Path) -> None:
    """Regression: exited 101 (UnboundLocalError): no other label exists, so it is a spec error with its line."""
    save_network(network_from_arrays([np.array([[1.0, -1.0]])], [np.array([0.5])]), str(tmp_path / "one.onnx"))
    source = ('model net = "one.onnx"\npoints p = [[1, 2]]\n'
              'patch t on net {\n    edit layer -1 biases\n    change p away from label\n}\n')
    with pytest.raises(SpecError) as err:
        load_program_text(source, tmp_path, filename=str(tmp_path / "t.patch"))
    text = str(err.value.diagnostics[0].render()) if hasattr(err.value, "diagnostics") else str(err.value)
    assert "PL222" in text and ":5:" in text


def test_check_names_a_verify_task_once(tmp_path: Path, capsys) -> None:
    """Regression: `patchlang check` printed "verify verify net satisfies p"."""
    spec = tmp_path / "verify.patch"
    shutil.copytree(REPO / "examples" / "verify", tmp_path, dirs_exist_ok=True)
    assert main(["check", str(spec)]) == 0
    out = capsys.readouterr().out
    assert "verify net satisfies never_two" in out and "verify verify" not in out


def test_repair_no_patch_under_its_own_bound_is_inconclusive(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Regression: "no patch with the allowed edits" came from the bound repair adds when the spec has none; only
    a bound the spec states proves it."""
    import patchlang.tasks.repair as R
    from patchlang.plan.reduction import Answer, PatchProblem
    from patchlang.plan.chain import Outcome
    from patchlang.plan.solve import PlanResult
    from patchlang.solution import INFEASIBLE, Solution, SolveOptions

    def infeasible(net, task, groups, *args, **kwargs):
        out = Outcome(Answer(Solution(INFEASIBLE), None), PatchProblem(net, task, groups, SolveOptions()))
        return PlanResult(None, out, [INFEASIBLE])

    monkeypatch.setattr(R, "solve_patch", infeasible)
    shutil.copy(REPO / "examples" / "verify" / "tiny.onnx", tmp_path / "tiny.onnx")
    body = ('model net = "tiny.onnx"\n'
            "property never_two { input box lo [0.5, -1] hi [1, -0.5] ensure label is not 2 }\n"
            "repair net for never_two { edit layer -1 biases %s }\n")
    unbounded = load_program_text(body % "", tmp_path, filename=str(tmp_path / "a.patch"))
    task = run_program(unbounded, RunOptions(write_files=False)).tasks[0]
    assert task.status == "inconclusive" and "bound repair added" in task.message
    bounded = load_program_text(body % " bound linf <= 0.5", tmp_path, filename=str(tmp_path / "b.patch"))
    task = run_program(bounded, RunOptions(write_files=False)).tasks[0]
    assert task.status == "not repaired"
