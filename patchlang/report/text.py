"""The human-readable report: one panel per task, then assertions and a verdict line.

Each task opens with one plain line (what was asked, what was found, proven or not); the details below it speak
the user's words.  How the solver got there (planning steps, query sizes, timings, certification methods) is
shown with ``--verbose``; ``-q`` prints only the verdict line.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from ..tasks.results import (ATTACKED, HOLDS, INCONCLUSIVE, NO_PATCH, NOT_REPAIRED, PATCHED, REPAIRED, UNKNOWN, UNSOUND,
                             VIOLATED, RunResult, TaskResult)
from ..tasks.step_text import plain_note

if TYPE_CHECKING:  # rich is imported where a table or a console is built: `run -q` on a cache hit never needs it
    from rich.console import Console
    from rich.table import Table

_STATUS_STYLE = {"patched": "green", "holds": "green", "repaired": "green", "no patch": "red",
                 "violated": "red", "not repaired": "red", "check failed": "bold red", "inconclusive": "yellow",
                 "unknown": "yellow"}
_NORM_NAME = {"linf": "L∞", "l1": "L1", "l0": "L0"}
# details that only say how the search went: shown with --verbose
_INTERNAL_DETAILS = {"cases", "evaluations", "sub-boxes", "queries", "output32"}
_DETAIL_NAME = {"output64": "output"}
from .experts import experts_headline, experts_lines


def _fmt(v: float | None, digits: int = 6) -> str:
    if v is None:
        return "-"
    return f"{v:.{digits}g}"


def unproven_gap(r: TaskResult) -> str | None:
    """``"gap 0.42"`` (or ``"gap unknown"``) when the task's patch is not proven minimal, else None."""
    if r.status not in (PATCHED, REPAIRED):
        return None
    said = any("not proven minimal" in n for n in r.notes)
    if not said and not (r.gap is not None and r.gap > 0):
        return None
    return f"gap {r.gap:.2g}" if r.gap is not None else "gap unknown"


def _size(r: TaskResult) -> str:
    """The change, in the norm the task minimizes (L∞ 0.383), or the weighted objective."""
    terms = r.minimized or [(1.0, "linf")]
    if len(terms) == 1 and r.distances.get(terms[0][1]) is not None:
        norm = terms[0][1]
        value = r.distances[norm]
        return f"{_NORM_NAME[norm]} {int(value)}" if norm == "l0" else f"{_NORM_NAME[norm]} {value:.3g}"
    return f"objective {_fmt(r.objective, 3)}" if r.objective is not None else ""


def _points(n: int) -> str:
    return f"{n} point" + ("" if n == 1 else "s")


def _goal_counts(r: TaskResult) -> str:
    n = {"change": 0, "keep": 0, "require": 0}
    for c in r.checks:
        if c.group in n:
            n[c.group] += c.n_points
    said = [f"{_points(n['change'])} changed" if n["change"] else "",
            f"{n['keep']} kept" if n["keep"] else "",
            f"`require` met at {_points(n['require'])}" if n["require"] else ""]
    return ", ".join(s for s in said if s)


def headline(r: TaskResult) -> str:
    """The task's first line: what was asked, what was found, proven or not."""
    name = r.name
    experts = experts_headline(r)
    if experts is not None:
        return experts
    if r.status in (PATCHED, REPAIRED):
        gap = unproven_gap(r)
        proof = f"not proven minimal ({gap})" if gap else "proven minimal"
        if r.status == REPAIRED:
            found = "repaired, proven over the property's whole region"
            n = r.details.get("counterexamples")
            proof = (f"not proven minimal ({gap})" if gap
                     else "minimal for the " + (f"{n} " if n else "") + "counterexamples used")
        else:
            found = "patched" + (f": {_goal_counts(r)}" if _goal_counts(r) else "")
        size = _size(r)
        return f"{name}: {found}; " + (f"{size}, " if size else "") + proof
    if r.status == NO_PATCH:
        return f"{name}: no patch exists within the allowed edits and bounds (proven)"
    if r.status == UNSOUND:
        return f"{name}: check failed: the solver's patch did not pass the independent check; nothing was saved"
    if r.status == HOLDS:
        return f"{name}: holds, proven for every input of the property's region(s)"
    if r.status == VIOLATED:
        return f"{name}: violated, a counterexample was found and confirmed"
    if r.status == NOT_REPAIRED:
        return f"{name}: not repaired"
    if r.kind == "attack" and r.status == ATTACKED:
        m = r.details.get("metrics", {})
        return (f"{name}: attacked {m.get('attacked', 0)} input(s), adversarial inputs found and confirmed for "
                f"{m.get('successes', 0)}")
    if r.status in (INCONCLUSIVE, UNKNOWN):
        return f"{name}: {r.status}: not decided" + (" (time limit)" if "time limit" in r.message else "")
    return f"{name}: {r.status}"


