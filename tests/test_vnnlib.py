"""Tests for patchlang.inputs.vnnlib: the VNN-LIB subset, the case normal form, errors and the writer."""

from __future__ import annotations

import gzip
import os
import re
from pathlib import Path

import numpy as np
import pytest
from hypothesis import HealthCheck, assume, given, settings
from hypothesis import strategies as st

from patchlang.errors import PatchlangError
from patchlang.inputs.vnnlib import (
    LinearAtom,
    VnnlibCase,
    VnnlibProperty,
    format_vnnlib,
    parse_vnnlib,
    parse_vnnlib_text,
    write_vnnlib,
)


def shared_dir() -> Path | None:
    """The read-only shared data (PATCHLANG_SHARED, default <repo>/../shared), or None when absent."""
    root = Path(os.environ.get("PATCHLANG_SHARED") or Path(__file__).resolve().parents[1].parent / "shared")
    return root if root.is_dir() else None


def shared_vnnlib_files() -> list:
    """Every benchmark .vnnlib file as a test parameter; one loudly skipped parameter when the data is absent."""
    root = shared_dir()
    if root is None:
        return [pytest.param(None, marks=pytest.mark.skip(reason="shared data not found (set PATCHLANG_SHARED): "
                                                                  "skipping"))]
    files = sorted((root / "benchmarks").glob("*/vnnlib/*.vnnlib"))
    return [pytest.param(f, id=f"{f.parent.parent.name}/{f.name}") for f in files]


def shared_file(*parts: str) -> Path:
    root = shared_dir()
    if root is None:
        pytest.skip("shared data not found (set PATCHLANG_SHARED): skipping")
    return root.joinpath("benchmarks", *parts)


def declare(n_in: int, n_out: int) -> str:
    return "".join(f"(declare-const X_{i} Real)\n" for i in range(n_in)) + \
        "".join(f"(declare-const Y_{j} Real)\n" for j in range(n_out))


def unit_box(n: int) -> str:
    return "".join(f"(assert (<= X_{i} 1.0))\n(assert (>= X_{i} 0.0))\n" for i in range(n))


BOX = "(assert (<= X_0 1))(assert (>= X_0 0))"  # X_0 in [0, 1], on one line


def parse(text: str) -> VnnlibProperty:
    return parse_vnnlib_text(text, "t.vnnlib")


def roundtrip(prop: VnnlibProperty) -> VnnlibProperty:
    return parse_vnnlib_text(format_vnnlib(prop), "roundtrip.vnnlib")


# ============================================================================ the subset


def test_single_box_single_atom() -> None:
    prop = parse("; comment\n" + declare(2, 2) + unit_box(2) + "(assert (>= Y_0 3.5e-1)) ; trailing\n")
    assert (prop.n_inputs, prop.n_outputs, len(prop.cases)) == (2, 2, 1)
    lo, hi, unsafe = prop.cases[0]
    assert lo.tolist() == [0.0, 0.0] and hi.tolist() == [1.0, 1.0]
    assert unsafe == [[LinearAtom({0: 1.0}, ">=", 0.35)]]
    assert prop.input_boxes[0][1].tolist() == [1.0, 1.0]


@pytest.mark.parametrize(
    "atom, expected",
    [
        ("(<= Y_0 Y_1)", LinearAtom({0: 1.0, 1: -1.0}, "<=", 0.0)),
        ("(>= Y_1 Y_0)", LinearAtom({1: 1.0, 0: -1.0}, ">=", 0.0)),
        ("(<= 3 Y_0)", LinearAtom({0: 1.0}, ">=", 3.0)),
        ("(< Y_0 -2.5)", LinearAtom({0: 1.0}, "<=", -2.5)),
        ("(> Y_0 .5)", LinearAtom({0: 1.0}, ">=", 0.5)),
        ("(<= (+ Y_0 (* -1.0 Y_1)) 1E2)", LinearAtom({0: 1.0, 1: -1.0}, "<=", 100.0)),
        ("(<= (- Y_0 (* 2 Y_1) 1) 0)", LinearAtom({0: 1.0, 1: -2.0}, "<=", 1.0)),
        ("(>= (* (/ 1 4) Y_1) (- 2))", LinearAtom({1: 0.25}, ">=", -2.0)),
        ("(<= (+ Y_0 Y_1 (- Y_0)) 0)", LinearAtom({1: 1.0}, "<=", 0.0)),
    ],
)
def test_output_atoms_are_normalised(atom: str, expected: LinearAtom) -> None:
    prop = parse(declare(1, 2) + unit_box(1) + f"(assert {atom})\n")
    assert prop.cases[0].unsafe == [[expected]]


