"""`verify` on a model patchlang cannot encode (issue 11 item 4): never refused, searched as a black box.

The model starts with Softplus, which no encoder handles: `check` warns (PL380) and shows the class ``none``;
`run` reports a violated property with a counterexample re-checked here with onnxruntime on the file, and a
property that holds as ``unknown`` (exit 3) with the reason no proof was attempted, never ``holds``.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from onnx import helper

from conftest import make_model
from patchlang.cli import main
from patchlang.compile import goals as G
from patchlang.compile.verify import RegionCase, unsafe_from_clauses
from patchlang.model.build import network_from_arrays
from patchlang.model.runtime import ort_outputs
from patchlang.tasks.falsifiers import AttackOptions, attack_cases

W1 = np.array([[1.0, 1.0], [1.0, -1.0]], np.float32)
W2 = np.eye(2, dtype=np.float32)


def softplus_model(path: Path) -> Path:
    """``y0 = softplus(x0) + softplus(x1)``, ``y1 = relu(softplus(x0) - softplus(x1))``: on [0, 1]^2, y0 reaches
    2 ln(1 + e) = 2.627 at (1, 1) and no more."""
    import onnx

    nodes = [helper.make_node("Softplus", ["x"], ["s"]),
             helper.make_node("Gemm", ["s", "W1", "b1"], ["h"], transB=1),
             helper.make_node("Relu", ["h"], ["r"]),
             helper.make_node("Gemm", ["r", "W2", "b2"], ["y"], transB=1)]
    model = make_model(nodes, {"W1": W1, "b1": np.zeros(2, np.float32), "W2": W2, "b2": np.zeros(2, np.float32)},
                       ["N", 2])
    onnx.save(model, str(path))
    return path


def spec(tmp_path: Path, cap: float, extra: str = "") -> Path:
    softplus_model(tmp_path / "sp.onnx")
    path = tmp_path / "sp.patch"
    path.write_text('model net = "sp.onnx"\n'
                    f"property p {{ input box lo [0, 0] hi [1, 1] ensure y[0] <= {cap} }}\n"
                    f'verify net satisfies p timeout 30 {extra}\n', encoding="utf-8")
    return path


def cli(capsys, *argv) -> tuple[int, str]:
    code = main([str(a) for a in argv])
    out = capsys.readouterr()
    return code, out.out + out.err


def test_check_warns_and_shows_no_proof(tmp_path, capsys):
    code, out = cli(capsys, "check", spec(tmp_path, 2.5))
    assert code == 0, out
    assert "PL380 warning" in out and "cannot be proven" in out and "Softplus" in out
    assert "violated (with a checked counterexample) or unknown, never holds" in out
    assert "none: falsification only, no proof attempted" in out and "MILP" not in out


def test_violated_with_a_counterexample_checked_on_the_file(tmp_path, capsys):
    path = spec(tmp_path, 2.5, 'save "cex.npy"')
    code, out = cli(capsys, "run", path, "--json", tmp_path / "r.json")
    assert code == 1, out
    task = json.loads((tmp_path / "r.json").read_text())["tasks"][0]
    assert task["status"] == "violated" and task["class"] == "none"
    assert "confirmed in float64 and by onnxruntime" in task["message"]
    x = np.load(tmp_path / "cex.npy").astype(np.float32).reshape(1, 2)
    assert np.all((x >= 0) & (x <= 1))
    y = ort_outputs(str(tmp_path / "sp.onnx"), x)  # independently, on the file
    assert y[0, 0] > 2.5
    assert np.isclose(y[0, 0], np.sum(np.log1p(np.exp(x.astype(float)))), atol=1e-5)


def test_holding_property_is_unknown_never_holds(tmp_path, capsys):
    code, out = cli(capsys, "run", spec(tmp_path, 2.7), "--json", tmp_path / "r.json")
    assert code == 3, out
    task = json.loads((tmp_path / "r.json").read_text())["tasks"][0]
    assert task["status"] == "unknown"
    assert "no proof was attempted because model `net`" in task["message"]
    assert "Softplus" in task["message"] and "a search proves nothing" in task["message"]
    # the search got close to the true maximum (2.627, slack 0.073) yet claimed nothing
    assert 0.07 < task["details"]["satisfaction"] < 0.2


def test_falsify_with_clause_chooses_the_search(tmp_path, capsys):
    code, out = cli(capsys, "run", spec(tmp_path, 2.5, "falsify with random (queries = 500)"), "--json",
                    tmp_path / "r.json")
    task = json.loads((tmp_path / "r.json").read_text())["tasks"][0]
    assert code == 1 and task["status"] == "violated", out
    assert task["details"]["falsifier"] == "random" and task["details"]["falsifier queries"] <= 500


def test_repair_on_such_a_model_is_still_refused_by_check_and_run(tmp_path, capsys):
    """A repair must end in a proof, so it cannot fall back to a search: check and run both refuse it."""
    softplus_model(tmp_path / "sp.onnx")
    path = tmp_path / "rep.patch"
    path.write_text('model net = "sp.onnx"\nproperty p { input box lo [0, 0] hi [1, 1] ensure y[0] <= 2.5 }\n'
                    "repair net for p { edit layer -1 biases }\n", encoding="utf-8")
    for cmd in ("check", "run"):
        code, out = cli(capsys, cmd, path)
        assert code == 2 and "PL267" in out and "Softplus" in out, out


# ------------------------------------------------------------------------------------------- the targeted search


def _decoy_net(d: int = 10):
    """Three scores on [-0.1, 0.1]^d: y0 = 1, y1 = 0.95 (the closest rival, never winning), y2 = 0.2 + sum(x).
    "label stays 0" fails only where sum(x) > 0.8, a corner uniform sampling essentially never hits; descending
    the overall satisfaction follows y1, whose gradient is zero."""
    W = np.zeros((3, d))
    W[2] = 1.0
    return network_from_arrays([W], [np.array([1.0, 0.95, 0.2])])


def _decoy_case(d: int = 10) -> RegionCase:
    ensure = [[G.linear_atom(np.array([1.0, -1.0, 0.0]), ">=", 0.0, 0.0)],
              [G.linear_atom(np.array([1.0, 0.0, -1.0]), ">=", 0.0, 0.0)]]  # y0 >= y1 and y0 >= y2: label 0 kept
    return RegionCase(-0.1 * np.ones(d), 0.1 * np.ones(d), unsafe_from_clauses(ensure, 3))


def test_targeted_finds_the_violation_behind_a_decoy_rival():
    net = _decoy_net()
    case = _decoy_case()

    def confirm(x, case):
        y = net.forward(np.asarray(x, float)[None])
        return bool(case.spec.violated(y)[0]), np.asarray(x, np.float32), y[0], None

    found = attack_cases([case], net.forward, confirm, AttackOptions("targeted", 1000, seed=0))
    assert found.found and found.queries <= 1000 and np.sum(found.x32) > 0.8
    baseline = attack_cases([case], net.forward, confirm, AttackOptions("random", 1000, seed=0))
    assert not baseline.found  # the corner holds ~1e-6 of the box


def test_plan_shows_the_search_not_a_query(tmp_path, capsys):
    code, out = cli(capsys, "plan", spec(tmp_path, 2.5))
    assert code == 0, out
    assert "none: falsification only, no proof attempted" in out and "MILP" not in out
    assert "black-box search (targeted, then auto)" in out


def test_verify_first_search_is_targeted_too():
    """verify's white-box first search (exact gradients) has the same per-conjunction stage: without it, the
    descent of the satisfaction follows the decoy and finds nothing."""
    from patchlang.compile.bounds import relu_network
    from patchlang.tasks.falsify import FalsifyOptions, falsify_case

    rn, case = relu_network(_decoy_net()), _decoy_case()
    plain = falsify_case(rn, case, FalsifyOptions(seed=0))
    targeted = falsify_case(rn, case, FalsifyOptions(seed=0, targeted=True))
    assert plain.x is None and plain.best > 0
    assert targeted.x is not None and np.sum(targeted.x) > 0.8
