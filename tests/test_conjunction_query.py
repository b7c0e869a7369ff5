"""The exact Query of one conjunction over the whole box (issue 12), as branch and bound's staged search uses it
after stabilisation: a "holds" only where the MILP over the same sound bounds proves it, a counterexample only
when the caller confirms it, and the same verdicts with workers and in one process."""

from __future__ import annotations

import multiprocessing
import time

import numpy as np
import pytest

from patchlang.compile import goals as G
from patchlang.compile.bab_parallel import query_task
from patchlang.compile.branch_and_bound import BabOptions, BabStats, relu_split_search, root_bounds
from patchlang.compile.verify import RegionCase, encode_region_query, unsafe_from_clauses
from patchlang.solvers.base import INFEASIBLE, SolveOptions
from patchlang.tasks.verify import LeafSolve

from relu_points import deep_box

SIZES = (6, 16, 16, 16, 3)


def _threshold_spec(rn, X, k: int, above: bool):
    """"output k <= t" unsafe, with t above the sampled maximum of output k (safe on these networks: the MILP
    proves it, though no root bound does) or well below it (violated: some samples exceed it)."""
    peak = rn.forward(X)[:, k].max()
    t = peak + 0.2 * (abs(peak) + 0.1) if above else peak - 0.05 * (abs(peak) + 0.1)
    return t, unsafe_from_clauses([[G.linear_atom(np.eye(3)[k], "<=", t, 0.0)]], 3)


@pytest.mark.parametrize("seed", range(3))
def test_query_task_agrees_with_the_milp_and_returns_points_that_violate(seed):
    net, rn, lo, hi, X = deep_box(410 + seed, SIZES)
    bounds, _ = root_bounds(rn, lo, hi, steps=5)
    solve = LeafSolve("highs", SolveOptions(), time.perf_counter() + 300)
    opt = BabOptions(deadline=time.perf_counter() + 120)
    for above in (True, False):
        t, spec = _threshold_spec(rn, X, seed % 3, above)
        milp = solve(encode_region_query(rn, lo[0], hi[0], spec, None).query)
        verdict, decided, stats, res = query_task(rn, lo, hi, bounds, spec, 0, solve, opt, 0.0, 60.0)
        assert decided and verdict == ("holds" if milp.status == INFEASIBLE else "violated")
        if verdict == "holds":
            assert stats.final_bound == 0.0 and res.x is None
        else:
            assert np.all(res.x >= lo[0]) and np.all(res.x <= hi[0])
            assert rn.forward(res.x[None])[0, seed % 3] > t
        assert verdict == ("holds" if above else "violated")  # the cases are chosen so, see _threshold_spec


def test_query_task_stops_at_its_time_and_says_so():
    net, rn, lo, hi, X = deep_box(3, SIZES)
    bounds, _ = root_bounds(rn, lo, hi, steps=5)
    _, spec = _threshold_spec(rn, X, 0, above=True)
    solve = LeafSolve("highs", SolveOptions(), time.perf_counter() + 300)
    past = BabOptions(deadline=time.perf_counter() - 1.0)  # the search's deadline has passed: 0.1 s at most
    started = time.perf_counter()
    verdict, decided, _, _ = query_task(rn, lo, hi, bounds, spec, 0, solve, past, 0.0, 60.0)
    assert time.perf_counter() - started < 10
    assert decided or "unsafe part 0" in verdict  # a tiny Query may still be decided in 0.1 s


@pytest.mark.parametrize("workers", [2, 1])
@pytest.mark.parametrize("seed", range(2))
def test_staged_search_decides_by_the_query_after_stabilisation(seed, workers):
    """No first turn (``stabilise_after=0``): every part not decided at its root is stabilised and then goes to
    the Query, which decides it; the verdict is the plain MILP's and, without the Query stage, the trees'."""
    net, rn, lo, hi, X = deep_box(300 + seed, SIZES)
    solve = LeafSolve("highs", SolveOptions(), time.perf_counter() + 300)
    for above in (True, False):
        _, spec = _threshold_spec(rn, X, seed % 3, above)
        milp = solve(encode_region_query(rn, lo[0], hi[0], spec, None).query)
        expected = "holds" if milp.status == INFEASIBLE else "violated"
        for query in (True, False):
            stats = BabStats()
            confirm = lambda x, spec=spec: bool(spec.violated(rn.forward(x[None]))[0])  # noqa: E731
            res = relu_split_search(rn, RegionCase(lo[0], hi[0], spec), solve, confirm,
                                    BabOptions(milp_unstable=0, batch=8, root_steps=3, stabilise_after=0.0,
                                               stabilise_share=0.3, workers=workers, stabilised_query=query,
                                               deadline=time.perf_counter() + 60), stats)
            assert res.status == expected
            assert not multiprocessing.active_children()
            if query and expected == "holds":  # the root decides none of these: the Query does
                assert stats.stabilise is not None and stats.query_decided == 1 and stats.final_bound == 0.0
            if not query:
                assert stats.query_decided == 0


def test_a_query_point_that_does_not_confirm_never_makes_a_violation():
    """The caller's confirmation (onnxruntime in the verifier) has the last word over the workers' float64 check:
    here it rejects everything, so a violated case stays open with the reason, never "violated"."""
    net, rn, lo, hi, X = deep_box(300, SIZES)
    _, spec = _threshold_spec(rn, X, 0, above=False)
    solve = LeafSolve("highs", SolveOptions(), time.perf_counter() + 300)
    for workers in (2, 1):
        res = relu_split_search(rn, RegionCase(lo[0], hi[0], spec), solve, lambda x: False,
                                BabOptions(milp_unstable=0, batch=8, root_steps=3, stabilise_after=0.0,
                                           stabilise_share=0.3, workers=workers, deadline=time.perf_counter() + 20))
        assert res.status == "unknown" and res.unconfirmed >= 1



def test_every_part_s_query_may_use_the_whole_query_stage(monkeypatch):
    """A case holds only when every part does, so the Query stage never cuts a part short to start the next: each
    Query is given all the stage's time left (prop_6_0.05 at 300 s: a part needing 37 s stayed open with an
    equal slice of 25 s).  The Queries here return at once, so every part is offered (nearly) the same time."""
    from patchlang.compile import branch_and_bound as bb
    from patchlang.compile.bab_tree import TreeStats
    from patchlang.compile.verify import SearchResult

    offered = []

    def instant(rn, lo, hi, bounds, spec, j, solve, opt, t0, seconds):
        offered.append(seconds)
        return "not decided here", False, TreeStats(), SearchResult("unknown")

    monkeypatch.setattr(bb, "query_task", instant)
    net, rn, lo, hi, X = deep_box(301, SIZES)
    peak = rn.forward(X).max(axis=0)
    spec = unsafe_from_clauses([[G.linear_atom(np.eye(3)[k], "<=", peak[k] + 0.2 * (abs(peak[k]) + 0.1), 0.0)]
                                for k in range(3)], 3)
    solve = LeafSolve("highs", SolveOptions(), time.perf_counter() + 300)
    stats = BabStats()
    relu_split_search(rn, RegionCase(lo[0], hi[0], spec), solve, lambda x: True,
                      BabOptions(milp_unstable=0, batch=8, root_steps=3, stabilise_after=0.0, stabilise_share=0.3,
                                 workers=1, deadline=time.perf_counter() + 10), stats)
    assert stats.stabilise is not None and len(offered) >= 2
    assert min(offered) > 0.9 * max(offered) > 0.5
