"""Repairs on ACAS Xu: property 8 on N2,9 and property 2 on the networks that violate it, proven after repair.

    python bench/acasxu_repair.py                    # N2,9/prop 8, then prop 2 on violating networks
    python bench/acasxu_repair.py --limit 3 --time 600
    python bench/acasxu_repair.py --layers -2        # edit the last hidden layer instead of the output layer
    python bench/acasxu_repair.py --prop 8           # N2,9 only: the repair, then the proof of the written file
                                                     # (timed apart: proof_seconds; 1060 s before issue 12)

Each repair is a `.patch` program (written to a temporary folder, model and property read from the shared
benchmarks) run through patchlang's `repair` task, by one of three methods (``--method``, the CSV's ``method``
column; rows of the other methods already in the CSV are kept):

- ``minimal_keep`` (default): verify -> counterexamples -> minimal L∞ patch of the edited layer's weights and
  biases keeping the advisories of 300 uniform samples of the input domain -> verify again, until proven;
- ``minimal``: the same without the kept samples;
- ``finetune``: `repair ... by finetune`, every weight fine-tuned with a penalty at the counterexamples and
  agreement with the original outputs on 5000 uniform samples of the input domain (``data`` without labels).

Fidelity: the share of 100,000 uniform samples of the input domain (the NNet header's normalised
minimum/maximum) whose advisory (argmin) is unchanged.  Writes bench/results/acasxu_repair.csv.
"""


from __future__ import annotations

import os

os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")

import argparse  # noqa: E402
import csv  # noqa: E402
import sys  # noqa: E402
import tempfile  # noqa: E402
import time  # noqa: E402
from pathlib import Path  # noqa: E402

import numpy as np  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from patchlang.api import load_program_text, run_task  # noqa: E402
from patchlang.model.loader import load_model  # noqa: E402
from patchlang.tasks.patch import RunOptions  # noqa: E402
from patchlang.tasks.verify import property_cases, verify_cases  # noqa: E402
from shared_data import require  # noqa: E402

METHODS = ("minimal_keep", "minimal", "finetune")
HEADER = ["network", "property", "method", "layer", "margin", "status", "linf", "l1", "iterations", "counterexamples",
          "seconds", "fidelity", "reverified", "proof_seconds", "proof_cpu_seconds", "proof_boxes"]
PROP2_VIOLATORS = [(i, j) for i in range(2, 6) for j in range(1, 10) if (i, j) not in ((3, 3), (4, 2))]


def input_domain(nnet: Path) -> tuple[np.ndarray, np.ndarray]:
    """The normalised input domain from an NNet header: (min - mean) / range, (max - mean) / range."""
    lines = [ln for ln in nnet.read_text().splitlines() if ln.strip() and not ln.startswith("//")]
    nums = [np.array([float(v) for v in ln.split(",") if v.strip()]) for ln in lines[:7]]
    n_in = int(nums[0][1])
    mins, maxs, means, ranges = nums[3][:n_in], nums[4][:n_in], nums[5][:n_in], nums[6][:n_in]
    return (mins - means) / ranges, (maxs - means) / ranges


def previous_rows(path: Path) -> list[tuple]:
    """Rows already in the CSV (as tuples in HEADER order); rows from before the method column are `minimal_keep`."""
    if not path.exists():
        return []
    with open(path) as f:
        old = list(csv.DictReader(f))
    return [tuple(r.get(k) or ("minimal_keep" if k == "method" else "") for k in HEADER) for r in old]


