"""The documentation cannot rot: every ```patch block parses, every error code and keyword is documented."""

from __future__ import annotations

import re

import pytest

from patchlang.lang.parser import grammar_path, parse_text

from docs_claims import DOCS, REPO, claims, uses_example_models

BLOCKS = [(b.doc, b.line, b.code) for doc in DOCS for b in claims(doc)[1]]


def test_there_are_examples_to_check() -> None:
    names = {name for name, _, _ in BLOCKS}
    assert {"language.md", "tutorial.md", "README.md"} <= names, names
    assert len(BLOCKS) >= 20


@pytest.mark.parametrize("doc,line,code", BLOCKS, ids=[f"{d}:{n}" for d, n, _ in BLOCKS])
def test_patch_blocks_parse(doc: str, line: int, code: str) -> None:
    spec = parse_text(code, f"{doc}:{line}")
    assert spec.statements, "an example without statements"


def test_every_error_code_is_documented() -> None:
    used = set()
    for source in (REPO / "patchlang").rglob("*.py"):
        used |= set(re.findall(r"\bPL\d{3}\b", source.read_text(encoding="utf-8")))
    reference = (REPO / "docs" / "language.md").read_text(encoding="utf-8")
    documented = set(re.findall(r"^\| (PL\d{3}) \|", reference, re.M))
    assert used, "no error codes found: did the package move?"
    assert not used - documented, f"error codes missing from the table in docs/language.md: {sorted(used - documented)}"


def test_every_keyword_is_documented() -> None:
    grammar = grammar_path().read_text(encoding="utf-8")
    keywords = {k for k in re.findall(r'"([a-z][a-z0-9-]*)"', grammar)}
    reference = (REPO / "docs" / "language.md").read_text(encoding="utf-8")
    missing = sorted(k for k in keywords if not re.search(rf"(?<![\w-]){re.escape(k)}(?![\w-])", reference))
    assert not missing, f"grammar keywords not explained in docs/language.md: {missing}"


TOY_DIR = REPO / "examples" / "toy"


CHECKABLE = [b for b in BLOCKS if uses_example_models(b[2])]


def test_enough_examples_are_checked() -> None:
    assert len(CHECKABLE) >= 10, [f"{d}:{n}" for d, n, _ in CHECKABLE]


@pytest.mark.parametrize("doc,line,code", CHECKABLE, ids=[f"{d}:{n}" for d, n, _ in CHECKABLE])
def test_examples_on_the_example_models_pass_check(doc: str, line: int, code: str) -> None:
    """Beyond syntax: names, shapes, layers and problem classes of the examples that use the shipped models."""
    from patchlang.api import load_program_text

    load_program_text(code, TOY_DIR, f"{doc}:{line}")


def test_every_command_line_option_is_documented() -> None:
    """Each subcommand and option of ``patchlang`` appears in the reference's command-line section."""
    import argparse

    from patchlang.cli import _parser

    reference = (REPO / "docs" / "language.md").read_text(encoding="utf-8")
    section = reference[reference.index("## Command line and exit codes"):]
    section = section[:section.index("\n## ", 1)]
    parser = _parser()
    subparsers = next(a for a in parser._actions if isinstance(a, argparse._SubParsersAction))
    missing = []
    for name, sub in subparsers.choices.items():
        if f"patchlang {name}" not in section:
            missing.append(f"patchlang {name}")
        for action in sub._actions:
            names = [o for o in action.option_strings if o not in ("-h", "--help")]
            if names and not any(re.search(rf"(?<![\w-]){re.escape(o)}(?![\w-])", section) for o in names):
                missing.append(f"patchlang {name} {names[-1]}")
    assert not missing, f"command-line options missing from docs/language.md: {missing}"
