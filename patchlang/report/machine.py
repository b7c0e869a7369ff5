"""Machine-readable reports: JSON (``format_version`` 1) and JUnit XML for CI systems."""

from __future__ import annotations

import json
import math
import os
from typing import Any

from ..tasks.results import RunResult, TaskResult
from ..tasks.step_text import step_sentences

FORMAT_VERSION = 1


def _clean(v: Any) -> Any:
    if isinstance(v, float):
        return None if math.isnan(v) else (("inf" if v > 0 else "-inf") if math.isinf(v) else v)
    if isinstance(v, dict):
        return {k: _clean(x) for k, x in v.items()}
    if isinstance(v, (list, tuple)):
        return [_clean(x) for x in v]
    if hasattr(v, "item"):
        return _clean(v.item())
    return v


def task_json(r: TaskResult) -> dict[str, Any]:
    return _clean({
        "name": r.name, "kind": r.kind, "status": r.status, "line": r.line, "class": r.problem_class,
        "class_reason": r.class_reason, "backend": r.backend, "backend_version": r.backend_version,
        "query": r.query_size, "objective": r.objective, "bound": r.bound, "gap": r.gap,
        "distances": r.distances, "seconds": r.seconds, "files": r.files, "message": r.message, "notes": r.notes,
        "conflict": r.core, "steps": steps_json(r), "details": {k: v for k, v in r.details.items() if not hasattr(v, "shape")},
        "checks": [{"text": c.text, "line": c.line, "points": c.n_points, "satisfied_float64": c.satisfied64,
                    "satisfied_float32": c.satisfied32, "min_slack_float64": c.min_slack64,
                    "min_slack_float32": c.min_slack32, "margin": c.requested_margin, "strict": c.strict,
                    "tolerance_float64": c.tolerance64, "allowance_float32": c.allowance32} for c in r.checks],
    })


def steps_json(r: TaskResult) -> list[dict[str, Any]]:
    """The planning steps applied, in order: name, figures, and the report's sentences for them."""
    return [{"name": s.name, "summary": {k: v for k, v in s.summary.items() if not hasattr(v, "shape")},
             "text": step_sentences(s)} for s in r.steps]


def run_json(result: RunResult) -> dict[str, Any]:
    return {
        "format_version": FORMAT_VERSION,
        "spec": result.spec_path,
        "exit_code": result.exit_code,
        "outcome": result.outcome,
        "errors": result.errors,
        "not_run": [{"name": n, "kind": k, "why": why} for n, k, why in result.not_run],
        "seconds": result.seconds,
        "inputs": {p: {"sha256": h} for p, h in sorted(result.input_files.items())},
        "versions": result.versions,
        "tasks": [task_json(t) for t in result.tasks],
        "assertions": [_clean({"text": a.text, "line": a.line, "holds": a.holds, "value": a.value,
                               "message": a.message}) for a in result.assertions],
        "warnings": result.warnings,
    }


def write_atomic(path: str, text: str, what: str = "a report") -> None:
    """Through the run's output guard (never onto an input), atomic, with normal file permissions and a
    user-facing error (not a traceback) when unwritable."""
    from ..guard import write_output

    write_output(path, text.encode("utf-8"), what)


def write_json(result: RunResult, path: str) -> None:
    write_atomic(path, json.dumps(run_json(result), indent=2, sort_keys=False) + "\n", "the JSON report")


def write_junit(result: RunResult, path: str) -> None:
    write_atomic(path, junit_xml(result), "the JUnit report")


def junit_xml(result: RunResult) -> str:
    from xml.etree import ElementTree as ET  # here: a cache hit without a JUnit report does not pay for it

    suite = ET.Element("testsuite", name=os.path.basename(result.spec_path), tests="0", failures="0", errors="0",
                       skipped="0", time=f"{result.seconds:.3f}")
    counts = {"tests": 0, "failures": 0, "errors": 0, "skipped": 0}
    for r in result.tasks:
        case = ET.SubElement(suite, "testcase", classname=f"{r.kind}", name=r.name,
                             time=f"{r.seconds.get('total', 0.0):.3f}")
        counts["tests"] += 1
        if r.failed:
            counts["failures"] += 1
            ET.SubElement(case, "failure", message=f"{r.status}: {r.message}").text = "\n".join(r.notes + r.core)
        elif r.inconclusive:
            counts["skipped"] += 1
            ET.SubElement(case, "skipped", message=f"{r.status}: {r.message}")
    for name, kind, why in result.not_run:
        case = ET.SubElement(suite, "testcase", classname=kind, name=name, time="0.000")
        counts["tests"] += 1
        counts["skipped"] += 1
        ET.SubElement(case, "skipped", message=f"not run: {why}")
    if result.outcome != "finished":
        case = ET.SubElement(suite, "testcase", classname="run", name=result.outcome, time="0.000")
        counts["tests"] += 1
        counts["errors"] += 1
        ET.SubElement(case, "error", message=result.outcome).text = "\n".join(result.errors)
    for a in result.assertions:
        case = ET.SubElement(suite, "testcase", classname="assert", name=f"line {a.line}: {a.text}")
        counts["tests"] += 1
        if a.holds is False:
            counts["failures"] += 1
            ET.SubElement(case, "failure", message=f"value {a.value}: {a.message}")
        elif a.holds is None:
            counts["skipped"] += 1
            ET.SubElement(case, "skipped", message=a.message)
    for k, v in counts.items():
        suite.set(k, str(v))
    return ET.tostring(suite, encoding="unicode") + "\n"
