"""Tests for patchlang.inputs.points: loading every file format, slicing, filters, unions and error messages."""

from __future__ import annotations

import gzip
import os
import struct
from collections import namedtuple
from pathlib import Path

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from patchlang.errors import InternalError, PatchlangError
from patchlang.inputs.points import (
    LABEL_OPS,
    PointSet,
    filter_label,
    filter_mask,
    inline_points,
    load_labels,
    load_points,
    select,
)


def shared_dir() -> Path:
    """The read-only shared data (PATCHLANG_SHARED, default <repo>/../shared); skip loudly when absent."""
    root = Path(os.environ.get("PATCHLANG_SHARED") or Path(__file__).resolve().parents[1].parent / "shared")
    if not root.is_dir():
        pytest.skip(f"shared data directory {root} not found (set PATCHLANG_SHARED): skipping")
    return root


def write_idx(path: Path, array: np.ndarray, compress: bool = True) -> Path:
    """Write ``array`` in the IDX format (as MNIST is distributed), gzip-compressed unless asked otherwise."""
    codes = {np.dtype("uint8"): 0x08, np.dtype("int8"): 0x09, np.dtype("int16"): 0x0B,
             np.dtype("int32"): 0x0C, np.dtype("float32"): 0x0D, np.dtype("float64"): 0x0E}
    header = bytes([0, 0, codes[array.dtype], array.ndim]) + struct.pack(f">{array.ndim}I", *array.shape)
    payload = header + array.astype(array.dtype.newbyteorder(">")).tobytes()
    path.write_bytes(gzip.compress(payload) if compress else payload)
    return path


def message(exc_info: pytest.ExceptionInfo) -> str:
    return exc_info.value.message + "\n" + (exc_info.value.help or "")


@pytest.fixture
def images() -> np.ndarray:
    return np.arange(5 * 2 * 3, dtype=np.uint8).reshape(5, 2, 3)


# ============================================================================ formats


def test_npy_loads_samples_with_root_indices(tmp_path: Path, images: np.ndarray) -> None:
    np.save(tmp_path / "digits.npy", images)
    ps = load_points(tmp_path / "digits.npy")
    assert ps.x.dtype == np.float64 and ps.x.shape == (5, 2, 3)
    np.testing.assert_array_equal(ps.x, images)
    assert ps.y is None and ps.name == "digits" and len(ps) == 5
    np.testing.assert_array_equal(ps.indices, np.arange(5))
    assert ps.source == str(tmp_path / "digits.npy")
    assert ps.sample_shape == (2, 3) and ps.flat().shape == (5, 6)


def test_npy_with_txt_labels_as_floats(tmp_path: Path, images: np.ndarray) -> None:
    np.save(tmp_path / "wm.set.npy", images)
    (tmp_path / "wm.labels.txt").write_text("5.000000000000000000e+00\n4.0\n1\n8.0\n8.0\n")
    ps = load_points(tmp_path / "wm.set.npy", labels_path=tmp_path / "wm.labels.txt")
    assert ps.name == "wm.set"
    assert ps.y.dtype == np.int64 and ps.y.tolist() == [5, 4, 1, 8, 8]


def test_labels_count_mismatch_names_both_counts(tmp_path: Path, images: np.ndarray) -> None:
    np.save(tmp_path / "x.npy", images)
    (tmp_path / "y.txt").write_text("1\n2\n3\n")
    with pytest.raises(PatchlangError) as err:
        load_points(tmp_path / "x.npy", labels_path=tmp_path / "y.txt")
    assert "5 points" in err.value.message and "3 labels" in err.value.message


def test_non_integer_label_is_an_error(tmp_path: Path, images: np.ndarray) -> None:
    np.save(tmp_path / "x.npy", images)
    (tmp_path / "y.txt").write_text("1\n2\n3.5\n4\n5\n")
    with pytest.raises(PatchlangError, match=r"label 2 is 3\.5, not an integer"):
        load_points(tmp_path / "x.npy", labels_path=tmp_path / "y.txt")


def test_npz_default_keys(tmp_path: Path, images: np.ndarray) -> None:
    np.savez(tmp_path / "d.npz", x=images, y=np.array([0, 1, 2, 3, 4]))
    ps = load_points(tmp_path / "d.npz")
    assert ps.x.shape == (5, 2, 3) and ps.y.tolist() == [0, 1, 2, 3, 4]


