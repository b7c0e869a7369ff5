"""The result cache and `--jobs`: wall-clock ratios of whole `patchlang run` commands (each a fresh process).

    python bench/parallel.py                 # cache miss vs hit on the quickstart; --jobs 1 vs 2 on the examples
    python bench/parallel.py --repeat 3      # the median of 3 runs of each command

Works on a copy of examples/ in a temporary folder (nothing in the repository is written).  Cache: the first
`patchlang run examples/quickstart/fix_digits.patch` (a miss: solves and stores) against the second (a hit: the
saved file re-checked with onnxruntime, not solved).  Jobs: each example spec with several tasks, and a spec of
six copies of the quickstart's hidden-bias MILP, with `--no-cache --jobs 1` and `--no-cache --jobs 2`.  Prints the
times and ratios; no assertion on speed.
"""

from __future__ import annotations

import argparse
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
JOB_SPECS = ["exact/exact.patch", "verify/verify.patch", "toy/regions.patch", "quickstart/many_hidden.patch"]


def timed(args: list[str], cwd: Path, env: dict[str, str]) -> tuple[float, int]:
    t0 = time.perf_counter()
    done = subprocess.run([sys.executable, "-m", "patchlang.cli", *args], cwd=cwd, env=env,
                          stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    return time.perf_counter() - t0, done.returncode


def many_hidden(examples: Path) -> None:
    text = (examples / "quickstart" / "hidden.patch").read_text()
    head, block = text.split("patch hidden on net")
    tasks = "".join(f"patch h{i} on net" + block.replace("}", f'    save "out/h{i}.onnx"\n}}') for i in range(6))
    (examples / "quickstart" / "many_hidden.patch").write_text(head + tasks)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeat", type=int, default=1, help="runs of each command (the median is printed)")
    args = parser.parse_args()
    env = {**os.environ, "PATCHLANG_CACHE": "1", "PYTHONPATH": str(ROOT)}
    print(f"cores {os.cpu_count()}, repeat {args.repeat}")
    with tempfile.TemporaryDirectory(prefix="patchlang-bench-") as tmp:
        examples = Path(tmp) / "examples"
        shutil.copytree(ROOT / "examples", examples, ignore=shutil.ignore_patterns("out", ".patchlang"))
        many_hidden(examples)
        spec = "quickstart/fix_digits.patch"
        misses, hits = [], []
        for _ in range(args.repeat):
            shutil.rmtree(examples / "quickstart" / ".patchlang", ignore_errors=True)
            misses.append(timed(["run", spec, "-q"], examples, env)[0])
            hits.append(timed(["run", spec, "-q"], examples, env)[0])
        miss, hit = statistics.median(misses), statistics.median(hits)
        print(f"cache  {spec}: first run (miss) {miss:.2f}s, second run (hit, re-checked) {hit:.2f}s, "
              f"ratio {miss / hit:.2f}x")
        for spec in JOB_SPECS:
            times = {}
            for jobs in (1, 2):
                runs = [timed(["run", spec, "--no-cache", "--jobs", str(jobs), "-q"], examples, env)
                        for _ in range(args.repeat)]
                times[jobs] = statistics.median(t for t, _ in runs)
                codes = {c for _, c in runs}
            print(f"jobs   {spec}: --jobs 1 {times[1]:.2f}s, --jobs 2 {times[2]:.2f}s, "
                  f"speed-up {times[1] / times[2]:.2f}x (exit {', '.join(map(str, sorted(codes)))})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
