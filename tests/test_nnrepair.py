"""Issue 13 (NNrepair): fault localization in the language, activation patterns, hidden-layer goals, per-class
experts and their combinations as standard ONNX files.  Golden values by hand, differential checks against direct
recomputation, and the example spec end to end."""

from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np
import pytest

from patchlang.api import RunOptions, load_program, load_program_text, run_program
from patchlang.errors import SpecError
from patchlang.lang.format import format_source
from patchlang.lang.parser import parse_text
from patchlang.model import load_model, network_from_arrays
from patchlang.model.combine import RULES, combination_onnx, combine64, merged_network
from patchlang.model.localize import localize
from patchlang.model.patterns import mine_patterns, pre_activations
from patchlang.model.runtime import OrtModel
from patchlang.tasks.patch import run_patch

REPO = Path(__file__).resolve().parents[1]
MODELS = REPO / "examples" / "models"
HEAD = f'''model net = "{MODELS / 'digits_mlp.onnx'}"
points test = "{MODELS / 'digits_test.npz'}"
points wrong = test where misclassified(net)
points right = test[0:100] where correct(net)
'''


def _digits():
    net = load_model(str(MODELS / "digits_mlp.onnx"))
    d = np.load(MODELS / "digits_test.npz")
    return net, d["x"].astype(np.float64), d["y"].astype(int)


def test_new_syntax_parses_and_formats() -> None:
    src = HEAD + '''patch p on net {
    edit top 2 % suspicious weights of layer 0 for wrong against right
    change wrong to label
}
repair net as e by experts {
    failing wrong
    passing right
    edit top 5 suspicious weights of layer -1
    combine naive,voting
    filter f1 on test
    oracle labels
    classes {1, 2}
}
'''
    out = format_source(src)
    assert "edit top 2% suspicious weights of layer 0 for wrong against right" in out
    assert "    combine naive, voting" in out
    assert format_source(out) == out
    st = parse_text(out).statements
    edit = st[4].items[0]
    assert (edit.count, edit.percent, edit.layer) == (2.0, True, 0)
    assert [i.name for i in st[5].items if hasattr(i, "name")] == ["failing", "passing", "combine", "filter",
                                                                    "oracle", "classes"]


def test_defect_scores_golden() -> None:
    """Last layer 2 -> 2 (identity hidden): score(n, j) = |W_nj| (mean_fail |a_j| - mean_pass |a_j|) over the
    failing inputs whose target is n; by hand."""
    net = network_from_arrays([np.eye(2), np.array([[1.0, -2.0], [3.0, 0.5]])], [np.zeros(2), np.zeros(2)])
    fail_x = np.array([[2.0, 1.0], [4.0, 3.0]])  # both must become class 1
    pass_x = np.array([[1.0, 1.0]])
    loc = localize(net, 1, 2, False, fail_x, np.array([1, 1]), pass_x, None)
    # mean_fail |a| = (3, 2), mean_pass = (1, 1): scores of neuron 1: 3 * 2 = 6, 0.5 * 1 = 0.5
    assert loc.chosen == [(1, 0, 6.0), (1, 1, 0.5)]
    assert loc.mask.tolist() == [[False, False], [True, True]]
    assert list(loc.neurons) == [1]
    one = localize(net, 1, 50, True, fail_x, np.array([1, 1]), pass_x, None)  # 50% of 4 weights: 2
    assert len(one.chosen) == 2


def test_defect_scores_match_direct_means() -> None:
    """Differential: the chosen edges' scores equal mean |a w| over failing minus passing, computed directly."""
    net, x, y = _digits()
    wrong = net.labels(x) != y
    fx, ft, px = x[wrong], y[wrong], x[~wrong][:80]
    loc = localize(net, 1, 12, False, fx, ft, px, y[~wrong][:80])
    a_f = net.forward_suffix(fx, 0, 2)
    a_p = net.forward_suffix(px, 0, 2)
    W = net.affine(1).W
    for n, j, s in loc.chosen:
        rows = ft == n
        direct = np.mean(np.abs(a_f[rows, j] * W[n, j])) - np.mean(np.abs(a_p[:, j] * W[n, j]))
        assert s == pytest.approx(direct, rel=1e-9, abs=1e-12)
    scores = [s for _, _, s in loc.chosen]
    assert scores == sorted(scores, reverse=True)