def test_npz_custom_keys(tmp_path: Path, images: np.ndarray) -> None:
    np.savez(tmp_path / "d.npz", imgs=images, lbl=np.arange(5.0), other=np.zeros(3))
    ps = load_points(tmp_path / "d.npz", x_key="imgs", y_key="lbl")
    assert ps.y.tolist() == [0, 1, 2, 3, 4]
    assert load_points(tmp_path / "d.npz", x_key="imgs").y is None


def test_npz_single_array_is_the_samples(tmp_path: Path, images: np.ndarray) -> None:
    np.savez(tmp_path / "d.npz", data=images)
    ps = load_points(tmp_path / "d.npz")
    assert ps.x.shape == (5, 2, 3) and ps.y is None


def test_npz_missing_key_lists_available_keys(tmp_path: Path, images: np.ndarray) -> None:
    np.savez(tmp_path / "d.npz", imgs=images, lbl=np.arange(5))
    with pytest.raises(PatchlangError) as err:
        load_points(tmp_path / "d.npz")
    assert "'imgs'" in err.value.message and "'lbl'" in err.value.message and "with x =" in err.value.help
    with pytest.raises(PatchlangError, match="no array named 'labels'.*'imgs', 'lbl'"):
        load_points(tmp_path / "d.npz", x_key="imgs", y_key="labels")


def test_csv_with_header_detects_label_column(tmp_path: Path) -> None:
    (tmp_path / "p.csv").write_text("a,b,label\n0.5,1,3\n2,3e-1,7\n")
    ps = load_points(tmp_path / "p.csv")
    np.testing.assert_allclose(ps.x, [[0.5, 1.0], [2.0, 0.3]])
    assert ps.y.tolist() == [3, 7]
    assert load_points(tmp_path / "p.csv", y_key="none").x.shape == (2, 3)
    by_name = load_points(tmp_path / "p.csv", y_key="label")
    assert by_name.y.tolist() == [3, 7] and by_name.x.shape == (2, 2)


def test_csv_named_column_must_hold_integers(tmp_path: Path) -> None:
    (tmp_path / "p.csv").write_text("a,b,label\n0.5,1,3\n2,3e-1,7\n")
    with pytest.raises(PatchlangError, match="label 0 is 0.5, not an integer"):
        load_points(tmp_path / "p.csv", y_key="a")


def test_csv_without_header(tmp_path: Path) -> None:
    (tmp_path / "p.csv").write_text("1,0.1,0.2,0\n\n0,0.3,0.4,1\n")
    unlabelled = load_points(tmp_path / "p.csv")
    assert unlabelled.y is None and unlabelled.x.shape == (2, 4)
    first = load_points(tmp_path / "p.csv", y_key="first")
    assert first.y.tolist() == [1, 0] and first.x.tolist() == [[0.1, 0.2, 0.0], [0.3, 0.4, 1.0]]
    last = load_points(tmp_path / "p.csv", y_key="last", scale=10.0)
    assert last.y.tolist() == [0, 1]
    np.testing.assert_allclose(last.x, [[10.0, 1.0, 2.0], [0.0, 3.0, 4.0]])


def test_csv_errors(tmp_path: Path) -> None:
    (tmp_path / "bad.csv").write_text("1,2\n3,x\n")
    with pytest.raises(PatchlangError, match="not a numeric table"):
        load_points(tmp_path / "bad.csv")
    (tmp_path / "ragged.csv").write_text("1,2\n3\n")
    with pytest.raises(PatchlangError, match="number of columns changed from 2 to 1 at row 2$"):
        load_points(tmp_path / "ragged.csv")
    (tmp_path / "empty.csv").write_text("a,b\n\n")
    with pytest.raises(PatchlangError, match="header but no data"):
        load_points(tmp_path / "empty.csv")
    (tmp_path / "h.csv").write_text("a,b\n1,2\n")
    with pytest.raises(PatchlangError) as err:
        load_points(tmp_path / "h.csv", y_key="target")
    assert "columns: a, b" in err.value.message
    (tmp_path / "n.csv").write_text("1,2\n")
    with pytest.raises(PatchlangError, match="no header row"):
        load_points(tmp_path / "n.csv", y_key="target")
    with pytest.raises(PatchlangError, match="option `x` applies only to .npz"):
        load_points(tmp_path / "n.csv", x_key="x")


