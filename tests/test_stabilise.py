"""Stabilisation (issue 12): hidden ReLUs proven stable by small branch-and-bound searches before the real one.
The new bounds contain the pre-activations of dense samples, are never looser than the ones they start from, do
stabilise falsely unstable ReLUs, and branch and bound on stabilised roots agrees with one plain MILP."""

from __future__ import annotations

import time

import numpy as np
import pytest

from patchlang.compile import goals as G
from patchlang.compile.branch_and_bound import BabOptions, BabStats, relu_split_search, root_bounds
from patchlang.compile.stabilise import StabiliseStats, stabilise
from patchlang.compile.verify import RegionCase, encode_region_query, unsafe_from_clauses
from patchlang.solvers.base import INFEASIBLE, SolveOptions
from patchlang.solvers.highs import HighsBackend

from relu_points import deep_box, pre_activations

SIZES = (6, 16, 16, 16, 3)


def solve(q, time_limit=None):
    return HighsBackend().solve(q, SolveOptions(time_limit=time_limit or 30, threads=1))


def unstable(bounds) -> list[int]:
    return [int(((l < 0) & (u > 0)).sum()) for l, u in zip(bounds.lower, bounds.upper)]


@pytest.mark.parametrize("seed", range(4))
def test_stabilised_bounds_contain_samples_and_are_never_looser(seed):
    net, rn, lo, hi, X = deep_box(seed, SIZES)
    start, _ = root_bounds(rn, lo, hi, steps=5)
    stats = StabiliseStats()
    fine = stabilise(rn, lo, hi, start, solve, BabOptions(batch=8, root_steps=5), time.perf_counter() + 30,
                     per_neuron=0.5, steps=5, stats=stats, halve=2)
    zs, _ = pre_activations(rn, X)
    for k in range(rn.n_hidden):
        assert np.all(fine.lower[k] >= start.lower[k]) and np.all(fine.upper[k] <= start.upper[k])
        assert np.all(zs[k] >= fine.lower[k] - 1e-9) and np.all(zs[k] <= fine.upper[k] + 1e-9)
    assert stats.unstable_before == unstable(start) and stats.unstable_after == unstable(fine)
    assert sum(stats.tried) > 0 and stats.unstable_before[0] == stats.unstable_after[0]  # layer 0 is exact already


def test_stabilise_proves_falsely_unstable_relus_stable_and_halves_loose_bounds():
    """Over the four networks, bounds call ReLUs unstable that no sample makes cross zero; the searches prove
    some of them stable (and none that a sample shows crossing), and halve some bounds of the others."""
    proven = halved = 0
    for seed in range(4):
        net, rn, lo, hi, X = deep_box(seed, SIZES)
        start, _ = root_bounds(rn, lo, hi, steps=5)
        stats = StabiliseStats()
        fine = stabilise(rn, lo, hi, start, solve, BabOptions(batch=8, root_steps=5), time.perf_counter() + 30,
                         per_neuron=0.5, steps=5, stats=stats)
        zs, _ = pre_activations(rn, X)
        for k in range(1, rn.n_hidden):
            crossing = (zs[k].min(axis=0) < 0) & (zs[k].max(axis=0) > 0)
            assert np.all((fine.lower[k][0] < 0) & (fine.upper[k][0] > 0) | ~crossing)
        proven += sum(stats.stabilised)
        halved += sum(stats.halved)
        assert sum(stats.unstable_after) <= sum(stats.unstable_before)
    assert proven > 0 and halved > 0


def test_stabilise_stops_at_its_deadline_with_the_input_bounds():
    net, rn, lo, hi, X = deep_box(5, SIZES)
    start, _ = root_bounds(rn, lo, hi, steps=5)
    fine = stabilise(rn, lo, hi, start, solve, BabOptions(), time.perf_counter() - 1.0)
    for k in range(rn.n_hidden):
        assert np.array_equal(fine.lower[k], start.lower[k]) and np.array_equal(fine.upper[k], start.upper[k])


