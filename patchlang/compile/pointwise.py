"""Row-direction substitution of a weight edit: exact when every goal point shares one input, a restriction else.

Why: editing the 150x784 weights of a hidden layer makes a MILP over 117,600 continuous unknowns in which every
LP is slow, while the goals only see the edit through ``z = dW @ x``.  When every goal point presents the same
input ``x`` to the edited layer, the cheapest ``dW`` with a given ``z`` is known in closed form (over each row's
editable entries ``T_j``):

* L1: all of row ``j``'s change on its largest ``|x_i|``: cost ``|z_j| / max_{i in T_j} |x_i|``;
* L∞: ``t_j * sign(x_i)`` on every entry of the row: cost ``max_j |z_j| / sum_{i in T_j} |x_i|``.

So ``dW = diag(delta) @ R`` with a fixed direction matrix ``R`` (row ``j``: ``sign(x_i*) e_i*`` for L1,
``sign(x)`` on ``T_j`` for L∞) loses nothing: the norm of ``dW`` is the same norm of ``delta`` (``R``'s rows have
unit L1 resp. L∞ norm), and the problem has one unknown per row instead of one per weight.

The substitution is expressed as a *network*, so the one encoder (:mod:`patchlang.compile.patch`) builds it: the
edited layer ``W x + b`` becomes ``[W | 0] [x; u] + b`` with ``u = R x`` appended to each point's input, and the
edit is the diagonal of the zero block (a delta ``delta_j`` there moves pre-activation ``j`` by ``delta_j u_j``,
exactly as ``diag(delta) R`` does).  Points with other inputs ``x_p`` get ``u_p = R x_p``, so the same surrogate
encodes the problem *restricted* to ``dW = diag(delta) R``: every answer is a genuine patch, optimal among those
of this form.  Choosing the support of ``R`` where the other points' inputs are zero leaves those points untouched.
"""

from __future__ import annotations

from dataclasses import dataclass, replace

import numpy as np

from ..model.ir import Affine, Network
from .goals import GoalGroup
from .patch import DeltaLayout, EditSpec

NORMS = ("l1", "linf")


@dataclass
class RowReduction:
    """A surrogate patch problem over one delta per row of a weight edit, and the way back to the weights."""

    net: Network  # the surrogate network (its first layer is the widened edited layer)
    edit: EditSpec  # the surrogate edit: the diagonal of the appended block, for rows with u_j != 0
    groups: list[GoalGroup]  # the goals with each point's input widened to [x_p; R x_p]
    original: EditSpec
    directions: np.ndarray  # R, shape of the original weight matrix, zero outside the support
    norm: str
    shared: np.ndarray | None  # the one input of every point the directions affect (enables the L∞ tidy lift)
    exact: bool  # every goal point has the same input: the optimum is the original problem's optimum

    @property
    def rows(self) -> np.ndarray:
        return np.nonzero(np.diag(self.edit.mask[:, -self.directions.shape[0]:]))[0]

    def lift(self, layout: DeltaLayout, x: np.ndarray) -> tuple[DeltaLayout, np.ndarray]:
        """The weight deltas of a surrogate solution ``x``, as a layout over the original edit and its values.

        ``diag(delta) R``; for L∞, when the affected points share one input, each row's change is instead the
        least-L1 one with the same ``z_j`` and no entry above ``max |delta|`` (largest ``|x_i|`` first, a
        fractional knapsack): same L∞, same effect on every point, smaller L1."""
        delta = np.zeros(self.directions.shape[0])
        delta[self.rows] = layout.deltas(x)
        dW = delta[:, None] * self.directions
        if self.norm == "linf" and self.shared is not None and delta.size:
            dW = self._least_l1(delta, float(np.max(np.abs(delta))))
        values = dW[self.original.mask]
        return DeltaLayout([self.original], [np.arange(values.size)]), values

    def _least_l1(self, delta: np.ndarray, cap: float) -> np.ndarray:
        """Row ``j`` moves ``z_j = delta_j * sum|x_i|`` with entries ``|d| <= cap`` on the largest ``|x_i|`` first."""
        assert self.shared is not None
        a = np.abs(self.directions) * np.abs(self.shared)[None, :]  # |x_i| on the support, 0 elsewhere
        need = np.abs(delta) * a.sum(axis=1)
        order = np.argsort(-a, axis=1, kind="stable")
        sorted_a = np.take_along_axis(a, order, axis=1)
        before = np.cumsum(cap * sorted_a, axis=1) - cap * sorted_a  # reached before each entry
        with np.errstate(invalid="ignore", divide="ignore"):
            take = np.clip((need[:, None] - before) / sorted_a, 0.0, cap)
        take = np.where(sorted_a > 0, take, 0.0)
        mag = np.zeros_like(a)
        np.put_along_axis(mag, order, take, axis=1)
        return mag * np.sign(delta)[:, None] * np.sign(self.directions)


