"""Counterexample-guided repair: ends proven (golden example), stops honestly otherwise."""

from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np

from patchlang.api import load_program, load_program_text, run_task
from patchlang.compile.verify import RegionCase
from patchlang.model.loader import load_model
from patchlang.tasks.patch import RunOptions
from patchlang.tasks.verify import property_cases, verify_cases

EXAMPLE = Path(__file__).resolve().parents[1] / "examples" / "verify"


def _program(tmp_path: Path, body: str):
    shutil.copy(EXAMPLE / "tiny.onnx", tmp_path / "tiny.onnx")
    return load_program_text('model net = "tiny.onnx"\n' + body, tmp_path)


def assert_file_proven_and_anchors_kept(program, path: Path):
    """Trust the file, not the solver: the written network, loaded fresh, is proven by an independent verify run
    of `never_two`, and the anchors keep the original network's labels.  Returns the loaded network."""
    fixed = load_model(str(path))
    prop = program.properties["never_two"]
    assert verify_cases(fixed, property_cases(prop, fixed), timeout=60).status == "holds"
    anchors = program.points["anchors"].x
    assert np.array_equal(fixed.labels(anchors), program.models["net"].net.labels(anchors))
    return fixed


def test_example_repair_is_proven_and_saved(tmp_path):
    src = (EXAMPLE / "repair.patch").read_text().replace('"out/tiny_no_two.onnx"', f'"{tmp_path / "fixed.onnx"}"')
    (tmp_path / "repair.patch").write_text(src)
    shutil.copy(EXAMPLE / "tiny.onnx", tmp_path / "tiny.onnx")
    program = load_program(tmp_path / "repair.patch")
    r = run_task(program.tasks[0], RunOptions())
    assert r.status == "repaired"
    assert r.details["iterations"] >= 1 and r.details["counterexamples"] >= 1
    assert 0 < r.distances["linf"] < 0.5
    assert all(c.ok for c in r.checks)
    assert_file_proven_and_anchors_kept(program, tmp_path / "fixed.onnx")


def test_nothing_to_repair(tmp_path):
    program = _program(tmp_path, "property capped { input box lo [-1, -1] hi [1, 1] ensure y[2] <= 1.5 }\n"
                                 "repair net for capped { edit layer -1 biases }\n")
    r = run_task(program.tasks[0], RunOptions(write_files=False))
    assert r.status == "repaired" and r.distances["linf"] == 0.0


def test_unrepairable_with_the_allowed_edits(tmp_path):
    # y[2] can only move by its bias: no bias makes y[2] both >= 5 and the decision stay as before at the anchors
    program = _program(tmp_path, "points a = [[-0.5, -0.5]]\n"
                                 "property big { input box lo [-1, -1] hi [1, 1] ensure y[2] >= 5 }\n"
                                 "repair net for big { edit layer -1 biases rows [2]  keep a  bound linf <= 1 }\n")
    r = run_task(program.tasks[0], RunOptions(write_files=False))
    assert r.status == "not repaired"


def test_iteration_limit_is_honoured(tmp_path):
    program = _program(tmp_path, "property never_two { input box lo [0.5, -1] hi [1, -0.5] ensure label is not 2 }\n"
                                 "repair net for never_two { edit layer -1 weights and biases  limit iterations 0 }\n")
    r = run_task(program.tasks[0], RunOptions(write_files=False))
    assert r.status == "not repaired" and "limit" in r.message


def test_hidden_layer_repair_is_proven(tmp_path):
    """The fallback the ACAS Xu benchmark uses when no output-layer patch exists: edit the hidden layer (a MILP per
    iteration: the ReLUs after the edit are encoded exactly); the written file must be proven independently and
    the anchors keep their labels (checked here on the file, not on the solver's word)."""
    program = _program(tmp_path, "points anchors = [[-0.5, -0.5], [0.5, 0.5], [0.9, 0.9], [-0.9, 0.9], [0, 0]]\n"
                                 "property never_two { input box lo [0.5, -1] hi [1, -0.5] ensure label is not 2 }\n"
                                 "repair net for never_two as hidden_fix {\n"
                                 "    edit layer 0 biases\n    keep anchors\n    minimize linf\n"
                                 f'    save "{tmp_path / "hidden.onnx"}"\n}}\n')
    task = program.tasks[0]
    assert task.patch.problem_class == "MILP"
    r = run_task(task, RunOptions())
    assert r.status == "repaired", r.message
    assert all(c.ok for c in r.checks)
    fixed = assert_file_proven_and_anchors_kept(program, tmp_path / "hidden.onnx")
    original = program.models["net"].net
    assert np.array_equal(fixed.affine(-1).W, original.affine(-1).W)  # only layer 0's biases moved
    assert np.array_equal(fixed.affine(0).W, original.affine(0).W)
    assert not np.array_equal(fixed.affine(0).b, original.affine(0).b)


def test_undecided_verifications_double_the_next_budget(tmp_path, monkeypatch):
    """`limit verify S`: each verification that runs out of time gives the next one twice as long (the timeouts
    the loop asks for are recorded from a stand-in verifier that is undecided twice, then finds the patch safe)."""
    import patchlang.tasks.repair as R
    from patchlang.tasks.verify import Verdict

    program = _program(tmp_path, "property never_two { input box lo [0.5, -1] hi [1, -0.5] ensure label is not 2 }\n"
                                 "repair net for never_two { edit layer -1 weights and biases  limit verify 7 }\n")
    real = R.verify_cases
    asked: list[float] = []

    def fake(net, cases, timeout=None, **kw):
        asked.append(timeout)
        if len(asked) == 1:
            return real(net, cases, timeout=timeout, **kw)  # the original network: violated
        if len(asked) <= 3:
            return Verdict("unknown", reason="time limit (stand-in)")
        return real(net, cases, timeout=60, **kw)

    monkeypatch.setattr(R, "verify_cases", fake)
    r = run_task(program.tasks[0], RunOptions(write_files=False))
    assert asked[:4] == [7.0, 7.0, 14.0, 28.0]
    assert r.status == "repaired"
