"""`attack NAME on MODEL { ... }`: per input, a small change that flips the decision to a target, checked.

Per input ``x0`` (label: its own when the points are labelled, else the model's decision):

1. the box: ``x0 ± bound linf`` cut to the domain (inputs outside it are never searched or reported);
2. fast attacks (:mod:`patchlang.tasks.attack_search`) for a first answer;
3. by method: ``exact`` runs :func:`~patchlang.tasks.attack_exact.exact_attack` from that answer (proven
   minimal, or a proven lower bound and the gap); ``patch`` runs AIGENT (:mod:`patchlang.tasks.attack_patch`);
   ``auto`` first runs AIGENT within :data:`AUTO_PATCH_SHARE` of the time per input when the fast attacks left
   something to improve, and its confirmed answer, when smaller, becomes the exact search's incumbent (the l0
   upper bound of the k-loop; the MIP start and cutoff for l1 / l∞), so the proof of minimality is the exact
   method's.  The row's ``method`` names who found the final answer (greedy, gradient, patch or exact);
4. an answer counts only after the :class:`~patchlang.tasks.verify.Confirmer` re-runs it in float64 (IR) and
   onnxruntime (float32, on the model file) at the float32 input that is reported and saved.

Results per input go into ``details["inputs"]`` (text report, ``--json``) and the saved ``.npz`` (original,
adversarial, labels, new labels, metrics); the aggregate figures (:mod:`patchlang.tasks.attack_metrics`) are what
``assert success_rate(adv) >= 0.8`` and friends compare.
"""

from __future__ import annotations

import io
import math
import time
from collections import Counter
from typing import Any

import numpy as np

from ..compile.attack import target_spec
from ..compile.bounds import relu_network
from ..compile.verify import RegionCase
from ..lang.program import AttackTask
from ..solution import SolveOptions
from .attack_exact import exact_attack, size_of
from .attack_metrics import summary
from .attack_search import greedy_l0, gradient_linf, lead
from .results import INCONCLUSIVE, TaskResult

DEFAULT_TIME_PER_INPUT = 10.0
AUTO_PATCH_SHARE = 0.25  # `method auto`: at most this share of the time per input goes to AIGENT's upper bound
SUCCESS = "found"  # per-input statuses
NONE_EXISTS = "none exists"
NOT_FOUND = "not found"
SKIPPED = "skipped"


def _solver(task: AttackTask, run: Any):
    from ..solvers.registry import choose_backend

    name = run.backend or task.backend.name

    def solve(query, opts: SolveOptions):
        backend, _ = choose_backend(name, query, "MILP")
        return backend.solve(query, opts)

    return solve


def _targets(task: AttackTask, label: int, n_out: int) -> list[int]:
    if task.target == "away":
        return [j for j in range(n_out) if j != label]
    return [t for t in task.target_labels if t != label]


