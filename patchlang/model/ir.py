"""The network IR: an opaque prefix followed by a chain of piecewise-linear layers on flat vectors.

The layer kinds are plain data (:mod:`.layers`); what each kind does (evaluation, gradients, its exact
piecewise-linear form for bounds and solver encodings) is the operator table (:mod:`.ops`).

Why this shape: patchlang only ever *encodes* the part of a network from the first editable parameter on, and
that part must be piecewise linear.  Everything before the last op the table lacks is evaluated concretely, so the
IR keeps it as an opaque :class:`Prefix` run by onnxruntime and represents the rest as a list of simple layers
whose parameters are plain float64 arrays (linear ops such as convolutions become sparse affine maps).  Each affine layer remembers which ONNX
initializer its parameters came from (:class:`ParamRef`) so that a patch is written back by replacing
initializer values in a copy of the original ``ModelProto`` and nothing else changes.
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace
from typing import Any, Callable

import numpy as np

from .layers import Affine, Clip, Elementwise, Layer, LeakyRelu, Lifted, Linear, MaxPool, ParamRef, Relu
from .ops import apply_layer, in_size, is_editable, out_size, params, with_params

__all__ = ["Affine", "Clip", "Elementwise", "Layer", "LeakyRelu", "Linear", "MaxPool", "ParamRef", "Relu", "Prefix",
           "Network", "apply_layer", "decide"]


@dataclass
class Prefix:
    """The opaque front of a network, evaluated concretely.

    ``run`` maps a batch in the model's input shape ``(N, *input_shape)`` to the flat suffix input
    ``(N, suffix_in_size)``.  ``description`` names the ops it contains (for reports and errors).
    """

    run: Callable[[np.ndarray], np.ndarray]
    output_name: str
    description: str
    blocker: str = ""  # why its last node cannot be encoded, naming the node and its op


@dataclass
class Network:
    """A network as patchlang sees it.

    ``input_shape`` is the per-sample input shape of the original model (without the batch axis);
    ``layers`` act on flat float64 vectors of length ``suffix_in_size``.  ``decision`` is how a label is
    read from the outputs: ``argmax`` for classifiers, ``argmin`` for ACAS Xu style advisories.
    """

    name: str
    input_name: str
    input_shape: tuple[int, ...]
    layers: list[Layer]
    prefix: Prefix | None = None
    proto: Any = None  # onnx.ModelProto of the original file, never mutated
    source_path: str | None = None
    source_format: str = "onnx"  # onnx | nnet | builtin
    batch_fixed: bool = False  # the ONNX input has a fixed batch dimension of 1
    input_rank_has_batch: bool = True  # the ONNX input has a leading batch axis
    decision: str = "argmax"
    metadata: dict[str, Any] = field(default_factory=dict)

    # ----------------------------------------------------------------- structure
    @property
    def tail(self) -> dict[str, str] | None:
        """The final Softmax/LogSoftmax the importer stripped (``{"op", "node", ...}``), or None: ``forward`` gives
        the logits before it, which decide the same labels."""
        return self.metadata.get("onnx_tail")

    @property
    def input_size(self) -> int:
        return int(np.prod(self.input_shape)) if self.input_shape else 1

    @property
    def suffix_in_size(self) -> int:
        """The size of the flat vector the first layer reads (the first layer that fixes a size decides)."""
        for layer in self.layers:
            size = in_size(layer)
            if size is not None:
                return size
        raise ValueError("network has no affine layer")

    @property
    def output_size(self) -> int:
        n = self.suffix_in_size
        for layer in self.layers:
            n = out_size(layer, n)
        return n

    def affine_indices(self) -> list[int]:
        """Positions in ``layers`` of the editable layers (dense affine layers and convolutions), in order: what
        ``layer k`` in a spec counts."""
        return [i for i, layer in enumerate(self.layers) if is_editable(layer)]

    def affine(self, k: int) -> Affine | Linear:
        """Editable layer ``k``: an :class:`Affine`, or a convolution's :class:`Linear` (its parameters through
        :meth:`params`)."""
        return self.layers[self.affine_indices()[k]]  # type: ignore[return-value]

    def params(self, k: int, kind: str) -> np.ndarray:
        """The tensor an `edit` of editable layer ``k`` moves: ``W``/``b`` of a dense layer, the kernel / per-channel
        bias of a convolution."""
        return params(self.affine(k), kind)

    def with_params(self, k: int, kind: str, values: np.ndarray) -> "Network":
        """A copy with that tensor replaced (the original is untouched)."""
        layers = list(self.layers)
        i = self.affine_indices()[k]
        layers[i] = with_params(layers[i], kind, values)
        return replace(self, layers=layers)

    def find_affine(self, key: int | str) -> int | None:
        """Index into ``affine_indices()`` for a layer given by position (negative from the end) or name.

        A name matches the ONNX node name or either initializer name.  Returns ``None`` when absent.
        """
        idx = self.affine_indices()
        if isinstance(key, int):
            if -len(idx) <= key < len(idx):
                return key % len(idx)
            return None
        for k, i in enumerate(idx):
            layer = self.layers[i]
            assert isinstance(layer, (Affine, Linear, Lifted))
            names = {layer.name}
            if layer.weight_ref:
                names.add(layer.weight_ref.initializer)
            if layer.bias_ref:
                names.add(layer.bias_ref.initializer)
            if key in names:
                return k
        return None

    def layer_names(self) -> list[str]:
        return [self.layers[i].name for i in self.affine_indices()]

    # ----------------------------------------------------------------- evaluation (float64)
    def to_suffix_input(self, x: np.ndarray) -> np.ndarray:
        """Model inputs (any shape with N leading samples, or flat) -> flat suffix inputs ``(N, d)``."""
        x = np.asarray(x, dtype=np.float64)
        n = x.shape[0] if x.ndim > 1 else 1
        if self.prefix is None:
            return x.reshape(n, -1)
        return np.asarray(self.prefix.run(x.reshape((n, *self.input_shape))), dtype=np.float64).reshape(n, -1)

    def forward_suffix(self, h: np.ndarray, start: int = 0, stop: int | None = None) -> np.ndarray:
        """Run layers ``start:stop`` on flat vectors ``(N, d)`` in float64."""
        h = np.asarray(h, dtype=np.float64)
        for layer in self.layers[start:stop]:
            h = apply_layer(layer, h)
        return h

    def forward(self, x: np.ndarray) -> np.ndarray:
        """Outputs ``(N, out)`` in float64 for model inputs ``x``."""
        return self.forward_suffix(self.to_suffix_input(x))

    def activations(self, x: np.ndarray) -> list[np.ndarray]:
        """``[h0, h1, ...]`` where ``h0`` is the suffix input and ``h{i+1}`` the output of ``layers[i]``."""
        h = self.to_suffix_input(x)
        out = [h]
        for layer in self.layers:
            h = apply_layer(layer, h)
            out.append(h)
        return out

    def labels(self, x: np.ndarray) -> np.ndarray:
        return decide(self.forward(x), self.decision)

    # ----------------------------------------------------------------- editing
    def with_affine(self, k: int, W: np.ndarray | None = None, b: np.ndarray | None = None) -> "Network":
        """A copy with affine layer ``k`` given new parameters (the original is untouched)."""
        layers = list(self.layers)
        i = self.affine_indices()[k]
        old = layers[i]
        assert isinstance(old, Affine)
        layers[i] = replace(old, W=old.W if W is None else np.asarray(W, dtype=np.float64),
                            b=old.b if b is None else np.asarray(b, dtype=np.float64))
        return replace(self, layers=layers)


def decide(outputs: np.ndarray, decision: str = "argmax") -> np.ndarray:
    """Labels from outputs; ties go to the lowest index (numpy's rule), which the margins make irrelevant."""
    outputs = np.asarray(outputs)
    return np.argmin(outputs, axis=-1) if decision == "argmin" else np.argmax(outputs, axis=-1)
