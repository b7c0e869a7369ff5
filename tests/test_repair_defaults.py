"""Repair's defaults (issue 15, "fast by default"): a margin with room for the proof, raised when a verification is
undecided, and samples of the property's region kept; what was chosen is in the report (text and JSON)."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest

from patchlang.api import load_program_text, run_task
from patchlang.errors import SpecError
from patchlang.tasks.patch import RunOptions
from patchlang.tasks.repair_defaults import RepairDefaults, choose
from patchlang.tasks.verify import property_cases

EXAMPLE = Path(__file__).resolve().parents[1] / "examples" / "verify"
PROP = "property never_two { input box lo [0.5, -1] hi [1, -0.5] ensure label is not 2 }\n"


def _program(tmp_path: Path, body: str):
    shutil.copy(EXAMPLE / "tiny.onnx", tmp_path / "tiny.onnx")
    return load_program_text('model net = "tiny.onnx"\n' + PROP + body, tmp_path)


def test_the_defaults_are_chosen_reported_and_kept(tmp_path: Path) -> None:
    program = _program(tmp_path, "repair net for never_two { edit layer -1 weights and biases }\n")
    task = program.tasks[0]
    net = task.model.net
    cases = property_cases(task.prop, net)
    d = choose(net, task.patch, cases, seed=0)
    # the margin: half the median spread of the outputs over the region
    assert d.samples_asked == 300 and d.samples_default and not d.explicit
    assert d.margin == pytest.approx(0.5 * d.spread) and d.margin > task.patch.margin == d.floor
    y = net.forward(d.samples)
    assert np.array_equal(net.labels(d.samples), d.labels) and 0 < len(d.samples) <= 300
    assert not cases[0].spec.violated(y).any()  # samples the original violates are left out
    assert np.all((d.samples >= cases[0].lo) & (d.samples <= cases[0].hi))
    r = run_task(task, RunOptions(write_files=False))
    assert r.status == "repaired"
    fixed = r.patched
    assert np.array_equal(fixed.labels(d.samples), d.labels)  # the kept samples keep their decisions
    assert r.details["defaults"]["margin_chosen"] == "default"
    assert r.details["defaults"]["samples_kept"] == len(d.samples)
    notes = " ".join(r.notes)
    assert "chosen by default: margin" in notes and "`limit samples 0` to keep none" in notes


def test_explicit_margin_and_limit_samples_are_obeyed(tmp_path: Path) -> None:
    program = _program(tmp_path, "repair net for never_two { edit layer -1 weights and biases  margin 0.01\n"
                                 "  limit samples 0 }\n")
    task = program.tasks[0]
    d = choose(task.model.net, task.patch, property_cases(task.prop, task.model.net), seed=0)
    assert d.explicit and d.margin == 0.01 and len(d.samples) == 0 and not d.raise_margin()
    r = run_task(task, RunOptions(write_files=False))
    assert r.status == "repaired" and r.details["defaults"]["margin_chosen"] == "explicit"
    assert not any(n.startswith("chosen") for n in r.notes)
    with pytest.raises(SpecError) as err:
        _program(tmp_path, "repair net for never_two { edit layer -1 biases  limit samples -1 }\n")
    assert "PL241" in str(err.value.diagnostics[0].render())


def test_raise_caps_and_fall_back() -> None:
    d = RepairDefaults(0.1, 0.001, 0.2, False, np.zeros((0, 2)), np.zeros(0, int), 0, True, history=[0.1])
    assert d.raise_margin() and d.margin == pytest.approx(0.2)
    assert d.raise_margin() and d.margin == pytest.approx(0.4)  # the cap: twice the spread
    assert not d.raise_margin() and d.margin == pytest.approx(0.4) and d.raised == 2
    assert d.fall_back() and d.margin == 0.001 and not d.fall_back()
    assert "raised 2x" in d.notes()[0] and "the task's own 0.001 was used" in d.notes()[0]


def test_an_undecided_verification_raises_the_margin(tmp_path: Path, monkeypatch) -> None:
    import patchlang.tasks.repair as R
    from patchlang.tasks.verify import Verdict

    program = _program(tmp_path, "repair net for never_two { edit layer -1 weights and biases  limit verify 7 }\n")
    real = R.verify_cases
    calls: list[int] = []

    def fake(net, cases, timeout=None, **kw):
        calls.append(1)
        if len(calls) == 2:
            return Verdict("unknown", reason="time limit (stand-in)")
        return real(net, cases, timeout=60, **kw)

    monkeypatch.setattr(R, "verify_cases", fake)
    r = run_task(program.tasks[0], RunOptions(write_files=False))
    d = r.details["defaults"]
    assert r.status == "repaired" and d["margin_raised"] == 1
    assert d["margin"] == pytest.approx(2 * d["margin_start"])
    assert any(rec.get("margin") == d["margin"] for rec in r.details["log"])
    json.dumps(d)  # plain data for the JSON report
