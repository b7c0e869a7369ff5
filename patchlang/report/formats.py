"""``--output-format text | json | junit | github | sarif``: one report document on stdout.

``render_result`` turns a finished run into the chosen document; ``render_error`` turns a spec or usage error
(exit 2, nothing solved) into the same kind of document, so a CI system reads failures of every kind the same way.
"""

from __future__ import annotations

import json
import os
from typing import TYPE_CHECKING

from .. import __version__
from ..errors import PatchlangError

if TYPE_CHECKING:  # not at run time: the command line's parser imports FORMATS, and tasks.results pulls numpy
    from ..tasks.results import RunResult

FORMATS = ("text", "json", "junit", "github", "sarif")


def render_result(result: RunResult, fmt: str) -> str:
    if fmt == "json":
        from .machine import run_json

        return json.dumps(run_json(result), indent=2) + "\n"
    if fmt == "junit":
        from .machine import junit_xml

        return junit_xml(result)
    if fmt == "github":
        from .github import github_report

        return github_report(result)
    if fmt == "sarif":
        from .sarif import sarif_report

        return sarif_report(result)
    raise ValueError(f"unknown output format {fmt!r}")


def error_json(exc: PatchlangError, spec_path: str) -> dict:
    """The JSON report of a run that stopped at a spec or usage error: no tasks, and the diagnostics."""
    from .machine import FORMAT_VERSION

    return {"format_version": FORMAT_VERSION, "spec": spec_path, "exit_code": exc.exit_code, "seconds": 0.0,
            "inputs": {}, "versions": {"patchlang": __version__}, "tasks": [], "assertions": [], "warnings": [],
            "errors": [{"code": d.code, "severity": d.severity, "message": d.message, "help": d.help,
                        "file": d.span.file if d.span else spec_path, "line": d.span.line if d.span else 0,
                        "column": d.span.column if d.span else 0} for d in exc.diagnostics]}


def render_error(exc: PatchlangError, fmt: str, spec_path: str) -> str:
    diags = exc.diagnostics
    if fmt == "json":
        return json.dumps(error_json(exc, spec_path), indent=2) + "\n"
    if fmt == "junit":
        from xml.etree import ElementTree as ET

        suite = ET.Element("testsuite", name=os.path.basename(spec_path), tests=str(len(diags)), failures="0",
                           errors=str(len(diags)), skipped="0", time="0.000")
        for d in diags:
            where = f"line {d.span.line}: " if d.span and d.span.line else ""
            case = ET.SubElement(suite, "testcase", classname="spec", name=f"{where}{d.code}")
            ET.SubElement(case, "error", type=d.code, message=d.message).text = d.render()
        return ET.tostring(suite, encoding="unicode") + "\n"
    if fmt == "github":
        from .github import github_errors

        return github_errors(diags, spec_path)
    if fmt == "sarif":
        from .sarif import sarif_errors

        return sarif_errors(diags, spec_path, exc.exit_code)
    raise ValueError(f"unknown output format {fmt!r}")