@pytest.mark.parametrize("seed", range(4))
def test_bab_on_stabilised_roots_agrees_with_plain_milp(seed):
    """Thresholds above and below the sampled maximum: every "holds" must be an infeasible MILP with no sample
    against it, every "violated" a feasible MILP and a real counterexample; the stabilisation ran on each."""
    net, rn, lo, hi, X = deep_box(300 + seed, SIZES)
    Y = rn.forward(X)
    k = seed % 3
    peak = Y[:, k].max()
    for t in (peak + 0.02 * (abs(peak) + 0.1), peak - 0.05 * (abs(peak) + 0.1)):
        spec = unsafe_from_clauses([[G.linear_atom(np.eye(3)[k], "<=", t, 0.0)]], 3)
        milp = solve(encode_region_query(rn, lo[0], hi[0], spec, None).query)
        stats = BabStats()
        res = relu_split_search(rn, RegionCase(lo[0], hi[0], spec), solve,
                                lambda x: bool(spec.violated(rn.forward(x[None]))[0]),
                                BabOptions(milp_unstable=0, batch=8, root_steps=3, stabilise=True, stabilise_after=0.0,
                                           stabilise_share=0.5, deadline=time.perf_counter() + 60), stats)
        # every tree pauses at once: the stabilisation runs unless the root decided
        assert stats.domains == 1 or stats.stabilise is not None and sum(stats.stabilise.tried) > 0
        if res.status == "holds":
            assert milp.status == INFEASIBLE and not np.any(Y[:, k] > t)
        else:
            assert res.status == "violated" and milp.status != INFEASIBLE
            assert rn.forward(res.x[None])[0, k] > t


def test_stabilise_is_off_by_default_and_skipped_where_not_needed():
    spec = unsafe_from_clauses([[G.linear_atom(np.eye(3)[0], "<=", 1e6, 0.0)]], 3)  # refuted at the root
    net, rn, lo, hi, X = deep_box(7, SIZES)
    stats = BabStats()
    relu_split_search(rn, RegionCase(lo[0], hi[0], spec), solve, lambda x: False,
                      BabOptions(deadline=time.perf_counter() + 10), stats)
    assert stats.stabilise is None
    stats = BabStats()
    relu_split_search(rn, RegionCase(lo[0], hi[0], spec), solve, lambda x: False,
                      BabOptions(stabilise=True, deadline=time.perf_counter() + 10), stats)
    assert stats.stabilise is None  # the first short turn decided every part
    net, rn2, lo2, hi2, X = deep_box(7, (6, 10, 10, 3))
    stats = BabStats()
    relu_split_search(rn2, RegionCase(lo2[0], hi2[0], spec), solve, lambda x: False,
                      BabOptions(stabilise=True, deadline=time.perf_counter() + 10), stats)
    assert stats.stabilise is None  # 2 hidden layers: below stabilise_min_hidden


def test_verify_reports_the_unstable_relus_before_and_after_stabilising():
    """Through the verifier (relu-split, a deadline): the stabilisation's counts reach the verdict's statistics
    (the JSON report's details), and the verdict agrees with one plain MILP."""
    from patchlang.tasks.verify import verify_cases

    net, rn, lo, hi, X = deep_box(301, SIZES)
    peak = rn.forward(X)[:, 1].max()
    t = peak + 0.02 * (abs(peak) + 0.1)
    spec = unsafe_from_clauses([[G.linear_atom(np.eye(3)[1], "<=", t, 0.0)]], 3)
    verdict = verify_cases(net, [RegionCase(lo[0], hi[0], spec)], timeout=30, strategy="relu-split",
                           bab=BabOptions(stabilise_after=0.0), falsify=False)
    counts = verdict.stats["unstable relus"]
    assert len(counts["before"]) == 3 and sum(counts["after stabilising"]) <= sum(counts["before"])
    milp = solve(encode_region_query(rn, lo[0], hi[0], spec, None).query)
    assert verdict.status in ("holds", "violated")
    assert (verdict.status == "holds") == (milp.status == INFEASIBLE)
    if verdict.status == "holds":  # the part left open after stabilising went to the exact Query
        assert verdict.stats["query decided"] == 1


