"""``patchlang check | plan | run | lock | export | fmt``.

Exit codes: 0 everything holds, 1 a check failed (no patch exists, property violated, assertion false),
2 spec or usage error, 3 inconclusive (timeout / unknown), 101 internal error (a bug: please report it).
"""

from __future__ import annotations

import argparse
import os
import sys
from typing import TYPE_CHECKING, Any

from . import __version__
from .errors import PatchlangError, SpecError

if TYPE_CHECKING:
    from rich.console import Console

EXIT_OK, EXIT_FAILED, EXIT_USAGE, EXIT_INCONCLUSIVE, EXIT_INTERNAL = 0, 1, 2, 3, 101


class _LazyConsole:
    """A rich ``Console`` built on first use.

    Why: importing rich costs about 30 ms of CPU, a tenth of a cache hit (``run -q`` on an unchanged spec prints
    one plain line, :func:`_print_line`).  ``wide``: a console that is not a terminal gets 120 columns (CI logs
    and pipes: wide enough that the check table does not wrap its words), unless ``COLUMNS`` says otherwise."""

    def __init__(self, wide: bool = False, **kwargs: Any):
        self._kwargs = kwargs
        self._wide = wide
        self._console: Console | None = None

    def __getattr__(self, name: str) -> Any:
        if self._console is None:
            from rich.console import Console

            self._console = Console(**self._kwargs)
            if self._wide and not self._console.is_terminal and "COLUMNS" not in os.environ:
                self._console.width = 120
        return getattr(self._console, name)


def _console(stderr: bool = False) -> "Console":
    return _LazyConsole(wide=not stderr, stderr=stderr, highlight=False, soft_wrap=True)  # type: ignore[return-value]


def _print_line(out: "Console", text: str) -> None:
    """One plain line on ``out`` without building a rich console that was not built yet (same bytes: no markup,
    no highlighting, no wrapping)."""
    if isinstance(out, _LazyConsole) and out._console is None and not out._kwargs.get("stderr"):
        sys.stdout.write(text + "\n")
        sys.stdout.flush()
    else:
        out.print(text, markup=False, highlight=False)


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="patchlang", description="Minimal, verified edits to neural networks.")
    p.add_argument("--version", action="version", version=f"patchlang {__version__}")
    sub = p.add_subparsers(dest="command", required=True)

    c = sub.add_parser("check", help="check specs: names, files, shapes, and each task's problem class")
    c.add_argument("spec", nargs="+")

    r = sub.add_parser("run", help="solve every task, check each answer independently, write files and a report")
    r.add_argument("spec")
    r.add_argument("--task", action="append", help="run only this task (repeatable)")
    r.add_argument("--backend", help="override every task's backend (highs, gurobi, z3)")
    r.add_argument("--time-limit", type=float, help="seconds (a patch task: for the whole task)")
    r.add_argument("--seed", type=int, default=0)
    r.add_argument("--json", metavar="PATH", help="write a JSON report")
    r.add_argument("--junit", metavar="PATH", help="write a JUnit XML report")
    r.add_argument("--plots", metavar="DIR",
                   help="write weight-change heatmaps and histograms (PNG) and DIR/index.html; DIR is relative to "
                        "the current directory (unlike `save` paths in a spec, which are relative to the spec)")
    r.add_argument("--no-save", action="store_true", help="do not write patched networks")
    r.add_argument("--quiet", "-q", action="store_true", help="only the verdict line")
    r.add_argument("--verbose", "-v", action="store_true",
                   help="show how each answer was found: planning steps, query sizes, timings, solver logs")
    _add_ci_options(r)
    r.add_argument("--no-cache", action="store_true",
                   help="neither use nor store cached results (.patchlang/cache/ beside the spec)")
    r.add_argument("--frozen", action="store_true",
                   help="fail (exit 2) when a model's hash differs from the one patchlang.lock pins")
    r.add_argument("--jobs", "-j", type=int, default=1, metavar="N",
                   help="run independent tasks in N worker processes (results in source order)")
    r.add_argument("--executor", metavar="dask://HOST:PORT|local",
                   help="run the tasks on a Dask cluster: a running scheduler, or `local` (--jobs workers on "
                        "this machine); needs patchlang[cluster]")
    _add_plan_parsers(sub)

    e = sub.add_parser("export", help="write a task's query for an external solver or verifier")
    e.add_argument("spec")
    e.add_argument("--task", required=True)
    e.add_argument("--format", required=True, choices=["lp", "mps", "smt2", "vnnlib"])
    e.add_argument("-o", "--output", required=True)
    _add_fmt_parser(sub)
    return p


