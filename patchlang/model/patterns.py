"""Activation patterns: which ReLUs of a layer are on or off for the inputs a network classifies as a class.

Why: NNrepair uses them as the oracle for repairing an inner layer (there is no label to ask for inside the
network).  A pattern is a conjunction "neuron j is on / off" at the pre-activations of one affine layer; for each
class it is mined from the on/off signatures of correctly classified inputs with a scikit-learn decision tree (the
Prophecy recipe): every leaf is a pattern, and the class's pattern is its leaf with the largest support.

support: the share of the class's correctly classified inputs that follow the pattern; precision: the share of
the inputs following it that are of the class.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from ..errors import ModelError
from .ir import Network

MAX_LEAVES_PER_CLASS = 4  # a small tree: short patterns with high support (a deep one overfits single inputs)


@dataclass(frozen=True)
class Pattern:
    """``neurons[i]`` of affine layer ``layer`` is on (pre-activation > 0) iff ``states[i]``."""

    label: int
    layer: int  # index among affine layers
    neurons: np.ndarray
    states: np.ndarray
    support: float
    precision: float
    n_inputs: int  # correctly classified inputs of the class the support counts

    def follows(self, z: np.ndarray) -> np.ndarray:
        """Per row of pre-activations ``z``: whether it takes the pattern."""
        return np.all((np.atleast_2d(z)[:, self.neurons] > 0) == self.states[None, :], axis=1)

    def describe(self) -> str:
        on = [int(j) for j, s in zip(self.neurons, self.states) if s]
        off = [int(j) for j, s in zip(self.neurons, self.states) if not s]
        return (f"class {self.label}: on {on}, off {off}; support {100 * self.support:.1f}% of "
                f"{self.n_inputs}, precision {100 * self.precision:.1f}%")


def pre_activations(net: Network, layer: int, x: np.ndarray) -> np.ndarray:
    """Outputs of affine layer ``layer`` (before its ReLU) in float64, one row per input."""
    pos = net.affine_indices()[layer]
    return net.forward_suffix(net.to_suffix_input(x), 0, pos + 1)


def mine_patterns(net: Network, layer: int, x: np.ndarray, y: np.ndarray) -> dict[int, Pattern]:
    """The best pattern of every class among the inputs ``x`` the network classifies correctly (labels ``y``)."""
    try:
        from sklearn.tree import DecisionTreeClassifier
    except ImportError:
        raise ModelError("mining activation patterns needs scikit-learn, which is not installed",
                         help="pip install 'patchlang[examples]' (or scikit-learn)") from None

    y = np.asarray(y).astype(int)
    correct = net.labels(x) == y
    z = pre_activations(net, layer, np.asarray(x)[correct])
    labels = y[correct]
    if labels.size == 0:
        return {}
    signatures = (z > 0).astype(np.int8)
    classes = np.unique(labels)
    tree = DecisionTreeClassifier(max_leaf_nodes=max(2, MAX_LEAVES_PER_CLASS * classes.size), random_state=0)
    tree.fit(signatures, labels)
    leaf_of = tree.apply(signatures)
    paths = _leaf_paths(tree)
    out: dict[int, Pattern] = {}
    for c in classes:
        mine = labels == c
        best: tuple[int, int] | None = None  # (class-c inputs in the leaf, leaf)
        for leaf in np.unique(leaf_of[mine]):
            count = int(np.count_nonzero(mine & (leaf_of == leaf)))
            if best is None or count > best[0]:
                best = (count, int(leaf))
        assert best is not None
        neurons, states = paths[best[1]]
        in_leaf = leaf_of == best[1]
        out[int(c)] = Pattern(int(c), layer, neurons, states, best[0] / int(np.count_nonzero(mine)),
                              best[0] / int(np.count_nonzero(in_leaf)), int(np.count_nonzero(mine)))
    return out


def _leaf_paths(tree) -> dict[int, tuple[np.ndarray, np.ndarray]]:
    """Each leaf's conditions as (neurons, on?) in the order of the path (a neuron tested twice keeps its last)."""
    t = tree.tree_
    out: dict[int, tuple[np.ndarray, np.ndarray]] = {}
    stack: list[tuple[int, dict[int, bool]]] = [(0, {})]
    while stack:
        node, cond = stack.pop()
        left, right = t.children_left[node], t.children_right[node]
        if left == right:  # a leaf
            keys = np.array(sorted(cond), dtype=int)
            out[node] = (keys, np.array([cond[k] for k in keys], dtype=bool))
            continue
        j = int(t.feature[node])  # signature j <= 0.5 (off) goes left
        stack.append((int(left), {**cond, j: False}))
        stack.append((int(right), {**cond, j: True}))
    return out