def task_lines(r: TaskResult, verbose: bool = False) -> list[str]:
    lines = [headline(r)]
    if r.problem_class:
        lines.append(f"class     {r.problem_class}: {r.class_reason}")
    if r.backend:
        q = r.query_size
        size = (f"{q.get('variables', 0)} vars, {q.get('rows', 0)} rows, {q.get('nonzeros', 0)} nonzeros"
                + (f", {q['binaries']} binaries" if q.get("binaries") else "")) if q else ""
        lines.append(f"backend   {r.backend} {r.backend_version}".rstrip() + (f"  ({size})" if size else ""))
    if r.objective is not None:
        if r.gap == 0:
            gap = "proven optimal"
        else:
            gap = f"not proven minimal: gap {r.gap:.3g}" if r.gap is not None else "gap unknown"
        lines.append(f"objective {_fmt(r.objective)}  ({gap})")
    if r.distances:
        d = r.distances
        lines.append(f"change    linf {_fmt(d.get('linf'))}   l1 {_fmt(d.get('l1'))}   l0 {int(d.get('l0', 0))}")
    for k, v in r.details.items():
        if isinstance(v, (int, float, str)) and (verbose or k not in _INTERNAL_DETAILS):
            label = k if verbose else _DETAIL_NAME.get(k, k)
            lines.append(f"{label:<9} {v}")
    lines.extend(experts_lines(r))
    for f in r.files:
        lines.append(f"wrote     {f}")
    secs = r.seconds
    if secs and verbose:
        lines.append("time      " + ", ".join(f"{k} {v:.3f}s" for k, v in secs.items()))
    elif secs.get("total"):
        lines.append(f"time      {secs['total']:.2f}s")
    if r.steps and verbose:  # what each step did is said in the notes below
        lines.append("steps     " + " -> ".join(dict.fromkeys(s.name for s in r.steps)))
    notes = r.notes if verbose else [plain_note(n) for n in r.notes]
    for n in dict.fromkeys(n for n in notes if n):
        lines.append(f"note      {n}")
    if r.message:
        lines.append(f"          {r.message}")
    for c in r.core:
        lines.append(f"conflict  {c}")
    return lines


def _slack(value: float | None, allowed: float | None, ok: bool, verbose: bool, strict32: bool = False) -> str:
    """A smallest slack that cannot read as a failure: a negative one inside the check's allowance says so."""
    if value is None:
        return "-"
    rel = ">" if strict32 else ">="
    if value >= 0:
        return _fmt(value, 4)
    if allowed is None:
        return _fmt(value, 4)
    if not ok:  # the failing row: the number and what the check needed
        return f"{_fmt(value, 4)} (needs {rel} {_fmt(-allowed, 2)})"
    if verbose:  # reads as the check that passed: slack >= allowed
        return f"{_fmt(value, 4)} {rel} {_fmt(-allowed, 2)}"
    return "within tolerance"


def checks_table(r: TaskResult, verbose: bool = False) -> Table | None:
    from rich.table import Table

    if not r.checks:
        return None
    strict = any(c.strict for c in r.checks)
    t = Table(show_edge=False, pad_edge=False, box=None)
    cols = ["line", "constraint", "points", "float64 ok", "float32 ok", "min slack f64", "min slack f32"]
    for col in cols + (["margin"] if strict else []):
        t.add_column(col, justify="right" if col not in ("constraint",) else "left")
    for c in r.checks:
        ok64 = c.satisfied64 == c.n_points
        ok32 = c.satisfied32 is None or c.satisfied32 == c.n_points
        row = [str(c.line), c.text, str(c.n_points), f"{c.satisfied64}/{c.n_points}",
               "-" if c.satisfied32 is None else f"{c.satisfied32}/{c.n_points}",
               _slack(c.min_slack64, c.tolerance64 or None, ok64, verbose),
               _slack(c.min_slack32, c.allowance32, ok32, verbose, strict32=c.strict and c.requested_margin > 0)]
        if strict:
            row.append(_fmt(c.requested_margin, 3) if c.strict else "")
        t.add_row(*row)
    return t


