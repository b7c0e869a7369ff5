"""Verification over input regions: golden answers, bound soundness, and a cross-check against sampling + MILP."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from patchlang.api import load_program, load_program_text, run_task
from patchlang.compile import goals as G
from patchlang.compile.bounds import backward_bounds, forward_bounds, interval_bounds, relu_network, spec_lower_bounds
from patchlang.compile.verify import (RegionCase, SearchOptions, encode_region_query, search_box, unsafe_from_clauses,
                                      unsafe_from_vnnlib)
from patchlang.model.build import network_from_arrays
from patchlang.solvers.base import INFEASIBLE, SolveOptions
from patchlang.solvers.highs import HighsBackend
from patchlang.tasks.patch import RunOptions
from patchlang.tasks.verify import Confirmer, verify_cases

EXAMPLE = Path(__file__).resolve().parents[1] / "examples" / "verify"


def random_net(seed: int, sizes=(2, 8, 8, 3), activation: str = "relu"):
    rng = np.random.default_rng(seed)
    Ws = [rng.standard_normal((sizes[k + 1], sizes[k])) / np.sqrt(sizes[k]) for k in range(len(sizes) - 1)]
    bs = [0.3 * rng.standard_normal(sizes[k + 1]) for k in range(len(sizes) - 1)]
    return network_from_arrays(Ws, bs, activation=activation, name=f"r{seed}")


# ---------------------------------------------------------------------------------------------- golden example


def test_example_verdicts(tmp_path):
    program = load_program(EXAMPLE / "verify.patch")
    results = {t.name.split()[-1]: run_task(t, RunOptions(write_files=False)) for t in program.tasks}
    assert results["capped"].status == "holds"
    assert results["lower_left_is_one"].status == "holds"
    bad = results["never_two"]
    assert bad.status == "violated"
    x = np.asarray(bad.details["counterexample"], np.float32)
    assert np.all(x >= [0.5, -1.0]) and np.all(x <= [1.0, -0.5])
    net = program.models["net"].net
    assert net.labels(x[None].astype(np.float64))[0] == 2  # the counterexample really is classified 2


def test_counterexample_saved_as_npy(tmp_path):
    import shutil

    shutil.copy(EXAMPLE / "tiny.onnx", tmp_path / "tiny.onnx")
    src = ('model net = "tiny.onnx"\n'
           "property p { input box lo [0.5, -1] hi [1, -0.5] ensure label is not 2 }\n"
           'verify net satisfies p save "cex.npy"\n')
    program = load_program_text(src, tmp_path)
    r = run_task(program.tasks[0], RunOptions())
    assert r.status == "violated"
    x = np.load(tmp_path / "cex.npy")
    assert x.dtype == np.float32 and x.shape == (2,)
    assert program.models["net"].net.labels(x[None].astype(np.float64))[0] == 2


def test_label_stays_on_balls(tmp_path):
    import shutil

    shutil.copy(EXAMPLE / "tiny.onnx", tmp_path / "tiny.onnx")
    src = ('model net = "tiny.onnx"\n'
           "points c = [[-0.5, -0.5], [0.6, -0.75]]\n"
           "property robust_small { input within linf 0.01 of c[0:1] ensure label stays }\n"
           "property robust_big { input within linf 0.3 of c ensure label stays }\n"
           "verify net satisfies robust_small\n"
           "verify net satisfies robust_big\n")
    program = load_program_text(src, tmp_path)
    small, big = (run_task(t, RunOptions(write_files=False)) for t in program.tasks)
    assert small.status == "holds"
    assert big.status == "violated"


# ---------------------------------------------------------------------------------------------- bounds


@pytest.mark.parametrize("seed", range(4))
def test_bounds_are_sound(seed):
    net = random_net(seed, (3, 10, 10, 10, 4))
    rn = relu_network(net)
    rng = np.random.default_rng(seed)
    lo = rng.uniform(-1, 0, (3, 3))
    hi = lo + rng.uniform(0.05, 1.0, (3, 3))
    C = rng.standard_normal((5, 4))
    d = rng.standard_normal(5)
    fb, bb, hb = forward_bounds(rn, lo, hi), backward_bounds(rn, lo, hi), forward_bounds(rn, lo, hi, refine=True)
    ib = interval_bounds(rn, lo, hi)
    for b in range(3):
        X = lo[b] + rng.random((4000, 3)) * (hi[b] - lo[b])
        X = np.vstack([X, lo[b], hi[b]])
        h = X
        for k in range(rn.n_hidden):
            z = h @ rn.Ws[k].T + rn.bs[k]
            for bounds in (fb, bb, hb):
                assert np.all(z >= bounds.lower[k][b] - 1e-9) and np.all(z <= bounds.upper[k][b] + 1e-9)
            assert np.all(z >= ib[k][0][b] - 1e-9) and np.all(z <= ib[k][1][b] + 1e-9)
            h = np.maximum(z, 0)
        spec_vals = rn.forward(X) @ C.T + d
        for bounds in (fb, bb, hb):
            lb = spec_lower_bounds(rn, C, d, lo[b:b + 1], hi[b:b + 1], bounds.take(np.array([b])))[0][0]
            assert np.all(spec_vals.min(axis=0) >= lb - 1e-9)
    # the refined bounds are never looser than the plain forward ones
    for k in range(rn.n_hidden):
        assert np.all(hb.lower[k] >= fb.lower[k] - 1e-12) and np.all(hb.upper[k] <= fb.upper[k] + 1e-12)


def test_relu_network_folds_clip_and_elementwise():
    net = random_net(7, (2, 6, 6, 3), activation="hardtanh")
    rn = relu_network(net)
    X = np.random.default_rng(0).uniform(-3, 3, (500, 2))
    assert np.allclose(rn.forward(X), net.forward(X), atol=1e-12)


# ---------------------------------------------------------------------------------------------- the unsafe region


def test_negated_cnf_is_exactly_the_unsafe_region():
    n = 4
    clauses = [G.label_is(1, n, 0.0, "argmax"), [G.linear_atom(np.array([1.0, 0, 0, -2.0]), "<=", 0.5, 0.0),
                                                  G.linear_atom(np.array([0, 0, 1.0, 0]), ">=", -0.2, 0.0)]]
    spec = unsafe_from_clauses(clauses, n)
    Y = np.random.default_rng(1).standard_normal((5000, n))
    safe = np.array([all(G.clause_satisfied(c, y) for c in clauses) for y in Y])
    assert np.array_equal(~safe, spec.violated(Y))
    assert np.array_equal(spec.satisfaction(Y) < 0, ~safe)


def test_vnnlib_dnf_normal_form():
    from patchlang.inputs.vnnlib import parse_vnnlib_text

    text = """(declare-const X_0 Real)(declare-const Y_0 Real)(declare-const Y_1 Real)
    (assert (<= X_0 1))(assert (>= X_0 0))
    (assert (or (and (<= Y_0 Y_1) (>= Y_0 0.5)) (and (>= Y_1 3))))"""
    prop = parse_vnnlib_text(text)
    spec = unsafe_from_vnnlib(prop.cases[0].unsafe, 2)
    Y = np.random.default_rng(2).uniform(-1, 4, (3000, 2))
    expect = ((Y[:, 0] <= Y[:, 1]) & (Y[:, 0] >= 0.5)) | (Y[:, 1] >= 3)
    assert np.array_equal(spec.violated(Y), expect)


# ---------------------------------------------------------------------------------------------- soundness cross-check


@pytest.mark.parametrize("seed", range(6))
def test_verdicts_agree_with_sampling_and_milp(seed):
    """On small random nets, `y[k] <= t` with t just around the sampled maximum: both outcomes occur, and the
    input-split verdict must agree with one monolithic MILP and never contradict dense sampling."""
    net = random_net(100 + seed)
    rn = relu_network(net)
    rng = np.random.default_rng(seed)
    lo = rng.uniform(-1, 0, 2)
    hi = lo + rng.uniform(0.3, 1.5, 2)
    X = np.stack(np.meshgrid(np.linspace(lo[0], hi[0], 301), np.linspace(lo[1], hi[1], 301)), -1).reshape(-1, 2)
    Y = rn.forward(X)
    k = seed % 3
    peak = Y[:, k].max()
    for t in (peak * (1 + 0.02) + 0.01, peak - 0.05 * (abs(peak) + 0.1)):
        spec = unsafe_from_clauses([[G.linear_atom(np.eye(3)[k], "<=", t, 0.0)]], 3)
        case = RegionCase(lo, hi, spec)
        verdict = verify_cases(net, [case], timeout=60, seed=seed)
        enc = encode_region_query(rn, lo, hi, spec, None)
        milp = HighsBackend().solve(enc.query, SolveOptions(time_limit=60))
        sampled_violation = bool(np.any(Y[:, k] > t))
        if verdict.status == "holds":
            assert not sampled_violation
            assert milp.status == INFEASIBLE
        else:
            assert verdict.status == "violated"
            assert milp.status != INFEASIBLE
            assert rn.forward(verdict.x32.astype(np.float64)[None])[0, k] > t
        if sampled_violation:
            assert verdict.status == "violated"


def test_search_without_falsification_finds_and_proves():
    net = random_net(3)
    rn = relu_network(net)
    lo, hi = np.array([-1.0, -1.0]), np.array([1.0, 1.0])
    X = np.random.default_rng(0).uniform(lo, hi, (20000, 2))
    peak = rn.forward(X)[:, 0].max()
    solve = lambda q: HighsBackend().solve(q, SolveOptions(time_limit=30))  # noqa: E731
    for t, expected in ((peak + 0.5, "holds"), (peak - 0.01, "violated")):
        spec = unsafe_from_clauses([[G.linear_atom(np.eye(3)[0], "<=", t, 0.0)]], 3)
        res = search_box(rn, RegionCase(lo, hi, spec), solve,
                         lambda x: bool(spec.violated(rn.forward(x[None]))[0]), SearchOptions())
        assert res.status == expected
        plain = search_box(rn, RegionCase(lo, hi, spec), solve,
                           lambda x: bool(spec.violated(rn.forward(x[None]))[0]), SearchOptions(split=False))
        assert plain.status == expected


def test_confirmer_rejects_points_outside_the_unsafe_region():
    net = random_net(4)
    spec = unsafe_from_clauses([[G.linear_atom(np.eye(3)[0], "<=", 1e6, 0.0)]], 3)  # unsafe: y0 > 1e6
    case = RegionCase(np.array([-1.0, -1.0]), np.array([1.0, 1.0]), spec)
    ok, x32, _, _ = Confirmer(net).check(np.array([0.3, 0.3]), case)
    assert not ok and x32.dtype == np.float32


def test_marabou_backend_agrees_with_highs():
    pytest.importorskip("maraboupy")
    from patchlang.solvers.marabou import MarabouBackend

    net = random_net(5)
    rn = relu_network(net)
    lo, hi = np.array([-1.0, -1.0]), np.array([1.0, 1.0])
    peak = rn.forward(np.random.default_rng(0).uniform(lo, hi, (20000, 2)))[:, 1].max()
    for t in (peak + 0.3, peak - 0.05):
        spec = unsafe_from_clauses([[G.linear_atom(np.eye(3)[1], "<=", t, 0.0)], G.label_is(0, 3, 0.0, "argmax")], 3)
        enc = encode_region_query(rn, lo, hi, spec, None)
        a = MarabouBackend().solve(enc.query, SolveOptions(time_limit=30))
        b = HighsBackend().solve(enc.query, SolveOptions(time_limit=30))
        assert (a.status == INFEASIBLE) == (b.status == INFEASIBLE)


# ---------------------------------------------------------------------------------------------- shared: ACAS Xu


@pytest.mark.shared
@pytest.mark.parametrize("i,j,prop,expected", [(1, 1, 1, "holds"), (3, 3, 1, "holds"), (2, 1, 2, "violated"),
                                                (1, 1, 10, "holds"), (2, 9, 8, "violated"), (1, 7, 3, "violated")])
def test_acasxu_known_verdicts(shared_dir, i, j, prop, expected):
    from patchlang.model.loader import load_model
    from patchlang.model.runtime import OrtModel
    from patchlang.inputs.vnnlib import parse_vnnlib

    base = shared_dir / "benchmarks" / "acasxu"
    onnx = base / "onnx" / f"ACASXU_run2a_{i}_{j}_batch_2000.onnx"
    net = load_model(str(onnx))
    p = parse_vnnlib(base / "vnnlib" / f"prop_{prop}.vnnlib")
    cases = [RegionCase(c.lo, c.hi, unsafe_from_vnnlib(c.unsafe, 5)) for c in p.cases]
    verdict = verify_cases(net, cases, timeout=120)
    assert verdict.status == expected
    if expected == "violated":
        y = OrtModel(str(onnx)).run(verdict.x32.reshape(1, -1)).astype(np.float64)
        assert p.is_counterexample(verdict.x32.astype(np.float64), y[0])


def test_vnnlib_export_round_trip(tmp_path):
    from patchlang.lang.program import PropertySpec
    from patchlang.inputs.vnnlib import parse_vnnlib
    from patchlang.tasks.property_export import property_to_vnnlib
    from patchlang.tasks.verify import property_cases

    program = load_program(EXAMPLE / "verify.patch")
    net = program.models["net"].net
    for name, expected in (("capped", "holds"), ("never_two", "violated")):
        path = property_to_vnnlib(program.properties[name], net, tmp_path / f"{name}.vnnlib")
        back = parse_vnnlib(path)
        prop = PropertySpec(name, program.properties[name].span, [(c.lo, c.hi) for c in back.cases],
                            unsafe_dnf=[c.unsafe for c in back.cases], source="vnnlib")
        assert verify_cases(net, property_cases(prop, net), timeout=60).status == expected


@pytest.mark.parametrize("seed", range(8))
def test_relaxation_first_keeps_every_verdict(seed):
    """`relaxation_first` (verification leaves) may only skip branching when the LP relaxation is already
    infeasible: on whole-box queries of random nets with thresholds on both sides of the true maximum, the status
    must equal the plain MILP's, and some cases must be decided by the relaxation alone (else it is not tested)."""
    net = random_net(200 + seed, sizes=(2, 10, 10, 3))
    rn = relu_network(net)
    lo, hi = np.array([-1.0, -1.0]), np.array([1.0, 1.0])
    X = np.random.default_rng(seed).uniform(lo, hi, (20000, 2))
    peak = rn.forward(X)[:, 1].max()
    by_relaxation = 0
    for t in (peak + 2.0, peak + 0.05, peak - 0.05):
        spec = unsafe_from_clauses([[G.linear_atom(np.eye(3)[1], "<=", t, 0.0)]], 3)
        q = encode_region_query(rn, lo, hi, spec, None).query
        plain = HighsBackend().solve(q, SolveOptions(time_limit=60))
        fast = HighsBackend().solve(q, SolveOptions(time_limit=60, relaxation_first=True))
        assert (fast.status == INFEASIBLE) == (plain.status == INFEASIBLE)
        by_relaxation += fast.message == "the LP relaxation is infeasible"
    assert by_relaxation >= 1  # the far threshold: refuted without branching



