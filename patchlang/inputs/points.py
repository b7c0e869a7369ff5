"""Point sets: the concrete inputs a spec talks about (``keep clean``, ``change wm[3] ...``).

A :class:`PointSet` is a batch of samples with optional integer labels.  Every set remembers, for each of its
points, the position that point had in the *root* file it was loaded from (``indices``): slicing and filtering
only ever narrow a set, so a report can still say ``wm[37]`` (the user's name and the user's numbering) after
``wm[30:40] where label == 7``.

This module is pure data: it reads files (``.npy``, ``.npz``, ``.csv``, ``.txt``, MNIST-style IDX, each
optionally gzip-compressed), builds inline sets, slices and filters.  It never evaluates a network: filters
that need predictions (``correct(net)``) are computed by the caller and applied with :func:`filter_mask`.
Every user mistake raises :class:`~patchlang.errors.PatchlangError` that says what is wrong and what to do.
"""

from __future__ import annotations

import gzip
import io
import zipfile
import zlib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterable, Sequence

import numpy as np

from ..errors import InternalError, PatchlangError

__all__ = [
    "PointSet",
    "load_points",
    "inline_points",
    "select",
    "filter_label",
    "filter_mask",
    "LABEL_OPS",
]


# ============================================================================ the data type


@dataclass(eq=False)
class PointSet:
    """A batch of samples ``x`` (shape ``(N, *sample_shape)``, float64) with optional int64 labels ``y``.

    ``indices[i]`` is the position of point ``i`` in the root source, so messages can name it as the user
    would (``describe(i)`` → ``"wm[37]"``).  ``origins`` is only set for unions of differently named sets: it
    holds the root name of every point, because one name no longer describes them all.
    """

    x: np.ndarray
    y: np.ndarray | None
    name: str
    indices: np.ndarray
    source: str
    origins: np.ndarray | None = field(default=None)

    def __post_init__(self) -> None:
        # Normalise dtypes once here so every consumer can rely on float64 samples and int64 labels/indices.
        self.x = np.asarray(self.x, dtype=np.float64)
        self.indices = np.asarray(self.indices, dtype=np.int64)
        if self.y is not None:
            self.y = np.asarray(self.y, dtype=np.int64)
        if self.x.ndim < 1:
            raise InternalError(f"PointSet {self.name!r}: x must have a leading point axis, got a scalar")
        n = self.x.shape[0]
        for what, arr in (("y", self.y), ("indices", self.indices), ("origins", self.origins)):
            if arr is not None and arr.shape != (n,):
                raise InternalError(f"PointSet {self.name!r}: {what} has shape {arr.shape}, expected ({n},)")

    # ------------------------------------------------------------------ basic queries

    def __len__(self) -> int:
        return int(self.x.shape[0])

    def __repr__(self) -> str:  # arrays can be huge: summarise instead of dumping them
        labels = "labelled" if self.y is not None else "unlabelled"
        return (f"PointSet({self.name!r}, n={len(self)}, sample_shape={self.sample_shape}, {labels}, "
                f"source={self.source!r})")

    @property
    def sample_shape(self) -> tuple[int, ...]:
        """The shape of one sample, e.g. ``(28, 28)`` for MNIST images as stored."""
        return tuple(self.x.shape[1:])

    @property
    def has_labels(self) -> bool:
        return self.y is not None

    def flat(self) -> np.ndarray:
        """The samples as an ``(N, D)`` matrix, the form the compiler and solvers work with."""
        return self.x.reshape(len(self), _size(self.sample_shape))

    def describe(self, i: int) -> str:
        """The user's name for point ``i`` of this set, e.g. ``"wm[37]"`` (root numbering, not ``i``)."""
        name = self.origins[i] if self.origins is not None else self.name
        return f"{name}[{int(self.indices[i])}]"

    def origin_names(self) -> np.ndarray:
        """The root name of every point (an object array), whether or not this set is a union."""
        if self.origins is not None:
            return self.origins
        return np.full(len(self), self.name, dtype=object)

    # ------------------------------------------------------------------ derived sets

    def take(self, idx: np.ndarray | Sequence[int]) -> PointSet:
        """The points at positions ``idx`` of *this* set, keeping their labels and root indices."""
        pos = np.asarray(idx, dtype=np.int64).reshape(-1)
        return PointSet(
            x=self.x[pos],
            y=None if self.y is None else self.y[pos],
            name=self.name,
            indices=self.indices[pos],
            source=self.source,
            origins=None if self.origins is None else self.origins[pos],
        )

    def union(self, other: PointSet) -> PointSet:
        """Both sets, ``self`` first.

        Samples of different shapes are accepted when they have the same number of values (e.g. ``(28, 28)``
        and ``(784,)``): the result is then flattened, since a network input is a flat vector to the compiler.
        The result is labelled only if both parts are; its points keep their own names for reporting.
        """
        if self.sample_shape == other.sample_shape:
            xa, xb = self.x, other.x
        elif _size(self.sample_shape) == _size(other.sample_shape):
            xa, xb = self.flat(), other.flat()
        else:
            raise PatchlangError(
                f"cannot join point sets {self.name!r} (samples of shape {self.sample_shape}, "
                f"{_size(self.sample_shape)} values) and {other.name!r} (shape {other.sample_shape}, "
                f"{_size(other.sample_shape)} values)",
                help="all points given to one network must have the same number of input values",
            )
        y = None if self.y is None or other.y is None else np.concatenate([self.y, other.y])
        origins = np.concatenate([self.origin_names(), other.origin_names()])
        name = self.name if self.name == other.name else f"{self.name}+{other.name}"
        source = self.source if self.source == other.source else f"{self.source}; {other.source}"
        return PointSet(
            x=np.concatenate([xa, xb]),
            y=y,
            name=name,
            indices=np.concatenate([self.indices, other.indices]),
            source=source,
            origins=None if np.all(origins == name) else origins,
        )


