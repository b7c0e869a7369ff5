"""bab-refine (issue 12): intermediate bounds tightened neuron by neuron by MILP/LP over the earlier layers contain
the pre-activations of dense samples, are never looser than the bounds they start from, and branch and bound on
refined roots agrees with one plain MILP."""

from __future__ import annotations

import time

import numpy as np
import pytest

from patchlang.compile import goals as G
from patchlang.compile.branch_and_bound import BabOptions, BabStats, relu_split_search, root_bounds
from patchlang.compile.refine_bounds import RefineStats, refine_layer_bounds, unstable_counts
from patchlang.compile.verify import RegionCase, encode_region_query, unsafe_from_clauses
from patchlang.solvers.base import INFEASIBLE, SolveOptions
from patchlang.solvers.highs import HighsBackend

from relu_points import deep_box, pre_activations


TIGHTEN = HighsBackend().tighten_bounds


@pytest.mark.parametrize("seed,milp", [(0, True), (1, True), (2, False), (3, True)])
def test_refined_bounds_contain_samples_and_are_never_looser(seed, milp):
    net, rn, lo, hi, X = deep_box(seed)
    start, _ = root_bounds(rn, lo, hi, steps=5)
    A = np.eye(3)[:2] - np.eye(3)[2]
    stats = RefineStats()
    fine = refine_layer_bounds(rn, lo, hi, start, A, np.zeros(2), time.perf_counter() + 60, TIGHTEN,
                               solve_seconds=5.0, milp=milp, steps=5, stats=stats)
    zs, _ = pre_activations(rn, X)
    for k in range(rn.n_hidden):
        assert np.all(fine.lower[k] >= start.lower[k]) and np.all(fine.upper[k] <= start.upper[k])
        assert np.all(zs[k] >= fine.lower[k] - 1e-9) and np.all(zs[k] <= fine.upper[k] + 1e-9)
    assert stats.unstable_after == unstable_counts(fine)
    assert sum(stats.unstable_after) <= sum(stats.unstable_before) and not stats.empty
    assert stats.neurons > 0


def test_refinement_stops_at_its_deadline_with_sound_bounds():
    net, rn, lo, hi, X = deep_box(5, (6, 20, 20, 20, 3))
    start, _ = root_bounds(rn, lo, hi, steps=5)
    fine = refine_layer_bounds(rn, lo, hi, start, np.eye(3), np.zeros(3), time.perf_counter() - 1.0, TIGHTEN)
    for k in range(rn.n_hidden):  # past its deadline: nothing refined, the bounds are the input ones
        assert np.array_equal(fine.lower[k], start.lower[k]) and np.array_equal(fine.upper[k], start.upper[k])


@pytest.mark.parametrize("seed", range(4))
def test_bab_on_refined_roots_agrees_with_plain_milp(seed):
    """Thresholds above and below the sampled maximum: every "holds" must be an infeasible MILP with no sample
    against it, every "violated" a feasible MILP and a real counterexample; the refinement ran on each."""
    net, rn, lo, hi, X = deep_box(100 + seed)
    Y = rn.forward(X)
    k = seed % 3
    peak = Y[:, k].max()
    solve = lambda q, time_limit=None: HighsBackend().solve(q, SolveOptions(time_limit=time_limit or 30,  # noqa: E731
                                                                             threads=1))
    for t in (peak + 0.02 * (abs(peak) + 0.1), peak - 0.05 * (abs(peak) + 0.1)):
        spec = unsafe_from_clauses([[G.linear_atom(np.eye(3)[k], "<=", t, 0.0)]], 3)
        case = RegionCase(lo[0], hi[0], spec)
        milp = solve(encode_region_query(rn, lo[0], hi[0], spec, None).query)
        stats = BabStats()
        res = relu_split_search(rn, case, solve, lambda x: bool(spec.violated(rn.forward(x[None]))[0]),
                                BabOptions(milp_unstable=0, batch=8, root_steps=3, refine=True, tighten=TIGHTEN,
                                           refine_share=0.5,
                                           deadline=time.perf_counter() + 60), stats)
        assert stats.refine is not None and stats.refine.neurons >= 0
        if res.status == "holds":
            assert milp.status == INFEASIBLE and not np.any(Y[:, k] > t)
        else:
            assert res.status == "violated" and milp.status != INFEASIBLE
            assert rn.forward(res.x[None])[0, k] > t


def test_refinement_is_skipped_on_shallow_networks_and_without_deadline():
    net, rn, lo, hi, X = deep_box(7, (6, 10, 10, 3))
    spec = unsafe_from_clauses([[G.linear_atom(np.eye(3)[0], "<=", 1e6, 0.0)]], 3)  # refuted at the root
    solve = lambda q, time_limit=None: HighsBackend().solve(q, SolveOptions(time_limit=10, threads=1))  # noqa: E731
    stats = BabStats()
    relu_split_search(rn, RegionCase(lo[0], hi[0], spec), solve, lambda x: False,
                      BabOptions(refine=True, tighten=TIGHTEN, deadline=time.perf_counter() + 10), stats)
    assert stats.refine is None  # 2 hidden layers: below refine_min_hidden
    _, rn3, lo3, hi3, _ = deep_box(7)
    stats = BabStats()
    relu_split_search(rn3, RegionCase(lo3[0], hi3[0], spec), solve, lambda x: False,
                      BabOptions(refine=True, tighten=TIGHTEN), stats)
    assert stats.refine is None  # no deadline: no share of it to give
    stats = BabStats()
    relu_split_search(rn3, RegionCase(lo3[0], hi3[0], spec), solve, lambda x: False,
                      BabOptions(deadline=time.perf_counter() + 10), stats)
    assert stats.refine is None  # off by default


@pytest.mark.parametrize("seed", range(3))
def test_milp_searched_by_bound_agrees_with_the_plain_milp(seed):
    """The MILP fallback's Query (an objective on the outputs) solved by the verifier's leaf solver with HiGHS's
    primal heuristics off (``bound_only``) has the same verdict as the plain feasibility MILP, and a point it
    returns is in the (tolerance-enlarged) unsafe region."""
    from patchlang.tasks.verify import LeafSolve

    net, rn, lo, hi, X = deep_box(200 + seed)
    Y = rn.forward(X)
    solve = LeafSolve("highs", SolveOptions(), time.perf_counter() + 120)
    for t in (Y[:, 0].max() + 0.05, Y[:, 0].max() - 0.05):
        spec = unsafe_from_clauses([[G.linear_atom(np.eye(3)[0], "<=", t, 0.0)]], 3)
        plain = solve(encode_region_query(rn, lo[0], hi[0], spec, None).query)
        enc = encode_region_query(rn, lo[0], hi[0], spec, None, objective=spec.A.sum(axis=0))
        by_bound = solve(enc.query, bound_only=True)
        assert (plain.status == INFEASIBLE) == (by_bound.status == INFEASIBLE)
        if by_bound.status != INFEASIBLE:
            y = rn.forward(np.clip(by_bound.x[enc.inputs], lo[0], hi[0])[None])[0]
            assert spec.violated(y[None], tol=1e-5)[0]
