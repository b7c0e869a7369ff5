"""Train the bias-patching study's MNIST classifier: 784 -> PCA 100 (a fixed linear layer) -> 33 ReLU -> 10.

The PCA projection is the first affine layer *inside* the ONNX file (``W = components``, ``b = -components @
mean``), so patchlang sees a network of three affine layers of which the last two are the trainable ones (the
study moves only their biases).  scikit-learn's PCA and MLPClassifier with fixed seeds make it reproducible;
training uses the first 10 000 training images and a short, fixed number of epochs, which lands near the
study's ~93% test accuracy.  The ONNX is cached (``bench/.cache/``, git-ignored) and rebuilt only when missing.

    python bench/models/train_pca_mnist.py      # prints the path and the test accuracy
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

from patchlang.model import Affine, Relu, build_onnx, load_model  # noqa: E402
from patchlang.inputs.points import load_points  # noqa: E402

CACHE = ROOT / "bench" / ".cache"
MODEL_NAME = "pca_mnist_100_33.onnx"
N_TRAIN = 10_000
EPOCHS = 30


def shared_dir() -> Path:
    """``PATCHLANG_SHARED`` (default ``../shared`` next to the repository)."""
    raw = os.environ.get("PATCHLANG_SHARED", "../shared")
    return Path(raw) if os.path.isabs(raw) else (ROOT / raw).resolve()


def mnist(split: str) -> tuple[np.ndarray, np.ndarray]:
    """``(x, y)`` of MNIST ``train`` or ``t10k``: pixels / 255 as float32 (784 per image), int64 labels."""
    base = shared_dir() / "datasets" / "mnist"
    if not base.is_dir():
        raise SystemExit(f"MNIST not found at {base}: set PATCHLANG_SHARED to the shared folder")
    ps = load_points(base / f"{split}-images-idx3-ubyte.gz", labels_path=base / f"{split}-labels-idx1-ubyte.gz",
                     scale=1 / 255)
    return ps.x.reshape(len(ps), -1).astype(np.float32), ps.y.astype(np.int64)


def train(path: Path) -> None:
    from sklearn.decomposition import PCA
    from sklearn.exceptions import ConvergenceWarning
    from sklearn.neural_network import MLPClassifier

    x, y = mnist("train")
    x, y = x[:N_TRAIN].astype(np.float64), y[:N_TRAIN]
    pca = PCA(n_components=100, random_state=0).fit(x)
    clf = MLPClassifier(hidden_layer_sizes=(33,), random_state=0, max_iter=EPOCHS, learning_rate_init=1e-3)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ConvergenceWarning)
        clf.fit(pca.transform(x), y)
    W0 = pca.components_
    layers = [Affine(W0, -W0 @ pca.mean_, "pca"),
              Affine(clf.coefs_[0].T, clf.intercepts_[0], "hidden"), Relu("relu"),
              Affine(clf.coefs_[1].T, clf.intercepts_[1], "out")]
    import onnx

    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".tmp")
    onnx.save(build_onnx(layers, (784,)), str(tmp))
    os.replace(tmp, path)


def model_path() -> Path:
    """The cached model, trained first if it is missing."""
    path = CACHE / MODEL_NAME
    if not path.exists():
        train(path)
    return path


def main() -> None:
    path = model_path()
    net = load_model(str(path))
    x, y = mnist("t10k")
    acc = float(np.mean(net.labels(x) == y))
    print(f"{path}: test accuracy {acc:.4f}")


if __name__ == "__main__":
    main()
