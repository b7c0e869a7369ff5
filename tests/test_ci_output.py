"""patchlang in CI: ``run --select/--exclude`` (names and tags), ``--output-format`` documents on stdout for every
outcome (spec errors included), GitHub annotations at the `.patch` line, SARIF 2.1.0 checked against its schema."""

from __future__ import annotations

import json
import re
from pathlib import Path
from xml.etree import ElementTree as ET

import pytest

from patchlang.cli import main
from patchlang.lang import ast as A
from patchlang.lang.parser import parse_text
from patchlang.report.github import command
from patchlang.report.problems import Problem

REPO = Path(__file__).resolve().parents[1]
TOY = REPO / "examples" / "models" / "toy.onnx"
SCHEMA = Path(__file__).parent / "data" / "sarif-schema-2.1.0.json"  # OASIS sarif-spec, sarif-2.1/schema/

SPEC = """model toy = "{toy}"
points p = [[3, 4]]

patch fix on toy {{
    tag "ci", "fast"
    edit layer -1 weights
    require p: y[0] >= y[1]
}}

patch too_small on toy {{
    tag "slow"
    edit layer -1 weights
    require p: y[0] >= y[1]
    bound linf <= 0.1
}}

property wins {{
    input box lo [2.5, 3.5] hi [3.5, 4.5]
    ensure label is 0
}}

verify toy satisfies wins tag "ci"

assert distance(fix, linf) <= 0.5
"""
LINES = {"too_small": 10, "verify": 22, "assert": 24}


@pytest.fixture
def spec(tmp_path: Path, monkeypatch) -> Path:
    monkeypatch.chdir(tmp_path)
    path = tmp_path / "spec.patch"
    path.write_text(SPEC.format(toy=TOY))
    return path


def run(capsys, *argv) -> tuple[int, str, str]:
    code = main([str(a) for a in argv])
    out = capsys.readouterr()
    return code, out.out, out.err


def validate_sarif(log: dict) -> None:
    try:
        import jsonschema
    except ImportError:  # the structure by hand: the fields SARIF 2.1.0 requires and that code scanning reads
        jsonschema = None
    if jsonschema is not None:
        jsonschema.validate(log, json.loads(SCHEMA.read_text()))
    assert log["version"] == "2.1.0" and log["$schema"].endswith("sarif-2.1.0.json")
    (r,) = log["runs"]
    driver = r["tool"]["driver"]
    assert driver["name"] == "patchlang" and driver["version"]
    ids = [rule["id"] for rule in driver["rules"]]
    assert len(ids) == len(set(ids)) and all(rule["shortDescription"]["text"] for rule in driver["rules"])
    for res in r["results"]:
        assert res["ruleId"] in ids and ids[res["ruleIndex"]] == res["ruleId"]
        assert res["level"] in ("error", "warning", "note") and res["message"]["text"]
        (loc,) = res["locations"]
        assert loc["physicalLocation"]["artifactLocation"]["uri"]
        region = loc["physicalLocation"].get("region")
        assert region is None or region["startLine"] >= 1


def test_tags_parse_and_do_not_change_checking() -> None:
    spec = parse_text(SPEC.format(toy=TOY), "s.patch")
    patch = spec.statements[2]
    assert [i.tags for i in patch.items if isinstance(i, A.Tag)] == [("ci", "fast")]
    verify = next(s for s in spec.statements if isinstance(s, A.Verify))
    assert verify.tags == ("ci",)
    assert parse_text('verify a satisfies b timeout 3 tag "x" tag "y", "z"').statements[0].tags == ("x", "y", "z")


def test_github_annotations_at_the_patch_lines(spec: Path, capsys) -> None:
    code, out, err = run(capsys, "run", "spec.patch", "--no-save", "--output-format", "github")
    assert code == 1
    lines = out.splitlines()
    errors = [ln for ln in lines if ln.startswith("::error ")]
    assert len(errors) == 3, out
    assert errors[0].startswith(f"::error file=spec.patch,line={LINES['too_small']},title=patch too_small%3A no patch::"
                                "patch `too_small`: no patch")
    assert errors[1].startswith(f"::error file=spec.patch,line={LINES['verify']},title=verify toy satisfies wins%3A "
                                "violated::")
    assert errors[2].startswith(f"::error file=spec.patch,line={LINES['assert']},title=assertion failed%3A "
                                "assert distance(fix%2C linf) <= 0.5::")
    assert lines[-1].startswith("patchlang: spec.patch: 3 task(s) (1 ok, 2 failed") and lines[-1].endswith("exit 1")
    assert all("\n" not in ln for ln in lines)


def test_github_escaping() -> None:
    p = Problem("PL100", "error", "a,b:c.patch", 3, "PL100: x, y", "50% done\nhelp: more\r", column=7)
    assert command(p) == "::error file=a%2Cb%3Ac.patch,line=3,col=7,title=PL100%3A x%2C y::50%25 done%0Ahelp: more%0D"
    assert command(Problem("PL000", "note", "", 0, "t", "m")) == "::notice title=t::m"


