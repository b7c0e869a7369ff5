"""``patchlang check | run | export``.

Exit codes: 0 everything holds, 1 a check failed (no patch exists, property violated, assertion false),
2 spec or usage error, 3 inconclusive (timeout / unknown), 101 internal error (a bug: please report it).
"""

from __future__ import annotations

import argparse
import os
import sys
import traceback

from rich.console import Console

from . import __version__
from .errors import PatchlangError, SpecError

EXIT_OK, EXIT_FAILED, EXIT_USAGE, EXIT_INCONCLUSIVE, EXIT_INTERNAL = 0, 1, 2, 3, 101


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="patchlang", description="Minimal, verified edits to neural networks.")
    p.add_argument("--version", action="version", version=f"patchlang {__version__}")
    sub = p.add_subparsers(dest="command", required=True)

    c = sub.add_parser("check", help="check a spec: names, files, shapes, and each task's problem class")
    c.add_argument("spec")

    r = sub.add_parser("run", help="solve every task, check each answer independently, write files and a report")
    r.add_argument("spec")
    r.add_argument("--task", action="append", help="run only this task (repeatable)")
    r.add_argument("--backend", help="override every task's backend (highs, gurobi, z3)")
    r.add_argument("--time-limit", type=float, help="seconds (a patch task: for the whole task)")
    r.add_argument("--seed", type=int, default=0)
    r.add_argument("--json", metavar="PATH", help="write a JSON report")
    r.add_argument("--junit", metavar="PATH", help="write a JUnit XML report")
    r.add_argument("--plots", metavar="DIR", help="write weight-change heatmaps and histograms (PNG)")
    r.add_argument("--no-save", action="store_true", help="do not write patched networks")
    r.add_argument("--quiet", "-q", action="store_true", help="only the verdict line")
    r.add_argument("--verbose", "-v", action="store_true", help="show solver logs")

    e = sub.add_parser("export", help="write a task's query for an external solver or verifier")
    e.add_argument("spec")
    e.add_argument("--task", required=True)
    e.add_argument("--format", required=True, choices=["lp", "mps", "smt2", "vnnlib"])
    e.add_argument("-o", "--output", required=True)
    return p


def _print_spec_error(err: PatchlangError, console: Console) -> None:
    for d in err.diagnostics:
        console.print(d.render(), markup=False, highlight=False)
    n = len(err.diagnostics)
    if isinstance(err, SpecError) and n > 1:
        console.print(f"{n} errors", markup=False)


def cmd_check(args: argparse.Namespace, out: Console) -> int:
    from .api import load_program

    program = load_program(args.spec)
    for w in program.warnings:
        out.print(w.render(), markup=False, highlight=False)
    out.print(f"{args.spec}: ok ({len(program.models)} model(s), {len(program.points)} point set(s), "
              f"{len(program.tasks)} task(s), {len(program.assertions)} assertion(s))", markup=False)
    for t in program.tasks:
        cls = getattr(t, "problem_class", None) or getattr(getattr(t, "patch", None), "problem_class", "MILP")
        reason = getattr(t, "class_reason", None) or getattr(getattr(t, "patch", None), "class_reason", "")
        if t.kind == "verify":
            cls, reason = "MILP", "complete verification over an input region (falsify first)"
        title = t.name if t.name.startswith(f"{t.kind} ") else f"{t.kind:<6} {t.name}"  # `verify ...` names itself
        out.print(f"  line {t.span.line:>3}  {title:<31} {cls}: {reason}", markup=False, highlight=False)
    return EXIT_OK


def cmd_run(args: argparse.Namespace, out: Console) -> int:
    from .api import load_program, run_program
    from .report.machine import write_json, write_junit
    from .report.text import print_report
    from .tasks.patch import RunOptions

    program = load_program(args.spec)
    if args.task:
        unknown = [t for t in args.task if t not in {x.name for x in program.tasks}]
        if unknown:
            raise PatchlangError(f"no task named {', '.join(unknown)}",
                                 help="tasks: " + ", ".join(t.name for t in program.tasks))
    options = RunOptions(backend=args.backend, time_limit=args.time_limit, seed=args.seed, verbose=args.verbose,
                         write_files=not args.no_save)
    status = out.status("running", spinner="dots") if not args.quiet and out.is_terminal else None
    total = sum(1 for t in program.tasks if not args.task or t.name in args.task)
    started = 0

    def on_task(name: str, result) -> None:
        nonlocal started
        if status is None:
            return
        if result is None:
            started += 1
            status.update(f"task {started}/{total}  {name}")
        elif total > 1:  # a line per finished task, so a long run shows where it is
            out.print(f"  {started}/{total}  {name}: {result.status} "
                      f"({result.seconds.get('total', 0.0):.1f}s)", markup=False, highlight=False)

    if status is not None:
        with status:
            result = run_program(program, options, args.task, on_task)
    else:
        result = run_program(program, options, args.task, on_task)
    if args.json:
        write_json(result, args.json)
    if args.junit:
        write_junit(result, args.junit)
    if args.plots:
        from .report.plots import write_plots

        for path in write_plots(result, args.plots):
            out.print(f"plot      {path}", markup=False)
    if args.quiet:
        out.print(f"exit {result.exit_code}", markup=False)
    else:
        print_report(result, out)
    return result.exit_code


def cmd_export(args: argparse.Namespace, out: Console) -> int:
    from .tasks.export import export_task

    export_task(args.spec, args.task, args.format, args.output)
    out.print(f"wrote {args.output}", markup=False)
    return EXIT_OK


def main(argv: list[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    out = Console(highlight=False, soft_wrap=True)
    if not out.is_terminal and "COLUMNS" not in os.environ:
        out.width = 120  # CI logs and pipes: wide enough that the check table does not wrap its words
    err = Console(stderr=True, highlight=False, soft_wrap=True)
    try:
        handler = {"check": cmd_check, "run": cmd_run, "export": cmd_export}[args.command]
        return handler(args, out)
    except PatchlangError as exc:
        _print_spec_error(exc, err)
        return exc.exit_code
    except KeyboardInterrupt:
        err.print("interrupted", markup=False)
        return EXIT_INCONCLUSIVE
    except Exception:  # a bug in patchlang: say so, with the traceback for the report
        err.print("internal error (a bug in patchlang; please report it with this output):", markup=False)
        err.print(traceback.format_exc(), markup=False, highlight=False)
        return EXIT_INTERNAL


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