def test_equality_atoms() -> None:
    prop = parse(declare(2, 1) + "(assert (= X_0 0.25))(assert (<= X_1 1))(assert (>= X_1 0))(assert (= Y_0 2))")
    lo, hi, unsafe = prop.cases[0]
    assert lo[0] == hi[0] == 0.25
    assert unsafe == [[LinearAtom({0: 1.0}, "<=", 2.0), LinearAtom({0: 1.0}, ">=", 2.0)]]


def test_scaled_input_bounds_flip_with_negative_coefficients() -> None:
    prop = parse(declare(1, 1) + "(assert (<= (* -2 X_0) 1))(assert (<= X_0 3))(assert (<= Y_0 0))")
    assert prop.cases[0].lo.tolist() == [-0.5] and prop.cases[0].hi.tolist() == [3.0]


def test_tightest_bounds_win() -> None:
    prop = parse(declare(1, 1) + unit_box(1) + "(assert (<= X_0 0.5))(assert (>= X_0 -4))(assert (<= Y_0 0))")
    assert prop.cases[0].lo.tolist() == [0.0] and prop.cases[0].hi.tolist() == [0.5]


def test_output_disjunction_is_one_case() -> None:
    prop = parse(declare(1, 3) + unit_box(1) + "(assert (or (and (<= Y_1 Y_0)) (and (<= Y_2 Y_0) (<= Y_2 Y_1))))")
    assert len(prop.cases) == 1
    assert [len(conj) for conj in prop.cases[0].unsafe] == [1, 2]


def test_several_asserts_and_together() -> None:
    text = declare(1, 2) + unit_box(1) + \
        "(assert (or (<= Y_0 0) (<= Y_1 0)))\n(assert (>= Y_0 -1))\n(assert (or (>= Y_1 1) (>= Y_1 2)))\n"
    (case,) = parse(text).cases
    assert len(case.unsafe) == 4
    assert all(LinearAtom({0: 1.0}, ">=", -1.0) in conj for conj in case.unsafe)


def test_disjunction_of_input_boxes_gives_several_cases() -> None:
    text = declare(1, 2) + """
        (assert (or (and (<= X_0 1) (>= X_0 0)) (and (<= X_0 -1) (>= X_0 -2))))
        (assert (or (and (<= Y_1 Y_0)) (and (<= Y_1 -3))))
    """
    prop = parse(text)
    assert [b[0].tolist() for b in prop.input_boxes] == [[0.0], [-2.0]]
    assert all(len(case.unsafe) == 2 for case in prop.cases)


def test_mixed_input_output_disjuncts_group_by_box() -> None:
    text = declare(1, 2) + """
        (assert (or
            (and (<= X_0 1) (>= X_0 0) (<= Y_0 Y_1))
            (and (<= X_0 3) (>= X_0 2) (>= Y_0 5))
            (and (<= X_0 1) (>= X_0 0) (>= Y_1 7))
        ))
    """
    prop = parse(text)
    assert len(prop.cases) == 2
    assert prop.cases[0].unsafe == [[LinearAtom({0: 1.0, 1: -1.0}, "<=", 0.0)], [LinearAtom({1: 1.0}, ">=", 7.0)]]
    assert prop.cases[1].lo.tolist() == [2.0] and prop.cases[1].unsafe == [[LinearAtom({0: 1.0}, ">=", 5.0)]]


def test_empty_disjunct_boxes_are_dropped() -> None:
    text = declare(1, 1) + BOX + "(assert (or (>= X_0 5) (<= X_0 0.5)))(assert (<= Y_0 0))"
    prop = parse(text)
    assert prop.input_boxes[0][0].tolist() == [0.0] and prop.input_boxes[0][1].tolist() == [0.5]
    assert len(prop.cases) == 1


