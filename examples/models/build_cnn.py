"""Train the small convolutional digit classifier of ``examples/cnn`` with JAX and write it as ONNX.

``digits_cnn.onnx``: input ``(N, 1, 8, 8)`` (NCHW, pixels in [0, 1]), then

    Conv(1 -> 4, 3x3, pad 1) + ReLU -> Conv(4 -> 8, 3x3, stride 2) + ReLU -> Flatten (72) -> Gemm(72 -> 10)

and ``digits_cnn_pool.onnx``, the same with a max pooling between the convolutions (for MaxPool):

    Conv(1 -> 4, 3x3, pad 1) + ReLU -> MaxPool(2x2, stride 2) -> Conv(4 -> 8, 3x3, pad 1) + ReLU -> Flatten (128)
    -> Gemm(128 -> 10)

both trained on the same split as ``digits_mlp.onnx`` (``build_models.digits_split``: scikit-learn's offline 8x8 digits,
first 1200 images train, the rest test; ``digits_train.npz`` / ``digits_test.npz`` already hold it, flat ``(N, 64)``,
which patchlang reshapes to the model's input shape).  The ONNX file is written with the ``onnx.helper`` API
(opset 13, IR version 8, like the other example models), with named nodes (``conv1``, ``pool``, ``conv2``, ``fc``) so that
specs can name layers.

Training needs the optional ``train`` extra (``pip install 'patchlang[train]'``: jax and optax, about 90 MB, where
torch would bring gigabytes).  The output is committed, so tests never train; run this only when the recipe changes:

    python examples/models/build_cnn.py [out_dir]

Deterministic (the files are byte-identical on every run here): fixed initial weights (``jax.random.PRNGKey(0)``), full-batch Adam, a fixed number of steps.
"""

from __future__ import annotations

import os
import sys

import numpy as np

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)

from build_models import digits_split  # noqa: E402

SEED = 0
STEPS = 600
LEARNING_RATE = 0.01
CONV1 = (4, 1, 3, 3)  # OIHW
CONV2 = (8, 4, 3, 3)
FLAT = 8 * 3 * 3  # 8x8 -> (pad 1) 8x8 -> (3x3, stride 2) 3x3
FLAT_POOL = 8 * 4 * 4  # 8x8 -> (pad 1) 8x8 -> (max 2x2) 4x4 -> (pad 1) 4x4
CLASSES = 10


def _jax():
    """``(jax, jax.numpy, optax)``, or exit with a clear message when the ``train`` extra is missing."""
    try:
        import jax
        import jax.numpy as jnp
        import optax
    except ImportError as exc:
        raise SystemExit(f"build_cnn.py needs the optional `train` extra (jax and optax): {exc}.\n"
                         "  Install it with:  pip install 'patchlang[train]'   (or: pip install jax optax)") from None
    return jax, jnp, optax


def forward(params: dict, x, jnp, lax, pool: bool = False):
    """Logits for a batch ``(N, 1, 8, 8)``: the same graph as the ONNX file (NCHW / OIHW)."""
    dn = ("NCHW", "OIHW", "NCHW")
    h = lax.conv_general_dilated(x, params["conv1.weight"], (1, 1), [(1, 1), (1, 1)], dimension_numbers=dn)
    h = jnp.maximum(h + params["conv1.bias"][None, :, None, None], 0.0)
    if pool:
        h = lax.reduce_window(h, -jnp.inf, lax.max, (1, 1, 2, 2), (1, 1, 2, 2), "VALID")
        h = lax.conv_general_dilated(h, params["conv2.weight"], (1, 1), [(1, 1), (1, 1)], dimension_numbers=dn)
    else:
        h = lax.conv_general_dilated(h, params["conv2.weight"], (2, 2), [(0, 0), (0, 0)], dimension_numbers=dn)
    h = jnp.maximum(h + params["conv2.bias"][None, :, None, None], 0.0)
    h = h.reshape(h.shape[0], -1)
    return h @ params["fc.weight"].T + params["fc.bias"]


