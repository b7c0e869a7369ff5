"""Optimised slopes, split multipliers and ReLU-split branch and bound (issue 12): exact gradients, bounds that
contain dense samples after every optimisation step, and verdicts cross-checked against one plain MILP."""

from __future__ import annotations

import io
import time
from pathlib import Path

import numpy as np
import pytest

from patchlang.api import load_program
from patchlang.compile import goals as G
from patchlang.compile.alpha import crown_lower, optimise, optimised_layer_bounds
from patchlang.compile.bounds import LayerBounds, backward_bounds, relu_network, spec_lower_bounds
from patchlang.compile.branch_and_bound import BabOptions, BabStats, relu_split_search
from patchlang.compile.verify import RegionCase, encode_region_query, unsafe_from_clauses
from patchlang.model.build import network_from_arrays
from patchlang.report.progress import describe, progress_printer
from patchlang.solvers.base import INFEASIBLE, SolveOptions
from patchlang.solvers.highs import HighsBackend
from patchlang.tasks.verify import choose_method, verify_cases

from relu_points import pre_activations

EXAMPLE = Path(__file__).resolve().parents[1] / "examples" / "verify"


def random_net(seed: int, sizes=(4, 10, 10, 10, 3)):
    rng = np.random.default_rng(seed)
    Ws = [rng.standard_normal((sizes[k + 1], sizes[k])) / np.sqrt(sizes[k]) for k in range(len(sizes) - 1)]
    bs = [0.3 * rng.standard_normal(sizes[k + 1]) for k in range(len(sizes) - 1)]
    return network_from_arrays(Ws, bs, activation="relu", name=f"b{seed}")


def sampled_box(net_seed: int, seed: int):
    """A random 4-input network, a random box ``(1, 4)``, 20000 samples in it and their hidden/output values."""
    rn = relu_network(random_net(net_seed))
    rng = np.random.default_rng(seed)
    lo = rng.uniform(-1, 0, (1, 4))
    hi = lo + rng.uniform(0.3, 1.2, (1, 4))
    X = lo + rng.random((20000, 4)) * (hi - lo)
    zs, Y = pre_activations(rn, X)
    return rn, rng, lo, hi, X, zs, Y


def test_slope_and_multiplier_gradients_are_exact():
    rn = relu_network(random_net(1))
    rng = np.random.default_rng(1)
    lo = rng.uniform(-1, 0, (2, 4))
    hi = lo + 1.0
    bb = backward_bounds(rn, lo, hi)
    A, a0 = rng.standard_normal((3, 3)), np.zeros(3)
    ref = spec_lower_bounds(rn, A, a0, lo, hi, bb)[0]
    assert np.allclose(crown_lower(rn, 3, A, a0, lo, hi, bb.lower, bb.upper).lb, ref)  # CROWN's default slopes
    al = [rng.uniform(0, 1, (2, 3, 10)) for _ in range(3)]
    phase = [rng.choice([-1.0, 0.0, 1.0], (2, 10)) for _ in range(3)]
    beta = [rng.uniform(0, 1, (2, 3, 10)) for _ in range(3)]
    r = crown_lower(rn, 3, A, a0, lo, hi, bb.lower, bb.upper, al, grad=True, phase=phase, beta=beta)
    e = 1e-6
    for k in range(3):
        for i in range(10):
            for which, grads in ((al, r.grads), (beta, r.beta_grads)):
                moved = [a.copy() for a in which]
                moved[k][:, :, i] += e
                args = (moved, beta) if which is al else (al, moved)
                r2 = crown_lower(rn, 3, A, a0, lo, hi, bb.lower, bb.upper, args[0], phase=phase, beta=args[1])
                assert np.allclose((r2.lb - r.lb) / e, grads[k][:, :, i], atol=1e-5)


