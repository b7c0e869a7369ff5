"""MNIST robustness (VNN-COMP mnist_fc): verify the L∞ properties of the 256x2 and 256x4 networks with timeouts.

    python bench/mnist_fc.py                         # 256x2 and 256x4, every prop in mnistfc_instances.csv
    python bench/mnist_fc.py --timeout 60 --nets 256x2
    python bench/mnist_fc.py --nets 256x4 --only prop_3_0.03,prop_5_0.03   # a partial run updates its rows

With 784 inputs, splitting the input box does not pay: patchlang falsifies first (projected gradient steps on
the satisfaction function), then branches over ReLU phases (patchlang.compile.branch_and_bound: CROWN bounds with
optimised slopes and split multipliers, best-first, MILP leaves); `--strategy milp` gives the earlier method, one
MILP over the whole ε-box.  Every counterexample is confirmed with onnxruntime.  Writes bench/results/mnist_fc.csv.
"""

from __future__ import annotations

import os

os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")

import argparse  # noqa: E402
import csv  # noqa: E402
import sys  # noqa: E402
import time  # noqa: E402
from pathlib import Path  # noqa: E402

import numpy as np  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from patchlang.compile.verify import RegionCase, unsafe_from_vnnlib  # noqa: E402
from patchlang.model.loader import load_model  # noqa: E402
from patchlang.inputs.vnnlib import parse_vnnlib  # noqa: E402
from patchlang.tasks.verify import verify_cases  # noqa: E402
from shared_data import require  # noqa: E402


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--timeout", type=float, default=120.0)
    ap.add_argument("--nets", default="256x2,256x4")
    ap.add_argument("--limit", type=int, help="only the first N instances per network")
    ap.add_argument("--only", help="comma-separated vnnlib names (e.g. prop_3_0.03,prop_5_0.03): only these")
    ap.add_argument("--strategy", default="auto", help="auto (relu-split for these networks) | relu-split | milp")
    ap.add_argument("--csv", default=str(ROOT / "bench" / "results" / "mnist_fc.csv"))
    args = ap.parse_args()
    base = require("benchmarks/mnist_fc", "mnist_fc.py")
    with open(base / "mnistfc_instances.csv") as f:
        instances = [r for r in csv.reader(f) if r]
    rows = []
    for size in args.nets.split(","):
        mine = [r for r in instances if f"256x{size.split('x')[-1]}" in r[0]]
        if args.only:
            wanted = {w if w.endswith(".vnnlib") else w + ".vnnlib" for w in args.only.split(",")}
            mine = [r for r in mine if Path(r[1]).name in wanted]
        if args.limit:
            mine = mine[:args.limit]
        for onnx_name, vnn_name, *_ in mine:
            onnx = base / "onnx" / Path(onnx_name).name
            net = load_model(str(onnx))
            vnn = base / "vnnlib" / Path(vnn_name).name
            if not vnn.exists():  # the instance list names props 0-14; the shared copy holds 0-9
                print(f"{onnx.name:<24} {vnn.name:<22} skipped: not in the shared benchmarks", flush=True)
                continue
            prop = parse_vnnlib(vnn)
            cases = [RegionCase(c.lo, c.hi, unsafe_from_vnnlib(c.unsafe, net.output_size)) for c in prop.cases]
            t0, c0 = time.perf_counter(), time.process_time()
            v = verify_cases(net, cases, timeout=args.timeout, strategy=args.strategy)
            seconds, cpu = time.perf_counter() - t0, time.process_time() - c0
            rows.append((onnx.name, Path(vnn_name).name, v.status, f"{seconds:.2f}"))
            print(f"{onnx.name:<24} {Path(vnn_name).name:<22} {v.status:<9} {seconds:7.2f}s cpu {cpu:7.2f}s "
                  f"domains {v.stats.get('domains', '-')} {v.found_by} "
                  f"{v.reason[:90] if v.status == 'unknown' else ''}", flush=True)
    Path(args.csv).parent.mkdir(parents=True, exist_ok=True)
    out = rows
    if (args.only or args.limit or args.nets != "256x2,256x4") and Path(args.csv).exists():
        # a partial run updates its instances' rows and keeps the others (in the file's order)
        with open(args.csv) as f:
            old = [tuple(r) for r in csv.reader(f)][1:]
        new = {(r[0], r[1]): r for r in rows}
        out = [new.pop((r[0], r[1]), r) for r in old] + list(new.values())
    with open(args.csv, "w", newline="") as f:
        w = csv.writer(f)
        w.writerow(["onnx", "vnnlib", "result", "seconds"])
        w.writerows(out)
    counts = {s: sum(r[2] == s for r in rows) for s in ("holds", "violated", "unknown")}
    print(f"\n{len(rows)} instances: {counts}; wrote {os.path.relpath(args.csv, ROOT)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
