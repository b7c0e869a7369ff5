"""Ctrl-C while the assertions are evaluated (issue 10): every task had finished, so the JSON and JUnit reports
still list them, with the assertions that were evaluated and those that were not (a real SIGINT, not a stand-in
exception)."""

from __future__ import annotations

import json
import os
import signal
import time
from pathlib import Path
from xml.etree import ElementTree as ET

import patchlang.api as api
from patchlang.cli import main


def test_ctrl_c_in_the_assertions_keeps_the_finished_tasks(tmp_path: Path, examples_copy: Path, monkeypatch,
                                                          capsys) -> None:
    spec = examples_copy / "quickstart" / "fix_digits.patch"
    real = api.evaluate
    seen: list[str] = []

    def interrupted_on_the_second(program, a, results):
        seen.append(a.text)
        if len(seen) == 2:
            os.kill(os.getpid(), signal.SIGINT)  # what Ctrl-C sends
            time.sleep(30)  # the signal ends the sleep with KeyboardInterrupt
        return real(program, a, results)

    monkeypatch.setattr(api, "evaluate", interrupted_on_the_second)
    previous = signal.signal(signal.SIGINT, signal.default_int_handler)  # whatever earlier tests installed
    try:
        _run_and_check(spec, tmp_path, capsys)
    finally:
        signal.signal(signal.SIGINT, previous)


def _run_and_check(spec: Path, tmp_path: Path, capsys) -> None:
    report, junit = tmp_path / "r.json", tmp_path / "r.xml"
    code = main(["run", str(spec), "--no-cache", "--json", str(report), "--junit", str(junit)])
    out = capsys.readouterr().out
    assert code == 3 and "interrupted: 1 task(s) finished, 0 not run" in out
    doc = json.loads(report.read_text())
    assert doc["outcome"] == "interrupted" and doc["exit_code"] == 3
    assert [t["status"] for t in doc["tasks"]] == ["patched"] and doc["tasks"][0]["files"]
    assert [a["holds"] for a in doc["assertions"]] == [True, None, None]
    assert all("not evaluated: interrupted" in a["message"] for a in doc["assertions"][1:])
    assert "1 of 3 evaluated" in doc["errors"][0]
    suite = ET.parse(junit).getroot()
    names = [c.get("name") for c in suite.iter("testcase")]
    assert any("fix_digits" in n for n in names) and "interrupted" in names
