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
from patchlang.plan.conflict import find_core, restrict, tracked_items
from patchlang.tasks.explain import describe, explain_infeasible
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


def test_milp_conflict_by_highs_is_minimal_and_really_conflicts(tmp_path: Path) -> None:
    """A hidden-layer edit (a MILP) is explained with HiGHS (LP relaxations, MILP checks), not Z3's slow cores;
    the reported groups are infeasible together and each is needed, checked independently by Z3."""
    program = _load(tmp_path, layer=0, extra="bound linf <= 0.05")
    q = task_query(program.tasks[0])
    assert q.problem_class == "MILP"
    items, tracking = tracked_items(q)
    found = find_core(q, SolveOptions())
    assert found is not None
    _, ids, minimal, method, _ = found
    assert method.startswith("HiGHS") and minimal
    z3 = get_backend("z3")
    assert z3.solve(restrict(q, tracking, set(ids)), SolveOptions()).status == INFEASIBLE
    for g in ids:
        assert z3.solve(restrict(q, tracking, set(ids) - {g}), SolveOptions()).status != INFEASIBLE


def test_restriction_drops_the_network_copies_of_dropped_points(tmp_path: Path) -> None:
    """Keeping one statement for one point leaves that point's ReLU atoms only, and the pruned restriction has
    the same verdict (Z3, exact) as the restriction with every copy kept."""
    import patchlang.plan.conflict as explain

    program = _load(tmp_path, layer=0, extra="bound linf <= 0.3")
    q = task_query(program.tasks[0])
    items, tracking = tracked_items(q)
    change = next(i for i, it in enumerate(items) if it.group == "change")
    full = len(q.relus)
    per_point = [len(restrict(q, tracking, {i}).relus) for i, it in enumerate(items) if it.point]
    assert sum(per_point) == full and 0 < max(per_point) < full  # each point keeps its own ReLUs only
    z3 = get_backend("z3")
    rng = np.random.default_rng(0)
    for trial in range(6):
        keep = {change} | {int(i) for i in rng.choice(len(items), size=trial, replace=False)}
        pruned = restrict(q, tracking, keep)
        rows, relus = explain._unused_network(pruned)
        assert not rows.size and not relus.size  # nothing left to prune
        with_all = explain.drop_groups(q, tracking, keep)  # every network copy kept
        assert (z3.solve(pruned, SolveOptions()).status == INFEASIBLE) == (
            z3.solve(with_all, SolveOptions()).status == INFEASIBLE)


def test_shrink_without_answers_keeps_the_chunk_and_says_not_minimal() -> None:
    """The deletion filter never drops a group it got no answer about, and then does not claim minimality;
    with all answers it finds the conflict in far fewer checks than one per group."""
    from patchlang.plan.conflict import shrink

    conflict = {3, 17}
    calls = []

    def oracle(keep: set[int]):
        calls.append(keep)
        return conflict <= keep

    ids, minimal = shrink(list(range(64)), oracle)
    assert sorted(ids) == [3, 17] and minimal and len(calls) < 40

    def flaky(keep: set[int]):
        return None if 40 not in keep else conflict <= keep  # no answer whenever group 40 is dropped

    ids, minimal = shrink(list(range(64)), flaky)
    assert conflict <= set(ids) and 40 in ids and not minimal


def test_explanation_budget_is_bounded(tmp_path: Path) -> None:
    """A share of the task's time limit, a small default without one, and no answer at all (rather than an
    unchecked one) when the budget is spent."""
    from patchlang.plan.conflict import DEFAULT_BUDGET, EXPLAIN_SHARE, explain_budget

    assert explain_budget(SolveOptions(time_limit=60.0)) == EXPLAIN_SHARE * 60.0 < 60.0
    assert explain_budget(SolveOptions()) == DEFAULT_BUDGET <= 10.0
    program = _load(tmp_path, layer=0, extra="bound linf <= 0.05")
    assert find_core(task_query(program.tasks[0]), SolveOptions(), budget=0.0) is None


AWAY = """
model net = "net.onnx"
points p = {points}
points mv = p[1:3]
points kp = p[0:4]
patch t on net {{
    edit layer 0 biases
    change mv away from label
    keep kp
    bound linf <= 0.5
}}
"""


def test_disjunctive_conflict_names_the_away_goal(tmp_path: Path) -> None:
    """`away from label` is a disjunction (lowered to extra rows): a conflict through it still names it."""
    _net(tmp_path)
    source = AWAY.format(points=_points())
    program = load_program_text(source, tmp_path, filename=str(tmp_path / "a.patch"))
    task = run_program(program, RunOptions(write_files=False)).tasks[0]
    assert task.status == "no patch"
    assert task.core == ["change mv away from label: p[1] (line 8)", "bound linf <= 0.5 (line 10)"]
    assert any("conflict found by HiGHS" in n and "each statement listed is needed" in n for n in task.notes)
    # HiGHS's infeasible subset of the relaxation names the disjunction's lowered rows: mapped back to it
    from patchlang.plan.budget import Budget
    from patchlang.plan.conflict import Oracle, _iis_groups

    q = task_query(program.tasks[0])
    items, tracking = tracked_items(q)
    seed = _iis_groups(Oracle(q, tracking, SolveOptions(), Budget.seconds(60)))
    assert seed is not None and any(items[g].group == "change" for g in seed)