@pytest.mark.parametrize("seed", range(3))
def test_every_optimisation_step_contains_dense_samples(seed):
    rn, rng, lo, hi, X, zs, Y = sampled_box(10 + seed, seed)
    bounds, empty = optimised_layer_bounds(rn, lo, hi, steps=15)
    assert not empty[0]
    for k, z in enumerate(zs):
        assert np.all(z >= bounds.lower[k][0] - 1e-9) and np.all(z <= bounds.upper[k][0] + 1e-9)
    A = rng.standard_normal((4, 3))
    truth = (Y @ A.T).min(axis=0)
    seen = []

    def check(alpha, lb):
        assert all(np.all((a >= 0) & (a <= 1)) for a in alpha)
        assert np.all(lb[0] <= truth + 1e-9)
        seen.append(lb[0].copy())

    _, best, _, _ = optimise(rn, 3, A, np.zeros(4), lo, hi, bounds.lower, bounds.upper, steps=25, on_step=check)
    assert len(seen) >= 2 and np.all(best[0] <= truth + 1e-9) and np.all(best[0] >= seen[0] - 1e-12)
    # a split domain: fix the first unstable neuron of layer 1 in each phase; bounds and multipliers must hold on
    # the samples of that phase
    unstable = np.nonzero((bounds.lower[1][0] < 0) & (bounds.upper[1][0] > 0))[0]
    if unstable.size == 0:
        return
    i = unstable[0]
    for sign in (-1.0, 1.0):  # -1: active (z >= 0), +1: inactive (z <= 0)
        L = [l.copy() for l in bounds.lower]
        U = [u.copy() for u in bounds.upper]
        if sign < 0:
            L[1][0, i] = 0.0
            keep = zs[1][:, i] >= 0
        else:
            U[1][0, i] = 0.0
            keep = zs[1][:, i] <= 0
        phase = [np.zeros((1, 10)) for _ in range(3)]
        phase[1][0, i] = sign
        sub, _ = optimised_layer_bounds(rn, lo, hi, LayerBounds(L, U), steps=5, from_layer=2)
        for k, z in enumerate(zs):
            assert np.all(z[keep] >= sub.lower[k][0] - 1e-9) and np.all(z[keep] <= sub.upper[k][0] + 1e-9)
        sub_truth = (Y[keep] @ A.T).min(axis=0)

        def check_split(alpha, lb):
            assert np.all(lb[0] <= sub_truth + 1e-9)

        optimise(rn, 3, A, np.zeros(4), lo, hi, sub.lower, sub.upper, steps=20, on_step=check_split, phase=phase)


def wide_box(net_seed: int, seed: int):
    """A random 6-16-16-3 network, a random box and 30000 samples in it (the verdict cross-checks)."""
    net = random_net(net_seed, (6, 16, 16, 3))
    rng = np.random.default_rng(seed)
    lo = rng.uniform(-1, 0, 6)
    hi = lo + rng.uniform(0.3, 1.0, 6)
    return net, relu_network(net), lo, hi, lo + rng.random((30000, 6)) * (hi - lo)


@pytest.mark.parametrize("seed", range(5))
def test_relu_split_verdicts_agree_with_plain_milp(seed):
    """Thresholds just above and below the sampled maximum: every "holds" must be an infeasible MILP and no
    sample may contradict it; every "violated" a feasible MILP and a real counterexample."""
    net, rn, lo, hi, X = wide_box(200 + seed, seed)
    k = seed % 3
    peak = rn.forward(X)[:, k].max()
    solve = lambda q: HighsBackend().solve(q, SolveOptions(time_limit=30, threads=1))  # noqa: E731
    verdicts = set()
    for t in (peak + 0.02 * (abs(peak) + 0.1), peak - 0.05 * (abs(peak) + 0.1)):
        spec = unsafe_from_clauses([[G.linear_atom(np.eye(3)[k], "<=", t, 0.0)]], 3)
        case = RegionCase(lo, hi, spec)
        milp = solve(encode_region_query(rn, lo, hi, spec, None).query)
        # bounds alone (no leaf may decide: leaves only with every neuron stable) and the verifier's entry point
        stats = BabStats()
        res = relu_split_search(rn, case, solve, lambda x: bool(spec.violated(rn.forward(x[None]))[0]),
                                BabOptions(milp_unstable=0, batch=8), stats)
        full = verify_cases(net, [case], timeout=30, seed=seed, strategy="relu-split", falsify=False)
        for status in (res.status, full.status):
            verdicts.add(status)
            if status == "holds":
                assert milp.status == INFEASIBLE
                assert not np.any(rn.forward(X)[:, k] > t)
            else:
                assert status == "violated" and milp.status != INFEASIBLE
        assert rn.forward(res.x[None])[0, k] > t if res.status == "violated" else stats.final_bound > 0
    assert verdicts <= {"holds", "violated"}


