"""The one guarded way to read an input file, and the one guard every writer goes through.

Inputs (models, point and label files, VNN-LIB properties, the spec itself) are opened only by
:func:`read_input`, which refuses before reading anything what would crash or hang a reader: a missing path, a
directory, a FIFO, a device (``/dev/zero``), a socket, an unreadable file, a NUL byte or an over-long name, a
symlink loop, a file larger than :data:`MAX_INPUT_BYTES`.  The file is opened with ``O_NONBLOCK`` and checked with
``fstat`` on the open descriptor, so a FIFO swapped in after the check cannot block the read either.

Outputs (patched models, counterexamples, JSON/JUnit reports, exported queries, plots) are claimed from the
run's :class:`OutputGuard` before they are written: a path that is one of the run's inputs (compared by resolved
path *and* by device/inode, so a hard link or a symlink is caught too), a directory, or a path another output of
the same run already claimed is refused with a user-facing error (exit 2).  :func:`write_output` claims and then
writes atomically (a temporary file in the target folder, then ``os.replace``).
"""

from __future__ import annotations

import contextlib
import contextvars
import errno
import hashlib
import os
import stat
from pathlib import Path
from typing import Iterator

from .errors import PatchlangError

__all__ = ["InputRefused", "OutputRefused", "MAX_INPUT_BYTES", "check_input", "read_input", "sha256_input",
           "OutputGuard", "guard_for", "program_guard", "current_guard", "using_guard", "claim_output", "write_output"]

MAX_INPUT_BYTES = int(os.environ.get("PATCHLANG_MAX_INPUT_BYTES", str(8 << 30)))  # 8 GiB: larger is a mistake


class InputRefused(PatchlangError):
    """An input path that cannot be read as a regular file (exit 2)."""


class OutputRefused(PatchlangError):
    """An output path that would destroy an input, or that two outputs of one run share (exit 2)."""


# ============================================================================ inputs

def _kind(mode: int) -> str | None:
    """What a non-regular file is, in words (None for a regular file)."""
    if stat.S_ISREG(mode):
        return None
    if stat.S_ISDIR(mode):
        return "a directory"
    if stat.S_ISFIFO(mode):
        return "a named pipe (FIFO)"
    if stat.S_ISCHR(mode) or stat.S_ISBLK(mode):
        return "a device"
    if stat.S_ISSOCK(mode):
        return "a socket"
    return "not a regular file"


def _stat_error(path: str, what: str, exc: OSError) -> InputRefused:
    if exc.errno == errno.ENOENT:
        return InputRefused(f"{what} not found: {path}", help="check the path")
    if exc.errno == errno.ELOOP:
        return InputRefused(f"{what} {path} is a symbolic link loop", help="point the link at a real file")
    if exc.errno == errno.ENAMETOOLONG:
        return InputRefused(f"{what} path is too long ({len(path)} characters)", help="give a shorter path")
    if exc.errno in (errno.EACCES, errno.EPERM):
        return InputRefused(f"{what} {path} cannot be read: permission denied",
                            help="make the file readable (chmod u+r) or copy it somewhere readable")
    if exc.errno == errno.ENOTDIR:
        return InputRefused(f"{what} not found: {path} (a part of the path is a file, not a folder)",
                            help="check the path")
    return InputRefused(f"{what} {path} cannot be read: {exc.strerror or exc}", help="check the path")


def check_input(path: str | os.PathLike, what: str = "input file") -> Path:
    """``path`` as an absolute :class:`Path` if it names a readable regular file of sane size, else
    :class:`InputRefused` saying why.  Never opens the file."""
    text = os.fspath(path)
    if "\x00" in text:
        raise InputRefused(f"{what} path contains a NUL byte: {text!r}", help="remove the \\0 from the path")
    if not text:
        raise InputRefused(f"{what} path is empty", help="give the path of a file")
    try:
        st = os.stat(text)
    except (OSError, ValueError) as exc:
        if isinstance(exc, ValueError):
            raise InputRefused(f"{what} path is not valid: {text!r}", help="give the path of a file") from None
        raise _stat_error(text, what, exc) from None
    kind = _kind(st.st_mode)
    if kind is not None:
        raise InputRefused(f"{what} {text} is {kind}, not a regular file",
                           help="give the path of a regular file (pipes and devices are not read)")
    if st.st_size > MAX_INPUT_BYTES:
        raise InputRefused(f"{what} {text} is {st.st_size} bytes, more than the {MAX_INPUT_BYTES} patchlang reads",
                           help="split the data, or raise the limit with PATCHLANG_MAX_INPUT_BYTES")
    if not os.access(text, os.R_OK):
        raise InputRefused(f"{what} {text} cannot be read: permission denied",
                           help="make the file readable (chmod u+r) or copy it somewhere readable")
    return Path(os.path.abspath(text))


