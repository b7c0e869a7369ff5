"""A whole `patchlang run` answered from the cache: the CI fast path when nothing changed.

Why a second level above the per-task cache (:mod:`patchlang.cache`): a per-task hit still parses and checks the
spec, loads every model (onnx) and every point set, and imports the solvers; on the quickstart that is most of a
run.  Here the key is what the command line says before anything is loaded: the spec's bytes, its path, the
options that change results (``--task/--select/--exclude``, backend, time limit, seed, ``--no-save``, ``--frozen``
with the lock file's bytes) and patchlang's version.  The entry (``.patchlang/cache/runs/KEY.pkl``) holds the
finished run's result, the SHA-256 of every file the spec read and of every file it saved, and the installed
numeric and solver packages (their ``dist-info`` folders, :func:`patchlang.cache.packages_fingerprint`).

A hit is earned, not trusted: every input file must still hash as it did, the numeric and solver packages must
be the same installs, every saved file must hash as it did when saved, and each task's independent check runs
again (:func:`patchlang.cache.recheck_saved`: onnxruntime on every saved network and counterexample, float64 on
the patched networks).  Anything else is a miss, and the run goes the ordinary way (which re-uses per-task
entries where they still apply).  A run is stored only when it finished and every task's result may be cached
(decided, checked, every saved file re-checkable): a timeout, an internal error or an interruption never is.
"""

from __future__ import annotations

import copy
import hashlib
import json
import os
import time
from pathlib import Path
from typing import Any

from ..cache import cache_dir, cacheable, mark_cached, packages_fingerprint, read_entry, recheck_saved, write_entry

RUNS = "runs"


def run_key(spec_path: str, args: Any) -> str | None:
    """The key of this command line's run, or None when the spec (or the lock file ``--frozen`` reads) cannot be
    read: then the ordinary path reports the problem."""
    from .. import __version__
    from ..guard import InputRefused, sha256_input

    try:
        spec_sha = sha256_input(spec_path, "spec file")
        lock = None
        if getattr(args, "frozen", False):
            from ..lockfile import lock_path

            path = lock_path(spec_path)
            lock = sha256_input(path, "lock file") if os.path.exists(path) else "missing"
    except InputRefused:
        return None
    doc = {"patchlang": __version__, "spec": os.path.realpath(spec_path), "spec_sha256": spec_sha, "lock": lock,
           **{k: getattr(args, k, None) for k in ("task", "select", "exclude", "backend", "time_limit", "seed",
                                                   "no_save", "frozen")}}
    return hashlib.sha256(json.dumps(doc, sort_keys=True, default=repr).encode()).hexdigest()


def _entry_path(spec_path: str, key: str) -> tuple[Path, Path]:
    folder = cache_dir(spec_path)
    return folder, folder / RUNS / f"{key}.pkl"


def lookup_run(spec_path: str, key: str) -> tuple[Any | None, str]:
    """The cached result of the whole run, every check re-run, or (None, why it is a miss)."""
    t0 = time.perf_counter()
    folder, path = _entry_path(spec_path, key)
    entry = read_entry(folder, path)
    if entry is None:
        return None, "not cached"
    try:
        result, why = _earned(spec_path, key, entry)
    except Exception as exc:  # an entry of another layout, a file that vanished meanwhile: a miss, never a crash
        return None, f"unusable entry ({type(exc).__name__})"
    if result is not None:
        result.seconds = time.perf_counter() - t0
    return result, why


def _earned(spec_path: str, key: str, entry: dict) -> tuple[Any | None, str]:
    from ..guard import InputRefused, sha256_input

    if entry["packages"] != packages_fingerprint():
        return None, "other package versions"
    for file, sha in {**entry["inputs"], **entry["saved"]}.items():
        try:
            if sha256_input(file, "input file") != sha:
                return None, f"{file} changed"
        except InputRefused:
            return None, f"{file} is missing or unreadable"
    result = entry["result"]
    base = os.path.dirname(os.path.abspath(spec_path))
    for task in result.tasks:
        why = recheck_saved(task, base)
        if why is not None:
            return None, why
        mark_cached(task, key)
    result.spec_path = spec_path
    return result, "cached"


def store_run(spec_path: str, key: str, result: Any) -> bool:
    """Store a finished run whose every task may be cached; True when stored."""
    from ..guard import InputRefused, sha256_input

    if result.outcome != "finished" or result.not_run or not all(cacheable(t) for t in result.tasks):
        return False
    base = os.path.dirname(os.path.abspath(spec_path))
    saved = {}
    try:
        for t in result.tasks:
            for f in t.files:
                full = os.path.abspath(os.path.join(base, f))
                saved[full] = sha256_input(full, "saved file")
    except InputRefused:
        return False
    folder, path = _entry_path(spec_path, key)
    write_entry(folder, path, {"key": key, "packages": packages_fingerprint(), "result": _light(result),
                               "inputs": {os.path.abspath(p): sha for p, sha in result.input_files.items()},
                               "saved": saved})
    return True


def _light(result: Any) -> Any:
    """A copy whose networks drop the original ``ModelProto`` (unpickling it would import onnx) where the network
    does not need it to evaluate (no onnxruntime prefix)."""
    out = copy.copy(result)
    out.tasks = []
    for t in result.tasks:
        t = copy.copy(t)
        if t.patched is not None and t.patched.prefix is None:
            t.patched = copy.copy(t.patched)
            t.patched.proto = None
        out.tasks.append(t)
    return out