def test_method_follows_the_network_shape():
    small = relu_network(random_net(3))
    wide = relu_network(random_net(3, (30, 8, 3)))
    assert choose_method(small, "split", "auto") == "input-split"
    assert choose_method(wide, "split", "auto") == "relu-split"
    assert choose_method(wide, "auto", "marabou") == "milp"
    assert choose_method(small, "relu-split", "auto") == "relu-split"


def test_progress_lines_and_json_details():
    seen = []
    lines = io.StringIO()
    printer = progress_printer(None, every=0.0, stream=lines)
    info = {"method": "relu-split", "case": "point 3", "domains": 1200, "left": 35, "bound": -0.0123,
            "elapsed": 12.0, "limit": 60.0}
    printer(info)
    assert "1,200 domains, 35 left" in lines.getvalue() and "best bound -0.0123" in lines.getvalue()
    assert describe(info).startswith("[" + "#" * 4 + "." * 16 + "]")
    program = load_program(EXAMPLE / "robust_digits.patch")
    from patchlang.api import run_task
    from patchlang.tasks.patch import RunOptions

    result = run_task(program.tasks[0], RunOptions(write_files=False, progress=seen.append))
    assert result.status == "holds"
    assert result.details["method"] == "relu-split"
    assert result.details["domains"] >= result.details["cases"] and result.details["final bound"] > 0


@pytest.mark.parametrize("seed", range(4))
def test_stalled_conjunctions_go_to_the_milp_and_agree_with_it(seed):
    """With (almost) no branch-and-bound time, every conjunction the root bound leaves open is decided by the
    whole-conjunction MILP fallback; the verdict must match one plain MILP of the whole unsafe region and the
    samples, and a "violated" must be a real counterexample."""
    net, rn, lo, hi, X = wide_box(300 + seed, seed)
    Y = rn.forward(X)
    solve = lambda q, time_limit=None: HighsBackend().solve(q, SolveOptions(time_limit=time_limit or 30,  # noqa: E731
                                                                             threads=1))
    decided_by_milp = 0
    for frac in (0.2, -0.05):  # thresholds above / below the sampled peaks: holds, then violated
        ts = [Y[:, k].max() + frac * (abs(Y[:, k].max()) + 0.1) for k in (0, 1)]
        spec = unsafe_from_clauses([[G.linear_atom(np.eye(3)[k], "<=", ts[k], 0.0)] for k in (0, 1)], 3)
        assert spec.n_conj == 2
        case = RegionCase(lo, hi, spec)
        milp = solve(encode_region_query(rn, lo, hi, spec, None).query)
        stats = BabStats()
        res = relu_split_search(rn, case, solve, lambda x: bool(spec.violated(rn.forward(x[None]))[0]),
                                BabOptions(milp_unstable=0, batch=8, milp_bab_share=1e-9, resume_share=1e-9,
                                           root_steps=2, deadline=time.perf_counter() + 60), stats)
        decided_by_milp += stats.milp_decided
        if res.status == "holds":
            assert milp.status == INFEASIBLE and not np.any(spec.violated(Y))
            assert stats.left == 0 and stats.final_bound == 0.0  # no open domain left; MILP-proven parts: 0
        else:
            assert res.status == "violated" and milp.status != INFEASIBLE
            assert spec.violated(rn.forward(res.x[None]))[0]
    assert decided_by_milp > 0  # the fallback is exercised: the root bound alone leaves these open


