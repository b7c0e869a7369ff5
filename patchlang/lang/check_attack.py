"""Checking an `attack` block and the metric assertions over its results (kept apart from :mod:`.check`, which
holds the checker's machinery: names, points, outputs).

An attack is the mirror image of a patch: the network is fixed and the unknowns are the inputs.  What is checked
here: the inputs fit the model, the targets are labels of the model, the input box is finite (the domain, cut by
`bound linf`), one norm is minimized, and the method is one we have; the problem class is decided before anything
is solved and says why.
"""

from __future__ import annotations

import difflib
from typing import Any

import numpy as np

from ..errors import Diagnostic
from . import ast as A
from .program import ATTACK_METHODS, ATTACK_METRICS, ATTACK_NORMS, AttackTask, BackendChoice

Checker = Any  # lang.check.Checker passes itself in (importing it here would make an import cycle)


def attack_block(ck: Checker, st: A.AttackBlock) -> AttackTask | None:
    """The checked task, or None after reporting what is wrong (every item is checked, errors collected)."""
    entry = ck.model_ref(st.model, st.model_span)
    net = entry.net
    seen: dict[str, Any] = {}
    got: dict[str, Any] = {"bounds": {}, "limits": {}, "backend": BackendChoice("auto")}
    errors_before = len(ck.diags)
    for item in st.items:
        ck.guarded(lambda item=item: _item(ck, st, net, item, seen, got))
    if len(ck.diags) > errors_before:
        return None
    if "points" not in got:
        ck.fail("PL341", f"attack `{st.name}` has no `inputs` statement", st.span,
                "say which inputs to attack, e.g. `inputs test[0:100]`")
    if "target" not in got:
        got["target"] = ("away", ())
    n_in = net.input_size
    lo, hi = np.full(n_in, -np.inf), np.full(n_in, np.inf)
    if "domain" in got:
        lo, hi = (np.broadcast_to(np.asarray(v, float).reshape(-1), (n_in,)).copy() for v in got["domain"])
    linf = got["bounds"].get("linf")
    if linf is None and not (np.all(np.isfinite(lo)) and np.all(np.isfinite(hi))):
        ck.fail("PL343", f"attack `{st.name}` leaves its inputs unbounded", st.span,
                "declare the inputs that exist, e.g. `domain [0, 1]` for pixels, and/or `bound linf <= c`: the "
                "exact search needs a finite box (it is also the big-M of every changed-input indicator)")
    minimize = got.get("minimize", "l0")
    method = got.get("method", "auto")
    if method == "auto":
        klass, reason = "MILP", (f"exact minimal {minimize}, started from AIGENT's answer (an upper bound): the "
                                 "network with the input change as the unknowns "
                                 "(binary ReLU phases where the bounds leave them open"
                                 + (", one binary per input for l0" if minimize == "l0" else "") + ")")
    elif method == "exact":
        klass, reason = "MILP", (f"exact minimal {minimize} over the whole network"
                                 + (" (one binary per input)" if minimize == "l0" else ""))
    else:
        klass, reason = "LP+MILP", ("AIGENT: a sign-marked weight patch of the middle layer (LPs; the patch "
                                    "pipeline's MILP as fall-back), LPs that "
                                    "reproduce the hidden values it produces layer by layer, then the fewest "
                                    "changed inputs (an LP, then a short MILP)")
    margin = got.get("margin", 1e-4)
    return AttackTask(st.name, entry, got["points"], got["target"][0], got["target"][1], (lo, hi), minimize, method,
                      st.span, bound_linf=linf, bounds={k: v for k, v in got["bounds"].items() if k != "linf"},
                      margin=margin, save=got.get("save"), backend=got["backend"], limits=got["limits"],
                      problem_class=klass, class_reason=reason)


def _close(word: str, known: Any) -> str | None:
    close = difflib.get_close_matches(word, sorted(known), n=1)
    return f"did you mean `{close[0]}`?" if close else None


def _once(ck: Checker, seen: dict[str, Any], key: str, span: Any) -> None:
    if key in seen:
        ck.fail("PL240", f"`{key}` is given twice in this block (first at line {seen[key].line})", span, "keep one")
    seen[key] = span


