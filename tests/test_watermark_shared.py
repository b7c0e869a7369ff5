"""Golden check of the LP path on real data: removing one watermark of the watermarked MNIST network.

For a single point at the last layer the optimum has a closed form.  With penultimate activation ``h`` (the
input of the output layer), outputs ``y``, watermark label ``l`` and margin ``m``, making output ``j`` beat ``l``
by ``m`` costs ``(m - (y_j - y_l)) / (2 ||h||_1)`` in L∞ (every weight of rows ``j`` and ``l`` moves by ``t`` in
the direction of ``sign(h)``) and ``(m - (y_j - y_l)) / max|h|`` in L1 (all on the largest activation, in either
row); the minimum over ``j`` is the optimum.  The LP must find exactly that.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from patchlang.api import load_program_text, run_program
from patchlang.tasks.patch import RunOptions

pytestmark = pytest.mark.shared

INDEX = 7
MARGIN = 0.001


def closed_form(h: np.ndarray, y: np.ndarray, label: int, norm: str) -> float:
    gap = MARGIN - (np.delete(y, label) - y[label])
    scale = 2 * np.abs(h).sum() if norm == "linf" else np.abs(h).max()
    return float(np.min(np.maximum(0.0, gap) / scale))


@pytest.mark.parametrize("norm", ["linf", "l1"])
def test_remove_one_watermark(norm: str, shared_dir: Path, tmp_path: Path) -> None:
    import onnx
    import onnxruntime as ort
    from onnx import numpy_helper

    wm = shared_dir / "benchmarks" / "watermark_mnist"
    out = tmp_path / "no_wm.onnx"
    source = f"""
        model net = "{wm}/mnist_wm.onnx"
        points wm = "{wm}/wm.set.npy" with labels = "{wm}/wm.labels.txt"
        patch remove on net {{
            edit layer -1 weights
            change wm[{INDEX}] away from label
            minimize {norm}
            margin {MARGIN}
            save "{out}"
        }}
    """
    program = load_program_text(source, tmp_path, filename=str(tmp_path / "wm.patch"))
    result = run_program(program, RunOptions()).tasks[0]
    assert result.status == "patched", result.message
    assert result.problem_class == "LP"

    net = program.models["net"].net
    x = program.points["wm"].x[INDEX:INDEX + 1]
    label = int(program.points["wm"].y[INDEX])
    last = net.affine_indices()[-1]
    h = net.forward_suffix(net.to_suffix_input(x), 0, last)[0]
    y = net.forward(x)[0]
    assert int(np.argmax(y)) == label  # the unpatched network recognises its watermark
    expected = closed_form(h, y, label, norm)
    assert expected > 0
    assert result.objective == pytest.approx(expected, rel=1e-7)
    assert result.distances[norm] == pytest.approx(expected, rel=1e-7)

    # the written file, run by onnxruntime (float32): the watermark is gone, nothing but one initializer moved
    session = ort.InferenceSession(str(out), providers=["CPUExecutionProvider"])
    name = session.get_inputs()[0].name
    y32 = session.run(None, {name: x.reshape(1, 28, 28, 1).astype(np.float32)})[0][0]
    assert int(np.argmax(y32)) != label
    original = {i.name: numpy_helper.to_array(i) for i in onnx.load(str(wm / "mnist_wm.onnx")).graph.initializer}
    patched = {i.name: numpy_helper.to_array(i) for i in onnx.load(str(out)).graph.initializer}
    changed = [k for k in original if not np.array_equal(original[k], patched[k])]
    assert len(changed) == 1 and original[changed[0]].shape == (150, 10)