def test_patterns_support_and_precision_recounted() -> None:
    net, x, y = _digits()
    pats = mine_patterns(net, 0, x, y)
    correct = net.labels(x) == y
    z = pre_activations(net, 0, x[correct])
    yc = y[correct]
    assert set(pats) == set(np.unique(yc))
    for c, p in pats.items():
        follows = p.follows(z)
        mine = yc == c
        # the leaf's inputs are a subset of those following its conditions: support can only be <= the recount
        assert p.support <= np.count_nonzero(follows & mine) / np.count_nonzero(mine) + 1e-12
        assert 0 < p.support <= 1 and 0 < p.precision <= 1
        assert p.n_inputs == int(np.count_nonzero(mine))


def _program(body: str):
    return load_program_text(HEAD + body, str(REPO))


@pytest.mark.parametrize("body,code", [
    ("patch p on net {\n edit top 3 suspicious weights of layer -1\n keep right\n}\n", "PL321"),
    ("patch p on net {\n edit top 0 suspicious weights of layer -1\n change wrong to label\n}\n", "PL322"),
    ("patch p on net {\n edit top 150% suspicious weights of layer -1\n change wrong to label\n}\n", "PL322"),
    ("repair net by experts {\n failing wrong\n edit top 3 suspicious weights of layer -1\n}\n", "PL323"),
    ("repair net by experts {\n failing wrong\n passing right\n edit top 3 suspicious weights of layer -1\n"
     " combine best\n}\n", "PL324"),
    ("repair net by experts {\n failing wrong\n passing right\n edit top 3 suspicious weights of layer -1\n"
     " oracle patterns\n}\n", "PL325"),
    ("repair net by experts {\n failing wrong\n passing right\n edit top 3 suspicious weights of layer -1 for wrong\n"
     "}\n", "PL327"),
    ("repair net by experts {\n failing wrong\n passing right\n edit top 3 suspicious weights of layer 0\n"
     " edit layer -1 biases\n}\n", "PL325"),
])
def test_errors_have_codes(body: str, code: str) -> None:
    with pytest.raises(SpecError) as info:
        _program(body)
    assert code in [d.code for d in info.value.diagnostics], [d.render() for d in info.value.diagnostics]
    assert all(d.help for d in info.value.diagnostics if d.code == code)


def test_experts_need_a_combinable_model() -> None:
    src = HEAD.replace('digits_mlp.onnx"', 'digits_mlp.onnx" decide argmin') + (
        "repair net by experts {\n failing wrong\n passing right\n edit top 3 suspicious weights of layer -1\n}\n")
    with pytest.raises(SpecError) as info:
        load_program_text(src, str(REPO))
    assert [d.code for d in info.value.diagnostics] == ["PL329"]


def test_localized_patch_lowers_to_explicit_edges_and_solves() -> None:
    prog = _program("patch p on net {\n edit top 5% suspicious weights of layer -1\n change wrong[0:3] to label\n"
                    " keep right\n}\n")
    task = prog.tasks[0]
    assert len(task.edits) == 1 and int(task.edits[0].mask.sum()) == 16  # 5% of 320, rounded up
    chosen = {(n, j) for n, j, _ in task.localized[0].chosen}
    assert chosen == {tuple(ix) for ix in np.argwhere(task.edits[0].mask)}
    r = run_patch(task, RunOptions(write_files=False))
    assert r.status == "patched" and all(c.ok for c in r.checks)
    moved = np.nonzero(r.deltas[0][1])
    assert set(zip(*moved)) <= chosen  # nothing outside the localized edges moved