def _add_ci_options(r: argparse.ArgumentParser) -> None:
    from .report.formats import FORMATS

    r.add_argument("--select", action="append", metavar="NAME[,NAME]",
                   help="run only the tasks with these names or tags (repeatable)")
    r.add_argument("--exclude", action="append", metavar="NAME[,NAME]",
                   help="do not run the tasks with these names or tags (repeatable)")
    r.add_argument("--output-format", choices=FORMATS, default="text",
                   help="the report on stdout: text (default), json, junit, github (workflow annotations), sarif")
    r.add_argument("--sarif", metavar="PATH", help="write a SARIF 2.1.0 log (also on a spec error)")


def _write_sarif(path: str, result=None, error: PatchlangError | None = None, spec: str = "") -> None:
    from .report.machine import write_atomic
    from .report.sarif import sarif_errors, sarif_report

    write_atomic(path, sarif_report(result) if result is not None else sarif_errors(error.diagnostics, spec,
                                                                                    error.exit_code),
                 "the SARIF report")


def cmd_run_formatted(args: argparse.Namespace, out: Console) -> int:
    """``run`` with ``--output-format`` / ``--sarif``: a spec or usage error also comes out in that format."""
    try:
        return cmd_run(args, out)
    except PatchlangError as exc:
        if args.output_format != "text":
            from .report.formats import render_error

            sys.stdout.write(render_error(exc, args.output_format, args.spec))
            sys.stdout.flush()
        raise  # the JSON / JUnit / SARIF reports of a failed run were written by cmd_run


def _add_plan_parsers(sub) -> None:
    p = sub.add_parser("plan", help="what `run` would do for each task, without solving: problem class, backend, "
                                    "query size, planning steps, cached or not")
    p.add_argument("spec")
    p.add_argument("--task", action="append", help="only this task (repeatable)")
    p.add_argument("--select", action="append", metavar="NAME[,NAME]", help="as for run")
    p.add_argument("--exclude", action="append", metavar="NAME[,NAME]", help="as for run")
    p.add_argument("--backend", help="as for run: override every task's backend")
    p.add_argument("--time-limit", type=float, help="as for run (part of the cache key)")
    p.add_argument("--seed", type=int, default=0, help="as for run (part of the cache key)")
    p.add_argument("--no-save", action="store_true", help="as for run (part of the cache key)")
    p.add_argument("--no-cache", action="store_true", help="do not look at the cache: every task is to run")
    p.add_argument("--detailed-exitcode", action="store_true",
                   help="exit 0 when nothing is to run (every task cached), 2 when something is")
    k = sub.add_parser("lock", help="pin the hashes of the spec's models in patchlang.lock beside it")
    k.add_argument("spec")


def cmd_plan(args: argparse.Namespace, out: Console) -> int:
    from .api import load_program, versions
    from .run.planning import print_plan

    return print_plan(load_program(args.spec), args, out, versions())


def cmd_lock(args: argparse.Namespace, out: Console) -> int:
    from .api import load_program
    from .lockfile import write_lock

    program = load_program(args.spec)
    path, models = write_lock(program)
    for name, entry in models.items():
        out.print(f"  {name:<12} {entry['path']}  sha256 {entry['sha256']}", markup=False, highlight=False)
    out.print(f"wrote {os.path.relpath(path)} ({len(models)} model(s))", markup=False)
    return EXIT_OK