def _size(shape: tuple[int, ...]) -> int:
    return int(np.prod(shape, dtype=np.int64))


# ============================================================================ building sets


def _new_set(x: np.ndarray, y: np.ndarray | None, name: str, source: str) -> PointSet:
    return PointSet(x=x, y=y, name=name, indices=np.arange(x.shape[0], dtype=np.int64), source=source)


def inline_points(rows: list[Any], labels: list[int] | None = None, *, name: str = "inline") -> PointSet:
    """A point set written in the spec itself: each element of ``rows`` is one point (a number or a list)."""
    where = f"inline point set {name!r}"
    if len(rows) == 0:
        raise PatchlangError(f"{where} has no points", help="write at least one point, e.g. [[0.0, 1.0]]")
    try:
        x = np.asarray(rows, dtype=np.float64)
    except (ValueError, TypeError):
        raise _inline_error(rows, where) from None
    x = _as_samples(x, where)
    y = None
    if labels is not None:
        y = _as_labels(np.asarray(labels), where)
        _check_label_count(len(x), len(y), where, "labels given")
    return _new_set(x, y, name, "inline")


def _inline_error(rows: list[Any], where: str) -> PatchlangError:
    """Why numpy could not make an array of ``rows``: ragged points, or values that are not numbers."""
    shapes = sorted({str(np.shape(np.asarray(r, dtype=object))) for r in rows})
    if len(shapes) > 1:
        return PatchlangError(f"{where}: the points have different shapes ({', '.join(shapes)})",
                              help="every point is one network input, so all points have the same shape")
    return PatchlangError(f"{where}: the points must contain only numbers",
                          help="write numbers such as 0.5 or -1e-3")


def load_points(
    path: str | Path,
    *,
    x_key: str | None = None,
    y_key: str | None = None,
    labels_path: str | Path | None = None,
    scale: float | None = None,
    name: str | None = None,
) -> PointSet:
    """Load a point set from a file; the format comes from the extension (and the IDX magic number).

    - ``.npy``: one array, the samples; no labels (use ``labels_path``).
    - ``.npz``: arrays ``x`` and (if present) ``y``, or the arrays named by ``x_key``/``y_key``; a file with a
      single array and no ``x`` uses that array as the samples.
    - ``.csv`` / ``.txt``: a numeric table (comma / whitespace separated), a non-numeric first line is a
      header.  ``y_key`` picks the label column: ``"last"``, ``"first"``, a header column name, or ``"none"``;
      by default a first or last header column named label/labels/y/target/class is the label, else none.
    - IDX (``*-idx3-ubyte``, ``*.idx``, or any file with the IDX magic): samples (or labels, as ``labels_path``).
    - Any of these may be gzip-compressed (``.gz``); compression is recognised from the content.

    ``labels_path`` loads labels from another file (npy, npz, csv, txt, IDX) instead of labels found in
    ``path`` (it cannot be combined with ``y_key``); the counts must match.  ``scale`` multiplies the samples
    (e.g. ``1/255``).  ``name`` defaults to the file name without extensions.
    """
    file = _existing_file(path, "point file")
    if y_key is not None and labels_path is not None:
        raise PatchlangError(f"{file}: labels are given twice (y = {y_key!r} and labels = \"...\")",
                             help="keep only one of the options `y` and `labels`")
    data = _read_bytes(file)
    fmt = _format_of(file, data)
    x, y = _POINT_READERS[fmt](file, data, x_key, y_key)
    x = _as_samples(x, str(file))
    if y is not None:
        y = _as_labels(y, str(file))
        _check_label_count(len(x), len(y), str(file), "labels in the file")
    if labels_path is not None:
        y = load_labels(labels_path)
        _check_label_count(len(x), len(y), str(file), f"labels in {_absolute(labels_path)}")
    if scale is not None:
        x = x * _finite_scale(scale)
    source = str(file) if labels_path is None else f"{file} (labels: {_absolute(labels_path)})"
    return _new_set(x, y, name or _stem(file), source)


