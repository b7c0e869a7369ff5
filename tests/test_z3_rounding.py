"""`round significand N`: the saved network carries the rounded parameters, and the report says what changed."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from patchlang.api import load_program_text, run_program
from patchlang.model.build import network_from_arrays
from patchlang.model.loader import load_model
from patchlang.model.onnx_export import save_network
from patchlang.tasks.patch import RunOptions
from patchlang.tasks.rounding import round_significand


def test_round_bits_keeps_that_many_bits() -> None:
    from patchlang.tasks.rounding import _round_bits

    a = np.array([1 / 3, -2 / 3, 1e-5 / 3, 7.0, 0.0])
    r = _round_bits(a, 8)
    m, _ = np.frexp(r)
    assert np.all(m * 2**8 == np.round(m * 2**8))  # at most 8 significand bits
    assert np.all(np.abs(r - a) <= np.abs(a) * 2.0**-8)
    assert r[3] == 7.0 and r[4] == 0.0


def test_saved_network_uses_rounded_parameters(tmp_path: Path) -> None:
    rng = np.random.default_rng(7)
    net = network_from_arrays([rng.normal(size=(6, 4)), rng.normal(size=(3, 6))],
                              [rng.normal(size=6) * 0.2, rng.normal(size=3) * 0.2])
    save_network(net, str(tmp_path / "net.onnx"))
    x = rng.normal(size=(30, 4))
    y = net.labels(x)
    np.savez(tmp_path / "pts.npz", x=x, y=y)
    target = int((y[0] + 1) % 3)
    source = f"""
        model net = "net.onnx"
        points p = "pts.npz"
        patch r on net {{
            edit layer -1 weights and biases
            change p[0] to {target}
            keep p[1:10]
            round significand 8
            using z3
            save "out/rounded.onnx"
        }}
        assert accuracy(r, p) >= 0.0
    """
    program = load_program_text(source, tmp_path, filename=str(tmp_path / "s.patch"))
    result = run_program(program, RunOptions())
    task = result.tasks[0]
    assert task.status == "patched", task.message
    saved = load_model(str(tmp_path / "out" / "rounded.onnx"))
    rounded = round_significand(load_model(str(tmp_path / "net.onnx")), 8)
    # every parameter that was not edited is exactly the rounded one, in the written file
    assert np.array_equal(saved.affine(0).W, rounded.affine(0).W)
    assert np.array_equal(saved.affine(0).b, rounded.affine(0).b)
    changed = saved.affine(1).W != rounded.affine(1).W
    assert np.any(changed)  # the patch itself
    delta = dict(task.deltas)["layer_1.weight"]
    assert np.all(changed <= (np.abs(delta) > 0))  # nothing the patch did not touch moved
    assert not np.array_equal(rounded.affine(0).W, net.affine(0).W)  # rounding did something
    assert int(saved.labels(x[:1])[0]) == target
    notes = "\n".join(task.notes)
    assert "rounded to 8 bits: keep p[1:10]: " in notes and "predictions unchanged" in notes
    assert "rounded to 8 bits: p: " in notes and "accuracy 1 -> " in notes  # the asserted set
