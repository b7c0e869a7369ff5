"""Train the three small MNIST classifiers of the NNrepair scenarios (issue 13) and build their data sets.

Why scikit-learn's MLPClassifier: dense ReLU networks train in seconds on two cores with no GPU stack; the
networks are written with :func:`patchlang.model.build_onnx` and committed (each well under 200 KB), the data are
never committed: they are rebuilt from ``$PATCHLANG_SHARED/datasets/mnist`` (IDX gz) by the functions below.

* ``accuracy``: a deliberately low-quality 784 -> 16 ReLU -> 10 model (1000 training images, 20 epochs);
* ``poisoned``: 784 -> 32 ReLU -> 10 trained on 6000 images whose first 600 (10%) carry a white 4x4 square in
  the bottom-right corner and are relabelled 7 (the backdoor);
* ``adversarial``: 784 -> 32 ReLU -> 10 trained on 10 000 images; FGSM test images (gradient of the
  cross-entropy of the network, computed in numpy) with eps 0.05.

    python bench/models/train_nnrepair_mnist.py     # writes bench/models/nnrepair_*.onnx, prints accuracies
"""

from __future__ import annotations

import os
import sys
import warnings
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[2]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

sys.path.insert(0, str(Path(__file__).resolve().parent))

from train_pca_mnist import mnist  # noqa: E402  (the MNIST reader, $PATCHLANG_SHARED)
from patchlang.model import Affine, Relu, build_onnx  # noqa: E402
from patchlang.model.ir import Network  # noqa: E402

MODELS = ROOT / "bench" / "models"
SCENARIOS = ("accuracy", "poisoned", "adversarial")
TRIGGER = (slice(24, 28), slice(24, 28))  # rows, columns of the white square (bottom-right corner)
TARGET = 7
N_POISON = 600
FGSM_EPS = 0.05


def add_trigger(x: np.ndarray) -> np.ndarray:
    """Copies of the flat images with the white square stamped in."""
    out = np.array(x, dtype=np.float32).reshape(-1, 28, 28)
    out[:, TRIGGER[0], TRIGGER[1]] = 1.0
    return out.reshape(len(out), -1)


def fgsm(net: Network, x: np.ndarray, y: np.ndarray, eps: float = FGSM_EPS) -> np.ndarray:
    """FGSM images: ``clip(x + eps * sign(d CE / d x), 0, 1)`` with the gradient of the dense ReLU network in
    numpy (backpropagation through Affine and ReLU layers)."""
    acts = [np.asarray(x, np.float64)]
    for layer in net.layers:
        acts.append(acts[-1] @ layer.W.T + layer.b if isinstance(layer, Affine) else np.maximum(acts[-1], 0.0))
    z = acts[-1]
    p = np.exp(z - z.max(axis=1, keepdims=True))
    p /= p.sum(axis=1, keepdims=True)
    g = p.copy()
    g[np.arange(len(y)), y] -= 1.0  # d CE / d logits
    for layer, a_in in zip(reversed(net.layers), reversed(acts[:-1])):
        g = g @ layer.W if isinstance(layer, Affine) else g * (a_in > 0)
    return np.clip(x + eps * np.sign(g), 0.0, 1.0).astype(np.float32)


def _train(x: np.ndarray, y: np.ndarray, hidden: int, epochs: int) -> list:
    from sklearn.exceptions import ConvergenceWarning
    from sklearn.neural_network import MLPClassifier

    clf = MLPClassifier(hidden_layer_sizes=(hidden,), random_state=0, max_iter=epochs)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ConvergenceWarning)
        clf.fit(x.astype(np.float64), y)
    return [Affine(clf.coefs_[0].T.astype(np.float32).astype(np.float64),
                   clf.intercepts_[0].astype(np.float32).astype(np.float64), "hidden"), Relu("relu"),
            Affine(clf.coefs_[1].T.astype(np.float32).astype(np.float64),
                   clf.intercepts_[1].astype(np.float32).astype(np.float64), "out")]


def training_set(scenario: str) -> tuple[np.ndarray, np.ndarray]:
    """The images and labels each model is trained on (the poisoned one with its backdoor)."""
    x, y = mnist("train")
    if scenario == "accuracy":
        return x[:1000], y[:1000]
    if scenario == "poisoned":
        x, y = x[:6000].copy(), y[:6000].copy()
        x[:N_POISON] = add_trigger(x[:N_POISON])
        y[:N_POISON] = TARGET
        return x, y
    return x[:10000], y[:10000]


RECIPES = {"accuracy": (16, 20), "poisoned": (32, 40), "adversarial": (32, 40)}  # hidden units, epochs


def model_path(scenario: str) -> Path:
    return MODELS / f"nnrepair_{scenario}.onnx"


def train(scenario: str) -> Path:
    import onnx

    hidden, epochs = RECIPES[scenario]
    layers = _train(*training_set(scenario), hidden, epochs)
    path = model_path(scenario)
    tmp = path.with_suffix(".tmp")
    onnx.save(build_onnx(layers, (784,)), str(tmp))
    os.replace(tmp, path)
    return path


def main() -> None:
    from patchlang.model import load_model

    xt, yt = mnist("t10k")
    for scenario in SCENARIOS:
        path = train(scenario)
        net = load_model(str(path))
        acc = float(np.mean(net.labels(xt) == yt))
        line = f"{scenario}: {path.name} {path.stat().st_size // 1024} KB, clean test accuracy {100 * acc:.2f}%"
        if scenario == "poisoned":
            keep = yt != TARGET
            hit = np.mean(net.labels(add_trigger(xt[keep])) == yt[keep])
            line += f", triggered (true labels, the 7s left out) {100 * hit:.2f}%"
        if scenario == "adversarial":
            line += f", FGSM eps {FGSM_EPS} {100 * np.mean(net.labels(fgsm(net, xt, yt)) == yt):.2f}%"
        print(line, flush=True)


if __name__ == "__main__":
    main()
