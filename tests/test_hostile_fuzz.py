"""Hypothesis over the data loaders and over hostile values in the grammar (issue 10).

Whatever bytes a point, label, model or VNN-LIB file holds, and whatever number or string a spec puts where a
value goes, the only acceptable failure is a user-facing PatchlangError (exit code 2 in the CLI): never another
exception (exit 101), never a hang.  Values that pass `check` are within the documented ranges.
"""

from __future__ import annotations

import gzip
import io
import math
import shutil
import zipfile
from pathlib import Path

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from patchlang.api import load_program_text
from patchlang.errors import PatchlangError

REPO = Path(__file__).resolve().parents[1]
MODELS = REPO / "examples" / "models"
FUZZ = settings(max_examples=int(__import__("os").environ.get("FUZZ_N", "60")), deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])

NPY_HEADER = b"\x93NUMPY\x01\x00"


def _payloads() -> st.SearchStrategy[bytes]:
    raw = st.binary(max_size=300)
    npy_like = st.builds(lambda tail: NPY_HEADER + tail, st.binary(max_size=200))
    valid_npy = st.builds(_npy_bytes, st.integers(0, 4), st.integers(0, 3), st.sampled_from(["f8", "i4", "U3", "O",
                                                                                              "c16", "?"]))
    truncated = st.builds(lambda b, k: b[:k], valid_npy, st.integers(0, 120))
    gz = st.builds(gzip.compress, st.one_of(raw, valid_npy))
    zipped = st.builds(_zip_bytes, st.dictionaries(st.sampled_from(["x", "y", "z.npy", "x.npy", "y.npy"]),
                                                   st.one_of(raw, valid_npy), max_size=3))
    idx = st.builds(lambda t, n, tail: bytes([0, 0, t, n]) + tail, st.integers(0, 20), st.integers(0, 4),
                    st.binary(max_size=64))
    text = st.text(alphabet="0123456789.,-eE \n#abxy\tinfa", max_size=200).map(str.encode)
    return st.one_of(raw, npy_like, valid_npy, truncated, gz, zipped, idx, text)


def _npy_bytes(n: int, d: int, dtype: str) -> bytes:
    buf = io.BytesIO()
    shape = (n,) if d == 0 else (n, d)
    arr = np.zeros(shape, dtype=dtype) if dtype != "O" else np.empty(shape, dtype=object)
    np.save(buf, arr, allow_pickle=True)
    return buf.getvalue()


def _zip_bytes(members: dict[str, bytes]) -> bytes:
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w") as z:
        for name, data in members.items():
            z.writestr(name, data)
    return buf.getvalue()


EXTENSIONS = [".npy", ".npz", ".csv", ".txt", ".npy.gz", ".npz.gz", ".csv.gz", "-idx3-ubyte", ".idx"]


@FUZZ
@given(data=_payloads(), ext=st.sampled_from(EXTENSIONS), as_labels=st.booleans())
def test_point_and_label_loaders_never_crash(tmp_path, data, ext, as_labels):
    from patchlang.inputs.points import load_labels, load_points

    path = tmp_path / f"f{ext}"
    path.write_bytes(data)
    try:
        if as_labels:
            y = load_labels(path)
            assert y.dtype == np.int64 and y.ndim == 1
        else:
            ps = load_points(path)
            assert np.all(np.isfinite(ps.x))
    except PatchlangError:
        pass


@FUZZ
@given(data=st.one_of(st.binary(max_size=400), st.text(max_size=300).map(str.encode)),
       ext=st.sampled_from([".onnx", ".nnet"]))
def test_model_loader_never_crashes(tmp_path, data, ext):
    from patchlang.model.loader import load_model

    path = tmp_path / f"m{ext}"
    path.write_bytes(data)
    try:
        load_model(str(path))
    except PatchlangError:
        pass


@FUZZ
@given(data=st.binary(max_size=400), cut=st.integers(0, 10_000))
def test_truncated_or_corrupted_onnx_never_crashes(tmp_path, data, cut):
    from patchlang.model.loader import load_model

    good = (MODELS / "toy.onnx").read_bytes()
    k = cut % (len(good) + 1)
    path = tmp_path / "m.onnx"
    path.write_bytes(good[:k] + data + good[k + len(data):])
    try:
        net = load_model(str(path))
        assert all(np.all(np.isfinite(layer.W)) for layer in net.layers if hasattr(layer, "W"))
    except PatchlangError:
        pass


VNNLIB_WORDS = ["(", ")", "declare-const", "X_0", "X_1", "Y_0", "Y_1", "Real", "assert", "<=", ">=", "and", "or",
                "+", "-", "*", "0", "1.5", "-2", "1e400", "nan", "\n", " "]


@FUZZ
@given(words=st.lists(st.sampled_from(VNNLIB_WORDS), max_size=60))
def test_vnnlib_parser_never_crashes(words):
    from patchlang.inputs.vnnlib import parse_vnnlib_text

    try:
        parse_vnnlib_text(" ".join(words))
    except PatchlangError:
        pass


