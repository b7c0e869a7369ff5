"""One entry point for reading a network, whatever its file format."""

from __future__ import annotations

import os

import numpy as np
import scipy.sparse as sp

from ..errors import ModelError
from .ir import Network

FORMATS = {".onnx": "onnx", ".nnet": "nnet"}


def _format_of(path: str, fmt: str | None) -> str:
    if fmt is not None:
        fmt = fmt.lower().lstrip(".")
        if fmt not in FORMATS.values():
            raise ModelError(f"unknown model format '{fmt}'", help=f"supported formats: {', '.join(FORMATS.values())}")
        return fmt
    ext = os.path.splitext(path)[1].lower()
    if ext not in FORMATS:
        raise ModelError(f"cannot tell the format of model file {path} from its extension '{ext}'",
                         help=f"use a file ending in {' or '.join(FORMATS)}, or give the format explicitly")
    return FORMATS[ext]


def load_model(path: str, fmt: str | None = None, name: str | None = None) -> Network:
    """Read ``path`` as a :class:`Network` (format from ``fmt`` or the extension: ``onnx`` or ``nnet``)."""
    from ..guard import InputRefused, check_input

    try:
        check_input(path, "model file")  # missing, a directory, a FIFO, a device, unreadable: refused, not read
    except InputRefused as exc:
        raise ModelError(exc.message, help=exc.help) from None
    kind = _format_of(path, fmt)
    if kind == "nnet":
        from .nnet_import import load_nnet

        net = load_nnet(path, name=name)
    else:
        from .onnx_import import load_onnx

        net = load_onnx(path, name=name)
    _require_finite(net, path)
    return net


def _require_finite(net: Network, path: str) -> None:
    """NaN or infinite parameters make every answer about the network meaningless: refused at load."""
    for layer in net.layers:
        for what, arr in (("weights", getattr(layer, "W", None)), ("biases", getattr(layer, "b", None))):
            arr = arr.data if sp.issparse(arr) else arr  # a lowered convolution's matrix: its stored entries
            if arr is not None and not np.all(np.isfinite(arr)):
                bad = int(np.size(arr) - np.count_nonzero(np.isfinite(arr)))
                raise ModelError(f"model file {path}: layer {layer.name} has {bad} NaN or infinite {what}",
                                 help="the network is broken: retrain or re-export it")
    proto = getattr(net, "proto", None)
    if proto is not None:
        from onnx import numpy_helper

        for t in proto.graph.initializer:
            if t.data_type in (1, 10, 11, 16) and t.data_location != 1:  # float, float16, double, bfloat16
                arr = numpy_helper.to_array(t)
                if arr.size and not np.all(np.isfinite(arr.astype(np.float64))):
                    raise ModelError(f"model file {path}: tensor `{t.name}` holds NaN or infinite values",
                                     help="the network is broken: retrain or re-export it")
