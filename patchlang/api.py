"""The Python API the CLI uses: load (parse + check) a spec, run its tasks, get a RunResult.

    >>> program = load_program("examples/quickstart/fix_digits.patch")
    >>> result = run_program(program)
    >>> result.exit_code
"""

from __future__ import annotations

import time
from importlib import metadata
from pathlib import Path
from typing import Callable

from .lang.check import check
from .lang.parser import parse_file, parse_text
from .lang.program import FinetuneTask, PatchTask, Program, RepairTask, VerifyTask
from .tasks.assertions import evaluate
from .tasks.patch import RunOptions, run_patch
from .tasks.results import RunResult, TaskResult
from .tasks.satisfaction import satisfaction

__all__ = ["load_program", "load_program_text", "run_program", "run_task", "RunOptions", "versions", "satisfaction"]


def load_program(path: str | Path) -> Program:
    """Parse and check a `.patch` file; raises SpecError listing every problem."""
    return check(parse_file(path))


def load_program_text(source: str, base_dir: str | Path, filename: str = "<string>") -> Program:
    return check(parse_text(source, filename), Path(base_dir))


def versions() -> dict[str, str]:
    from . import __version__

    out = {"patchlang": __version__}  # also when run from a source checkout (no installed metadata)
    for pkg in ("numpy", "scipy", "onnx", "onnxruntime", "highspy", "z3-solver", "gurobipy",
                "maraboupy", "lark"):
        try:
            out[pkg] = metadata.version(pkg)
        except metadata.PackageNotFoundError:
            continue
    return out


def run_task(task, options: RunOptions) -> TaskResult:
    if isinstance(task, PatchTask):
        return run_patch(task, options)
    if isinstance(task, VerifyTask) and task.falsify is not None and task.falsify.only:
        from .tasks.falsify_only import run_falsify_only  # no complete method: any model onnxruntime runs

        return run_falsify_only(task, options)
    if isinstance(task, VerifyTask):
        from .tasks.verify import run_verify

        return run_verify(task, options)
    if isinstance(task, FinetuneTask):
        from .tasks.finetune import run_finetune

        return run_finetune(task, options)
    if isinstance(task, RepairTask):
        from .tasks.repair import run_repair

        return run_repair(task, options)
    raise TypeError(task)


def run_program(program: Program, options: RunOptions | None = None, only: list[str] | None = None,
                on_task: Callable[[str, TaskResult | None], None] | None = None) -> RunResult:
    """Run every task (or those named in ``only``) in source order, then evaluate the assertions."""
    options = options or RunOptions()
    t0 = time.perf_counter()
    results: dict[str, TaskResult] = {}
    ordered: list[TaskResult] = []
    for task in program.tasks:
        if only and task.name not in only:
            continue
        if on_task:
            on_task(task.name, None)
        r = run_task(task, options)
        results[task.name] = r
        ordered.append(r)
        if on_task:
            on_task(task.name, r)
    assertions = [evaluate(program, a, results) for a in program.assertions
                  if not only or getattr(a.node, "task", getattr(a.node, "subject", None)) in results
                  or getattr(a.node, "subject", None) in program.models]
    from .tasks.rounding import add_assertion_notes

    add_assertion_notes(program, results)
    return RunResult(program.path, ordered, assertions, program.input_files, versions(),
                     time.perf_counter() - t0, [w.render() for w in program.warnings])