def no_answer(q, time_limit=None):
    """A leaf solver that never decides (a timeout): the leaves it gets stay open."""
    from patchlang.solution import TIMEOUT, Solution

    return Solution(TIMEOUT)


@pytest.mark.parametrize("seed", range(4))
@pytest.mark.parametrize("budget,depth", [(12, None), (20, 4), (40, 5), (60, 6)])
def test_a_paused_trees_final_bound_holds_on_the_whole_box(seed, budget, depth):
    """A tree paused by its domain budget reports the smallest bound of what is still open; that is a lower
    bound of the row over the whole box (the stability searches turn it into a neuron's bound), counting the
    leaves its Query left undecided (from ``depth`` splits on, domains go to a solver that never answers), never
    only the pool's.  ``budget``: domains before the pause (these pause with leaves undecided)."""
    from patchlang.compile.bab_tree import run_tree

    net, rn, lo, hi, X = deep_box(seed, SIZES)
    start, _ = root_bounds(rn, lo, hi, steps=5)
    leaves = 0 if depth is None else max(0, sum(unstable(start)) - depth)
    _, y = pre_activations(rn, X)
    for out in range(3):
        # "y_out <= c" with c inside the samples' range: no point confirms (the confirmation says no), so the
        # tree keeps searching and its open bounds sit near the true minimum of y_out - c, which is negative
        c = np.quantile(y[:, out], 0.2)
        spec = unsafe_from_clauses([[G.linear_atom(np.eye(3)[out], "<=", c, 0.0)]], 3)
        verdict, decided, stats, _ = run_tree(rn, lo, hi, start, spec, 0, no_answer, lambda x: False,
                                              BabOptions(batch=4, milp_unstable=leaves, max_domains=budget),
                                              time.perf_counter(), None)
        assert not decided and np.isfinite(stats.final_bound)
        assert stats.final_bound <= (y[:, out] - c).min() + 1e-9


def test_searches_left_open_narrow_the_bounds_soundly():
    """With a tiny domain budget most stability searches stay open; their trees' bounds still narrow the
    neurons' ranges (``narrowed``), and the narrowed bounds contain every sample."""
    narrowed = 0
    for seed in range(4):
        net, rn, lo, hi, X = deep_box(seed, SIZES)
        start, _ = root_bounds(rn, lo, hi, steps=5)
        stats = StabiliseStats()
        fine = stabilise(rn, lo, hi, start, solve, BabOptions(batch=4, root_steps=5, max_domains=6),
                         time.perf_counter() + 30, per_neuron=30.0, steps=5, stats=stats, halve=0)
        zs, _ = pre_activations(rn, X)
        for k in range(rn.n_hidden):
            assert np.all(fine.lower[k] >= start.lower[k]) and np.all(fine.upper[k] <= start.upper[k])
            assert np.all(zs[k] >= fine.lower[k] - 1e-9) and np.all(zs[k] <= fine.upper[k] + 1e-9)
        narrowed += sum(stats.narrowed)
    assert narrowed > 0


