"""End-to-end: ``patchlang check | run`` through ``patchlang.cli.main`` on the examples and on broken specs.

What a user (or CI) relies on: exit codes, the report's key lines, files written (or not), machine-readable
reports, friendly errors with a position and a caret (never a traceback), and input models left untouched.
"""

from __future__ import annotations

import hashlib
import json
import re
import shutil
from pathlib import Path
from xml.etree import ElementTree as ET

import numpy as np
import pytest

from patchlang.cli import main

REPO = Path(__file__).resolve().parents[1]
EXAMPLES = REPO / "examples"
MODELS = EXAMPLES / "models"
TOY = EXAMPLES / "toy" / "toy.patch"
QUICKSTART = EXAMPLES / "quickstart" / "fix_digits.patch"
DIAG = re.compile(r"^(?P<file>\S+):(?P<line>\d+):(?P<col>\d+): (?P<code>PL\d{3}) error: ", re.M)


def sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def run_cli(capsys, *argv: str) -> tuple[int, str, str]:
    code = main([str(a) for a in argv])
    captured = capsys.readouterr()
    return code, captured.out, captured.err


def copy_example(tmp_path: Path, spec: Path) -> Path:
    """The example's spec and the example models in the same relative layout, so runs write only into tmp."""
    shutil.copytree(MODELS, tmp_path / "models", ignore=shutil.ignore_patterns("*.py", "__pycache__"))
    (tmp_path / spec.parent.name).mkdir()
    target = tmp_path / spec.parent.name / spec.name
    shutil.copy(spec, target)
    return target


def write_spec(tmp_path: Path, body: str, name: str = "spec.patch") -> Path:
    """A spec next to which ``m/`` holds the example models (paths in ``body`` are relative to it)."""
    models = tmp_path / "m"
    if not models.exists():
        models.mkdir()
        for f in ("toy.onnx", "digits_mlp.onnx", "digits_test.npz"):
            shutil.copy(MODELS / f, models / f)
    path = tmp_path / name
    path.write_text(body, encoding="utf-8")
    return path


TOY_HEADER = 'model toy = "m/toy.onnx"\npoints p = [[3, 4]]\n'
DIGITS_HEADER = 'model net = "m/digits_mlp.onnx"\npoints test = "m/digits_test.npz"\n'


# ---------------------------------------------------------------------------------------------- examples


def test_check_toy(capsys) -> None:
    code, out, err = run_cli(capsys, "check", TOY)
    assert code == 0, err
    assert "ok (1 model(s), 1 point set(s), 1 task(s), 1 assertion(s))" in out
    assert re.search(r"patch\s+fix\s+LP: only the last affine layer moves", out)


def test_run_toy_known_answer(capsys) -> None:
    before = sha256(MODELS / "toy.onnx")
    code, out, err = run_cli(capsys, "run", TOY, "--no-save")
    assert code == 0, out + err
    assert "patched" in out and "proven optimal" in out
    assert re.search(r"objective 1\s", out)
    assert re.search(r"ok\s+line 14: assert distance\(fix, linf\) <= 1.0000001\s+\(value 1\)", out)
    assert "exit 0" in out
    assert sha256(MODELS / "toy.onnx") == before


def test_run_regions_example(tmp_path: Path, capsys) -> None:
    """examples/toy/regions.patch (the tutorial's section 8): one property proven, one violated with a saved
    counterexample, and a repair proven over the box with the hand-computed L∞ 1 plus the margin's share."""
    spec = copy_example(tmp_path, EXAMPLES / "toy" / "regions.patch")
    code, out, err = run_cli(capsys, "run", spec, "--json", tmp_path / "r.json")
    assert code == 1, out + err  # the violated `verify`, by design
    tasks = {t["name"]: t for t in json.loads((tmp_path / "r.json").read_text())["tasks"]}
    assert tasks["verify toy satisfies wins"]["status"] == "holds"
    assert tasks["verify toy satisfies strong"]["status"] == "violated"
    assert tasks["toy_strong"]["status"] == "repaired"
    assert tasks["toy_strong"]["distances"]["linf"] == pytest.approx(1 + 2 * 0.001 / 3, abs=1e-6)
    assert np.load(tmp_path / "toy" / "out" / "cex.npy").shape == (2,)
    assert (tmp_path / "toy" / "out" / "toy_strong.onnx").exists()


