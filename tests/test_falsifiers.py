"""Black-box falsifiers (`falsify [only] with METHOD`): every method finds confirmed counterexamples, counts its
queries, respects its budget, searches every box of a union, and works on models that are not ReLU networks."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from onnx import helper

from conftest import run_copied_spec
from patchlang.api import RunOptions, load_program_text, run_program, satisfaction
from patchlang.compile import goals as G
from patchlang.compile.verify import RegionCase, unsafe_from_clauses
from patchlang.errors import SpecError
from patchlang.model.build import network_from_arrays
from patchlang.tasks.falsifiers import METHODS, AttackOptions, attack_cases

REPO = Path(__file__).resolve().parents[1]
EXAMPLES = REPO / "examples" / "verify"

NEVER_TWO = """
model net = "tiny.onnx"
property never_two {
    input box lo [0.5, -1] hi [1, -0.5]
    ensure label is not 2
}
"""


@pytest.mark.parametrize("method", METHODS)
def test_every_method_finds_the_examples_counterexample_from_the_language(method):
    src = NEVER_TWO + f"verify net satisfies never_two falsify only with {method} (queries = 3000)\n"
    program = load_program_text(src, EXAMPLES)
    result = run_program(program, RunOptions(write_files=False))
    r = result.tasks[0]
    assert r.status == "violated" and result.exit_code == 1, r.message
    assert 1 <= r.details["falsifier queries"] <= 3000 and r.details["satisfaction"] < 0
    assert r.details["falsifier"] == (method if method != "auto" else "differential_evolution")
    x = np.array(r.details["counterexample"], np.float32)
    net = program.models["net"].net
    assert satisfaction(program.properties["never_two"], net, x[None])[0] < 0  # re-checked here once more
    assert "confirmed in float64 and by onnxruntime" in r.message


def test_falsify_first_in_a_complete_verify_reports_the_falsifier():
    src = NEVER_TWO + "verify net satisfies never_two falsify with shgo timeout 30\n"
    r = run_program(load_program_text(src, EXAMPLES), RunOptions(write_files=False)).tasks[0]
    assert r.status == "violated" and r.details["falsifier"] == "shgo" and "falsify" in r.seconds
    assert "shgo" in r.message


def _net(seed: int = 11):
    rng = np.random.default_rng(seed)
    sizes = (3, 12, 12, 4)
    Ws = [rng.standard_normal((sizes[k + 1], sizes[k])) / np.sqrt(sizes[k]) for k in range(3)]
    bs = [0.2 * rng.standard_normal(sizes[k + 1]) for k in range(3)]
    return network_from_arrays(Ws, bs)


def _confirm(net):
    def check(x, case):
        y = net.forward(np.asarray(x, float)[None])
        return bool(case.spec.violated(y)[0]), np.asarray(x, np.float32), y[0], None
    return check


@pytest.mark.parametrize("method", ["shgo", "differential_evolution", "basinhopping", "gradient"])
def test_narrow_violation_near_the_peak(method):
    net = _net()
    lo, hi = -np.ones(3), np.ones(3)
    X = np.random.default_rng(5).uniform(lo, hi, (100_000, 3))
    peak = net.forward(X)[:, 2].max()
    spec = unsafe_from_clauses([[G.linear_atom(np.eye(4)[2], "<=", peak - 2e-3, 0.0)]], 4)
    r = attack_cases([RegionCase(lo, hi, spec)], net.forward, _confirm(net), AttackOptions(method, 6000, seed=1))
    assert r.found and r.fsat < 0 and r.queries <= 6000, (r.fsat, r.queries)
    assert net.forward(r.x32.astype(float)[None])[0, 2] > peak - 2e-3


def test_budget_respected_and_nothing_claimed_when_the_property_holds():
    net = _net()
    spec = unsafe_from_clauses([[G.linear_atom(np.eye(4)[0], "<=", 1e3, 0.0)]], 4)
    calls = []

    def evaluate(X):
        calls.append(len(X))
        return net.forward(X)

    for method in ("shgo", "differential_evolution", "random"):
        calls.clear()
        r = attack_cases([RegionCase(-np.ones(3), np.ones(3), spec)], evaluate, _confirm(net),
                         AttackOptions(method, 700))
        assert not r.found and r.x32 is None and r.fsat > 0
        assert sum(calls) == r.queries <= 700


def test_union_of_boxes_is_searched_box_by_box():
    net = _net()
    y = net.forward(np.random.default_rng(0).uniform(-1, 1, (20000, 3)))
    spec_hard = unsafe_from_clauses([[G.linear_atom(np.eye(4)[0], ">=", float(y[:, 0].min()) - 10, 0.0)]], 4)
    spec_easy = unsafe_from_clauses([[G.linear_atom(np.eye(4)[0], ">=", float(np.median(y[:, 0])), 0.0)]], 4)
    cases = [RegionCase(-np.ones(3), np.zeros(3), spec_hard, "box 0"), RegionCase(np.zeros(3), np.ones(3), spec_easy,
                                                                              "box 1")]
    r = attack_cases(cases, net.forward, _confirm(net), AttackOptions("differential_evolution", 2000))
    assert r.found and r.case == 1 and np.all(r.x32 >= 0)
    assert r.queries > 900  # the first box had its share (half the budget) before the second was searched


def test_fixed_inputs_are_not_searched():
    net = _net()
    spec = unsafe_from_clauses([G.label_is(0, 4, 0.0, "argmax")], 4)  # any other label
    lo, hi = np.array([-1.0, 0.3, -1.0]), np.array([1.0, 0.3, 1.0])
    r = attack_cases([RegionCase(lo, hi, spec)], net.forward, _confirm(net), AttackOptions("shgo", 2000))
    assert r.found and r.x32[1] == np.float32(0.3)


def test_a_model_with_tanh_and_sigmoid(tmp_path):
    """Not piecewise linear: only the black-box falsifier applies; onnxruntime is the oracle."""
    import onnx

    from tests.conftest import make_model

    rng = np.random.default_rng(3)
    f32 = lambda *s: rng.standard_normal(s).astype(np.float32)  # noqa: E731
    model = make_model([
        helper.make_node("Gemm", ["x", "W1", "b1"], ["h"], transB=1),
        helper.make_node("Tanh", ["h"], ["t"]),
        helper.make_node("Gemm", ["t", "W2", "b2"], ["u"], transB=1),
        helper.make_node("Sigmoid", ["u"], ["s"]),
        helper.make_node("Gemm", ["s", "W3", "b3"], ["y"], transB=1),
    ], {"W1": f32(8, 2), "b1": f32(8), "W2": f32(8, 8), "b2": f32(8), "W3": f32(3, 8), "b3": f32(3)}, ["N", 2])
    onnx.save(model, str(tmp_path / "smooth.onnx"))
    src = """