def read_input(path: str | os.PathLike, what: str = "input file") -> bytes:
    """The whole content of a checked regular file (see :func:`check_input`); never blocks on a FIFO."""
    file = check_input(path, what)
    try:
        fd = os.open(file, os.O_RDONLY | getattr(os, "O_NONBLOCK", 0) | getattr(os, "O_NOCTTY", 0))
    except OSError as exc:
        raise _stat_error(str(file), what, exc) from None
    try:
        st = os.fstat(fd)  # the file actually opened: a path swapped for a FIFO after check_input is caught here
        kind = _kind(st.st_mode)
        if kind is not None:
            raise InputRefused(f"{what} {file} is {kind}, not a regular file", help="give the path of a regular file")
        if st.st_size > MAX_INPUT_BYTES:
            raise InputRefused(f"{what} {file} is larger than {MAX_INPUT_BYTES} bytes",
                               help="raise the limit with PATCHLANG_MAX_INPUT_BYTES")
        chunks = []
        while True:
            chunk = os.read(fd, 1 << 22)
            if not chunk:
                break
            chunks.append(chunk)
        return b"".join(chunks)
    except OSError as exc:
        raise InputRefused(f"{what} {file} cannot be read: {exc.strerror or exc}", help="check the file") from None
    finally:
        os.close(fd)


def sha256_input(path: str | os.PathLike, what: str = "input file") -> str:
    return hashlib.sha256(read_input(path, what)).hexdigest()


# ============================================================================ outputs

def _identity(path: str) -> tuple[int, int] | None:
    try:
        st = os.stat(path)
    except (OSError, ValueError):
        return None
    return (st.st_dev, st.st_ino)


def _resolved(path: str | os.PathLike) -> str:
    return os.path.realpath(os.path.abspath(os.fspath(path)))


class OutputGuard:
    """What one run reads (protected) and what it has written so far (claimed)."""

    def __init__(self, protected: dict[str, str] | None = None):
        self.protected: dict[str, str] = {}  # resolved path -> what it is
        self.inodes: dict[tuple[int, int], str] = {}
        self.claimed: dict[str, str] = {}  # resolved path -> which output claimed it
        for p, what in (protected or {}).items():
            self.protect(p, what)

    def protect(self, path: str | os.PathLike, what: str = "an input of this run") -> None:
        real = _resolved(path)
        self.protected.setdefault(real, what)
        ident = _identity(real)
        if ident is not None:
            self.inodes.setdefault(ident, what)

    def refusal(self, path: str | os.PathLike, what: str) -> str | None:
        """Why ``path`` may not be written as ``what`` (a sentence), or None."""
        text = os.fspath(path)
        if "\x00" in text or not text:
            return f"refusing to write {what}: {text!r} is not a valid file name"
        real = _resolved(text)
        if real in self.protected:
            return f"refusing to overwrite {self.protected[real]} with {what}"
        ident = _identity(real)
        if ident is not None and ident in self.inodes:
            return f"refusing to overwrite {self.inodes[ident]} (the same file as {text}) with {what}"
        if os.path.isdir(real):
            return f"refusing to write {what} to {text}: it is a directory"
        if real in self.claimed and self.claimed[real] != what:
            return f"refusing to write {what} to {text}: {self.claimed[real]} is written there too"
        if os.path.exists(real) and not os.path.isfile(real):
            return f"refusing to write {what} to {text}: it exists and is not a regular file"
        return None

    def claim(self, path: str | os.PathLike, what: str) -> str:
        """Reserve ``path`` for ``what`` (the same ``what`` may claim it again); the resolved path."""
        why = self.refusal(path, what)
        if why is not None:
            raise OutputRefused(why, help="write outputs to new file names: never onto a file the spec reads, "
                                          "and one file per output")
        real = _resolved(path)
        self.claimed[real] = what
        return real

    def write(self, path: str | os.PathLike, data: bytes, what: str) -> None:
        self.claim(path, what)
        atomic_write(os.fspath(path), data)


def atomic_write(path: str, data: bytes) -> None:
    """Temp file in the target folder + ``os.replace`` (the project's one atomic writer, :mod:`patchlang.files`)."""
    from .files import write_atomic

    write_atomic(path, data)


def guard_for(spec_path: str | os.PathLike | None, inputs: "dict[str, str] | list[str]",
              models: "list[str] | tuple[str, ...]" = ()) -> OutputGuard:
    """The guard of a run of a spec: the spec and every file it reads (``models`` among them) are protected."""
    guard = OutputGuard()
    if spec_path is not None and os.path.exists(os.fspath(spec_path)):
        guard.protect(spec_path, f"the spec ({os.fspath(spec_path)})")
    for p in models:
        guard.protect(p, f"an input model ({p})")
    for p in inputs:
        guard.protect(p, f"an input file ({p})")
    return guard


def program_guard(program) -> OutputGuard:
    """:func:`guard_for` a checked program (``lang.program.Program``): its spec, models and input files."""
    return guard_for(program.path, program.input_files, [m.path for m in program.models.values()])


_GUARD: contextvars.ContextVar[OutputGuard | None] = contextvars.ContextVar("patchlang_output_guard", default=None)


def current_guard() -> OutputGuard:
    """The guard of the run in progress (a fresh one, protecting nothing, outside any run)."""
    g = _GUARD.get()
    return g if g is not None else OutputGuard()


@contextlib.contextmanager
def using_guard(guard: OutputGuard) -> Iterator[OutputGuard]:
    token = _GUARD.set(guard)
    try:
        yield guard
    finally:
        _GUARD.reset(token)


def claim_output(path: str | os.PathLike, what: str) -> str:
    return current_guard().claim(path, what)


def write_output(path: str | os.PathLike, data: bytes, what: str) -> None:
    current_guard().write(path, data, what)
