"""Evaluate top-level `assert` statements against task results."""

from __future__ import annotations

import operator

import numpy as np

from ..lang import ast as A
from ..lang.program import Assertion, Program
from .results import AssertionResult, TaskResult

_OPS = {"<=": operator.le, ">=": operator.ge, "<": operator.lt, ">": operator.gt, "==": operator.eq,
        "!=": operator.ne}


def evaluate(program: Program, a: Assertion, results: dict[str, TaskResult]) -> AssertionResult:
    node = a.node
    if isinstance(node, A.AssertExists):
        r = results.get(node.task)
        if r is None or r.inconclusive:
            return AssertionResult(a.text, a.span.line, None, message="its task was inconclusive")
        exists = r.succeeded
        holds = (not exists) if node.negated else exists
        return AssertionResult(a.text, a.span.line, holds, covers_task=node.task if node.negated else None,
                               message="a patch exists" if exists else "no patch exists")
    if isinstance(node, A.AssertDistance):
        r = results.get(node.task)
        if r is None or not r.succeeded:
            return AssertionResult(a.text, a.span.line, None if (r and r.inconclusive) else False,
                                   message="no patch to measure")
        value = r.distances.get(node.norm)
        return AssertionResult(a.text, a.span.line, bool(_OPS[node.op](value, node.value)), value)
    if isinstance(node, A.AssertAccuracy):
        assert a.points is not None
        if node.subject in program.models:
            net = program.models[node.subject].net
        else:
            r = results.get(node.subject)
            if r is None or r.patched is None:
                return AssertionResult(a.text, a.span.line, None if (r and r.inconclusive) else False,
                                       message="no patched network")
            net = r.patched
        acc = float(np.mean(net.labels(a.points.x) == a.points.y)) if len(a.points) else float("nan")
        return AssertionResult(a.text, a.span.line, bool(_OPS[node.op](acc, node.value)), acc)
    if isinstance(node, A.AssertMetric):
        r = results.get(node.task)
        metrics = (r.details.get("metrics") or {}) if r is not None else {}
        value = metrics.get(node.metric)
        if value is None:
            return AssertionResult(a.text, a.span.line, None if r is None or r.inconclusive else False,
                                   message=f"no {node.metric} to compare (no successful attack)")
        return AssertionResult(a.text, a.span.line, bool(_OPS[node.op](float(value), node.value)), float(value))
    raise TypeError(node)