@pytest.mark.parametrize("spec", [EXAMPLES / "toy" / "bilinear.patch", EXAMPLES / "verify" / "robust_digits.patch"])
def test_run_more_examples_exit_0(spec: Path, tmp_path: Path, capsys) -> None:
    code, out, err = run_cli(capsys, "run", copy_example(tmp_path, spec), "--no-save")
    assert code == 0, out + err
    assert "exit 0" in out


def test_run_quickstart_writes_model_and_reports(tmp_path: Path, capsys) -> None:
    spec = copy_example(tmp_path, QUICKSTART)
    model = tmp_path / "models" / "digits_mlp.onnx"
    before = sha256(model)
    report, junit = tmp_path / "r" / "report.json", tmp_path / "r" / "report.xml"
    code, out, err = run_cli(capsys, "check", spec)
    assert code == 0 and "LP" in out, err
    code, out, err = run_cli(capsys, "run", spec, "--json", report, "--junit", junit)
    assert code == 0, out + err
    written = tmp_path / "quickstart" / "out" / "digits_fixed.onnx"
    assert written.is_file() and f"wrote     {written}" in out
    assert sha256(model) == before  # the input model is never modified

    doc = json.loads(report.read_text())
    assert doc["format_version"] == 1 and doc["exit_code"] == 0
    inputs = doc["inputs"]
    assert inputs[str(model)]["sha256"] == before
    assert inputs[str(tmp_path / "models" / "digits_test.npz")]["sha256"] == sha256(
        tmp_path / "models" / "digits_test.npz")
    assert {"patchlang", "numpy", "onnxruntime", "highspy"} <= set(doc["versions"])
    (task,) = doc["tasks"]
    assert (task["name"], task["status"], task["class"], task["backend"]) == ("fix_digits", "patched", "LP", "highs")
    assert task["gap"] == 0 and task["files"] == [str(written)]
    assert all(c["satisfied_float64"] == c["points"] == c["satisfied_float32"] for c in task["checks"])
    assert [a["holds"] for a in doc["assertions"]] == [True, True, True]

    suite = ET.parse(junit).getroot()
    assert suite.tag == "testsuite"
    assert (suite.get("tests"), suite.get("failures"), suite.get("skipped")) == ("4", "0", "0")
    assert [c.get("name") for c in suite.iter("testcase")][0] == "fix_digits"

    # the written file really is the patched network: it fixes the points the spec says
    import numpy as np

    from patchlang.model.runtime import OrtModel

    data = np.load(tmp_path / "models" / "digits_test.npz")
    fixed = np.argmax(OrtModel(str(written)).run(data["x"].astype(np.float32)), axis=1)
    assert np.mean(fixed == data["y"]) >= 0.95


def test_no_save_writes_nothing(tmp_path: Path, capsys) -> None:
    spec = copy_example(tmp_path, TOY)
    code, out, _ = run_cli(capsys, "run", spec, "--no-save")
    assert code == 0
    assert not (tmp_path / "toy" / "out").exists() and "wrote" not in out
    code, out, _ = run_cli(capsys, "run", spec)
    assert code == 0 and (tmp_path / "toy" / "out" / "toy_fixed.onnx").is_file()


def test_quiet_prints_only_the_verdict(capsys) -> None:
    code, out, _ = run_cli(capsys, "run", TOY, "--no-save", "-q")
    assert code == 0 and out.strip().startswith("all good") and out.strip().endswith("exit 0)")
    assert len(out.strip().splitlines()) == 1


