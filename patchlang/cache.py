"""The result cache: a patch task whose inputs did not change is not solved again, but its saved file is re-checked.

Where: ``.patchlang/cache/`` beside the spec, one file per task result, named by its key.  The key is the SHA-256
of everything the result depends on (:meth:`ResultCache.key`): the task's statement and every declaration of the
spec as syntax trees without positions (so layout and comments do not matter, see ``lang.format``), the resolved
values of the task (its goals' points and labels, the margin), the content of every input file of the spec
(SHA-256, as in the JSON report), the backend's name and the versions of patchlang and of every numeric and solver
package, and the run's options (backend override, time limit, seed, planning steps switched off, whether files are
saved).

What is cached: the decided results of patch, verify and repair tasks ("patched", "no patch", "holds",
"violated", "repaired", "not repaired").  An inconclusive result (time limit, unknown), a result that failed the
independent check, an internal error, and a result with a saved file it cannot re-check are never stored.

A hit is never reported on trust: every file the task saved must still have the content it had when it was saved
(SHA-256), and its independent check runs again from the result's :class:`tasks.results.SavedCheck` records
(:func:`recheck_saved`): a patched or repaired network is re-evaluated with onnxruntime (float32) on the saved file
and in float64 against the task's goals, exactly as after solving (``tasks.checking``); a saved counterexample must
still lie in its box and violate the property on the model file.  A missing, edited or failing file makes the
lookup a miss and the task runs again.  A whole run can also be answered at once (:mod:`patchlang.run.replay`),
with the same re-checks.

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

FORMAT = 2  # 2: results carry their re-check records (tasks.results.SavedCheck)
FOLDER = os.path.join(".patchlang", "cache")
CACHEABLE = ("patched", "no patch", "holds", "violated", "repaired", "not repaired")
STATEMENTS = ("PatchBlock", "Verify", "RepairBlock")  # the statements whose results are cached (not fine-tuning:
#                                                     its saved file has no re-check)


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


@contextlib.contextmanager
def _locked(folder: Path, exclusive: bool) -> Iterator[None]:
    folder.mkdir(parents=True, exist_ok=True)
    fd = os.open(folder / "lock", os.O_RDWR | os.O_CREAT, 0o644)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX if exclusive else fcntl.LOCK_SH)
        yield
    finally:
        fcntl.flock(fd, fcntl.LOCK_UN)
        os.close(fd)


def read_entry(folder: Path, path: Path) -> dict | None:
    """The entry at ``path`` (read under a shared lock on ``folder``), or None when it is missing or unreadable."""
    if not path.is_file():
        return None
    try:
        with _locked(folder, exclusive=False):
            data = path.read_bytes()
        entry = _SafeUnpickler(io.BytesIO(data)).load()
    except Exception:  # truncated, another format, refused class: a miss
        return None
    if not isinstance(entry, dict) or entry.get("format") != FORMAT:
        return None
    return entry


def write_entry(folder: Path, path: Path, entry: dict) -> None:
    """Write ``entry`` atomically under an exclusive lock on ``folder``."""
    from .files import write_atomic

    data = pickle.dumps({**entry, "format": FORMAT}, protocol=pickle.HIGHEST_PROTOCOL)
    with _locked(folder, exclusive=True):
        path.parent.mkdir(parents=True, exist_ok=True)
        write_atomic(str(path), data)


def package_versions() -> dict[str, str]:
    """patchlang's version and every numeric and solver package's (part of every cache key and report)."""
    import re
    from importlib import metadata

    from . import __version__

    out = {"patchlang": __version__}  # also when run from a source checkout (no installed metadata)
    for pkg in _PACKAGES:
        try:
            dist = metadata.distribution(pkg)
        except metadata.PackageNotFoundError:
            continue
        # the Version header alone: parsing the whole METADATA (long descriptions) costs a cache hit ~20 ms
        found = re.search(r"^Version:\s*(\S+)", dist.read_text("METADATA") or "", re.MULTILINE)
        out[pkg] = found.group(1) if found else dist.version
    return out


_PACKAGES = ("numpy", "scipy", "onnx", "onnxruntime", "highspy", "z3-solver", "gurobipy", "maraboupy", "lark")


def packages_fingerprint() -> list[str]:
    """The installed distributions of the packages in :func:`package_versions`, as their ``*.dist-info`` folder
    names on ``sys.path`` (an upgrade, a downgrade, an install or an uninstall changes them).  Why not the versions
    themselves: importing ``importlib.metadata`` and reading the headers costs a cache hit a sixth of its time."""
    import sys

    wanted = {p.replace("-", "_").lower() for p in _PACKAGES}
    found = []
    for folder in sys.path:
        try:
            names = os.listdir(folder or ".")
        except OSError:
            continue
        found += [os.path.join(folder, n) for n in names if n.endswith((".dist-info", ".egg-info"))
                  and n.split("-")[0].replace(".", "_").lower() in wanted]
    return sorted(found)


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
            if type(st).__name__ in STATEMENTS:
                self._statements[st.span.line] = repr(_strip(st))
            elif not type(st).__name__.startswith("Assert"):
                decls.append(repr(_strip(st)))
        self._decls = decls

    # ------------------------------------------------------------------ the key
    def key(self, task) -> str | None:
        """The hex key of ``task``'s result, or None when the task's kind is never cached."""
        from . import __version__

        if task.span.line not in self._statements:
            return None
        opts = self.options
        resolved = hashlib.sha256()
        for g in getattr(task, "goals", None) or getattr(getattr(task, "patch", None), "goals", None) or ():
            h = g.points
            resolved.update(f"{g.kind}|{g.text}|{g.labels}|{g.tolerance}".encode())
            _array_digest(resolved, h.x)
            _array_digest(resolved, h.y)
        inputs = sorted((os.path.relpath(os.path.abspath(p), self.base), sha)
                        for p, sha in self.program.input_files.items())
        doc = {"format": FORMAT, "patchlang": __version__, "versions": self.versions,
               "task": self._statements[task.span.line], "declarations": self._decls,
               "resolved": resolved.hexdigest(), "margin": getattr(task, "margin", None),
               "class": getattr(task, "problem_class", None), "kind": task.kind,
               "inputs": inputs, "backend": opts.backend or _backend_name(task),
               "backend_options": repr(sorted(_backend_options(task).items())),
               "options": {"time_limit": opts.time_limit, "seed": opts.seed, "write_files": opts.write_files,
                           "disable_steps": sorted(opts.disable_steps)}}
        return hashlib.sha256(json.dumps(doc, sort_keys=True, default=repr).encode()).hexdigest()

    def _entry(self, key: str) -> Path:
        return self.dir / f"{key}.pkl"

    def _read(self, key: str) -> dict | None:
        return read_entry(self.dir, self._entry(key))

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
        if not self._recheck(task, result):
            return None, "the saved file fails the independent check"
        mark_cached(result, key)
        return result, "cached"

    def _recheck(self, task, result) -> bool:
        """The independent check of every saved file (and of a patched network in float64), as after solving."""
        return recheck_saved(result, self.base) is None

    # ------------------------------------------------------------------ storing
    def store(self, task, result) -> bool:
        """Store ``result`` when it may be cached; True when stored."""
        key = self.key(task)
        if key is None or not cacheable(result):
            return False
        files = {}
        for f in result.files:
            sha = _sha256(f if os.path.isabs(f) else os.path.join(self.base, f))
            if sha is None:
                return False
            files[os.path.relpath(os.path.abspath(os.path.join(self.base, f)), self.base)] = sha
        entry = {"format": FORMAT, "key": key, "result": result, "files": files}
        write_entry(self.dir, self._entry(key), entry)
        return True


def _backend_name(task) -> str:
    backend = getattr(task, "backend", None) or getattr(getattr(task, "patch", None), "backend", None)
    return getattr(backend, "name", "") or ""


def _backend_options(task) -> dict:
    backend = getattr(task, "backend", None) or getattr(getattr(task, "patch", None), "backend", None)
    return dict(getattr(backend, "options", None) or {})


def cacheable(result) -> bool:
    """A decided result whose every saved file has a re-check (see the module docstring)."""
    checks = getattr(result, "recheck", ())
    checked = {c.path for c in checks}
    networks = any(c.kind == "network" for c in checks)
    return result.status in CACHEABLE and all(f in checked for f in result.files) and \
        (networks or result.status != "patched")


def mark_cached(result, key: str) -> None:
    """Say in the result that it was not solved again, and what was re-checked."""
    files = ", ".join(os.path.basename(f) for f in result.files)
    what = {"patched": f"saved file {files} re-checked with onnxruntime" if files else "patch re-checked in float64",
            "repaired": f"saved file {files} re-checked with onnxruntime" if files else "patch re-checked in float64",
            "violated": f"saved counterexample {files} re-checked with onnxruntime" if files else
            "every input unchanged"}.get(result.status, "every input unchanged (no saved file to re-check)")
    result.details = {**result.details, "cached": key}
    result.notes = [f"cached result (key {key[:12]}): not solved again; {what}"] + \
        [n for n in result.notes if not n.startswith("cached result")]


def recheck_saved(result, base: str) -> str | None:
    """Re-run the independent check of ``result``'s saved files from its ``recheck`` records; why it fails, or
    None.  ``base``: the folder relative paths are read from (the spec's)."""
    from .model.runtime import OrtModel
    from .tasks.checking import check_group

    if not cacheable(result):
        return "a saved file has no re-check"
    for rc in result.recheck:
        path = None if rc.path is None else os.path.join(base, rc.path)
        try:
            if rc.kind == "network":
                net = result.patched
                if net is None:
                    return "no patched network to re-check"
                ort = OrtModel(path) if path is not None and path.endswith(".onnx") else None
                for group, x, margin, line, strict in rc.groups:
                    y32 = ort.run(x) if ort is not None else None
                    if not check_group(group, net.forward(x), y32, margin, line, strict).ok:
                        return f"{rc.path or 'the patch'} fails `{group.label}` (line {line})"
            elif rc.kind == "counterexample":
                why = _recheck_counterexample(rc, path)
                if why is not None:
                    return why
            else:
                return f"unknown re-check {rc.kind!r}"
        except Exception as exc:  # an unreadable or invalid file: re-solve rather than trust it
            return f"{rc.path}: {exc}"
    return None


def _recheck_counterexample(rc, path: str | None) -> str | None:
    from .guard import read_input
    from .model.runtime import OrtModel
    from .tasks.checking import slacks

    if path is None or rc.model is None or not rc.model.endswith(".onnx") or rc.box is None:
        return "the counterexample cannot be re-run with onnxruntime"
    x = np.load(io.BytesIO(read_input(path, "saved counterexample")), allow_pickle=False)
    x = np.asarray(x, np.float64).reshape(1, -1)
    lo, hi = rc.box
    if x.shape[1] != lo.size or not (np.all(x >= lo) and np.all(x <= hi)):
        return f"{rc.path} is not inside the property's box"
    y32 = OrtModel(rc.model).run(x).astype(np.float64)
    for group, *_ in rc.groups:
        if not np.all(slacks(group, y32) < 0):
            return f"{rc.path} no longer violates the property on the model"
    return None
