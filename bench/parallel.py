"""The result cache, `--jobs` and a local Dask cluster: wall-clock ratios of whole `patchlang run` commands, measured
in one run (each command a fresh process).

    python bench/parallel.py                              # everything (the full ACAS Xu and watermark sets)
    python bench/parallel.py --acasxu-every 4 --watermark-limit 40    # a subset: a few minutes
    python bench/parallel.py --only cache --repeat 5      # the cache ratio alone, median of 5
    python bench/parallel.py --only acasxu                # one section (the CSV keeps the other sections' rows)

1. cache: the first `patchlang run examples/quickstart/fix_digits.patch` (a miss: solves, stores) against the
   second (a hit: no parsing, no model loading; every input re-hashed and the saved file re-checked with
   onnxruntime), wall clock and CPU time of the process, and the floor of any such re-check: a process that only
   imports numpy and onnxruntime; and the same on the generated watermark spec.
2. examples: each example spec with several tasks, and six copies of the quickstart's hidden-bias MILP, with
   `--jobs 1` and `--jobs 2`.
3. acasxu: the 186 VNN-COMP ACAS Xu instances (shared/benchmarks/acasxu) as one generated spec of `verify` tasks,
   with `--jobs 1`, `--jobs 2` and `--executor local --jobs 2` (a Dask cluster of 2 worker processes).
4. watermark: the 100 single watermark removals (`change wm[i] away from label`, L∞) as one generated spec, the
   same three ways.

Every command runs with a bytecode cache (``PYTHONPYCACHEPREFIX`` in the temporary folder, warmed by one untimed
miss and hit first; ``PYTHONDONTWRITEBYTECODE`` is dropped for the children): an installed package has its
``.pyc`` files, and without them every process, worker included, recompiles patchlang from source (about 0.1 s
of a hit's 0.2 s CPU).  The specs run on a copy of examples/ and in a temporary folder (nothing in the repository is written but
``bench/results/parallel.csv``).  Reads the shared benchmarks from PATCHLANG_SHARED (default ../shared); a section
whose data is missing is skipped with a message.  The machine's load average is printed before and after: on a
shared machine the ratios move with the other work, so read them with that caveat.  No assertion on speed.
"""

from __future__ import annotations

import argparse
import csv
import json
import os
import resource
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(Path(__file__).resolve().parent))
JOB_SPECS = ["exact/exact.patch", "verify/verify.patch", "toy/regions.patch", "quickstart/many_hidden.patch"]
MODES = {"jobs 1": ["--jobs", "1"], "jobs 2": ["--jobs", "2"], "dask local 2": ["--executor", "local", "--jobs", "2"]}
ROWS: list[dict[str, object]] = []
FLOOR = [sys.executable, "-c", "import numpy, onnxruntime"]  # what any onnxruntime re-check costs a fresh process