def _item(ck: Checker, st: A.AttackBlock, net: Any, item: Any, seen: dict[str, Any], got: dict[str, Any]) -> None:
    n_out = net.output_size
    if isinstance(item, A.AttackInputs):
        _once(ck, seen, "inputs", item.span)
        ps = ck.points_expr(item.points)
        ck.check_shape(ps, net, item.points.span)
        if len(ps) == 0:
            ck.warnings.append(Diagnostic("PL250", "the attack's inputs select no points: nothing is attacked",
                                          item.span, severity="warning"))
        got["points"] = ps
    elif isinstance(item, A.AttackTarget):
        _once(ck, seen, "target", item.span)
        for lab in item.labels:
            if not 0 <= lab < n_out:
                ck.fail("PL342", f"target label {lab} is out of range: model `{net.name}` has {n_out} outputs",
                        item.span, f"labels are 0..{n_out - 1}")
        if item.kind == "away" and n_out < 2:
            ck.fail("PL342", "`target away from label` needs at least two outputs", item.span)
        got["target"] = (item.kind, tuple(dict.fromkeys(item.labels)))
    elif isinstance(item, A.AttackMethod):
        _once(ck, seen, "method", item.span)
        if item.method not in ATTACK_METHODS:
            hint = _close(item.method, ATTACK_METHODS)
            ck.fail("PL340", f"unknown attack method `{item.method}`", item.span,
                    (hint + "; " if hint else "") + "methods: exact (proven minimal), patch (AIGENT: through a "
                    "weight patch), auto (exact, started from the fast attacks)")
        got["method"] = item.method
    elif isinstance(item, A.InputDomain):
        _once(ck, seen, "domain", item.span)
        lo, hi = np.asarray(item.lo, float), np.asarray(item.hi, float)
        for a in (lo, hi):
            if a.ndim and a.size != net.input_size:
                ck.fail("PL344", f"the domain gives {a.size} bound(s) per side, model `{net.name}` takes "
                                 f"{net.input_size} inputs", item.span, "give one number for all: `domain [0, 1]`")
        if not (np.all(np.isfinite(lo)) and np.all(np.isfinite(hi))):
            ck.fail("PL344", "domain bounds must be finite numbers", item.span, "e.g. `domain [0, 1]`")
        if np.any(np.broadcast_to(lo, np.broadcast_shapes(lo.shape, hi.shape)) > hi):
            ck.fail("PL344", "domain has lo > hi", item.span, "write the lower bound first: `domain [lo, hi]`")
        got["domain"] = (lo, hi)
    elif isinstance(item, A.Minimize):
        _once(ck, seen, "minimize", item.span)
        norms = [n for _, n in item.terms]
        if len(norms) != 1 or item.terms[0][0] != 1.0:
            ck.fail("PL345", "an attack minimizes one norm of the input change", item.span,
                    "write `minimize l0` (changed inputs), `minimize l1` or `minimize linf`")
        if norms[0] not in ATTACK_NORMS:  # pragma: no cover - the grammar only has these
            ck.fail("PL345", f"unknown norm {norms[0]}", item.span)
        got["minimize"] = norms[0]
    elif isinstance(item, A.Bound):
        _once(ck, seen, f"bound {item.norm}", item.span)
        if not item.value > 0:
            ck.fail("PL241", "an attack's bound must be positive", item.span, "e.g. `bound linf <= 0.3`")
        got["bounds"][item.norm] = float(item.value)
    elif isinstance(item, A.Margin):
        _once(ck, seen, "margin", item.span)
        if item.value < 0:
            ck.fail("PL241", "the margin must be non-negative", item.span)
        got["margin"] = float(item.value)
    elif isinstance(item, A.Save):
        _once(ck, seen, "save", item.span)
        got["save"] = ck.output(item.path, item.span, f"the adversarial inputs of `{st.name}` (line {item.span.line})",
                                (".npz",))
    elif isinstance(item, A.Using):
        _once(ck, seen, "using", item.span)
        got["backend"] = ck.using(item)
        if got["backend"].name not in ("auto", "highs", "gurobi", "milp"):
            ck.fail("PL346", f"an attack is a MILP: backend `{item.backend}` cannot search it", item.span,
                    "use `using highs` (the default) or `using gurobi`")
    elif isinstance(item, A.Limit):
        if item.name != "time":
            ck.fail("PL243", f"unknown limit `{item.name}` for an attack", item.span,
                    "an attack has `limit time SECONDS` (per input)")
        if not item.value > 0:
            ck.fail("PL241", "`limit time` must be a positive number of seconds", item.span)
        got["limits"][item.name] = float(item.value)
    elif isinstance(item, A.Tag):
        return
    else:  # pragma: no cover - the parser produces nothing else
        ck.fail("PL199", f"unsupported attack statement {type(item).__name__}", getattr(item, "span", None))


def metric_assertion(ck: Checker, st: A.AssertMetric) -> None:
    """`METRIC(attack) CMP number`: a metric we compute, of an attack declared above."""
    if st.metric not in ATTACK_METRICS:
        hint = _close(st.metric, ATTACK_METRICS)
        ck.fail("PL347", f"unknown assertion `{st.metric}(...)`", st.span,
                (hint + "; " if hint else "") + "assertions: exists, distance, accuracy, and over attacks: "
                + ", ".join(ATTACK_METRICS))
    attacks = {t.name for t in ck.tasks if getattr(t, "kind", "") == "attack"}
    if st.task not in attacks:
        hint = _close(st.task, attacks) or (("attacks declared above: " + ", ".join(sorted(attacks))) if attacks
                                            else "declare `attack NAME on MODEL { ... }` before the assertion")
        ck.fail("PL347", f"`{st.metric}` needs an attack, and `{st.task}` is not one declared above", st.span, hint)