def _add_fmt_parser(sub) -> None:
    f = sub.add_parser("fmt", help="format .patch files in the canonical layout (comments kept)")
    f.add_argument("files", nargs="+", metavar="FILES", help=".patch files, folders (searched for *.patch), .md "
                                                              "files (their ```patch blocks), or - (stdin to stdout)")
    mode = f.add_mutually_exclusive_group()
    mode.add_argument("--check", action="store_true", help="write nothing; exit 1 and list the files that would "
                                                           "change")
    mode.add_argument("--diff", action="store_true", help="write nothing; print a unified diff, exit 1 if any")


def cmd_fmt(args: argparse.Namespace, out: Console) -> int:
    from .lang.format import run_fmt

    return run_fmt(args.files, args.check, args.diff, out, _console(stderr=True))


def _print_spec_error(err: PatchlangError, console: Console) -> None:
    for d in err.diagnostics:
        console.print(d.render(), markup=False, highlight=False)
    n = len(err.diagnostics)
    if isinstance(err, SpecError) and n > 1:
        console.print(f"{n} errors", markup=False)


def cmd_check(args: argparse.Namespace, out: Console) -> int:
    from .api import load_program
    from .report.experts import localization_lines

    program = load_program(args.spec)
    for w in program.warnings:
        out.print(w.render(), markup=False, highlight=False)
    out.print(f"{args.spec}: ok ({len(program.models)} model(s), {len(program.points)} point set(s), "
              f"{len(program.tasks)} task(s), {len(program.assertions)} assertion(s))", markup=False)
    rows = []
    for t in program.tasks:
        cls = getattr(t, "problem_class", None) or getattr(getattr(t, "patch", None), "problem_class", "MILP")
        reason = getattr(t, "class_reason", None) or getattr(getattr(t, "patch", None), "class_reason", "")
        if t.kind == "verify":
            from .tasks.falsify_only import verify_class

            cls, reason = verify_class(t)
        title = t.name if t.name.startswith(f"{t.kind} ") else f"{t.kind:<6} {t.name}"  # `verify ...` names itself
        rows.append((t.span.line, title, f"{cls}: {reason}"))
    width = max((len(title) for _, title, _ in rows), default=0)  # one column, however long a name
    for (line, title, what), task in zip(rows, program.tasks):
        out.print(f"  line {line:>3}  {title:<{width}}  {what}", markup=False, highlight=False)
        for text in localization_lines(task):
            out.print(f"            {text}", markup=False, highlight=False)
    return EXIT_OK


def cmd_check_all(args: argparse.Namespace, out: Console) -> int:
    """``check`` on several specs (as pre-commit passes them): each is reported; the worst exit code wins."""
    if len(args.spec) == 1:
        return cmd_check(argparse.Namespace(**{**vars(args), "spec": args.spec[0]}), out)
    err = _console(stderr=True)
    worst = EXIT_OK
    for spec in args.spec:
        try:
            code = cmd_check(argparse.Namespace(**{**vars(args), "spec": spec}), out)
        except PatchlangError as exc:
            _print_spec_error(exc, err)
            code = exc.exit_code
        worst = max(worst, code)
    return worst


def _write_reports(args: argparse.Namespace, result, guard) -> None:
    """The JSON / JUnit / SARIF reports asked for, through ``guard`` (never onto an input, nor onto each other)."""
    if not (args.json or args.junit or args.sarif):
        return
    from .guard import using_guard
    from .report.machine import write_json, write_junit

    with using_guard(guard):
        if args.json:
            write_json(result, args.json)
        if args.junit:
            write_junit(result, args.junit)
        if args.sarif:
            _write_sarif(args.sarif, result=result)