def load_labels(path: str | Path) -> np.ndarray:
    """Labels from a file of their own (npy, npz, csv, txt, IDX), one integer per point, as int64.

    Integral floats such as ``4.0`` (as in ``wm.labels.txt``) are accepted; ``4.5`` is an error.
    """
    file = _existing_file(path, "label file")
    data = _read_bytes(file, "label file")
    fmt = _format_of(file, data)
    if fmt == "npz":
        arr = _npz_single(file, data, preferred=("y", "labels"))
    elif fmt in ("csv", "txt"):
        values, _ = _read_table(file, data, _DELIMITERS[fmt])
        if 1 not in values.shape:
            raise PatchlangError(
                f"{file}: a label file must hold one label per line, found a table of shape {values.shape}",
                help='put the labels in a single column, or load the table as points with `y = "last"`',
            )
        arr = values.reshape(-1)
    else:
        arr = _POINT_READERS[fmt](file, data, None, None)[0]
    return _as_labels(arr, str(file))


# ============================================================================ files, formats, bytes


def _absolute(path: str | Path) -> Path:
    return Path(path).expanduser().absolute()


def _existing_file(path: str | Path, what: str) -> Path:
    """The absolute path of a readable regular file (never a directory, FIFO or device: see patchlang.guard)."""
    from ..guard import check_input

    return check_input(_absolute(path), what)


def _read_bytes(file: Path, what: str = "point file") -> bytes:
    """The file's content, gunzipped if it is gzip data (recognised from its magic bytes, not its name)."""
    from ..guard import read_input

    data = read_input(file, what)
    if not data:
        raise PatchlangError(f"{what} {file} is empty (0 bytes)", help="write the data again")
    if data[:2] != b"\x1f\x8b":
        if file.name.lower().endswith(".gz"):
            raise PatchlangError(f"{file} is named .gz but is not gzip-compressed data",
                                 help="the file is corrupt or misnamed: write it again, or rename it")
        return data
    try:
        return gzip.decompress(data)
    except (OSError, EOFError, zlib.error) as exc:
        raise PatchlangError(f"{file} looks gzip-compressed but cannot be decompressed: {exc}",
                             help="the file is probably truncated; download or write it again") from None


def _stem(file: Path) -> str:
    name = file.name
    if name.lower().endswith(".gz"):
        name = name[:-3]
    return Path(name).stem or name


_IDX_TYPES: dict[int, np.dtype] = {
    0x08: np.dtype(">u1"),
    0x09: np.dtype(">i1"),
    0x0B: np.dtype(">i2"),
    0x0C: np.dtype(">i4"),
    0x0D: np.dtype(">f4"),
    0x0E: np.dtype(">f8"),
}


def _idx_header(data: bytes) -> tuple[np.dtype, tuple[int, ...]] | None:
    """Dtype and shape from an IDX header (``0 0 type ndim`` then ``ndim`` big-endian uint32), or None.

    Only a header whose sizes exactly account for the file length counts, so that sniffing a file of
    unknown extension cannot mistake random bytes for IDX.
    """
    if len(data) < 4 or data[0] != 0 or data[1] != 0 or data[2] not in _IDX_TYPES or data[3] == 0:
        return None
    ndim = data[3]
    if len(data) < 4 + 4 * ndim:
        return None
    shape = tuple(int(d) for d in np.frombuffer(data, dtype=">u4", count=ndim, offset=4))
    dtype = _IDX_TYPES[data[2]]
    if 4 + 4 * ndim + _size(shape) * dtype.itemsize != len(data):
        return None
    return dtype, shape


