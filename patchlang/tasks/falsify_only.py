"""`verify MODEL satisfies PROPERTY falsify only with METHOD`: a falsifier alone, on any model onnxruntime runs.

The search is :func:`patchlang.tasks.falsifiers.attack_cases`; every counterexample is confirmed by the same
:class:`~patchlang.tasks.verify.Confirmer` as verify's (float64 IR and float32 onnxruntime on the file) and saved
the same way.  Finding none is ``unknown``: a search proves nothing.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from .falsifiers import attack_cases, attack_options, model_oracle
from .results import UNKNOWN, VIOLATED, TaskResult
from .verify import DEFAULT_TIMEOUT, Confirmer, _fmt_vec, property_cases, save_counterexample


def run_falsify_only(task: Any, run: Any) -> TaskResult:
    """`verify M satisfies P falsify only with METHOD`: violated with a confirmed counterexample, else unknown
    (a search that finds nothing proves nothing).  Needs no piecewise-linear encoding of the model."""
    net = task.model.net
    result = TaskResult(task.name, task.kind, UNKNOWN, line=task.span.line, problem_class="none",
                        class_reason="falsification only: a black-box search for counterexamples, no proof")
    cases = property_cases(task.prop, net)
    timeout = task.timeout if task.timeout is not None else (run.time_limit or DEFAULT_TIMEOUT)
    opts = attack_options(task.falsify, timeout, run.seed)
    confirmer = Confirmer(net)
    evaluate, oracle_name = model_oracle(net, confirmer.ort)
    r = attack_cases(cases, evaluate, confirmer.check, opts)
    result.backend = f"falsify {r.method} ({oracle_name})"
    result.seconds["total"] = r.seconds
    result.seconds["falsify"] = r.seconds
    result.details.update({"cases": len(cases), "falsifier": r.method, "falsifier queries": r.queries,
                           "evaluations": r.queries, "satisfaction": r.fsat})
    result.notes.extend(r.notes)
    if confirmer.note:
        result.notes.append(confirmer.note)
    if r.found and r.case is not None and r.x32 is not None:
        case = cases[r.case]
        which = case.spec.which(np.asarray(r.y64, float)[None])
        unsafe = "; ".join(case.spec.texts[j] for j in which if j < len(case.spec.texts))
        result.status = VIOLATED
        result.message = (f"counterexample in {case.label} (found by {r.method} after {r.queries} queries, "
                          f"{r.seconds:.2f} s; satisfaction {r.fsat:.4g}), unsafe: {unsafe}; confirmed in float64"
                          + ("" if r.y32 is None else " and by onnxruntime (float32)"))
        result.details["input"] = _fmt_vec(r.x32)
        result.details["output64"] = _fmt_vec(r.y64)
        if r.y32 is not None:
            result.details["output32"] = _fmt_vec(r.y32)
        result.details["counterexample"] = np.asarray(r.x32, np.float32).reshape(-1).tolist()
        if task.save and run.write_files:
            save_counterexample(task.save, r.x32, net.input_shape)
            result.files.append(task.save)
    else:
        result.message = (f"no counterexample found by {r.method} in {r.queries} queries ({r.seconds:.2f} s; "
                          f"smallest satisfaction {r.fsat:.4g}); falsification alone proves nothing")
    return result
