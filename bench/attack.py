"""Adversarial inputs on the AIGENT study's MNIST networks: both methods of `attack`, per image.

    python bench/attack.py                         # both networks, both methods, all 500 images
    python bench/attack.py --limit 40 --methods exact --networks aigent_mnist.onnx
    python bench/attack.py --time 10               # seconds per image (default 10)

Writes ``bench/results/attack.csv`` with ``network,index,label,new_label,method,success,l0,l1,l2,linf,
proven_min,seconds`` (one row per image and method; success and proven_min are true/false; l0 is the number of
changed pixels) and prints the figures the study compares: success rate, median pixels (count and %), L2, L∞,
median seconds per image, the share with a proven minimum (exact), and the Pielou evenness of the new labels.

Each run goes through the language (an `attack` block per chunk of images, ``target away from label``,
``domain [0, 1]``, ``minimize l0``), so the figures are the product's: every adversarial image was re-run in
float64 and by onnxruntime before it counted.  The method ``patch`` is AIGENT alone (no fallback to the fast
attacks), ``exact`` proves the minimum or reports the lower bound reached within the time per image.  Images the
network misclassifies are skipped (no row).  Reads PATCHLANG_SHARED (default ../shared); prints figures and
asserts nothing about speed.
"""

from __future__ import annotations

import os

os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")

import argparse  # noqa: E402
import csv  # noqa: E402
import re  # noqa: E402
import sys  # noqa: E402
import tempfile  # noqa: E402
import time  # noqa: E402
from collections import Counter  # noqa: E402
from pathlib import Path  # noqa: E402

import numpy as np  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "bench"))

from shared_data import require  # noqa: E402

from patchlang.api import RunOptions, load_program_text, run_program  # noqa: E402
from patchlang.tasks.attack_metrics import pielou_evenness  # noqa: E402

FIELDS = ["network", "index", "label", "new_label", "method", "success", "l0", "l1", "l2", "linf", "proven_min",
          "seconds"]
NETWORKS = ("aigent_mnist.onnx", "aigent_mnist_1.onnx")
SPEC = """model net = "{model}"
points test = "{points}"
attack adv on net {{
    inputs test[{start}:{stop}]
    target away from label
    domain [0, 1]
    minimize l0
    method {method}
    limit time {seconds}
}}
"""


def run_chunk(model: Path, points: Path, method: str, start: int, stop: int, seconds: float) -> list[dict]:
    text = SPEC.format(model=model, points=points, start=start, stop=stop, method=method, seconds=seconds)
    with tempfile.TemporaryDirectory() as tmp:
        program = load_program_text(text, tmp, filename=str(Path(tmp) / "bench_attack.patch"))
        result = run_program(program, RunOptions(write_files=False))
    return result.tasks[0].details["inputs"]


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--limit", type=int, default=500, help="the first N images (default all 500)")
    ap.add_argument("--methods", default="patch,exact")
    ap.add_argument("--networks", default=",".join(NETWORKS))
    ap.add_argument("--time", type=float, default=10.0, help="seconds per image (default 10)")
    ap.add_argument("--chunk", type=int, default=25, help="images per attack block (rows are written per chunk)")
    ap.add_argument("--out", default=str(ROOT / "bench" / "results" / "attack.csv"))
    ap.add_argument("--append", action="store_true", help="add to the CSV instead of replacing it")
    args = ap.parse_args()
    base = require("benchmarks/aigent_mnist", "attack.py")
    points = base / "aigent_mnist_500.npz"
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    mode = "a" if args.append and out.exists() else "w"
    with open(out, mode, newline="") as f:
        writer = csv.DictWriter(f, fieldnames=FIELDS)
        if mode == "w":
            writer.writeheader()
        for network in args.networks.split(","):
            for method in args.methods.split(","):
                rows: list[dict] = []
                markings: list[str] = []
                cpu0, wall0 = time.process_time(), time.perf_counter()
                for start in range(0, args.limit, args.chunk):
                    stop = min(args.limit, start + args.chunk)
                    for r in run_chunk(base / network, points, method, start, stop, args.time):
                        if r["status"] == "skipped":
                            continue
                        # patch: AIGENT alone; exact: found (by the fast attack or the MILP) and checked
                        success = r["status"] == "found" and (method == "exact" or r["method"] == "patch")
                        row = {"network": network, "index": int(re.search(r"\[(\d+)\]", r["index"]).group(1)),
                               "label": r["label"], "new_label": r["new_label"] if success else "",
                               "method": method, "success": str(success).lower(),
                               "l0": r["l0"] if success else "", "l1": _num(r["l1"], success),
                               "l2": _num(r["l2"], success), "linf": _num(r["linf"], success),
                               "proven_min": str(bool(r["proven_min"])).lower(), "seconds": f"{r['seconds']:.4f}"}
                        writer.writerow(row)
                        rows.append(row)
                        markings.append(r.get("marking", ""))
                    f.flush()
                    print(f"{network} {method}: {stop} images done", file=sys.stderr, flush=True)
                report(network, method, rows, time.process_time() - cpu0, time.perf_counter() - wall0, markings)
    print(f"wrote {out}")
    return 0


def _num(v, ok: bool) -> str:
    return f"{v:.6g}" if ok and v is not None else ""


def report(network: str, method: str, rows: list[dict], cpu: float, wall: float, markings: list[str]) -> None:
    """One line of figures; ``cpu``/``wall``: the seconds of the whole run (CPU: this process, single-threaded
    solvers; includes loading the model per chunk), per attacked image."""
    ok = [r for r in rows if r["success"] == "true"]
    secs = [float(r["seconds"]) for r in rows]
    l0 = [int(r["l0"]) for r in ok]
    line = (f"{network:<22} {method:<6} attacked {len(rows):>4}  success {len(ok):>4} "
            f"({100 * len(ok) / max(1, len(rows)):.1f}%)")
    if ok:
        line += (f"  pixels median {np.median(l0):g} ({100 * np.median(l0) / 784:.2f}%) mean {np.mean(l0):.2f}"
                 f"  L2 {np.median([float(r['l2']) for r in ok]):.3g}  Linf {np.median([float(r['linf']) for r in ok]):.3g}")
    line += f"  s/image median {np.median(secs):.3g} mean {np.mean(secs):.3g} max {np.max(secs):.3g}"
    if method == "exact":
        proven = [r for r in rows if r["proven_min"] == "true"]
        within = [r for r in proven if float(r["seconds"]) <= 10.0]
        line += f"  proven min {len(proven)} ({len(within)} within 10 s)"
    ev = pielou_evenness([int(r["new_label"]) for r in ok])
    line += f"  evenness {ev:.3f}" if ev is not None else ""
    n = max(1, len(rows))
    line += f"  run: wall {wall / n:.3g} s/image, CPU {cpu / n:.3g} s/image"
    if method == "patch":
        kinds = Counter(m.split(" (")[0] for m in markings if m)
        line += "  middle patch by: " + ", ".join(f"{k} {v}" for k, v in kinds.most_common())
    print(line, flush=True)


if __name__ == "__main__":
    sys.exit(main())