# ---------------------------------------------------------------------------------------------- spec errors

SPEC_ERRORS = {
    "unknown name": (DIGITS_HEADER + "patch fix on net {\n    edit layer -1 weights\n    change tset[0] to 3\n}\n",
                     "PL202", (5, 12), ["unknown point set `tset`", "did you mean `test`?"]),
    "unknown layer": (DIGITS_HEADER + "patch fix on net {\n    edit layer 7 weights\n    change test[0] to 3\n}\n",
                      "PL220", (4, 5), ["no editable layer 7", "0: layer_0, 1: layer_1"]),
    "wrong shape": (TOY_HEADER.replace("[[3, 4]]", "[[3, 4, 5]]")
                    + "patch fix on toy {\n    edit layer -1 weights\n    change p to 1\n}\n",
                    "PL216", (5, 12), ["3 values each", "takes 2"]),
    "missing file": ('model net = "m/nothere.onnx"\n', "PL210", (1, 1), ["model file not found: m/nothere.onnx"]),
    "syntax error": (TOY_HEADER + "patch fix on toy {\n    edit layer -1 weigths\n}\n", "PL100", (4, 19),
                     ["unexpected 'weigths'", "weights or biases"]),
    "bilinear edit": (DIGITS_HEADER + "patch fix on net {\n    edit layer 0 weights\n    edit layer 1 weights\n"
                                      "    change test[0] to 3\n}\n", "PL230", (5, 5), ["bilinear", "using z3"]),
    "label out of range": (DIGITS_HEADER + "patch fix on net {\n    edit layer -1 weights\n    change test[0] to 10\n}\n",
                           "PL222", (5, 5), ["label 10 is out of range", "0..9"]),
    "save onto the input model": (TOY_HEADER + 'patch fix on toy {\n    edit layer -1 weights\n'
                                               '    require p: y[0] >= y[1]\n    save "m/toy.onnx"\n}\n',
                                  "PL242", (6, 5), ["refusing to overwrite an input model"]),
}


@pytest.mark.parametrize("case", sorted(SPEC_ERRORS))
@pytest.mark.parametrize("command", ["check", "run"])
def test_spec_errors(case: str, command: str, tmp_path: Path, capsys) -> None:
    body, code_expected, (line, col), words = SPEC_ERRORS[case]
    spec = write_spec(tmp_path, body)
    models = {p: sha256(p) for p in (tmp_path / "m").iterdir()}
    files = set(tmp_path.rglob("*"))
    code, out, err = run_cli(capsys, command, spec)
    assert code == 2, out + err
    assert "Traceback" not in out + err
    m = DIAG.search(err)
    assert m, err
    assert (m["file"], m["code"], int(m["line"]), int(m["col"])) == (str(spec), code_expected, line, col)
    source_line = body.splitlines()[line - 1]
    assert f"{line:>4} | {source_line}" in err
    caret = next(s for s in err.splitlines() if s.strip().startswith("|") and "^" in s)
    assert caret.index("^") == caret.index("|") + 2 + col - 1  # the caret points at the column
    for w in words:
        assert w in err
    assert {p: sha256(p) for p in (tmp_path / "m").iterdir()} == models
    assert set(tmp_path.rglob("*")) == files  # nothing written


def test_several_errors_are_reported_together(tmp_path: Path, capsys) -> None:
    spec = write_spec(tmp_path, DIGITS_HEADER + "patch fix on net {\n    edit layer 9 weights\n"
                                                "    change tset to 3\n    keep test where correct(nett)\n}\n")
    code, _, err = run_cli(capsys, "check", spec)
    assert code == 2
    assert [m["code"] for m in DIAG.finditer(err)] == ["PL220", "PL202", "PL202"]
    assert "3 errors" in err


