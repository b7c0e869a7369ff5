"""The human-readable report: one panel per task, then assertions and a verdict line."""

from __future__ import annotations

from rich.console import Console
from rich.table import Table

from ..tasks.results import RunResult, TaskResult

_STATUS_STYLE = {"patched": "green", "holds": "green", "repaired": "green", "no patch": "red",
                 "violated": "red", "not repaired": "red", "check failed": "bold red", "inconclusive": "yellow",
                 "unknown": "yellow"}


def _fmt(v: float | None, digits: int = 6) -> str:
    if v is None:
        return "-"
    return f"{v:.{digits}g}"


def task_lines(r: TaskResult) -> list[str]:
    lines = []
    if r.problem_class:
        lines.append(f"class     {r.problem_class}: {r.class_reason}")
    if r.backend:
        q = r.query_size
        size = (f"{q.get('variables', 0)} vars, {q.get('rows', 0)} rows, {q.get('nonzeros', 0)} nonzeros"
                + (f", {q['binaries']} binaries" if q.get("binaries") else "")) if q else ""
        lines.append(f"backend   {r.backend} {r.backend_version}" + (f"  ({size})" if size else ""))
    if r.objective is not None:
        gap = "proven optimal" if r.gap == 0 else (f"gap {r.gap:.3g}" if r.gap is not None else "gap unknown")
        lines.append(f"objective {_fmt(r.objective)}  ({gap})")
    if r.distances:
        d = r.distances
        lines.append(f"change    linf {_fmt(d.get('linf'))}   l1 {_fmt(d.get('l1'))}   l0 {int(d.get('l0', 0))}")
    for k, v in r.details.items():
        if isinstance(v, (int, float, str)):
            lines.append(f"{k:<9} {v}")
    for f in r.files:
        lines.append(f"wrote     {f}")
    secs = r.seconds
    if secs:
        lines.append("time      " + ", ".join(f"{k} {v:.3f}s" for k, v in secs.items()))
    if r.steps:  # what each step did is said in the notes below
        lines.append("steps     " + " -> ".join(dict.fromkeys(s.name for s in r.steps)))
    for n in r.notes:
        lines.append(f"note      {n}")
    if r.message:
        lines.append(f"          {r.message}")
    for c in r.core:
        lines.append(f"conflict  {c}")
    return lines


def checks_table(r: TaskResult) -> Table | None:
    if not r.checks:
        return None
    t = Table(show_edge=False, pad_edge=False, box=None)
    for col in ("line", "constraint", "points", "float64 ok", "float32 ok", "min slack f64", "min slack f32",
                "margin"):
        t.add_column(col, justify="right" if col not in ("constraint",) else "left")
    for c in r.checks:
        t.add_row(str(c.line), c.text, str(c.n_points), f"{c.satisfied64}/{c.n_points}",
                  "-" if c.satisfied32 is None else f"{c.satisfied32}/{c.n_points}", _fmt(c.min_slack64, 4),
                  _fmt(c.min_slack32, 4), _fmt(c.requested_margin, 3))
    return t


def print_report(result: RunResult, console: Console | None = None) -> None:
    console = console or Console()
    for w in result.warnings:
        console.print(f"[yellow]{w}[/yellow]")
    for r in result.tasks:
        style = _STATUS_STYLE.get(r.status, "white")
        title = r.name if r.name.startswith(f"{r.kind} ") else f"{r.kind} {r.name}"  # `verify ...` names itself
        console.rule(f"[bold]{title}[/bold] (line {r.line}): [{style}]{r.status}[/{style}]",
                     align="left")
        for line in task_lines(r):
            console.print(line, highlight=False, markup=False)
        table = checks_table(r)
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
    code = result.exit_code
    verdict = {0: "[green]all good[/green]", 1: "[red]a check failed[/red]", 3: "[yellow]inconclusive[/yellow]"}
    if result.outcome != "finished":
        verdict = {k: f"{v} ({result.outcome})" for k, v in verdict.items()}
    console.rule(f"{verdict.get(code, str(code))}  ({len(result.tasks)} task(s), {result.seconds:.2f}s, exit {code})",
                 align="left")
