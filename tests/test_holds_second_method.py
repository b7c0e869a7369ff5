"""A "holds" on a network too large for the exact Z3 re-check is re-proven by the other complete search within a
budget, and the report says which (issue 10); a second method that finds a counterexample withdraws the claim."""

from __future__ import annotations

import shutil
from pathlib import Path

import patchlang.tasks.certify as C
from patchlang.api import load_program_text, run_task
from patchlang.tasks.patch import RunOptions
from patchlang.tasks.results import HOLDS, UNKNOWN, TaskResult
from patchlang.tasks.verify import property_cases, second_method_holds

EXAMPLE = Path(__file__).resolve().parents[1] / "examples" / "verify"
SPEC = ('model net = "tiny.onnx"\n'
        "property capped { input box lo [-1, -1] hi [1, 1] ensure y[2] <= 1.5 }\n"
        "property never_two { input box lo [0.5, -1] hi [1, -0.5] ensure label is not 2 }\n"
        "verify net satisfies capped timeout 60\n")


def _program(tmp_path: Path):
    shutil.copy(EXAMPLE / "tiny.onnx", tmp_path / "tiny.onnx")
    return load_program_text(SPEC, tmp_path)


def test_too_large_for_z3_is_reproven_by_the_other_search(tmp_path: Path, monkeypatch) -> None:
    monkeypatch.setattr(C, "HOLDS_MAX_RELUS", 0)  # the tiny network stands for one Z3 cannot take
    r = run_task(_program(tmp_path).tasks[0], RunOptions())
    assert r.status == HOLDS and r.details["method"] == "input-split"
    cert = r.details["certificate"]
    assert cert["certified"] is True
    assert cert["method"].startswith("re-proven by a second method: relu-split search") and "input-split" in cert["method"]


def test_the_second_method_decides_both_ways(tmp_path: Path) -> None:
    program = _program(tmp_path)
    net = program.models["net"].net
    holds = property_cases(program.properties["capped"], net)
    violated = property_cases(program.properties["never_two"], net)
    assert second_method_holds(net, holds, "relu-split", 0, 30)[0] is True  # relu-split first: input-split second
    certified, method = second_method_holds(net, violated, "input-split", 0, 30)
    assert certified is None and "finds a counterexample" in method


def test_a_refuting_second_method_withdraws_holds(tmp_path: Path, monkeypatch) -> None:
    monkeypatch.setattr(C, "HOLDS_MAX_RELUS", 0)
    program = _program(tmp_path)
    net = program.models["net"].net
    cases = property_cases(program.properties["capped"], net)
    result = TaskResult("t", "verify", HOLDS)
    C.record_holds(result, net, cases, second_method=lambda *a: (None, "stand-in: a counterexample"))
    assert result.status == UNKNOWN and result.details["certificate"]["refuted"]
    result = TaskResult("t", "verify", HOLDS)
    C.record_holds(result, net, cases, second_method=lambda *a: (False, "not independently certified: stand-in"))
    assert result.status == HOLDS and not result.details["certificate"]["certified"]
    assert "stand-in" in result.details["certificate"]["method"] and "Z3" in result.details["certificate"]["method"]
