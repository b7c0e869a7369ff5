"""The bias-patching experiment on real MNIST (needs the shared data; the model is trained once and cached)."""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
import pytest

ROOT = Path(__file__).resolve().parents[1]


@pytest.mark.slow
@pytest.mark.shared
def test_bias_patch_original_experiment(shared_dir: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("PATCHLANG_SHARED", str(shared_dir))
    sys.path.insert(0, str(ROOT / "bench"))
    sys.path.insert(0, str(ROOT / "bench" / "models"))
    import bias_patch as B

    model = B.model_path()
    net = B.load_model(str(model))
    x, y = B.mnist("t10k")
    out = net.forward(x)
    assert 0.92 <= float(np.mean(out.argmax(axis=1) == y)) <= 0.95  # the study's ~93%
    keep, move = B.pick_points(out, y, 10, 1)
    res, _ = B.run_case(model, x, y, keep, move, time_limit=60)
    assert res.status == "patched"
    assert res.problem_class == "MILP"
    assert 0 < res.distances["linf"] <= B.BOUND
    assert res.gap == 0.0
    assert int(res.patched.labels(x[move])[0]) == B.TARGET_LABEL
