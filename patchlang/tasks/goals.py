"""Turn checked goal statements into per-point clauses on a concrete network (labels, runner-ups, CNFs)."""

from __future__ import annotations

import numpy as np

from ..compile import goals as G
from ..lang import ast as A
from ..lang.program import GoalSpec
from ..model.ir import Network, decide


def cnf_clauses(cnf: A.OutputCNF, n_out: int, margin: float, decision: str, own_label: int | None
                ) -> list[G.Clause]:
    """An output CNF from the language as clauses; ``own_label`` resolves `label stays`."""
    clauses: list[G.Clause] = []
    for clause in cnf.clauses:
        alts: G.Clause = []
        for atom in clause:
            alts.extend(atom_alternatives(atom, n_out, margin, decision, own_label))
        clauses.append(alts)
    return clauses


def atom_alternatives(atom: A.OutputAtom, n_out: int, margin: float, decision: str, own_label: int | None
                      ) -> G.Clause:
    if isinstance(atom, A.AtomCompare):
        coeffs = np.zeros(n_out)
        for i, c in atom.lhs.terms:
            coeffs[i] += c
        for i, c in atom.rhs.terms:
            coeffs[i] -= c
        rhs = atom.rhs.const - atom.lhs.const
        return [G.linear_atom(coeffs, atom.op, rhs, margin)]
    if isinstance(atom, A.AtomExtreme):
        if atom.negated:
            return G.extreme_is_not(atom.index, atom.which, n_out, margin)
        return G.extreme_is(atom.index, atom.which, n_out, margin)
    if isinstance(atom, A.AtomLabelIs):
        if atom.negated:
            return G.label_not(atom.label, n_out, margin, decision)
        return G.label_is(atom.label, n_out, margin, decision)
    if isinstance(atom, A.AtomLabelStays):
        if own_label is None:
            raise ValueError("`label stays` needs a point with a label")
        return G.label_is(own_label, n_out, margin, decision)
    raise TypeError(f"unknown atom {atom!r}")


def runner_up(outputs: np.ndarray, decision: str) -> np.ndarray:
    """The second choice of each row of outputs."""
    order = np.argsort(outputs, axis=1, kind="stable")
    return order[:, 1] if decision == "argmin" else order[:, -2]


def goal_group(net: Network, spec: GoalSpec, margin: float, *, suffix_inputs: np.ndarray | None = None,
               override_labels: dict[int, int] | None = None) -> G.GoalGroup:
    """Per-point clauses for one statement.  ``override_labels`` pins a point (by position) to a label,
    used when a single `away from label` point is solved as one LP per candidate label."""
    h = net.to_suffix_input(spec.points.x) if suffix_inputs is None else suffix_inputs
    if spec.layer is not None:
        return pattern_group(net, spec, margin, h)
    y = net.forward_suffix(h)
    pred = np.asarray(np.argmin(y, 1) if net.decision == "argmin" else np.argmax(y, 1))
    n_out = net.output_size
    own = spec.points.y if spec.points.y is not None else pred
    group = G.GoalGroup(spec.text, spec.group, spec.span)
    second = runner_up(y, net.decision) if spec.kind == "runner_up" else None
    for i in range(len(spec.points)):
        name = spec.points.describe(i)
        if override_labels and i in override_labels:
            clauses = [G.label_is(override_labels[i], n_out, margin, net.decision)]
        elif spec.kind == "keep":
            clauses = [G.label_is(int(pred[i]), n_out, margin, net.decision)]
        elif spec.kind == "keep_within":
            clauses = [G.outputs_within(y[i], float(spec.tolerance or 0.0))]
        elif spec.kind == "to":
            clauses = [G.label_is(spec.labels[0], n_out, margin, net.decision)]
        elif spec.kind == "to_own":
            clauses = [G.label_is(int(own[i]), n_out, margin, net.decision)]
        elif spec.kind == "one_of":
            clauses = [G.label_one_of(list(spec.labels), n_out, margin, net.decision)]
        elif spec.kind == "runner_up":
            assert second is not None
            clauses = [G.label_is(int(second[i]), n_out, margin, net.decision)]
        elif spec.kind == "away":
            clauses = [G.label_not(int(own[i]), n_out, margin, net.decision)]
        elif spec.kind == "require":
            assert spec.cnf is not None
            # `label stays` means the label the unpatched network gives, as for `keep`
            clauses = cnf_clauses(spec.cnf, n_out, margin, net.decision, int(pred[i]))
        else:  # pragma: no cover
            raise ValueError(spec.kind)
        group.points.append(G.PointGoal(name, h[i], clauses))
    return group


def pattern_group(net: Network, spec: GoalSpec, margin: float, h: np.ndarray) -> G.GoalGroup:
    """`pattern`: every point takes the pattern (on: pre-activation >= margin, off: <= -margin); `keep_pattern`:
    every point that takes its own class's pattern (``spec.pattern``: class -> pattern; the class is the point's
    label, else the network's decision) keeps it at the neurons ``spec.neurons`` can move (by the margin, or by
    its own distance from 0 if smaller: a state is kept, never strengthened)."""
    pos = net.affine_indices()[spec.layer]
    z = net.forward_suffix(h, 0, pos + 1)
    n_units = z.shape[1]
    group = G.GoalGroup(spec.text, "change" if spec.kind == "pattern" else "keep", spec.span, at=pos)
    patterns = spec.pattern if spec.kind == "keep_pattern" else {}
    labels = spec.points.y if spec.points.y is not None else decide(net.forward_suffix(h), net.decision)
    for i in range(len(spec.points)):
        if spec.kind == "pattern":
            p = spec.pattern
            signs = np.where(p.states, 1.0, -1.0)
            alt = G.sign_rows(p.neurons, signs, np.full(len(p.neurons), margin), n_units)
        else:
            own = patterns.get(int(labels[i]))
            if own is None or not own.follows(z[i])[0]:
                group.points.append(G.PointGoal(spec.points.describe(i), h[i], []))  # no pattern to keep
                continue
            neurons = np.intersect1d(own.neurons, np.asarray(spec.neurons, dtype=int))
            signs = np.where(z[i, neurons] > 0, 1.0, -1.0)
            alt = G.sign_rows(neurons, signs, np.minimum(margin, signs * z[i, neurons]), n_units)
        group.points.append(G.PointGoal(spec.points.describe(i), h[i], [[alt]] if len(alt.lo) else []))
    return group


def has_strict(spec: GoalSpec) -> bool:
    """Whether a statement has strict inequalities, the ones the margin applies to: label goals, `<`, `>`,
    `is max`/`is min` (not `<=`, `>=`, `==` or `outputs within`)."""
    if spec.kind == "keep_within":
        return False
    if spec.kind != "require" or spec.cnf is None:
        return True
    return any(not (isinstance(atom, A.AtomCompare) and atom.op in ("<=", ">=", "=="))
               for clause in spec.cnf.clauses for atom in clause)
