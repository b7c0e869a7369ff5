"""Fixing the ReLU phases of some points only (the `keep` points) leaves a smaller MILP that is still a
restriction of the patch problem: every answer of it is a genuine patch (plan/fixed_phase_bound.py uses it for a
bound and a warm start when fully fixed phases admit no patch)."""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np

from patchlang.compile.fixed_phase import fixed_phase_query, propagate, relus_of_groups, violation
from patchlang.compile.patch import encode_patch
from patchlang.solvers.base import FEASIBLE, OPTIMAL, SolveOptions
from patchlang.solvers.highs import HighsBackend
from patchlang.tasks.patch import build_groups

sys.path.insert(0, str(Path(__file__).parent))
from test_lp_paths import make_case, program  # noqa: E402


def test_keep_phases_fixed_is_a_restriction(tmp_path: Path) -> None:
    folder = make_case(8, tmp_path)
    task = program(folder, "edit layers 0, 1 biases\nchange x[0] to runner-up\nkeep x[10:20]\nminimize linf\n"
                           "margin 0.01\nbound linf <= 3").tasks[0]
    net = task.model.net
    enc = encode_patch(net, task.edits, build_groups(net, task.goals, task.margin), task.norms)
    q = enc.query
    keep = relus_of_groups(q, {"keep"})
    change = relus_of_groups(q, {"change"})
    assert keep.any() and change.any() and not (keep & change).any()  # each point owns its ReLU copies
    assert (keep | change).all()
    x0 = propagate(q, enc.layout, np.zeros(q.n_vars))
    part = fixed_phase_query(q, x0, only=keep)
    assert len(part.relus) == int(np.count_nonzero(~keep)) and part.problem_class == "MILP"
    sol = HighsBackend().solve(part, SolveOptions())
    assert sol.status in (OPTIMAL, FEASIBLE)
    assert violation(q, sol.x) < 1e-6  # feasible for the whole problem
    full = HighsBackend().solve(q, SolveOptions())
    assert full.objective < sol.objective  # a restriction (here a strict one): never below the optimum


def test_timeout_without_patch_falls_back_to_the_checked_warm_start() -> None:
    """A MILP stopped before reporting any patch still has its warm start (a checked fixed-phase LP patch): it
    becomes the incumbent with the solver's bound, so the report gives a distance and a gap, not nothing."""
    from patchlang.solvers.base import INFEASIBLE, TIMEOUT, Solution
    from patchlang.plan.fixed_phase_bound import with_start_incumbent

    start = np.array([0.5, -0.25])
    opts = SolveOptions(start=start)
    got = with_start_incumbent(Solution(TIMEOUT, bound=1.0), opts, 2.0)
    assert got.status == FEASIBLE and got.objective == 2.0 and got.bound == 1.0 and got.gap == 0.5
    assert np.array_equal(got.x, start)
    for unchanged in (Solution(INFEASIBLE), Solution(TIMEOUT, bound=1.0)):
        assert with_start_incumbent(unchanged, SolveOptions(), 2.0) is unchanged  # no start: nothing to offer
    assert with_start_incumbent(Solution(INFEASIBLE), opts, 2.0).status == INFEASIBLE
