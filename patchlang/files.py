"""Writing files atomically: a reader (or a crash) never sees a half-written model, report or query.

Why a module of its own: the ONNX and NNet exporters, the reports and `export` all write files, and none of them
should import another just for this (the NNet exporter importing the ONNX one made an import cycle).
"""

from __future__ import annotations

import os
import tempfile
from typing import BinaryIO, Callable

from .errors import ModelError


def _same_file(a: str, b: str) -> bool:
    if os.path.abspath(a) == os.path.abspath(b):
        return True
    return os.path.exists(a) and os.path.exists(b) and os.path.samefile(a, b)


def _default_mode() -> int:
    """Permissions a plain ``open(path, 'w')`` would give (mkstemp's 0600 would surprise users)."""
    umask = os.umask(0)
    os.umask(umask)
    return 0o666 & ~umask


def write_atomic(path: str, data: bytes | str | Callable[[BinaryIO], None], protected: str | None = None) -> None:
    """Write ``data`` (bytes, text as UTF-8, or a writer called with the open binary file) to ``path`` via a
    temporary file in the same directory and ``os.replace``.

    A reader (or a crash) never sees a half-written model.  ``protected`` is the network's own source file:
    overwriting the model being patched would destroy the reference every check compares against.
    """
    if isinstance(data, str):
        data = data.encode("utf-8")
    if protected and _same_file(path, protected):
        raise ModelError(f"refusing to overwrite the input model {protected}",
                         help="save the patched network under a different file name")
    target = os.path.abspath(path)
    directory = os.path.dirname(target)
    try:
        os.makedirs(directory, exist_ok=True)
        fd, tmp = tempfile.mkstemp(dir=directory, prefix=f".{os.path.basename(target)}.", suffix=".tmp")
    except OSError as exc:
        raise ModelError(f"cannot write {path}: {exc}", help="check that the directory is writable") from exc
    try:
        with os.fdopen(fd, "wb") as fh:
            data(fh) if callable(data) else fh.write(data)
            fh.flush()
            os.fsync(fh.fileno())
        os.chmod(tmp, _default_mode())
        os.replace(tmp, target)
    except OSError as exc:
        os.unlink(tmp)
        raise ModelError(f"cannot write {path}: {exc}", help="check free space and permissions") from exc
    except BaseException:
        os.unlink(tmp)
        raise
