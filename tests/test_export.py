"""`patchlang export`: LP/MPS round trips through HiGHS, SMT-LIB through Z3, clear errors, atomic files."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from patchlang.api import load_program
from patchlang.cli import main
from patchlang.errors import PatchlangError
from patchlang.solvers.base import SolveOptions
from patchlang.solvers.registry import get_backend
from patchlang.tasks.export import export_task, task_query

REPO = Path(__file__).resolve().parents[1]
TOY = REPO / "examples" / "toy" / "toy.patch"
QUICKSTART = REPO / "examples" / "quickstart" / "fix_digits.patch"


def _read_back(path: Path) -> float:
    import highspy

    h = highspy.Highs()
    h.setOptionValue("output_flag", False)
    assert h.readModel(str(path)) == highspy.HighsStatus.kOk
    h.run()
    assert h.getModelStatus() == highspy.HighsModelStatus.kOptimal
    return float(h.getInfo().objective_function_value)


@pytest.mark.parametrize("fmt", ["lp", "mps"])
@pytest.mark.parametrize("spec,task", [(TOY, "fix"), (QUICKSTART, "fix_digits")])
def test_round_trip_same_optimum(fmt: str, spec: Path, task: str, tmp_path: Path) -> None:
    out = tmp_path / f"q.{fmt}"
    export_task(str(spec), task, fmt, str(out))
    direct = get_backend("highs").solve(task_query(load_program(spec).task(task)), SolveOptions())
    assert _read_back(out) == pytest.approx(direct.objective, rel=1e-7, abs=1e-9)
    if spec == TOY:
        assert _read_back(out) == pytest.approx(1.0, abs=1e-9)
    assert [p.name for p in tmp_path.iterdir()] == [out.name]  # no temporary files left behind


def test_lp_file_uses_the_users_words(tmp_path: Path) -> None:
    out = tmp_path / "toy.lp"
    export_task(str(TOY), "fix", "lp", str(out))
    text = out.read_text()
    assert "require_p_p_0" in text and "layer_1.weight" in text


def test_smt2_is_exact_and_solvable(tmp_path: Path) -> None:
    import z3

    out = tmp_path / "toy.smt2"
    assert main(["export", str(TOY), "--task", "fix", "--format", "smt2", "-o", str(out)]) == 0
    text = out.read_text()
    assert text.splitlines()[0].startswith("; patchlang export of task `fix`")
    assert "(set-logic QF_LRA)" in text and text.rstrip().endswith("(get-value (objective))")
    opt = z3.Optimize()
    opt.from_string(text.replace("(check-sat)", "").replace("(get-value (objective))", ""))
    obj = z3.Real("objective")
    opt.minimize(obj)
    assert opt.check() == z3.sat
    assert opt.model()[obj].as_fraction() == 1
    s = z3.Solver()  # minimality of the reported optimum, as the file's comment suggests
    s.from_string(text.replace("(check-sat)", "(assert (< objective 1.0))"))
    assert s.check() == z3.unsat


def test_milp_export(tmp_path: Path) -> None:
    """A task with ReLUs downstream exports its big-M lowering with the binaries."""
    spec = tmp_path / "m.patch"
    spec.write_text(f"""
        model net = "{REPO / 'examples' / 'models' / 'digits_mlp.onnx'}"
        points test = "{REPO / 'examples' / 'models' / 'digits_test.npz'}"
        patch m on net {{
            edit layer 0 biases
            change test[0] to 3
            keep test[1:4]
            bound linf <= 0.5
        }}
    """)
    out = tmp_path / "m.mps"
    export_task(str(spec), "m", "mps", str(out))
    direct = get_backend("highs").solve(task_query(load_program(spec).task("m")), SolveOptions(mip_gap=0))
    import highspy

    h = highspy.Highs()
    h.setOptionValue("output_flag", False)
    h.setOptionValue("mip_rel_gap", 0.0)
    h.readModel(str(out))
    assert h.getLp().integrality_  # binaries survived
    h.run()
    if direct.objective is None:
        assert h.getModelStatus() == highspy.HighsModelStatus.kInfeasible
    else:
        assert h.getInfo().objective_function_value == pytest.approx(direct.objective, rel=1e-6)


def test_unknown_task_lists_tasks(tmp_path: Path, capsys) -> None:
    assert main(["export", str(TOY), "--task", "nope", "--format", "lp", "-o", str(tmp_path / "x.lp")]) == 2
    err = capsys.readouterr().err
    assert "no task named `nope`" in err and "tasks: fix" in err
    assert not (tmp_path / "x.lp").exists()


def test_vnnlib_of_a_patch_task_is_refused(tmp_path: Path) -> None:
    with pytest.raises(PatchlangError, match="patch task"):
        export_task(str(TOY), "fix", "vnnlib", str(tmp_path / "x.vnnlib"))


def test_vnnlib_of_a_verify_task(tmp_path: Path) -> None:
    spec = tmp_path / "v.patch"
    spec.write_text(f"""
        model toy = "{REPO / 'examples' / 'models' / 'toy.onnx'}"
        property pos {{
            input box lo [0, 0] hi [1, 1]
            ensure y[0] <= 100
        }}
        verify toy satisfies pos
    """)
    name = load_program(spec).tasks[0].name
    out = tmp_path / "p.vnnlib"
    try:
        import patchlang.tasks.property_export  # noqa: F401
    except ImportError:
        with pytest.raises(PatchlangError, match="VNN-LIB export is not available"):
            export_task(str(spec), name, "vnnlib", str(out))
        return
    export_task(str(spec), name, "vnnlib", str(out))
    assert out.exists() and "declare-const" in out.read_text()
    with pytest.raises(PatchlangError, match="verify task"):
        export_task(str(spec), name, "lp", str(tmp_path / "v.lp"))


def test_export_is_atomic_on_failure(tmp_path: Path, monkeypatch) -> None:
    """A failing writer leaves the previous file intact."""
    out = tmp_path / "q.smt2"
    out.write_text("previous")
    import patchlang.tasks.export as ex

    def boom(*a, **k):
        raise PatchlangError("boom")

    monkeypatch.setattr(ex, "smt2_text", boom)
    with pytest.raises(PatchlangError):
        export_task(str(TOY), "fix", "smt2", str(out))
    assert out.read_text() == "previous"
    assert sorted(os.listdir(tmp_path)) == ["q.smt2"]
