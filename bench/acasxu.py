"""ACAS Xu: the 186 VNN-COMP instances with patchlang's default verification strategy (and optionally Marabou).

    python bench/acasxu.py                       # all 186 -> bench/results/acasxu.csv
    python bench/acasxu.py --limit 20            # the first 20
    python bench/acasxu.py --marabou --marabou-timeout 60 --marabou-limit 51
                                                 # also Marabou (maraboupy) on the same Query, for a time ratio
    python bench/acasxu.py --marabou --marabou-every 10   # Marabou on a sample across all ten properties
    python bench/acasxu.py --no-certify          # skip the second-method re-proof of every "holds"

Every "holds" is re-proven by the second complete method (ReLU-split branch and bound, as ``patchlang run`` does
for networks too large for Z3: :func:`patchlang.tasks.verify.second_method_holds`) within the same budget rule
(3x the proof, 1 s to 60 s); the verify and the certify times are printed and written apart, with CPU seconds
(``time.process_time``: single-threaded work, the load-independent figure on a shared machine).  The verdicts are
compared with the CSV being replaced: any disagreement is printed (and is a bug to find).

Every "violated" carries a counterexample that is re-evaluated here once more with onnxruntime on the original
file (independently of the verifier's own confirmation) and must land in the unsafe region.  Reads the shared
benchmarks from PATCHLANG_SHARED (default ../shared).  Prints counts and times; no assertion on speed.
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

from patchlang.compile.bounds import forward_bounds, relu_network  # noqa: E402
from patchlang.compile.verify import RegionCase, encode_region_query, unsafe_from_vnnlib  # noqa: E402
from patchlang.model.loader import load_model  # noqa: E402
from patchlang.model.runtime import OrtModel  # noqa: E402
from patchlang.inputs.vnnlib import parse_vnnlib  # noqa: E402
from patchlang.tasks.certify import second_method_budget  # noqa: E402
from patchlang.tasks.verify import second_method_holds, verify_cases  # noqa: E402
from shared_data import require  # noqa: E402


def cases_of(vnnlib_path: Path, n_out: int) -> tuple[list[RegionCase], object]:
    prop = parse_vnnlib(vnnlib_path)
    return [RegionCase(c.lo, c.hi, unsafe_from_vnnlib(c.unsafe, n_out), f"box {i}")
            for i, c in enumerate(prop.cases)], prop


def marabou_time(net, cases: list[RegionCase], timeout: float) -> tuple[str, float]:
    """Marabou on the same Query (one per input box, the whole box, no splitting by patchlang)."""
    from patchlang.solvers.base import FEASIBLE, INFEASIBLE, SolveOptions
    from patchlang.solvers.marabou import MarabouBackend

    rn = relu_network(net)
    t0 = time.perf_counter()
    verdict = "holds"
    for case in cases:
        left = timeout - (time.perf_counter() - t0)
        if left <= 0:
            return "unknown", time.perf_counter() - t0
        bounds = forward_bounds(rn, case.lo[None], case.hi[None], refine=True)
        enc = encode_region_query(rn, case.lo, case.hi, case.spec, None, bounds)
        sol = MarabouBackend().solve(enc.query, SolveOptions(time_limit=left))
        if sol.status == FEASIBLE:
            return "violated", time.perf_counter() - t0
        if sol.status != INFEASIBLE:
            verdict = "unknown"
    return verdict, time.perf_counter() - t0


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--timeout", type=float, default=120.0, help="seconds per instance (default 120)")
    ap.add_argument("--limit", type=int, help="only the first N instances")
    ap.add_argument("--only", help="only instances whose onnx or vnnlib name contains this text")
    ap.add_argument("--csv", default=str(ROOT / "bench" / "results" / "acasxu.csv"))
    ap.add_argument("--no-certify", action="store_true", help="skip the second-method re-proof of each holds")
    ap.add_argument("--marabou", action="store_true", help="also run Marabou on the same instances")
    ap.add_argument("--marabou-timeout", type=float, default=120.0)
    ap.add_argument("--marabou-limit", type=int, help="Marabou only on the first N instances")
    ap.add_argument("--marabou-every", type=int, default=1,
                    help="Marabou only on every K-th instance (a sample across all properties)")
    args = ap.parse_args()

    base = require("benchmarks/acasxu", "acasxu.py")
    with open(base / "acasxu_instances.csv") as f:
        rows = [r for r in csv.reader(f) if r]
    if args.only:
        rows = [r for r in rows if args.only in r[0] or args.only in r[1]]
    if args.limit:
        rows = rows[:args.limit]
    old_verdicts = {}
    if Path(args.csv).exists():
        with open(args.csv) as f:
            old_verdicts = {(r["onnx"], r["vnnlib"]): r["result"] for r in csv.DictReader(f)}
    nets: dict[str, object] = {}
    cpu_verify = cpu_certify = 0.0
    out_rows, marabou_rows = [], []
    counts: dict[str, int] = {}
    t_all = time.perf_counter()
    for k, (onnx_name, vnn_name, _) in enumerate(rows):
        onnx_path = base / "onnx" / onnx_name
        if onnx_name not in nets:
            nets[onnx_name] = load_model(str(onnx_path))
        net = nets[onnx_name]
        cases, _ = cases_of(base / "vnnlib" / vnn_name, net.output_size)
        t0, c0 = time.perf_counter(), time.process_time()
        verdict = verify_cases(net, cases, timeout=args.timeout)
        seconds = time.perf_counter() - t0
        cpu_verify += time.process_time() - c0
        note = ""
        if verdict.status == "violated":
            # trust nothing: the original file, a fresh onnxruntime session, the saved float32 input
            y = OrtModel(str(onnx_path)).run(verdict.x32.reshape(1, -1))[0].astype(np.float64)
            case = cases[verdict.case or 0]
            inside = bool(np.all(verdict.x32 >= case.lo) and np.all(verdict.x32 <= case.hi))
            if not (inside and case.spec.violated(y[None])[0]):
                note = "COUNTEREXAMPLE NOT CONFIRMED"
        cert_s, certified = "", ""
        if verdict.status == "holds" and not args.no_certify:
            t1, c1 = time.perf_counter(), time.process_time()
            ok, how = second_method_holds(net, cases, verdict.stats.get("method"), 0, second_method_budget(seconds))
            cert_s = f"{time.perf_counter() - t1:.3f}"
            cpu_certify += time.process_time() - c1
            certified = {True: "yes", False: "no", None: "REFUTED"}[ok]
            if ok is None:
                note += f" SECOND METHOD DISAGREES: {how}"
        old = old_verdicts.get((onnx_name, vnn_name))
        if old and old != "unknown" and verdict.status != "unknown" and old != verdict.status:
            note += f" DISAGREES WITH THE OLD CSV ({old})"
        counts[verdict.status] = counts.get(verdict.status, 0) + 1
        out_rows.append((onnx_name, vnn_name, verdict.status, f"{seconds:.3f}", cert_s, certified))
        print(f"{k + 1:3d} {onnx_name:<36} {vnn_name:<14} {verdict.status:<9} {seconds:8.2f}s "
              f"boxes {verdict.stats.get('sub-boxes', 0):>7} queries {verdict.stats.get('queries', 0):>4} "
              f"{verdict.found_by} {f'certify {float(cert_s):6.2f}s {certified}' if cert_s else ''}"
              f" {note} {verdict.reason[:80] if verdict.status == 'unknown' else ''}", flush=True)
        if args.marabou and (args.marabou_limit is None or k < args.marabou_limit) and k % args.marabou_every == 0:
            m_status, m_seconds = marabou_time(net, cases, args.marabou_timeout)
            marabou_rows.append((onnx_name, vnn_name, m_status, f"{m_seconds:.3f}", verdict.status, f"{seconds:.3f}"))
            print(f"      marabou {m_status:<9} {m_seconds:8.2f}s  ratio {m_seconds / max(seconds, 1e-3):.1f}x",
                  flush=True)
    total = time.perf_counter() - t_all
    Path(args.csv).parent.mkdir(parents=True, exist_ok=True)
    with open(args.csv, "w", newline="") as f:
        w = csv.writer(f)
        w.writerow(["onnx", "vnnlib", "result", "seconds", "certify_seconds", "certified"])
        w.writerows(out_rows)
    times = np.array([float(r[3]) for r in out_rows])
    print(f"\n{len(out_rows)} instances in {total:.1f}s: " + ", ".join(f"{v} {k}" for k, v in sorted(counts.items()))
          + f"; median {np.median(times):.2f}s, max {times.max():.2f}s; wrote {os.path.relpath(args.csv, ROOT)}")
    cert = [r for r in out_rows if r[4]]
    print(f"verify: {times.sum():.1f}s wall, {cpu_verify:.1f}s CPU"
          + (f"; certify ({len(cert)} holds re-proven by the second method): "
             f"{sum(float(r[4]) for r in cert):.1f}s wall, {cpu_certify:.1f}s CPU, "
             f"{sum(r[5] == 'yes' for r in cert)} certified, {sum(r[5] == 'no' for r in cert)} not independently "
             f"certified, {sum(r[5] == 'REFUTED' for r in cert)} refuted" if cert else ""), flush=True)
    disagree = [r for r in out_rows if old_verdicts.get((r[0], r[1])) not in (None, "unknown", r[2])
                and r[2] != "unknown"]
    if old_verdicts:
        print(f"compared with the previous CSV: {len(disagree)} disagreement(s)")
    if marabou_rows:
        mpath = Path(args.csv).with_name("acasxu_marabou.csv")
        with open(mpath, "w", newline="") as f:
            w = csv.writer(f)
            w.writerow(["onnx", "vnnlib", "marabou_result", "marabou_seconds", "patchlang_result", "patchlang_seconds"])
            w.writerows(marabou_rows)
        m_t = sum(float(r[3]) for r in marabou_rows)
        p_t = sum(float(r[5]) for r in marabou_rows)
        disagree = [r for r in marabou_rows if r[2] != "unknown" and r[4] != "unknown" and r[2] != r[4]]
        print(f"marabou: {len(marabou_rows)} instances, {m_t:.1f}s vs patchlang {p_t:.1f}s "
              f"(ratio {m_t / max(p_t, 1e-3):.1f}x), timeouts {sum(r[2] == 'unknown' for r in marabou_rows)}, "
              f"disagreements {len(disagree)}; wrote {os.path.relpath(mpath, ROOT)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