ATTACK_ROWS = 20  # per-input rows of an attack shown without --verbose (all are in --json and the saved file)


def attack_table(r: TaskResult, verbose: bool = False) -> Table | None:
    """An attack's per-input results: label, new label, changed inputs and sizes, proven or not, time."""
    from rich.table import Table

    rows = r.details.get("inputs") if r.kind == "attack" else None
    if not rows:
        return None
    t = Table(show_edge=False, pad_edge=False, box=None)
    for col in ("input", "label", "new", "result", "method", "l0", "l2", "linf", "minimal", "time"):
        t.add_column(col, justify="left" if col in ("input", "result", "method") else "right")
    shown = rows if verbose else rows[:ATTACK_ROWS]
    for row in shown:
        found = row["status"] == "found"
        lower = row.get("lower_bound")
        if row["proven_min"]:
            minimal = "proven" if found else "-"
        elif lower is not None and found:
            minimal = f">= {lower:g}"
        else:
            minimal = ""
        t.add_row(str(row["index"]), str(row["label"]), "" if row["new_label"] is None else str(row["new_label"]),
                  row["status"] + (f" ({row['note']})" if row.get("note") and not found else ""), row["method"],
                  "" if row["l0"] is None else str(row["l0"]), "" if row["l2"] is None else _fmt(row["l2"], 3),
                  "" if row["linf"] is None else _fmt(row["linf"], 3), minimal, f"{row['seconds']:.2f}s")
    if len(rows) > len(shown):
        t.add_row(f"... {len(rows) - len(shown)} more", "", "", "(--verbose, --json or the saved file)", "", "",
                  "", "", "", "")
    return t


def verdict_text(result: RunResult) -> str:
    """The verdict line's words: never "all good" for a patch that is not proven minimal."""
    code = result.exit_code
    verdict = {0: "all good", 1: "a check failed", 3: "inconclusive"}.get(code, str(code))
    unproven = [(r.name, gap) for r in result.tasks if (gap := unproven_gap(r))]
    if unproven and code == 0:
        verdict = "all checks pass; " + "; ".join(f"{name} patched, not proven minimal ({gap})"
                                                   for name, gap in unproven)
    elif unproven:
        verdict += "; " + "; ".join(f"{name} not proven minimal ({gap})" for name, gap in unproven)
    if result.outcome != "finished":
        verdict += f" ({result.outcome})"
    return f"{verdict}  ({len(result.tasks)} task(s), {result.seconds:.2f}s, exit {code})"


def print_report(result: RunResult, console: Console | None = None, verbose: bool = False) -> None:
    if console is None:
        from rich.console import Console

        console = Console()
    for w in result.warnings:
        console.print(f"[yellow]{w}[/yellow]")
    for r in result.tasks:
        style = _STATUS_STYLE.get(r.status, "white")
        title = r.name if r.name.startswith(f"{r.kind} ") else f"{r.kind} {r.name}"  # `verify ...` names itself
        console.rule(f"[bold]{title}[/bold] (line {r.line}): [{style}]{r.status}[/{style}]",
                     align="left")
        for line in task_lines(r, verbose):
            console.print(line, highlight=False, markup=False)
        table = checks_table(r, verbose)
        if table is not None:
            console.print(table)
        table = attack_table(r, verbose)
        if table is not None:
            console.print(table)
    if result.assertions:
        console.rule("[bold]assertions[/bold]", align="left")
        for a in result.assertions:
            mark = {True: "[green]ok  [/green]", False: "[red]FAIL[/red]", None: "[yellow]??  [/yellow]"}[a.holds]
            value = f"  (value {_fmt(a.value)})" if a.value is not None else ""
            extra = f"  {a.message}" if a.message and a.holds is not True else ""
            console.print(f"{mark} line {a.line}: {a.text}{value}{extra}", highlight=False)
    for name, kind, why in result.not_run:
        console.print(f"[yellow]not run[/yellow]  {kind} {name}: {why}", highlight=False)
    style = {0: "green", 1: "red", 3: "yellow"}.get(result.exit_code, "white")
    if result.exit_code == 0 and any(unproven_gap(r) for r in result.tasks):
        style = "yellow"
    console.rule(f"[{style}]{verdict_text(result)}[/{style}]", align="left")
