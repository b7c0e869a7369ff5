"""Exact Z3 against HiGHS on the bias-patching experiment: the same spec, the same run, times and their ratio.

The experiment and its points come from ``bench/bias_patch.py`` (MNIST 784 -> PCA 100 -> 33 ReLU -> 10; keep
correctly classified images, change a '1' into a '7', only the biases of the two trainable layers move,
``bound linf <= 0.25``, minimise L∞).  Each case is solved with ``--backend highs`` and ``--backend z3``, with and
without ``round significand 10`` (the study rounded to make Z3 faster); both answers are checked independently
by the patch task as usual.  Results go to ``bench/results/backends.csv``.

    python bench/backends.py                     # the original case (10 keep, 1 change), plain and rounded
    python bench/backends.py --cases 10:1 100:1 --time-limit 300
"""

from __future__ import annotations

import os
import argparse
import csv
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "bench"))
sys.path.insert(0, str(ROOT / "bench" / "models"))

from bias_patch import BOUND, SPEC, TARGET_LABEL, pick_points  # noqa: E402
from train_pca_mnist import mnist, model_path  # noqa: E402

from patchlang.api import load_program_text, run_program  # noqa: E402
from patchlang.model import load_model  # noqa: E402
from patchlang.tasks.patch import RunOptions  # noqa: E402

BACKENDS = ("highs", "z3")


def spec_text(model: Path, rounding: int | None) -> str:
    text = SPEC.format(model=model, target=TARGET_LABEL, bound=BOUND)
    if rounding is not None:
        text = text.replace("    minimize linf\n", f"    minimize linf\n    round significand {rounding}\n")
    return text


def solve(text: str, x: np.ndarray, y: np.ndarray, keep: np.ndarray, move: np.ndarray, backend: str,
          time_limit: float):
    with tempfile.TemporaryDirectory(prefix="backends_") as tmp:
        np.savez(Path(tmp) / "keep.npz", x=x[keep], y=y[keep])
        np.savez(Path(tmp) / "move.npz", x=x[move], y=y[move])
        program = load_program_text(text, tmp, "backends.patch")
        t0 = time.perf_counter()
        run = run_program(program, RunOptions(backend=backend, time_limit=time_limit, write_files=False))
        return run.tasks[0], time.perf_counter() - t0


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--cases", nargs="*", default=["10:1"], help="keep:change pairs (default 10:1)")
    ap.add_argument("--time-limit", type=float, default=600.0, help="seconds per solver call (default 600)")
    ap.add_argument("--csv", default=str(ROOT / "bench" / "results" / "backends.csv"))
    args = ap.parse_args()

    model = model_path()
    net = load_model(str(model))
    x, y = mnist("t10k")
    out = net.forward(x)
    rows = []
    print(" keep change  rounding  backend  status        seconds  linf          exact/bracket")
    for case in args.cases:
        n_keep, n_move = (int(v) for v in case.split(":"))
        keep, move = pick_points(out, y, n_keep, n_move)
        for rounding in (None, 10):
            text = spec_text(model, rounding)
            times: dict[str, float] = {}
            for backend in BACKENDS:
                res, wall = solve(text, x, y, keep, move, backend, args.time_limit)
                wall -= res.seconds.get("explain", 0.0)
                times[backend] = wall
                linf = res.distances.get("linf")
                exact = res.details.get("z3", "") if backend == "z3" else ""
                rows.append({"keep": n_keep, "change": n_move, "rounding": rounding or "", "backend": backend,
                             "status": res.status, "seconds": round(wall, 3),
                             "solve_seconds": round(res.seconds.get("solve", 0.0), 3),
                             "linf": "" if linf is None else f"{linf:.10g}",
                             "objective": "" if res.objective is None else f"{res.objective:.10g}",
                             "z3": exact, "ratio_z3_over_highs": ""})
                print(f" {n_keep:>4} {n_move:>6}  {str(rounding or '-'):>8}  {backend:<7}  {res.status:<12} "
                      f"{wall:8.2f}  {'-' if linf is None else f'{linf:.8g}':<12}  {exact}", flush=True)
            ratio = times["z3"] / max(times["highs"], 1e-9)
            rows[-1]["ratio_z3_over_highs"] = round(ratio, 2)
            print(f"        z3 / highs time ratio: {ratio:.1f}x", flush=True)
    Path(args.csv).parent.mkdir(parents=True, exist_ok=True)
    with open(args.csv, "w", newline="") as f:
        w = csv.DictWriter(f, fieldnames=list(rows[0]))
        w.writeheader()
        w.writerows(rows)
    print(f"wrote {os.path.relpath(args.csv, ROOT)}")


if __name__ == "__main__":
    main()
