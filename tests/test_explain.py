"""Why no patch exists: conflicts in the user's words, found by HiGHS IIS or Z3 cores, each statement needed."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from patchlang.api import load_program_text, run_program
from patchlang.cli import main
from patchlang.model.build import network_from_arrays
from patchlang.model.onnx_export import save_network
from patchlang.solvers.base import INFEASIBLE, SolveOptions
from patchlang.solvers.registry import get_backend
from patchlang.tasks.explain import describe, explain_infeasible, find_core, restrict, tracked_items
from patchlang.tasks.export import task_query
from patchlang.tasks.patch import RunOptions

REPO = Path(__file__).resolve().parents[1]
MODELS = REPO / "examples" / "models"

TOY = """
model toy = "toy.onnx"
points p = [[3, 4]]
patch fix on toy {{
    edit layer -1 weights
    require p: y[0] >= y[1]
    bound linf <= 0.5
    {using}
}}
"""


@pytest.mark.parametrize("using", ["", "using z3"])
def test_toy_conflict_names_the_goal_and_the_bound(using: str, tmp_path: Path) -> None:
    """The toy needs a change of exactly 1; `bound linf <= 0.5` makes it impossible, and the report says why."""
    program = load_program_text(TOY.format(using=using), MODELS, filename=str(tmp_path / "toy.patch"))
    task = run_program(program, RunOptions(write_files=False)).tasks[0]
    assert task.status == "no patch"
    assert task.core == ["require p: p[0] (line 6)", "bound linf <= 0.5 (line 7)"]
    assert task.message == ("no patch exists: require p: p[0] (line 6) cannot hold under bound linf <= 0.5 "
                            "(line 7)")
    method = "Z3" if using else "HiGHS"
    assert any(f"conflict found by {method}" in n and "each statement listed is needed" in n for n in task.notes)


def _net(tmp_path: Path) -> None:
    rng = np.random.default_rng(3)
    net = network_from_arrays([rng.normal(size=(5, 3)), rng.normal(size=(3, 5))],
                              [rng.normal(size=5) * 0.1, rng.normal(size=3) * 0.1])
    save_network(net, str(tmp_path / "net.onnx"))


def _points(n: int = 8) -> str:
    x = np.random.default_rng(4).normal(size=(n, 3))
    return "[" + ", ".join("[" + ", ".join(repr(float(v)) for v in r) + "]" for r in x) + "]"


CONFLICT = """
model net = "net.onnx"
points p = {points}
patch t on net {{
    edit layer {layer} biases
    change p[1] to {target}
    keep p
    {extra}
}}
"""


def _load(tmp_path: Path, **kw):
    _net(tmp_path)
    from patchlang.model.loader import load_model

    x = np.array(eval(_points()))  # noqa: S307 - our own literal
    own = int(load_model(str(tmp_path / "net.onnx")).labels(x[1:2])[0])
    source = CONFLICT.format(points=_points(), target=(own + 1) % 3, **kw)
    (tmp_path / "c.patch").write_text(source)
    return load_program_text(source, tmp_path, filename=str(tmp_path / "c.patch"))


@pytest.mark.parametrize("layer,extra", [(-1, ""), (0, "bound linf <= 2"), (-1, "using z3")])
def test_change_conflicts_with_keep_of_the_same_point(tmp_path: Path, layer: int, extra: str, capsys) -> None:
    """`keep p` includes p[1], which must also change: the change conflicts with (some of) the keep points."""
    program = _load(tmp_path, layer=layer, extra=extra)
    task = run_program(program, RunOptions(write_files=False)).tasks[0]
    assert task.status == "no patch"
    assert task.core[0].startswith("change p[1] to ") and task.core[0].endswith("(line 6)")
    assert task.core[1].startswith("keep p: p[") and task.core[1].endswith("(line 7)")
    assert " conflicts with keep p: p[" in task.message


def test_cli_prints_conflict_and_exits_1(tmp_path: Path, capsys) -> None:
    program = _load(tmp_path, layer=-1, extra="")
    del program
    assert main(["run", str(tmp_path / "c.patch"), "--no-save"]) == 1
    out = capsys.readouterr().out
    assert "conflict  change p[1] to " in out and "conflict  keep p: p[" in out


def test_core_is_minimal_and_really_conflicts(tmp_path: Path) -> None:
    """Independently: the reported groups are infeasible together and feasible without any one of them."""
    program = _load(tmp_path, layer=0, extra="bound linf <= 0.05")
    q = task_query(program.tasks[0])
    highs = get_backend("highs")
    assert highs.solve(q, SolveOptions()).status == INFEASIBLE
    items, tracking = tracked_items(q)
    found = find_core(q, SolveOptions(), prefer="z3")
    assert found is not None
    _, ids, minimal, _, _ = found
    assert minimal
    z3 = get_backend("z3")
    assert z3.solve(restrict(q, tracking, set(ids)), SolveOptions()).status == INFEASIBLE
    for g in ids:
        assert z3.solve(restrict(q, tracking, set(ids) - {g}), SolveOptions()).status != INFEASIBLE
    lines, sentence = describe(items, ids)
    assert all("(line" in line for line in lines)


def test_feasible_query_has_no_explanation(tmp_path: Path) -> None:
    program = load_program_text(TOY.format(using="").replace("bound linf <= 0.5", ""), MODELS,
                                filename=str(tmp_path / "toy.patch"))
    assert explain_infeasible(task_query(program.tasks[0]), SolveOptions()) is None
