"""The result cache (.patchlang/cache/ beside the spec) and the lock file (`patchlang lock`, `run --frozen`)."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from patchlang.cli import main

REPO = Path(__file__).resolve().parents[1]


@pytest.fixture()
def quick(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A copy of examples/ with the cache on; returns the quickstart spec."""
    shutil.copytree(REPO / "examples", tmp_path / "examples", ignore=shutil.ignore_patterns("out", ".patchlang"))
    monkeypatch.setenv("PATCHLANG_CACHE", "1")
    return tmp_path / "examples" / "quickstart" / "fix_digits.patch"


def _run(spec: Path, capsys, *extra: str) -> tuple[int, str, dict]:
    report = spec.parent / "r.json"
    code = main(["run", str(spec), "--json", str(report), *extra])
    out = capsys.readouterr()
    return code, out.out + out.err, json.loads(report.read_text())


def _cached(report: dict) -> bool:
    return any("cached result" in n for t in report["tasks"] for n in t.get("notes", []))


def test_second_run_hits_and_a_reformatted_spec_still_hits(quick: Path, capsys) -> None:
    code, out, first = _run(quick, capsys)
    assert code == 0 and not _cached(first) and "cached result" not in out
    assert len(list((quick.parent / ".patchlang" / "cache").glob("*.pkl"))) == 1
    code, out, second = _run(quick, capsys)
    assert code == 0 and _cached(second) and "cached result" in out and "re-checked with onnxruntime" in out
    assert second["tasks"][0]["distances"] == first["tasks"][0]["distances"]
    assert [a["holds"] for a in second["assertions"]] == [a["holds"] for a in first["assertions"]]
    quick.write_text("# a comment changes nothing\n" + quick.read_text().replace("    ", "  "))
    assert _cached(_run(quick, capsys)[2])
    assert not _cached(_run(quick, capsys, "--no-cache")[2])
    assert not _cached(_run(quick, capsys, "--seed", "3")[2])


def test_an_edited_spec_model_or_data_file_misses(quick: Path, capsys) -> None:
    _run(quick, capsys)
    models = quick.parent.parent / "models"
    text = quick.read_text()
    quick.write_text(text.replace("minimize linf", "minimize l1"))
    assert not _cached(_run(quick, capsys)[2])
    quick.write_text(text)  # the L1 run overwrote the saved file: the L∞ entry no longer matches it
    assert not _cached(_run(quick, capsys)[2])
    assert _cached(_run(quick, capsys)[2])
    data = dict(np.load(models / "digits_test.npz"))
    data["x"] = data["x"].copy()
    data["x"][0, 0] += 1e-3
    np.savez(models / "digits_test.npz", **data)
    assert not _cached(_run(quick, capsys)[2])
    assert _cached(_run(quick, capsys)[2])
    import onnx

    proto = onnx.load(str(models / "digits_mlp.onnx"))
    proto.doc_string = "edited"  # the same network, other bytes: another key
    onnx.save(proto, str(models / "digits_mlp.onnx"))
    assert not _cached(_run(quick, capsys)[2])


def test_an_edited_or_missing_saved_output_is_detected(quick: Path, capsys) -> None:
    _run(quick, capsys)
    saved = quick.parent / "out" / "digits_fixed.onnx"
    good = saved.read_bytes()
    import onnx
    from onnx import numpy_helper

    proto = onnx.load(str(saved))
    init = proto.graph.initializer[-1]
    init.CopyFrom(numpy_helper.from_array(numpy_helper.to_array(init) * 0, init.name))
    onnx.save(proto, str(saved))
    code, out, report = _run(quick, capsys)
    assert code == 0 and not _cached(report)  # ran again, and wrote the file again
    assert saved.read_bytes() == good
    saved.unlink()
    code, out, report = _run(quick, capsys)
    assert code == 0 and not _cached(report) and saved.exists()
    assert _cached(_run(quick, capsys)[2])


def test_the_recheck_itself_refuses_a_file_that_fails_the_goals(quick: Path, capsys) -> None:
    """Same content hash as stored but failing goals cannot happen on disk; the re-check is tested directly."""
    from patchlang.api import load_program, versions
    from patchlang.cache import ResultCache
    from patchlang.tasks.patch import RunOptions

    _run(quick, capsys)
    program = load_program(quick)
    cache = ResultCache(program, RunOptions(), versions())
    hit, why = cache.lookup(program.tasks[0])
    assert hit is not None and why == "cached"
    hit.patched = program.tasks[0].model.net  # the unpatched network fails `change wrong to label`
    assert not cache._recheck(program.tasks[0], hit)