_TEXT_FORMATS = (".npy", ".npz", ".csv", ".txt")


def _format_of(file: Path, data: bytes) -> str:
    base = file.name.lower()
    if base.endswith(".gz"):
        base = base[:-3]
    for ext in _TEXT_FORMATS:
        if base.endswith(ext):
            return ext[1:]
    if base.endswith(".idx") or "idx" in base or _idx_header(data) is not None:
        return "idx"
    raise PatchlangError(
        f"cannot tell the format of {file}",
        help="supported: .npy, .npz, .csv, .txt and IDX (e.g. train-images-idx3-ubyte), each optionally .gz",
    )


# ---------------------------------------------------------------------------- per-format readers
# Each reader returns (samples, labels or None) as raw arrays; validation happens once in load_points.

RawPoints = tuple[np.ndarray, "np.ndarray | None"]


def _no_keys(file: Path, x_key: str | None, y_key: str | None, fmt: str) -> None:
    """Formats that hold a single array have no named arrays or label columns: say so instead of ignoring."""
    if x_key is not None:
        raise PatchlangError(f"{file}: the option `x` applies only to .npz files, not to {fmt} files",
                             help="remove the `x = ...` option")
    if y_key is not None:
        raise PatchlangError(f"{file}: a {fmt} file holds only samples, so the option `y` cannot pick labels from it",
                             help='give the labels in a separate file: `with labels = "labels.npy"`')


def _read_npy(file: Path, data: bytes, x_key: str | None, y_key: str | None) -> RawPoints:
    _no_keys(file, x_key, y_key, ".npy")
    return _npy_array(file, data), None


def _npy_array(file: Path, data: bytes) -> np.ndarray:
    if not data.startswith(b"\x93NUMPY"):
        raise PatchlangError(f"{file} is not a .npy file (it does not start with the NPY header)",
                             help="save the data with numpy.save, or give the file its real extension")
    try:
        return np.load(io.BytesIO(data), allow_pickle=False)
    except (ValueError, EOFError, OSError) as exc:
        raise PatchlangError(f"{file} is not a plain numeric .npy array ({exc})",
                             help="save the data with numpy.save as a numeric array (no Python objects)") from None


def _open_npz(file: Path, data: bytes) -> dict[str, np.ndarray]:
    if not data.startswith(b"PK"):
        raise PatchlangError(f"{file} is not a .npz file (it is not a zip archive)",
                             help="save the data with numpy.savez(path, x=..., y=...)")
    try:
        with np.load(io.BytesIO(data), allow_pickle=False) as npz:
            if not isinstance(npz, np.lib.npyio.NpzFile):
                raise ValueError("not an archive of arrays")
            return {k: npz[k] for k in npz.files}
    except (ValueError, OSError, EOFError, KeyError, zipfile.BadZipFile, zlib.error) as exc:
        raise PatchlangError(f"{file} is not a readable .npz archive of numeric arrays ({exc})",
                             help="save the data with numpy.savez(path, x=..., y=...)") from None


def _npz_key(file: Path, arrays: dict[str, np.ndarray], key: str, option: str) -> np.ndarray:
    if key not in arrays:
        raise PatchlangError(f"{file} has no array named {key!r} (it has: {_keys(arrays)})",
                             help=f"set the option `{option}` to one of the array names listed")
    return arrays[key]


def _keys(arrays: dict[str, np.ndarray]) -> str:
    return ", ".join(repr(k) for k in arrays) or "no arrays at all"


def _read_npz(file: Path, data: bytes, x_key: str | None, y_key: str | None) -> RawPoints:
    arrays = _open_npz(file, data)
    if x_key is not None:
        x = _npz_key(file, arrays, x_key, "x")
    elif "x" in arrays:
        x = arrays["x"]
    elif len(arrays) == 1:
        x = next(iter(arrays.values()))
    else:
        raise PatchlangError(f"{file} has no array named 'x' (it has: {_keys(arrays)})",
                             help='say which arrays to use: `with x = "NAME", y = "NAME"`')
    if y_key is not None:
        return x, _npz_key(file, arrays, y_key, "y")
    return x, (arrays.get("y") if x_key != "y" else None)


