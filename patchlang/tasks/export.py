"""``patchlang export``: a task's query in a standard format, so that any external solver can check our work.

- ``lp`` / ``mps``: the MILP lowering (the same model HiGHS solves), written by HiGHS with readable names
  (``keep_good_test_12__r5``), for HiGHS, Gurobi, CPLEX, SCIP, CBC...;
- ``smt2``: the exact SMT-LIB form Z3 solves (:func:`~patchlang.solvers.z3backend.query_to_smt2`), every
  coefficient the exact value of its float64, with ``(check-sat)``; comments name each block's statement;
- ``vnnlib``: a verify task's property (written by :mod:`patchlang.tasks.property_export`).

Every file is written atomically (a temporary file in the target folder, then a rename).
"""

from __future__ import annotations

import os
import re
import tempfile
from pathlib import Path

import numpy as np

from ..compile.patch import PatchEncoding, encode_patch
from ..query import Query
from ..errors import PatchlangError
from ..guard import program_guard
from ..lang.check import check
from ..lang.parser import parse_file
from ..lang.program import FinetuneTask, PatchTask, RepairTask, VerifyTask
from .patch import build_groups
from .rounding import round_significand

FORMATS = ("lp", "mps", "smt2", "vnnlib")


def task_encoding(task: PatchTask) -> PatchEncoding:
    """The encoding of a patch task as `run` would first build it (rounding included, all goals at once)."""
    net = task.model.net
    if task.round_bits is not None:
        net = round_significand(net, task.round_bits)
    groups = build_groups(net, task.goals, task.margin)
    return encode_patch(net, task.edits, groups, task.norms, name=task.name)


def task_query(task: PatchTask) -> Query:
    return task_encoding(task).query


def export_task(spec_path: str, task_name: str, fmt: str, output: str) -> None:
    """Write task ``task_name`` of ``spec_path`` in format ``fmt`` to ``output``."""
    if fmt not in FORMATS:
        raise PatchlangError(f"unknown export format `{fmt}`", help="formats: " + ", ".join(FORMATS))
    program = check(parse_file(spec_path))
    names = [t.name for t in program.tasks]
    try:
        task = program.task(task_name)
    except KeyError:
        raise PatchlangError(f"no task named `{task_name}` in {spec_path}",
                             help=("tasks: " + ", ".join(names)) if names else "the spec has no tasks") from None
    if fmt == "vnnlib":
        program_guard(program).claim(output, "the exported property")
        _export_vnnlib(task, output)
        return
    if isinstance(task, VerifyTask):
        raise PatchlangError(f"`{task_name}` is a verify task: its query is a property over an input region",
                             help="export it with --format vnnlib")
    if isinstance(task, FinetuneTask):
        raise PatchlangError(f"`{task_name}` is a repair by fine-tuning: it trains, it has no single query",
                             help="export its property through a `verify` task with --format vnnlib")
    if getattr(task, "kind", "") == "attack":
        raise PatchlangError(f"`{task_name}` is an attack: it builds its queries per input while it runs (bounds "
                             "and budgets depend on each input)", help="export a `patch` or `verify` task")
    patch = task.patch if isinstance(task, RepairTask) else task
    q = task_query(patch)
    header = [f"patchlang export of task `{task_name}` ({patch.kind}) from {spec_path}",
              f"problem class {q.problem_class}: {q.size_summary()}"]
    if isinstance(task, RepairTask):
        header.append("repair task: this is the patch problem of its first iteration (no counterexamples yet)")
    data = smt2_text(q, header).encode("utf-8") if fmt == "smt2" else highs_text(q, fmt)
    program_guard(program).write(output, data, "the exported query")


def smt2_text(q: Query, header: list[str] | None = None) -> str:
    """A complete SMT-LIB 2 script: logic, declarations, assertions, ``(check-sat)``."""
    from ..solvers.z3backend import logic_of, query_to_smt2

    lines = [f"; {h}" for h in (header or [])]
    lines += ["; every numeral is the exact value of the float64 patchlang used; `objective` is the change to",
              "; minimise. For the minimum with z3 or OptiMathSAT add (minimize objective) before (check-sat);",
              "; to confirm a reported optimum V is minimal, add (assert (< objective V)) and expect unsat.",
              f"(set-logic {logic_of(q)})"]
    return "\n".join(lines) + "\n" + query_to_smt2(q) + "(check-sat)\n(get-value (objective))\n"


def _sanitize(names: list[str]) -> list[str]:
    """LP/MPS-safe, unique names: letters, digits, ``_`` and ``.``, index appended."""
    out = []
    for k, n in enumerate(names):
        s = re.sub(r"[^A-Za-z0-9_.]+", "_", n).strip("_.")[:80] or "c"
        if not s[0].isalpha():
            s = "c_" + s
        out.append(f"{s}_{k}")
    return out


def _column_names(q: Query, n_total: int) -> list[str]:
    names = [f"x{i}" for i in range(n_total)]
    for b in q.var_blocks:
        for k in range(b.size):
            names[b.start + k] = f"{b.name}.{k}"
    for i in range(q.n_vars, n_total):
        names[i] = f"atom_binary.{i - q.n_vars}"
    return _sanitize(names)


def _row_names(q: Query, n_total: int) -> list[str]:
    names = ["atom_row"] * n_total
    for b in q.row_blocks:
        names[b.start: b.start + b.size] = [b.label] * b.size
    return _sanitize(names)


def highs_text(q: Query, fmt: str) -> bytes:
    """The MILP lowering of ``q`` as an LP or MPS file, written by HiGHS."""
    from ..solvers.highs import _new_highs, to_highs_lp
    from ..solvers.milp import lower_to_milp

    m = lower_to_milp(q)
    lp = to_highs_lp(m, bool(np.any(m.integer)))
    lp.col_names_ = _column_names(q, m.n_vars)
    lp.row_names_ = _row_names(q, m.A.shape[0])
    h = _new_highs()
    h.setOptionValue("output_flag", False)
    h.passModel(lp)
    with tempfile.TemporaryDirectory(prefix="patchlang-export-") as tmp:
        path = os.path.join(tmp, f"query.{fmt}")
        h.writeModel(path)
        if not os.path.exists(path):
            raise PatchlangError(f"HiGHS could not write the {fmt} file")
        return Path(path).read_bytes()


def _export_vnnlib(task, output: str) -> None:
    if not isinstance(task, VerifyTask):
        raise PatchlangError(f"`{task.name}` is a {task.kind} task: vnnlib holds a property to verify",
                             help="export verify tasks as vnnlib, patch tasks as lp, mps or smt2")
    try:
        from .property_export import property_to_vnnlib
    except ImportError:
        raise PatchlangError("VNN-LIB export is not available in this installation",
                             help="export the patch problems as lp, mps or smt2") from None
    property_to_vnnlib(task.prop, task.model.net, output)
