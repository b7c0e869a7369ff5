"""The satisfaction function: negative exactly where the property is violated (hand-made networks and outputs)."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from patchlang.api import load_program, satisfaction
from patchlang.compile import goals as G
from patchlang.compile.verify import unsafe_from_clauses, unsafe_from_vnnlib
from patchlang.inputs.satisfaction import BOUNDARY, satisfaction_values
from patchlang.inputs.vnnlib import LinearAtom

REPO = Path(__file__).resolve().parents[1]


def _f(clauses, y):
    spec = unsafe_from_clauses(clauses, len(y))
    return float(spec.satisfaction(np.asarray(y, float)[None])[0]), bool(spec.violated(np.asarray(y, float)[None])[0])


def test_linear_atom_slack_and_sign():
    atom = [[G.linear_atom(np.array([1.0, 0.0]), "<=", 1.0, 0.0)]]  # ensure y[0] <= 1
    assert _f(atom, [0.25, 0]) == (0.75, False)
    assert _f(atom, [1.0, 0]) == (0.0, False)  # on the boundary the atom holds: not negative
    assert _f(atom, [1.5, 0]) == (-0.5, True)
    ge = [[G.linear_atom(np.array([0.0, 2.0]), ">=", 1.0, 0.0)]]  # ensure 2 y[1] >= 1
    assert _f(ge, [0, 0.25]) == (-0.5, True)
    assert _f(ge, [0, 0.5]) == (0.0, False)


def test_non_strict_unsafe_row_counts_its_boundary_as_a_violation():
    # VNN-LIB: the asserts describe the unsafe region, here Y_0 >= 1 (so the property is y[0] < 1)
    spec = unsafe_from_vnnlib([[LinearAtom({0: 1.0}, ">=", 1.0)]], 2)
    Y = np.array([[1.0, 0.0], [0.5, 0.0], [2.0, 0.0]])
    f = spec.satisfaction(Y)
    assert f[0] == BOUNDARY and f[0] < 0 and f[1] == 0.5 and f[2] == -1.0
    assert np.array_equal(f < 0, spec.violated(Y))


def test_is_max_is_min_and_labels():
    y = [0.2, 0.5, 0.1]
    assert np.isclose(_f([G.extreme_is(1, "max", 3, 0.0)], y)[0], 0.3)  # y[1] is max, by 0.3
    assert np.isclose(_f([G.extreme_is(0, "max", 3, 0.0)], y)[0], -0.3)  # y[0] is max: violated by 0.3
    assert np.isclose(_f([G.extreme_is(2, "min", 3, 0.0)], y)[0], 0.1)
    assert np.isclose(_f([G.extreme_is_not(2, "min", 3, 0.0)], y)[0], -0.1)  # y[2] is not min: violated
    assert np.isclose(_f([G.label_is(2, 3, 0.0, "argmin")], y)[0], 0.1)  # ACAS-style advisory: argmin
    assert np.isclose(_f([G.label_not(1, 3, 0.0, "argmax")], y)[0], -0.3)


def test_min_over_clauses_of_max_over_atoms_matches_the_cnf():
    n = 4
    clauses = [[G.linear_atom(np.eye(n)[0], ">=", 0.5, 0.0), G.linear_atom(np.eye(n)[1], "<=", -0.5, 0.0)],
               G.label_not(3, n, 0.0, "argmax"),
               [G.linear_atom(np.array([1.0, 0, -1.0, 0]), "<=", 0.3, 0.0)]]
    spec = unsafe_from_clauses(clauses, n)
    Y = np.random.default_rng(2).standard_normal((4000, n))
    holds = np.array([all(G.clause_satisfied(c, y) for c in clauses) for y in Y])
    f = spec.satisfaction(Y)
    assert np.array_equal(f < 0, ~holds) and 0 < holds.sum() < len(Y)
    expected = np.min([[max(G.clause_slack([alt], y) for alt in c) for c in clauses] for y in Y], axis=1)
    assert np.allclose(f, expected)


def test_empty_cases():
    v = np.zeros((3, 0))
    assert np.all(satisfaction_values(v, np.zeros(0, int), np.zeros(0, bool), 0) == np.inf)  # nothing unsafe
    assert np.all(satisfaction_values(v, np.zeros(0, int), np.zeros(0, bool), 1) == -np.inf)  # all unsafe
    nan = satisfaction_values(np.array([[np.nan]]), np.zeros(1, int), np.zeros(1, bool), 1)
    assert nan[0] == np.inf  # a NaN output is never a counterexample


def test_property_satisfaction_on_the_examples_network():
    program = load_program(REPO / "examples" / "verify" / "verify.patch")
    net = program.models["net"].net
    prop = program.properties["never_two"]  # box [0.5,1] x [-1,-0.5], ensure label is not 2
    X = np.random.default_rng(0).uniform([0.5, -1], [1, -0.5], (3000, 2))
    f = satisfaction(prop, net, X)
    assert np.array_equal(f < 0, net.labels(X) == 2) and np.any(f < 0) and np.any(f > 0)
    assert satisfaction(prop, net, np.array([[0.0, 0.0]]))[0] == np.inf  # outside the region