def _npz_single(file: Path, data: bytes, preferred: tuple[str, ...]) -> np.ndarray:
    arrays = _open_npz(file, data)
    for key in preferred:
        if key in arrays:
            return arrays[key]
    if len(arrays) == 1:
        return next(iter(arrays.values()))
    raise PatchlangError(f"{file} holds several arrays ({_keys(arrays)}) and none is named "
                         f"{' or '.join(repr(k) for k in preferred)}",
                         help="store the labels alone, or as an array named 'y'")


def _read_idx(file: Path, data: bytes, x_key: str | None, y_key: str | None) -> RawPoints:
    _no_keys(file, x_key, y_key, "IDX")
    header = _idx_header(data)
    if header is None:
        raise PatchlangError(
            f"{file} is not a valid IDX file (bad magic number or its size does not match its header)",
            help="IDX files start with two zero bytes, a type code and the number of dimensions; "
                 "the file may be truncated",
        )
    dtype, shape = header
    offset = 4 + 4 * len(shape)
    # native byte order; no copy when it already is (bytes: uint8 pixels), the samples are converted next anyway
    return np.frombuffer(data, dtype=dtype, offset=offset).reshape(shape).astype(dtype.newbyteorder("="),
                                                                                 copy=False), None


_LABEL_COLUMN_NAMES = ("label", "labels", "y", "target", "class")


def _read_table(file: Path, data: bytes, delimiter: str | None) -> tuple[np.ndarray, list[str] | None]:
    """A numeric table and its header (a first non-blank line that does not parse as numbers), if any."""
    try:
        text = data.decode("utf-8-sig")
    except UnicodeDecodeError:
        raise PatchlangError(f"{file} is not a text file", help="csv/txt point files must be UTF-8 text") from None
    lines = text.splitlines()
    first = next((i for i, line in enumerate(lines) if line.strip() and not line.lstrip().startswith("#")), None)
    if first is None:
        raise PatchlangError(f"{file} contains no data", help="write one point per line")
    fields = [f.strip() for f in lines[first].split(delimiter)]
    header = None if all(_is_number(f) for f in fields) else fields
    skip = first + 1 if header is not None else 0
    if not any(line.strip() and not line.lstrip().startswith("#") for line in lines[skip:]):
        raise PatchlangError(f"{file} has a header but no data lines", help="add one point per line")
    try:
        values = np.loadtxt(io.StringIO(text), delimiter=delimiter, skiprows=skip, ndmin=2, comments="#",
                            dtype=np.float64)
    except ValueError as exc:
        reason = str(exc).split("; use `usecols`")[0]  # numpy's advice names its own API: not for users
        raise PatchlangError(f"{file}: not a numeric table: {reason}",
                             help="every line after an optional header must hold the same number of numbers") \
            from None
    if header is not None and len(header) != values.shape[1]:
        raise PatchlangError(f"{file}: the header has {len(header)} columns but the data has {values.shape[1]}",
                             help="make the header and the data lines agree")
    return values, header


def _is_number(text: str) -> bool:
    try:
        float(text)
    except ValueError:
        return False
    return True


def _label_column(file: Path, header: list[str] | None, ncols: int, y_key: str | None) -> int | None:
    """Which column holds the labels: see :func:`load_points` for the rules."""
    if y_key is None:
        if header is None:
            return None
        names = [h.lower() for h in header]
        if names[-1] in _LABEL_COLUMN_NAMES:
            return ncols - 1
        if names[0] in _LABEL_COLUMN_NAMES:
            return 0
        return None
    choice = y_key.lower()
    if choice == "none":
        return None
    if choice in ("last", "first"):
        if ncols < 2:
            raise PatchlangError(f"{file} has a single column, so it cannot hold both samples and labels",
                                 help='remove the option `y`, or give the labels in a file of their own: `with labels = "FILE"`')
        return ncols - 1 if choice == "last" else 0
    if header is not None and y_key in header:
        return header.index(y_key)
    raise PatchlangError(
        f"{file}: no column named {y_key!r}"
        + (f" (columns: {', '.join(header)})" if header else " (the file has no header row)"),
        help='`y` may be "last", "first", "none" or the name of a header column',
    )