def run_attack(task: AttackTask, run: Any) -> TaskResult:
    """The attack task (``run`` is the CLI's RunOptions)."""
    from .verify import Confirmer

    t_start = time.perf_counter()
    net = task.model.net
    rn = relu_network(net)
    ps = task.points
    X = ps.flat().astype(np.float64)
    labels = ps.y.astype(np.int64) if ps.y is not None else net.labels(X)
    result = TaskResult(task.name, task.kind, INCONCLUSIVE, line=task.span.line, problem_class=task.problem_class,
                        class_reason=task.class_reason)
    opts = dict(task.backend.options)
    per_input = float(task.limits.get("time", opts.pop("time_limit", DEFAULT_TIME_PER_INPUT)))
    if run.time_limit is not None:
        per_input = min(per_input, float(run.time_limit))
    solve_opts = SolveOptions(seed=int(opts.pop("seed", run.seed)), threads=1,
                              mip_gap=float(opts.pop("mip_gap")) if "mip_gap" in opts else None,
                              extra={k: v for k, v in opts.items() if k != "threads"})
    solve = _solver(task, run)
    confirmer = Confirmer(net)
    n_out = net.output_size
    dlo, dhi = task.domain
    rows: list[dict[str, Any]] = []
    adversarial = np.array(X, dtype=np.float32, copy=True)
    backend_name = ""
    for i in range(len(ps)):
        x0 = X[i]
        label = int(labels[i])
        row: dict[str, Any] = {"index": ps.describe(i), "label": label, "new_label": None, "status": SKIPPED,
                               "method": "", "l0": None, "l1": None, "l2": None, "linf": None,
                               "proven_min": False, "lower_bound": None, "seconds": 0.0, "note": "", "marking": ""}
        rows.append(row)
        t0 = time.perf_counter()
        if not (np.all(x0 >= dlo) and np.all(x0 <= dhi)):
            row["note"] = "the input lies outside the declared domain"
            continue
        if int(net.labels(x0[None])[0]) != label:
            row["note"] = "already misclassified: nothing to attack"
            continue
        targets = _targets(task, label, n_out)
        if not targets:
            row["note"] = "its label is the only target"
            continue
        r = task.bound_linf if task.bound_linf is not None else np.inf
        lo, hi = np.maximum(x0 - r, dlo), np.minimum(x0 + r, dhi)
        spec = target_spec(label, targets, n_out, net.decision)
        case = RegionCase(lo, hi, spec, ps.describe(i))
        checked: dict[str, Any] = {}

        def confirm(x: np.ndarray, case: RegionCase = case, checked: dict = checked) -> bool:
            ok, x32, y64, y32 = confirmer.check(x, case)
            if ok:
                checked["x32"], checked["y64"], checked["y32"] = x32, y64, y32
            return ok

        away = task.target == "away"
        found, method = None, ""
        if task.method != "patch":  # the patch method stands on its own (its figures are AIGENT's alone)
            found, method = _fast(rn, x0, lo, hi, label, targets, task, net.decision, away, confirm)
        budget = task.bounds.get(task.minimize)
        if found is not None and budget is not None and size_of(found, x0, task.minimize) > budget:
            found = None
        if task.method == "auto" and _patch_may_help(found, x0, task.minimize):
            from .attack_patch import aigent_attack

            share = t0 + AUTO_PATCH_SHARE * per_input  # cheap: a slice of the input's time, the rest is exact's
            aig = aigent_attack(net, rn, x0, lo, hi, label, targets, task.margin, away, task.minimize, solve,
                                solve_opts, share)
            backend_name = backend_name or "highs"
            row["marking"] = aig.marking
            if aig.x is not None:
                s = size_of(aig.x, x0, task.minimize)
                better = found is None or s < size_of(found, x0, task.minimize)
                if better and (budget is None or s <= budget) and confirm(aig.x):
                    found, method = aig.x, "patch"
        outcome = None
        if task.method in ("exact", "auto"):
            deadline = t0 + per_input
            outcome = exact_attack(rn, x0, lo, hi, spec, task.minimize, task.margin, solve,
                                   lambda x: confirm(x), solve_opts, deadline, found, budget)
            backend_name = backend_name or "highs"
            if outcome.x is not None and (found is None or outcome.x is not found):
                found, method = outcome.x, "exact"
            row["lower_bound"] = outcome.lower
            row["proven_min"] = bool(outcome.proven)
            row["note"] = outcome.note
        else:
            from .attack_patch import aigent_attack

            aig = aigent_attack(net, rn, x0, lo, hi, label, targets, task.margin, away, task.minimize, solve,
                                solve_opts, t0 + per_input)
            if aig.x is not None and confirm(aig.x):
                found, method = aig.x, "patch"
            row["note"] = aig.note
            row["marking"] = aig.marking
            backend_name = backend_name or "highs"
        row["seconds"] = round(time.perf_counter() - t0, 4)
        if found is not None and confirm(found):
            x32 = checked["x32"].astype(np.float64)
            x32_clean = np.where(np.abs(x32 - x0) == 0, x0, x32)
            d = x32_clean - x0
            adversarial[i] = checked["x32"]
            row.update({"status": SUCCESS, "method": method,
                        "new_label": int(np.argmax(checked["y64"]) if net.decision == "argmax"
                                         else np.argmin(checked["y64"])),
                        "l0": int(np.count_nonzero(d)), "l1": float(np.sum(np.abs(d))),
                        "l2": float(np.sqrt(np.sum(d * d))), "linf": float(np.max(np.abs(d), initial=0.0))})
            if outcome is not None and outcome.proven:
                # the minimum is proven for the size the solver saw; the reported float32 input must match it
                row["proven_min"] = bool(size_of(x32_clean, x0, task.minimize) <= (outcome.size or 0) * (1 + 1e-6)
                                         + 1e-9)
        else:
            none = outcome is not None and outcome.proven and outcome.x is None
            row["status"] = NONE_EXISTS if none else NOT_FOUND
            row["method"] = "exact" if outcome is not None else "patch"
    _finish(task, run, result, rows, X, adversarial, labels, confirmer, backend_name, time.perf_counter() - t_start)
    return result


def _patch_may_help(found: np.ndarray | None, x0: np.ndarray, norm: str) -> bool:
    """Whether `method auto` runs AIGENT before the exact search: when it can shorten a solver search, i.e. the
    fast attacks found nothing, or any l1 / l∞ answer (a better MIP start and cutoff), or an l0 answer of more
    than two inputs (with two, the exact search only has to decide one changed input, which it does by walking
    each input's line without a solver, faster than AIGENT's patch query)."""
    return found is None or norm != "l0" or size_of(found, x0, "l0") > 2


