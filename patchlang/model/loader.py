"""One entry point for reading a network, whatever its file format."""

from __future__ import annotations

import os

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

        return load_nnet(path, name=name)
    from .onnx_import import load_onnx

    return load_onnx(path, name=name)
