"""docs/ci.md: its workflow and pre-commit snippets are valid YAML that use what exists, and the hooks run."""

from __future__ import annotations

import re
import shutil
from pathlib import Path

import pytest

from patchlang.cli import main

REPO = Path(__file__).resolve().parents[1]
CI_DOC = REPO / "docs" / "ci.md"
HOOKS = REPO / ".pre-commit-hooks.yaml"
YAML_BLOCK = re.compile(r"^```yaml[ \t]*\n(.*?)^```", re.S | re.M)


def hook_ids() -> list[str]:
    return re.findall(r"^- id: (\S+)$", HOOKS.read_text(encoding="utf-8"), re.M)


def test_hooks_are_defined_and_documented() -> None:
    assert hook_ids() == ["patchlang-fmt", "patchlang-check"]
    text = CI_DOC.read_text(encoding="utf-8")
    assert "docs/ci.md" in (REPO / "README.md").read_text(encoding="utf-8")
    for hook in hook_ids():
        assert f"id: {hook}" in text


def test_yaml_blocks_parse_and_use_what_exists() -> None:
    yaml = pytest.importorskip("yaml", reason="PyYAML is not installed: the YAML in docs/ci.md is not parsed")
    hooks = yaml.safe_load(HOOKS.read_text(encoding="utf-8"))
    assert [h["id"] for h in hooks] == hook_ids()
    for h in hooks:
        assert h["entry"].split()[0] == "patchlang" and re.search(h["files"], "specs/fix.patch")
        assert {"id", "name", "entry", "language"} <= set(h)
    blocks = [yaml.safe_load(b) for b in YAML_BLOCK.findall(CI_DOC.read_text(encoding="utf-8"))]
    workflow = next(b for b in blocks if "jobs" in b)
    steps = [s for job in workflow["jobs"].values() for s in job["steps"]]
    runs = "\n".join(s.get("run", "") for s in steps)
    assert "patchlang fmt --check" in runs and "--output-format github" in runs and "--sarif" in runs
    assert any(s.get("uses", "").startswith("github/codeql-action/upload-sarif") for s in steps)
    assert workflow["permissions"]["security-events"] == "write"
    config = next(b for b in blocks if "repos" in b)
    used = [h["id"] for repo in config["repos"] for h in repo["hooks"]]
    assert used and set(used) <= set(hook_ids())


def test_the_hooks_run_on_the_examples(tmp_path: Path, capsys) -> None:
    """What pre-commit runs: the entry with the changed .patch files appended."""
    shutil.copytree(REPO / "examples" / "toy", tmp_path / "toy")
    shutil.copytree(REPO / "examples" / "models", tmp_path / "models")
    files = sorted(str(p) for p in (tmp_path / "toy").glob("*.patch"))
    before = {f: Path(f).read_text() for f in files}
    entries, hook = {}, None
    for line in HOOKS.read_text().splitlines():  # without PyYAML: "- id: X" ... "  entry: CMD"
        hook = line[len("- id: "):] if line.startswith("- id: ") else hook
        if line.startswith("  entry: "):
            entries[hook] = line[len("  entry: "):]
    assert main(entries["patchlang-fmt"].split()[1:] + files) == 0
    assert {f: Path(f).read_text() for f in files} == before  # the examples are formatted already
    assert main(entries["patchlang-check"].split()[1:] + files) == 0
    out = capsys.readouterr().out
    assert all(f"{f}: ok" in out for f in files)
    Path(files[0]).write_text(before[files[0]] + "assert exists(\n")
    assert main(entries["patchlang-check"].split()[1:] + files) == 2  # one broken spec fails the hook
    assert f"{files[1]}: ok" in capsys.readouterr().out  # ... and the others are still checked
