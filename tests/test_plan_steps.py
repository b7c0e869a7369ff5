"""Each planning step on its own: switched off, the answer is the same optimum; and each applies where it should.

Small random networks (hidden-layer edits, `keep` points, L∞ / L1 / L0) are solved with every step and again with
one step switched off (``RunOptions.disable_steps``): the optima must agree, since every step is exact (a
reduction with an exact inverse) or only changes how fast the same answer is found.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from patchlang.api import load_program_text, run_program
from patchlang.model import network_from_arrays, save_network
from patchlang.plan import bisection as B
from patchlang.plan.budget import Budget
from patchlang.plan.chain import Planner
from patchlang.plan.fixed_phase_bound import FixedPhaseBound
from patchlang.plan.reduction import PatchProblem
from patchlang.plan.rows import RowSubstitution, row_setup
from patchlang.plan.tidy import LeastL1Tidy
from patchlang.solution import OPTIMAL, TIMEOUT, SolveOptions
from patchlang.solvers.highs import HighsBackend
from patchlang.tasks.patch import RunOptions, build_groups
from specgen import _matrix as matrix
from specgen import random_net

EDITS = ["layer 0 weights", "layer 0 biases", "layer 0 weights and biases"]
NORMS = ["minimize linf\n    bound linf <= 3", "minimize l1\n    bound l1 <= 6", "minimize l0\n    bound linf <= 1.5"]


def random_spec(seed: int, tmp: Path, keep: int = 4) -> str:
    """A 3-h-3 ReLU net; ``move`` must change to a random label, ``keep`` keeps its labels."""
    rng = np.random.default_rng(seed)
    save_network(random_net(rng, 2), str(tmp / "net.onnx"))
    x = rng.normal(size=(keep + 1, 3)).round(3)
    target = int(rng.integers(0, 3))
    return f"""
