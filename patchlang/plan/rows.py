"""Step: one unknown per row of a weight edit (row-direction substitution); its inverse lifts back onto the weights.

Exact when every goal point shares one input to the edited layer, a restriction otherwise (see plan.bracket).

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

import time
from dataclasses import dataclass, replace

import numpy as np

from ..compile.goals import GoalGroup
from ..compile.patch import DeltaLayout
from ..lang.program import PatchTask
from ..model.edits import EditSpec
from ..model.ir import Affine, Network
from .budget import Budget
from .reduction import Answer, Inverse, PatchProblem, Reduction, StepRecord

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


@dataclass
class RowSetup:
    """What the row reduction needs: the weight edit, the norm, each goal point's input to the edited layer, the
    input shared by the points to change, and which points have exactly that input."""

    edit: EditSpec
    norm: str
    inputs: np.ndarray
    shared: np.ndarray
    same: np.ndarray


def row_setup(net: Network, task: PatchTask, groups: list[GoalGroup]) -> RowSetup | None:
    """The row-direction substitution applies: a MILP editing the weights of one layer, minimal L1 or L∞ with no
    bound on another norm (the closed-form cheapest change per row holds for that norm alone), and every point
    outside `keep` (those the patch must change) with one and the same input to the edited layer."""
    if task.problem_class != "MILP" or len(task.edits) != 1 or task.edits[0].kind != "weights":
        return None
    if len(task.norms.objective) != 1:
        return None
    weight, norm = task.norms.objective[0]
    if weight <= 0 or norm not in NORMS or not set(task.norms.bounds) <= {norm}:
        return None
    edit = task.edits[0]
    if not isinstance(net.affine(edit.layer), Affine):  # a convolution's kernel entries are not rows of a matrix
        return None
    X = edited_inputs(net, edit, groups)
    change = np.concatenate([np.full(len(g.points), g.group != "keep") for g in groups]) if groups else np.zeros(0)
    if not np.any(change):
        return None
    shared = X[np.nonzero(change)[0][0]]
    same = np.all(X == shared[None, :], axis=1)
    if not np.all(same[change.astype(bool)]):
        return None
    return RowSetup(edit, norm, X, shared, same)


def implied_linf(task: PatchTask) -> PatchTask:
    """The task with a `bound l1` also bounding every delta (``|delta| <= l1``): the same problem, and the ReLUs'
    big-Ms need a per-delta bound."""
    bounds = dict(task.norms.bounds)
    if "l1" not in bounds:
        return task
    bounds["linf"] = min(bounds["l1"], bounds.get("linf", np.inf))
    return replace(task, norms=replace(task.norms, bounds=bounds))


def surrogate_problem(problem: PatchProblem, red: RowReduction) -> PatchProblem:
    """The patch problem over the reduction's surrogate network, edit and points (same norms, goals, margins)."""
    task = replace(implied_linf(problem.task), edits=[red.edit])
    return replace(problem, net=red.net, task=task, groups=red.groups, enc=None, check_groups=None, surrogate=True)


def lift(red: RowReduction, answer: Answer) -> Answer:
    """The answer with its patch on the original weights (``diag(delta) R``, see :meth:`RowReduction.lift`)."""
    if answer.patch is None:
        return answer
    return replace(answer, patch=red.lift(*answer.patch))


class RowSubstitution(Reduction):
    """Every goal point gives the edited layer the same input: the weights act only through the pre-activations,
    so one unknown per row is exact.  Needs a big-M MILP backend (the surrogate is planned like any MILP)."""

    name = "one_unknown_per_row"
    requires = frozenset({"milp", "bigm"})

    def accepts(self, problem: PatchProblem, capabilities: frozenset[str]) -> bool:
        if not super().accepts(problem, capabilities) or problem.enc is not None or problem.surrogate:
            return False
        setup = row_setup(problem.net, problem.task, problem.groups)
        return setup is not None and bool(np.all(setup.same))

    def apply(self, problem: PatchProblem, budget: Budget) -> tuple[PatchProblem, Inverse]:
        setup = row_setup(problem.net, problem.task, problem.groups)
        assert setup is not None
        t0 = time.perf_counter()
        red = reduce_rows(problem.net, setup.edit, problem.groups, setup.norm,
                          directions(setup.shared, setup.edit.mask, setup.norm), setup.shared, exact=True)
        record = StepRecord(self.name, {"weights": int(np.count_nonzero(setup.edit.mask)),
                                        "rows": int(setup.edit.mask.shape[0]), "norm": setup.norm, "exact": True,
                                        "seconds": time.perf_counter() - t0})
        return surrogate_problem(problem, red), Inverse(record, lambda a: lift(red, a))
