"""`attack` blocks: the language, the exact method against known answers and brute force, the bounds' soundness,
the AIGENT patch method, metrics and assertions, the saved file, and the digits example."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from patchlang.api import load_program_text, run_program
from patchlang.compile.attack import (box_layer_bounds, l0_crown_bounds, l0_layer_bounds, single_input_walk,
                                      target_spec)
from patchlang.compile.bounds import ReluNet
from patchlang.errors import SpecError
from patchlang.lang.format import format_source
from patchlang.model.build import network_from_arrays
from patchlang.model.onnx_export import save_network
from patchlang.tasks.attack_metrics import capped_per_class, pielou_evenness, summary
from patchlang.tasks.patch import RunOptions

REPO = Path(__file__).resolve().parents[1]
MARGIN = 1e-4


@pytest.fixture()
def sum_net(tmp_path: Path) -> Path:
    """Four inputs in [0, 1]; y0 = sum relu(x_i), y1 = 2.5.  At x0 = (1, 1, 1, 1) the label is 0 (4 > 2.5):
    the smallest flips are known by hand: l0 = 2 inputs, l1 = 1.5 + margin, linf = (1.5 + margin) / 4."""
    net = network_from_arrays([np.eye(4), np.array([[1.0, 1, 1, 1], [0, 0, 0, 0]])],
                              [np.zeros(4), np.array([0.0, 2.5])])
    save_network(net, str(tmp_path / "sum.onnx"))
    np.savez(tmp_path / "pts.npz", x=np.ones((1, 4), np.float32), y=np.array([0]))
    return tmp_path


def _spec(minimize: str, method: str = "exact", extra: str = "") -> str:
    return f"""model net = "sum.onnx"
