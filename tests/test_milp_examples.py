"""The bias-patching example runs from a fresh clone, and the MILP levers never change an optimum."""

from __future__ import annotations

from pathlib import Path

import pytest

from patchlang.api import load_program, run_program
from patchlang.tasks.patch import RunOptions

EXAMPLE = Path(__file__).resolve().parents[1] / "examples" / "bias_patch" / "bias_patch.patch"


def run(path: Path):
    return run_program(load_program(path), RunOptions(write_files=False))


def test_bias_patch_example_runs() -> None:
    result = run(EXAMPLE)
    task = result.tasks[0]
    assert task.status == "patched"
    assert task.problem_class == "MILP"
    assert result.exit_code == 0
    assert 0 < task.distances["linf"] <= 0.25
    assert any("derived from a fixed-phase LP" in n for n in task.notes)


def test_levers_do_not_change_the_optimum(monkeypatch: pytest.MonkeyPatch) -> None:
    """The same example with the fixed-phase LP switched off (plain MILP under the user's bound 0.25)."""
    with_levers = run(EXAMPLE).tasks[0]
    plain = run_program(load_program(EXAMPLE), RunOptions(write_files=False,
                                                          disable_steps=frozenset({"fixed_phase_bound"}))).tasks[0]
    assert not any("derived from a fixed-phase LP" in n for n in plain.notes)
    assert plain.query_size["binaries"] > with_levers.query_size["binaries"]
    assert plain.objective == pytest.approx(with_levers.objective, rel=1e-6)
