"""Increase/decrease marking: AIGENT's middle-layer weight patch as an LP.

Why: a weight patch of the middle edge layer ``W_mid`` at the single input ``x0`` changes that layer's
pre-activations ``z = W_mid h + b`` (``h`` is the layer's input at ``x0``, fixed) by ``dz = dW h``; the rest of the
network is unchanged.  Asked as a patch query, the ReLUs above the edit make it a MILP, and on a deeper network
(784-50x6-10) the solver does not finish in seconds.  Marking fixes the direction of every change instead:

1. **Propagate the wanted output change backwards.**  The wanted change of the outputs is ``c = e_target -
   e_label`` (the target up, the label down; negated for argmin models).  Through the activation pattern at
   ``x0``, its gradient reaches each neuron ``j`` of the middle layer as ``g_j = d lead / d h'_j`` (``h'`` the
   layer's output after its ReLU, so a neuron that is off still gets the mark it would have if it were on).
   ``g_j > 0`` marks the neuron *increase*, ``g_j < 0`` *decrease*, ``g_j = 0`` *no effect*.
2. **Fix every edge's sign.**  Edge ``(j, i)`` of ``W_mid`` may only move in neuron ``j``'s direction (its input
   ``h_i >= 0``); edges whose input is 0 at ``x0`` and neurons marked *no effect* do not move.
3. **An LP.**  With the signs fixed and the phases above the edit fixed (to those at ``x0``; then with the
   neurons marked *increase* on; then to those at the largest marked move), "the target beats the label by ``margin``" is linear in ``dz``, and
   the least-l1 ``dW`` for a given ``dz`` puts ``dz_j / max(h)`` on the edge from the largest input.  The query is
   the attack encoder's (:func:`patchlang.compile.attack.encode_attack_query`) on the network above the edit with
   ``z`` as its input, each ``z_j`` boxed on its marked side of ``z_j(x0)``: no second encoder.

The answer is a candidate: :func:`marked_patch` applies ``dW`` to the layer and re-runs the network at ``x0`` in
float64 before returning it.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Callable, Iterator

import numpy as np

from .bounds import LayerBounds, ReluNet
from .attack import box_layer_bounds, encode_attack_query, target_spec

INCREASE, DECREASE, NO_EFFECT = 1, -1, 0
PHASE_CHOICES = ("phases at x0", "increase-marked on", "phases at the widest marked move")


@dataclass
class Marking:
    """The marks of the middle edge layer ``layer`` for the change towards ``target``."""

    layer: int
    target: int
    neurons: np.ndarray  # per output neuron of the layer: INCREASE, DECREASE or NO_EFFECT
    edges: np.ndarray  # (m, n) sign of each edge's change (0: the edge does not move)

    def summary(self) -> str:
        """E.g. "layer 3 towards 7: 12 increase, 30 decrease, 8 no effect"."""
        n = self.neurons
        return (f"layer {self.layer} towards {self.target}: {int(np.sum(n == INCREASE))} increase, "
                f"{int(np.sum(n == DECREASE))} decrease, {int(np.sum(n == NO_EFFECT))} no effect")


@dataclass
class MarkedPatch:
    """A checked weight patch of the middle layer: ``dW`` (same shape as ``W_mid``), its l1 size, the label the
    patched network gives ``x0``, the activation pattern there (per hidden layer) and the marking used."""

    dW: np.ndarray
    l1: float
    new_label: int
    pattern: list[np.ndarray]
    marking: Marking
    phases: str  # which phase choice above the edit gave it: PHASE_CHOICES


def activations(rn: ReluNet, x: np.ndarray) -> tuple[list[np.ndarray], list[np.ndarray]]:
    """Per layer ``k``: its input ``h_k`` (``h_0 = x``) and its pre-activation ``z_k``."""
    hs, zs = [np.asarray(x, float)], []
    for k, (W, b) in enumerate(zip(rn.Ws, rn.bs)):
        zs.append(W @ hs[-1] + b)
        if k < rn.n_hidden:
            hs.append(np.maximum(zs[-1], 0.0))
    return hs, zs


def mark(rn: ReluNet, x0: np.ndarray, layer: int, label: int, target: int, decision: str = "argmax") -> Marking:
    """The increase/decrease marks of edge layer ``layer`` for moving ``x0``'s decision from ``label`` to
    ``target`` (see the module docstring)."""
    hs, zs = activations(rn, x0)
    sign = 1.0 if decision == "argmax" else -1.0
    g = np.zeros(rn.output_size)  # d lead / d z_L
    g[target], g[label] = sign, -sign
    for k in range(rn.n_hidden, layer, -1):  # from z_k down to h_k = relu(z_{k-1})'s output
        g_h = rn.Ws[k].T @ g
        if k - 1 == layer:
            g = g_h
            break
        g = np.where(zs[k - 1] > 0, g_h, 0.0)
    tol = 1e-12 * (1.0 + np.max(np.abs(g), initial=0.0))
    neurons = np.where(g > tol, INCREASE, np.where(g < -tol, DECREASE, NO_EFFECT)).astype(np.int64)
    h = hs[layer]
    edges = neurons[:, None] * (h[None, :] > 0).astype(np.int64)
    if layer == rn.n_hidden:  # the output layer itself: its outputs are the marks (no ReLU after it)
        neurons = np.sign(g).astype(np.int64)
        edges = neurons[:, None] * (h[None, :] > 0).astype(np.int64)
    return Marking(layer, target, neurons, edges)


def upper_network(rn: ReluNet, layer: int) -> ReluNet:
    """The network above edit layer ``layer`` with ``z_layer`` as its input (an identity first layer, so that
    the layer's own ReLU is the first hidden layer)."""
    m = rn.Ws[layer].shape[0]
    return ReluNet([np.eye(m), *rn.Ws[layer + 1:]], [np.zeros(m), *rn.bs[layer + 1:]])


def _phase_bounds(up: ReluNet, lo: np.ndarray, hi: np.ndarray, pattern: list[np.ndarray]) -> LayerBounds | None:
    """Box bounds of ``up`` over ``[lo, hi]`` with every hidden phase fixed to ``pattern`` (None if the box rules
    one out)."""
    box = box_layer_bounds(up, lo, hi)
    lowers, uppers = [], []
    for k, on in enumerate(pattern):
        l, u = box.lower[k][0], box.upper[k][0]
        l2, u2 = np.where(on, np.maximum(l, 0.0), l), np.where(on, u, np.minimum(u, 0.0))
        if np.any(l2 > u2):
            return None
        lowers.append(l2[None])
        uppers.append(u2[None])
    return LayerBounds(lowers, uppers)


def _pattern(up: ReluNet, u: np.ndarray) -> list[np.ndarray]:
    _, zs = activations(up, u)
    return [z > 0 for z in zs[:-1]]


def marked_patch(net_decision: str, rn: ReluNet, x0: np.ndarray, layer: int, label: int, targets: list[int],
                 away: bool, margin: float, solve: Callable[[Any, Any], Any], options: Any,
                 time_left: Callable[[], float], reach: float = 10.0) -> list[MarkedPatch]:
    """Every checked sign-marked patch of :func:`marked_patches`, in its order."""
    return list(marked_patches(net_decision, rn, x0, layer, label, targets, away, margin, solve, options,
                               time_left, reach))


def marked_patches(net_decision: str, rn: ReluNet, x0: np.ndarray, layer: int, label: int, targets: list[int],
                   away: bool, margin: float, solve: Callable[[Any, Any], Any], options: Any,
                   time_left: Callable[[], float], reach: float = 10.0) -> Iterator[MarkedPatch]:
    """The checked sign-marked patches of edit layer ``layer``, lazily: per phase choice in the order of
    :data:`PHASE_CHOICES` (phases nearest ``x0``'s first: those are the likeliest to be reproducible by the
    layers below), the targets tried (the three closest competitors away from the label, else every target)
    by size.  Lazily because the caller usually needs only the first: the LPs of later choices are not solved.

    ``reach``: how far (relative to ``1 + max|z|``) a pre-activation may move; the LP minimises the move, so
    this only keeps its variables bounded.  ``solve(query, options)`` is the task's backend; ``time_left()`` the
    seconds left."""
    from dataclasses import replace

    from ..solution import FEASIBLE, OPTIMAL

    hs, zs = activations(rn, x0)
    h, z0 = hs[layer], zs[layer]
    hmax = float(np.max(h, initial=0.0))
    if hmax <= 0.0:
        return
    istar = int(np.argmax(h))
    up = upper_network(rn, layer)
    R = reach * (1.0 + float(np.max(np.abs(z0), initial=0.0)))
    y0 = zs[-1]
    sgn = 1.0 if net_decision == "argmax" else -1.0
    order = sorted(targets, key=lambda t: -sgn * y0[t])[: 3 if away else len(targets)]  # closest first
    x0_phases = _pattern(up, z0)
    plans = []  # per target: marking, box, spec, the three phase choices
    for t in order:
        mk = mark(rn, x0, layer, label, t, net_decision)
        s = mk.neurons.astype(float)
        lo, hi = z0 + np.minimum(s, 0.0) * R, z0 + np.maximum(s, 0.0) * R
        turned_on = ([np.where(s > 0, True, x0_phases[0]), *x0_phases[1:]] if x0_phases  # increase-marked on
                     else x0_phases)
        widest = _pattern(up, np.where(s > 0, hi, np.where(s < 0, np.maximum(lo, 0.0), z0)))
        plans.append((mk, lo, hi, target_spec(label, [t], rn.output_size, net_decision, away=away),
                      (x0_phases, turned_on, widest)))
    seen: set[tuple[int, bytes]] = set()
    for c, choice in enumerate(PHASE_CHOICES):
        group: list[MarkedPatch] = []
        for mk, lo, hi, spec, patterns in plans:
            pattern = patterns[c]
            key = (mk.target, b"".join(p.tobytes() for p in pattern))
            if key in seen or time_left() <= 0:
                continue
            seen.add(key)
            bounds = _phase_bounds(up, lo, hi, pattern)
            if bounds is None:
                continue
            enc = encode_attack_query(up, z0, lo, hi, spec, None, "l1", bounds, max(margin, 1e-6))
            sol = solve(enc.query, replace(options, time_limit=max(0.05, time_left())))
            if sol.x is None or sol.status not in (OPTIMAL, FEASIBLE):
                continue
            dz = np.clip(sol.x[enc.inputs], lo, hi) - z0
            dz[np.abs(dz) <= 1e-12 * (1.0 + np.abs(z0))] = 0.0
            cand = _checked(rn, x0, layer, dz, istar, hmax, label, targets, away, margin, net_decision, mk, choice)
            if cand is not None:
                group.append(cand)
        yield from sorted(group, key=lambda p: p.l1)


def _checked(rn: ReluNet, x0: np.ndarray, layer: int, dz: np.ndarray, istar: int, hmax: float, label: int,
             targets: list[int], away: bool, margin: float, decision: str, mk: Marking, phases: str
             ) -> MarkedPatch | None:
    """``dz`` as a weight patch (all of neuron ``j``'s change on the edge from the largest input ``istar``),
    applied and re-run at ``x0`` in float64; None unless the decision is then a target by ``margin`` / 2."""
    dW = np.zeros_like(rn.Ws[layer])
    dW[:, istar] = dz / hmax
    Ws = list(rn.Ws)
    Ws[layer] = rn.Ws[layer] + dW
    patched = ReluNet(Ws, list(rn.bs))
    hs, zs = activations(patched, x0)
    y = zs[-1] * (1.0 if decision == "argmax" else -1.0)
    if away:
        ok = np.max(y[targets]) - y[label] >= margin / 2
    else:
        ok = any(y[t] - np.max(np.delete(y, t)) >= margin / 2 for t in targets)
    if not ok:
        return None
    new_label = int(np.argmax(y))
    return MarkedPatch(dW, float(np.abs(dW).sum()), new_label, [z > 0 for z in zs[:-1]], mk, phases)
