"""Unit tests of the MILP machinery: lowering (fewest binaries, ordering rows, L1 split, warm starts), bound
propagation (rebound, L1-budget intervals), fixed-phase propagation and the L∞ bisection.  Each compares against
an independent computation (the network itself, random samples, or the plain problem's optimum)."""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
import pytest
import scipy.sparse as sp

from patchlang.api import load_program, load_program_text
from patchlang.compile.bounds_tighten import norm_interval, rebound
from patchlang.compile.fixed_phase import propagate, violation
from patchlang.compile.patch import encode_patch
from patchlang.query import QueryBuilder
from patchlang.solvers import milp as M
from patchlang.solvers.base import OPTIMAL, SolveOptions
from patchlang.solvers.highs import HighsBackend
from patchlang.model.edits import NormSpec
from patchlang.plan import bisection as B
from patchlang.plan import encode as E
from patchlang.plan.budget import Budget
from patchlang.plan.chain import Planner
from patchlang.plan.checks import goals_hold
from patchlang.plan.fixed_phase_bound import FixedPhaseBound
from patchlang.plan.reduction import PatchProblem
from patchlang.tasks.patch import RunOptions, build_groups, solve_options

sys.path.insert(0, str(Path(__file__).parent))
from test_milp_differential import random_case  # noqa: E402

EXAMPLE = Path(__file__).resolve().parents[1] / "examples" / "bias_patch" / "bias_patch.patch"
OPTS = SolveOptions(mip_gap=1e-9, seed=0)


@pytest.fixture(scope="module")
def bias():
    """The bias-patching example: task, network, goal groups and its plain encoding (user bound 0.25)."""
    task = load_program(EXAMPLE).tasks[0]
    net = task.model.net
    groups = build_groups(net, task.goals, task.margin)
    return task, net, groups, encode_patch(net, task.edits, groups, task.norms)


def case(seed: int, tmp: Path):
    task = load_program_text(random_case(seed, tmp), tmp, filename=str(tmp / "c.patch")).tasks[0]
    net = task.model.net
    groups = build_groups(net, task.goals, task.margin)
    return task, net, groups, encode_patch(net, task.edits, groups, task.norms)


def test_propagate_matches_the_network(bias) -> None:
    """Every output-feeding variable propagated at random deltas equals the patched network's own forward pass."""
    task, net, groups, enc = bias
    rng = np.random.default_rng(0)
    x = np.zeros(enc.query.n_vars)
    for idx in enc.layout.var_index:
        x[idx] = rng.uniform(-0.2, 0.2, idx.size)
    full = propagate(enc.query, enc.layout, x)
    assert full is not None
    patched = enc.layout.apply(net, x)
    # the rows of a keep point hold at the propagated values exactly when they hold on the patched network
    for rb in enc.query.row_blocks:
        if rb.group == "network":
            ax = enc.query.A[rb.slice] @ full
            assert np.allclose(ax, enc.query.row_lo[rb.slice], atol=1e-9)
    y_net = patched.forward_suffix(np.stack([p.h for p in groups[0].points]))
    y_enc = []
    for p in groups[0].points:  # outputs via the goal rows' expression are covered by goals_hold
        y_enc.append(patched.forward_suffix(p.h[None])[0])
    assert np.allclose(y_net, np.array(y_enc))


def test_lift_start_is_feasible_for_the_lowered_model(bias) -> None:
    task, net, groups, _ = bias
    plan = Planner("highs").prepare(net, task, groups, solve_options(task, RunOptions()))
    assert plan.options.start is not None
    m = M.lower_to_milp(plan.enc.query)
    full = M.lift_start(plan.enc.query, m, plan.options.start)
    ax = m.A @ full
    assert np.all(ax >= m.row_lo - 1e-7) and np.all(ax <= m.row_hi + 1e-7)
    assert np.all(full >= m.lb - 1e-9) and np.all(full <= m.ub + 1e-9)