def test_sarif_validates_and_names_the_outcomes(spec: Path, capsys) -> None:
    code, out, _ = run(capsys, "run", "spec.patch", "--no-save", "--output-format", "sarif")
    assert code == 1
    log = json.loads(out)
    validate_sarif(log)
    results = log["runs"][0]["results"]
    assert [(r["ruleId"], r["locations"][0]["physicalLocation"]["region"]["startLine"]) for r in results] == [
        ("patchlang/no-patch", LINES["too_small"]), ("patchlang/property-violated", LINES["verify"]),
        ("patchlang/assertion-failed", LINES["assert"])]
    assert all(r["locations"][0]["physicalLocation"]["artifactLocation"]["uri"] == "spec.patch" for r in results)
    rule_ids = {r["id"] for r in log["runs"][0]["tool"]["driver"]["rules"]}
    used = set()
    for source in (REPO / "patchlang").rglob("*.py"):
        used |= set(re.findall(r"\bPL\d{3}\b", source.read_text(encoding="utf-8")))
    assert used <= rule_ids, f"PL codes without a SARIF rule: {sorted(used - rule_ids)}"
    assert log["runs"][0]["invocations"][0] == {"executionSuccessful": True, "exitCode": 1}


def test_json_and_junit_on_stdout(spec: Path, capsys) -> None:
    code, out, _ = run(capsys, "run", "spec.patch", "--no-save", "--output-format", "json", "--select", "ci")
    assert code == 1
    doc = json.loads(out)
    assert [t["name"] for t in doc["tasks"]] == ["fix", "verify toy satisfies wins"]
    assert doc["exit_code"] == 1 and [a["holds"] for a in doc["assertions"]] == [False]
    code, out, _ = run(capsys, "run", "spec.patch", "--no-save", "--output-format", "junit", "--select", "fix")
    suite = ET.fromstring(out)
    assert code == 1 and suite.get("tests") == "2" and suite.get("failures") == "1"


@pytest.mark.parametrize("select,exclude,expected", [
    ("fast", None, ["fix"]),
    ("fix,too_small", "slow", ["fix"]),
    (None, "ci", ["too_small"]),
    ("verify toy satisfies wins", None, ["verify toy satisfies wins"]),
])
def test_select_and_exclude(spec: Path, capsys, select, exclude, expected) -> None:
    argv = ["run", "spec.patch", "--no-save", "--output-format", "json"]
    argv += ["--select", select] if select else []
    argv += ["--exclude", exclude] if exclude else []
    code, out, _ = run(capsys, *argv)
    doc = json.loads(out)
    assert [t["name"] for t in doc["tasks"]] == expected, (select, exclude)
    assert code in (0, 1)


def test_unknown_selection_is_a_usage_error(spec: Path, capsys) -> None:
    code, out, err = run(capsys, "run", "spec.patch", "--select", "ci,nope")
    assert code == 2 and out == ""
    assert "PL000 error: --select: no task or tag named nope" in err
    assert "tasks: fix, too_small, verify toy satisfies wins; tags: ci, fast, slow" in err
    code, out, err = run(capsys, "run", "spec.patch", "--exclude", "ci,slow", "--output-format", "github")
    assert code == 2 and out.startswith("::error file=spec.patch,title=PL000 error::no task selected")


@pytest.mark.parametrize("fmt", ["json", "junit", "github", "sarif"])
def test_spec_errors_come_out_in_the_chosen_format(tmp_path: Path, monkeypatch, capsys, fmt: str) -> None:
    monkeypatch.chdir(tmp_path)
    (tmp_path / "bad.patch").write_text(f'model toy = "{TOY}"\npoints p = [[3, 4]]\npatch t on toy {{\n'
                                        "    edit layer -1 weights\n    keep q\n}\n")
    code, out, err = run(capsys, "run", "bad.patch", "--output-format", fmt)
    assert code == 2 and "bad.patch:5:10: PL202 error" in err  # the usual text still goes to stderr
    if fmt == "json":
        doc = json.loads(out)
        assert doc["exit_code"] == 2 and doc["tasks"] == []
        assert [(e["code"], e["line"], e["column"]) for e in doc["errors"]] == [("PL202", 5, 10)]
    elif fmt == "junit":
        suite = ET.fromstring(out)
        assert suite.get("errors") == "1" and suite.find("testcase/error").get("type") == "PL202"
    elif fmt == "github":
        assert out.startswith("::error file=bad.patch,line=5,col=10,") and ",title=PL202 error::unknown" in out
    else:
        log = json.loads(out)
        validate_sarif(log)
        (res,) = log["runs"][0]["results"]
        assert res["ruleId"] == "PL202"
        assert res["locations"][0]["physicalLocation"]["region"]["startLine"] == 5
        assert log["runs"][0]["invocations"][0]["exitCode"] == 2


def test_missing_spec_in_github_format(tmp_path: Path, monkeypatch, capsys) -> None:
    monkeypatch.chdir(tmp_path)
    code, out, _ = run(capsys, "run", "missing.patch", "--output-format", "github")
    assert code == 2 and out.startswith("::error file=missing.patch,title=PL001 error::spec file not found")


def test_sarif_file_beside_another_format(spec: Path, tmp_path: Path, capsys) -> None:
    code, out, _ = run(capsys, "run", "spec.patch", "--no-save", "--select", "fix", "--output-format", "github",
                       "--sarif", "out/r.sarif")
    assert code == 1 and out.startswith("::error file=spec.patch,line=24,")
    log = json.loads((tmp_path / "out" / "r.sarif").read_text())
    validate_sarif(log)
    assert [r["ruleId"] for r in log["runs"][0]["results"]] == ["patchlang/assertion-failed"]
    (tmp_path / "broken.patch").write_text("patch {\n")
    code, out, _ = run(capsys, "run", "broken.patch", "--sarif", "out/b.sarif")
    assert code == 2 and out == ""
    log = json.loads((tmp_path / "out" / "b.sarif").read_text())
    validate_sarif(log)
    assert [r["ruleId"] for r in log["runs"][0]["results"]] == ["PL100"]
