"""Build the tiny network of the verification examples: 2 inputs -> 6 ReLU -> 6 ReLU -> 3 scores (argmax).

Weights are written out here (no training, no random numbers), so the model and the answers in the .patch
files are the same on every machine.  Run from anywhere: ``python examples/verify/build_net.py``.
"""

from pathlib import Path

import numpy as np

from patchlang.model.build import network_from_arrays
from patchlang.model.onnx_export import save_network

W1 = np.array([[1.0, 0.5], [-1.0, 0.5], [0.5, 1.0], [0.5, -1.0], [1.0, 1.0], [-1.0, -1.0]])
b1 = np.array([0.0, 0.0, -0.25, -0.25, -0.5, 0.5])
W2 = np.array([[1.0, 0.0, 0.5, 0.0, 0.5, 0.0],
               [0.0, 1.0, 0.0, 0.5, 0.0, 0.5],
               [0.5, 0.5, 1.0, 0.0, 0.0, 0.0],
               [0.0, 0.0, 0.0, 1.0, 1.0, 0.0],
               [-0.5, 0.5, 0.0, 0.0, 0.0, 1.0],
               [0.5, -0.5, 0.5, -0.5, 0.0, 0.0]])
b2 = np.array([0.0, 0.1, -0.1, 0.0, 0.0, 0.1])
W3 = np.array([[1.0, -0.5, 0.0, 0.5, -1.0, 0.5],
               [-0.5, 1.0, 0.5, -0.5, 0.5, 0.0],
               [0.0, 0.0, 1.0, 1.0, 0.0, -1.0]])
b3 = np.array([0.1, 0.0, -0.6])


def main() -> None:
    net = network_from_arrays([W1, W2, W3], [b1, b2, b3], name="tiny")
    out = Path(__file__).resolve().parent / "tiny.onnx"
    save_network(net, str(out))
    print(f"wrote {out}")


if __name__ == "__main__":
    main()
