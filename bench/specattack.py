"""Specification attacks on ACAS Xu: queries and seconds to the first counterexample, per falsifier.

    python bench/specattack.py                          # 47 violated instances + property 2 on all 45 networks
    python bench/specattack.py --queries 5000 --seconds 3   # a smaller budget per instance
    python bench/specattack.py --falsifiers shgo,random --limit 5

Two studies, one CSV (``bench/results/specattack.csv``: ``onnx,vnnlib,falsifier,found,queries,seconds,fsat``):

1. the instances ``bench/results/acasxu.csv`` lists as ``violated`` (47: decided by patchlang's complete
   verifier), attacked by every falsifier of ``falsify with`` (``auto`` is one of them, not run twice) with a
   budget per instance (default 20,000 queries and 10 s);
2. the SpecAttack study's three-way comparison (SHGO, differential evolution, basin hopping) redone on property 2
   over all 45 networks (the networks where it holds show what a falsifier spends when there is nothing to find),
   twice: as patchlang runs them (after the shared *focus* sampling stage) and as bare scipy optimisers
   (``focus = 0``; these rows read ``shgo focus=0`` etc. in the falsifier column).

``queries`` are network evaluations (onnxruntime on the ONNX file) up to and including the first confirmed
counterexample, else all spent; ``fsat`` is the satisfaction function at the counterexample (float64; negative,
and the more negative the deeper inside the unsafe region), else the smallest value seen.  Every counterexample
is confirmed in float64 and by onnxruntime (the falsifier's confirmer) and re-checked here once more against
the VNN-LIB file with onnxruntime on the original file.  Reads the shared benchmarks from PATCHLANG_SHARED
(default ../shared); exit 2 when they are absent.  Prints figures; asserts nothing about speed.
"""

from __future__ import annotations

import os

os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")

import argparse  # noqa: E402
import csv  # noqa: E402
import sys  # noqa: E402
from pathlib import Path  # noqa: E402

import numpy as np  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from patchlang.compile.verify import RegionCase, unsafe_from_vnnlib  # noqa: E402
from patchlang.inputs.vnnlib import parse_vnnlib  # noqa: E402
from patchlang.model.loader import load_model  # noqa: E402
from patchlang.model.runtime import OrtModel  # noqa: E402
from patchlang.tasks.falsifiers import AttackOptions, attack_cases, model_oracle  # noqa: E402
from patchlang.tasks.verify import Confirmer  # noqa: E402

ALL = ("shgo", "differential_evolution", "basinhopping", "gradient", "random")
THREE = ("shgo", "differential_evolution", "basinhopping")
FIELDS = ["onnx", "vnnlib", "falsifier", "found", "queries", "seconds", "fsat"]


def shared_dir() -> Path:
    raw = os.environ.get("PATCHLANG_SHARED", "../shared")
    return Path(raw) if os.path.isabs(raw) else (ROOT / raw).resolve()


def instances(results_csv: Path, base: Path) -> tuple[list[tuple[str, str]], list[tuple[str, str]]]:
    """(violated instances from acasxu.csv, property 2 on all 45 networks)."""
    with open(results_csv) as f:
        violated = [(r["onnx"], r["vnnlib"]) for r in csv.DictReader(f) if r["result"] == "violated"]
    nets = sorted(p.name for p in (base / "onnx").glob("ACASXU_run2a_*_batch_2000.onnx"))
    return violated, [(n, "prop_2.vnnlib") for n in nets]


def attack(base: Path, onnx_name: str, vnnlib_name: str, method: str, opts: AttackOptions, cache: dict,
           focus: bool = True) -> dict:
    if onnx_name not in cache:
        path = base / "onnx" / onnx_name
        net = load_model(str(path))
        confirmer = Confirmer(net)
        cache.clear()  # one network at a time: the sessions are not small
        cache[onnx_name] = (net, confirmer, OrtModel(str(path)))
    net, confirmer, ort_file = cache[onnx_name]
    prop = parse_vnnlib(base / "vnnlib" / vnnlib_name)
    cases = [RegionCase(c.lo, c.hi, unsafe_from_vnnlib(c.unsafe, net.output_size), f"box {i}")
             for i, c in enumerate(prop.cases)]
    evaluate, _ = model_oracle(net, confirmer.ort)
    r = attack_cases(cases, evaluate, confirmer.check,
                     AttackOptions(method, opts.queries, opts.seconds, opts.seed, focus=focus))
    if r.found:  # once more, independently: onnxruntime on the original file, the VNN-LIB file's own test
        y = ort_file.run(np.asarray(r.x32, np.float32)[None])[0]
        if not prop.is_counterexample(r.x32.astype(np.float64), y.astype(np.float64)):
            raise SystemExit(f"{onnx_name} {vnnlib_name} {method}: counterexample not confirmed by the file")
    label = method if focus else f"{method} focus=0"
    return {"onnx": onnx_name, "vnnlib": vnnlib_name, "falsifier": label, "found": "true" if r.found else "false",
            "queries": r.queries, "seconds": f"{r.seconds:.4f}", "fsat": f"{r.fsat:.6g}"}