def _report_failure(args: argparse.Namespace, outcome: str, exc: BaseException, program=None, guard=None,
                    done=None) -> None:
    """After a spec, usage or internal error: still write the reports asked for, saying what did not run."""
    if not (args.json or args.junit or args.sarif):
        return
    from .api import failed_run
    from .guard import guard_for

    if isinstance(exc, PatchlangError):
        errors = [d.render() for d in exc.diagnostics]
    else:
        errors = [f"{type(exc).__name__}: {exc}"]
    inputs = getattr(exc, "inputs", None) or {}
    done = done if done is not None else getattr(exc, "patchlang_done", None)
    result = failed_run(args.spec, outcome, errors, program, inputs, args.task, done)
    if guard is None:
        guard = guard_for(args.spec, list(result.input_files),
                          [m.path for m in program.models.values()] if program else ())
        for path in _named_in_spec(args.spec):  # a spec that did not parse still names the files it reads
            guard.protect(path, f"a file the spec names ({path})")
    for path, write in ((args.json, lambda: _write_reports(_only(args, "json"), result, guard)),
                        (args.junit, lambda: _write_reports(_only(args, "junit"), result, guard)),
                        (args.sarif, lambda: _sarif_after(args, exc, result, guard))):
        if not path:
            continue
        try:
            write()
        except PatchlangError as write_error:  # report the run's error, and say why this report is missing
            _print_spec_error(write_error, _console(stderr=True))


def _only(args: argparse.Namespace, which: str) -> argparse.Namespace:
    return argparse.Namespace(**{**vars(args), **{k: (getattr(args, k) if k == which else None)
                                                  for k in ("json", "junit", "sarif")}})


def _sarif_after(args: argparse.Namespace, exc: BaseException, result, guard) -> None:
    from .guard import using_guard

    with using_guard(guard):
        if isinstance(exc, PatchlangError):
            _write_sarif(args.sarif, error=exc, spec=args.spec)
        else:
            _write_sarif(args.sarif, result=result)


def _named_in_spec(spec: str) -> list[str]:
    """Every quoted string of the spec, as a path relative to its folder (best effort, for protection only)."""
    import re

    from .guard import InputRefused, read_input

    try:
        text = read_input(spec, "spec file").decode("utf-8", errors="replace")
    except InputRefused:
        return []
    folder = os.path.dirname(os.path.abspath(spec))
    return [os.path.join(folder, m) for m in re.findall(r'"((?:[^"\\\n]|\\.)*)"', text) if m and "\x00" not in m]


def cmd_run(args: argparse.Namespace, out: Console) -> int:
    key = _run_key(args)
    if key is not None:  # before anything heavy is imported or loaded: the fast path of an unchanged run
        code = _replay(args, out, key)
        if code is not None:
            args.replayed = True
            return code
    from .api import Interrupted, load_program, run_program
    from .guard import program_guard
    from .tasks.patch import RunOptions

    try:
        program = load_program(args.spec)
    except PatchlangError as exc:
        _report_failure(args, "spec error", exc)
        raise
    except KeyboardInterrupt as exc:  # while reading and checking: nothing ran
        _report_failure(args, "interrupted", exc)
        raise
    guard = program_guard(program)
    try:
        _claim_reports(args, guard, program)
        _run_checked(args, program)
    except PatchlangError as exc:
        _report_failure(args, "usage error", exc, program)
        raise
    options = RunOptions(backend=args.backend, time_limit=args.time_limit, seed=args.seed, verbose=args.verbose,
                         write_files=not args.no_save)
    cache = _cache_for(args, program, options)
    try:
        result = _run(args, out, program, options, guard, run_program, cache)
    except Interrupted as exc:
        result = exc.result
        _write_reports(args, result, guard)
        _print_result(args, out, result)
        if args.output_format == "text":
            out.print(f"interrupted: {len(result.tasks)} task(s) finished, {len(result.not_run)} not run",
                      markup=False)
        return result.exit_code
    except KeyboardInterrupt as exc:  # between tasks, in the assertions or the reports
        _report_failure(args, "interrupted", exc, program, guard)
        raise
    except PatchlangError as exc:
        _blame_backend_flag(args, exc)
        _report_failure(args, "usage error", exc, program, guard)
        raise
    except Exception as exc:
        _report_failure(args, "internal error", exc, program, guard)
        raise
    _write_reports(args, result, guard)
    if key is not None and cache is not None:
        from .run.replay import store_run

        store_run(args.spec, key, result)
    text = args.output_format == "text"
    if args.plots:
        from .guard import using_guard
        from .report.plots import write_plots

        with using_guard(guard):
            for path in write_plots(result, args.plots):
                if text and not args.quiet:
                    out.print(f"plot      {path}", markup=False)
    _print_result(args, out, result)
    return result.exit_code


