"""The whole-run fast path of the cache (patchlang.run.replay) and cached verify / repair results (issue 17).

A second run of an unchanged spec is answered without parsing the spec or loading a model, but never on trust:
every input is hashed again and every saved file (patched network, counterexample) is checked again; anything
changed is a miss that runs the spec the ordinary way."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

import patchlang.api as api
from patchlang.cli import main


@pytest.fixture()
def examples(examples_copy: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    monkeypatch.setenv("PATCHLANG_CACHE", "1")
    return examples_copy


def _run(spec: Path, capsys, *extra: str) -> tuple[int, dict]:
    report = spec.parent / "r.json"
    code = main(["run", str(spec), "--json", str(report), *extra])
    capsys.readouterr()
    return code, json.loads(report.read_text())


def _notes(report: dict) -> list[str]:
    return [n for t in report["tasks"] for n in t.get("notes", []) if n.startswith("cached result")]


def _no_loading(monkeypatch: pytest.MonkeyPatch) -> list[str]:
    """Record every load_program call (a hit must make none)."""
    calls: list[str] = []
    real = api.load_program

    def spy(path):
        calls.append(str(path))
        return real(path)

    monkeypatch.setattr(api, "load_program", spy)
    return calls


def test_an_unchanged_run_is_answered_without_loading_the_spec(examples: Path, capsys, monkeypatch) -> None:
    spec = examples / "quickstart" / "fix_digits.patch"
    code, first = _run(spec, capsys)
    assert code == 0 and not _notes(first)
    calls = _no_loading(monkeypatch)
    code, second = _run(spec, capsys)
    assert code == 0 and calls == []
    assert _notes(second) == [n for n in _notes(second) if "digits_fixed.onnx re-checked with onnxruntime" in n] != []
    assert second["tasks"][0]["distances"] == first["tasks"][0]["distances"]
    assert [a["holds"] for a in second["assertions"]] == [a["holds"] for a in first["assertions"]]
    assert second["inputs"] == first["inputs"]
    # other options are another run: loaded and solved (the per-task entry does not apply to another seed)
    assert _run(spec, capsys, "--seed", "4")[0] == 0 and len(calls) == 1
    # a report written onto an input is refused by the ordinary path, with its own message
    assert main(["run", str(spec), "--json", str(examples / "models" / "digits_test.npz")]) == 2
    assert "refusing to overwrite" in capsys.readouterr().err


def test_the_fast_path_rechecks_the_saved_network(examples: Path, capsys, monkeypatch) -> None:
    """A saved file with other content, or one whose content would fail the goals, is never a hit."""
    from patchlang.cache import recheck_saved
    from patchlang.run.replay import lookup_run, run_key
    import argparse

    spec = examples / "quickstart" / "fix_digits.patch"
    _run(spec, capsys)
    args = argparse.Namespace(task=None, select=None, exclude=None, backend=None, time_limit=None, seed=0,
                              no_save=False, frozen=False)
    key = run_key(str(spec), args)
    hit, why = lookup_run(str(spec), key)
    assert hit is not None and why == "cached"
    task = hit.tasks[0]
    assert recheck_saved(task, str(spec.parent)) is None
    task.patched = api.load_program(spec).tasks[0].model.net  # the unpatched network fails `change wrong to label`
    assert "fails" in recheck_saved(task, str(spec.parent))
    saved = spec.parent / "out" / "digits_fixed.onnx"
    saved.write_bytes(saved.read_bytes() + b"\0")
    assert lookup_run(str(spec), key) == (None, f"{saved} changed")
    calls = _no_loading(monkeypatch)
    assert not _notes(_run(spec, capsys)[1]) and calls  # ran again: the file is rewritten
    data = dict(np.load(examples / "models" / "digits_test.npz"))
    data["x"][3, 5] += 1e-3
    np.savez(examples / "models" / "digits_test.npz", **data)
    assert not _notes(_run(spec, capsys)[1]) and len(calls) == 2


def test_verify_results_are_cached_and_a_saved_counterexample_is_rechecked(examples: Path, capsys,
                                                                           monkeypatch) -> None:
    spec = examples / "verify" / "verify.patch"
    code, first = _run(spec, capsys)
    assert code == 1 and [t["status"] for t in first["tasks"]] == ["holds", "holds", "violated"]
    calls = _no_loading(monkeypatch)
    code, second = _run(spec, capsys)
    assert code == 1 and calls == [] and [t["status"] for t in second["tasks"]] == ["holds", "holds", "violated"]
    assert "never_two_cex.npy re-checked with onnxruntime" in _notes(second)[2]
    cex = spec.parent / "out" / "never_two_cex.npy"
    x = np.load(cex)
    np.save(cex, np.array([0.0, 0.0], np.float32).reshape(x.shape))  # outside the property's box
    code, third = _run(spec, capsys)
    assert code == 1 and len(calls) == 1 and len(_notes(third)) == 2  # the two proofs still apply
    assert np.array_equal(np.load(cex), x)  # found and saved again
    # the per-task re-check refuses a file inside the box that is not a counterexample, even with the same hash
    from patchlang.cache import _recheck_counterexample

    task = next(t for t in api.run_program(api.load_program(spec)).tasks if t.status == "violated")
    rc = task.recheck[0]
    from patchlang.model.runtime import OrtModel

    lo, hi = rc.box
    grid = np.array([[a, b] for a in np.linspace(lo[0], hi[0], 9) for b in np.linspace(lo[1], hi[1], 9)])
    labels = OrtModel(str(spec.parent / "tiny.onnx")).run(grid).argmax(axis=1)
    assert (labels == 2).any() and (labels != 2).any()
    np.save(cex, grid[labels != 2][0].astype(np.float32).reshape(x.shape))  # in the box, but safe
    assert "no longer violates" in _recheck_counterexample(rc, str(cex))
    np.save(cex, x)
    assert _recheck_counterexample(rc, str(cex)) is None


def test_repair_results_are_cached_and_timeouts_are_not(examples: Path, capsys, monkeypatch) -> None:
    spec = examples / "verify" / "repair.patch"
    code, first = _run(spec, capsys)
    assert code == 0 and first["tasks"][0]["status"] == "repaired"
    calls = _no_loading(monkeypatch)
    code, second = _run(spec, capsys)
    assert code == 0 and calls == [] and "tiny_no_two.onnx re-checked with onnxruntime" in _notes(second)[0]
    from patchlang.tasks.results import INCONCLUSIVE, TaskResult

    def timed_out(task, options):
        return TaskResult(task.name, task.kind, INCONCLUSIVE, message="time limit")

    monkeypatch.setattr(api, "run_task", timed_out)
    spec.write_text(spec.read_text().replace("limit iterations 20", "limit iterations 19"))
    assert main(["run", str(spec), "-q"]) == 3
    assert main(["run", str(spec), "-q"]) == 3 and len(calls) == 2  # never stored: loaded and run both times


def test_a_quiet_hit_imports_neither_rich_nor_scipy_nor_the_solvers(examples: Path) -> None:
    """The hit path's cost is its imports (issue 17 asks a hit 10x faster than the run): a fresh process that
    answers `run -q` from the cache must not import rich, scipy, onnx or a solver (it still imports numpy and
    onnxruntime: the saved file is re-checked)."""
    import os
    import subprocess
    import sys

    spec = examples / "quickstart" / "fix_digits.patch"
    env = {**os.environ, "PATCHLANG_CACHE": "1", "PYTHONPATH": str(Path(__file__).resolve().parents[1])}
    probe = ("import sys, io, contextlib\nfrom patchlang.cli import main\nbuf = io.StringIO()\n"
             "with contextlib.redirect_stdout(buf):\n    code = main(['run', sys.argv[1], '-q'])\n"
             "heavy = sorted({m.split('.')[0] for m in sys.modules} & {'rich', 'scipy', 'onnx', 'highspy', 'z3', "
             "'gurobipy', 'lark'})\nprint(code, buf.getvalue().strip().split('  ')[0], 'onnxruntime' in sys.modules, "
             "','.join(heavy) or '-')\n")
    first = subprocess.run([sys.executable, "-c", probe, str(spec)], env=env, capture_output=True, text=True,
                           timeout=300)
    assert first.stdout.split()[:3] == ["0", "all", "good"], first.stderr  # a miss: solved and stored
    second = subprocess.run([sys.executable, "-c", probe, str(spec)], env=env, capture_output=True, text=True,
                            timeout=300)
    assert second.stdout.split() == ["0", "all", "good", "True", "-"], second.stdout + second.stderr


def test_a_hit_from_the_command_line_flushes_its_output_and_reports(examples: Path, capsys) -> None:
    """`patchlang run` as a process ends at once after a hit (cli._exit_after_replay skips the interpreter's
    teardown): its stdout line, its exit code and its JSON report must be whole; an edited saved file is still a
    miss that runs the spec again."""
    import os
    import subprocess
    import sys

    spec = examples / "quickstart" / "fix_digits.patch"
    assert _run(spec, capsys)[0] == 0  # the miss, in this process: solved and stored
    report = spec.parent / "hit.json"
    env = {**os.environ, "PYTHONPATH": str(Path(__file__).resolve().parents[1])}
    env.pop("PYTHONUNBUFFERED", None)  # stdout to a pipe is block-buffered: only a flush puts the line out

    def hit() -> tuple[int, str, list[str]]:
        done = subprocess.run([sys.executable, "-m", "patchlang.cli", "run", str(spec), "-q", "--json", str(report)],
                              env=env, capture_output=True, text=True, timeout=300)
        return done.returncode, done.stdout, _notes(json.loads(report.read_text()))

    code, out, notes = hit()
    assert code == 0 and out.startswith("all good  (1 task(s), ") and out.endswith("exit 0)\n") and notes
    saved = spec.parent / "out" / "digits_fixed.onnx"
    saved.write_bytes(saved.read_bytes() + b"\0")
    code, out, notes = hit()
    assert code == 0 and out.startswith("all good") and not notes  # ran the ordinary way, file rewritten
