"""The docs cannot drift: every command README.md and docs/ show is run (from a copy of examples/ and bench/ in a
temporary folder, so nothing in the repository is written) and compared with what the text says happens.

How the claims are written next to each command, and what they may say, is in ``tests/docs_claims.py``.  A
command shown without a claim fails ``test_every_command_shown_has_a_claim``; a claim is compared on exit code,
files written and the key figures of the JSON report (report wording is not compared).
"""

from __future__ import annotations

import json
import os
import shlex
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from docs_claims import DOCS, REPO, Block, Claim, block_for, broken_links, claims, commands, normalize, repo_paths_mentioned, \
    runnable, strip_code, uses_example_models

ALL = {doc.name: claims(doc) for doc in DOCS}
CLAIMS = [c for cs, _ in ALL.values() for c in cs]
BLOCKS = [b for _, bs in ALL.values() for b in bs]
REL = 1e-4  # `~=` is never looser than this (relative)
TIMEOUT = 180


# ------------------------------------------------------------------------------------------- the claims' coverage

@pytest.mark.parametrize("doc", DOCS, ids=lambda d: d.name)
def test_every_command_shown_has_a_claim(doc: Path) -> None:
    claimed = {c.command for c in ALL[doc.name][0] if c.command}
    missing = [f"{doc.name}:{line}: {cmd}" for line, cmd in commands(doc) if runnable(cmd) and cmd not in claimed]
    assert not missing, "commands shown without an <!-- expect `COMMAND`: ... --> claim:\n" + "\n".join(missing)


@pytest.mark.parametrize("doc", DOCS, ids=lambda d: d.name)
def test_every_claim_is_about_a_command_shown(doc: Path) -> None:
    shown = {cmd for _, cmd in commands(doc)}
    orphans = [f"{c.id}: {c.command}" for c in ALL[doc.name][0] if c.command and c.command not in shown]
    assert not orphans, "claims about commands the doc does not show:\n" + "\n".join(orphans)


def test_the_docs_show_commands_and_claims() -> None:
    assert sum(1 for c in CLAIMS if c.command) >= 15
    assert {c.doc for c in CLAIMS} >= {"README.md", "tutorial.md", "language.md"}


@pytest.mark.parametrize("doc", DOCS, ids=lambda d: d.name)
def test_every_file_mentioned_exists(doc: Path) -> None:
    missing = [f"{doc.name}:{line}: {path}" for line, path in repo_paths_mentioned(doc)
               if not (REPO / path).exists()]
    assert not missing, "the docs mention files the repository does not have:\n" + "\n".join(missing)


@pytest.mark.parametrize("doc", DOCS, ids=lambda d: d.name)
def test_every_link_leads_somewhere(doc: Path) -> None:
    broken = broken_links(doc)
    assert not broken, f"{doc.name}: broken links:\n" + "\n".join(broken)


def test_every_runnable_patch_block_is_run_or_says_why_not() -> None:
    """A patch block on the shipped models is run (expect), is a shipped file (file), or says why not (no-run)."""
    silent = [f"{b.doc}:{b.line}" for b in BLOCKS if uses_example_models(b.code) and b.annotation is None]
    assert not silent, ("patch blocks on the example models without <!-- expect: ... -->, <!-- file: ... --> or "
                        "<!-- no-run: reason -->: " + ", ".join(silent))
    reasons = [f"{b.doc}:{b.line}" for b in BLOCKS if b.annotation == "no-run" and not b.argument]
    assert not reasons, "no-run without a reason: " + ", ".join(reasons)


FILE_BLOCKS = [b for b in BLOCKS if b.annotation == "file"]


@pytest.mark.parametrize("block", FILE_BLOCKS, ids=[f"{b.doc}:{b.line}" for b in FILE_BLOCKS])
def test_blocks_said_to_be_files_are_those_files(block: Block) -> None:
    path = REPO / block.argument
    assert path.is_file(), f"{block.doc}:{block.line} says it is {block.argument}, which is not shipped"
    assert strip_code(block.code) == strip_code(path.read_text(encoding="utf-8")), (
        f"{block.doc}:{block.line} differs from {block.argument} (comments and spacing aside)")


