"""Run `repair MODEL by experts { ... }`: solve one patch per class with the patch pipeline, filter, combine, check.

Each expert is an ordinary patch task (checked like any other in float64 and onnxruntime).  Each combination is
written as one standard ONNX file (:mod:`patchlang.model.combine`) and re-checked: onnxruntime's float32 outputs of
that file must give the same decisions as the float64 combination on every failing, passing and F1 point.  The
report gives each combination's accuracy on the failing and passing inputs and its inference time against the
original network's (onnxruntime, one batch).
"""

from __future__ import annotations

import time
from dataclasses import replace

import numpy as np

from ..lang.program import ExpertsTask
from ..model.combine import combination_onnx, combine64, merged_network
from ..model.ir import Network, decide
from ..model.runtime import OrtModel
from .patch import RunOptions, run_patch
from .results import INCONCLUSIVE, NO_PATCH, PATCHED, UNSOUND, TaskResult

TIMING_REPEATS = 20
TIMING_ROWS = 1024  # the batch timed (the check points, repeated)
TIE = 1e-4  # relative to the outputs' magnitude: below it, float32 and float64 may rightly pick different labels


def near_ties(y: np.ndarray) -> np.ndarray:
    """Rows whose two largest outputs are closer than ``TIE * (1 + max |y|)``."""
    if y.shape[0] == 0 or y.shape[1] < 2:
        return np.zeros(y.shape[0], dtype=bool)
    top = np.sort(y, axis=1)[:, -2:]
    return (top[:, 1] - top[:, 0]) < TIE * (1.0 + np.max(np.abs(y), axis=1))


def f1_of_class(labels: np.ndarray, truth: np.ndarray, c: int) -> float:
    """F1 of class ``c`` (0 when the class is never predicted nor present)."""
    tp = int(np.count_nonzero((labels == c) & (truth == c)))
    fp = int(np.count_nonzero((labels == c) & (truth != c)))
    fn = int(np.count_nonzero((labels != c) & (truth == c)))
    return 2 * tp / (2 * tp + fp + fn) if tp else 0.0


def f1_filter(original: Network, experts: dict[int, Network], x: np.ndarray, y: np.ndarray
              ) -> tuple[list[int], dict[int, tuple[float, float]]]:
    """The classes whose expert's F1 for its class on ``(x, y)`` beats the original network's, and both F1s."""
    base = original.labels(x)
    scores = {c: (f1_of_class(net.labels(x), y, c), f1_of_class(base, y, c)) for c, net in experts.items()}
    return [c for c, (mine, theirs) in scores.items() if mine > theirs], scores


def ort_seconds(model, x: np.ndarray) -> float:
    """The fastest of a few onnxruntime runs of one batch (one thread, after a warm-up run): the least disturbed
    by other processes on a shared machine."""
    session = OrtModel(model)
    session.run(x)
    times = []
    for _ in range(TIMING_REPEATS):
        t0 = time.perf_counter()
        session.run(x)
        times.append(time.perf_counter() - t0)
    return float(np.min(times))