def test_idx_gz_images_and_labels(tmp_path: Path, images: np.ndarray) -> None:
    x_path = write_idx(tmp_path / "t10k-images-idx3-ubyte.gz", images)
    y_path = write_idx(tmp_path / "t10k-labels-idx1-ubyte.gz", np.array([7, 2, 1, 0, 4], dtype=np.uint8))
    ps = load_points(x_path, labels_path=y_path, scale=1 / 255)
    np.testing.assert_allclose(ps.x, images / 255.0)
    assert ps.y.tolist() == [7, 2, 1, 0, 4]
    assert ps.name == "t10k-images-idx3-ubyte"


@pytest.mark.parametrize("dtype", ["uint8", "int16", "float32", "float64"])
def test_idx_types_and_sniffing(tmp_path: Path, dtype: str) -> None:
    data = (np.arange(12).reshape(4, 3) - 3).astype(dtype) if dtype != "uint8" else np.arange(12, dtype=dtype)
    plain = write_idx(tmp_path / "a.idx", data, compress=False)
    np.testing.assert_array_equal(load_points(plain).x, data)
    sniffed = write_idx(tmp_path / "no_extension", data)  # recognised from the gzip and IDX magic numbers
    np.testing.assert_array_equal(load_points(sniffed).x, data)


def test_truncated_idx_is_an_error(tmp_path: Path, images: np.ndarray) -> None:
    path = write_idx(tmp_path / "x-idx3-ubyte", images, compress=False)
    path.write_bytes(path.read_bytes()[:-1])
    with pytest.raises(PatchlangError, match="not a valid IDX file"):
        load_points(path)


def test_txt_points_one_per_line(tmp_path: Path) -> None:
    (tmp_path / "p.txt").write_text("# a comment\n0.5\n1.5\n-2\n")
    ps = load_points(tmp_path / "p.txt")
    assert ps.x.shape == (3, 1) and ps.x[:, 0].tolist() == [0.5, 1.5, -2.0]
    (tmp_path / "q.txt").write_text("0.1 0.2 1\n0.3 0.4 0\n")
    assert load_points(tmp_path / "q.txt", y_key="last").y.tolist() == [1, 0]


def test_load_labels_formats(tmp_path: Path) -> None:
    np.save(tmp_path / "l.npy", np.array([1.0, 2.0]))
    np.savez(tmp_path / "l.npz", y=np.array([3, 4]), x=np.zeros((2, 2)))
    (tmp_path / "l.csv").write_text("label\n5\n6\n")
    assert load_labels(tmp_path / "l.npy").tolist() == [1, 2]
    assert load_labels(tmp_path / "l.npz").tolist() == [3, 4]
    assert load_labels(tmp_path / "l.csv").tolist() == [5, 6]
    (tmp_path / "t.csv").write_text("1,2\n3,4\n")
    with pytest.raises(PatchlangError, match="one label per line"):
        load_labels(tmp_path / "t.csv")


