"""Fast attacks that need no solver: first incumbents for the exact search, and a baseline.

- :func:`greedy_l0`: change one input at a time to whichever end of its range raises the best target's lead the
  most (every candidate evaluated exactly, in one batched forward pass per step), then drop the changes that are
  not needed.  Few inputs changed, found in milliseconds; its size is the exact search's first upper bound.
- :func:`gradient_linf`: the fast gradient sign direction towards each target, scaled by bisection to the smallest
  step that works (FGSM with a line search); it changes every input, which is why it is a poor L0 attack.

Every result is a float64 candidate; the caller confirms it (float64 IR and onnxruntime) before it counts.
"""

from __future__ import annotations

import numpy as np

from ..compile.bounds import ReluNet


def lead(y: np.ndarray, label: int, targets: list[int], decision: str = "argmax", away: bool = True) -> np.ndarray:
    """Per output row, the best target's lead: ``> 0`` exactly when the decision is that target (ties lose).

    Away from the label, a target needs only to beat the label; a named target must beat every other output."""
    y = np.atleast_2d(y) * (1.0 if decision == "argmax" else -1.0)
    if away:
        return np.max(y[:, targets], axis=1) - y[:, label]
    best = np.full(y.shape[0], -np.inf)
    for t in targets:
        others = np.delete(y, t, axis=1)
        best = np.maximum(best, y[:, t] - others.max(axis=1))
    return best


def greedy_l0(rn: ReluNet, x0: np.ndarray, lo: np.ndarray, hi: np.ndarray, label: int, targets: list[int],
              margin: float, decision: str = "argmax", away: bool = True, max_changes: int = 100
              ) -> np.ndarray | None:
    """An input differing from ``x0`` in few coordinates whose best target leads by ``margin``, or None."""
    x = np.asarray(x0, float).copy()
    free = np.nonzero(hi > lo)[0]
    changed: list[int] = []
    for _ in range(min(max_changes, free.size)):
        cand_i = np.concatenate([free, free])
        cand_v = np.concatenate([lo[free], hi[free]])
        keep = cand_v != x[cand_i]
        cand_i, cand_v = cand_i[keep], cand_v[keep]
        if cand_i.size == 0:
            return None
        X = np.repeat(x[None], cand_i.size, axis=0)
        X[np.arange(cand_i.size), cand_i] = cand_v
        score = lead(rn.forward(X), label, targets, decision, away)
        best = int(np.argmax(score))
        x[cand_i[best]] = cand_v[best]
        changed.append(int(cand_i[best]))
        free = free[free != cand_i[best]]
        if score[best] >= margin:
            return _prune(rn, x, x0, changed, label, targets, margin, decision, away)
    return None


def _prune(rn: ReluNet, x: np.ndarray, x0: np.ndarray, changed: list[int], label: int, targets: list[int],
           margin: float, decision: str, away: bool) -> np.ndarray:
    """Undo every change the attack works without (earliest first: later changes usually carry it)."""
    for i in changed:
        trial = x.copy()
        trial[i] = x0[i]
        if lead(rn.forward(trial[None]), label, targets, decision, away)[0] >= margin:
            x = trial
    return x


def gradient_linf(rn: ReluNet, x0: np.ndarray, lo: np.ndarray, hi: np.ndarray, label: int, targets: list[int],
                  margin: float, decision: str = "argmax", away: bool = True, steps: int = 30) -> np.ndarray | None:
    """The smallest signed-gradient step (per target, by bisection) that makes a target lead by ``margin``."""
    sign = 1.0 if decision == "argmax" else -1.0
    best, best_eps = None, np.inf
    width = float(np.max(np.maximum(hi - x0, x0 - lo), initial=0.0))
    for t in targets:
        C = np.zeros((1, rn.output_size))
        C[0, t], C[0, label] = sign, -sign
        _, G = rn.forward_with_gradient(x0[None], C)
        direction = np.sign(G[0, 0])
        if not np.any(direction):
            continue

        def at(eps: float) -> np.ndarray:
            return np.clip(x0 + eps * direction, lo, hi)

        if lead(rn.forward(at(width)[None]), label, targets, decision, away)[0] < margin:
            continue
        a, b = 0.0, width
        for _ in range(steps):
            mid = (a + b) / 2
            if lead(rn.forward(at(mid)[None]), label, targets, decision, away)[0] >= margin:
                b = mid
            else:
                a = mid
        if b < best_eps:
            best, best_eps = at(b), b
    return best