def summary(rows: list[dict], keys: set[tuple[str, str]], methods: tuple[str, ...], title: str) -> None:
    print(f"\n{title}")
    print(f"{'falsifier':31} {'found':>8} {'med queries':>12} {'med s':>8} {'mean queries':>13} {'med fsat':>10}"
          f" {'fewest q':>9} {'best fsat':>10}")
    sel = [r for r in rows if (r["onnx"], r["vnnlib"]) in keys and r["falsifier"] in methods]
    total = len(keys)
    wins_q: dict[str, int] = {m: 0 for m in methods}
    wins_f: dict[str, int] = {m: 0 for m in methods}
    for key in keys:  # per instance: who needed the fewest queries, who found the deepest counterexample
        found = [r for r in sel if (r["onnx"], r["vnnlib"]) == key and r["found"] == "true"]
        if found:
            q = min(int(r["queries"]) for r in found)
            f = min(float(r["fsat"]) for r in found)
            for r in found:
                wins_q[r["falsifier"]] += int(r["queries"]) == q
                wins_f[r["falsifier"]] += float(r["fsat"]) == f
    for m in methods:
        mine = [r for r in sel if r["falsifier"] == m]
        hit = [r for r in mine if r["found"] == "true"]
        q = np.array([int(r["queries"]) for r in hit]) if hit else np.array([np.nan])
        s = np.array([float(r["seconds"]) for r in hit]) if hit else np.array([np.nan])
        f = np.array([float(r["fsat"]) for r in hit]) if hit else np.array([np.nan])
        print(f"{m:31} {len(hit):>3}/{total:<4} {np.median(q):>12.0f} {np.median(s):>8.3f} {np.mean(q):>13.0f} "
              f"{np.median(f):>10.3g} {wins_q[m]:>9} {wins_f[m]:>10}")
    print("(medians and means over the instances each falsifier solved; 'fewest q' / 'best fsat': instances where "
          "it needed the fewest queries / found the most negative satisfaction, ties counted for all)")


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--queries", type=int, default=20_000, help="query budget per instance (default 20000)")
    ap.add_argument("--seconds", type=float, default=10.0, help="time budget per instance (default 10)")
    ap.add_argument("--falsifiers", default=",".join(ALL), help="comma-separated (default: all five)")
    ap.add_argument("--limit", type=int, help="only the first N instances of each study")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--no-prop2", action="store_true", help="skip the three-way study on property 2")
    ap.add_argument("--csv", default=str(ROOT / "bench" / "results" / "specattack.csv"))
    args = ap.parse_args()

    base = shared_dir() / "benchmarks" / "acasxu"
    if not (base / "onnx").is_dir() or not (base / "vnnlib").is_dir():
        print(f"ACAS Xu benchmarks not found: looked in {base} (PATCHLANG_SHARED="
              f"{os.environ.get('PATCHLANG_SHARED', '../shared, the default')}); set PATCHLANG_SHARED to the folder "
              "holding benchmarks/acasxu", file=sys.stderr)
        return 2
    methods = tuple(m.strip() for m in args.falsifiers.split(",") if m.strip())
    unknown = [m for m in methods if m not in ALL]
    if unknown:
        print(f"unknown falsifier(s): {', '.join(unknown)}; choose from {', '.join(ALL)}", file=sys.stderr)
        return 2
    violated, prop2 = instances(ROOT / "bench" / "results" / "acasxu.csv", base)
    if args.limit:
        violated, prop2 = violated[:args.limit], prop2[:args.limit]
    if args.no_prop2:
        prop2 = []
    opts = AttackOptions(queries=args.queries, seconds=args.seconds, seed=args.seed)
    jobs: list[tuple[str, str, str, bool]] = [(o, v, m, True) for o, v in violated for m in methods]
    done = {j for j in jobs}
    jobs += [(o, v, m, True) for o, v in prop2 for m in methods if m in THREE and (o, v, m, True) not in done]
    jobs += [(o, v, m, False) for o, v in prop2 for m in methods if m in THREE]
    jobs.sort(key=lambda j: (j[0], j[1]))  # network by network: each is loaded once
    print(f"{len(violated)} violated instances x {len(methods)} falsifiers, property 2 on {len(prop2)} networks "
          f"(three-way); budget {args.queries} queries / {args.seconds:g} s per instance", flush=True)
    rows, cache = [], {}
    for k, (o, v, m, focus) in enumerate(jobs):
        row = attack(base, o, v, m, opts, cache, focus)
        rows.append(row)
        print(f"[{k + 1}/{len(jobs)}] {o[13:17]} {v:14} {row['falsifier']:23} found={row['found']:5} queries={row['queries']:>6} "
              f"{float(row['seconds']):7.3f}s fsat={row['fsat']}", flush=True)
    Path(args.csv).parent.mkdir(parents=True, exist_ok=True)
    with open(args.csv, "w", newline="") as f:
        w = csv.DictWriter(f, FIELDS)
        w.writeheader()
        w.writerows(rows)
    summary(rows, set(violated), methods, f"violated instances ({len(violated)}): queries to the first counterexample")
    if prop2:
        three = tuple(m for m in methods if m in THREE)
        summary(rows, set(prop2), three,
                f"property 2 on {len(prop2)} networks, three-way (the SpecAttack study's comparison), with focus")
        summary(rows, set(prop2), tuple(f"{m} focus=0" for m in three),
                f"property 2 on {len(prop2)} networks, three-way, bare optimisers (focus = 0)")
    print(f"\nwrote {os.path.relpath(args.csv, ROOT)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