def train(x: np.ndarray, y: np.ndarray, pool: bool = False) -> dict[str, np.ndarray]:
    """Full-batch Adam on the cross-entropy; returns the parameters as float32 numpy arrays (ONNX layouts)."""
    jax, jnp, optax = _jax()
    keys = jax.random.split(jax.random.PRNGKey(SEED), 3)

    def he(key, shape, fan_in):
        return jax.random.normal(key, shape, dtype=jnp.float32) * np.sqrt(2.0 / fan_in)

    flat = FLAT_POOL if pool else FLAT
    params = {"conv1.weight": he(keys[0], CONV1, 9), "conv1.bias": jnp.zeros(CONV1[0], jnp.float32),
              "conv2.weight": he(keys[1], CONV2, 36), "conv2.bias": jnp.zeros(CONV2[0], jnp.float32),
              "fc.weight": he(keys[2], (CLASSES, flat), flat), "fc.bias": jnp.zeros(CLASSES, jnp.float32)}
    xb = jnp.asarray(x.reshape(-1, 1, 8, 8), jnp.float32)
    yb = jnp.asarray(y)
    opt = optax.adam(LEARNING_RATE)
    state = opt.init(params)

    def loss(p):
        logits = forward(p, xb, jnp, jax.lax, pool)
        return optax.softmax_cross_entropy_with_integer_labels(logits, yb).mean()

    @jax.jit
    def step(p, s):
        value, grads = jax.value_and_grad(loss)(p)
        updates, s = opt.update(grads, s, p)
        return optax.apply_updates(p, updates), s, value

    for _ in range(STEPS):
        params, state, _ = step(params, state)
    return {k: np.asarray(v, dtype=np.float32) for k, v in params.items()}


def cnn_onnx(params: dict[str, np.ndarray], name: str = "digits_cnn", pool: bool = False):
    """The ``ModelProto`` of the CNN (batch axis free, so onnxruntime evaluates whole batches)."""
    from onnx import TensorProto, helper, numpy_helper

    first = [helper.make_node("Conv", ["input", "conv1.weight", "conv1.bias"], ["c1"], name="conv1",
                              kernel_shape=[3, 3], pads=[1, 1, 1, 1], strides=[1, 1]),
             helper.make_node("Relu", ["c1"], ["r1"], name="relu1")]
    if pool:
        second = [helper.make_node("MaxPool", ["r1"], ["p1"], name="pool", kernel_shape=[2, 2], strides=[2, 2]),
                  helper.make_node("Conv", ["p1", "conv2.weight", "conv2.bias"], ["c2"], name="conv2",
                                   kernel_shape=[3, 3], pads=[1, 1, 1, 1], strides=[1, 1])]
    else:
        second = [helper.make_node("Conv", ["r1", "conv2.weight", "conv2.bias"], ["c2"], name="conv2",
                                   kernel_shape=[3, 3], pads=[0, 0, 0, 0], strides=[2, 2])]
    nodes = first + second + [
        helper.make_node("Relu", ["c2"], ["r2"], name="relu2"),
        helper.make_node("Flatten", ["r2"], ["flat"], name="flatten", axis=1),
        helper.make_node("Gemm", ["flat", "fc.weight", "fc.bias"], ["output"], name="fc", transB=1),
    ]
    graph = helper.make_graph(
        nodes, name,
        [helper.make_tensor_value_info("input", TensorProto.FLOAT, ["N", 1, 8, 8])],
        [helper.make_tensor_value_info("output", TensorProto.FLOAT, ["N", CLASSES])],
        [numpy_helper.from_array(v, k) for k, v in params.items()])
    model = helper.make_model(graph, producer_name="patchlang examples/models/build_cnn.py",
                              opset_imports=[helper.make_opsetid("", 13)])
    model.ir_version = 8
    return model


def build_cnn(out_dir: str = HERE, pool: bool = False) -> float:
    """Train, write ``digits_cnn.onnx`` (``digits_cnn_pool.onnx``), return the test accuracy of the written file
    (onnxruntime, float32)."""
    import onnx
    import onnxruntime as ort

    x_train, y_train, x_test, y_test = digits_split()
    name = "digits_cnn_pool" if pool else "digits_cnn"
    model = cnn_onnx(train(x_train, y_train, pool), name, pool)
    onnx.checker.check_model(model)
    os.makedirs(out_dir, exist_ok=True)
    path = os.path.join(out_dir, name + ".onnx")
    onnx.save(model, path)
    session = ort.InferenceSession(path, providers=["CPUExecutionProvider"])
    logits = session.run(None, {"input": x_test.reshape(-1, 1, 8, 8).astype(np.float32)})[0]
    return float(np.mean(np.argmax(logits, axis=1) == y_test))


if __name__ == "__main__":
    import argparse

    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("out_dir", nargs="?", default=HERE, help="where to write digits_cnn.onnx (default: beside this)")
    target = ap.parse_args().out_dir
    for pool in (False, True):
        accuracy = build_cnn(target, pool)
        name = "digits_cnn_pool.onnx" if pool else "digits_cnn.onnx"
        print(f"wrote {os.path.join(target, name)}: test accuracy {accuracy:.4f}")