@pytest.mark.parametrize("seed", range(3))
def test_float32_iterates_give_float64_sound_bounds(seed):
    """``fast``: the slopes are searched in float32 but the bound returned is their float64 evaluation: it must
    contain dense samples, equal crown_lower of the returned parameters exactly, and be about as tight."""
    rn, rng, lo, hi, X, _, Y = sampled_box(40 + seed, seed)
    bounds, _ = optimised_layer_bounds(rn, lo, hi, steps=10)
    A = rng.standard_normal((4, 3))
    truth = (Y @ A.T).min(axis=0)
    phase = [np.zeros((1, 10)) for _ in range(3)]
    r, lb, al, be = optimise(rn, 3, A, np.zeros(4), lo, hi, bounds.lower, bounds.upper, steps=20, fast=True,
                             phase=phase)
    assert lb.dtype == np.float64 and all(a.dtype == np.float64 for a in al)
    assert np.all(lb[0] <= truth + 1e-9)
    again = crown_lower(rn, 3, A, np.zeros(4), lo, hi, bounds.lower, bounds.upper, al, phase=phase, beta=be).lb
    assert np.array_equal(again, lb)
    _, lb64, _, _ = optimise(rn, 3, A, np.zeros(4), lo, hi, bounds.lower, bounds.upper, steps=20, phase=phase)
    assert np.all(lb >= lb64 - 1e-3 * (1 + np.abs(lb64)))


@pytest.mark.parametrize("seed", range(3))
def test_retiring_refuted_domains_keeps_bounds_sound_and_unchanged(seed):
    """``stop_above`` retires a domain from the batch once every row exceeds it: the bounds of the domains that
    go on are those of a run without retiring, every bound contains dense samples of its box, the parameters
    returned reproduce them, and the merged result covers every domain."""
    rn = relu_network(random_net(60 + seed))
    rng = np.random.default_rng(seed)
    B = 6
    lo = rng.uniform(-1, 0, (B, 4))
    hi = lo + rng.uniform(0.2, 1.0, (B, 4))
    bounds, _ = optimised_layer_bounds(rn, lo, hi, steps=5)
    A = rng.standard_normal((2, 3))
    phase = [np.zeros((B, 10)) for _ in range(3)]
    _, free, _, _ = optimise(rn, 3, A, np.zeros(2), lo, hi, bounds.lower, bounds.upper, steps=15, phase=phase)
    stop = np.median(free.min(axis=1))  # about half the domains retire on the way
    r, lb, al, be = optimise(rn, 3, A, np.zeros(2), lo, hi, bounds.lower, bounds.upper, steps=15, phase=phase,
                             stop_above=stop)
    retired = np.all(lb > stop, axis=1)
    assert retired.any() and not retired.all()
    assert np.allclose(lb[~retired], free[~retired], rtol=0, atol=1e-12)
    assert r.lb.shape == (B, 2) and r.x_star.shape == (B, 2, 4) and all(p.shape == (B, 2, 10) for p in r.pos)
    again = crown_lower(rn, 3, A, np.zeros(2), lo, hi, bounds.lower, bounds.upper, al, phase=phase, beta=be).lb
    assert np.allclose(again, lb, rtol=0, atol=1e-12)
    for b in range(B):
        X = lo[b] + rng.random((5000, 4)) * (hi[b] - lo[b])
        truth = (pre_activations(rn, X)[1] @ A.T).min(axis=0)
        assert np.all(lb[b] <= truth + 1e-9)


def test_the_first_turn_is_a_share_of_the_time_but_never_longer_than_its_cap():
    from patchlang.compile.branch_and_bound import BabOptions, first_turn_share

    opt = BabOptions(stabilise_after=0.15, stabilise_after_max=20.0)
    assert first_turn_share(opt, 120.0) == pytest.approx(0.15)  # 18 s
    assert first_turn_share(opt, 300.0) * 300.0 == pytest.approx(20.0)  # not 45 s
    assert first_turn_share(opt, 0.0) == pytest.approx(0.15)  # no time left: no division by zero