points p = "pts.npz"
attack adv on net {{
    inputs p
    target away from label
    domain [0, 1]
    minimize {minimize}
    method {method}
    {extra}
}}
"""


def _run(folder: Path, text: str):
    program = load_program_text(text, folder, filename=str(folder / "a.patch"))
    return run_program(program, RunOptions(write_files=True))


@pytest.mark.parametrize("norm,expected", [("l0", 2.0), ("l1", 1.5 + MARGIN), ("linf", (1.5 + MARGIN) / 4)])
def test_exact_minimum_is_the_known_answer(sum_net: Path, norm: str, expected: float) -> None:
    result = _run(sum_net, _spec(norm))
    row = result.tasks[0].details["inputs"][0]
    assert row["status"] == "found" and row["new_label"] == 1
    assert row["proven_min"], row
    assert row[norm] == pytest.approx(expected, rel=1e-4, abs=2e-6)  # float32 rounding of the saved input
    assert row["lower_bound"] <= row[norm] + 1e-6


def test_bound_below_the_minimum_proves_none_exists(sum_net: Path) -> None:
    result = _run(sum_net, _spec("l0", extra="bound l0 <= 1"))
    row = result.tasks[0].details["inputs"][0]
    assert row["status"] == "none exists" and row["proven_min"]
    assert row["lower_bound"] == 2.0


def test_patch_method_finds_a_checked_attack(sum_net: Path) -> None:
    result = _run(sum_net, _spec("l0", "patch", 'save "adv.npz"'))
    row = result.tasks[0].details["inputs"][0]
    assert row["status"] == "found" and row["method"] == "patch" and row["l0"] >= 2
    saved = np.load(sum_net / "adv.npz")
    for key in ("original", "adversarial", "labels", "new_labels", "success", "l0", "l1", "l2", "linf",
                "proven_min", "lower_bound", "seconds"):
        assert key in saved
    net = network_from_arrays([np.eye(4), np.array([[1.0, 1, 1, 1], [0, 0, 0, 0]])],
                              [np.zeros(4), np.array([0.0, 2.5])])
    assert net.labels(saved["adversarial"].astype(np.float64))[0] == 1
    assert np.all((saved["adversarial"] >= 0) & (saved["adversarial"] <= 1))


def _random_net(seed: int, sizes: tuple[int, ...]) -> ReluNet:
    rng = np.random.default_rng(seed)
    Ws = [rng.normal(size=(o, i)) / np.sqrt(i) for i, o in zip(sizes[:-1], sizes[1:])]
    bs = [rng.normal(size=o) * 0.1 for o in sizes[1:]]
    return ReluNet(Ws, bs)


@pytest.mark.parametrize("seed", range(4))
def test_single_input_walk_agrees_with_a_dense_grid(seed: int) -> None:
    """Differential: the exact one-input walk finds an attack on input i iff a fine grid along that line does
    (grids can only miss attacks, so the walk must find at least as many; and it must not invent any)."""
    rn = _random_net(seed, (6, 10, 8, 3))
    x0 = np.random.default_rng(seed).uniform(size=6)
    label = int(np.argmax(rn.forward(x0[None])))
    targets = [j for j in range(3) if j != label]
    lo, hi = np.zeros(6), np.ones(6)
    walk = single_input_walk(rn, x0, lo, hi, target_spec(label, targets, 3), MARGIN)
    ts = np.linspace(0, 1, 4001)
    for p, i in enumerate(walk.inputs):
        X = np.repeat(x0[None], ts.size, axis=0)
        X[:, i] = ts
        y = rn.forward(X)
        grid = bool(np.any(np.max(y[:, targets], axis=1) - y[:, label] >= 2 * MARGIN))
        if grid:
            assert walk.found[p]
        if walk.found[p]:
            x = x0.copy()
            x[i] = walk.value[p]
            y1 = rn.forward(x[None])[0]
            assert np.max(y1[targets]) - y1[label] >= MARGIN - 1e-6


@pytest.mark.parametrize("k", [1, 2, 3])
def test_l0_bounds_contain_every_sampled_k_sparse_input(k: int) -> None:
    rn = _random_net(7, (20, 12, 9, 4))
    rng = np.random.default_rng(k)
    x0 = rng.uniform(size=20)
    lo, hi = np.zeros(20), np.ones(20)
    box = box_layer_bounds(rn, lo, hi)
    for bounds in (l0_layer_bounds(rn, x0, lo, hi, k, box), l0_crown_bounds(rn, x0, lo, hi, k, box)):
        X = np.repeat(x0[None], 3000, axis=0)
        for row in X:
            idx = rng.choice(20, size=k, replace=False)
            row[idx] = rng.choice([0.0, 1.0, rng.uniform()], size=k)
        h = X
        for layer, (W, b) in enumerate(zip(rn.Ws[:-1], rn.bs[:-1])):
            z = h @ W.T + b
            assert np.all(z >= bounds.lower[layer] - 1e-9) and np.all(z <= bounds.upper[layer] + 1e-9)
            h = np.maximum(z, 0.0)


def test_pielou_evenness() -> None:
    assert pielou_evenness([1, 2, 3, 4]) == pytest.approx(1.0)
    assert pielou_evenness([1, 1, 1]) is None
    assert 0 < pielou_evenness([1, 1, 1, 2]) < 1


# ------------------------------------------------------------------------------------------------ the language


def test_attack_block_formats_and_reparses() -> None:
    text = ('model net = "m.onnx"\npoints test = "t.npz"\nattack adv on net { inputs test[0:500] target to one of '
            '{1, 7} domain [0, 1] bound linf <= 1 minimize l1 method auto margin 0.001 save "adv.npz" '
            'limit time 5 tag "slow" }\nassert success_rate(adv) >= 0.8\nassert median_l0(adv) <= 10\n')
    out = format_source(text)
    assert "attack adv on net {\n    inputs test[0:500]\n    target to one of {1, 7}\n" in out
    assert "assert success_rate(adv) >= 0.8" in out
    assert format_source(out) == out


@pytest.mark.parametrize("body,code", [
    ("inputs p target away from label domain [0, 1] method fast", "PL340"),
    ("target away from label domain [0, 1]", "PL341"),
    ("inputs p target to 5 domain [0, 1]", "PL342"),
    ("inputs p target away from label", "PL343"),
    ("inputs p domain [0, 1] minimize l0 + l1", "PL345"),
    ("inputs p domain [0, 1] using z3", "PL346"),
    ("inputs p domain [1, 0]", "PL344"),
    ('inputs p domain [0, 1] save "adv.onnx"', "PL242"),
])
def test_attack_errors_point_at_the_statement(sum_net: Path, body: str, code: str) -> None:
    text = f'model net = "sum.onnx"\npoints p = "pts.npz"\nattack adv on net {{ {body} }}\n'
    with pytest.raises(SpecError) as err:
        load_program_text(text, sum_net, filename=str(sum_net / "a.patch"))
    rendered = [d.code for d in err.value.items]
    assert code in rendered, rendered
    assert all(d.help for d in err.value.items if d.code == code)


@pytest.mark.parametrize("assertion,hint", [("assert succes_rate(adv) >= 0.5", "did you mean `success_rate`"),
                                            ("assert success_rate(other) >= 0.5", "adv")])
def test_metric_assertions_are_checked(sum_net: Path, assertion: str, hint: str) -> None:
    text = _spec("l0") + assertion + "\n"
    with pytest.raises(SpecError) as err:
        load_program_text(text, sum_net, filename=str(sum_net / "a.patch"))
    assert [d.code for d in err.value.items] == ["PL347"]
    assert hint in (err.value.items[0].help or "")


def test_metric_assertions_evaluate(sum_net: Path) -> None:
    text = _spec("l0") + "assert success_rate(adv) >= 1\nassert median_l0(adv) <= 1\n"
    result = _run(sum_net, text)
    assert [a.holds for a in result.assertions] == [True, False]
    assert result.assertions[1].value == 2.0
    assert result.exit_code == 1


# ------------------------------------------------------------------------------------------------ the example


def test_digits_example_runs_with_both_methods(examples_copy: Path, capsys) -> None:
    from patchlang.cli import main

    spec = examples_copy / "attack" / "digits_attack.patch"
    code = main(["run", str(spec), "--json", str(examples_copy / "r.json")])
    out = capsys.readouterr().out
    report = json.loads((examples_copy / "r.json").read_text())
    assert code == 0, out
    fewest, aigent = report["tasks"]
    assert fewest["status"] == "attacked" and aigent["status"] == "attacked"
    rows = fewest["details"]["inputs"]
    found = [r for r in rows if r["status"] == "found"]
    assert found and all(r["proven_min"] for r in found)
    assert all(r["l0"] >= (r["lower_bound"] or 0) for r in found)
    assert any(r["method"] == "patch" and r["status"] == "found" for r in aigent["details"]["inputs"])
    saved = np.load(examples_copy / "attack" / "out" / "fewest.npz")
    assert saved["adversarial"].shape == (12, 64)
    assert "input" in out and "proven" in out  # the per-input table


def test_plots_draw_the_attack_grid(sum_net: Path) -> None:
    from patchlang.report.plots import write_plots

    result = _run(sum_net, _spec("l0"))
    written = write_plots(result, str(sum_net / "plots"))
    names = [Path(p).name for p in written]
    assert "adv_adversarial.png" in names and "index.html" in names
    assert "adv_adversarial.png" in (sum_net / "plots" / "index.html").read_text()


def test_plan_and_export_speak_about_attacks(sum_net: Path, capsys) -> None:
    from patchlang.cli import main

    (sum_net / "a.patch").write_text(_spec("l0"))
    assert main(["plan", str(sum_net / "a.patch")]) == 0
    assert "attack adv" in capsys.readouterr().out
    assert main(["export", str(sum_net / "a.patch"), "--task", "adv", "--format", "lp", "-o",
                 str(sum_net / "q.lp")]) == 2
    assert "is an attack" in capsys.readouterr().err


# ------------------------------------------------------------------------------------------------ method auto


def test_auto_starts_the_exact_search_from_the_patch_answer(sum_net: Path, monkeypatch) -> None:
    """With no fast answer, `auto` must hand AIGENT's confirmed answer to the exact search as its incumbent; the
    minimum (2 inputs, known by hand) is then proven and credited to whoever found it."""
    import patchlang.tasks.attack as attack_mod
    import patchlang.tasks.attack_patch as patch_mod

    seen: dict = {}
    real_exact, real_aigent = attack_mod.exact_attack, patch_mod.aigent_attack

    def spy_exact(*args, **kwargs):
        seen["incumbent"] = args[11]
        return real_exact(*args, **kwargs)

    def spy_aigent(*args, **kwargs):
        out = real_aigent(*args, **kwargs)
        seen["aigent"] = out.x
        return out

    monkeypatch.setattr(attack_mod, "_fast", lambda *a, **k: (None, ""))
    monkeypatch.setattr(attack_mod, "exact_attack", spy_exact)
    monkeypatch.setattr(patch_mod, "aigent_attack", spy_aigent)
    row = _run(sum_net, _spec("l0", "auto")).tasks[0].details["inputs"][0]
    assert seen["aigent"] is not None and seen["incumbent"] is seen["aigent"]
    assert row["status"] == "found" and row["proven_min"] and row["l0"] == 2
    patch_l0 = int(np.count_nonzero(seen["aigent"] - 1.0))
    assert row["method"] == ("patch" if patch_l0 == 2 else "exact")


def test_auto_patch_answer_is_the_l1_mip_start(sum_net: Path, monkeypatch) -> None:
    import patchlang.tasks.attack as attack_mod

    seen: dict = {}
    real_exact = attack_mod.exact_attack

    def spy_exact(*args, **kwargs):
        seen["incumbent"] = args[11]
        return real_exact(*args, **kwargs)

    monkeypatch.setattr(attack_mod, "_fast", lambda *a, **k: (None, ""))
    monkeypatch.setattr(attack_mod, "exact_attack", spy_exact)
    row = _run(sum_net, _spec("l1", "auto")).tasks[0].details["inputs"][0]
    assert seen["incumbent"] is not None
    assert row["status"] == "found" and row["proven_min"] and row["method"] in ("patch", "exact")
    assert row["l1"] == pytest.approx(1.5 + MARGIN, rel=1e-4, abs=2e-6)


def test_exact_method_never_runs_the_patch_method(sum_net: Path, monkeypatch) -> None:
    import patchlang.tasks.attack_patch as patch_mod

    def boom(*a, **k):
        raise AssertionError("method exact ran AIGENT")

    monkeypatch.setattr(patch_mod, "aigent_attack", boom)
    row = _run(sum_net, _spec("l0", "exact")).tasks[0].details["inputs"][0]
    assert row["status"] == "found" and row["method"] in ("greedy", "exact")


def test_pielou_evenness_over_at_most_50_per_class() -> None:
    """Class 0: 60 successes, the first 50 to label 1, the last 10 to label 2; class 3: 25 to 2, 25 to 1.
    Capped: label 1 = 75, label 2 = 25, H = -(.75 ln .75 + .25 ln .25) = 0.562335, / ln 2 = 0.811278.
    Uncapped it would be 75 to 35 (0.902393): the cap changes the answer."""
    rows = ([{"label": 0, "new_label": 1, "status": "found"}] * 50
            + [{"label": 0, "new_label": 2, "status": "found"}] * 10
            + [{"label": 3, "new_label": 2, "status": "found"}] * 25
            + [{"label": 3, "new_label": 1, "status": "found"}] * 25)
    assert len(capped_per_class(rows)) == 100
    assert pielou_evenness(capped_per_class(rows)) == pytest.approx(0.811278, abs=1e-6)
    full = {**{k: 0 for k in ("proven_min", "l0", "l1", "l2", "linf")}, "seconds": 0.0}
    assert summary([{**full, **r} for r in rows], 4)["evenness"] == pytest.approx(0.811278, abs=1e-6)
    assert pielou_evenness([r["new_label"] for r in rows]) == pytest.approx(0.902393, abs=1e-6)


def test_auto_runs_the_patch_method_only_where_it_can_shorten_the_search() -> None:
    from patchlang.tasks.attack import _patch_may_help

    x0 = np.zeros(4)
    assert _patch_may_help(None, x0, "l0")
    assert not _patch_may_help(np.array([1.0, 0, 0, 0]), x0, "l0")
    assert not _patch_may_help(np.array([1.0, 1, 0, 0]), x0, "l0")  # k = 1 is the solver-free walk
    assert _patch_may_help(np.array([1.0, 1, 1, 0]), x0, "l0")
    assert _patch_may_help(np.array([1.0, 0, 0, 0]), x0, "l1")