# ---------------------------------------------------------------------------- hostile values in the grammar

def _number() -> st.SearchStrategy[str]:
    return st.one_of(
        st.floats(allow_nan=False, allow_infinity=False, width=64).map(repr),
        st.sampled_from(["1e400", "-1e400", "1e-400", "0", "-0", "1/0", "0/0", "1/3", "9" * 30, "-" + "9" * 30,
                         "nan", "inf", '"abc"', '""', "-1", "-5", "0.5"]),
        st.integers(-10**6, 10**6).map(str),
    )


TEMPLATES = [
    'patch f on net {{\n  edit layer -1 biases\n  change test[0] to 3\n  using highs ({key} = {v})\n}}\n',
    'patch f on net {{\n  edit layer -1 biases\n  change test[0] to 3\n  margin {v}\n}}\n',
    'patch f on net {{\n  edit layer -1 biases\n  change test[0] to 3\n  bound linf <= {v}\n}}\n',
    'patch f on net {{\n  edit layer -1 biases\n  change test[0] to 3\n  minimize {v} linf + 1 l1\n}}\n',
    'patch f on net {{\n  edit layer -1 weights rows [{v}:{w}]\n  change test[0] to 3\n}}\n',
    'patch f on net {{\n  edit layer -1 biases\n  keep test[0:5] outputs within {v}\n  change test[0] to 3\n}}\n',
    'points q = test[{v}:{w}]\n',
    'points q = test[::{v}]\n',
    'property p {{ input box lo [0] hi [{v}]  ensure y[0] <= {w} }}\n',
    'property p {{ input within linf {v} of test[0:2]  ensure label stays }}\nverify net satisfies p timeout {w}\n',
    'property p {{ input within linf 0.1 of test[0:1]  ensure label stays }}\n'
    'repair net for p {{\n  edit layer -1 biases\n  limit {key2} {v}\n}}\n',
]


@pytest.fixture(scope="module")
def base(tmp_path_factory) -> Path:
    d = tmp_path_factory.mktemp("fuzz")
    for f in ("digits_mlp.onnx", "digits_test.npz"):
        shutil.copy(MODELS / f, d / f)
    return d


@settings(max_examples=int(__import__("os").environ.get("FUZZ_N2", "150")), deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(template=st.sampled_from(TEMPLATES), v=_number(), w=_number(),
       key=st.sampled_from(["time_limit", "mip_gap", "threads", "seed"]),
       key2=st.sampled_from(["iterations", "time", "counterexamples", "verify"]))
def test_hostile_values_are_spec_errors_or_in_range(base, template, v, w, key, key2):
    source = ('model net = "digits_mlp.onnx"\npoints test = "digits_test.npz"\n'
              + template.format(v=v, w=w, key=key, key2=key2))
    try:
        program = load_program_text(source, base)
    except PatchlangError:
        return
    for task in program.tasks:
        patch = getattr(task, "patch", task)
        for value in (getattr(patch, "margin", 0.0), *getattr(patch, "limits", {}).values()):
            assert math.isfinite(value) and value >= 0
        opts = getattr(getattr(patch, "backend", None), "options", {}) or {}
        for k in ("time_limit", "mip_gap", "threads", "seed"):
            if k in opts:
                assert isinstance(opts[k], (int, float)) and math.isfinite(opts[k]) and opts[k] >= 0
        if getattr(task, "timeout", None) is not None:
            assert task.timeout > 0
        prop = getattr(task, "prop", None)
        for lo, hi in getattr(prop, "boxes", []):
            assert np.all(np.isfinite(lo)) and np.all(np.isfinite(hi))
    for ps in program.points.values():
        assert len(ps) > 0


# ---------------------------------------------------------------------------- every claim is certified or says not

@settings(max_examples=int(__import__("os").environ.get("FUZZ_N3", "12")), deadline=None,
          suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(seed=st.integers(0, 10_000))
def test_random_patch_tasks_answer_with_a_certificate(tmp_path_factory, seed):
    """Random tasks (a quarter infeasible by a tight bound): every answer is a patch that passed the independent
    check, or a "no patch" with a certificate that says how it was re-checked; never exit 101."""
    import json

    from patchlang.cli import main
    from specgen import random_case

    folder = tmp_path_factory.mktemp("case")
    case = random_case(seed, folder)
    spec = folder / "case.patch"
    spec.write_text(case.source)
    code = main(["run", str(spec), "--json", str(folder / "r.json"), "--quiet"])
    assert code in (0, 1, 3), case.description
    task = json.loads((folder / "r.json").read_text())["tasks"][0]
    if task["status"] == "patched":
        assert all(c["satisfied_float64"] == c["points"] == c["satisfied_float32"] for c in task["checks"])
    elif task["status"] == "no patch":
        cert = task["details"]["certificate"]
        assert cert["method"] and isinstance(cert["certified"], bool), case.description