def _run_key(args: argparse.Namespace) -> str | None:
    """The key of the whole run in the cache (:mod:`patchlang.run.replay`), or None when the cache is off or the
    run writes plots (drawn from the solved networks)."""
    if getattr(args, "no_cache", False) or os.environ.get("PATCHLANG_CACHE", "1") == "0" or args.plots:
        return None
    from .run.replay import run_key

    return run_key(args.spec, args)


def _replay(args: argparse.Namespace, out: Console, key: str) -> int | None:
    """Answer the run from the cache (every input unchanged, every saved file re-checked): the exit code, or None
    to run it the ordinary way (a miss, or a report path the ordinary path must refuse with its own message)."""
    from .guard import guard_for
    from .run.replay import lookup_run

    result, _ = lookup_run(args.spec, key)
    if result is None:
        return None
    guard = guard_for(args.spec, list(result.input_files))
    for t in result.tasks:
        for f in t.files:
            guard.protect(os.path.join(os.path.dirname(os.path.abspath(args.spec)), f),
                          f"the file task `{t.name}` saves ({f})")
    try:
        for path, what in ((args.json, "the JSON report"), (args.junit, "the JUnit report"),
                           (args.sarif, "the SARIF report")):
            if path:
                guard.claim(path, what)
    except PatchlangError:
        return None
    _write_reports(args, result, guard)
    _print_result(args, out, result)
    return result.exit_code


def _blame_backend_flag(args: argparse.Namespace, exc: PatchlangError) -> None:
    """A backend named by `--backend` (not by a spec's `using`) is dropped from the command line: say that."""
    name = getattr(args, "backend", None)
    if name and exc.help and f"remove `using {name}`" in exc.help:
        exc.help = exc.help.replace(f"remove `using {name}`", f"drop `--backend {name}`")


def _print_result(args: argparse.Namespace, out: Console, result) -> None:
    from .report.text import print_report

    if args.output_format != "text":
        from .report.formats import render_result

        sys.stdout.write(render_result(result, args.output_format))
        sys.stdout.flush()
    elif args.quiet:
        from .report.text import verdict_text

        _print_line(out, verdict_text(result))
    else:
        print_report(result, out, verbose=args.verbose)


def _claim_reports(args: argparse.Namespace, guard, program) -> None:
    """Refuse, before anything runs, report paths that are inputs, directories, each other or a task's output."""
    from .guard import OutputGuard

    saves = OutputGuard()  # what the tasks will write (their own paths were checked by `check`, PL242)
    for t in program.tasks:
        save = getattr(t, "save", None) or getattr(getattr(t, "patch", None), "save", None)
        if save:
            saves.protect(save, f"the file task `{t.name}` saves ({save})")
    for path, what in ((args.json, "the JSON report"), (args.junit, "the JUnit report"),
                       (args.sarif, "the SARIF report")):
        if path:
            guard.claim(path, what)
            if args.no_save is False:
                saves.claim(path, what)
    if args.plots:
        from .guard import OutputRefused

        if os.path.exists(args.plots) and not os.path.isdir(args.plots):
            raise OutputRefused(f"refusing to write plots into {args.plots}: it is a file, not a folder",
                                help="give --plots a folder")


def _run_checked(args: argparse.Namespace, program) -> None:
    if args.task:
        unknown = [t for t in args.task if t not in {x.name for x in program.tasks}]
        if unknown:
            raise PatchlangError(f"no task named {', '.join(unknown)}",
                                 help="tasks: " + ", ".join(t.name for t in program.tasks))
    if args.time_limit is not None and not (args.time_limit > 0 and args.time_limit < float("inf")):
        raise PatchlangError(f"--time-limit must be a positive number of seconds, not {args.time_limit}",
                             help="e.g. --time-limit 60")
    if args.select or args.exclude:
        from .lang.select import select_tasks

        args.task = select_tasks(program, args.select, args.exclude, args.task)
    if getattr(args, "jobs", 1) < 1:
        raise PatchlangError(f"--jobs must be at least 1, not {args.jobs}", help="e.g. --jobs 2")
    if getattr(args, "executor", None):
        from .run.cluster import parse_executor

        args.executor = parse_executor(args.executor)
    if getattr(args, "frozen", False):
        from .lockfile import check_frozen

        check_frozen(program)