def timed(args: list[str], cwd: Path, env: dict[str, str], command: list[str] | None = None) \
        -> tuple[float, float, int]:
    """(wall seconds, CPU seconds of the child, exit code) of one `patchlang` process (or of ``command``)."""
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    t0 = time.perf_counter()
    done = subprocess.run(command or [sys.executable, "-m", "patchlang.cli", *args], cwd=cwd, env=env,
                          stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    wall = time.perf_counter() - t0
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    return wall, (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime), done.returncode


def record(section: str, spec: str, mode: str, seconds: float, code: int, ratio: float | None = None,
           extra: str = "") -> None:
    ROWS.append({"section": section, "spec": spec, "mode": mode, "seconds": f"{seconds:.3f}", "exit": code,
                 "ratio": "" if ratio is None else f"{ratio:.2f}", "note": extra,
                 "load": f"{os.getloadavg()[0]:.2f}"})


def autogroup_note() -> str | None:
    """Why `nice` may not leave this bench the cores: with the kernel's autogroup scheduling (Linux default) CPU
    time is shared fairly between sessions first, and `nice` only orders the processes inside a session; a bench
    with `--jobs 2` then gets its session's share, whatever the other sessions' nice values (measured on the
    shared 2-core machine: niced processes of other sessions took 20 % CPU each, this bench's 10 %)."""
    try:
        with open("/proc/sys/kernel/sched_autogroup_enabled") as f:
            if f.read().strip() != "1":
                return None
    except OSError:
        return None
    return ("note: autogroup scheduling is on: other sessions' niced work still takes its fair share of the "
            "cores, so --jobs 2 gains only what the other sessions leave idle")


def load() -> str:
    one, five, _ = os.getloadavg()
    return f"load average {one:.2f} (1 min), {five:.2f} (5 min) on {os.cpu_count()} cores"


# ------------------------------------------------------------------------------------------------ cache
def cache_ratio(label: str, spec: str, cwd: Path, env: dict[str, str], repeat: int, cache_dir: Path,
                extra: list[str] = ()) -> None:
    misses, hits, floors, cpu_m, cpu_h, cpu_f, codes = [], [], [], [], [], [], set()
    for _ in range(repeat):
        shutil.rmtree(cache_dir, ignore_errors=True)
        wall, cpu, code = timed(["run", spec, "-q", *extra], cwd, env)
        misses.append(wall), cpu_m.append(cpu), codes.add(code)
        wall, cpu, code = timed(["run", spec, "-q", *extra], cwd, env)
        hits.append(wall), cpu_h.append(cpu), codes.add(code)
        wall, cpu, _ = timed([], cwd, env, FLOOR)
        floors.append(wall), cpu_f.append(cpu)
    miss, hit, floor = statistics.median(misses), statistics.median(hits), statistics.median(floors)
    cm, ch, cf = statistics.median(cpu_m), statistics.median(cpu_h), statistics.median(cpu_f)
    print(f"cache  {label}: first run (miss) {miss:.2f}s, second run (hit, re-checked) {hit:.2f}s, "
          f"ratio {miss / hit:.1f}x wall; CPU {cm:.2f}s vs {ch:.2f}s, ratio {cm / ch:.1f}x "
          f"(exit {', '.join(map(str, sorted(codes)))}); floor (python importing numpy and onnxruntime, which "
          f"the re-check needs) {floor:.2f}s wall, {cf:.2f}s CPU")
    record("cache", label, "miss", miss, max(codes))
    record("cache", label, "hit", hit, max(codes), miss / hit, f"cpu ratio {cm / ch:.2f}")
    record("cache", label, "floor", floor, 0, miss / floor, f"cpu {cf:.3f}s; python -c 'import numpy, onnxruntime'")


def many_hidden(examples: Path) -> None:
    text = (examples / "quickstart" / "hidden.patch").read_text()
    head, block = text.split("patch hidden on net")
    tasks = "".join(f"patch h{i} on net" + block.replace("}", f'    save "out/h{i}.onnx"\n}}') for i in range(6))
    (examples / "quickstart" / "many_hidden.patch").write_text(head + tasks)


# ------------------------------------------------------------------------------------------------ generated specs
def acasxu_spec(shared: Path, every: int, limit: int | None, timeout: float) -> tuple[str, int]:
    """One `verify` task per instance of acasxu_instances.csv (every ``every``-th, at most ``limit``)."""
    bench = shared / "benchmarks" / "acasxu"
    rows = [r for r in csv.reader((bench / "acasxu_instances.csv").open()) if r]
    rows = rows[::every][:limit]
    models = sorted({r[0] for r in rows})
    props = sorted({r[1] for r in rows})
    name = {m: "n" + m.split("_")[2] + "_" + m.split("_")[3] for m in models}
    lines = ["# generated by bench/parallel.py"]
    lines += [f'model {name[m]} = "{bench / "onnx" / m}"' for m in models]
    lines += [f'property {p.split(".")[0]} = vnnlib "{bench / "vnnlib" / p}"' for p in props]
    lines += [f"verify {name[m]} satisfies {p.split('.')[0]} timeout {timeout:g}" for m, p, *_ in rows]
    return "\n".join(lines) + "\n", len(rows)


def watermark_spec(shared: Path, limit: int) -> str:
    from watermark import HEADER, PATCH

    wm, mnist = shared / "benchmarks" / "watermark_mnist", shared / "datasets" / "mnist"
    return HEADER.format(wm=wm, mnist=mnist) + "".join(
        PATCH.format(name=f"linf_{i}", target=f"wm[{i}] away from label", keep="", norm="linf", margin="")
        for i in range(limit))


def modes(section: str, label: str, spec: Path, env: dict[str, str], tasks: int) -> None:
    """The spec with each of MODES (cache off), its statuses from the JSON report, and the speed-ups."""
    times: dict[str, float] = {}
    for mode, flags in MODES.items():
        report = spec.parent / f"{spec.stem}-{mode.replace(' ', '_')}.json"
        wall, cpu, code = timed(["run", str(spec), "--no-cache", "--no-save", "-q", "--json", str(report), *flags],
                                spec.parent, env)
        times[mode] = wall
        try:
            statuses = [t["status"] for t in json.loads(report.read_text())["tasks"]]
            summary = ", ".join(f"{statuses.count(s)} {s}" for s in sorted(set(statuses)))
        except (OSError, ValueError, KeyError):
            summary = "no report"
        ratio = times["jobs 1"] / wall if mode != "jobs 1" else None
        print(f"{section:<9} {label} ({tasks} tasks) {mode:<13} {wall:7.1f}s  exit {code}  "
              + (f"speed-up {ratio:.2f}x  " if ratio else "") + f"[{summary}] (CPU {cpu:.1f}s, {load()})",
              flush=True)
        record(section, label, mode, wall, code, ratio, f"{summary}; cpu {cpu:.1f}s")


def main() -> int:
    from shared_data import shared_root

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeat", type=int, default=1, help="cache section: runs of each command (median)")
    parser.add_argument("--only", action="append", choices=("cache", "examples", "acasxu", "watermark"))
    parser.add_argument("--acasxu-every", type=int, default=1, help="every N-th ACAS Xu instance (default all)")
    parser.add_argument("--acasxu-limit", type=int, help="at most N ACAS Xu instances")
    parser.add_argument("--acasxu-timeout", type=float, default=120.0, help="seconds per instance (default 120)")
    parser.add_argument("--watermark-limit", type=int, default=100, help="the first N watermarks (default 100)")
    parser.add_argument("--csv", default=str(ROOT / "bench" / "results" / "parallel.csv"))
    args = parser.parse_args()
    only = set(args.only or ("cache", "examples", "acasxu", "watermark"))
    env = {**os.environ, "PATCHLANG_CACHE": "1", "PYTHONPATH": str(ROOT), "OPENBLAS_NUM_THREADS": "1"}
    env.pop("PYTHONDONTWRITEBYTECODE", None)
    shared = shared_root()
    print(f"cores {os.cpu_count()}, repeat {args.repeat}; {load()} at the start")
    print("note: a shared machine: other processes take cores too, so the ratios below move with the load")
    if autogroup_note():
        print(autogroup_note())
    with tempfile.TemporaryDirectory(prefix="patchlang-bench-") as tmp:
        env["PYTHONPYCACHEPREFIX"] = str(Path(tmp) / "pycache")
        examples = Path(tmp) / "examples"
        shutil.copytree(ROOT / "examples", examples, ignore=shutil.ignore_patterns("out", ".patchlang"))
        many_hidden(examples)
        for _ in range(2):  # untimed: fills the bytecode cache (a miss, then a hit)
            timed(["run", "quickstart/fix_digits.patch", "-q"], examples, env)
        if "cache" in only:
            cache_ratio("quickstart/fix_digits.patch", "quickstart/fix_digits.patch", examples, env, args.repeat,
                        examples / "quickstart" / ".patchlang")
        if "examples" in only:
            for spec in JOB_SPECS:
                times = {}
                for jobs in (1, 2):
                    wall, _, code = timed(["run", spec, "--no-cache", "--jobs", str(jobs), "-q"], examples, env)
                    times[jobs] = wall
                    record("examples", spec, f"jobs {jobs}", wall, code,
                           times[1] / wall if jobs == 2 else None)
                print(f"examples  {spec}: --jobs 1 {times[1]:.2f}s, --jobs 2 {times[2]:.2f}s, "
                      f"speed-up {times[1] / times[2]:.2f}x", flush=True)
        gen = Path(tmp) / "generated"
        gen.mkdir()
        if "acasxu" in only:
            if not (shared / "benchmarks" / "acasxu" / "acasxu_instances.csv").exists():
                print(f"acasxu    skipped: {shared}/benchmarks/acasxu not found (set PATCHLANG_SHARED)")
            else:
                text, n = acasxu_spec(shared, args.acasxu_every, args.acasxu_limit, args.acasxu_timeout)
                (gen / "acasxu.patch").write_text(text)
                modes("acasxu", f"every {args.acasxu_every}", gen / "acasxu.patch", env, n)
        if "watermark" in only:
            if not (shared / "benchmarks" / "watermark_mnist").exists():
                print(f"watermark skipped: {shared}/benchmarks/watermark_mnist not found (set PATCHLANG_SHARED)")
            else:
                n = max(1, min(100, args.watermark_limit))
                (gen / "watermark.patch").write_text(watermark_spec(shared, n))
                modes("watermark", f"first {n}", gen / "watermark.patch", env, n)
                cache_ratio(f"watermark first {n}", str(gen / "watermark.patch"), gen, env, 1,
                            gen / ".patchlang", ["--no-save"])
    print(f"{load()} at the end")
    out = Path(args.csv)
    out.parent.mkdir(parents=True, exist_ok=True)
    fields = ["section", "spec", "mode", "seconds", "exit", "ratio", "note", "load"]
    # the rows not measured this time stay (a long bench may be run section by section; the watermark section also
    # writes cache rows, which `--only cache` does not measure)
    new = {(r["section"], r["spec"], r["mode"]) for r in ROWS}
    kept = []
    if out.exists():
        with out.open(newline="") as f:
            kept = [r for r in csv.DictReader(f) if (r.get("section"), r.get("spec"), r.get("mode")) not in new]
    with out.open("w", newline="") as f:
        w = csv.DictWriter(f, fields, extrasaction="ignore", restval="")
        w.writeheader()
        w.writerows(kept + ROWS)
    print(f"wrote {os.path.relpath(out, ROOT)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