def _fast(rn, x0, lo, hi, label, targets, task: AttackTask, decision: str, away: bool, confirm
          ) -> tuple[np.ndarray | None, str]:
    """The smallest confirmed answer of the fast attacks in the task's norm (or None)."""
    cands = []
    g = greedy_l0(rn, x0, lo, hi, label, targets, task.margin, decision, away)
    if g is not None:
        cands.append((g, "greedy"))
    if task.minimize != "l0":
        f = gradient_linf(rn, x0, lo, hi, label, targets, task.margin, decision, away)
        if f is not None:
            cands.append((f, "gradient"))
    cands.sort(key=lambda c: size_of(c[0], x0, task.minimize))
    for x, name in cands:
        if confirm(x):
            return x, name
    return None, ""


def _finish(task: AttackTask, run: Any, result: TaskResult, rows: list[dict[str, Any]], X: np.ndarray,
            adversarial: np.ndarray, labels: np.ndarray, confirmer: Any, backend: str, seconds: float) -> None:
    from .results import ATTACKED

    stats = summary(rows, X.shape[1] if X.ndim == 2 else 1)
    attacked = [r for r in rows if r["status"] != SKIPPED]
    ok = [r for r in rows if r["status"] == SUCCESS]
    none = [r for r in rows if r["status"] == NONE_EXISTS]
    # finding adversarial inputs is what an attack is for, not a failure: its assertions say what is acceptable
    result.status = ATTACKED
    result.backend = backend
    result.seconds["total"] = seconds
    result.details["inputs"] = rows
    # original and adversarial inputs (arrays: the plots draw them; the JSON report leaves arrays out)
    result.details["images"] = np.stack([X.astype(np.float32), adversarial])
    result.details["metrics"] = stats
    result.details["attacked"] = f"{len(attacked)} of {len(rows)} inputs"
    result.details["success"] = (f"{len(ok)}/{len(attacked)} ({100 * stats['success_rate']:.1f}%)"
                                 if attacked else "-")
    if ok:
        result.details["changed"] = (f"median {stats['median_l0']:g} inputs ({stats['median_l0_percent']:.2f}%), "
                                     f"L2 {stats['median_l2']:.3g}, L∞ {stats['median_linf']:.3g}")
    if task.method in ("exact", "auto") and attacked:
        result.details["proven"] = f"{sum(1 for r in attacked if r['proven_min'])}/{len(attacked)} minimal or none"
    marks = Counter(r["marking"].split(" (")[0] for r in rows if r.get("marking"))
    if marks:  # how AIGENT's middle-layer patches were found (per input: the row's `marking`)
        result.details["marking"] = ", ".join(f"{k} {v}" for k, v in marks.most_common())
    if stats.get("evenness") is not None:
        result.details["evenness"] = f"{stats['evenness']:.3f} (Pielou, new labels)"
    result.details["time/input"] = f"median {stats['median_seconds']:.3g}s"
    if confirmer.note:
        result.notes.append(confirmer.note)
    if none and task.method in ("exact", "auto"):
        result.notes.append(f"{len(none)} input(s) have no adversarial input within the bounds (proven)")
    result.message = ("every adversarial input was re-run in float64 and " +
                      ("by onnxruntime (float32) on the model file" if confirmer.ort is not None
                       else "not by onnxruntime") + " before it counted")
    if task.save and run.write_files:
        _save(task.save, rows, X, adversarial, labels, task.model.net.input_shape)
        result.files.append(task.save)


def _save(path: str, rows: list[dict[str, Any]], X: np.ndarray, adversarial: np.ndarray, labels: np.ndarray,
          shape: tuple[int, ...]) -> None:
    """original, adversarial (float32, the model's input shape; the original where none was found), labels,
    new_labels (-1 where none), success, l0, l1, l2, linf, proven_min, lower_bound, seconds: one entry per input."""
    from ..guard import write_output

    def col(key: str, fill: float) -> np.ndarray:
        return np.array([fill if r[key] is None else r[key] for r in rows], dtype=float)

    buf = io.BytesIO()
    np.savez(buf, original=X.astype(np.float32).reshape((-1, *shape)),
             adversarial=adversarial.reshape((-1, *shape)), labels=labels.astype(np.int64),
             new_labels=col("new_label", -1).astype(np.int64),
             success=np.array([r["status"] == SUCCESS for r in rows]), l0=col("l0", -1).astype(np.int64),
             l1=col("l1", math.nan), l2=col("l2", math.nan), linf=col("linf", math.nan),
             proven_min=np.array([bool(r["proven_min"]) for r in rows]), lower_bound=col("lower_bound", math.nan),
             seconds=col("seconds", 0.0), index=np.array([r["index"] for r in rows]))
    write_output(path, buf.getvalue(), f"the adversarial inputs {path}")
