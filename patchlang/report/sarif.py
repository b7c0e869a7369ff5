"""``--output-format sarif``: SARIF 2.1.0 for code-scanning tools (GitHub code scanning, IDEs).

Rules are the spec diagnostics (``PLnnn``, as in the error table of docs/language.md) and the task outcomes
(``patchlang/no-patch``, ``patchlang/property-violated``, ``patchlang/assertion-failed``, ...); each result is
located at the `.patch` file and line.
"""

from __future__ import annotations

import json
from typing import Any

from .. import __version__
from ..errors import Diagnostic
from ..tasks.results import RunResult
from .problems import OUTCOME_RULES, Problem, diagnostic_problems, display_path, result_problems

SCHEMA = "https://json.schemastore.org/sarif-2.1.0.json"

PL_RULES = {
    'PL000': ('a usage problem not tied to a source position: unknown --task, a backend not installed or '
             'whose licence does not cover the problem, an unwritable output file'),
    'PL001': 'the spec file does not exist or cannot be read',
    'PL100': 'syntax error; the help line says what may come next',
    'PL101': 'division by zero in a number (1/0), or a number out of range (1e400, an integer of over 18 digits)',
    'PL102': 'brackets nested more than 100 deep',
    'PL199': 'an unsupported statement or expression (internal; please report)',
    'PL201': 'a name is declared twice',
    'PL202': 'unknown name (model, point set, property, patch); suggests the closest declared name',
    'PL203': 'a name of the wrong kind (e.g. a point set where a model is expected)',
    'PL210': 'a file (model, points, labels, VNN-LIB) does not exist; paths are relative to the spec',
    'PL211': 'a model cannot be loaded (unsupported ONNX op in the editable part, bad file, ...)',
    'PL212': ('a point set cannot be built: unreadable data, index out of range, a selection with no '
             'points, incompatible union, label filter on unlabelled points'),
    'PL213': 'unknown or ill-typed point file option (labels, x, y, scale)',
    'PL214': 'inline points of different lengths, or a different number of labels and points',
    'PL215': 'labelled points are needed (to label, correct(), misclassified(), accuracy())',
    'PL216': "the points do not have as many values as the model's input",
    'PL217': ('an input path that is not a readable regular file: a directory, FIFO, device, socket, symlink '
             'loop, NUL byte, over-long path, unreadable or over the size limit'),
    'PL218': 'a point set defined from itself, or from a set declared further down',
    'PL220': ('the model has no such editable layer; the help lists the editable layers with their index '
             'and name'),
    'PL221': 'rows [...] out of range for the layer',
    'PL222': 'a label or output index out of range for the model',
    'PL223': '!= in an output constraint',
    'PL230': ('bilinear edit: weights of a layer whose input another edit changes (not LP/MILP; using z3 '
             'or edit fewer layers)'),
    'PL231': 'a patch or repair with nothing to edit',
    'PL232': 'a patch with no keep, change or require',
    'PL233': 'l0 needs bound linf <= c',
    'PL234': 'an edited weight or bias tensor that several nodes of the ONNX file read (shared parameters)',
    'PL240': ('a statement given twice in one block (minimize, margin, save, using, round, a bound of the'
             ' same norm)'),
    'PL241': ('an invalid number: non-positive norm weight, negative bound or margin, round significand '
             'outside 1..52'),
    'PL242': ('a save path that is a file the spec reads, a directory, the path another task saves to, or with '
             'the wrong extension'),
    'PL243': 'unknown limit',
    'PL244': 'unknown backend in using',
    'PL245': 'an ill-typed or out-of-range backend option, or an option given twice',
    'PL250': "warning: a goal's point expression selects no points",
    'PL251': 'every goal of a patch selects no points',
    'PL260': 'a VNN-LIB file cannot be parsed',
    'PL261': 'an input box with bounds of different lengths, infinite bounds, or lo > hi',
    'PL262': 'an input ball with a norm other than linf, or a negative radius',
    'PL263': 'a property without an input region',
    'PL264': 'a property without ensure',
    'PL265': 'a property that does not fit the model (input count, output indices)',
    'PL266': 'label stays in a property whose input regions are not all balls around points',
    'PL267': ('a task that cannot run as written (backend not installed, Marabou for a patch, a region task '
             'that cannot be lowered for its model)'),
    'PL268': ('a property domain with lo > hi, bounds of different lengths, non-finite bounds, a second domain, '
              'or an input region wholly outside it'),
    'PL275': 'unknown falsifier in falsify with, or an unknown or negative falsifier option',
    'PL300': ('verify or repair on a model with an operator the operator table cannot bound (named with its '
              'node)'),
    'PL301': ('a task that needs an exact encoding (patch, repair, attack, Z3 re-check) across a Sigmoid/Tanh '
              'node (named): those are bounded for verify only'),
    'PL302': ('a statement over output values on a model whose final Softmax/LogSoftmax is stripped (named), or '
              'such a tail over an axis other than the classes'),
    'PL380': ('warning: a verify task whose model cannot be encoded: run only searches for counterexamples '
              '(violated or unknown, never holds)'),
    'PL320': 'fault localization cannot choose (unlabelled or no failing inputs, no suspicious neuron)',
    'PL321': 'edit top ... suspicious without failing inputs to localize from',
    'PL322': 'a top count that is not a positive whole number, or a percentage outside (0, 100]',
    'PL323': 'an experts block without failing or passing',
    'PL324': 'an unknown combination in combine',
    'PL325': 'an unknown oracle, patterns at the last layer, or experts editing several layers',
    'PL326': 'an experts block with no failing input of the chosen classes',
    'PL327': 'edit top ... for POINTS inside an experts block',
    'PL328': 'warning: a class gets no expert',
    'PL329': 'an experts block on a model that cannot be combined into one file (opaque prefix, argmin)',
    'PL330': 'activation patterns without scikit-learn installed',
    'PL340': 'unknown attack method (exact, patch, auto)',
    'PL341': 'an attack without inputs',
    'PL342': 'an attack target label out of range, or away from label on a one-output model',
    'PL343': 'an attack whose search box is unbounded (give domain [lo, hi] and/or bound linf <= r)',
    'PL344': 'an attack domain with lo > hi, non-finite bounds or the wrong number of bounds',
    'PL345': 'an attack that minimizes more than one norm',
    'PL346': 'an attack using a backend that cannot solve its MILP',
    'PL347': 'an unknown metric assertion, or a metric of something that is not an attack',
}
WARNING_CODES = ("PL250", "PL328", "PL380")


