"""The result cache: a patch task whose inputs did not change is not solved again, but its saved file is re-checked.

Where: ``.patchlang/cache/`` beside the spec, one file per task result, named by its key.  The key is the SHA-256
of everything the result depends on (:meth:`ResultCache.key`): the task's statement and every declaration of the
spec as syntax trees without positions (so layout and comments do not matter, see ``lang.format``), the resolved
values of the task (its goals' points and labels, the margin), the content of every input file of the spec
(SHA-256, as in the JSON report), the backend's name and the versions of patchlang and of every numeric and solver
package, and the run's options (backend override, time limit, seed, planning steps switched off, whether files are
saved).

What is cached: a patch task's "patched" and "no patch" results only.  An inconclusive result (time limit,
unknown), a result that failed the independent check, and an internal error are never stored.  Verify and repair
tasks always run.

A hit is never reported on trust: every file the task saved must still have the content it had when it was saved
(SHA-256), and it is re-evaluated with onnxruntime (float32) against the task's goals, with the cached network in
float64, exactly as after solving (``tasks.checking``).  A missing, edited or failing file makes the lookup a miss
and the task runs again.

Between processes: entries are written atomically (``files.write_atomic``: a temporary file and a rename) under
an exclusive ``fcntl.flock`` on ``.patchlang/cache/lock``; readers take the lock shared.  An entry that cannot be
read (truncated by a full disk, another version's format) is a miss.  Entries are Python pickles read with an
unpickler that only builds patchlang, numpy and onnx objects (a cache folder is as trusted as the spec beside it,
but a stray file there still cannot run code).
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import io
import json
import os
import pickle
from pathlib import Path
from typing import Any, Iterator

import numpy as np

FORMAT = 1
FOLDER = os.path.join(".patchlang", "cache")
CACHEABLE = ("patched", "no patch")


def cache_dir(spec_path: str | os.PathLike) -> Path:
    return Path(os.path.abspath(spec_path)).parent / FOLDER


class _SafeUnpickler(pickle.Unpickler):
    """Builds only patchlang, numpy and onnx objects and plain containers."""

    _BUILTINS = {"set", "frozenset", "complex", "slice", "range", "bytearray", "getattr"}

    def find_class(self, module: str, name: str) -> Any:
        top = module.split(".")[0]
        if top in ("patchlang", "numpy", "onnx", "collections", "copyreg", "_codecs") or \
                module.startswith("google.protobuf") or (module == "builtins" and name in self._BUILTINS):
            return super().find_class(module, name)
        raise pickle.UnpicklingError(f"refusing to build {module}.{name} from a cache entry")


def _sha256(path: str) -> str | None:
    from .guard import InputRefused, sha256_input

    try:
        return sha256_input(path, "saved file")
    except InputRefused:
        return None


def _array_digest(h: "hashlib._Hash", a: np.ndarray | None) -> None:
    if a is None:
        h.update(b"none")
        return
    a = np.ascontiguousarray(a)
    h.update(f"{a.dtype.str}{a.shape}".encode())
    h.update(a.tobytes())


class ResultCache:
    """The cache of one program's task results for one set of run options."""

    def __init__(self, program, options, versions: dict[str, str]):
        from .lang.format import _strip

        self.program = program
        self.options = options
        self.versions = dict(versions)  # patchlang and every numeric and solver package (api.versions())
        self.dir = cache_dir(program.path)
        self.base = os.path.dirname(os.path.abspath(program.path))
        self._statements = {}
        decls = []
        try:
            from .lang.parser import parse_text

            statements = parse_text(program.source, program.path).statements
        except Exception:  # the program was checked: its source parses
            statements = ()
        for st in statements:
            if type(st).__name__ in ("PatchBlock", "Verify", "RepairBlock"):
                self._statements[st.span.line] = repr(_strip(st))
            elif not type(st).__name__.startswith("Assert"):
                decls.append(repr(_strip(st)))
        self._decls = decls

    # ------------------------------------------------------------------ the key
    def key(self, task) -> str | None:
        """The hex key of ``task``'s result, or None when the task's kind is never cached."""
        from . import __version__

        if task.kind != "patch" or task.span.line not in self._statements:
            return None
        opts = self.options
        resolved = hashlib.sha256()
        for g in task.goals:
            h = g.points
            resolved.update(f"{g.kind}|{g.text}|{g.labels}|{g.tolerance}".encode())
            _array_digest(resolved, h.x)
            _array_digest(resolved, h.y)
        inputs = sorted((os.path.relpath(os.path.abspath(p), self.base), sha)
                        for p, sha in self.program.input_files.items())
        doc = {"format": FORMAT, "patchlang": __version__, "versions": self.versions,
               "task": self._statements[task.span.line], "declarations": self._decls,
               "resolved": resolved.hexdigest(), "margin": task.margin, "class": task.problem_class,
               "inputs": inputs, "backend": opts.backend or task.backend.name,
               "backend_options": repr(sorted(task.backend.options.items())),
               "options": {"time_limit": opts.time_limit, "seed": opts.seed, "write_files": opts.write_files,
                           "disable_steps": sorted(opts.disable_steps)}}
        return hashlib.sha256(json.dumps(doc, sort_keys=True, default=repr).encode()).hexdigest()

    def _entry(self, key: str) -> Path:
        return self.dir / f"{key}.pkl"

    @contextlib.contextmanager
    def _locked(self, exclusive: bool) -> Iterator[None]:
        self.dir.mkdir(parents=True, exist_ok=True)
        fd = os.open(self.dir / "lock", os.O_RDWR | os.O_CREAT, 0o644)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX if exclusive else fcntl.LOCK_SH)
            yield
        finally:
            fcntl.flock(fd, fcntl.LOCK_UN)
            os.close(fd)

    def _read(self, key: str) -> dict | None:
        path = self._entry(key)
        if not path.is_file():
            return None
        try:
            with self._locked(exclusive=False):
                data = path.read_bytes()
            entry = _SafeUnpickler(io.BytesIO(data)).load()
        except Exception:  # truncated, another format, refused class: a miss
            return None
        if not isinstance(entry, dict) or entry.get("format") != FORMAT:
            return None
        return entry

    # ------------------------------------------------------------------ lookups
    def state(self, task) -> str:
        """For `patchlang plan`: ``cached`` when a result applies (its saved files unchanged; the onnxruntime
        re-check runs with `run`), ``not cached``, or ``never cached`` for the kinds that always run."""
        key = self.key(task)
        if key is None:
            return "never cached"
        entry = self._read(key)
        if entry is None or self._stale_file(entry) is not None:
            return "not cached"
        return "cached"

    def _stale_file(self, entry: dict) -> str | None:
        for rel, sha in entry["files"].items():
            path = os.path.join(self.base, rel)
            now = _sha256(path)
            if now is None:
                return f"{rel} is missing"
            if now != sha:
                return f"{rel} changed since it was saved"
        return None

    def lookup(self, task) -> tuple[Any | None, str]:
        """The cached result of ``task``, re-checked, or (None, why it is a miss)."""
        key = self.key(task)
        if key is None:
            return None, "never cached"
        entry = self._read(key)
        if entry is None:
            return None, "not cached"
        stale = self._stale_file(entry)
        if stale is not None:
            return None, stale
        result = entry["result"]
        if result.status == "patched" and not self._recheck(task, result):
            return None, "the saved file fails the independent check"
        result.details = {**result.details, "cached": key}
        result.notes = [f"cached result (key {key[:12]}): not solved again; "
                        + ("saved file re-checked with onnxruntime" if result.files else "patch re-checked in float64")]\
            + [n for n in result.notes if not n.startswith("cached result")]
        return result, "cached"

    def _recheck(self, task, result) -> bool:
        """The independent check of ``tasks.checking`` on the cached network (float64) and its saved file
        (onnxruntime): every goal must hold as it did when the result was stored."""
        from .model.runtime import OrtModel
        from .tasks.checking import check_group
        from .tasks.goals import goal_group

        net = result.patched
        if net is None:
            return False
        margin = result.checks[0].requested_margin if result.checks else task.margin
        ort = OrtModel(os.path.join(self.base, result.files[0])) if result.files and \
            result.files[0].endswith(".onnx") else None
        checks = []
        for spec in task.goals:
            if not len(spec.points):
                continue
            group = goal_group(task.model.net, spec, margin)
            x = spec.points.x
            y32 = ort.run(x.reshape((len(x), *net.input_shape))) if ort is not None else None
            chk = check_group(group, net.forward(x), y32, margin, spec.span.line)
            if not chk.ok:
                return False
            checks.append(chk)
        result.checks = checks
        return True

    # ------------------------------------------------------------------ storing
    def store(self, task, result) -> bool:
        """Store ``result`` when it may be cached; True when stored."""
        from .files import write_atomic

        key = self.key(task)
        if key is None or result.status not in CACHEABLE:
            return False
        files = {}
        for f in result.files:
            sha = _sha256(f if os.path.isabs(f) else os.path.join(self.base, f))
            if sha is None:
                return False
            files[os.path.relpath(os.path.abspath(os.path.join(self.base, f)), self.base)] = sha
        entry = {"format": FORMAT, "key": key, "result": result, "files": files}
        data = pickle.dumps(entry, protocol=pickle.HIGHEST_PROTOCOL)
        with self._locked(exclusive=True):
            write_atomic(str(self._entry(key)), data)
        return True
