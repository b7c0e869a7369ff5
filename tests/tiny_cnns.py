"""Tiny seeded convolutional networks built with onnx.helper, for the operator tests (never trained).

Each builder returns an ``onnx.ModelProto`` with a dynamic batch axis; weights are float32 from a seeded
generator, scaled so that ReLUs are neither all on nor all off."""

from __future__ import annotations

import numpy as np


def _model(nodes, inits, in_shape, n_out, opset=13):
    from onnx import TensorProto, helper, numpy_helper

    graph = helper.make_graph(
        nodes, "tiny_cnn", [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["N", *in_shape])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["N", n_out])],
        [numpy_helper.from_array(np.asarray(v, np.float32), k) for k, v in inits.items()])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", opset)])
    model.ir_version = 8
    return model


def _w(rng, *shape):
    fan_in = int(np.prod(shape[1:])) if len(shape) > 1 else 1
    return rng.standard_normal(shape) / np.sqrt(fan_in)


def conv_relu_conv(seed: int = 0, n_out: int = 3):
    """x[1,6,6] -> Conv(2, 3x3, pad 1) -> Relu -> Conv(3, 3x3, stride 2, pad 1) -> Relu -> Flatten -> Gemm."""
    from onnx import helper

    rng = np.random.default_rng(seed)
    inits = {"c1.w": _w(rng, 2, 1, 3, 3), "c1.b": 0.1 * rng.standard_normal(2),
             "c2.w": _w(rng, 3, 2, 3, 3), "c2.b": 0.1 * rng.standard_normal(3),
             "fc.w": _w(rng, n_out, 27), "fc.b": 0.1 * rng.standard_normal(n_out)}
    nodes = [helper.make_node("Conv", ["x", "c1.w", "c1.b"], ["h1"], name="conv1", pads=[1, 1, 1, 1]),
             helper.make_node("Relu", ["h1"], ["r1"], name="relu1"),
             helper.make_node("Conv", ["r1", "c2.w", "c2.b"], ["h2"], name="conv2", pads=[1, 1, 1, 1],
                              strides=[2, 2]),
             helper.make_node("Relu", ["h2"], ["r2"], name="relu2"),
             helper.make_node("Flatten", ["r2"], ["f"], name="flatten", axis=1),
             helper.make_node("Gemm", ["f", "fc.w", "fc.b"], ["y"], name="fc", transB=1)]
    return _model(nodes, inits, (1, 6, 6), n_out)


def conv_maxpool(seed: int = 0, n_out: int = 3):
    """x[2,5,5] -> Conv(4, 2x2, dilation 2, groups 2) -> Relu -> MaxPool(2x2, stride 1) -> Flatten -> Gemm."""
    from onnx import helper

    rng = np.random.default_rng(seed)
    inits = {"c1.w": _w(rng, 4, 1, 2, 2), "c1.b": 0.1 * rng.standard_normal(4),
             "fc.w": _w(rng, n_out, 4 * 2 * 2), "fc.b": 0.1 * rng.standard_normal(n_out)}
    nodes = [helper.make_node("Conv", ["x", "c1.w", "c1.b"], ["h1"], name="conv1", dilations=[2, 2], group=2),
             helper.make_node("Relu", ["h1"], ["r1"], name="relu1"),
             helper.make_node("MaxPool", ["r1"], ["p1"], name="pool1", kernel_shape=[2, 2], strides=[1, 1]),
             helper.make_node("Flatten", ["p1"], ["f"], name="flatten", axis=1),
             helper.make_node("Gemm", ["f", "fc.w", "fc.b"], ["y"], name="fc", transB=1)]
    return _model(nodes, inits, (2, 5, 5), n_out)


def conv_bn_pool(seed: int = 0, n_out: int = 3):
    """x[1,6,6] -> Conv(3, 3x3) -> BatchNormalization -> Relu -> AveragePool(2x2, stride 2) -> Transpose(0,2,3,1)
    -> Flatten -> Gemm -> LeakyRelu -> Gemm; plus a GlobalAveragePool-free variant of pooling through Mul/Sub."""
    from onnx import helper

    rng = np.random.default_rng(seed)
    inits = {"c1.w": _w(rng, 3, 1, 3, 3), "c1.b": 0.1 * rng.standard_normal(3),
             "bn.s": rng.uniform(0.5, 1.5, 3), "bn.b": 0.1 * rng.standard_normal(3),
             "bn.m": 0.1 * rng.standard_normal(3), "bn.v": rng.uniform(0.5, 2.0, 3),
             "fc1.w": _w(rng, 6, 12), "fc1.b": 0.1 * rng.standard_normal(6),
             "fc2.w": _w(rng, n_out, 6), "fc2.b": 0.1 * rng.standard_normal(n_out)}
    nodes = [helper.make_node("Conv", ["x", "c1.w", "c1.b"], ["h1"], name="conv1"),
             helper.make_node("BatchNormalization", ["h1", "bn.s", "bn.b", "bn.m", "bn.v"], ["n1"], name="bn1",
                              epsilon=1e-3),
             helper.make_node("Relu", ["n1"], ["r1"], name="relu1"),
             helper.make_node("AveragePool", ["r1"], ["p1"], name="pool1", kernel_shape=[2, 2], strides=[2, 2]),
             helper.make_node("Transpose", ["p1"], ["t1"], name="nhwc", perm=[0, 2, 3, 1]),
             helper.make_node("Flatten", ["t1"], ["f"], name="flatten", axis=1),
             helper.make_node("Gemm", ["f", "fc1.w", "fc1.b"], ["g1"], name="fc1", transB=1),
             helper.make_node("LeakyRelu", ["g1"], ["l1"], name="leaky1", alpha=0.1),
             helper.make_node("Gemm", ["l1", "fc2.w", "fc2.b"], ["y"], name="fc2", transB=1)]
    return _model(nodes, inits, (1, 6, 6), n_out)