def test_no_output_constraint_means_always_unsafe() -> None:
    prop = parse(declare(1, 1) + unit_box(1))
    assert prop.cases[0].unsafe == [[]]
    assert prop.is_counterexample(np.array([0.5]), np.array([123.0]))
    assert roundtrip(prop) == prop


def test_is_counterexample() -> None:
    prop = parse(declare(2, 2) + unit_box(2) + "(assert (or (and (>= Y_0 1)) (and (<= Y_1 Y_0) (<= Y_1 -1))))")
    assert prop.is_counterexample([0.5, 0.5], [1.5, 0.0])
    assert prop.is_counterexample([0.5, 0.5], [-0.5, -2.0])
    assert not prop.is_counterexample([0.5, 0.5], [0.5, 0.0])
    assert not prop.is_counterexample([1.5, 0.5], [1.5, 0.0])  # outside the box
    assert prop.is_counterexample([1.0 + 1e-9, 0.5], [1.5, 0.0], tol=1e-6)


def test_linear_atom_helpers() -> None:
    atom = LinearAtom({0: 1.0, 2: -2.0}, "<=", 0.5)
    ys = np.array([[1.0, 9.0, 0.5], [3.0, 0.0, 0.0]])
    assert atom.lhs(ys).tolist() == [0.0, 3.0]
    assert atom.holds(ys).tolist() == [True, False]
    assert str(atom) == "Y_0 - 2*Y_2 <= 0.5"
    assert str(LinearAtom({1: -1.0}, ">=", 3.0)) == "-Y_1 >= 3"


# ============================================================================ errors


@pytest.mark.parametrize(
    "body, pattern",
    [
        ("(assert (<= X_0 1))", r"^t\.vnnlib: X_0 has no lower bound"),
        (BOX + "\n(assert (<= Z_3 1))", r"^t\.vnnlib:4:10: variable Z_3 is not declared"),
        (BOX + "\n(assert (<= X_0 Y_0))", r"^t\.vnnlib:4:10: .*mix inputs"),
        (BOX + "\n  (assert (<= (* Y_0 Y_0) 1))", r"^t\.vnnlib:4:22: .*not linear"),
        (BOX + "\n(assert (<= (/ Y_0 X_0) 1))", r"division by a variable"),
        (BOX + "\n(assert (<= (/ Y_0 0) 1))", r"division by zero"),
        (BOX + "\n(assert (not (<= Y_0 1)))", r"^t\.vnnlib:4:10: unexpected 'not'"),
        ("(assert (<= X_0 1))\n(assert (>= X_0 0)", r"^t\.vnnlib:4:19: the file ends inside"),
        ("(assert (<= X_0 1))(assert (>= X_0 2))(assert (<= Y_0 1))", r"box is empty \(X_0 must be >= 2\.0"),
        (BOX + "(assert (<= Y_0 Y_0))", r"no variables"),
        (BOX + "(assert (or))", r"empty \(or\)"),
        (BOX + "(assert (<= Y_0 1 2))", r"^t\.vnnlib:3:\d+: unexpected '2' \(expected '\)'\)"),
        (BOX + " @", r"^t\.vnnlib:3:\d+: unexpected '@'"),
    ],
)
def test_errors_have_positions_and_help(body: str, pattern: str) -> None:
    with pytest.raises(PatchlangError, match=pattern) as err:
        parse(declare(1, 1) + body)
    assert err.value.help


def test_two_input_variables_in_one_atom_is_not_a_box() -> None:
    with pytest.raises(PatchlangError, match=r"^t\.vnnlib:5:10: only per-variable bounds"):
        parse(declare(2, 1) + unit_box(2).replace("\n", "") + "\n(assert (<= (+ X_0 X_1) 1))(assert (<= Y_0 0))")