def side_by_side(path: Path) -> None:
    """Per method, on property 2: repaired-and-proven count, fidelity, L∞ and seconds (medians), and the same on the
    networks every method was run on (a like-for-like comparison)."""
    if not path.exists():
        return
    with open(path) as f:
        rows = [r for r in csv.DictReader(f) if r["property"] == "prop_2"]
    methods = [m for m in METHODS if any(r["method"] == m for r in rows)]
    common = set.intersection(*({r["network"] for r in rows if r["method"] == m} for m in methods)) if methods else set()
    print(f"\nproperty 2, side by side (medians; 'common' = the {len(common)} networks every method was run on)")
    print(f"{'method':14} {'networks':>8} {'proven':>7} {'fidelity':>9} {'min fid.':>9} {'linf':>8} {'seconds':>8}"
          f" | {'common: fidelity':>16} {'linf':>8} {'seconds':>8}")
    for m in methods:
        mine = [r for r in rows if r["method"] == m]
        ok = [r for r in mine if r["status"] == "repaired" and r["reverified"] == "holds"]
        com = [r for r in ok if r["network"] in common]

        def med(rs, key):
            vals = [float(r[key]) for r in rs if r[key] not in ("", None)]
            return float(np.median(vals)) if vals else float("nan")

        fid = [float(r["fidelity"]) for r in ok if r["fidelity"]]
        print(f"{m:14} {len(mine):>8} {len(ok):>7} {med(ok, 'fidelity'):>9.4f} {min(fid, default=float('nan')):>9.4f} "
              f"{med(ok, 'linf'):>8.4f} {med(ok, 'seconds'):>8.1f} | {med(com, 'fidelity'):>16.4f} "
              f"{med(com, 'linf'):>8.4f} {med(com, 'seconds'):>8.1f}")


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--limit", type=int, help="only the first N repairs")
    ap.add_argument("--time", type=float, default=900.0, help="time limit per repair (seconds)")
    ap.add_argument("--iterations", type=int, default=40)
    ap.add_argument("--margin", type=float, default=0.02,
                    help="margin of the repaired property at the counterexamples (slack makes the proof easy)")
    ap.add_argument("--layers", default="-1,-2",
                    help="affine layers to edit, tried in order while no patch exists (default: output, then last "
                         "hidden layer)")
    ap.add_argument("--cex", type=int, default=8, help="counterexamples added per iteration")
    ap.add_argument("--verify", type=float, default=120.0,
                    help="seconds per verification inside the loop (`limit verify`; doubled after each undecided "
                         "one); the written file is re-verified with twice this")
    ap.add_argument("--prop", type=int, choices=(2, 8), help="only the repairs of this property")
    ap.add_argument("--only", action="append", metavar="I,J", help="only network N_{I,J} (repeatable)")
    ap.add_argument("--method", choices=METHODS, default="minimal_keep")
    ap.add_argument("--summary", action="store_true", help="only print the side-by-side table of the CSV")
    ap.add_argument("--csv", default=str(ROOT / "bench" / "results" / "acasxu_repair.csv"))
    args = ap.parse_args()
    if args.summary:
        side_by_side(Path(args.csv))
        return 0
    base = require("benchmarks/acasxu", "acasxu_repair.py")
    jobs = [(2, 9, 8)] + [(i, j, 2) for i, j in PROP2_VIOLATORS]
    if args.prop:
        jobs = [job for job in jobs if job[2] == args.prop]
    if args.only:
        wanted = {tuple(int(v) for v in o.split(",")) for o in args.only}
        jobs = [job for job in jobs if job[:2] in wanted]
    if args.limit:
        jobs = jobs[:args.limit]
    rng = np.random.default_rng(0)
    lo, hi = input_domain(base / "nnet" / "ACASXU_experimental_v2a_1_1.nnet")
    samples = lo + rng.random((100_000, 5)) * (hi - lo)
    anchors = lo + np.random.default_rng(1).random((300, 5)) * (hi - lo)
    rows = []
    kept = previous_rows(Path(args.csv))
    with tempfile.TemporaryDirectory(prefix="acas-repair-") as tmp:
        np.save(Path(tmp) / "anchors.npy", anchors.astype(np.float32))
        domain = lo + np.random.default_rng(2).random((5000, 5)) * (hi - lo)
        np.save(Path(tmp) / "domain.npy", domain.astype(np.float32))
        for i, j, p in jobs:
            onnx = base / "onnx" / f"ACASXU_run2a_{i}_{j}_batch_2000.onnx"
            out = Path(tmp) / f"N{i}_{j}_p{p}.onnx"
            t0 = time.perf_counter()
            # the output layer first; when no patch of it exists (not when the verifier is merely slow), the next
            # layer of --layers; at each layer the asked margin, then the default one
            attempts = [(layer, m) for layer in args.layers.split(",") for m in (args.margin, 1e-3)]
            if args.method == "finetune":
                attempts = [("all", args.margin)]
            for layer, margin in attempts:
                src = (f'model net = "{onnx}" decide argmin\n'
                       f'points anchors = "anchors.npy"\npoints domain = "domain.npy"\n'
                       f'property p{p} = vnnlib "{base / "vnnlib" / f"prop_{p}.vnnlib"}"\n')
                if args.method == "finetune":
                    src += (f"repair net for p{p} as fixed by finetune {{\n    data domain\n    margin {margin:g}\n"
                            f"    limit iterations {args.iterations}\n    limit time {args.time:g}\n"
                            f"    limit counterexamples {args.cex}\n    limit verify {args.verify:g}\n"
                            f'    save "{out}"\n}}\n')
                    program = load_program_text(src, tmp)
                    r = run_task(program.tasks[0], RunOptions())
                    break
                # `minimal`: no kept samples at all (a repair without `keep` would keep 300 by default)
                keep = "    keep anchors\n" if args.method == "minimal_keep" else "    limit samples 0\n"
                src += (f"repair net for p{p} as fixed {{\n"
                       f"    edit layer {layer} weights and biases\n"
                       f"{keep}    minimize linf\n    margin {margin:g}\n"
                       f"    limit iterations {args.iterations}\n    limit time {args.time:g}\n"
                       f"    limit counterexamples {args.cex}\n    limit verify {args.verify:g}\n"
                       f'    save "{out}"\n}}\n')
                program = load_program_text(src, tmp)
                r = run_task(program.tasks[0], RunOptions())
                if r.status != "not repaired":
                    break
            seconds = time.perf_counter() - t0
            net = program.models["net"].net
            fidelity = proven = proof_s = proof_cpu = proof_boxes = ""
            if r.status == "repaired" and out.exists():
                fixed = load_model(str(out))
                fixed.decision = "argmin"
                fidelity = f"{np.mean(net.labels(samples) == fixed.labels(samples)):.5f}"
                # trust nothing: prove the written file once more from scratch
                t1, c1 = time.perf_counter(), time.process_time()
                v = verify_cases(fixed, property_cases(program.properties[f"p{p}"], fixed),
                                 timeout=max(300.0, 2 * args.verify))
                proof_s, proof_cpu = f"{time.perf_counter() - t1:.1f}", f"{time.process_time() - c1:.1f}"
                proof_boxes = str(v.stats.get("sub-boxes", ""))
                proven = v.status
            d = r.distances or {}
            rows.append((f"N{i},{j}", f"prop_{p}", args.method, layer, f"{margin:g}", r.status, d.get("linf", ""), d.get("l1", ""),
                         r.details.get("iterations", ""), r.details.get("counterexamples", ""), f"{seconds:.1f}",
                         fidelity, proven, proof_s, proof_cpu, proof_boxes))
            print(f"N{i},{j} prop_{p}: {r.status:<13} linf {d.get('linf', float('nan')):.4g}  "
                  f"iterations {r.details.get('iterations')}  cex {r.details.get('counterexamples')}  "
                  f"{seconds:.1f}s  {args.method}  layer {layer}  margin {margin:g}  fidelity {fidelity or '-'}  re-verified {proven or '-'}"
                  f"{f' in {proof_s}s ({proof_cpu}s CPU, {proof_boxes} boxes)' if proof_s else ''}  {r.message[:90]}",
                  flush=True)
            for note in r.notes:
                print(f"      {note}", flush=True)
            Path(args.csv).parent.mkdir(parents=True, exist_ok=True)
            done = {(r[0], r[1], r[2]) for r in rows}
            with open(args.csv, "w", newline="") as f:
                w = csv.writer(f)
                w.writerow(HEADER)
                w.writerows([r for r in kept if (r[0], r[1], r[2]) not in done] + rows)
    ok = sum(r[5] == "repaired" for r in rows)
    print(f"\n{ok}/{len(rows)} repaired and proven; wrote {os.path.relpath(args.csv, ROOT)}")
    side_by_side(Path(args.csv))
    return 0


if __name__ == "__main__":
    sys.exit(main())
