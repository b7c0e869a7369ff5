"""NNet (the ACAS Xu text format) -> IR.

The format: ``//`` comment lines, then a header (layer count and sizes, an unused flag, input mins/maxes, means
and ranges of the inputs plus one of the output), then for each layer its weight rows and its biases.  The header
normalisation is *not* put into the layers: the IR works in the normalised space like the ACAS Xu ONNX files and
the VNN-LIB properties, so the same spec works on either file.  The normalisation is kept in ``metadata`` so a
network written back as NNet keeps its header.
"""

from __future__ import annotations

import os

import numpy as np

from ..errors import ModelError
from .ir import Affine, Layer, Network, Relu

NORMALISATION_KEYS = ("input_min", "input_max", "input_mean", "input_range", "output_mean", "output_range")


def _numbers(line: str) -> list[float]:
    return [float(tok) for tok in line.replace(",", " ").split()]


class _NNetReader:
    """Parses the text; every structural problem becomes a :class:`ModelError` naming the file."""

    def __init__(self, path: str, text: str):
        self.path = path
        self.lines = [ln for ln in text.splitlines() if ln.strip() and not ln.lstrip().startswith("//")]

    def fail(self, message: str) -> ModelError:
        return ModelError(f"{self.path}: invalid NNet file: {message}",
                          help="NNet files start with '//' comments, then 'layers,inputs,outputs,max_size', "
                               "the layer sizes, a flag, the normalisation and the weights")

    def header_row(self, k: int, count: int | None = None) -> list[float]:
        if k >= len(self.lines):
            raise self.fail("the header is truncated")
        row = _numbers(self.lines[k])
        if count is not None and len(row) < count:
            raise self.fail(f"header line {k + 1} has {len(row)} values, expected {count}")
        return row if count is None else row[:count]

    def parse(self) -> tuple[list[Layer], dict[str, np.ndarray]]:
        try:
            n_layers = int(self.header_row(0, 1)[0])
            if n_layers < 1:
                raise self.fail(f"the layer count is {n_layers}")
            sizes = [int(s) for s in self.header_row(1, n_layers + 1)]
            if min(sizes) < 1:
                raise self.fail(f"layer sizes must be positive, found {sizes}")
            n_in, n_out = sizes[0], sizes[-1]
            meta = {
                "input_min": self.header_row(3, n_in), "input_max": self.header_row(4, n_in),
                "input_mean": self.header_row(5, n_in + 1), "input_range": self.header_row(6, n_in + 1),
            }
            stream = np.array([v for ln in self.lines[7:] for v in _numbers(ln)], dtype=np.float64)
        except (ValueError, OverflowError) as exc:  # "abc", or a count of INF / NaN
            raise self.fail(str(exc)) from exc
        needed = sum(o * i + o for i, o in zip(sizes[:-1], sizes[1:]))
        if stream.size != needed:
            raise self.fail(f"expected {needed} weights and biases for layer sizes {sizes}, found {stream.size}")
        metadata = {
            "input_min": np.array(meta["input_min"]), "input_max": np.array(meta["input_max"]),
            "input_mean": np.array(meta["input_mean"][:n_in]), "input_range": np.array(meta["input_range"][:n_in]),
            "output_mean": float(meta["input_mean"][n_in]), "output_range": float(meta["input_range"][n_in]),
        }
        return _layers_from_stream(stream, sizes), metadata


def _layers_from_stream(stream: np.ndarray, sizes: list[int]) -> list[Layer]:
    """Affine layers (``W`` rows then biases, per layer) with a ReLU between consecutive ones."""
    layers: list[Layer] = []
    pos = 0
    for k, (n_in, n_out) in enumerate(zip(sizes[:-1], sizes[1:])):
        W = stream[pos:pos + n_in * n_out].reshape(n_out, n_in)
        pos += n_in * n_out
        b = stream[pos:pos + n_out].copy()
        pos += n_out
        if layers:
            layers.append(Relu(f"relu_{k - 1}"))
        layers.append(Affine(W=W.copy(), b=b, name=f"layer_{k}"))
    return layers


def load_nnet(path: str, name: str | None = None) -> Network:
    """Read an NNet file as a :class:`Network` in the normalised input/output space."""
    from ..guard import read_input

    try:
        text = read_input(path, "model file").decode("utf-8")
    except UnicodeDecodeError as exc:
        raise ModelError(f"cannot read NNet file {path}: {exc}",
                         help="check the path and that it is a text .nnet file") from exc
    layers, metadata = _NNetReader(path, text).parse()
    first = layers[0]
    assert isinstance(first, Affine)
    return Network(
        name=name or os.path.splitext(os.path.basename(path))[0],
        input_name="input",
        input_shape=(first.in_size,),
        layers=layers,
        proto=None,
        source_path=os.path.abspath(path),
        source_format="nnet",
        metadata=metadata,
    )