def run_experts(task: ExpertsTask, run: RunOptions) -> TaskResult:
    t_start = time.perf_counter()
    result = TaskResult(task.name, task.kind, INCONCLUSIVE, line=task.span.line, problem_class=task.problem_class,
                        class_reason=task.class_reason)
    net = task.model.net
    heads: dict[int, Network] = {}
    rows = []
    for e in task.experts:
        t0 = time.perf_counter()
        # an infeasible expert only means no expert for its class: neither explained nor certified (seconds each)
        r = run_patch(e.patch, replace(run, write_files=False, explain=False, certify=False))
        seconds = time.perf_counter() - t0
        rows.append({"class": e.label, "status": r.status, "failing": e.n_failing, "seconds": round(seconds, 4),
                     "linf": r.distances.get("linf"), "l1": r.distances.get("l1"), "edited": int(sum(
                         np.count_nonzero(s.mask) for s in e.patch.edits)), "message": r.message,
                     "minimal": r.status == PATCHED and not any(n.startswith("not proven minimal") for n in r.notes)})
        if r.status == PATCHED and r.patched is not None:
            heads[e.label] = r.patched
        elif r.status == UNSOUND:
            result.notes.append(f"expert {e.label}: {r.message}")
    result.details["experts"] = rows
    result.details["patterns"] = [{"class": c, "neurons": [int(j) for j in p.neurons],
                                   "on": [bool(s) for s in p.states], "support": p.support, "precision": p.precision}
                                  for c, p in sorted(task.patterns.items())]
    variants: list[tuple[bool, list[int]]] = [(False, sorted(heads))]
    if task.f1_points is not None:
        kept, scores = f1_filter(net, heads, task.f1_points.x, task.f1_points.y)
        result.details["f1"] = {str(c): {"expert": a, "original": b, "kept": c in kept} for c, (a, b) in scores.items()}
        variants.append((True, kept))
    x_fail, y_fail = task.failing.x, task.failing.y
    x_pass = task.passing.x
    y_pass = task.passing.y if task.passing.y is not None else net.labels(x_pass)
    check_x = np.concatenate([x_fail, x_pass] + ([task.f1_points.x] if task.f1_points is not None else []))
    from ..model.build import build_onnx

    timing_x = np.resize(check_x, (TIMING_ROWS, *check_x.shape[1:])).astype(np.float32)
    base_seconds = ort_seconds(build_onnx(net.layers, net.input_shape), timing_x) if net.prefix is None else None
    combos = []
    all_agree = True
    for filtered, labels in variants:
        for rule in task.combinations:
            combos.append(_one_combination(task, net, heads, labels, rule, filtered, check_x, x_fail, y_fail,
                                           x_pass, y_pass, timing_x, base_seconds, run, result))
            all_agree &= combos[-1]["agree"] == combos[-1]["checked"]
    result.details["combinations"] = combos
    if "merged" in task.combinations and heads:  # what `assert accuracy(NAME, ...)` measures
        result.patched = merged_network(net, [heads[c] for c in sorted(heads)])
    result.seconds["experts"] = float(sum(r["seconds"] for r in rows))
    result.seconds["total"] = time.perf_counter() - t_start
    if not all_agree:
        result.status = UNSOUND
        result.message = "a combined file disagrees with its float64 combination (see the combinations)"
    elif heads:
        result.status = PATCHED
        result.message = f"{len(heads)} of {len(task.experts)} expert(s) found"
    elif all(r["status"] == NO_PATCH for r in rows):
        result.status = NO_PATCH
        result.message = ("no expert exists: every class's patch is infeasible with the allowed edits and bounds "
                          "(the solver's verdicts, not independently re-checked)")
    else:
        result.message = "no expert was found (solvers stopped without an answer)"
    return result


def _one_combination(task: ExpertsTask, net: Network, heads: dict[int, Network], labels: list[int], rule: str,
                     filtered: bool, check_x: np.ndarray, x_fail: np.ndarray, y_fail: np.ndarray,
                     x_pass: np.ndarray, y_pass: np.ndarray, timing_x: np.ndarray, base_seconds: float | None,
                     run: RunOptions, result: TaskResult) -> dict:
    """Build, check, time and (when asked) save one combination; its row of the report."""
    from ..files import write_atomic
    from ..guard import claim_output

    chosen = [heads[c] for c in labels]
    if rule == "naive":  # one head per class: the expert where there is one, else the original
        chosen = [heads[c] if c in labels else net for c in range(net.output_size)]
    proto = combination_onnx(net, chosen, rule)
    ort = OrtModel(proto)
    y64 = combine64(net, chosen, rule, check_x)
    y32 = ort.run(check_x)
    same = decide(y64) == decide(y32)
    ties = near_ties(y64) & ~same  # float32 rounding may flip a decision float64 makes by less than TIE
    agree = int(np.count_nonzero(same | ties))
    row = {"combination": rule, "f1_filter": filtered, "experts": len(labels), "checked": len(check_x),
           "agree": agree, "near_ties": int(np.count_nonzero(ties)),
           "max_abs_diff": float(np.max(np.abs(y64 - y32))) if len(check_x) else 0.0,
           "failing_accuracy": float(np.mean(decide(combine64(net, chosen, rule, x_fail)) == y_fail))
           if len(x_fail) else None,
           "passing_accuracy": float(np.mean(decide(combine64(net, chosen, rule, x_pass)) == y_pass))
           if len(x_pass) else None}
    if base_seconds:
        row["overhead"] = ort_seconds(proto, timing_x) / base_seconds
    if task.save and run.write_files and agree == len(check_x):
        path = f"{task.save[:-len('.onnx')]}_{rule}{'_f1' if filtered else ''}.onnx"
        claim_output(path, f"the {rule} combination of `{task.name}`")
        write_atomic(path, proto.SerializeToString(), protected=task.model.path)
        result.files.append(path)
        row["file"] = path
    return row
