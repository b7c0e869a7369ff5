"""The text report a newcomer reads (issue 16): a plain first line per task, slacks that cannot look like
failures, the margin only where it applies, jargon under --verbose, no "all good" for an unproven optimum, -q, and
the small fixes (repair's bound note, --backend in the Gurobi licence error, `check`'s aligned columns)."""

from __future__ import annotations

import io
import re
from pathlib import Path

import pytest
from rich.console import Console

from patchlang.errors import SolverUnavailable
from patchlang.report.text import checks_table, headline, print_report, task_lines, verdict_text
from patchlang.tasks.results import PATCHED, GoalCheck, RunResult, TaskResult
from patchlang.tasks.step_text import plain_note

from test_cli import EXAMPLES, QUICKSTART, TOY_HEADER, copy_example, run_cli, write_spec


def _task(gap: float = 0.0, notes: list[str] | None = None) -> TaskResult:
    checks = [GoalCheck("change wrong to label", 11, 44, 44, 44, -7.66e-15, -1.622e-06, 0.001, strict=True,
                        tolerance64=1.4e-5, allowance32=0.001, group="change"),
              GoalCheck("keep good", 12, 193, 193, 193, -1.8e-14, -2.4e-06, 0.001, strict=True,
                        tolerance64=1.4e-5, allowance32=0.001, group="keep"),
              GoalCheck("require p", 13, 5, 5, 5, 0.5, 0.5, 0.001, strict=False, tolerance64=1e-6,
                        allowance32=0.001, group="require")]
    return TaskResult("fix_digits", "patch", PATCHED, line=9, objective=0.382552, gap=gap,
                      distances={"linf": 0.382552, "l1": 97.7, "l0": 277}, checks=checks, minimized=[(1.0, "linf")],
                      notes=notes or [], backend="highs", backend_version="1.16.0",
                      query_size={"variables": 1131, "rows": 2180, "nonzeros": 27650},
                      seconds={"build": 0.1, "solve": 1.0, "total": 1.2})


def _render(result: RunResult, verbose: bool = False) -> str:
    buf = io.StringIO()
    print_report(result, Console(file=buf, width=200, color_system=None), verbose=verbose)
    return buf.getvalue()


def _run(*tasks: TaskResult) -> RunResult:
    return RunResult("spec.patch", list(tasks), [], {}, {}, seconds=1.0)


def test_first_line_says_what_was_asked_found_and_proven() -> None:
    assert headline(_task()) == ("fix_digits: patched: 44 points changed, 193 kept, `require` met at 5 points; "
                                 "L∞ 0.383, proven minimal")
    assert headline(_task(0.42, ["not proven minimal: gap 0.42"])).endswith("L∞ 0.383, not proven minimal (gap 0.42)")
    assert task_lines(_task())[0] == headline(_task())


def test_unproven_optimum_never_ends_in_all_good() -> None:
    unproven = _run(_task(0.42, ["not proven minimal: gap 0.42"]))
    assert unproven.exit_code == 0  # nothing the spec asserts failed
    line = verdict_text(unproven)
    assert "all good" not in line and "fix_digits patched, not proven minimal (gap 0.42)" in line
    assert "all good" not in _render(unproven)
    assert verdict_text(_run(_task())).startswith("all good")


def test_negative_slacks_inside_the_tolerance_never_stand_bare_next_to_ok() -> None:
    out = _render(_run(_task()))
    rows = [line for line in out.splitlines() if "44/44" in line or "193/193" in line]
    assert rows and all("within tolerance" in r and not re.search(r"\s-\d", r) for r in rows)
    verbose = _render(_run(_task()), verbose=True)
    assert "-1.622e-06 > -0.001" in verbose and "-7.66e-15 >= -1.4e-05" in verbose
    failing = _task()
    failing.checks[0].satisfied32 = 43
    failing.checks[0].min_slack32 = -0.0012
    assert "-0.0012 (needs > -0.001)" in _render(_run(failing))  # a failing row shows the number and the rule


def test_margin_only_on_strict_rows() -> None:
    t = checks_table(_task())
    margins = list(t.columns[-1].cells)
    assert t.columns[-1].header == "margin" and margins == ["0.001", "0.001", ""]
    only_non_strict = _task()
    only_non_strict.checks = only_non_strict.checks[2:]
    assert "margin" not in [c.header for c in checks_table(only_non_strict).columns]


def test_jargon_only_with_verbose() -> None:
    notes = ["bound linf <= 0.0478471 derived from a fixed-phase LP patch with objective 0.0477993 (2 LP round(s)); "
             "sound: every optimal patch lies within it", "MILP warm-started from the fixed-phase LP patch (objective 1)",
             "conflict found by Z3 unsat core + deletion filter (3 solver calls); each statement listed is needed",
             "LP bound tightening of 3 ReLUs behind other ReLUs: 1 phase(s) fixed, the other big-Ms smaller"]
    r = _task(notes=notes)
    r.details = {"queries": 0, "sub-boxes": 3, "output64": "[1, 2]", "output32": "[1, 2]", "iterations": 2}
    plain = "\n".join(task_lines(r))
    for word in ("fixed-phase", "big-M", "deletion filter", "unsat core", "queries", "output64", "output32",
                 "sub-boxes", "build 0.1"):
        assert word not in plain, word
    assert "each statement listed is needed" in plain and "output    [1, 2]" in plain and "iterations" in plain
    verbose = "\n".join(task_lines(r, verbose=True))
    for word in ("fixed-phase", "big-M", "deletion filter", "queries", "output64", "1131 vars", "build 0.100s"):
        assert word in verbose, word
    assert plain_note("something new the report has not heard of") == "something new the report has not heard of"