def test_a_domain_budget_makes_the_stabilisation_independent_of_the_machines_speed():
    """With ``max_domains`` per search (BabOptions.stabilise_domains) and time to spare, two runs prove the very
    same bounds (a time budget alone proves more or fewer depending on the load), and a tree given a budget
    pauses after it: at most one batch of children past it."""
    from patchlang.compile.bab_tree import run_tree

    net, rn, lo, hi, X = deep_box(2, SIZES)
    start, _ = root_bounds(rn, lo, hi, steps=5)
    opt = BabOptions(batch=8, root_steps=5, max_domains=40)
    runs = [stabilise(rn, lo, hi, start, solve, opt, time.perf_counter() + 60, per_neuron=30.0, steps=5, halve=2)
            for _ in range(2)]
    for k in range(rn.n_hidden):
        assert np.array_equal(runs[0].lower[k], runs[1].lower[k])
        assert np.array_equal(runs[0].upper[k], runs[1].upper[k])
    peak = rn.forward(X)[:, 0].max()
    spec = unsafe_from_clauses([[G.linear_atom(np.eye(3)[0], "<=", peak + 0.05 * (abs(peak) + 0.1), 0.0)]], 3)
    verdict, decided, stats, _ = run_tree(rn, lo, hi, start, spec, 0, solve, lambda x: False,
                                          BabOptions(batch=8, milp_unstable=0, max_domains=25), time.perf_counter(),
                                          None)
    assert not decided and 25 <= stats.domains <= 25 + 2 * 8 and "budget of 25 domains reached" in verdict
    verdict, decided, stats, _ = run_tree(rn, lo, hi, start, spec, 0, solve, lambda x: False,
                                          BabOptions(batch=8, milp_unstable=0), time.perf_counter(), None)
    assert decided and verdict == "holds" and stats.domains > 25 + 2 * 8


def test_the_last_layer_is_left_unhalved_when_the_exact_query_follows():
    """``query_follows`` (the staged search, whose exact Query splits the last layer's ReLUs exactly): no
    bound of the last hidden layer is halved, where the same searches with halving do halve some; the earlier
    layers are halved as before and the bounds stay sound."""
    halved_last = {True: 0, False: 0}
    for seed in range(4):
        net, rn, lo, hi, X = deep_box(seed, SIZES)
        start, _ = root_bounds(rn, lo, hi, steps=5)
        zs, _ = pre_activations(rn, X)
        for last in (True, False):
            stats = StabiliseStats()
            fine = stabilise(rn, lo, hi, start, solve, BabOptions(batch=8, root_steps=5, max_domains=200),
                             time.perf_counter() + 30, per_neuron=30.0, steps=5, stats=stats, halve=2,
                             query_follows=not last)
            halved_last[last] += stats.halved[-1]
            for k in range(rn.n_hidden):
                assert np.all(zs[k] >= fine.lower[k] - 1e-9) and np.all(zs[k] <= fine.upper[k] + 1e-9)
    assert halved_last[True] > 0 and halved_last[False] == 0


def test_the_last_layers_searches_get_their_own_domain_budget():
    """BabOptions.stabilise_last_domains when the exact Query follows (``query_follows``): every search in
    the last hidden layer pauses within one batch past that budget, while the earlier layers' searches use
    ``max_domains`` and prove the very same bounds as without it; every bound stays sound."""
    budget, batch = 3, 4
    peak = {"last": 0, "earlier": 0}

    def recording(fn, tasks):
        results = [fn(t) for t in tasks]
        layer = "last" if len(fn.args[0].Ws) == len(rn.Ws) - 1 else "earlier"
        peak[layer] = max([peak[layer]] + [domains for _, domains, _ in results])
        return results

    for seed in range(3):
        net, rn, lo, hi, X = deep_box(seed, SIZES)
        start, _ = root_bounds(rn, lo, hi, steps=5)
        zs, _ = pre_activations(rn, X)
        opt = BabOptions(batch=batch, root_steps=5, max_domains=60, stabilise_last_domains=budget)
        runs = [stabilise(rn, lo, hi, start, solve, opt, time.perf_counter() + 60, per_neuron=30.0, steps=5,
                          halve=1, map_tasks=recording if follows else None, query_follows=follows)
                for follows in (False, True)]
        for k in range(rn.n_hidden - 1):
            assert np.array_equal(runs[0].lower[k], runs[1].lower[k])
            assert np.array_equal(runs[0].upper[k], runs[1].upper[k])
        for k in range(rn.n_hidden):
            assert np.all(zs[k] >= runs[1].lower[k] - 1e-9) and np.all(zs[k] <= runs[1].upper[k] + 1e-9)
    assert 0 < peak["last"] <= budget + 2 * batch < peak["earlier"]
