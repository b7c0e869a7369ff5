"""Branch and bound's staged search on every core: the conjunctions' trees, their exact Queries after
stabilisation (:mod:`.conjunction_query`, HiGHS with one thread each) and the stability searches of
:mod:`.branch_and_bound` run in worker processes.

Why: the bound computations are many small matrix products and element-wise steps; BLAS threads do not speed
them up (mnist_fc 256x4 prop_5_0.03: 11.5 CPU s in 11.6 s with two OpenBLAS threads, 12.1 s with one), so a
second core is used only by a second search.  A case's conjunctions are independent trees and one hidden layer's
stability searches (:mod:`.stabilise`) are independent of each other, so they spread over the cores (as do the
single-threaded MILP solves of the conjunctions' Queries).

How: the standard library's process pool (``multiprocessing.Pool`` with the *forkserver* start method: a worker
starts from a clean process, never from a copy of one whose HiGHS or onnxruntime threads it would not have, and
``terminate`` stops the searches still running once the case is decided).  A tree runs in one worker to its
verdict or its time slice and is never resumed (a paused tree cannot move between processes), so a slice is
fixed when the tree starts: the time left shared by the trees still to start, a worker's share of them.
Workers never run onnxruntime: a tree stops at its first candidate inside the box and unsafe in float64, and
the caller confirms it as it confirms its own (a candidate that does not confirm leaves that conjunction open).

Soundness is the trees' own (:mod:`.bab_tree`): a worker returns a tree's verdict unchanged.
"""

from __future__ import annotations

import math
import multiprocessing
import os
import pickle
import queue
import signal
import sys
import time
import types
from contextlib import contextmanager
from dataclasses import replace
from functools import partial
from typing import Any, Callable, Iterator

import numpy as np

from .bab_tree import BabOptions, TreeStats, run_tree
from .bounds import LayerBounds, ReluNet
from .conjunction_query import time_boxed, whole_conjunction_query
from .verify import LeafSolver, SearchResult


def worker_count(requested: int) -> int:
    """``requested`` worker processes, or with 0 every core this process may use; 1 inside a daemonic process
    (a Dask or pool worker may not start processes of its own)."""
    if multiprocessing.current_process().daemon:
        return 1
    if requested > 0:
        return requested
    cores = os.sched_getaffinity(0) if hasattr(os, "sched_getaffinity") else range(os.cpu_count() or 1)
    return max(1, len(cores))


@contextmanager
def _main_module_hidden() -> Iterator[None]:
    """While the workers start, ``__main__`` is an empty module: a new process (forkserver, spawn) otherwise runs
    the caller's script again to rebuild ``__main__``, which a script without an ``if __name__ == "__main__"``
    guard turns into a recursive start of the whole verification.  The workers' tasks only need patchlang's own
    functions, never ``__main__``'s."""
    main = sys.modules["__main__"]
    sys.modules["__main__"] = types.ModuleType("__main__")
    try:
        yield
    finally:
        sys.modules["__main__"] = main