def test_quiet_prints_only_the_verdict_line(tmp_path: Path, capsys) -> None:
    spec = copy_example(tmp_path, QUICKSTART)
    code, out, _ = run_cli(capsys, "run", spec, "-q", "--plots", tmp_path / "plots")
    assert code == 0 and out.strip().splitlines() == [verdict_text_line(out)]
    assert out.startswith("all good  (1 task(s), ") and out.strip().endswith("exit 0)")


def verdict_text_line(out: str) -> str:
    return out.strip().splitlines()[-1]


def test_repair_bound_note_names_disjunctions_only_when_there_are_some(tmp_path: Path, capsys) -> None:
    spec = copy_example(tmp_path, EXAMPLES / "toy" / "regions.patch")  # `strong`: y[1] >= 2, no disjunction
    _, out, _ = run_cli(capsys, "run", spec, "--no-save")
    note = next(line for line in out.splitlines() if "each parameter change bounded by" in line)
    assert "disjunction" not in note and "no `bound linf` given" in note
    from patchlang.tasks.repair import _bounded_norms
    from patchlang.api import load_program

    task = next(t for t in load_program(str(spec)).tasks if t.kind == "repair")
    result = TaskResult("r", "repair", "unknown")
    _bounded_norms(task.model.net, task.patch, result, disjunctive=True)
    assert "the property's disjunctions need a finite bound" in result.notes[-1]


def test_gurobi_licence_error_names_the_flag_it_came_from(tmp_path: Path, capsys, monkeypatch) -> None:
    from patchlang.solvers import registry

    def refuse(name, query, problem_class):
        if name == "gurobi":
            raise SolverUnavailable("gurobi refused the problem: over the size-limited licence",
                                    help="remove `using gurobi` to let patchlang use highs")
        return original(name, query, problem_class)

    original = registry.choose_backend
    monkeypatch.setattr(registry, "choose_backend", refuse)
    import patchlang.plan.chain as chain_module  # the planner imports the name: patch it where it is used

    if hasattr(chain_module, "choose_backend"):
        monkeypatch.setattr(chain_module, "choose_backend", refuse)
    spec = write_spec(tmp_path, TOY_HEADER + "patch fix on toy {\n  edit layer -1 weights\n  change p to 0\n}\n")
    code, out, err = run_cli(capsys, "run", spec, "--backend", "gurobi", "--no-save")
    assert code == 2, out + err
    assert "drop `--backend gurobi`" in out + err and "remove `using gurobi`" not in out + err


def test_check_columns_are_aligned(tmp_path: Path, capsys) -> None:
    code, out, _ = run_cli(capsys, "check", EXAMPLES / "verify" / "verify.patch")
    assert code == 0
    rows = [line for line in out.splitlines() if line.startswith("  line ")]
    assert len(rows) == 3 and len({line.index("MILP:") for line in rows}) == 1
    assert not any("verify verify" in line for line in rows)


def test_the_float64_tolerance_is_relative_and_said_so() -> None:
    """The check accepts slack >= -1e-6 * (1 + max |y|): 1e-3 for outputs near 1000, and the docs say relative."""
    import numpy as np

    from patchlang.compile.goals import GoalGroup, PointGoal, linear_atom
    from patchlang.tasks.checking import check_group

    group = GoalGroup("require p", "require", None, [PointGoal("p[0]", np.zeros(1),
                                                              [[linear_atom(np.array([1.0, -1.0]), ">=", 0.0, 0.0)]])])
    y = np.array([[1000.0 - 5e-4, 1000.0]])  # y0 >= y1 misses by 5e-4: inside 1e-6 * 1001, outside a fixed 1e-6
    chk = check_group(group, y, y.astype(np.float32), 0.001, 1, strict=False)
    assert chk.ok and chk.tolerance64 == pytest.approx(1e-6 * 1001)
    assert "-0.0005 >= -0.001" in _render(_run(_task_with(chk)), verbose=True)
    docs = (Path(__file__).resolve().parents[1] / "docs").glob("*.md")
    for text in (p.read_text(encoding="utf-8") for p in docs):
        assert "the 1e-6 tolerance" not in text
    language = (Path(__file__).resolve().parents[1] / "docs" / "language.md").read_text(encoding="utf-8")
    assert "the tolerance is\n   relative to the outputs' size" in language


def _task_with(chk: GoalCheck) -> TaskResult:
    r = _task()
    r.checks = [chk]
    return r
