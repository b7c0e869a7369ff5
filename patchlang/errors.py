"""Errors and diagnostics shared by every stage.

Every user mistake becomes a :class:`Diagnostic` that points at the `.patch` source (``file:line:col``) and
says what to do; stages collect them and raise one :class:`SpecError` so that the user sees all problems at
once.  Errors that are not tied to a source position (a broken ONNX file given on the command line, a
licence limit) use :class:`PatchlangError` with a ``help`` text.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path


@dataclass(frozen=True)
class Span:
    """Where a construct stands in a source file (1-based line and column)."""

    file: str
    line: int
    column: int
    end_line: int = 0
    end_column: int = 0

    def __str__(self) -> str:
        return f"{self.file}:{self.line}:{self.column}"


NO_SPAN = Span("<none>", 0, 0)


@dataclass
class Diagnostic:
    """One problem found in a spec: a code (PLnnn), a message, where, and how to fix it."""

    code: str
    message: str
    span: Span | None = None
    help: str | None = None
    severity: str = "error"

    def render(self, source_lines: dict[str, list[str]] | None = None) -> str:
        where = f"{self.span}: " if self.span and self.span.line else ""
        out = [f"{where}{self.code} {self.severity}: {self.message}"]
        if self.span and self.span.line:
            lines = (source_lines or {}).get(self.span.file)
            if lines is None:
                try:
                    lines = Path(self.span.file).read_text(encoding="utf-8").splitlines()
                except OSError:
                    lines = None
            if lines is not None and 0 < self.span.line <= len(lines):
                text = lines[self.span.line - 1]
                width = 1
                if self.span.end_line == self.span.line and self.span.end_column > self.span.column:
                    width = self.span.end_column - self.span.column
                out.append(f"  {self.span.line:>4} | {text}")
                out.append("       | " + " " * (self.span.column - 1) + "^" * width)
        if self.help:
            out.append(f"  help: {self.help}")
        return "\n".join(out)


class PatchlangError(Exception):
    """A user-facing error: the CLI prints it without a traceback and exits with ``exit_code``."""

    exit_code = 2

    def __init__(self, message: str, help: str | None = None, span: Span | None = None, code: str = "PL000"):
        super().__init__(message)
        self.message = message
        self.help = help
        self.span = span
        self.code = code

    @property
    def diagnostics(self) -> list[Diagnostic]:
        return [Diagnostic(self.code, self.message, self.span, self.help)]

    def render(self) -> str:
        return "\n".join(d.render() for d in self.diagnostics)


@dataclass
class SpecError(PatchlangError):
    """One or more problems in a spec, all reported together."""

    items: list[Diagnostic] = field(default_factory=list)

    def __post_init__(self) -> None:
        first = self.items[0] if self.items else Diagnostic("PL000", "invalid spec")
        PatchlangError.__init__(self, first.message, first.help, first.span, first.code)

    @property
    def diagnostics(self) -> list[Diagnostic]:
        return list(self.items)


class ModelError(PatchlangError):
    """A network that cannot be imported, evaluated or written (unsupported op, bad shape, unreadable file)."""


class SolverUnavailable(PatchlangError):
    """A backend that is not installed or whose licence does not cover the problem."""


class InternalError(Exception):
    """A bug in patchlang itself (exit code 101)."""