def test_missing_spec_file_and_unknown_task(tmp_path: Path, capsys) -> None:
    code, _, err = run_cli(capsys, "check", tmp_path / "nope.patch")
    assert code == 2 and "PL001" in err and "Traceback" not in err
    code, _, err = run_cli(capsys, "run", TOY, "--no-save", "--task", "nosuch")
    assert code == 2 and "no task named nosuch" in err and "tasks: fix" in err


# ---------------------------------------------------------------------------------------------- outcomes

INFEASIBLE = TOY_HEADER + ("patch fix on toy {\n    edit layer -1 weights\n    require p: y[0] >= y[1]\n"
                           "    bound linf <= 0.0001\n}\n")


def test_infeasible_patch_exits_1(tmp_path: Path, capsys) -> None:
    report = tmp_path / "r.json"
    code, out, _ = run_cli(capsys, "run", write_spec(tmp_path, INFEASIBLE), "--json", report)
    assert code == 1
    assert "no patch" in out and "exit 1" in out
    doc = json.loads(report.read_text())
    assert doc["exit_code"] == 1 and doc["tasks"][0]["status"] == "no patch"


def test_assert_not_exists_on_infeasible_task_exits_0(tmp_path: Path, capsys) -> None:
    code, out, _ = run_cli(capsys, "run", write_spec(tmp_path, INFEASIBLE + "assert not exists(fix)\n"))
    assert code == 0, out
    assert re.search(r"ok\s+line 8: assert not exists\(fix\)", out)


def test_assert_exists_on_infeasible_task_exits_1(tmp_path: Path, capsys) -> None:
    code, out, _ = run_cli(capsys, "run", write_spec(tmp_path, INFEASIBLE + "assert exists(fix)\n"))
    assert code == 1 and "FAIL" in out


def test_false_assertion_exits_1(tmp_path: Path, capsys) -> None:
    junit = tmp_path / "r.xml"
    spec = write_spec(tmp_path, TOY_HEADER + "patch fix on toy {\n    edit layer -1 weights\n"
                                             "    require p: y[0] >= y[1]\n}\nassert distance(fix, linf) <= 0.5\n")
    code, out, _ = run_cli(capsys, "run", spec, "--junit", junit)
    assert code == 1
    assert re.search(r"FAIL line 7: assert distance\(fix, linf\) <= 0.5\s+\(value 1\)", out)
    suite = ET.parse(junit).getroot()
    assert (suite.get("tests"), suite.get("failures")) == ("2", "1")


def test_plots_option(tmp_path: Path, capsys) -> None:
    code, out, _ = run_cli(capsys, "run", TOY, "--no-save", "--plots", tmp_path / "plots")
    assert code == 0
    names = sorted(p.name for p in (tmp_path / "plots").iterdir())
    assert names == ["fix_layer_1.weight_heatmap.png", "fix_layer_1.weight_hist.png", "index.html"]
    assert "plot      " in out
    code, out, _ = run_cli(capsys, "run", TOY, "--no-save", "-q", "--plots", tmp_path / "quiet")
    assert code == 0 and "plot" not in out and (tmp_path / "quiet" / "index.html").is_file()


def test_progress_lines_on_a_terminal(tmp_path: Path, capsys, monkeypatch) -> None:
    """On a terminal a multi-task run says which task it is on; in a pipe (CI logs) it prints no progress."""
    from rich.console import Console

    two = TOY_HEADER + ("patch a on toy {\n    edit layer -1 weights\n    require p: y[0] >= y[1]\n}\n"
                        "patch b on toy {\n    edit layer -1 biases\n    require p: y[0] >= y[1]\n}\n")
    spec = write_spec(tmp_path, two)
    code, out, _ = run_cli(capsys, "run", spec)
    assert code == 0 and "1/2" not in out
    monkeypatch.setattr(Console, "is_terminal", property(lambda self: True))
    code, out, _ = run_cli(capsys, "run", spec)
    assert code == 0
    assert re.search(r"1/2\s+a: patched", out) and re.search(r"2/2\s+b: patched", out)