def global_pool(seed: int = 0, n_out: int = 2):
    """x[2,4,4] -> Conv(3, 3x3, pad 1) -> Relu -> GlobalAveragePool -> Flatten -> Gemm."""
    from onnx import helper

    rng = np.random.default_rng(seed)
    inits = {"c1.w": _w(rng, 3, 2, 3, 3), "c1.b": 0.1 * rng.standard_normal(3),
             "fc.w": _w(rng, n_out, 3), "fc.b": 0.1 * rng.standard_normal(n_out)}
    nodes = [helper.make_node("Conv", ["x", "c1.w", "c1.b"], ["h1"], name="conv1", pads=[1, 1, 1, 1]),
             helper.make_node("Relu", ["h1"], ["r1"], name="relu1"),
             helper.make_node("GlobalAveragePool", ["r1"], ["p1"], name="gap"),
             helper.make_node("Flatten", ["p1"], ["f"], name="flatten", axis=1),
             helper.make_node("Gemm", ["f", "fc.w", "fc.b"], ["y"], name="fc", transB=1)]
    return _model(nodes, inits, (2, 4, 4), n_out)


def conv_then_dense(seed: int = 0, n_out: int = 3):
    """x[1,4,4] -> Conv(2, 3x3, no bias) -> Flatten -> Gemm: everything after the convolution is affine (an LP)."""
    from onnx import helper

    rng = np.random.default_rng(seed)
    inits = {"c1.w": _w(rng, 2, 1, 3, 3), "fc.w": _w(rng, n_out, 8), "fc.b": 0.1 * rng.standard_normal(n_out)}
    nodes = [helper.make_node("Conv", ["x", "c1.w"], ["h1"], name="conv1"),
             helper.make_node("Flatten", ["h1"], ["f"], name="flatten", axis=1),
             helper.make_node("Gemm", ["f", "fc.w", "fc.b"], ["y"], name="fc", transB=1)]
    return _model(nodes, inits, (1, 4, 4), n_out)


def residual(seed: int = 0, n_out: int = 3):
    """x[1,5,5] -> Conv(2, 3x3, pad 1) -> Relu = r; r + Conv(Relu(Conv(r))) -> Relu; Concat(that, AveragePool-free
    branch Relu(Conv 1x1(that))) on channels -> Flatten -> Gemm: a residual Add and a Concat block."""
    from onnx import helper

    rng = np.random.default_rng(seed)
    inits = {"c1.w": _w(rng, 2, 1, 3, 3), "c1.b": 0.1 * rng.standard_normal(2),
             "c2.w": _w(rng, 2, 2, 3, 3), "c2.b": 0.1 * rng.standard_normal(2),
             "c3.w": _w(rng, 2, 2, 3, 3), "c3.b": 0.1 * rng.standard_normal(2),
             "c4.w": _w(rng, 1, 2, 1, 1), "c4.b": 0.1 * rng.standard_normal(1),
             "fc.w": _w(rng, n_out, 75), "fc.b": 0.1 * rng.standard_normal(n_out)}
    nodes = [helper.make_node("Conv", ["x", "c1.w", "c1.b"], ["h1"], name="conv1", pads=[1, 1, 1, 1]),
             helper.make_node("Relu", ["h1"], ["r1"], name="relu1"),
             helper.make_node("Conv", ["r1", "c2.w", "c2.b"], ["h2"], name="conv2", pads=[1, 1, 1, 1]),
             helper.make_node("Relu", ["h2"], ["r2"], name="relu2"),
             helper.make_node("Conv", ["r2", "c3.w", "c3.b"], ["h3"], name="conv3", pads=[1, 1, 1, 1]),
             helper.make_node("Add", ["h3", "r1"], ["s"], name="residual"),
             helper.make_node("Relu", ["s"], ["r3"], name="relu3"),
             helper.make_node("Conv", ["r3", "c4.w", "c4.b"], ["h4"], name="conv4"),
             helper.make_node("Relu", ["h4"], ["r4"], name="relu4"),
             helper.make_node("Concat", ["r3", "r4"], ["cat"], name="concat", axis=1),
             helper.make_node("Flatten", ["cat"], ["f"], name="flatten", axis=1),
             helper.make_node("Gemm", ["f", "fc.w", "fc.b"], ["y"], name="fc", transB=1)]
    return _model(nodes, inits, (1, 5, 5), n_out)


BUILDERS = {"conv_relu_conv": conv_relu_conv, "conv_maxpool": conv_maxpool, "conv_bn_pool": conv_bn_pool,
            "global_pool": global_pool, "residual": residual}


def save(proto, path) -> str:
    import onnx

    onnx.save(proto, str(path))
    return str(path)