model net = "net.onnx"
points keep = {matrix(x[1:])}
points move = {matrix(x[:1])}
patch p on net {{
    edit {EDITS[seed % len(EDITS)]}
    keep keep
    change move to {target}
    {NORMS[(seed // len(EDITS)) % len(NORMS)]}
    margin 0.01
}}
"""


def run(source: str, tmp: Path, disable: frozenset[str] = frozenset(), backend: str | None = None):
    program = load_program_text(source, tmp, filename=str(tmp / "p.patch"))
    return program, run_program(program, RunOptions(write_files=False, disable_steps=disable,
                                                   backend=backend)).tasks[0]


STEPS_OFF = ["fixed_phase_bound", "lp_bound_tightening", "least_l1_tidy", "one_unknown_per_row", "keep_bracket",
             "lazy_keep"]


@pytest.mark.parametrize("seed", range(9))
def test_every_step_off_gives_the_same_optimum(seed: int, tmp_path: Path) -> None:
    source = random_spec(seed, tmp_path)
    _, full = run(source, tmp_path)
    if full.status == "no patch":
        for step in STEPS_OFF:
            assert run(source, tmp_path, frozenset({step}))[1].status == "no patch"
        return
    if full.status != "patched" or full.gap != 0:
        pytest.skip(f"case {seed}: {full.status}")
    for step in STEPS_OFF:
        if step == "fixed_phase_bound" and "bound linf" not in source:
            continue  # the ReLUs need a per-parameter bound: without `bound linf` only this step derives one
        _, off = run(source, tmp_path, frozenset({step}))
        assert off.status == "patched", (step, off.message)
        assert off.objective == pytest.approx(full.objective, rel=1e-5, abs=1e-7), step


def test_cases_cover_the_steps(tmp_path: Path) -> None:
    """The random cases above exercise the MILP steps (and some of them patch)."""
    names, statuses = set(), set()
    for seed in range(9):
        _, task = run(random_spec(seed, tmp_path), tmp_path)
        names |= {s.name for s in task.steps}
        statuses.add(task.status)
    assert {"encode", "fixed_phase_bound", "least_l1_tidy"} <= names
    assert "patched" in statuses


def test_row_reduction_round_trip_equals_the_plain_encoding(tmp_path: Path) -> None:
    """One point to change, no keep points: the substitution is exact; its lifted answer is a patch on the original
    weights with the plain encoding's optimum, and applying it changes the point as asked."""
    rng = np.random.default_rng(3)
    net = network_from_arrays([rng.normal(size=(4, 3)), rng.normal(size=(3, 4))],
                              [rng.normal(scale=0.3, size=4), rng.normal(scale=0.3, size=3)])
    save_network(net, str(tmp_path / "net.onnx"))
    target = int(np.argsort(net.forward(np.array([[0.5, -1.0, 2.0]]))[0])[-2])  # the runner-up: a real change
    for norm in ("linf", "l1"):
        source = f"""
model net = "net.onnx"
points move = [[0.5, -1, 2]]
patch p on net {{
    edit layer 0 weights
    change move to {target}
    minimize {norm}
    bound {norm} <= 10
}}
"""
        program, task = run(source, tmp_path)
        _, plain = run(source, tmp_path, frozenset({"one_unknown_per_row"}))
        assert "one_unknown_per_row" in [s.name for s in task.steps]
        assert "one_unknown_per_row" not in [s.name for s in plain.steps]
        assert task.status == plain.status == "patched" and task.objective > 1e-3
        assert task.objective == pytest.approx(plain.objective, rel=1e-6)
        assert task.distances[norm] == pytest.approx(plain.distances[norm], rel=1e-6)
        # accepts/apply/invert by hand: the surrogate has one unknown per row, the inverse lifts onto the weights
        ptask = program.tasks[0]
        net = ptask.model.net
        groups = build_groups(net, ptask.goals, ptask.margin)
        problem = PatchProblem(net, ptask, groups, SolveOptions())
        step = RowSubstitution()
        assert step.accepts(problem, HighsBackend.capabilities)
        assert not step.accepts(problem, frozenset({"lp", "milp", "smt"}))  # Z3's: no big-M lowering
        reduced, inverse = step.apply(problem, Budget())
        assert reduced.surrogate and len(reduced.task.edits) == 1
        assert int(np.count_nonzero(reduced.task.edits[0].mask)) <= 4  # one unknown per row (4 rows, 12 weights)


def test_fixed_phase_bound_is_sound_and_its_inverse_offers_the_start(tmp_path: Path) -> None:
    source = random_spec(1, tmp_path)  # layer 0 biases, linf
    program, task = run(source, tmp_path)
    ptask = program.tasks[0]
    net = ptask.model.net
    groups = build_groups(net, ptask.goals, ptask.margin)
    problem = Planner("highs").prepare(net, ptask, groups, SolveOptions())
    if problem.start_value is None:
        pytest.skip("no fixed-phase patch for this case")
    # the derived bound may fix every phase (an LP: no start needed); a MILP gets the checked patch as its start
    assert (problem.options.start is not None) == (problem.enc.query.problem_class == "MILP")
    assert task.objective <= problem.start_value * (1 + 1e-9)  # the optimum is below any genuine patch
    step = FixedPhaseBound(HighsBackend())
    encoded = Planner("highs", frozenset({"fixed_phase_bound"})).prepare(net, ptask, groups, SolveOptions())
    assert encoded.enc.query.problem_class == "MILP" and encoded.start_value is None
    assert step.accepts(encoded, HighsBackend.capabilities)
    assert not step.accepts(encoded, frozenset({"lp", "milp", "smt", "exact"}))  # Z3: no big-M, no bound needed
    reduced, inverse = step.apply(encoded, Budget())
    assert reduced.start_value == pytest.approx(problem.start_value)
    assert inverse.record.summary["warm_start"] == (reduced.enc.query.problem_class == "MILP")
    assert inverse.record.summary["derived"]["linf"] < 3  # below the spec's own bound


def test_bisection_matches_and_survives_an_expired_budget(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Regression: with the deadline gone before the first MILP the bisection read an unbound variable."""
    source = random_spec(0, tmp_path)
    program, task = run(source, tmp_path)
    ptask = program.tasks[0]
    net = ptask.model.net
    groups = build_groups(net, ptask.goals, ptask.margin)
    monkeypatch.setattr(B, "BISECT_MIN_DELTAS", 1)
    problem = PatchProblem(net, ptask, groups, SolveOptions(mip_gap=1e-7))
    step = B.LinfBisection(HighsBackend())
    assert step.accepts(problem, HighsBackend.capabilities)
    expired = Budget(0.0)
    solved, inverse = step.apply(problem, expired)
    assert solved.solution.status == TIMEOUT and solved.enc is None and inverse.record.summary["calls"] == 0
    if task.status == "patched" and task.gap == 0:
        solved, _ = step.apply(problem, Budget.seconds(60))
        assert solved.solution.status == OPTIMAL
        assert solved.solution.objective == pytest.approx(task.objective, rel=1e-5)


def test_tidy_keeps_the_primary_optimum_and_lowers_l1(tmp_path: Path) -> None:
    for seed in range(9):
        source = random_spec(seed, tmp_path)
        if "minimize linf" not in source:
            continue
        _, task = run(source, tmp_path)
        if task.status != "patched" or task.gap != 0:
            continue
        _, raw = run(source, tmp_path, frozenset({"least_l1_tidy"}))
        assert task.distances["linf"] == pytest.approx(raw.distances["linf"], rel=1e-6, abs=1e-9)
        assert task.distances["l1"] <= raw.distances["l1"] * (1 + 1e-6) + 1e-9
        names = {s.name for s in task.steps}
        if not names & {"one_unknown_per_row", "keep_bracket"}:  # a surrogate LP is lifted least-L1 row by row
            assert any(s.name == "least_l1_tidy" and s.summary.get("applied") for s in task.steps)
    assert LeastL1Tidy.name == "least_l1_tidy"


def test_row_setup_needs_one_weight_edit_and_one_norm(tmp_path: Path) -> None:
    program, _ = run(random_spec(1, tmp_path), tmp_path)  # a bias edit
    t = program.tasks[0]
    assert row_setup(t.model.net, t, build_groups(t.model.net, t.goals, t.margin)) is None


def test_report_lists_the_steps_applied(tmp_path: Path) -> None:
    """The JSON task object has a `steps` list (name, figures, sentences) and the verbose text report a `steps` line."""
    from patchlang.report.machine import task_json
    from patchlang.report.text import task_lines

    _, task = run(random_spec(2, tmp_path), tmp_path)
    steps = task_json(task)["steps"]
    assert any(s["name"] == "encode" for s in steps)
    assert all(set(s) == {"name", "summary", "text"} for s in steps)
    assert any(line.startswith("steps") and "encode" in line for line in task_lines(task, verbose=True))
    assert not any(line.startswith("steps") for line in task_lines(task))  # internals: --verbose only