def test_inner_expert_takes_the_pattern_as_an_lp() -> None:
    """The activation-pattern oracle: sign rows on hidden pre-activations, no ReLU after them (an LP); the patched
    network's failing inputs really take their class's pattern (recomputed here in float64)."""
    prog = _program("repair net as e by experts {\n failing wrong\n passing right\n"
                    " edit top 5% suspicious weights of layer 0\n}\n")
    task = prog.tasks[0]
    assert task.oracle == "patterns" and task.experts
    e = max(task.experts, key=lambda e: e.n_failing)
    r = run_patch(e.patch, RunOptions(write_files=False, explain=False))
    assert r.status == "patched" and r.problem_class == "LP" and all(c.ok for c in r.checks)
    assert r.query_size["relu_atoms"] == 0
    # the passing points that took their class's pattern still take it (re-evaluated here, not by the task)
    passing = e.patch.goals[1].points
    z0, z1 = pre_activations(task.model.net, 0, passing.x), pre_activations(r.patched, 0, passing.x)
    for i, c in enumerate(passing.y):
        p = task.patterns.get(int(c))
        if p is not None and p.follows(z0[i])[0]:
            moved = np.intersect1d(p.neurons, e.patch.goals[1].neurons)
            assert np.array_equal(z1[i, moved] > 0, z0[i, moved] > 0)
    fail = e.patch.goals[0].points
    pattern = task.patterns[e.label]
    assert np.all(pattern.follows(pre_activations(r.patched, 0, fail.x)))
    assert not np.all(pattern.follows(pre_activations(task.model.net, 0, fail.x)))


def test_combinations_onnx_match_float64() -> None:
    """Differential: every rule's ONNX file (onnxruntime, float32) against combine64 (float64) on random heads."""
    net, x, _ = _digits()
    rng = np.random.default_rng(0)
    heads = []
    for c in range(10):
        W = net.affine(1).W.copy()
        W[c] += rng.normal(0, 0.3, W.shape[1])
        heads.append(net.with_affine(1, W=W))
    for rule in RULES:
        y64 = combine64(net, heads, rule, x)
        y32 = OrtModel(combination_onnx(net, heads, rule)).run(x.astype(np.float32))
        assert np.max(np.abs(y64 - y32)) < 1e-3, rule
        assert np.mean(np.argmax(y64, 1) == np.argmax(y32, 1)) > 0.99, rule
    merged = merged_network(net, heads)
    expected = net.affine(1).W + sum(h.affine(1).W - net.affine(1).W for h in heads)
    assert np.allclose(merged.affine(1).W, expected)
    # naive: the original's decision picks the head
    y = combine64(net, heads, "naive", x[:5])
    for i, l in enumerate(net.labels(x[:5])):
        assert np.allclose(y[i], heads[l].forward(x[i:i + 1])[0])


def test_example_runs_end_to_end(tmp_path: Path) -> None:
    src = REPO / "examples" / "nnrepair" / "experts.patch"
    (tmp_path / "nnrepair").mkdir()
    shutil.copy(src, tmp_path / "nnrepair" / "experts.patch")
    shutil.copytree(MODELS, tmp_path / "models")
    prog = load_program(tmp_path / "nnrepair" / "experts.patch")
    result = run_program(prog)
    assert result.exit_code == 0
    last = next(t for t in result.tasks if t.name == "last")
    assert last.status == "patched"
    combos = last.details["combinations"]
    assert {(c["combination"], c["f1_filter"]) for c in combos} == {(r, f) for r in RULES for f in (False, True)}
    assert all(c["agree"] == c["checked"] for c in combos)
    from patchlang.report.text import task_lines

    lines = task_lines(last)
    assert lines[0] == "last: patched: 10 of 10 class expert(s); each a proven minimal change for its class"
    assert sum(line.startswith("combined  ") for line in lines) == 8
    merged = next(c for c in combos if c["combination"] == "merged" and not c["f1_filter"])
    assert merged["failing_accuracy"] > 0.2 and merged["overhead"] < 2.0
    written = sorted(p.name for p in (tmp_path / "nnrepair" / "out").iterdir())
    assert written == sorted(f"digits_experts_{r}{s}.onnx" for r in RULES for s in ("", "_f1"))
    # the merged file is an ordinary network with the original's shape: same outputs as the float64 merge
    d = np.load(MODELS / "digits_test.npz")
    y32 = OrtModel(str(tmp_path / "nnrepair" / "out" / "digits_experts_merged.onnx")).run(d["x"])
    assert y32.shape == (len(d["x"]), 10)