def _numbers(claim: Claim) -> list[str]:
    out = []
    for key, _, value in claim.claims:
        try:
            float(value)
        except ValueError:
            continue
        if key not in ("exit", "exit_code") and not key.endswith(".line"):
            out.append(value)
    return out


@pytest.mark.parametrize("claim", CLAIMS, ids=[c.id for c in CLAIMS])
def test_claimed_figures_are_the_ones_the_text_states(claim: Claim) -> None:
    """A figure in a claim is written in the text it follows, so comment and prose cannot disagree."""
    absent = [v for v in _numbers(claim) if v not in claim.context]
    assert not absent, f"{claim.id}: figures claimed but not stated in the text before the claim: {absent}"


# ------------------------------------------------------------------------------------------------------- running

@pytest.fixture(scope="module")
def sandbox(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A copy of examples/ and bench/ (scripts only): every command runs here, as from the repository root."""
    root = tmp_path_factory.mktemp("docs")
    shutil.copytree(REPO / "examples", root / "examples",
                    ignore=shutil.ignore_patterns("out", "__pycache__", "plots"))
    shutil.copytree(REPO / "bench", root / "bench", ignore=shutil.ignore_patterns("results", "__pycache__"))
    (root / "bench" / "results").mkdir()
    for block in BLOCKS:
        if block.annotation == "expect":
            spec = root / _block_spec(block)
            spec.parent.mkdir(parents=True, exist_ok=True)
            spec.write_text(block.code, encoding="utf-8")
    return root


def _block_spec(block: Block) -> str:
    stem = Path(block.doc).stem
    return f"examples/docs/{stem}_{block.line}.patch"


def _argv(tokens: list[str]) -> list[str]:
    if tokens[0] == "patchlang":
        return [sys.executable, "-m", "patchlang.cli", *tokens[1:]]
    if tokens[0] == "python":
        return [sys.executable, *tokens[1:]]
    raise AssertionError(f"not a command the docs test can run: {tokens}")


def _spec_of(tokens: list[str]) -> str | None:
    return next((t for t in tokens if t.endswith(".patch")), None)


def _execute(tokens: list[str], root: Path, env: dict[str, str] | None = None) -> subprocess.CompletedProcess:
    """``patchlang ...`` runs in this process (as ``patchlang.cli.main``, from ``root``: the interpreter's start-up
    would otherwise dominate the test's time); ``python ...`` in a subprocess."""
    if tokens[0] != "patchlang" or env is not None:
        return subprocess.run(_argv(tokens), cwd=root, capture_output=True, text=True, timeout=TIMEOUT,
                              env=env)
    import contextlib
    import io

    from patchlang.cli import main

    out, err = io.StringIO(), io.StringIO()
    cwd = os.getcwd()
    os.chdir(root)
    try:
        with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
            try:
                code = main(tokens[1:])
            except SystemExit as exc:  # argparse: --help, --version, usage errors
                code = exc.code if isinstance(exc.code, int) else 0 if exc.code is None else 2
    finally:
        os.chdir(cwd)
    return subprocess.CompletedProcess(tokens, code, out.getvalue(), err.getvalue())


def _shared_data() -> Path | None:
    """The benchmarks' data, as the benchmarks find it from the repository, or None."""
    from conftest import shared_path

    path = shared_path()
    return path if (path / "benchmarks").is_dir() else None


def _run(claim: Claim, root: Path, tmp: Path) -> tuple[subprocess.CompletedProcess, dict | None]:
    if claim.command is None:
        tokens = ["patchlang", "run", _block_spec(block_for(claim, BLOCKS))]
    else:
        tokens = shlex.split(claim.command)
    shared = _shared_data()
    if claim.help_only or (claim.shared and shared is None):
        return _execute(tokens + ["--help"], root), None
    if claim.edit:
        spec = _spec_of(tokens)
        assert spec, f"{claim.id}: edit= needs a command with a .patch file"
        text = (root / spec).read_text(encoding="utf-8")
        old, new = claim.edit
        assert old in text, f"{claim.id}: {old!r} is not in {spec}"
        variant = Path(spec).with_name(f"variant_{claim.line}.patch")
        (root / variant).write_text(text.replace(old, new), encoding="utf-8")
        tokens = [str(variant) if t == spec else t for t in tokens]
    for key, _, value in claim.claims:
        if key == "files":
            for f in value.split(","):
                (root / f).unlink(missing_ok=True)
    report = None
    if tokens[:2] == ["patchlang", "run"]:
        if "--json" in tokens:
            report = root / tokens[tokens.index("--json") + 1]
        else:
            report = tmp / "report.json"
            tokens = tokens + ["--json", str(report)]
    proc = _execute(tokens, root, env=dict(os.environ, PATCHLANG_SHARED=str(shared)) if claim.shared else None)
    data = json.loads(report.read_text(encoding="utf-8")) if report is not None and report.is_file() else None
    return proc, data


def _lookup(data: dict, key: str):
    parts = key.split(".")
    head, rest = parts[0], parts[1:]
    if head.startswith("assert@"):
        line = int(head[len("assert@"):])
        node = next((a for a in data["assertions"] if a["line"] == line), None)
        assert node is not None, f"no assertion at line {line}"
    elif head.startswith("@"):
        line = int(head[1:])
        node = next((t for t in data["tasks"] if t["line"] == line), None)
        assert node is not None, f"no task at line {line}"
    elif any(t["name"] == head for t in data["tasks"]):
        node = next(t for t in data["tasks"] if t["name"] == head)
    else:
        node, rest = data, parts
    if len(rest) == 1 and rest[0] in ("linf", "l1", "l0"):
        rest = ["distances", rest[0]]
    for part in rest:
        node = node[int(part)] if isinstance(node, list) else node[part]
    return node


def _tolerance(expected: str) -> float:
    """``~=``: equal to the digits written (half a unit in the last one), and never looser than relative 1e-4, so
    ``1`` means 1 ± 1e-4 while ``0.7549860775`` means it to ten decimals."""
    from decimal import Decimal

    last = Decimal(expected).as_tuple().exponent
    written = 0.5 * 10.0 ** int(last) if isinstance(last, int) else 0.0
    return max(min(written, REL * max(1.0, abs(float(expected)))), 1e-12)


def _same(actual, op: str, expected: str) -> bool:
    if op == "~=":
        return actual is not None and abs(float(actual) - float(expected)) <= _tolerance(expected)
    if isinstance(actual, bool) or actual is None:
        return str(actual).lower() == expected.lower() or (actual is None and expected in ("null", "none"))
    if isinstance(actual, (int, float)):
        try:
            return float(actual) == float(expected)
        except ValueError:
            return False
    return str(actual) == expected


RUN_CLAIMS = CLAIMS


@pytest.mark.parametrize("claim", RUN_CLAIMS, ids=[f"{c.id} {c.command or 'patch block'}" for c in RUN_CLAIMS])
def test_documented_command_does_what_the_text_says(claim: Claim, sandbox: Path, tmp_path: Path) -> None:
    proc, data = _run(claim, sandbox, tmp_path)
    where = f"{claim.id}: `{claim.command or 'the patch block'}`"
    log = f"\n--- stdout\n{proc.stdout[-3000:]}\n--- stderr\n{proc.stderr[-3000:]}"
    if claim.help_only or (claim.shared and _shared_data() is None):
        assert proc.returncode == 0, f"{where} --help exited {proc.returncode}{log}"
        return
    problems = []
    for key, op, value in claim.claims:
        if key == "exit":
            if proc.returncode != int(value):
                problems.append(f"exit code {proc.returncode}, the docs say {value}")
        elif key == "files":
            problems += [f"{f} was not written" for f in value.split(",") if not (sandbox / f).is_file()]
        elif key == "says":
            if value not in proc.stdout + proc.stderr:
                problems.append(f"the output does not say {value!r}")
        else:
            if data is None:
                problems.append(f"{key}: no JSON report")
                continue
            try:
                actual = _lookup(data, key)
            except (KeyError, IndexError, AssertionError, ValueError) as exc:
                problems.append(f"{key}: not in the report ({exc})")
                continue
            if not _same(actual, op, value):
                problems.append(f"{key} is {actual!r}, the docs say {value}")
    assert not problems, f"{where}:\n  " + "\n  ".join(problems) + log


# ------------------------------------------------------------------------------------------ the JSON example

def _json_example() -> dict:
    import re

    text = (REPO / "docs" / "language.md").read_text(encoding="utf-8")
    m = re.search(r"^```json\n(.*?)^```", text, re.S | re.M)
    assert m, "docs/language.md has no JSON report example"
    return json.loads(m.group(1))


VOLATILE = {"seconds", "versions", "inputs", "files", "backend_version", "min_slack_float64", "min_slack_float32",
            "spec", "class_reason", "message", "notes"}  # illustrative, or report wording (not compared)


def _compare_json(doc, actual, path: str, problems: list[str]) -> None:
    if isinstance(doc, dict):
        if not isinstance(actual, dict):
            problems.append(f"{path}: an object in the docs, {type(actual).__name__} in the report")
            return
        for k, v in doc.items():
            if k not in actual:
                problems.append(f"{path}.{k}: in the docs, not in the report")
            elif k not in VOLATILE:
                _compare_json(v, actual[k], f"{path}.{k}", problems)
    elif isinstance(doc, list):
        if not isinstance(actual, list):
            problems.append(f"{path}: a list in the docs, {type(actual).__name__} in the report")
        for i, v in enumerate(doc[:len(actual)] if isinstance(actual, list) else []):
            _compare_json(v, actual[i], f"{path}.{i}", problems)
    elif isinstance(doc, str):
        if "..." not in doc and doc != actual:
            problems.append(f"{path}: {doc!r} in the docs, {actual!r} in the report")
    elif isinstance(doc, bool) or doc is None:
        if doc != actual:
            problems.append(f"{path}: {doc!r} in the docs, {actual!r} in the report")
    elif isinstance(doc, (int, float)):
        text = repr(doc)
        decimals = len(text.split(".")[1]) if "." in text and "e" not in text else 0
        if not isinstance(actual, (int, float)) or round(float(actual), decimals) != round(float(doc), decimals):
            problems.append(f"{path}: {doc!r} in the docs, {actual!r} in the report")


def test_json_report_example_matches_a_real_report(sandbox: Path, tmp_path: Path) -> None:
    """Every field of the example exists in a real report of the same spec, and its figures (rounded as the
    example shows them) are the real ones; times, versions and hashes are illustrative."""
    example = _json_example()
    report = tmp_path / "r.json"
    proc = _execute(["patchlang", "run", example["spec"], "--no-save", "--json", str(report)], sandbox)
    assert report.is_file(), proc.stdout + proc.stderr
    problems: list[str] = []
    _compare_json(example, json.loads(report.read_text(encoding="utf-8")), "report", problems)
    assert not problems, "docs/language.md's JSON example has drifted:\n  " + "\n  ".join(problems)


# ------------------------------------------------------------------------------------------ benchmarks' data

@pytest.mark.parametrize("script", ["acasxu.py", "acasxu_repair.py", "mnist_fc.py", "cifar.py"])
def test_benchmark_without_its_data_says_where_it_looked(script: str, sandbox: Path, tmp_path: Path) -> None:
    missing = tmp_path / "no-such-folder"
    proc = _execute(["python", f"bench/{script}"], sandbox, env=dict(os.environ, PATCHLANG_SHARED=str(missing)))
    assert proc.returncode == 2
    assert str(missing) in proc.stderr and "PATCHLANG_SHARED=" in proc.stderr
    assert "not part of the repository" in proc.stderr and "vnncomp2021" in proc.stderr


def test_normalize_is_shell_splitting() -> None:
    assert normalize("patchlang  run   examples/toy/toy.patch") == "patchlang run examples/toy/toy.patch"


@pytest.mark.parametrize("expected,actual,same", [("1", 1.00005, True), ("1", 1.001, False),
                                                  ("0.382552", 0.38255213, True), ("0.382552", 0.3825531, False),
                                                  ("0.7549860775", 0.7549860775470734, True),
                                                  ("0.7549860775", 0.7549860779, False), ("97.7049", 97.70490226, True)])
def test_figures_compare_to_the_digits_written(expected: str, actual: float, same: bool) -> None:
    assert _same(actual, "~=", expected) is same
