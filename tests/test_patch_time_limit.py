"""`limit time SECONDS` in a patch block bounds its solver calls (it was accepted by `check` and then ignored, so
a hard MILP ran on past it)."""

from __future__ import annotations

from pathlib import Path

from patchlang.api import load_program_text
from patchlang.tasks.patch import RunOptions, solve_options

EXAMPLES = Path(__file__).resolve().parents[1] / "examples" / "quickstart"

SPEC = '''model net = "../models/digits_mlp.onnx"
points test = "../models/digits_test.npz"
patch fix on net {{
    edit layer -1 weights
    change test[0:2] to 3
    minimize linf
    {limit}
}}
'''


def _options(limit: str, run: RunOptions) -> float | None:
    program = load_program_text(SPEC.format(limit=limit), EXAMPLES)
    return solve_options(program.tasks[0], run).time_limit


def test_limit_time_reaches_the_solver():
    assert _options("limit time 7", RunOptions()) == 7.0
    assert _options("", RunOptions()) is None


def test_the_backend_option_and_the_command_line_win():
    assert _options("limit time 7\n    using highs (time_limit = 3)", RunOptions()) == 3.0
    assert _options("limit time 7", RunOptions(time_limit=2.0)) == 2.0