def _leave_interrupts_to_caller() -> None:
    """Ctrl-C reaches every process of the terminal's group: a worker would die with a traceback of its own; the
    caller's KeyboardInterrupt ends the search and its pool's exit stops the workers."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)


def picklable(*objects: Any) -> bool:
    """Whether ``objects`` can be handed to a worker process (a test's lambda leaf solver cannot)."""
    try:
        pickle.dumps(objects)
    except Exception:  # noqa: BLE001 -- any reason means "no"
        return False
    return True


# seconds past the search's deadline after which a worker that has not answered is taken as lost (killed, e.g. by
# the kernel when memory ran out): trees stop at their limits and leaves at the deadline, so a live one answers
LOST_AFTER = 30.0


class Workers:
    """A pool of ``n`` worker processes for one search that ends at ``deadline`` (perf_counter); a context
    manager whose exit stops what still runs.  A worker that dies (a pool would wait for it forever) costs its
    tasks' answers, never a hang: past ``deadline + LOST_AFTER`` they count as lost."""

    def __init__(self, n: int, deadline: float):
        self.n = n
        self.deadline = deadline
        with _main_module_hidden():
            # forkserver where there is one (not on Windows); spawn starts equally clean workers, only slower
            method = "forkserver" if "forkserver" in multiprocessing.get_all_start_methods() else "spawn"
            self._pool = multiprocessing.get_context(method).Pool(n, initializer=_leave_interrupts_to_caller)

    def __enter__(self) -> "Workers":
        return self

    def __exit__(self, *exc: object) -> None:
        self._pool.terminate()
        self._pool.join()

    def map(self, fn: Callable[[Any], Any], tasks: list[Any], lost: Any = None) -> list[Any]:
        """``[fn(t) for t in tasks]`` on the workers, started in the tasks' order; ``lost`` for each task when a
        worker died (see the class)."""
        if not tasks:
            return []
        pending = self._pool.map_async(fn, tasks, chunksize=1)
        try:
            return pending.get(timeout=max(0.0, self.deadline - time.perf_counter()) + LOST_AFTER)
        except multiprocessing.TimeoutError:
            return [lost] * len(tasks)

    def parts(self, task: "PartTask", rn: ReluNet, lo: np.ndarray, hi: np.ndarray, bounds: LayerBounds, spec,
              parts: list[int], solve: LeafSolver, opt: BabOptions, t0: float, slice_for: Callable[[int], float]
              ) -> Iterator[tuple[int, str, bool, TreeStats, SearchResult]]:
        """Conjunctions ``parts`` decided by ``task`` (:func:`tree_task` or :func:`query_task`) in this order,
        ``(j, verdict or reason, decided, stats, result)`` as they finish; ``slice_for(r)`` gives the seconds of
        a task started when ``r`` parts (itself included) are still to start.  Stop iterating to abandon the
        rest (the pool's exit stops them)."""
        done: queue.SimpleQueue = queue.SimpleQueue()
        stripped = replace(opt, progress=None, tighten=None)
        todo = list(parts)
        running: set[int] = set()
        while todo or running:
            while todo and len(running) < self.n:
                j = todo.pop(0)
                seconds = slice_for(len(todo) + 1)
                self._pool.apply_async(task, (rn, lo, hi, bounds, spec, j, solve, stripped, t0, seconds),
                                       callback=lambda r, j=j: done.put((j, r, None)),
                                       error_callback=lambda e, j=j: done.put((j, None, e)))
                running.add(j)
            try:
                j, result, error = done.get(timeout=max(0.0, self.deadline - time.perf_counter()) + LOST_AFTER)
            except queue.Empty:
                for j in sorted(running) + todo:
                    yield j, "a worker process stopped without an answer", False, TreeStats(), SearchResult("unknown")
                return
            running.discard(j)
            if error is not None:
                raise error
            yield (j, *result)


PartTask = Callable[..., tuple[str, bool, TreeStats, SearchResult]]


def in_this_process(task: PartTask, rn: ReluNet, lo: np.ndarray, hi: np.ndarray, bounds: LayerBounds, spec,
                    parts: list[int], solve: LeafSolver, opt: BabOptions, t0: float,
                    slice_for: Callable[[int], float]) -> Iterator[tuple[int, str, bool, TreeStats, SearchResult]]:
    """:meth:`Workers.parts` without workers (one core, or a solver that cannot be pickled)."""
    for n_done, j in enumerate(parts):
        yield (j, *task(rn, lo, hi, bounds, spec, j, solve, opt, t0, slice_for(len(parts) - n_done)))


def _limit(opt: BabOptions, seconds: float) -> float:
    """``seconds`` from now, never past ``opt.deadline`` (perf_counter values)."""
    limit = time.perf_counter() + seconds
    return limit if opt.deadline is None else min(limit, opt.deadline)


def violated_in_float64(rn: ReluNet, lo: np.ndarray, hi: np.ndarray, spec, x: np.ndarray) -> bool:
    """A worker's confirmation without onnxruntime: inside the box and unsafe in float64 (the caller confirms
    again as it confirms its own candidates)."""
    x = np.asarray(x, float).reshape(1, -1)
    return bool(np.all(x >= lo) and np.all(x <= hi) and spec.violated(rn.forward(x))[0])


def tree_task(rn: ReluNet, lo: np.ndarray, hi: np.ndarray, bounds: LayerBounds, spec, j: int, solve: LeafSolver,
              opt: BabOptions, t0: float, seconds: float) -> tuple[str, bool, TreeStats, SearchResult]:
    """Conjunction ``j``'s tree for ``seconds`` from now (and never past ``opt.deadline``), in a worker."""
    confirm = partial(violated_in_float64, rn, lo, hi, spec)
    return run_tree(rn, lo, hi, bounds, spec, j, solve, confirm, opt, t0, _limit(opt, seconds))


def query_task(rn: ReluNet, lo: np.ndarray, hi: np.ndarray, bounds: LayerBounds, spec, j: int, solve: LeafSolver,
               opt: BabOptions, t0: float, seconds: float) -> tuple[str, bool, TreeStats, SearchResult]:
    """Conjunction ``j`` as one exact Query over ``bounds`` (:mod:`.conjunction_query`), searched by bound for
    ``seconds`` at most; a proof's final bound is 0.0 (as when a tree's last domains went to the Query)."""
    res = SearchResult("unknown")
    seconds = max(0.0, _limit(opt, seconds) - time.perf_counter())
    verdict = whole_conjunction_query(rn, lo, hi, bounds, spec, j, time_boxed(solve, seconds, bound_only=True),
                                      partial(violated_in_float64, rn, lo, hi, spec), opt, res)
    decided = verdict in ("holds", "violated")
    return verdict, decided, TreeStats(final_bound=0.0 if verdict == "holds" else float("nan")), res


def even_slices(seconds: float) -> Callable[[int], float]:
    """Every tree the same ``seconds``."""
    return lambda remaining: seconds


def until(deadline: float) -> Callable[[int], float]:
    """Every task all the time left before ``deadline``: for searches that all have to succeed (a case holds only
    when every part does), where cutting one short to start the next gains nothing."""
    return lambda remaining: max(0.0, deadline - time.perf_counter())


def rest_of_time(deadline: float, workers: int) -> Callable[[int], float]:
    """A tree started with ``r`` parts still to start gets the time left over the ``ceil(r / workers)`` trees its
    worker will still run: the last ones get all that is left."""
    return lambda remaining: max(0.0, deadline - time.perf_counter()) / math.ceil(remaining / workers)
