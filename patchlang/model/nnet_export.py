"""IR -> NNet text, so a network read from an ``.nnet`` file can be written back in the format it came in.

NNet can only hold ``Affine (Relu Affine)*`` without a prefix; anything else is refused with a hint to write
ONNX instead.  Numbers are written with ``repr`` (shortest round-trip form) so nothing is lost in float64.
"""

from __future__ import annotations

from typing import Iterable

import numpy as np

from ..errors import ModelError
from .ir import Affine, Network, Relu
from ..files import write_atomic

_NO_BOUND = float(np.finfo(np.float32).max)


def _row(values: Iterable[float]) -> str:
    return ",".join(repr(float(v)) for v in values) + ","


def _affines(net: Network) -> list[Affine]:
    """The affine layers, after checking the network has the only shape NNet can express."""
    layers = net.layers
    ok = net.prefix is None and len(layers) % 2 == 1 and all(
        isinstance(layer, Affine if k % 2 == 0 else Relu) for k, layer in enumerate(layers))
    if not ok:
        kinds = ", ".join(type(layer).__name__ for layer in layers)
        raise ModelError(f"network '{net.name}' cannot be written as NNet (layers: {kinds}"
                         f"{'; it has an ONNX prefix' if net.prefix is not None else ''})",
                         help="NNet holds only affine layers separated by ReLUs; save as .onnx instead")
    return [layer for layer in layers if isinstance(layer, Affine)]


def _normalisation(net: Network, n_in: int) -> dict[str, np.ndarray | float]:
    """The header values from ``metadata`` (set by the NNet reader), neutral ones for other networks."""
    defaults: dict[str, np.ndarray | float] = {
        "input_min": np.full(n_in, -_NO_BOUND), "input_max": np.full(n_in, _NO_BOUND),
        "input_mean": np.zeros(n_in), "input_range": np.ones(n_in), "output_mean": 0.0, "output_range": 1.0}
    return {key: net.metadata.get(key, value) for key, value in defaults.items()}


def format_nnet(net: Network) -> str:
    """The NNet text of ``net`` (weights in the normalised space, header from ``metadata``)."""
    affines = _affines(net)
    sizes = [affines[0].in_size] + [a.out_size for a in affines]
    norm = _normalisation(net, sizes[0])
    lines = [
        f"// Neural network '{net.name}' written by patchlang",
        _row_ints([len(affines), sizes[0], sizes[-1], max(sizes)]),
        _row_ints(sizes),
        "0,",
        _row(np.ravel(norm["input_min"])),
        _row(np.ravel(norm["input_max"])),
        _row([*np.ravel(norm["input_mean"]), float(norm["output_mean"])]),
        _row([*np.ravel(norm["input_range"]), float(norm["output_range"])]),
    ]
    for layer in affines:
        lines.extend(_row(w) for w in layer.W)
        lines.extend(_row([v]) for v in layer.b)
    return "\n".join(lines) + "\n"


def _row_ints(values: Iterable[int]) -> str:
    return ",".join(str(int(v)) for v in values) + ","


def save_nnet(net: Network, path: str) -> None:
    """Write ``net`` as an NNet file (atomically; never over the network's own source file)."""
    write_atomic(path, format_nnet(net).encode("utf-8"), protected=net.source_path)
