"""Branch and bound's staged search on worker processes (issue 12): the same verdicts as in one process (and as
one plain MILP), counterexamples confirmed in the caller's process, no worker left running after a verdict, and
a script without an ``if __name__ == "__main__"`` guard runs once."""

from __future__ import annotations

import multiprocessing
import os
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import numpy as np
import pytest

from patchlang.compile import bab_parallel
from patchlang.compile import goals as G
from patchlang.compile.bab_parallel import picklable, worker_count
from patchlang.compile.branch_and_bound import BabOptions, BabStats, relu_split_search
from patchlang.compile.verify import RegionCase, encode_region_query, unsafe_from_clauses
from patchlang.solvers.base import INFEASIBLE, SolveOptions
from patchlang.tasks.verify import LeafSolve

from relu_points import deep_box

SIZES = (6, 16, 16, 16, 3)
TESTS = Path(__file__).resolve().parent


def test_worker_count_uses_every_core_but_never_inside_a_daemonic_process(monkeypatch):
    assert worker_count(3) == 3
    assert worker_count(0) == len(os.sched_getaffinity(0))

    class Daemon:
        daemon = True

    monkeypatch.setattr(bab_parallel.multiprocessing, "current_process", lambda: Daemon())
    assert worker_count(0) == 1 and worker_count(4) == 1


def test_only_a_picklable_leaf_solver_goes_to_the_workers():
    assert picklable(LeafSolve("highs", SolveOptions(), time.perf_counter() + 1))
    assert not picklable(lambda q: None)


@pytest.mark.parametrize("seed", range(2))  # (seed 2's four cases are all decided at the root)
def test_staged_search_on_workers_agrees_with_one_process_and_the_milp(seed):
    """Thresholds above and below the sampled maximum, searched with 2 workers and with none: the same verdict,
    the MILP's; a counterexample is real and was confirmed in this process; no worker outlives the search."""
    net, rn, lo, hi, X = deep_box(300 + seed, SIZES)
    k = seed % 3
    peak = rn.forward(X)[:, k].max()
    solve = LeafSolve("highs", SolveOptions(), time.perf_counter() + 300)
    started: list[int] = []
    for t in (peak + 0.005 * (abs(peak) + 0.1), peak - 0.05 * (abs(peak) + 0.1)):
        spec = unsafe_from_clauses([[G.linear_atom(np.eye(3)[k], "<=", t, 0.0)]], 3)
        milp = solve(encode_region_query(rn, lo[0], hi[0], spec, None).query)
        verdicts = []
        for workers in (2, 1):
            stats = BabStats()
            confirmed_in: list[int] = []

            def confirm(x, spec=spec, confirmed_in=confirmed_in):
                confirmed_in.append(os.getpid())
                return bool(spec.violated(rn.forward(x[None]))[0])

            res = relu_split_search(rn, RegionCase(lo[0], hi[0], spec), solve, confirm,
                                    BabOptions(milp_unstable=0, batch=8, root_steps=3, stabilise_after=0.0,
                                               stabilise_share=0.5, workers=workers,
                                               deadline=time.perf_counter() + 60), stats)
            assert stats.workers == workers or stats.domains == 1  # decided at the root: no worker started
            started.append(stats.workers)
            assert not multiprocessing.active_children()  # the pool stopped with the search
            verdicts.append(res.status)
            if res.status == "violated":
                assert rn.forward(res.x[None])[0, k] > t and set(confirmed_in) == {os.getpid()}
        assert verdicts[0] == verdicts[1] == ("holds" if milp.status == INFEASIBLE else "violated")
    assert 2 in started  # the workers did search