def test_ordering_rows_exist_and_keep_the_optimum(bias, monkeypatch: pytest.MonkeyPatch) -> None:
    """Bias edits: every point's copy of a hidden neuron is `delta + const`, so the phases are ordered."""
    _, _, _, enc = bias
    q = enc.query
    rows = M.relu_order_rows(q, np.arange(q.n_vars, q.n_vars + len(q.relus)), q.n_vars + len(q.relus))
    assert rows is not None and rows.shape[0] > 0
    with_rows = HighsBackend().solve(q, OPTS)
    monkeypatch.setattr(M, "relu_order_rows", lambda *a: None)
    without = HighsBackend().solve(q, OPTS)
    assert with_rows.status == without.status == OPTIMAL
    assert with_rows.objective == pytest.approx(without.objective, rel=1e-7)


def _disjunction_query(alternatives: list[tuple[float, float]]):
    """x in [0, 1]; a disjunction of alternatives `lo <= x <= hi`."""
    b = QueryBuilder("d")
    x = b.add_vars(1, 0.0, 1.0)
    k = len(alternatives)
    b.add_disjunction(sp.csr_matrix(np.ones((k, 1))), np.array([a for a, _ in alternatives]),
                      np.array([h for _, h in alternatives]), np.arange(k), label="d", group="require")
    b.add_objective(x, 1.0)
    return b.build()


@pytest.mark.parametrize("alts,binaries,optimum", [
    ([(2.0, 3.0), (0.5, 0.7)], 0, 0.5),  # the first cannot hold in [0, 1]: plain rows
    ([(0.2, 0.4), (0.5, 0.7)], 1, 0.2),  # two alternatives share one binary
    ([(0.6, 0.7), (0.3, 0.4), (0.8, 0.9)], 3, 0.3),
    ([(-1.0, 2.0), (0.5, 0.7)], 0, 0.0),  # the first always holds: nothing to encode
    ([(2.0, 3.0), (-3.0, -2.0)], 0, None),  # none can hold: infeasible
])
def test_disjunctions_get_the_fewest_binaries(alts, binaries: int, optimum) -> None:
    q = _disjunction_query(alts)
    m = M.lower_to_milp(q)
    assert int(np.count_nonzero(m.integer)) == binaries
    sol = HighsBackend().solve(q, OPTS)
    if optimum is None:
        assert sol.status == "infeasible"
    else:
        assert sol.objective == pytest.approx(optimum, abs=1e-9)


@pytest.mark.parametrize("seed", [5, 6, 7, 8, 9, 30, 31, 32, 33, 34])
def test_l1_split_keeps_the_optimum(seed: int, tmp_path: Path) -> None:
    *_, enc = case(seed, tmp_path)
    m = M.lower_to_milp(enc.query)
    split = M.split_abs(m, min_pairs=1)
    if split is None:
        pytest.skip("no L1 pairs in this case")
    is_mip = bool(np.any(m.integer))
    a = HighsBackend().solve_linear(m, OPTS, is_mip)
    b = HighsBackend().solve_linear(split.model, OPTS, is_mip)
    assert a.status == b.status
    if a.status == OPTIMAL:
        assert b.objective == pytest.approx(a.objective, rel=1e-7, abs=1e-9)
        x = split.to_old(b.x)
        ax = m.A @ x
        assert np.all(ax >= m.row_lo - 1e-6) and np.all(ax <= m.row_hi + 1e-6)


def test_norm_interval_is_sound() -> None:
    """Random rows over deltas in a box with an L1 budget: sampled values never leave the computed bounds, and
    the budget makes them tighter than plain intervals."""
    rng = np.random.default_rng(3)
    n, r, L, B = 60, 8, 0.5, 0.7
    E = sp.csr_matrix(rng.normal(size=(r, n)))
    c = rng.normal(size=r)
    lb, ub = np.full(n, -L), np.full(n, L)
    lo, hi = norm_interval(E, c, lb, ub, np.ones(n, dtype=bool), B)
    for _ in range(2000):
        d = rng.uniform(-L, L, n) * (rng.random(n) < 0.1)
        if np.abs(d).sum() > B:
            d *= B / np.abs(d).sum()
        v = E @ d + c
        assert np.all(v >= lo - 1e-12) and np.all(v <= hi + 1e-12)
    plain = norm_interval(E, c, lb, ub, np.ones(n, dtype=bool), np.inf)
    assert np.all(hi - lo < plain[1] - plain[0])


