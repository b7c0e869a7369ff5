"""`patchlang plan`: per task the class, backend, query size, planning steps and cache state, without solving."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

from patchlang.cli import main

REPO = Path(__file__).resolve().parents[1]


@pytest.fixture()
def examples(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    shutil.copytree(REPO / "examples", tmp_path / "examples", ignore=shutil.ignore_patterns("out", ".patchlang"))
    monkeypatch.setenv("PATCHLANG_CACHE", "1")
    return tmp_path / "examples"


def test_plan_reads_the_chain_and_builds_the_query(examples: Path, capsys) -> None:
    spec = examples / "quickstart" / "fix_digits.patch"
    assert main(["plan", str(spec)]) == 0
    out = capsys.readouterr().out
    assert "1 task(s), 1 to run, 0 cached" in out
    assert "LP: only the last affine layer moves" in out
    assert "backend highs; query 2701 variables, 5163 rows, 78776 nonzeros" in out
    for step in ("lazy_keep", "least_l1_tidy", "encode: LP query"):
        assert step in out
    assert not (examples / "quickstart" / "out").exists()  # nothing solved, nothing written


def test_detailed_exitcode_is_2_until_a_cached_result_applies(examples: Path, capsys) -> None:
    spec = str(examples / "quickstart" / "fix_digits.patch")
    assert main(["plan", spec, "--detailed-exitcode"]) == 2
    assert main(["run", spec, "-q"]) == 0
    capsys.readouterr()
    assert main(["plan", spec, "--detailed-exitcode"]) == 0
    assert "0 to run, 1 cached" in capsys.readouterr().out
    assert main(["plan", spec, "--detailed-exitcode", "--seed", "1"]) == 2  # another key
    assert main(["plan", spec, "--detailed-exitcode", "--no-cache"]) == 2


def test_plan_of_milp_and_verify_tasks(examples: Path, capsys) -> None:
    assert main(["plan", str(examples / "quickstart" / "hidden.patch")]) == 0
    out = capsys.readouterr().out
    assert "MILP" in out and "fixed_phase_bound" in out and "query 3366 variables" in out
    assert main(["plan", str(examples / "verify" / "verify.patch"), "--detailed-exitcode"]) == 2
    out = capsys.readouterr().out
    assert "2 inputs, 12 relus, 1 boxes (estimate" in out and "cache: no result applies" in out  # verify: cached


def test_plan_reports_spec_errors_as_check_does(examples: Path, capsys) -> None:
    assert main(["plan", str(examples / "errors" / "two_errors.patch")]) == 2
    assert "PL" in capsys.readouterr().err
    assert main(["plan", str(examples / "toy" / "toy.patch"), "--task", "nope"]) == 2


def test_a_repair_query_is_an_estimate(examples: Path, capsys) -> None:
    assert main(["plan", str(examples / "verify" / "repair.patch")]) == 0
    out = capsys.readouterr().out
    assert "repair no_two" in out and "(estimate: built while solving)" in out and "cache: no result applies" in out  # repair results are cached
