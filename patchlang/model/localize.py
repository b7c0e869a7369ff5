"""Fault localization (NNrepair): which weights of a layer are most to blame for the inputs a network gets wrong.

The defect score of an edge ``j -> n`` into a *suspicious* neuron ``n`` is how much more it carries on failing
inputs than on passing ones: ``mean |a_j W_nj|`` over failing inputs minus the same over passing inputs, where
``a`` is the input of the layer.  Since ``|a_j W_nj| = |a_j| |W_nj|`` this is ``|W_nj| (mean_f |a_j| - mean_p |a_j|)``.

Suspicious neurons: at the last layer, the output neuron of each failing input's target class (its failing inputs
alone enter that neuron's failing mean); at an inner layer, the neurons whose on/off state at some failing input
departs from its class's activation pattern (:mod:`patchlang.model.patterns`, mined from the passing inputs).
The result is an explicit mask of edges: the patch query that follows is the ordinary one.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from .ir import Network
from .patterns import Pattern, mine_patterns, pre_activations


@dataclass
class Localization:
    """The edges chosen (``mask`` over ``W``), with their scores, best first."""

    layer: int  # index among affine layers
    layer_name: str
    neurons: np.ndarray  # suspicious neurons
    chosen: list[tuple[int, int, float]]  # (neuron, input, score)
    mask: np.ndarray
    n_failing: int
    n_passing: int
    patterns: dict[int, Pattern]

    def lines(self, limit: int = 10) -> list[str]:
        """What `patchlang check` prints: the suspicious neurons and the best edges with their scores."""
        head = (f"layer {self.layer_name}: {len(self.chosen)} suspicious weight(s) into neuron(s) "
                f"{', '.join(str(int(n)) for n in self.neurons)} ({self.n_failing} failing, {self.n_passing} "
                "passing inputs)")
        edges = [f"W[{n}, {j}] {s:+.4g}" for n, j, s in self.chosen[:limit]]
        more = f" ... (+{len(self.chosen) - limit})" if len(self.chosen) > limit else ""
        return [head, "  " + ", ".join(edges) + more]


class LocalizationError(ValueError):
    """Nothing can be chosen (no failing input, no suspicious neuron, a count below one)."""


def layer_inputs(net: Network, layer: int, x: np.ndarray) -> np.ndarray:
    pos = net.affine_indices()[layer]
    return net.forward_suffix(net.to_suffix_input(x), 0, pos)


def localize(net: Network, layer: int, count: float, percent: bool, fail_x: np.ndarray, fail_t: np.ndarray,
             pass_x: np.ndarray, pass_y: np.ndarray | None,
             patterns: dict[int, Pattern] | None = None) -> Localization:
    """The top ``count`` (or ``count`` percent of the layer's weights) edges by defect score.

    ``fail_t``: the label each failing input must get; ``pass_y``: the passing inputs' labels (for mining the
    patterns of an inner layer; the network's own decisions when None); ``patterns``: already mined ones."""
    fail_x, fail_t = np.asarray(fail_x), np.asarray(fail_t).astype(int)
    if len(fail_x) == 0:
        raise LocalizationError("there is no failing input to localize the fault from")
    W = net.affine(layer).W
    last = layer == len(net.affine_indices()) - 1
    a_fail = np.abs(layer_inputs(net, layer, fail_x))
    a_pass_mean = np.abs(layer_inputs(net, layer, pass_x)).mean(axis=0) if len(pass_x) else np.zeros(W.shape[1])
    scores = np.full(W.shape, -np.inf)
    if last:
        blame = {int(c): fail_t == c for c in np.unique(fail_t)}
    else:
        if patterns is None:
            labels = pass_y if pass_y is not None or not len(pass_x) else net.labels(pass_x)
            patterns = mine_patterns(net, layer, pass_x, labels) if len(pass_x) else {}
        on = pre_activations(net, layer, fail_x) > 0
        blame = {}
        for c in np.unique(fail_t):
            mine = fail_t == c
            p = patterns.get(int(c))
            if p is None:
                continue
            departs = np.any(on[np.ix_(mine, p.neurons)] != p.states[None, :], axis=0)
            for n in p.neurons[departs]:
                blame[int(n)] = blame.get(int(n), np.zeros(len(fail_t), bool)) | mine
    for n, rows in blame.items():
        if 0 <= n < W.shape[0] and np.any(rows):
            scores[n] = np.abs(W[n]) * (a_fail[rows].mean(axis=0) - a_pass_mean)
    neurons = np.array(sorted(n for n in blame if np.isfinite(scores[n]).any()), dtype=int)
    if neurons.size == 0:
        raise LocalizationError("no neuron of the layer is suspicious: every failing input already takes its "
                                "class's activation pattern there")
    k = math.ceil(count * W.size / 100.0) if percent else int(count)
    if k < 1:
        raise LocalizationError(f"`top {count:g}{'%' if percent else ''}` chooses no weight")
    cand = np.argwhere(np.isfinite(scores))
    order = np.lexsort((cand[:, 1], cand[:, 0], -scores[cand[:, 0], cand[:, 1]]))[:k]
    chosen = [(int(cand[i, 0]), int(cand[i, 1]), float(scores[cand[i, 0], cand[i, 1]])) for i in order]
    mask = np.zeros(W.shape, dtype=bool)
    for n, j, _ in chosen:
        mask[n, j] = True
    return Localization(layer, net.affine(layer).name, neurons, chosen, mask, len(fail_x), len(pass_x),
                        patterns or {})
