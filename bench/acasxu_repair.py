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
- ``finetune``: `repair ... by finetune`, every weight fine-tuned (Adam, step 3e-4) with a penalty at the
  counterexamples and agreement with the original network (outputs, and advisories kept with a gap) on 6000
  reference points of the input domain (``data`` without labels): 3000 uniform samples and the 3000 of 30,000
  uniform samples nearest an advisory boundary of the original network.

Fidelity: the share of 100,000 uniform samples of the input domain (the NNet header's normalised
minimum/maximum) whose advisory (argmin) is unchanged.  Writes bench/results/acasxu_repair.csv.
"""


from __future__ import annotations

import os

os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")

import argparse  # noqa: E402
import csv  # noqa: E402
import resource  # noqa: E402
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
          "seconds", "fidelity", "reverified", "cpu_seconds", "proof_seconds", "proof_cpu_seconds", "proof_boxes"]
PROP2_VIOLATORS = [(i, j) for i in range(2, 6) for j in range(1, 10) if (i, j) not in ((3, 3), (4, 2))]


def input_domain(nnet: Path) -> tuple[np.ndarray, np.ndarray]:
    """The normalised input domain from an NNet header: (min - mean) / range, (max - mean) / range."""
    lines = [ln for ln in nnet.read_text().splitlines() if ln.strip() and not ln.startswith("//")]
    nums = [np.array([float(v) for v in ln.split(",") if v.strip()]) for ln in lines[:7]]
    n_in = int(nums[0][1])
    mins, maxs, means, ranges = nums[3][:n_in], nums[4][:n_in], nums[5][:n_in], nums[6][:n_in]
    return (mins - means) / ranges, (maxs - means) / ranges


def cpu_seconds() -> float:
    """CPU seconds of this process and its children (the load-independent figure next to the wall seconds)."""
    own, kids = resource.getrusage(resource.RUSAGE_SELF), resource.getrusage(resource.RUSAGE_CHILDREN)
    return own.ru_utime + own.ru_stime + kids.ru_utime + kids.ru_stime


def reference_points(onnx: Path, uniform: np.ndarray, candidates: np.ndarray) -> np.ndarray:
    """Fine-tuning's `data`: half of ``uniform`` plus, as the other half, the ``candidates`` nearest an advisory
    boundary (smallest gap between the two lowest scores of the original network).  Why: the advisories that flip
    are those near a boundary; uniform points alone put few there."""
    net = load_model(str(onnx))
    y = net.forward(candidates)
    two = np.sort(y, axis=1)[:, :2]
    near = candidates[np.argsort(two[:, 1] - two[:, 0])[: len(uniform) // 2]]
    return np.vstack([uniform[: len(uniform) - len(near)], near])


def previous_rows(path: Path) -> list[tuple]:
    """Rows already in the CSV (as tuples in HEADER order); rows from before the method column are `minimal_keep`."""
    if not path.exists():
        return []
    with open(path) as f:
        old = list(csv.DictReader(f))
    return [tuple(r.get(k) or ("minimal_keep" if k == "method" else "") for k in HEADER) for r in old]


def _median(rows: list[dict], key: str) -> float:
    vals = [float(r[key]) for r in rows if r.get(key) not in ("", None)]
    return float(np.median(vals)) if vals else float("nan")


def side_by_side(path: Path) -> None:
    """Property 2, per method: networks run, repaired-and-proven count, fidelity (median, lowest), L∞/L1, wall and
    CPU seconds (medians over the proven ones); the same for the best proven method of each network; then per
    network each method's fidelity and the best one (the per-network answer to "which method when")."""
    if not path.exists():
        return
    with open(path) as f:
        rows = [r for r in csv.DictReader(f) if r["property"] == "prop_2"]
    methods = [m for m in METHODS if any(r["method"] == m for r in rows)]
    proven = [r for r in rows if r["status"] == "repaired" and r["reverified"] == "holds" and r["fidelity"]]
    best: dict[str, dict] = {}
    for r in proven:
        if r["network"] not in best or float(r["fidelity"]) > float(best[r["network"]]["fidelity"]):
            best[r["network"]] = r
    print("\nproperty 2, side by side (medians over the repaired-and-proven networks; fidelity on 100,000 uniform "
          "samples of the input domain)")
    print(f"{'method':14} {'networks':>8} {'proven':>7} {'fidelity':>9} {'min fid.':>9} {'linf':>8} {'l1':>8} "
          f"{'seconds':>8} {'cpu s':>8}")
    groups = [(m, [r for r in rows if r["method"] == m]) for m in methods] + [("best of each", list(best.values()))]
    for name, mine in groups:
        ok = [r for r in mine if r in proven]
        fid = [float(r["fidelity"]) for r in ok]
        nets = len({r["network"] for r in mine})
        print(f"{name:14} {nets:>8} {len(ok):>7} {_median(ok, 'fidelity'):>9.4f} {min(fid, default=float('nan')):>9.4f} "
              f"{_median(ok, 'linf'):>8.4f} {_median(ok, 'l1'):>8.2f} {_median(ok, 'seconds'):>8.1f} "
              f"{_median(ok, 'cpu_seconds'):>8.1f}")
    print(f"\n{'network':8} " + " ".join(f"{m:>13}" for m in methods) + "   best")
    for net in sorted({r["network"] for r in rows}, key=lambda n: tuple(int(v) for v in n[1:].split(","))):
        cells = []
        for m in methods:
            r = next((r for r in rows if r["network"] == net and r["method"] == m), None)
            cells.append("-" if r is None else (f"{float(r['fidelity']):.4f}" if r in proven else r["status"][:12]))
        print(f"{net:8} " + " ".join(f"{c:>13}" for c in cells) + f"   {best[net]['method'] if net in best else '-'}")
    wins = {m: sum(b["method"] == m for b in best.values()) for m in methods}
    print("best method per network: " + ", ".join(f"{m} {k}" for m, k in wins.items()))


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
    ap.add_argument("--samples", type=int, default=6000,
                    help="`finetune`: reference points (half uniform, half nearest an advisory boundary)")
    ap.add_argument("--rate", type=float, default=3e-4, help="`finetune`: Adam's step size")
    ap.add_argument("--keep", type=int, default=300,
                    help="uniform samples of the input domain whose advisories `minimal_keep` keeps")
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
    anchors = lo + np.random.default_rng(1).random((args.keep, 5)) * (hi - lo)
    rows = []
    kept = previous_rows(Path(args.csv))
    with tempfile.TemporaryDirectory(prefix="acas-repair-") as tmp:
        np.save(Path(tmp) / "anchors.npy", anchors.astype(np.float32))
        uniform = lo + np.random.default_rng(2).random((args.samples, 5)) * (hi - lo)
        candidates = lo + np.random.default_rng(3).random((10 * args.samples, 5)) * (hi - lo)
        for i, j, p in jobs:
            onnx = base / "onnx" / f"ACASXU_run2a_{i}_{j}_batch_2000.onnx"
            out = Path(tmp) / f"N{i}_{j}_p{p}.onnx"
            t0, c0 = time.perf_counter(), cpu_seconds()
            if args.method == "finetune":  # the points whose behaviour fine-tuning keeps (part of the repair's time)
                np.save(Path(tmp) / "domain.npy", reference_points(onnx, uniform, candidates).astype(np.float32))
            # the output layer first; when no patch of it exists (not when the verifier is merely slow), the next
            # layer of --layers; at each layer the asked margin, then the default one
            attempts = [(layer, m) for layer in args.layers.split(",") for m in (args.margin, 1e-3)]
            if args.method == "finetune":
                attempts = [("all", args.margin)]
            for layer, margin in attempts:
                src = (f'model net = "{onnx}" decide argmin\n'
                       f'points anchors = "anchors.npy"\n'
                       + ('points domain = "domain.npy"\n' if args.method == "finetune" else "")  # written above
                       + f'property p{p} = vnnlib "{base / "vnnlib" / f"prop_{p}.vnnlib"}"\n')
                if args.method == "finetune":
                    src += (f"repair net for p{p} as fixed by finetune {{\n    data domain\n    rate {args.rate:g}\n"
                            f"    margin {margin:g}\n"
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
            seconds, cpu = time.perf_counter() - t0, cpu_seconds() - c0
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
                         fidelity, proven, f"{cpu:.1f}", proof_s, proof_cpu, proof_boxes))
            print(f"N{i},{j} prop_{p}: {r.status:<13} linf {d.get('linf', float('nan')):.4g}  "
                  f"iterations {r.details.get('iterations')}  cex {r.details.get('counterexamples')}  "
                  f"{seconds:.1f}s ({cpu:.1f}s CPU)  {args.method}  layer {layer}  margin {margin:g}  fidelity {fidelity or '-'}  re-verified {proven or '-'}"
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
