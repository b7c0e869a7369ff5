"""Build ``digits_pca.onnx`` for the bias-patching example: 8x8 digits -> PCA 20 -> 16 ReLU -> 10.

The same shape of network as the bias-patching study's MNIST classifier (``bench/bias_patch.py``), small enough
to ship: the PCA projection is a fixed first affine layer *inside* the ONNX file, followed by the two trainable
layers whose biases the example moves.  It trains on the examples' digits split (``examples/models``), so it
works offline and deterministically (``random_state=0``).  The output is committed; run this only when the
recipe changes:

    python examples/bias_patch/build_model.py
"""

from __future__ import annotations

import os
import sys
import warnings

import numpy as np

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.join(HERE, "..", "models"))
try:
    import patchlang  # noqa: F401
except ImportError:  # a checkout without installing the package
    sys.path.insert(0, os.path.abspath(os.path.join(HERE, "..", "..")))

from build_models import digits_split  # noqa: E402

from patchlang.model import Affine, Relu, build_onnx, load_model  # noqa: E402


def build(path: str = os.path.join(HERE, "digits_pca.onnx")) -> float:
    """Train, write the model, return its test accuracy (float32 file, via the IR)."""
    import onnx
    from sklearn.decomposition import PCA
    from sklearn.exceptions import ConvergenceWarning
    from sklearn.neural_network import MLPClassifier

    x_train, y_train, x_test, y_test = digits_split()
    x = x_train.astype(np.float64)
    pca = PCA(n_components=20, random_state=0).fit(x)
    clf = MLPClassifier(hidden_layer_sizes=(16,), random_state=0, max_iter=400)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ConvergenceWarning)
        clf.fit(pca.transform(x), y_train)
    W0 = pca.components_
    layers = [Affine(W0, -W0 @ pca.mean_, "pca"), Affine(clf.coefs_[0].T, clf.intercepts_[0], "hidden"),
              Relu("relu"), Affine(clf.coefs_[1].T, clf.intercepts_[1], "out")]
    onnx.save(build_onnx(layers, (64,)), path)
    return float(np.mean(load_model(path).labels(x_test) == y_test))


if __name__ == "__main__":
    print(f"digits_pca.onnx: test accuracy {build():.4f}")