def _table_reader(delimiter: str | None):
    def read(file: Path, data: bytes, x_key: str | None, y_key: str | None) -> RawPoints:
        if x_key is not None:
            raise PatchlangError(f"{file}: the option `x` applies only to .npz files", help="remove the `x = ...` option")
        values, header = _read_table(file, data, delimiter)
        col = _label_column(file, header, values.shape[1], y_key)
        if col is None:
            return values, None
        return np.delete(values, col, axis=1), values[:, col]

    return read


_DELIMITERS = {"csv": ",", "txt": None}  # None: any whitespace

_POINT_READERS = {
    "npy": _read_npy,
    "npz": _read_npz,
    "csv": _table_reader(_DELIMITERS["csv"]),
    "txt": _table_reader(_DELIMITERS["txt"]),
    "idx": _read_idx,
}


# ============================================================================ validation


def _as_samples(arr: np.ndarray, where: str) -> np.ndarray:
    """Samples as float64 with a leading point axis; non-numeric or non-finite values are user errors."""
    a = np.asarray(arr)
    if a.dtype.kind not in "biuf":
        raise PatchlangError(f"{where}: samples must be numbers, found values of type {a.dtype}",
                             help="store the samples as a numeric array")
    if a.ndim == 0:
        raise PatchlangError(f"{where} holds a single number, not a set of points",
                             help="store an array whose first axis runs over the points")
    x = a.astype(np.float64)
    if a.dtype.kind != "f":  # integers (raw pixels) are always finite: no pass over what may be 400 MB
        return x
    bad = ~np.isfinite(x.reshape(len(x), -1)).all(axis=1) if x.size else np.zeros(0, bool)
    if bad.any():
        raise PatchlangError(f"{where}: point {int(np.argmax(bad))} contains NaN or infinite values "
                             f"({int(bad.sum())} such points)",
                             help="remove or repair those points; a network input must be finite")
    return x


def _as_labels(arr: np.ndarray, where: str) -> np.ndarray:
    """Labels as int64, one per point; integral floats (``4.0``) are fine, ``4.5`` or NaN are errors."""
    a = np.asarray(arr)
    if a.ndim == 2 and 1 in a.shape:
        a = a.reshape(-1)
    if a.ndim != 1:
        raise PatchlangError(f"{where}: labels must be one number per point, found an array of shape {a.shape}",
                             help="store the labels as a flat array of integers")
    if a.dtype.kind not in "biuf":
        raise PatchlangError(f"{where}: labels must be integers, found values of type {a.dtype}",
                             help="store the labels as integers (class numbers)")
    if a.dtype.kind == "f":
        bad = ~(np.isfinite(a) & (a == np.round(a)))
        if bad.any():
            i = int(np.argmax(bad))
            raise PatchlangError(f"{where}: label {i} is {float(a[i])!r}, not an integer",
                                 help="labels are class numbers such as 0..9")
    huge = np.abs(a.astype(np.float64)) >= 2**31 if a.size else np.zeros(0, bool)
    if huge.any():  # beyond any class count, and past int64 a cast would wrap around silently
        i = int(np.argmax(huge))
        raise PatchlangError(f"{where}: label {i} is {a[i]!r}, not a class number",
                             help="labels are class numbers such as 0..9")
    return a.astype(np.int64)


def _check_label_count(n_points: int, n_labels: int, where: str, what: str) -> None:
    if n_points != n_labels:
        raise PatchlangError(f"{where}: {n_points} points but {n_labels} {what}",
                             help="give exactly one label per point, in the same order")


def _finite_scale(scale: float) -> float:
    value = float(scale)
    if not np.isfinite(value):
        raise PatchlangError(f"scale must be a finite number, got {scale!r}", help="e.g. scale = 1/255")
    return value


# ============================================================================ slicing


def _is_int(item: Any) -> bool:
    return isinstance(item, (int, np.integer)) and not isinstance(item, (bool, np.bool_))


def _position(i: int, ps: PointSet) -> int:
    n = len(ps)
    if -n <= i < n:
        return i % n
    valid = f"0..{n - 1} or -{n}..-1" if n else "none: the set is empty"
    raise PatchlangError(f"index {i} is out of range for {ps.name!r}, which has {n} points (valid: {valid})",
                         help="indices count from 0; negative indices count from the end")


def _slice_field(value: Any, what: str) -> int | None:
    if value is None or _is_int(value):
        return None if value is None else int(value)
    raise PatchlangError(f"slice {what} must be an integer, got {value!r}", help="write e.g. [10:20:2]")


