"""`run --executor dask://HOST:PORT | local`: the spec's tasks on a Dask cluster (``dask.distributed``).

Why Dask rather than Ray: patchlang's unit of work is a task, a plain Python function call whose inputs and result
pickle, with no shared state between tasks, and that is exactly a ``Client.submit``; ``distributed`` is pure
Python (one optional extra, ``patchlang[cluster]``), runs a local cluster of processes with one call, and talks to a
remote scheduler over TCP.  Ray brings a native runtime and a larger footprint for nothing patchlang needs.

The checked program, the run's options, the result cache and the task runner are pickled once and scattered to
every worker; each task is one ``submit`` (its source index).  Results are gathered in source order, exactly as
`--jobs` and a serial run report them, and the caller evaluates the assertions afterwards.  Each worker runs a
task under the program's output guard and writes its `save` files (atomically) at the spec's paths: on a remote
cluster those paths must be on a file system the workers share with the client, as for any Dask job.

``local`` starts a ``LocalCluster`` of ``--jobs`` worker processes (one thread each), on the loopback interface
only, without a dashboard, and closes it afterwards; solver threads are budgeted as for ``--jobs``.  On Ctrl-C the
submitted tasks are cancelled and the client (and a local cluster) closed.
"""

from __future__ import annotations

import logging
import pickle
from dataclasses import replace
from typing import Callable, Iterator

from ..errors import PatchlangError

_LOADED: dict[bytes, dict] = {}

# The local cluster's workers without two of Dask's defaults that cost patchlang's tasks CPU, measured on ACAS Xu
# `verify` tasks (bench/parallel.py):
# - MALLOC_TRIM_THRESHOLD_=65536 in the worker's environment: setting it switches off glibc's dynamic mmap
#   threshold, so every array of 128 KiB or more is a fresh mmap, zero-filled page by page, and unmapped when freed;
#   one task took 6.6 million page faults and 23 s of system time instead of 0.17 million and 0.6 s (as in a
#   `--jobs` worker).  Dask sets it to return memory to the OS sooner, which a short-lived local cluster does not need.
# - the statistical profiler, which samples every worker thread's stack every 10 ms (for a dashboard patchlang does
#   not start) and takes the GIL from the task each time.
# - the event loop's 20 ms tick (it only measures how long the loop was blocked: a task holds the GIL for seconds)
#   and the 0.5 s system monitor (dashboard figures): each wakes a thread that takes the GIL from the task; at 1 s
#   and 2 s the worker's threads other than the task's used 1.1 s of CPU instead of 2.8 s on 12 ACAS Xu tasks.
# The thread caps Dask sets (OMP/MKL/OpenBLAS: 1 thread) are kept: solver threads are budgeted by --jobs.
LOCAL_WORKERS = {"distributed.nanny.pre-spawn-environ.MALLOC_TRIM_THRESHOLD_": None,
                 "distributed.worker.profile.enabled": False,
                 "distributed.admin.tick.interval": "1s", "distributed.admin.tick.limit": "1h",
                 "distributed.admin.system-monitor.interval": "2s"}


def parse_executor(text: str) -> str:
    """``local`` or a scheduler address ``tcp://HOST:PORT``; a usage error otherwise."""
    if text == "local":
        return text
    if text.startswith("dask://") and ":" in text[len("dask://"):]:
        return "tcp://" + text[len("dask://"):]
    raise PatchlangError(f"--executor must be `local` or `dask://HOST:PORT`, not `{text}`",
                         help="e.g. --executor local, or --executor dask://127.0.0.1:8786 for a running scheduler")


def _client(address: str, jobs: int):
    try:
        from distributed import Client, LocalCluster
    except ImportError:
        raise PatchlangError("--executor needs the `distributed` package (Dask), which is not installed",
                             help='pip install "patchlang[cluster]"') from None
    if address == "local":
        import warnings

        import dask

        # LOCAL_WORKERS is read by each Nanny as it is created (its worker's environment and config).  The
        # scheduler's HTTP server (health checks; no dashboard) takes another port when 8787 is in use: that is
        # not the user's concern, so its warning is not printed.
        with dask.config.set(LOCAL_WORKERS), warnings.catch_warnings():
            warnings.filterwarnings("ignore", message="Port 8787 is already in use")
            cluster = LocalCluster(n_workers=jobs, threads_per_worker=1, processes=True, host="127.0.0.1",
                                   dashboard_address=None, silence_logs=logging.ERROR)
        return Client(cluster), cluster
    try:
        return Client(address, timeout=30), None
    except OSError as exc:
        raise PatchlangError(f"cannot reach the Dask scheduler at {address}: {exc}",
                             help="start one with `dask scheduler` (and `dask worker ADDRESS`), or use "
                                  "--executor local") from None


def _work(state: bytes, index: int):
    from ..guard import program_guard, using_guard

    loaded = _LOADED.get(state)
    if loaded is None:
        _LOADED.clear()
        loaded = _LOADED[state] = pickle.loads(state)
    program = loaded["program"]
    with using_guard(program_guard(program)):
        return loaded["runner"](program.tasks[index], loaded["options"], loaded["cache"])


def run_on_dask(program, tasks: list, options, address: str, jobs: int, runner: Callable, cache=None,
                on_task: Callable | None = None) -> Iterator:
    """Yield each task's result in source order (see the module docstring)."""
    from .parallel import in_source_order, solver_threads, worker_state

    if address == "local":
        options = replace(options, threads=options.threads or solver_threads(jobs), progress=None)
    client, cluster = _client(address, jobs)
    futures = []
    try:
        index = {id(t): i for i, t in enumerate(program.tasks)}
        state = worker_state(program, options, cache, runner)
        [shared] = client.scatter([state], broadcast=True)
        futures = [client.submit(_work, shared, index[id(t)], pure=False, key=f"patchlang-{i}-{t.name}")
                   for i, t in enumerate(tasks)]
        yield from in_source_order(tasks, futures, on_task)
    except BaseException:
        client.cancel(futures)
        raise
    finally:
        client.close()
        if cluster is not None:
            cluster.close()