def _cache_for(args: argparse.Namespace, program, options):
    """The result cache of this run, or None (``--no-cache``, or ``PATCHLANG_CACHE=0`` in the environment)."""
    if getattr(args, "no_cache", False) or os.environ.get("PATCHLANG_CACHE", "1") == "0":
        return None
    from .api import versions
    from .cache import ResultCache

    return ResultCache(program, options, versions())


def _run(args: argparse.Namespace, out: Console, program, options, guard, run_program, cache=None):
    text = args.output_format == "text"
    status = out.status("running", spinner="dots") if text and not args.quiet and out.is_terminal else None
    total = sum(1 for t in program.tasks if not args.task or t.name in args.task)
    started = 0
    current = [""]
    if not args.quiet:  # long proofs: a live line on a terminal, a line every 10 s otherwise (stderr)
        from .report.progress import progress_printer

        live = (lambda line: status.update(f"task {started}/{total}  {current[0]}  {line}")) if status else None
        options.progress = progress_printer(live)

    def on_task(name: str, result) -> None:
        nonlocal started
        if status is None:
            return
        if result is None:
            started += 1
            current[0] = name
            status.update(f"task {started}/{total}  {name}")
        elif total > 1:  # a line per finished task, so a long run shows where it is
            out.print(f"  {started}/{total}  {name}: {result.status} "
                      f"({result.seconds.get('total', 0.0):.1f}s)", markup=False, highlight=False)

    if status is not None:
        with status:
            return run_program(program, options, args.task, on_task, outputs=guard, cache=cache, jobs=args.jobs,
                               executor=args.executor)
    return run_program(program, options, args.task, on_task, outputs=guard, cache=cache, jobs=args.jobs,
                               executor=args.executor)


def cmd_export(args: argparse.Namespace, out: Console) -> int:
    from .tasks.export import export_task

    export_task(args.spec, args.task, args.format, args.output)
    out.print(f"wrote {args.output}", markup=False)
    return EXIT_OK


def _exit_after_replay(code: int) -> None:
    """End the process at once after a run answered from the cache, when nothing is left to do.

    Why: the interpreter's teardown with numpy and onnxruntime loaded (freeing every module, onnxruntime's
    destructors) costs about 50 ms of CPU, a fifth of a cache hit, and does nothing a user sees.  Only when it is
    safe to skip: the hit wrote its reports and saved nothing (every file is written whole and closed before a
    rename), and it is checked here that no ``atexit`` handler and no other thread is waiting; stdout and stderr
    are flushed first.  Otherwise (or when flushing fails, e.g. a closed pipe) the process exits the ordinary way.
    ``main`` calls it only as the command-line entry (``argv`` None), never when called from Python."""
    import atexit

    threading = sys.modules.get("threading")  # not imported: no thread was started through it
    if (threading is not None and threading.active_count() != 1) or atexit._ncallbacks() != 0:
        return
    try:
        sys.stdout.flush()
        sys.stderr.flush()
    except (OSError, ValueError):
        return
    os._exit(code)


def main(argv: list[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    out = _console()
    err = _console(stderr=True)
    try:
        handler = {"check": cmd_check_all, "run": cmd_run_formatted, "export": cmd_export,
                   "fmt": cmd_fmt, "plan": cmd_plan, "lock": cmd_lock}[args.command]
        code = handler(args, out)
        if argv is None and getattr(args, "replayed", False):
            _exit_after_replay(code)
        return code
    except PatchlangError as exc:
        _print_spec_error(exc, err)
        return exc.exit_code
    except KeyboardInterrupt:
        err.print("interrupted", markup=False)
        return EXIT_INCONCLUSIVE
    except Exception:  # a bug in patchlang: say so, with the traceback for the report
        err.print("internal error (a bug in patchlang; please report it with this output):", markup=False)
        import traceback

        err.print(traceback.format_exc(), markup=False, highlight=False)
        return EXIT_INTERNAL


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