def test_plan_and_check_commands_on_the_example(capsys) -> None:
    from patchlang.cli import main

    spec = str(REPO / "examples" / "nnrepair" / "experts.patch")
    assert main(["check", spec]) == 0
    out = capsys.readouterr().out
    assert "suspicious weight(s) into neuron(s)" in out and "precision" in out
    from patchlang.lang.select import task_tags

    tagged = load_program_text(HEAD + 'repair net as e by experts {\n failing wrong\n passing right\n'
                               ' edit top 3 suspicious weights of layer -1\n tag "quick"\n}\n', str(REPO))
    assert task_tags(tagged) == {"e": ("quick",)}
    assert main(["plan", spec]) == 0
    out = capsys.readouterr().out
    assert "expert(s), one patch per class" in out and "lazy_keep" not in out.split("repair hidden")[1]


def test_f1_filter_golden() -> None:
    from patchlang.tasks.experts import f1_of_class, near_ties

    truth = np.array([0, 0, 1, 1, 2])
    assert f1_of_class(np.array([0, 1, 1, 1, 2]), truth, 0) == pytest.approx(2 / 3)  # tp 1, fn 1
    assert f1_of_class(np.array([0, 1, 1, 1, 2]), truth, 1) == pytest.approx(0.8)  # tp 2, fp 1
    assert f1_of_class(np.array([2, 2, 2, 2, 2]), truth, 0) == 0.0
    y = np.array([[1.0, 1.0 + 1e-6, 0.0], [0.0, 1.0, 3.0]])
    assert near_ties(y).tolist() == [True, False]


def test_f1_filter_keeps_only_experts_that_beat_the_original() -> None:
    from patchlang.tasks.experts import f1_filter

    net, x, y = _digits()
    better = net.with_affine(1, b=net.affine(1).b + np.eye(10)[3] * 0.0)  # identical: never strictly better
    worse = net.with_affine(1, b=net.affine(1).b - np.eye(10)[5] * 100.0)  # never predicts 5
    kept, scores = f1_filter(net, {3: better, 5: worse}, x, y)
    assert kept == [] and scores[3][0] == scores[3][1] and scores[5][0] == 0.0


def test_hidden_goals_before_the_edit_are_refused() -> None:
    from patchlang.compile.goals import GoalGroup, PointGoal, sign_rows
    from patchlang.compile.patch import PatchEncoder
    from patchlang.errors import PatchlangError
    from patchlang.model.edits import EditSpec, NormSpec

    net, x, _ = _digits()
    edit = EditSpec(1, "weights", np.ones(net.affine(1).W.shape, bool))
    enc = PatchEncoder(net, [edit], NormSpec())
    group = GoalGroup("hidden", "change", None, [PointGoal("p", x[0], [[sign_rows(np.array([0]), np.array([1.0]),
                                                                                   np.array([0.1]), 32)]])], at=0)
    with pytest.raises(PatchlangError):
        enc.add_goal_group(group)


def test_bulk_sign_rows_match_the_general_encoding(monkeypatch: pytest.MonkeyPatch) -> None:
    """Differential: the bulk rows for pattern goals at the edited layer and the general (per point) hidden path
    give the same optimum."""
    from patchlang.compile.patch import PatchEncoder

    prog = _program("repair net as e by experts {\n failing wrong\n passing right\n"
                    " edit top 5% suspicious weights of layer 0\n edit layer 0 biases\n minimize l1\n}\n")
    task = max(prog.tasks[0].experts, key=lambda e: e.n_failing).patch
    fast = run_patch(task, RunOptions(write_files=False, explain=False))
    monkeypatch.setattr(PatchEncoder, "_add_edited_layer_signs", lambda self, group: False)
    slow = run_patch(task, RunOptions(write_files=False, explain=False))
    assert fast.status == slow.status == "patched"
    assert fast.objective == pytest.approx(slow.objective, rel=1e-6, abs=1e-9)
    assert fast.query_size["rows"] == slow.query_size["rows"]


def test_patterns_without_scikit_learn_are_a_spec_error(monkeypatch: pytest.MonkeyPatch) -> None:
    import sys

    monkeypatch.setitem(sys.modules, "sklearn.tree", None)  # import fails as if scikit-learn were missing
    with pytest.raises(SpecError) as info:
        _program("repair net by experts {\n failing wrong\n passing right\n"
                 " edit top 5% suspicious weights of layer 0\n}\n")
    assert "PL330" in [d.code for d in info.value.diagnostics]
