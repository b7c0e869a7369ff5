"""A falsifier alone, on any model onnxruntime runs: `verify ... falsify only with METHOD`, and every `verify` of a
model patchlang cannot encode.

The search is :func:`patchlang.tasks.falsifiers.attack_cases`; every counterexample is confirmed by the same
:class:`~patchlang.tasks.verify.Confirmer` as verify's (float64 IR and float32 onnxruntime on the file) and saved
the same way.  Finding none is ``unknown``: a search proves nothing.

Why `verify` falls back to this instead of refusing (issue 11): a model whose first operations cannot be encoded
(today: anything before the last unsupported node, e.g. convolutions; after the operator table: Softplus, Exp, ...)
can still be *run*, and a counterexample found by running it is as good as any.  So such a `verify` searches with
the black-box falsifiers and reports ``violated`` with a checked counterexample, or ``unknown`` with the sentence
saying why no proof was attempted; `check` warns (PL380) and shows the task's class as ``none``.
"""

from __future__ import annotations

import time
from typing import Any

import numpy as np

from ..compile.bounds import relu_network
from ..errors import PatchlangError
from .falsifiers import DEFAULT_QUERIES, AttackOptions, AttackResult, attack_cases, attack_options, model_oracle
from .results import UNKNOWN, VIOLATED, TaskResult
from .verify import DEFAULT_TIMEOUT, Confirmer, Verdict, _fmt_vec, property_cases, save_counterexample, verify_cases

# Without a `falsify with` clause, a model that cannot be encoded is searched by `targeted` (one descent per unsafe
# conjunction: what finds CIFAR-10 robustness counterexamples), then, on few inputs, by `auto` with the rest.
FALLBACK_METHODS = ("targeted", "auto")
FALLBACK_MAX_INPUTS_FOR_AUTO = 64
FALLBACK_JACOBIANS = 100  # the default budget covers this many finite-difference Jacobians (d + 1 queries each)


def unencodable(net: Any) -> str | None:
    """Why patchlang cannot encode ``net`` over an input region (so no proof can be attempted), or ``None``.

    Asks the encoder itself rather than inspecting the IR, so that whatever the encoder learns to handle (issue 11's
    operator table) is proven, and only what it refuses falls back to the black-box search."""
    try:
        relu_network(net, smooth=True)  # `verify` bounds through sigmoid/tanh
    except PatchlangError as exc:
        return exc.message
    return None


def verify_class(task: Any) -> tuple[str, str]:
    """The problem class `check` shows for a verify task, with the reason."""
    if task.falsify is not None and task.falsify.only:
        return "none", "falsification only: a black-box search for counterexamples, no proof"
    why = unencodable(task.model.net)
    if why is not None:
        return "none", f"falsification only, no proof attempted: {why}"
    return "MILP", "complete verification over an input region (falsify first)"


def fallback_warning(task: Any) -> str | None:
    """`check`'s PL380 message for a verify task that will run without a proof, or ``None``."""
    if task.falsify is not None and task.falsify.only:
        return None
    why = unencodable(task.model.net)
    if why is None:
        return None
    return (f"`{task.name}` cannot be proven: {why}; `run` will only search for counterexamples (black box, "
            "onnxruntime on the model file): the result is violated (with a checked counterexample) or unknown, "
            "never holds")


