"""Build the small models and data sets the examples and default tests use.

The project must work without the shared benchmarks, so it ships its own tiny, reproducible models:

* ``digits_mlp.onnx``: a 64 -> 32 ReLU -> 10 classifier trained by scikit-learn on the 8x8 digits (which ship
  inside scikit-learn, so this works offline), with ``digits_train.npz`` / ``digits_test.npz`` (arrays ``x``
  float32 in [0, 1], ``y`` int64; first 1200 images train, the rest test).  It misclassifies a few test images,
  which is what the repair examples need.
* ``toy.onnx``: the classic 2-2-2 ReLU network of the minimal-modification literature; input (3, 4) gives
  outputs (-2, 2), easy to check by hand.

Run ``python examples/models/build_models.py [out_dir]``; the outputs are committed, so this is only needed when
the recipe changes.  Everything is deterministic (fixed split, ``random_state=0``).
"""

from __future__ import annotations

import os
import sys

import numpy as np

try:
    import patchlang  # noqa: F401
except ImportError:  # run as a script from a checkout without installing the package
    sys.path.insert(0, os.path.abspath(os.path.join(os.path.dirname(__file__), "..", "..")))

from patchlang.model.build import network_from_arrays
from patchlang.model.onnx_export import save_network

HERE = os.path.dirname(os.path.abspath(__file__))
N_TRAIN = 1200

TOY_W1 = [[1.0, -2.0], [2.0, -1.0]]
TOY_W2 = [[1.0, -1.0], [-1.0, 1.0]]


def digits_split() -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """``(x_train, y_train, x_test, y_test)``: pixels / 16 (so in [0, 1]) as float32, labels int64."""
    from sklearn.datasets import load_digits

    digits = load_digits()
    x = (digits.data / 16.0).astype(np.float32)
    y = digits.target.astype(np.int64)
    return x[:N_TRAIN], y[:N_TRAIN], x[N_TRAIN:], y[N_TRAIN:]


def train_digits_mlp(x: np.ndarray, y: np.ndarray):
    """A small scikit-learn MLP; ``max_iter`` is high enough to converge without warnings."""
    from sklearn.neural_network import MLPClassifier

    clf = MLPClassifier(hidden_layer_sizes=(32,), random_state=0, max_iter=1000)
    clf.fit(x, y)
    return clf


def build_digits(out_dir: str) -> float:
    """Train, write the model and the data; return the test accuracy of the written (float32) model."""
    x_train, y_train, x_test, y_test = digits_split()
    clf = train_digits_mlp(x_train, y_train)
    # scikit-learn stores coefs as (in, out); the IR wants (out, in).
    net = network_from_arrays([w.T for w in clf.coefs_], list(clf.intercepts_), name="digits_mlp")
    save_network(net, os.path.join(out_dir, "digits_mlp.onnx"))
    np.savez_compressed(os.path.join(out_dir, "digits_train.npz"), x=x_train, y=y_train)
    np.savez_compressed(os.path.join(out_dir, "digits_test.npz"), x=x_test, y=y_test)
    return float(np.mean(net.labels(x_test) == y_test))


def build_toy(out_dir: str) -> None:
    net = network_from_arrays([np.array(TOY_W1), np.array(TOY_W2)], [np.zeros(2), np.zeros(2)], name="toy")
    save_network(net, os.path.join(out_dir, "toy.onnx"))


def build_all(out_dir: str = HERE) -> dict[str, float]:
    """Write every example model and data set into ``out_dir``; returns a few facts for the log."""
    os.makedirs(out_dir, exist_ok=True)
    build_toy(out_dir)
    return {"digits_test_accuracy": build_digits(out_dir)}


if __name__ == "__main__":
    target = sys.argv[1] if len(sys.argv) > 1 else HERE
    facts = build_all(target)
    print(f"wrote example models to {target}: " + ", ".join(f"{k}={v:.4f}" for k, v in facts.items()))