def test_stabilisation_on_workers_tightens_bounds_as_in_one_process():
    """stabilise(map_tasks=pool.map): the bounds proven on the workers are sound (contain the samples) and as
    tight as those proven in this process, searched one by one, up to searches cut by their time."""
    from patchlang.compile.branch_and_bound import root_bounds
    from patchlang.compile.bab_parallel import Workers
    from patchlang.compile.stabilise import StabiliseStats, stabilise
    from relu_points import pre_activations

    net, rn, lo, hi, X = deep_box(1, SIZES)
    start, _ = root_bounds(rn, lo, hi, steps=5)
    solve = LeafSolve("highs", SolveOptions(), time.perf_counter() + 300)
    opt = BabOptions(batch=8, root_steps=5)
    one, two = StabiliseStats(), StabiliseStats()
    alone = stabilise(rn, lo, hi, start, solve, opt, time.perf_counter() + 60, per_neuron=2.0, steps=5, stats=one)
    with Workers(2, time.perf_counter() + 60) as pool:
        spread = stabilise(rn, lo, hi, start, solve, opt, time.perf_counter() + 60, per_neuron=2.0, steps=5,
                           stats=two, map_tasks=pool.map)
    zs, _ = pre_activations(rn, X)
    for k in range(rn.n_hidden):
        assert np.all(zs[k] >= spread.lower[k] - 1e-9) and np.all(zs[k] <= spread.upper[k] + 1e-9)
    assert two.tried == one.tried and sum(two.stabilised) > 0
    assert two.unstable_after == one.unstable_after


def test_a_script_without_a_main_guard_runs_once(tmp_path):
    """Worker processes start from a clean interpreter (forkserver), which would run the caller's script again
    to rebuild ``__main__``: without the guard, the whole search again in every worker (or a RuntimeError)."""
    script = tmp_path / "no_guard.py"
    script.write_text(textwrap.dedent(f"""
        import sys, time
        import numpy as np
        sys.path.insert(0, {str(TESTS)!r})
        from relu_points import deep_box
        from patchlang.compile import goals as G
        from patchlang.compile.branch_and_bound import BabOptions, BabStats, relu_split_search
        from patchlang.compile.verify import RegionCase, unsafe_from_clauses
        from patchlang.solvers.base import SolveOptions
        from patchlang.tasks.verify import LeafSolve
        print("START", flush=True)
        net, rn, lo, hi, X = deep_box(300, {SIZES!r})
        peak = rn.forward(X)[:, 0].max()
        spec = unsafe_from_clauses([[G.linear_atom(np.eye(3)[0], "<=", peak + 0.005 * (abs(peak) + 0.1), 0.0)]], 3)
        stats = BabStats()
        solve = LeafSolve("highs", SolveOptions(), time.perf_counter() + 60)
        confirm = lambda x: bool(spec.violated(rn.forward(x[None]))[0])
        options = BabOptions(batch=8, stabilise_after=0.0, workers=2, deadline=time.perf_counter() + 20)
        res = relu_split_search(rn, RegionCase(lo[0], hi[0], spec), solve, confirm, options, stats)
        print("END", res.status, stats.workers, flush=True)
    """))
    out = subprocess.run([sys.executable, str(script)], capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr[-2000:]
    assert out.stdout.count("START") == 1 and out.stdout.count("END") == 1, out.stdout
    assert "END holds 2" in out.stdout or "END violated 2" in out.stdout  # decided, by the workers


def test_a_worker_that_dies_costs_its_answers_not_a_hang(monkeypatch):
    """A worker killed in its task (as by the kernel when memory runs out) never answers; past the search's
    deadline (plus LOST_AFTER) its tasks count as lost instead of the caller waiting forever."""
    from patchlang.compile.bab_parallel import Workers

    monkeypatch.setattr(bab_parallel, "LOST_AFTER", 1.0)
    t = time.perf_counter()
    with Workers(2, time.perf_counter() + 1.0) as pool:
        assert pool.map(abs, [-1, -2]) == [1, 2]
        assert pool.map(os._exit, [3], lost="lost") == ["lost"]
    assert time.perf_counter() - t < 30
    assert not multiprocessing.active_children()
