"""``--output-format github``: GitHub Actions workflow commands, so failures are annotated at the `.patch` line.

    ::error file=specs/fix.patch,line=12,title=patch fix: no patch::patch `fix`: no patch: ...

See https://docs.github.com/actions/reference/workflow-commands-for-github-actions (values are escaped as the
runner expects: ``%`` ``\\r`` ``\\n`` in messages, also ``:`` and ``,`` in properties).
"""

from __future__ import annotations

from ..errors import Diagnostic
from ..tasks.results import RunResult
from .problems import Problem, diagnostic_problems, result_problems, summary_line


def _data(s: str) -> str:
    return s.replace("%", "%25").replace("\r", "%0D").replace("\n", "%0A")


def _prop(s: str) -> str:
    return _data(s).replace(":", "%3A").replace(",", "%2C")


def command(p: Problem) -> str:
    props = [f"file={_prop(p.file)}"] if p.file else []
    for key, value in (("line", p.line), ("col", p.column), ("endLine", p.end_line), ("endColumn", p.end_column)):
        if value:
            props.append(f"{key}={value}")
    props.append(f"title={_prop(p.title)}")
    kind = {"error": "error", "warning": "warning"}.get(p.level, "notice")
    return f"::{kind} {','.join(props)}::{_data(p.message)}"


def github_report(result: RunResult) -> str:
    return "".join(command(p) + "\n" for p in result_problems(result)) + summary_line(result) + "\n"


def github_errors(diags: list[Diagnostic], spec_path: str) -> str:
    return "".join(command(p) + "\n" for p in diagnostic_problems(diags, spec_path))
