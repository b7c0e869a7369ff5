"""`patchlang plan SPEC`: per task what `run` would do (see :mod:`patchlang.tasks.planview`), and whether a cached
result applies; ``--detailed-exitcode``: 0 when nothing is to run, 2 when something is (like ``terraform plan``)."""

from __future__ import annotations

import argparse
import os

from rich.console import Console

EXIT_NOTHING, EXIT_SOMETHING = 0, 2


def print_plan(program, args: argparse.Namespace, out: Console, versions: dict[str, str]) -> int:
    """Print the plan of the checked ``program``; ``versions``: the package versions the cache key includes."""
    from ..errors import PatchlangError
    from ..tasks.patch import RunOptions
    from ..tasks.planview import plan_program

    only = args.task
    if only:
        unknown = [t for t in only if t not in {x.name for x in program.tasks}]
        if unknown:
            raise PatchlangError(f"no task named {', '.join(unknown)}",
                                 help="tasks: " + ", ".join(t.name for t in program.tasks))
    if args.select or args.exclude:
        from ..lang.select import select_tasks

        only = select_tasks(program, args.select, args.exclude, only)
    cache_state = None
    if not args.no_cache and os.environ.get("PATCHLANG_CACHE", "1") != "0":
        from ..cache import ResultCache

        options = RunOptions(backend=args.backend, time_limit=args.time_limit, seed=args.seed,
                             write_files=not args.no_save)
        cache_state = ResultCache(program, options, versions).state
    plans = plan_program(program, args.backend, only, cache_state)
    for w in program.warnings:
        out.print(w.render(), markup=False, highlight=False)
    to_run = sum(p.to_run for p in plans)
    out.print(f"{args.spec}: {len(plans)} task(s), {to_run} to run, {len(plans) - to_run} cached", markup=False)
    for p in plans:
        title = p.name if p.name.startswith(f"{p.kind} ") else f"{p.kind:<6} {p.name}"
        out.print(f"  line {p.line:>3}  {title:<31} {p.problem_class}: {p.reason}", markup=False, highlight=False)
        size = ", ".join(f"{v} {k}" for k, v in p.query.items())
        out.print(f"            backend {p.backend}; query {size}"
                  f" ({'built, not solved' if p.query_exact else 'estimate: built while solving'})",
                  markup=False, highlight=False)
        for s in p.steps:
            out.print(f"            - {s}", markup=False, highlight=False)
        cache = {"cached": "cached: a result applies (its saved file is re-checked when run)",
                 "not cached": "cache: no result applies: to run", "never cached": "cache: never cached (always runs)",
                 "no cache": "cache: not consulted (--no-cache): to run"}[p.cached]
        out.print(f"            {cache}", markup=False, highlight=False)
    if args.detailed_exitcode:
        return EXIT_SOMETHING if to_run else EXIT_NOTHING
    return EXIT_NOTHING