def edited_inputs(net: Network, edit: EditSpec, groups: list[GoalGroup]) -> np.ndarray:
    """The input of the edited layer at every goal point, in group order (rows)."""
    pos = net.affine_indices()[edit.layer]
    points = [p.h for g in groups for p in g.points]
    if not points:
        return np.zeros((0, net.affine(edit.layer).in_size))
    return net.forward_suffix(np.stack(points), 0, pos)


def directions(x: np.ndarray, mask: np.ndarray, norm: str, support: np.ndarray | None = None) -> np.ndarray:
    """``R`` for input ``x``: row ``j`` is ``sign(x_i*) e_i*`` at the largest ``|x_i|`` of its editable entries
    (L1) or ``sign(x)`` on all of them (L∞), restricted to the columns in ``support`` (all when None); rows with
    no editable nonzero input are zero.  Ties go to the lowest column (any choice is optimal)."""
    usable = mask & (x != 0)[None, :]
    if support is not None:
        usable &= support[None, :]
    s = np.sign(x)[None, :]
    if norm == "linf":
        return np.where(usable, s, 0.0)
    a = np.where(usable, np.abs(x)[None, :], -1.0)
    best = np.argmax(a, axis=1)
    R = np.zeros(mask.shape)
    rows = np.nonzero(a[np.arange(mask.shape[0]), best] > 0)[0]
    R[rows, best[rows]] = s[0, best[rows]]
    return R


def reduce_rows(net: Network, edit: EditSpec, groups: list[GoalGroup], norm: str, R: np.ndarray,
                shared: np.ndarray | None, exact: bool) -> RowReduction:
    """The surrogate problem for ``dW = diag(delta) R`` (see the module docstring)."""
    pos = net.affine_indices()[edit.layer]
    layer = net.affine(edit.layer)
    n_out, n_in = layer.W.shape
    X = edited_inputs(net, edit, groups)
    U = X @ R.T
    used = np.any(U != 0, axis=0) if len(U) else np.zeros(n_out, dtype=bool)
    wide = Affine(W=np.hstack([layer.W, np.zeros((n_out, n_out))]), b=layer.b, name=layer.name)
    surrogate = replace(net, layers=[wide] + list(net.layers[pos + 1:]), prefix=None, proto=None,
                        input_shape=(n_in + n_out,), source_path=None, source_format="builtin")
    mask = np.zeros((n_out, n_in + n_out), dtype=bool)
    mask[:, n_in:] = np.diag(used)
    sedit = EditSpec(layer=0, kind="weights", mask=mask, span=edit.span, label=edit.label)
    widened, k = [], 0
    for g in groups:
        pts = []
        for p in g.points:
            pts.append(replace(p, h=np.concatenate([X[k], U[k]])))
            k += 1
        widened.append(replace(g, points=pts))
    return RowReduction(surrogate, sedit, widened, edit, R, norm, shared, exact)