def test_missing_file_names_absolute_path(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    with pytest.raises(PatchlangError) as err:
        load_points("data/nope.npz")
    assert str(tmp_path / "data" / "nope.npz") in err.value.message and err.value.help
    np.save(tmp_path / "x.npy", np.zeros((2, 2)))
    with pytest.raises(PatchlangError, match="label file not found"):
        load_points("x.npy", labels_path="labels.txt")


def test_format_errors(tmp_path: Path) -> None:
    (tmp_path / "x.bin").write_bytes(b"\x01\x02\x03")
    with pytest.raises(PatchlangError, match="cannot tell the format") as err:
        load_points(tmp_path / "x.bin")
    assert ".npz" in err.value.help
    np.save(tmp_path / "o.npy", np.array([{"a": 1}], dtype=object))
    with pytest.raises(PatchlangError, match="not a plain numeric .npy"):
        load_points(tmp_path / "o.npy")
    np.save(tmp_path / "n.npy", np.array([[1.0, np.nan], [0.0, 1.0]]))
    with pytest.raises(PatchlangError, match="point 0 contains NaN"):
        load_points(tmp_path / "n.npy")
    np.save(tmp_path / "s.npy", np.zeros((2, 2)))
    with pytest.raises(PatchlangError, match="option `y` cannot pick labels") as err:
        load_points(tmp_path / "s.npy", y_key="y")
    assert "with labels =" in message(err)
    with pytest.raises(PatchlangError, match="finite"):
        load_points(tmp_path / "s.npy", scale=float("inf"))
    (tmp_path / "broken.npy.gz").write_bytes(gzip.compress(b"abc")[:-4])
    with pytest.raises(PatchlangError, match="cannot be decompressed"):
        load_points(tmp_path / "broken.npy.gz")


# ============================================================================ inline


def test_inline_points() -> None:
    ps = inline_points([[0.0, 1.0], [2.0, 3.0]], [1, 0], name="probe")
    assert ps.x.shape == (2, 2) and ps.y.tolist() == [1, 0] and ps.describe(1) == "probe[1]"
    assert inline_points([[1, 2]], None).y is None


def test_inline_errors() -> None:
    with pytest.raises(PatchlangError, match=r"different shapes \(\(1,\), \(2,\)\)"):
        inline_points([[0.0, 1.0], [2.0]], None)
    with pytest.raises(PatchlangError, match="only numbers"):
        inline_points([[0.0, "a"]], None)
    with pytest.raises(PatchlangError, match="2 points but 3 labels"):
        inline_points([[0.0], [1.0]], [0, 1, 2])
    with pytest.raises(PatchlangError, match="no points"):
        inline_points([], None)


# ============================================================================ slicing


@pytest.fixture
def ten() -> PointSet:
    return inline_points([[float(i), -float(i)] for i in range(10)], [i % 3 for i in range(10)], name="wm")


def test_select_integers_slices_and_lists(ten: PointSet) -> None:
    assert select(ten, [3]).indices.tolist() == [3]
    assert select(ten, [-1]).indices.tolist() == [9]
    assert select(ten, [slice(2, 8, 3)]).indices.tolist() == [2, 5]
    assert select(ten, [slice(None, None, -4)]).indices.tolist() == [9, 5, 1]
    assert select(ten, [[1, 4], 0, slice(8, 100)]).indices.tolist() == [1, 4, 0, 8, 9]
    SliceSpec = namedtuple("SliceSpec", "start stop step")  # the AST's own slice type works too
    assert select(ten, [SliceSpec(-3, None, None)]).indices.tolist() == [7, 8, 9]


def test_select_keeps_root_indices_and_labels(ten: PointSet) -> None:
    inner = select(select(ten, [slice(4, 10)]), [1, -1])
    assert inner.indices.tolist() == [5, 9] and inner.y.tolist() == [2, 0]
    assert inner.x[:, 0].tolist() == [5.0, 9.0]
    assert inner.describe(0) == "wm[5]" and inner.describe(-1) == "wm[9]"


def test_select_errors_say_the_size(ten: PointSet) -> None:
    with pytest.raises(PatchlangError, match="index 10 is out of range for 'wm', which has 10 points"):
        select(ten, [10])
    with pytest.raises(PatchlangError, match="-11"):
        select(ten, [-11])
    with pytest.raises(PatchlangError, match="picks no points from 'wm', which has 10 points"):
        select(ten, [slice(20, 30)])
    with pytest.raises(PatchlangError, match="step cannot be 0"):
        select(ten, [slice(0, 5, 0)])
    with pytest.raises(PatchlangError, match="cannot index"):
        select(ten, [True])


@settings(max_examples=200, deadline=None)
@given(st.integers(-15, 15) | st.none(), st.integers(-15, 15) | st.none(), st.sampled_from([None, 1, 2, 3, -1, -2]))
def test_select_slice_matches_python(start: int | None, stop: int | None, step: int | None) -> None:
    ps = inline_points([[float(i)] for i in range(10)], None)
    expected = list(range(10))[start:stop:step]
    if not expected:
        with pytest.raises(PatchlangError):
            select(ps, [slice(start, stop, step)])
    else:
        assert select(ps, [slice(start, stop, step)]).indices.tolist() == expected


# ============================================================================ filters


@pytest.mark.parametrize(
    "op, value, expected",
    [("==", 1, [1, 4, 7]), ("!=", 0, [1, 2, 4, 5, 7, 8]), ("<", 1, [0, 3, 6, 9]), ("<=", 1, [0, 1, 3, 4, 6, 7, 9]),
     (">", 1, [2, 5, 8]), (">=", 2, [2, 5, 8]), ("in", {0, 2}, [0, 2, 3, 5, 6, 8, 9]),
     ("not in", {0, 2}, [1, 4, 7]), ("==", {1}, [1, 4, 7]), ("!=", {1, 2}, [0, 3, 6, 9])],
)
def test_filter_label(ten: PointSet, op: str, value: int | set[int], expected: list[int]) -> None:
    assert op in LABEL_OPS
    assert filter_label(ten, op, value).indices.tolist() == expected


def test_filter_after_select_keeps_root_numbering(ten: PointSet) -> None:
    out = filter_label(select(ten, [slice(5, None)]), "==", 2)
    assert out.indices.tolist() == [5, 8] and [out.describe(i) for i in range(len(out))] == ["wm[5]", "wm[8]"]


def test_filter_label_errors(ten: PointSet) -> None:
    unlabelled = inline_points([[0.0]], None, name="u")
    with pytest.raises(PatchlangError, match="'u' has no labels") as err:
        filter_label(unlabelled, "==", 1)
    assert "with labels =" in err.value.help
    with pytest.raises(PatchlangError, match="unknown label comparison"):
        filter_label(ten, "=~", 1)
    with pytest.raises(PatchlangError, match="single label"):
        filter_label(ten, "<", {1, 2})
    with pytest.raises(PatchlangError, match="labels must be integers"):
        filter_label(ten, "==", True)
    with pytest.raises(PatchlangError, match="labels must be integers"):
        filter_label(ten, "in", {1.5})
    assert len(filter_label(ten, "==", 9)) == 0  # an empty result is data, not an error


def test_filter_mask(ten: PointSet) -> None:
    mask = np.array([i % 2 == 0 for i in range(10)])
    assert filter_mask(ten, mask).indices.tolist() == [0, 2, 4, 6, 8]
    with pytest.raises(InternalError):
        filter_mask(ten, mask[:5])
    with pytest.raises(InternalError):
        filter_mask(ten, mask.astype(int))


# ============================================================================ union


def test_union_same_root_keeps_name(ten: PointSet) -> None:
    u = select(ten, [0, 1]).union(select(ten, [8]))
    assert u.name == "wm" and u.origins is None and u.indices.tolist() == [0, 1, 8]
    assert u.describe(2) == "wm[8]" and u.y.tolist() == [0, 1, 2]


def test_union_of_different_sets_describes_each_point(ten: PointSet) -> None:
    images = inline_points([[[1.0], [2.0]]], [5], name="probe")  # sample shape (2, 1): same size as (2,)
    u = select(ten, [3]).union(images)
    assert u.name == "wm+probe" and u.sample_shape == (2,)
    assert [u.describe(i) for i in range(2)] == ["wm[3]", "probe[0]"]
    assert u.take([1]).describe(0) == "probe[0]"
    assert u.y.tolist() == [0, 5]
    assert select(ten, [0]).union(inline_points([[0.0, 0.0]], None)).y is None


def test_union_shape_mismatch(ten: PointSet) -> None:
    with pytest.raises(PatchlangError, match=r"shape \(3,\), 3 values"):
        ten.union(inline_points([[0.0, 1.0, 2.0]], None, name="big"))


def test_repr_is_short(ten: PointSet) -> None:
    assert repr(ten) == "PointSet('wm', n=10, sample_shape=(2,), labelled, source='inline')"


# ============================================================================ shared data


@pytest.mark.shared
def test_shared_watermarks() -> None:
    wm = shared_dir() / "benchmarks" / "watermark_mnist"
    ps = load_points(wm / "wm.set.npy", labels_path=wm / "wm.labels.txt", name="wm")
    assert ps.x.shape == (100, 28, 28) and ps.y.shape == (100,) and ps.y.dtype == np.int64
    assert set(ps.y.tolist()) <= set(range(10)) and ps.describe(3) == "wm[3]"


@pytest.mark.shared
def test_shared_mnist_idx() -> None:
    mnist = shared_dir() / "datasets" / "mnist"
    ps = load_points(mnist / "t10k-images-idx3-ubyte.gz", labels_path=mnist / "t10k-labels-idx1-ubyte.gz",
                     scale=1 / 255)
    assert ps.x.shape == (10000, 28, 28) and 0.0 <= ps.x.min() and ps.x.max() <= 1.0
    assert ps.y.tolist()[:5] == [7, 2, 1, 0, 4]
    assert len(filter_label(ps, "==", 7)) == 1028


@pytest.mark.shared
def test_shared_aigent_npz() -> None:
    ps = load_points(shared_dir() / "benchmarks" / "aigent_mnist" / "aigent_mnist_500.npz")
    assert ps.x.shape == (500, 784) and ps.y.shape == (500,)
