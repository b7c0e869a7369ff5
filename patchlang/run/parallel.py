"""`run --jobs N`: independent tasks in worker processes (``concurrent.futures.ProcessPoolExecutor``), results in
source order.

Workers are forked from a ``forkserver`` that imported patchlang and the solvers once.  Each worker receives the
checked program once (pickled, in the pool's initializer) and then only task indices; it
runs a task exactly as the serial loop does (the result cache included) under its own output guard (the program's
inputs protected; `check` already refused two tasks saving to one path, PL242).  Solver threads are budgeted
against jobs: a task without an explicit `threads` option gets ``max(1, cores // jobs)``.  Assertions, which may
read several tasks, are evaluated by the caller after every task finished, as in a serial run.

Ctrl-C: the parent cancels the tasks not started, sends SIGINT to every worker (a worker's handler makes the
interrupted task raise ``KeyboardInterrupt``, so an atomic write in progress removes its temporary file and a
worker starts no further task), waits, then SIGTERM (same handler), then kills what is left (a worker still
inside a solver's C code, which writes no file).  Outputs are only ever written by ``files.write_atomic``: a
temporary file in the target folder and a rename, so no half-written file is left.
"""

from __future__ import annotations

import os
import pickle
import signal
from concurrent.futures import Future, ProcessPoolExecutor
from multiprocessing import get_context
from typing import Callable, Iterator

_STATE: dict = {}


def solver_threads(jobs: int) -> int:
    return max(1, (os.cpu_count() or 1) // max(1, jobs))


def _stop(signum, frame) -> None:
    _STATE["stopping"] = True
    raise KeyboardInterrupt


def _init(state: bytes) -> None:
    signal.signal(signal.SIGINT, _stop)
    signal.signal(signal.SIGTERM, _stop)
    _STATE.update(pickle.loads(state), stopping=False)


def worker_state(program, options, cache, runner: Callable) -> bytes:
    """What every worker receives once, pickled: the program as a worker needs it, the options, the cache and
    the task runner.

    Without the named point sets and the assertions: a task holds the points it uses (its goals' resolved sets),
    the assertions are evaluated by the caller, and the named sets can be large (`points train = "...mnist..."`
    is 60 000 images, 376 MB in float64, of which a `keep train[0:1000]` uses 1000) and would be pickled to every
    worker for nothing."""
    import copy
    from dataclasses import replace

    lean = replace(program, points={}, assertions=[])
    if cache is not None:
        cache = copy.copy(cache)
        cache.program = lean
    return pickle.dumps({"program": lean, "options": options, "cache": cache, "runner": runner},
                        protocol=pickle.HIGHEST_PROTOCOL)


def _work(index: int):
    if _STATE.get("stopping"):
        raise KeyboardInterrupt
    from ..guard import program_guard, using_guard

    program = _STATE["program"]
    with using_guard(program_guard(program)):
        return _STATE["runner"](program.tasks[index], _STATE["options"], _STATE["cache"])


def _context():
    """``forkserver`` with patchlang and its solvers imported once in the (single-threaded) server: each worker is
    forked from it, ready, instead of importing everything again (``spawn``) or inheriting solver thread pools in
    an unknown state (``fork``)."""
    ctx = get_context("forkserver")
    ctx.set_forkserver_preload(["patchlang.api", "patchlang.tasks.patch", "patchlang.tasks.verify",
                                "patchlang.tasks.repair", "patchlang.cache", "patchlang.run.parallel", "numpy",
                                "onnx", "onnxruntime", "highspy"])
    return ctx


def run_parallel(program, tasks: list, options, jobs: int, runner: Callable, cache=None,
                 on_task: Callable | None = None) -> Iterator:
    """Yield each task's result in source order; on Ctrl-C stop every worker and re-raise.

    ``runner(task, options, cache)`` runs one task in a worker (``api``'s, passed down: this layer is below it);
    ``cache`` is the run's :class:`~patchlang.cache.ResultCache` or None."""
    from dataclasses import replace

    # a worker cannot draw on the parent's terminal: its progress callback stays home (and is not picklable)
    options = replace(options, threads=options.threads or solver_threads(jobs), progress=None)
    index = {id(t): i for i, t in enumerate(program.tasks)}
    pool = ProcessPoolExecutor(max_workers=min(jobs, len(tasks)), mp_context=_context(),
                               initializer=_init, initargs=(worker_state(program, options, cache, runner),))
    futures: list[Future] = []
    try:
        for t in tasks:
            futures.append(pool.submit(_work, index[id(t)]))
        yield from in_source_order(tasks, futures, on_task)
    except BaseException:
        _stop_workers(pool, futures)
        raise
    pool.shutdown(wait=True)


def in_source_order(tasks: list, futures: list, on_task: Callable | None) -> Iterator:
    """Each task's result (``future.result()``) in the order of ``tasks``, telling ``on_task`` as a serial run does."""
    for t, fut in zip(tasks, futures):
        if on_task:
            on_task(t.name, None)
        r = fut.result()
        if on_task:
            on_task(t.name, r)
        yield r


def _stop_workers(pool: ProcessPoolExecutor, futures: list[Future]) -> None:
    for f in futures:
        f.cancel()
    procs = list(getattr(pool, "_processes", {}).values())  # the executor has no public handle on its workers
    for sig, wait in ((signal.SIGINT, 3.0), (signal.SIGTERM, 2.0)):
        for p in procs:
            if p.is_alive():
                try:
                    os.kill(p.pid, sig)
                except OSError:
                    pass
        for p in procs:
            p.join(wait)
    for p in procs:
        if p.is_alive():
            p.kill()
            p.join(1.0)
    pool.shutdown(wait=False, cancel_futures=True)