def rules() -> list[dict[str, Any]]:
    out = [{"id": code, "shortDescription": {"text": text},
            "defaultConfiguration": {"level": "warning" if code in WARNING_CODES else "error"}}
           for code, text in PL_RULES.items()]
    for rule, text in OUTCOME_RULES.values():
        level = "warning" if rule in ("patchlang/inconclusive", "patchlang/assertion-undecided") else "error"
        out.append({"id": rule, "shortDescription": {"text": text}, "defaultConfiguration": {"level": level}})
    return out


def _result(p: Problem, index: dict[str, int]) -> dict[str, Any]:
    location: dict[str, Any] = {"artifactLocation": {"uri": p.file}}
    if p.line:
        region: dict[str, int] = {"startLine": p.line}
        if p.column:
            region["startColumn"] = p.column
        if p.end_line >= p.line and p.end_column > (p.column if p.end_line == p.line else 0):
            region.update(endLine=p.end_line, endColumn=p.end_column)
        location["region"] = region
    out: dict[str, Any] = {"ruleId": p.rule, "level": p.level, "message": {"text": p.message},
                           "locations": [{"physicalLocation": location}]}
    if p.rule in index:
        out["ruleIndex"] = index[p.rule]
    return out


def sarif_log(problems: list[Problem], exit_code: int, spec_path: str) -> dict[str, Any]:
    table = rules()
    index = {r["id"]: i for i, r in enumerate(table)}
    return {
        "$schema": SCHEMA,
        "version": "2.1.0",
        "runs": [{
            "tool": {"driver": {"name": "patchlang", "version": __version__, "semanticVersion": __version__,
                                "rules": table}},
            "artifacts": [{"location": {"uri": display_path(spec_path)}}],
            "invocations": [{"executionSuccessful": exit_code != 101, "exitCode": exit_code}],
            "results": [_result(p, index) for p in problems],
        }],
    }


def sarif_report(result: RunResult) -> str:
    return json.dumps(sarif_log(result_problems(result), result.exit_code, result.spec_path), indent=2) + "\n"


def sarif_errors(diags: list[Diagnostic], spec_path: str, exit_code: int = 2) -> str:
    return json.dumps(sarif_log(diagnostic_problems(diags, spec_path), exit_code, spec_path), indent=2) + "\n"