def test_inconclusive_and_failed_results_are_never_stored(quick: Path, capsys, monkeypatch) -> None:
    from patchlang.api import load_program, versions
    from patchlang.cache import ResultCache
    from patchlang.tasks.patch import RunOptions
    from patchlang.tasks.results import INCONCLUSIVE, UNSOUND, TaskResult

    program = load_program(quick)
    cache = ResultCache(program, RunOptions(), versions())
    task = program.tasks[0]
    for status in (INCONCLUSIVE, UNSOUND, "unknown"):
        assert not cache.store(task, TaskResult(task.name, "patch", status))
    assert not (quick.parent / ".patchlang" / "cache").exists() or \
        not list((quick.parent / ".patchlang" / "cache").glob("*.pkl"))

    import patchlang.api as api

    def timed_out(task, options):
        return TaskResult(task.name, task.kind, INCONCLUSIVE, message="time limit")

    monkeypatch.setattr(api, "run_task", timed_out)
    assert main(["run", str(quick), "-q"]) == 3
    assert main(["run", str(quick), "-q"]) == 3
    assert not list((quick.parent / ".patchlang" / "cache").glob("*.pkl"))


def test_a_broken_entry_is_a_miss_and_an_entry_cannot_run_code(quick: Path, capsys) -> None:
    _run(quick, capsys)
    entries = list((quick.parent / ".patchlang" / "cache").rglob("*.pkl"))  # the task's and the whole run's
    assert len(entries) == 2
    for entry in entries:
        entry.write_bytes(entry.read_bytes()[:100])
    assert not _cached(_run(quick, capsys)[2])
    import pickle

    for entry in (quick.parent / ".patchlang" / "cache").rglob("*.pkl"):
        entry.write_bytes(pickle.dumps({"format": 2, "x": os.system}))
    assert not _cached(_run(quick, capsys)[2])


def test_two_processes_at_once_do_not_corrupt_the_cache(quick: Path) -> None:
    env = {**os.environ, "PATCHLANG_CACHE": "1"}
    cmd = [sys.executable, "-m", "patchlang.cli", "run", str(quick), "-q"]
    procs = [subprocess.Popen(cmd, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT) for _ in range(2)]
    outs = [p.communicate(timeout=300)[0].decode() for p in procs]
    assert [p.returncode for p in procs] == [0, 0], outs
    folder = quick.parent / ".patchlang" / "cache"
    assert len(list(folder.glob("*.pkl"))) == 1 and not list(folder.glob(".*.tmp"))
    done = subprocess.run([*cmd[:-1], "--json", str(quick.parent / "r.json")], env=env, capture_output=True,
                          timeout=300)
    assert done.returncode == 0
    assert _cached(json.loads((quick.parent / "r.json").read_text()))


def test_lock_and_frozen(quick: Path, capsys) -> None:
    assert main(["run", str(quick), "--frozen", "-q"]) == 2
    assert "no lock file" in capsys.readouterr().err
    assert main(["lock", str(quick)]) == 0
    lock = json.loads((quick.parent / "patchlang.lock").read_text())
    pinned = lock["specs"]["fix_digits.patch"]["models"]["net"]
    assert pinned["path"] == "../models/digits_mlp.onnx" and len(pinned["sha256"]) == 64
    assert main(["lock", str(quick.parent / "hidden.patch")]) == 0  # one lock file for the folder
    assert set(json.loads((quick.parent / "patchlang.lock").read_text())["specs"]) == {"fix_digits.patch",
                                                                                        "hidden.patch"}
    capsys.readouterr()
    assert main(["run", str(quick), "--frozen", "-q"]) == 0
    import onnx

    model = quick.parent.parent / "models" / "digits_mlp.onnx"
    proto = onnx.load(str(model))
    proto.doc_string = "drifted"
    onnx.save(proto, str(model))
    assert main(["run", str(quick), "--frozen", "-q"]) == 2
    err = capsys.readouterr().err
    assert "model `net` drifted" in err and pinned["sha256"] in err
    from patchlang.guard import sha256_input

    assert sha256_input(model) in err
