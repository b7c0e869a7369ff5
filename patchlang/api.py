"""The Python API the CLI uses: load (parse + check) a spec, run its tasks, get a RunResult.

    >>> program = load_program("examples/quickstart/fix_digits.patch")
    >>> result = run_program(program)
    >>> result.exit_code
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Callable

from .lang.check import check
from .lang.parser import parse_file, parse_text
from .lang.program import ExpertsTask, FinetuneTask, PatchTask, Program, RepairTask, VerifyTask
from .tasks.assertions import evaluate
from .tasks.patch import RunOptions, run_patch
from .guard import OutputGuard, program_guard, using_guard
from .tasks.results import AssertionResult, RunResult, TaskResult
from .tasks.satisfaction import satisfaction

__all__ = ["load_program", "load_program_text", "run_program", "run_task", "RunOptions", "versions", "failed_run",
           "Interrupted", "satisfaction"]


class Interrupted(KeyboardInterrupt):
    """Ctrl-C during a run: ``result`` holds the tasks that finished (the others are listed as not run)."""

    def __init__(self, result: RunResult):
        super().__init__("interrupted")
        self.result = result


def load_program(path: str | Path) -> Program:
    """Parse and check a `.patch` file; raises SpecError listing every problem."""
    return _lowerable(check(parse_file(path)))


def load_program_text(source: str, base_dir: str | Path, filename: str = "<string>") -> Program:
    return _lowerable(check(parse_text(source, filename), Path(base_dir)))


def _lowerable(program: Program) -> Program:
    """The program, if every region task lowers (see tasks.dryrun): `check` refuses what `run` would."""
    from .errors import SpecError
    from .tasks.dryrun import dry_run

    found = dry_run(program)
    program.warnings.extend(d for d in found if d.severity == "warning")
    problems = [d for d in found if d.severity != "warning"]
    if problems:
        err = SpecError(items=problems)
        err.inputs = dict(program.input_files)
        raise err
    return program


def versions() -> dict[str, str]:
    """patchlang's version and every numeric and solver package's (see :func:`patchlang.cache.package_versions`)."""
    from .cache import package_versions

    return package_versions()


def run_task(task, options: RunOptions) -> TaskResult:
    result = _run_task(task, options)
    net = getattr(getattr(task, "model", None), "net", None)
    tail = getattr(net, "tail", None)
    if tail is not None:
        result.notes.append(f"model `{net.name}` ends in {tail['op']} node '{tail['node']}': patchlang works on the "
                            "logits before it (a monotone tail never changes the label), so margins are in logits; "
                            "files written keep the node")
    return result


def _run_task(task, options: RunOptions) -> TaskResult:
    if isinstance(task, PatchTask):
        return run_patch(task, options)
    if isinstance(task, VerifyTask) and task.falsify is not None and task.falsify.only:
        from .tasks.falsify_only import run_falsify_only  # no complete method: any model onnxruntime runs

        return run_falsify_only(task, options)
    if isinstance(task, VerifyTask):
        from .tasks.falsify_only import unencodable

        why = unencodable(task.model.net)  # issue 11: a model that cannot be encoded is still searched, never refused
        if why is not None:
            from .tasks.falsify_only import run_falsify_only

            return run_falsify_only(task, options, why)
        from .tasks.verify import run_verify

        return run_verify(task, options)
    if isinstance(task, ExpertsTask):
        from .tasks.experts import run_experts

        return run_experts(task, options)
    if isinstance(task, FinetuneTask):
        from .tasks.finetune import run_finetune

        return run_finetune(task, options)
    if isinstance(task, RepairTask):
        from .tasks.repair import run_repair

        return run_repair(task, options)
    if getattr(task, "kind", "") == "attack":
        from .tasks.attack import run_attack

        return run_attack(task, options)
    raise TypeError(task)


def run_program(program: Program, options: RunOptions | None = None, only: list[str] | None = None,
                on_task: Callable[[str, TaskResult | None], None] | None = None,
                outputs: OutputGuard | None = None, cache=None, jobs: int = 1,
                executor: str | None = None) -> RunResult:
    """Run every task (or those named in ``only``) in source order, then evaluate the assertions.

    Every file a task writes is claimed from ``outputs`` (by default ``guard.program_guard(program)``): never an input,
    never one path twice.  On Ctrl-C the tasks already finished are kept and :class:`Interrupted` carries them.
    ``cache``: a :class:`patchlang.cache.ResultCache` (results re-checked before they are used; new ones stored).
    ``jobs`` > 1: independent tasks in that many worker processes (see :mod:`patchlang.run.parallel`);
    ``executor``: ``local`` or ``tcp://HOST:PORT``, the tasks on a Dask cluster (see :mod:`patchlang.run.cluster`).
    """
    options = options or RunOptions()
    t0 = time.perf_counter()
    results: dict[str, TaskResult] = {}
    ordered: list[TaskResult] = []
    selected = [t for t in program.tasks if not only or t.name in only]
    parallel = executor is not None or (jobs > 1 and len(selected) > 1)
    with using_guard(outputs or program_guard(program)):
        if parallel:
            _run_parallel(program, selected, options, jobs, cache, on_task, results, ordered, only, t0, executor)
        for task in () if parallel else program.tasks:
            if only and task.name not in only:
                continue
            if on_task:
                on_task(task.name, None)
            try:
                r = _cached_or_run(task, options, cache)
            except KeyboardInterrupt:
                raise Interrupted(_partial(program, ordered, task.name, only, t0)) from None
            except Exception as exc:  # a report written after it still lists the tasks that finished
                exc.patchlang_done = list(ordered)
                raise
            results[task.name] = r
            ordered.append(r)
            if on_task:
                on_task(task.name, r)
    wanted = [a for a in program.assertions
              if not only or getattr(a.node, "task", getattr(a.node, "subject", None)) in results
              or getattr(a.node, "subject", None) in program.models]
    assertions: list[AssertionResult] = []
    try:
        for a in wanted:
            assertions.append(evaluate(program, a, results))
        from .tasks.rounding import add_assertion_notes

        add_assertion_notes(program, results)
    except KeyboardInterrupt:  # every task finished: report them, and which assertions were not evaluated
        done = len(assertions)
        assertions += [AssertionResult(a.text, a.span.line, None, message="not evaluated: interrupted (Ctrl-C)")
                       for a in wanted[done:]]
        raise Interrupted(RunResult(program.path, ordered, assertions, program.input_files, versions(),
                                    time.perf_counter() - t0, [w.render() for w in program.warnings],
                                    outcome="interrupted",
                                    errors=[f"interrupted (Ctrl-C) while evaluating the assertions: {done} of "
                                            f"{len(wanted)} evaluated, every task finished"])) from None
    return RunResult(program.path, ordered, assertions, program.input_files, versions(),
                     time.perf_counter() - t0, [w.render() for w in program.warnings])


def _run_parallel(program: Program, selected: list, options: RunOptions, jobs: int, cache, on_task,
                  results: dict[str, TaskResult], ordered: list[TaskResult], only: list[str] | None,
                  t0: float, executor: str | None = None) -> None:
    from .run.cluster import run_on_dask
    from .run.parallel import run_parallel

    if executor is not None:
        runs = run_on_dask(program, selected, options, executor, jobs, _cached_or_run, cache, on_task)
    else:
        runs = run_parallel(program, selected, options, jobs, _cached_or_run, cache, on_task)
    try:
        for r in runs:
            results[r.name] = r
            ordered.append(r)
    except KeyboardInterrupt:
        current = next(t.name for t in selected if t.name not in results)
        raise Interrupted(_partial(program, ordered, current, only, t0)) from None
    except Exception as exc:
        exc.patchlang_done = list(ordered)
        raise


def _cached_or_run(task, options: RunOptions, cache) -> TaskResult:
    if cache is not None:
        hit, _ = cache.lookup(task)
        if hit is not None:
            return hit
    r = run_task(task, options)
    if cache is not None:
        cache.store(task, r)
    return r


def _partial(program: Program, done: list[TaskResult], current: str, only: list[str] | None,
             t0: float) -> RunResult:
    """The run so far: finished tasks as they are; the interrupted one and the rest as not run."""
    finished = {r.name for r in done}
    not_run = [(t.name, t.kind, "interrupted" if t.name == current else "not started")
               for t in program.tasks if t.name not in finished and (not only or t.name in only)]
    return RunResult(program.path, list(done), [], program.input_files, versions(), time.perf_counter() - t0,
                     [w.render() for w in program.warnings], outcome="interrupted",
                     errors=["interrupted (Ctrl-C): the assertions were not evaluated"], not_run=not_run)


def failed_run(spec_path: str, outcome: str, errors: list[str], program: Program | None = None,
               inputs: dict[str, str] | None = None, only: list[str] | None = None,
               done: list[TaskResult] | None = None) -> RunResult:
    """A report for a run that ended early (a spec, usage or internal error): what ran and what did not."""
    finished = {r.name for r in done or []}
    not_run = [(t.name, t.kind, outcome) for t in (program.tasks if program else [])
               if t.name not in finished and (not only or t.name in only)]
    return RunResult(spec_path, list(done or []), [], dict(program.input_files if program else inputs or {}),
                     versions(), 0.0, [w.render() for w in program.warnings] if program else [], outcome=outcome,
                     errors=errors, not_run=not_run)