def _slice_positions(item: Any, ps: PointSet) -> np.ndarray:
    """Python slice semantics (bounds are clamped to the set) on anything with start/stop/step."""
    start, stop, step = (_slice_field(getattr(item, f), f) for f in ("start", "stop", "step"))
    if step == 0:
        raise PatchlangError("slice step cannot be 0", help="use a positive step, or a negative one to reverse")
    return np.arange(*slice(start, stop, step).indices(len(ps)), dtype=np.int64)


def _item_positions(item: Any, ps: PointSet) -> np.ndarray:
    if _is_int(item):
        return np.array([_position(int(item), ps)], dtype=np.int64)
    if all(hasattr(item, f) for f in ("start", "stop", "step")):  # slice, or the AST's SliceSpec
        return _slice_positions(item, ps)
    if isinstance(item, (list, tuple, np.ndarray)):
        parts = [_item_positions(sub, ps) for sub in item]
        return np.concatenate(parts) if parts else np.zeros(0, dtype=np.int64)
    raise PatchlangError(f"cannot index {ps.name!r} with {item!r}",
                         help="use integers, slices such as 10:20, or lists of integers")


def select(ps: PointSet, items: Iterable[Any]) -> PointSet:
    """``ps[items]``: integers (negative count from the end), slices (``start:stop:step``) and lists of
    integers, concatenated in the order given.  Positions refer to ``ps``; the result keeps root indices.

    A selection that yields no point at all is an error: it is almost always an off-by-something slice,
    and an empty ``keep`` or ``change`` would silently make a spec vacuous.
    """
    parts = [_item_positions(item, ps) for item in items]
    pos = np.concatenate(parts) if parts else np.zeros(0, dtype=np.int64)
    if pos.size == 0:
        raise PatchlangError(f"this selection picks no points from {ps.name!r}, which has {len(ps)} points",
                             help="check the slice bounds: indices count from 0")
    return ps.take(pos)


# ============================================================================ filters

LABEL_OPS = ("==", "!=", "<", "<=", ">", ">=", "in", "not in")

_COMPARISONS = {
    "==": np.equal,
    "!=": np.not_equal,
    "<": np.less,
    "<=": np.less_equal,
    ">": np.greater,
    ">=": np.greater_equal,
}


def _label_values(values: set[int] | Iterable[int] | int) -> np.ndarray:
    items = list(values) if isinstance(values, (set, frozenset, list, tuple, np.ndarray)) else [values]
    if not all(_is_int(v) for v in items):
        raise PatchlangError(f"labels must be integers, got {sorted(map(repr, items))}",
                             help="write e.g. label in {1, 7}")
    return np.array(sorted({int(v) for v in items}), dtype=np.int64)


def filter_label(ps: PointSet, op: str, values: set[int] | int) -> PointSet:
    """The points whose label satisfies ``label <op> values`` (``where label == 7``, ``label in {1, 7}``).

    ``==``/``!=`` also accept a set (meaning ``in``/``not in``); ``<``..``>=`` need a single integer.
    """
    if ps.y is None:
        raise PatchlangError(f"{ps.name!r} has no labels, so it cannot be filtered by label",
                             help="load labels with the points (npz array 'y', a label column, or `with labels = \"FILE\"`)")
    if op not in LABEL_OPS:
        raise PatchlangError(f"unknown label comparison {op!r}", help=f"use one of: {', '.join(LABEL_OPS)}")
    wanted = _label_values(values)
    if op in ("in", "not in") or (op in ("==", "!=") and not _is_int(values)):
        mask = np.isin(ps.y, wanted)
        return filter_mask(ps, ~mask if op in ("!=", "not in") else mask)
    if wanted.size != 1:
        raise PatchlangError(f"label {op} needs a single label, got {len(wanted)}",
                             help="use 'label in {...}' for several labels")
    return filter_mask(ps, _COMPARISONS[op](ps.y, wanted[0]))


def filter_mask(ps: PointSet, mask: np.ndarray | Sequence[bool]) -> PointSet:
    """The points where ``mask`` is true, in order (e.g. ``correct(net)`` computed by the caller).

    An empty result is allowed here: it depends on the data, and the caller decides whether to warn.
    """
    m = np.asarray(mask)
    if m.dtype != np.bool_ or m.shape != (len(ps),):
        raise InternalError(f"filter mask for {ps.name!r} must be bool of shape ({len(ps)},), "
                            f"got {m.dtype} {m.shape}")
    return ps.take(np.flatnonzero(m))