@pytest.mark.parametrize(
    "decls, pattern",
    [
        ("(declare-const X_1 Real)(declare-const Y_0 Real)", "X_1 is declared but X_0 is not"),
        ("(declare-const X_0 Int)(declare-const Y_0 Real)", r"1:16: variable X_0 has sort Int"),
        ("(declare-const X_0 Real)(declare-const X_0 Real)(declare-const Y_0 Real)", "declared twice"),
        ("(declare-const X_0 Real)(declare-const in_0 Real)", "names must be X_<i>"),
        ("(declare-const X_0 Real)", "no output variables"),
    ],
)
def test_declaration_errors(decls: str, pattern: str) -> None:
    with pytest.raises(PatchlangError, match=pattern):
        parse(decls)


def test_missing_file_names_absolute_path(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    with pytest.raises(PatchlangError) as err:
        parse_vnnlib("props/p.vnnlib")
    assert str(tmp_path / "props" / "p.vnnlib") in err.value.message and err.value.help


def test_errors_in_files_name_the_file(tmp_path: Path) -> None:
    path = tmp_path / "bad.vnnlib"
    path.write_text(declare(1, 1) + "(assert (<= X_0 1))\n(assert (<= X_0 Y_0))\n")
    with pytest.raises(PatchlangError, match=rf"^{re.escape(str(path))}:4:10: .*mix inputs"):
        parse_vnnlib(path)


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.text(alphabet="()XY_0123 .<=>-+*/;\nandorseticlr", max_size=80))
def test_garbage_never_crashes(text: str) -> None:
    """Any input either parses or gives a PatchlangError: never a raw lark or Python exception."""
    try:
        parse(declare(2, 2) + text)
    except PatchlangError:
        pass


# ============================================================================ writing


def test_write_and_read_back(tmp_path: Path) -> None:
    prop = VnnlibProperty(2, 3, [
        VnnlibCase(np.array([0.0, -1.0]), np.array([1.0, 1e-3]), [[LinearAtom({0: 1.0, 2: -1.0}, "<=", 0.0)],
                                                                  [LinearAtom({1: 2.5, 2: -0.5}, ">=", -7.25)]]),
        VnnlibCase(np.array([2.0, 2.0]), np.array([3.0, 2.0]), [[LinearAtom({1: -3.0}, "<=", 1e-300)]]),
    ])
    path = write_vnnlib(prop, tmp_path / "out" / "p.vnnlib")
    assert parse_vnnlib(path) == prop


def test_gzipped_file(tmp_path: Path) -> None:
    text = declare(1, 1) + BOX + "(assert (<= Y_0 2))"
    (tmp_path / "p.vnnlib.gz").write_bytes(gzip.compress(text.encode()))
    assert parse_vnnlib(tmp_path / "p.vnnlib.gz") == parse(text)
    (tmp_path / "bad.vnnlib.gz").write_bytes(gzip.compress(text.encode())[:-6])
    with pytest.raises(PatchlangError, match="cannot read VNN-LIB file"):
        parse_vnnlib(tmp_path / "bad.vnnlib.gz")


def test_write_rejects_bad_properties() -> None:
    with pytest.raises(PatchlangError, match="finite"):
        format_vnnlib(VnnlibProperty(1, 1, [VnnlibCase(np.array([-np.inf]), np.array([0.0]), [[]])]))
    with pytest.raises(PatchlangError, match="without input regions"):
        format_vnnlib(VnnlibProperty(1, 1, []))
    with pytest.raises(PatchlangError, match="2 values but the property has 1 inputs"):
        format_vnnlib(VnnlibProperty(1, 1, [VnnlibCase(np.zeros(2), np.ones(2), [[]])]))


finite = st.floats(min_value=-1e6, max_value=1e6, allow_nan=False, allow_infinity=False)
nonzero = finite.filter(lambda c: c != 0.0)


@st.composite
def atoms(draw: st.DrawFn, n_out: int) -> LinearAtom:
    outputs = draw(st.lists(st.integers(0, n_out - 1), min_size=1, max_size=n_out, unique=True))
    coeffs = {j: draw(nonzero | st.sampled_from([1.0, -1.0])) for j in outputs}
    rhs = draw(finite | st.just(0.0))
    return LinearAtom(coeffs, draw(st.sampled_from(["<=", ">="])), rhs)