model m = "smooth.onnx"
property p {
    input box lo [-2, -2] hi [2, 2]
    ensure label is 0
}
verify m satisfies p falsify only with differential_evolution (queries = 4000) save "cex.npy"
"""
    program = load_program_text(src, tmp_path)
    result = run_program(program, RunOptions())
    r = result.tasks[0]
    assert r.status == "violated", r.message
    x = np.load(tmp_path / "cex.npy")
    from patchlang.model.runtime import ort_outputs

    assert int(np.argmax(ort_outputs(str(tmp_path / "smooth.onnx"), x))) != 0
    payload = json.loads(json.dumps(r.details))  # the report's JSON carries the figures
    assert payload["falsifier queries"] >= 1


def test_unknown_falsifier_or_option_is_a_spec_error():
    for bad in ("falsify with magic", "falsify with shgo (budget = 3)"):
        with pytest.raises(SpecError) as exc:
            load_program_text(NEVER_TWO + f"verify net satisfies never_two {bad}\n", EXAMPLES)
        assert exc.value.diagnostics[0].code == "PL275"


def test_the_falsify_example_from_the_cli(tmp_path, capsys):
    """examples/verify/falsify.patch: SHGO finds the sliver, random with the same budget does not."""
    code, out, report = run_copied_spec(tmp_path, capsys, EXAMPLES, ("falsify.patch", "tiny.onnx"))
    assert code == 1, out
    tasks = report["tasks"]
    assert [t["status"] for t in tasks] == ["violated", "unknown", "violated"]
    assert tasks[0]["details"]["falsifier"] == "shgo" and tasks[0]["details"]["falsifier queries"] < 1000
    assert tasks[1]["details"]["falsifier queries"] == 3000
    assert "falsify" in tasks[0]["seconds"]
    x = np.load(tmp_path / "out" / "near_cap_cex.npy")
    from patchlang.model.runtime import ort_outputs

    assert ort_outputs(str(tmp_path / "tiny.onnx"), x)[0, 2] > 1.3


def test_shgo_in_many_dimensions_falls_back_and_says_so():
    rng = np.random.default_rng(4)
    net = network_from_arrays([rng.standard_normal((6, 12)), rng.standard_normal((3, 6))],
                              [rng.standard_normal(6), rng.standard_normal(3)])
    spec = unsafe_from_clauses([G.label_is(0, 3, 0.0, "argmax")], 3)
    r = attack_cases([RegionCase(-np.ones(12), np.ones(12), spec)], net.forward, _confirm(net),
                     AttackOptions("shgo", 3000))
    assert r.method == "differential_evolution" and "at most 10 free inputs" in r.notes[0]