def test_rebound_equals_encoding_with_the_bound(bias) -> None:
    """Restricting the encoding to a smaller bound gives the optimum of encoding with that bound, with fewer
    (or as many) ReLU atoms and every variable's bounds inside the old ones."""
    task, net, groups, enc = bias
    small = 0.06
    q = rebound(enc.query, enc.layout, small)
    fresh = encode_patch(net, task.edits, groups, NormSpec(objective=task.norms.objective,
                                                             bounds={"linf": small}))
    assert len(q.relus) <= len(enc.query.relus)
    assert np.all(q.lb >= enc.query.lb - 1e-12) and np.all(q.ub <= enc.query.ub + 1e-12)
    a, b = HighsBackend().solve(q, OPTS), HighsBackend().solve(fresh.query, OPTS)
    assert a.status == b.status == OPTIMAL
    assert a.objective == pytest.approx(b.objective, rel=1e-7)


def test_fixed_phase_patch_is_a_real_patch(bias) -> None:
    task, net, groups, enc = bias
    found = FixedPhaseBound(HighsBackend()).search(PatchProblem(net, task, groups, OPTS, enc), Budget())
    deltas, value, rounds = found.deltas, found.value, found.rounds
    assert deltas is not None and rounds >= 1
    x = np.zeros(enc.query.n_vars)
    x[np.concatenate(enc.layout.var_index)] = deltas
    assert goals_hold(enc.layout.apply(net, x), groups)
    assert value == pytest.approx(np.max(np.abs(deltas)))
    full = propagate(enc.query, enc.layout, x)
    assert violation(enc.query, full) <= 1e-6


def test_linf_bisection_matches_the_milp(bias, monkeypatch: pytest.MonkeyPatch) -> None:
    task, net, groups, enc = bias
    exact = HighsBackend().solve(enc.query, OPTS).objective
    monkeypatch.setattr(B, "BISECT_MIN_DELTAS", 1)
    problem = PatchProblem(net, task, groups, SolveOptions(mip_gap=1e-7, time_limit=60))
    assert B.bisection_applies(problem)
    solved, _ = B.LinfBisection(HighsBackend()).apply(problem, Budget.seconds(60))  # ends in ~1 s
    sol = solved.solution
    assert sol.status == OPTIMAL
    assert sol.bound <= exact * (1 + 1e-9) and sol.objective >= exact * (1 - 1e-9)
    assert sol.objective == pytest.approx(exact, rel=1e-6)


def test_size_estimate_warns(bias, monkeypatch: pytest.MonkeyPatch) -> None:
    task, net, groups, _ = bias
    nnz, binaries = E.size_estimate(net, task, groups)
    assert binaries >= 11 * 16  # 11 points, 16 hidden ReLUs each
    assert E.huge(net, task, groups) == {}
    monkeypatch.setattr(E, "HUGE_BINARIES", 10)
    assert E.huge(net, task, groups)["huge_binaries"] == binaries


@pytest.mark.parametrize("seed", [49, 53, 58, 67, 72])
def test_obbt_keeps_verdict_and_optimum(seed: int, tmp_path: Path) -> None:
    """LP bound tightening of ReLUs behind other ReLUs (hidden-weight edits of 2-hidden-layer nets): bounds only
    shrink, and the MILP's verdict and optimum do not move."""
    from patchlang.compile.bounds_tighten import deep_relus
    from patchlang.plan.tighten import obbt

    *_, enc = case(seed, tmp_path)
    q = enc.query
    atoms = deep_relus(q, enc.layout)
    assert atoms.size > 0
    t = obbt(HighsBackend(), q, atoms, Budget())
    assert np.all(t.lb >= q.lb - 1e-12) and np.all(t.ub <= q.ub + 1e-12)
    assert np.any(t.ub < q.ub - 1e-9) or np.any(t.lb > q.lb + 1e-9)
    a, b = HighsBackend().solve(q, OPTS), HighsBackend().solve(t, OPTS)
    assert a.status == b.status
    if a.status == OPTIMAL:
        assert b.objective == pytest.approx(a.objective, rel=1e-6, abs=1e-9)
