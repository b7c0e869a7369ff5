"""What went wrong in a run, as located problems: the common ground of the GitHub and SARIF outputs.

A problem is a rule id (``PLnnn`` for spec diagnostics, ``patchlang/...`` for task outcomes), a level
(``error`` / ``warning`` / ``note``), the `.patch` file and line, a short title and a message.  Tasks and
assertions that hold are not problems; neither is a "no patch" that ``assert not exists(...)`` expects.
"""

from __future__ import annotations

import os
import re
from dataclasses import dataclass

from ..errors import Diagnostic
from ..tasks.results import NO_PATCH, NOT_REPAIRED, UNSOUND, VIOLATED, RunResult

# task outcomes -> (rule id, short description)
OUTCOME_RULES = {
    NO_PATCH: ("patchlang/no-patch", "no patch exists within the allowed edits and bounds"),
    VIOLATED: ("patchlang/property-violated", "a property is violated (a counterexample was found and confirmed)"),
    NOT_REPAIRED: ("patchlang/not-repaired", "a repair did not reach a network proven to satisfy the property"),
    UNSOUND: ("patchlang/check-failed", "a solver's answer failed the independent float64 / float32 check"),
    "inconclusive": ("patchlang/inconclusive", "a task could not be decided (time limit or unknown answer)"),
    "assertion-failed": ("patchlang/assertion-failed", "an assertion of the spec is false"),
    "assertion-undecided": ("patchlang/assertion-undecided", "an assertion could not be decided (its task was "
                                                             "inconclusive)"),
}


@dataclass
class Problem:
    rule: str
    level: str  # error | warning | note
    file: str
    line: int
    title: str
    message: str
    column: int = 0
    end_line: int = 0
    end_column: int = 0


def display_path(path: str) -> str:
    """The path relative to the current folder when it lies below it (CI annotations want repository paths)."""
    if not path or path.startswith("<"):
        return path
    rel = os.path.relpath(path)
    return (path if rel.startswith("..") else rel).replace(os.sep, "/")


def diagnostic_problems(diags: list[Diagnostic], spec_path: str) -> list[Problem]:
    out = []
    for d in diags:
        span = d.span if d.span is not None and d.span.line else None
        message = d.message + (f"\nhelp: {d.help}" if d.help else "")
        out.append(Problem(d.code, "warning" if d.severity == "warning" else "error",
                           display_path(span.file if span else spec_path), span.line if span else 0,
                           f"{d.code} {d.severity}", message, span.column if span else 0,
                           span.end_line if span else 0, span.end_column if span else 0))
    return out


_RENDERED = re.compile(r"^(?P<file>.*?):(?P<line>\d+):(?P<col>\d+): (?P<code>PL\d{3}) (?P<sev>\w+): (?P<msg>.*)$")


def result_problems(result: RunResult) -> list[Problem]:
    spec = display_path(result.spec_path)
    out: list[Problem] = []
    for w in result.warnings:  # rendered diagnostics: "file:line:col: PLnnn warning: message" + source lines
        first = w.splitlines()[0] if w else ""
        m = _RENDERED.match(first)
        if m:
            out.append(Problem(m["code"], "warning", display_path(m["file"]), int(m["line"]),
                               f"{m['code']} {m['sev']}", m["msg"], int(m["col"])))
    covered = {a.covers_task for a in result.assertions if a.covers_task}
    for r in result.tasks:
        if r.failed and (r.name not in covered or r.status == UNSOUND):
            rule, level = OUTCOME_RULES[r.status][0], "error"
        elif r.inconclusive:
            rule, level = OUTCOME_RULES["inconclusive"][0], "warning"
        else:
            continue
        label = f"`{r.name}`" if r.name.startswith(r.kind + " ") else f"{r.kind} `{r.name}`"
        message = f"{label}: {r.status}" + (f": {r.message}" if r.message else "")
        message += "".join(f"\nconflict: {c}" for c in r.core)
        out.append(Problem(rule, level, spec, r.line, f"{label.replace('`', '')}: {r.status}", message))
        for c in r.checks if r.status == UNSOUND else ():
            if not c.ok:
                f32 = f", float32 {c.satisfied32}/{c.n_points}" if c.satisfied32 is not None else ""
                out.append(Problem(rule, "error", spec, c.line, f"check failed: {c.text}",
                                   f"`{c.text}` (task `{r.name}`) does not hold on the patched network: float64 "
                                   f"{c.satisfied64}/{c.n_points}{f32} points satisfy it"))
    for a in result.assertions:
        if a.holds is False:
            key, level = "assertion-failed", "error"
        elif a.holds is None:
            key, level = "assertion-undecided", "warning"
        else:
            continue
        value = f" (value {a.value:.6g})" if isinstance(a.value, (int, float)) else ""
        out.append(Problem(OUTCOME_RULES[key][0], level, spec, a.line, f"{key.replace('-', ' ')}: {a.text}",
                           f"{a.text}{value}" + (f": {a.message}" if a.message else "")))
    return out


def summary_line(result: RunResult) -> str:
    n = len(result.tasks)
    ok = sum(r.succeeded for r in result.tasks)
    failed = sum(r.failed for r in result.tasks)
    undecided = sum(r.inconclusive for r in result.tasks)
    false = sum(a.holds is False for a in result.assertions)
    return (f"patchlang: {display_path(result.spec_path)}: {n} task(s) ({ok} ok, {failed} failed, {undecided} "
            f"inconclusive), {len(result.assertions)} assertion(s) ({false} false); exit {result.exit_code}")