@st.composite
def properties(draw: st.DrawFn) -> VnnlibProperty:
    n_in, n_out = draw(st.integers(1, 4)), draw(st.integers(1, 4))
    boxes = draw(st.lists(st.tuples(st.lists(finite, min_size=n_in, max_size=n_in),
                                    st.lists(st.floats(0, 10), min_size=n_in, max_size=n_in)),
                          min_size=1, max_size=3))
    cases = []
    for lo, width in boxes:
        lo = np.array(lo, dtype=np.float64) + 0.0
        hi = lo + np.array(width)
        conjunction = st.lists(atoms(n_out), min_size=1, max_size=3)
        unsafe = draw(st.just([[]]) | st.lists(conjunction, min_size=1, max_size=3))
        cases.append(VnnlibCase(lo, hi, unsafe))
    # reading merges cases with the same box, so a faithful round trip needs distinct boxes
    assume(len({(c.lo.tobytes(), c.hi.tobytes()) for c in cases}) == len(cases))
    return VnnlibProperty(n_in, n_out, cases)


@settings(max_examples=200, deadline=None)
@given(properties())
def test_roundtrip_random_properties(prop: VnnlibProperty) -> None:
    assert roundtrip(prop) == prop


# ============================================================================ shared benchmarks


@pytest.mark.shared
@pytest.mark.parametrize("path", shared_vnnlib_files())
def test_shared_file_parses_and_round_trips(path: Path) -> None:
    prop = parse_vnnlib(path)
    expected = {"acasxu": (5, 5), "mnist_fc": (784, 10), "cifar10": (3072, 10)}[path.parent.parent.name]
    assert (prop.n_inputs, prop.n_outputs) == expected
    for lo, hi in prop.input_boxes:
        assert np.all(np.isfinite(lo)) and np.all(np.isfinite(hi)) and np.all(lo <= hi)
    assert roundtrip(prop) == prop


@pytest.mark.shared
def test_acasxu_prop_1_is_one_atom_on_y0() -> None:
    prop = parse_vnnlib(shared_file("acasxu", "vnnlib", "prop_1.vnnlib"))
    (case,) = prop.cases
    assert case.unsafe == [[LinearAtom({0: 1.0}, ">=", 3.991125645861615)]]
    assert case.lo.tolist() == [0.6, -0.5, -0.5, 0.45, -0.5]
    assert case.hi.tolist() == [0.679857769, 0.5, 0.5, 0.5, -0.45]


@pytest.mark.shared
def test_acasxu_prop_2_is_one_conjunction() -> None:
    (case,) = parse_vnnlib(shared_file("acasxu", "vnnlib", "prop_2.vnnlib")).cases
    assert case.unsafe == [[LinearAtom({j: 1.0, 0: -1.0}, "<=", 0.0) for j in range(1, 5)]]


@pytest.mark.shared
def test_acasxu_prop_6_has_two_boxes() -> None:
    prop = parse_vnnlib(shared_file("acasxu", "vnnlib", "prop_6.vnnlib"))
    assert len(prop.input_boxes) == 2
    assert prop.cases[0].lo[1] == 0.11140846 and prop.cases[1].hi[1] == -0.11140846
    for case in prop.cases:
        assert case.unsafe == [[LinearAtom({j: 1.0, 0: -1.0}, "<=", 0.0)] for j in range(1, 5)]


@pytest.mark.shared
@pytest.mark.parametrize("n, disjuncts", [(5, 4), (7, 2), (8, 3), (9, 4), (10, 4)])
def test_acasxu_disjunctive_outputs(n: int, disjuncts: int) -> None:
    (case,) = parse_vnnlib(shared_file("acasxu", "vnnlib", f"prop_{n}.vnnlib")).cases
    assert len(case.unsafe) == disjuncts


@pytest.mark.shared
def test_mnist_robustness_property() -> None:
    path = shared_file("mnist_fc", "vnnlib", "prop_0_0.03.vnnlib")
    (case,) = parse_vnnlib(path).cases
    label = int(path.read_text().split("label: ")[1].split(".")[0])
    others = [j for j in range(10) if j != label]
    assert case.unsafe == [[LinearAtom({j: 1.0, label: -1.0}, ">=", 0.0)] for j in others]
    assert np.all(case.lo >= 0.0) and np.all(case.hi <= 1.0) and np.all(case.hi - case.lo <= 0.06 + 1e-6)