def test_input_split_leaves_are_searched_by_bound():
    """The input-split search hands its leaf MILPs to a solver that takes ``bound_only`` as searches by bound
    (HiGHS without primal heuristics: half the MILP time on ACAS Xu), and the verdicts stay right on both sides
    of the sampled maximum: a proof above it, a confirmed point below it."""
    net = random_net(3)
    rn = relu_network(net)
    lo, hi = np.array([-1.0, -1.0]), np.array([1.0, 1.0])
    X = np.random.default_rng(0).uniform(lo, hi, (20000, 2))
    peak = rn.forward(X)[:, 0].max()
    asked: list[bool] = []

    def solve(q, time_limit=None, bound_only=False):
        asked.append(bound_only)
        extra = HighsBackend.bound_only_options if bound_only else {}
        return HighsBackend().solve(q, SolveOptions(time_limit=30, extra=dict(extra)))

    for t, expected in ((peak + 0.05, "holds"), (peak - 0.01, "violated")):
        spec = unsafe_from_clauses([[G.linear_atom(np.eye(3)[0], "<=", t, 0.0)]], 3)
        res = search_box(rn, RegionCase(lo, hi, spec), solve,
                         lambda x: bool(spec.violated(rn.forward(x[None]))[0]),
                         SearchOptions(milp_depth=0, milp_unstable=100))
        assert res.status == expected
    assert asked and all(asked)
