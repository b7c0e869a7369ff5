"""`run --jobs N`: tasks in worker processes give the serial run's results, in source order; Ctrl-C stops every
worker and leaves no half-written file."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
import uuid
from pathlib import Path

import numpy as np
import pytest

from conftest import report_figures
from patchlang.cli import main



@pytest.fixture()
def examples(examples_copy: Path) -> Path:
    return examples_copy


_figures = report_figures


@pytest.mark.parametrize("spec", ["exact/exact.patch", "verify/verify.patch"])
def test_jobs_2_gives_the_serial_results_in_source_order(examples: Path, spec: str) -> None:
    reports = []
    for jobs in ("1", "2"):
        path = examples / f"r{jobs}.json"
        code = main(["run", str(examples / spec), "--jobs", jobs, "--json", str(path), "-q"])
        reports.append((code, json.loads(path.read_text())))
    (c1, r1), (c2, r2) = reports
    assert c1 == c2 and _figures(r1) == _figures(r2)


def test_solver_threads_are_budgeted_against_jobs(monkeypatch) -> None:
    from patchlang.run.parallel import solver_threads
    from patchlang.tasks.patch import RunOptions, solve_options

    monkeypatch.setattr(os, "cpu_count", lambda: 8)
    assert [solver_threads(j) for j in (1, 2, 3, 8, 16)] == [8, 4, 2, 1, 1]

    class Task:
        class backend:
            options: dict = {}

    assert solve_options(Task, RunOptions(threads=4)).threads == 4
    Task.backend.options = {"threads": 1}
    assert solve_options(Task, RunOptions(threads=4)).threads == 1  # the spec's own `threads` wins


def test_jobs_must_be_positive(examples: Path, capsys) -> None:
    assert main(["run", str(examples / "toy" / "toy.patch"), "--jobs", "0"]) == 2
    assert "--jobs must be at least 1" in capsys.readouterr().err


def _marked(mark: str) -> list[int]:
    pids = []
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/environ", "rb") as fh:
                if mark.encode() in fh.read():
                    pids.append(int(entry))
        except OSError:
            continue
    return pids


def test_ctrl_c_stops_every_worker_and_leaves_no_half_written_file(examples: Path) -> None:
    quick = examples / "quickstart"
    block = (quick / "hidden.patch").read_text().split("patch hidden on net")[1]
    head = (quick / "hidden.patch").read_text().split("patch hidden on net")[0]
    tasks = "".join(f"patch h{i} on net" + block.replace("}", f'    save "out/h{i}.onnx"\n}}') for i in range(6))
    spec = quick / "many.patch"
    spec.write_text(head + tasks)
    mark = f"PATCHLANG_TEST_{uuid.uuid4().hex}"
    env = {**os.environ, mark: "1"}
    proc = subprocess.Popen([sys.executable, "-m", "patchlang.cli", "run", str(spec), "--jobs", "2", "--no-cache",
                             "--json", str(quick / "r.json")], env=env, stdout=subprocess.PIPE,
                            stderr=subprocess.STDOUT)
    deadline = time.time() + 120
    while time.time() < deadline and len(_marked(mark)) < 3:  # the parent and at least two workers
        time.sleep(0.2)
    time.sleep(3.0)
    proc.send_signal(signal.SIGINT)
    out = proc.communicate(timeout=120)[0].decode()
    assert proc.returncode in (0, 3), out  # interrupted (or, on a fast machine, finished)
    time.sleep(1.0)
    assert _marked(mark) == [], "worker processes outlived the run"
    leftovers = [p.name for p in (quick / "out").glob(".*")] if (quick / "out").exists() else []
    assert leftovers == [], leftovers
    report = json.loads((quick / "r.json").read_text())
    if proc.returncode == 3:
        assert report["outcome"] == "interrupted"
    import onnx

    for saved in (quick / "out").glob("*.onnx") if (quick / "out").exists() else ():
        onnx.load(str(saved))  # every file written is whole


def test_workers_use_and_fill_the_cache(examples: Path, monkeypatch) -> None:
    monkeypatch.setenv("PATCHLANG_CACHE", "1")
    spec = str(examples / "exact" / "exact.patch")
    path = examples / "r.json"
    assert main(["run", spec, "--jobs", "2", "--json", str(path), "-q"]) == 0
    first = json.loads(path.read_text())
    assert main(["run", spec, "--jobs", "2", "--json", str(path), "-q"]) == 0
    second = json.loads(path.read_text())
    assert [any("cached result" in n for n in t["notes"]) for t in second["tasks"]] == [True, True]
    assert _figures(first) == _figures(second)


def test_workers_receive_the_program_without_its_named_point_sets(examples: Path) -> None:
    """A worker gets each task's own points (through its goals), not every named set of the spec: the named
    sets may be large (MNIST's 60 000 training images behind a `keep train[0:1000]`)."""
    import pickle

    from patchlang.api import load_program, versions
    from patchlang.cache import ResultCache
    from patchlang.run.parallel import worker_state
    from patchlang.tasks.patch import RunOptions

    program = load_program(str(examples / "quickstart" / "fix_digits.patch"))
    cache = ResultCache(program, RunOptions(), versions())
    state = pickle.loads(worker_state(program, RunOptions(), cache, len))
    lean = state["program"]
    assert program.points and lean.points == {} and lean.assertions == []
    assert state["cache"].program is lean and cache.program is program  # the caller's cache is untouched
    assert [t.name for t in lean.tasks] == [t.name for t in program.tasks]
    for mine, theirs in zip(lean.tasks, program.tasks):
        for g, h in zip(mine.goals, theirs.goals):
            assert np.array_equal(g.points.x, h.points.x)
    assert state["cache"].key(lean.tasks[0]) == cache.key(program.tasks[0])  # the same cache entry
