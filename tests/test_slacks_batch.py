"""compile.goals.slacks evaluates uniform groups (one clause of one alternative per point) at once: the same
values as the point-by-point definition (clause_slack), on uniform and on mixed groups."""

from __future__ import annotations

import numpy as np
import pytest

from patchlang.compile import goals as G


@pytest.mark.parametrize("kind", ["keep", "away", "mixed"])
def test_batched_slacks_equal_the_point_by_point_definition(kind: str) -> None:
    rng = np.random.default_rng(7)
    n, n_out = 300, 10
    points = []
    for i in range(n):
        label = int(rng.integers(n_out))
        away = kind == "away" or (kind == "mixed" and i % 7 == 0)
        clause = G.label_not(label, n_out, 0.1, "argmax") if away else G.label_is(label, n_out, 0.1, "argmin")
        points.append(G.PointGoal(f"p{i}", np.zeros(2), [clause]))
    group = G.GoalGroup("g", "keep", None, points)
    y = rng.normal(size=(n, n_out)) * 1e3
    reference = np.array([min(G.clause_slack(c, y[i]) for c in p.clauses) for i, p in enumerate(points)])
    got = G.slacks(group, y)
    assert np.allclose(got, reference, rtol=1e-12, atol=1e-9)
    assert np.array_equal(got >= 0, reference >= 0)
