"""`patchlang.lock`: the models' hashes pinned beside the spec (`patchlang lock SPEC`), checked by `run --frozen`.

One lock file serves every spec of its folder: ``{"format": 1, "specs": {"fix_digits.patch": {"models": {"net":
{"path": "../models/digits_mlp.onnx", "sha256": "..."}}}}}`` (paths relative to the lock file).  `lock` rewrites
only its own spec's entry, atomically, through the run's output guard (never onto an input).
"""

from __future__ import annotations

import json
import os

from .errors import PatchlangError

LOCK_NAME = "patchlang.lock"
FORMAT = 1


def lock_path(spec_path: str) -> str:
    return os.path.join(os.path.dirname(os.path.abspath(spec_path)), LOCK_NAME)


def _models(program) -> dict[str, dict[str, str]]:
    base = os.path.dirname(os.path.abspath(program.path))
    hashes = {os.path.abspath(p): sha for p, sha in program.input_files.items()}
    out = {}
    for name, m in program.models.items():
        path = os.path.abspath(m.path)
        out[name] = {"path": os.path.relpath(path, base), "sha256": hashes.get(path) or _sha(path)}
    return out


def _sha(path: str) -> str:
    from .guard import sha256_input

    return sha256_input(path, "model file")


def _read(path: str) -> dict:
    from .guard import read_input

    try:
        doc = json.loads(read_input(path, "lock file").decode("utf-8"))
    except (ValueError, UnicodeDecodeError) as exc:
        raise PatchlangError(f"{path} is not a patchlang lock file: {exc}",
                             help="delete it and run `patchlang lock SPEC` again") from None
    if not isinstance(doc, dict) or doc.get("format") != FORMAT or not isinstance(doc.get("specs"), dict):
        raise PatchlangError(f"{path} is not a patchlang lock file (format {FORMAT})",
                             help="delete it and run `patchlang lock SPEC` again")
    return doc


def write_lock(program) -> tuple[str, dict[str, dict[str, str]]]:
    """Pin ``program``'s models in the lock file beside it; returns the lock file's path and the models pinned."""
    from .guard import program_guard, using_guard, write_output

    path = lock_path(program.path)
    doc = _read(path) if os.path.exists(path) else {"format": FORMAT, "specs": {}}
    models = _models(program)
    doc["specs"][os.path.basename(program.path)] = {"models": models}
    with using_guard(program_guard(program)):
        write_output(path, (json.dumps(doc, indent=2, sort_keys=True) + "\n").encode(), "the lock file")
    return path, models


def check_frozen(program) -> None:
    """Raise (exit 2) unless every model of ``program`` has the hash its lock file pins."""
    path = lock_path(program.path)
    spec = os.path.basename(program.path)
    if not os.path.exists(path):
        raise PatchlangError(f"--frozen: there is no lock file {path}",
                             help=f"run `patchlang lock {program.path}` and commit {LOCK_NAME}")
    pinned = _read(path)["specs"].get(spec)
    if pinned is None:
        raise PatchlangError(f"--frozen: {path} pins nothing for {spec}",
                             help=f"run `patchlang lock {program.path}` and commit {LOCK_NAME}")
    now = _models(program)
    problems = []
    for name, entry in now.items():
        old = pinned.get("models", {}).get(name)
        if old is None:
            problems.append(f"model `{name}` ({entry['path']}) is not in the lock file")
        elif old.get("sha256") != entry["sha256"] or old.get("path") != entry["path"]:
            problems.append(f"model `{name}` drifted: {entry['path']} has sha256 {entry['sha256']}, the lock file "
                            f"pins {old.get('path')} with sha256 {old.get('sha256')}")
    for name in set(pinned.get("models", {})) - set(now):
        problems.append(f"model `{name}` is pinned by the lock file but the spec no longer declares it")
    if problems:
        raise PatchlangError("--frozen: " + "; ".join(problems),
                             help=f"if the change is intended, run `patchlang lock {program.path}` and commit "
                                  f"{LOCK_NAME}")