def black_box_search(cases: list, evaluate: Any, confirm: Any, timeout: float, seed: int = 0,
                     choice: Any = None) -> AttackResult:
    """The black-box search of a verify task whose model cannot be encoded: the `falsify with` clause ``choice``
    if there is one, else `targeted` and then (few inputs) `auto`, within :data:`FALLBACK_JACOBIANS` Jacobians."""
    if choice is not None:
        return attack_cases(cases, evaluate, confirm, attack_options(choice, timeout, seed))
    d = max((int(np.sum(np.asarray(c.hi) > np.asarray(c.lo))) for c in cases), default=0)
    budget = max(DEFAULT_QUERIES, FALLBACK_JACOBIANS * (d + 1))
    methods = FALLBACK_METHODS if d <= FALLBACK_MAX_INPUTS_FOR_AUTO else FALLBACK_METHODS[:1]
    t0 = time.perf_counter()
    spent, best = 0, None
    for k, method in enumerate(methods):
        left = timeout - (time.perf_counter() - t0)
        if left <= 0 or budget - spent <= 0:
            break
        share = (budget - spent) // (len(methods) - k)
        r = attack_cases(cases, evaluate, confirm, AttackOptions(method, share, left, seed))
        r.queries += spent
        spent = r.queries
        if best is not None:
            r.notes = best.notes + r.notes
            r.unconfirmed += best.unconfirmed
            if not r.found and best.fsat < r.fsat:
                r.fsat, r.best_x = best.fsat, best.best_x
            r.method = f"{best.method}, then {r.method}"
        r.seconds = time.perf_counter() - t0
        best = r
        if r.found:
            break
    assert best is not None
    return best


def run_falsify_only(task: Any, run: Any, why: str | None = None) -> TaskResult:
    """`verify M satisfies P falsify only with METHOD`: violated with a confirmed counterexample, else unknown
    (a search that finds nothing proves nothing).  Needs no piecewise-linear encoding of the model.

    ``why``: the reason the model cannot be encoded, when this runs in place of a complete `verify`."""
    net = task.model.net
    reason = ("falsification only: a black-box search for counterexamples, no proof" if why is None else
              f"falsification only, no proof attempted: {why}")
    result = TaskResult(task.name, task.kind, UNKNOWN, line=task.span.line, problem_class="none",
                        class_reason=reason)
    cases = property_cases(task.prop, net)
    timeout = task.timeout if task.timeout is not None else (run.time_limit or DEFAULT_TIMEOUT)
    confirmer = Confirmer(net)
    evaluate, oracle_name = model_oracle(net, confirmer.ort)
    if why is None:
        r = attack_cases(cases, evaluate, confirmer.check, attack_options(task.falsify, timeout, run.seed))
    else:
        r = black_box_search(cases, evaluate, confirmer.check, timeout, run.seed, task.falsify)
        result.notes.append(f"no proof was attempted: {why}")
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
    elif why is None:
        result.message = (f"no counterexample found by {r.method} in {r.queries} queries ({r.seconds:.2f} s; "
                          f"smallest satisfaction {r.fsat:.4g}); falsification alone proves nothing")
    else:
        result.message = (f"undecided: no proof was attempted because {why}; black-box falsification ({r.method}, "
                          f"{oracle_name}) found no counterexample in {r.queries} queries ({r.seconds:.2f} s; "
                          f"smallest satisfaction {r.fsat:.4g}), and a search proves nothing")
    return result


def verify_any(net: Any, cases: list, timeout: float, seed: int = 0) -> Verdict:
    """:func:`~patchlang.tasks.verify.verify_cases` for a model patchlang encodes, else the black-box search
    (violated with a confirmed counterexample, or unknown with the reason): for scripts and benchmarks."""
    why = unencodable(net)
    if why is None:
        return verify_cases(net, cases, timeout, seed=seed)
    confirmer = Confirmer(net)
    evaluate, oracle_name = model_oracle(net, confirmer.ort)
    r = black_box_search(cases, evaluate, confirmer.check, timeout, seed)
    stats = {"falsifier": r.method, "falsifier queries": r.queries, "evaluations": r.queries,
             "unconfirmed": r.unconfirmed, "satisfaction": r.fsat, "notes": r.notes}
    if r.found and r.case is not None and r.x32 is not None and r.y64 is not None:
        which = cases[r.case].spec.which(np.asarray(r.y64, float)[None])
        unsafe = "; ".join(cases[r.case].spec.texts[j] for j in which if j < len(cases[r.case].spec.texts))
        return Verdict(VIOLATED, confirmer.note, r.case, r.x32, r.y64, r.y32, unsafe, stats, r.seconds,
                       f"black-box falsification with {r.method}, {r.queries} queries")
    return Verdict(UNKNOWN, f"no proof was attempted because {why}; {r.method} ({oracle_name}) found no "
                            f"counterexample in {r.queries} queries", stats=stats, seconds=r.seconds)
