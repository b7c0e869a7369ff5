"""Per-point output constraints in one normal form, and the constructors for every goal the language has.

Why one form: keep, change-to, runner-up, one-of, away-from-label, keep-within and arbitrary CNF requirements
all become, per point, a list of *clauses*; a clause is a list of *alternatives* (at least one must hold); an
alternative is ``lo <= C @ y <= hi`` for a small matrix ``C`` over the network outputs ``y``.  A clause with one
alternative is plain linear rows (LP); more than one needs a disjunction (MILP or SMT).  The lowering in
:mod:`patchlang.compile.patch` then has exactly one code path for all of them.
"""

from __future__ import annotations

import functools
from dataclasses import dataclass, field

import numpy as np

from ..errors import Span
from ..model.ir import Network


@dataclass
class Alternative:
    C: np.ndarray  # (r, n_outputs)
    lo: np.ndarray  # (r,)
    hi: np.ndarray  # (r,)


Clause = list[Alternative]


@dataclass
class PointGoal:
    """Constraints on the outputs of the network at one input point."""

    point: str  # e.g. "wm[3]"
    h: np.ndarray  # flat suffix input of the point (float64)
    clauses: list[Clause]


@dataclass
class GoalGroup:
    """All points of one statement (``keep clean``), for labelling rows and reporting."""

    label: str
    group: str  # keep | change | require | property
    span: Span | None
    points: list[PointGoal] = field(default_factory=list)
    # None: the clauses are over the network's outputs; a position in ``net.layers``: over the outputs of that
    # (affine) layer, i.e. hidden pre-activations (NNrepair's activation-pattern oracle: "neuron j >= margin")
    at: int | None = None

    @property
    def is_disjunctive(self) -> bool:
        return any(len(clause) > 1 for p in self.points for clause in p.clauses)


def group_values(net: Network, group: GoalGroup, H: np.ndarray) -> np.ndarray:
    """What the clauses of ``group`` constrain, at suffix inputs ``H`` (rows): the outputs, or the pre-activations
    of layer position ``group.at``; the one place every check evaluates a group."""
    return net.forward_suffix(H, 0, None if group.at is None else group.at + 1)


def sign_rows(neurons: np.ndarray, signs: np.ndarray, lo: np.ndarray, n_units: int) -> Alternative:
    """``signs[i] * z[neurons[i]] >= lo[i]`` for a vector ``z`` of ``n_units`` hidden pre-activations."""
    C = np.zeros((len(neurons), n_units))
    C[np.arange(len(neurons)), neurons] = signs
    return Alternative(C, np.asarray(lo, dtype=np.float64), np.full(len(neurons), np.inf))


def _extreme(decision: str) -> str:
    """The output a decision picks: the maximum for argmax classifiers, the minimum for argmin advisories."""
    return "min" if decision == "argmin" else "max"


def label_alternative(label: int, n_out: int, margin: float, decision: str) -> Alternative:
    """Rows saying the decision is ``label`` with a margin over every other output."""
    return extreme_is(label, _extreme(decision), n_out, margin)[0]


def label_is(label: int, n_out: int, margin: float, decision: str) -> Clause:
    return [label_alternative(label, n_out, margin, decision)]


def label_one_of(labels: list[int], n_out: int, margin: float, decision: str) -> Clause:
    return [label_alternative(t, n_out, margin, decision) for t in labels]


def label_not(label: int, n_out: int, margin: float, decision: str) -> Clause:
    """Any decision but ``label``: some other output beats it by the margin (one row per alternative)."""
    return extreme_is_not(label, _extreme(decision), n_out, margin)


def outputs_within(ref: np.ndarray, tol: float) -> Clause:
    n = ref.size
    return [Alternative(np.eye(n), ref - tol, ref + tol)]


def linear_atom(coeffs: np.ndarray, op: str, rhs: float, margin: float) -> Alternative:
    """``coeffs @ y  op  rhs``; strict comparisons get the margin so that float32 really satisfies them."""
    C = np.asarray(coeffs, dtype=np.float64).reshape(1, -1)
    if op == "<=":
        return Alternative(C, np.array([-np.inf]), np.array([rhs]))
    if op == "<":
        return Alternative(C, np.array([-np.inf]), np.array([rhs - margin]))
    if op == ">=":
        return Alternative(C, np.array([rhs]), np.array([np.inf]))
    if op == ">":
        return Alternative(C, np.array([rhs + margin]), np.array([np.inf]))
    if op == "==":
        return Alternative(C, np.array([rhs]), np.array([rhs]))
    raise ValueError(f"unsupported comparison {op!r}")


def extreme_is(index: int, which: str, n_out: int, margin: float) -> Clause:
    """``y[index]`` is the strict minimum / maximum: one conjunction."""
    return [Alternative(*_extreme_rows(index, which, n_out, float(margin)))]


@functools.lru_cache(maxsize=4096)
def _extreme_rows(index: int, which: str, n_out: int, margin: float) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """The rows of :func:`extreme_is`, built once per label and margin and shared by every point that needs them
    (a `keep` of thousands of points asks for the same ten); read-only, so sharing them is safe."""
    others = [j for j in range(n_out) if j != index]
    s = 1.0 if which == "max" else -1.0
    C = np.zeros((len(others), n_out))
    C[np.arange(len(others)), index] = s
    C[np.arange(len(others)), others] = -s
    rows = (C, np.full(len(others), margin), np.full(len(others), np.inf))
    for a in rows:
        a.setflags(write=False)
    return rows


def extreme_is_not(index: int, which: str, n_out: int, margin: float) -> Clause:
    """``y[index]`` is not the minimum / maximum: some other output is strictly below / above it."""
    s = 1.0 if which == "max" else -1.0
    clause = []
    for j in range(n_out):
        if j == index:
            continue
        C = np.zeros((1, n_out))
        C[0, j], C[0, index] = s, -s
        clause.append(Alternative(C, np.array([margin]), np.array([np.inf])))
    return clause


def clause_satisfied(clause: Clause, y: np.ndarray, tol: float = 0.0) -> bool:
    return any(np.all(alt.C @ y >= alt.lo - tol) and np.all(alt.C @ y <= alt.hi + tol) for alt in clause)


def clause_slack(clause: Clause, y: np.ndarray) -> float:
    """How well the best alternative holds: >= 0 iff satisfied (ignoring the margin built into lo/hi)."""
    best = -np.inf
    for alt in clause:
        v = alt.C @ y
        slack = np.minimum(v - alt.lo, alt.hi - v)
        best = max(best, float(np.min(slack)) if slack.size else np.inf)
    return best


def slacks(group: GoalGroup, outputs: np.ndarray) -> np.ndarray:
    """Per point of ``group``: the smallest slack of its clauses at its row of ``outputs`` (>= 0 iff it holds).
    Points of one clause of one alternative of one shape (`keep`, `to label`: the common case, checked for every
    patch on up to thousands of points) are evaluated at once."""
    alts = [p.clauses[0][0] for p in group.points if len(p.clauses) == 1 and len(p.clauses[0]) == 1]
    if alts and len(alts) == len(group.points) and len({a.C.shape for a in alts}) == 1 and alts[0].C.shape[0]:
        v = np.einsum("prk,pk->pr", np.stack([a.C for a in alts]), outputs[:len(alts)])
        return np.min(np.minimum(v - np.stack([a.lo for a in alts]), np.stack([a.hi for a in alts]) - v), axis=1)
    out = np.full(len(group.points), np.inf)
    for i, pg in enumerate(group.points):
        for clause in pg.clauses:
            out[i] = min(out[i], clause_slack(clause, outputs[i]))
    return out
