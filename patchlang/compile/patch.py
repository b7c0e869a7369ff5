"""Lower a patch problem (editable parameters + per-point goals + norms) to a Query.

The encoding, per point:

1. layers before the first edited one are evaluated concretely (float64);
2. the edited affine layer is linear in the unknown deltas because its input is a constant;
3. everything downstream is encoded exactly: each affine output becomes a variable with an equality row
   (keeps rows sparse); every other layer goes through its exact piecewise-linear form from the operator table
   (:mod:`patchlang.model.ops`: affine stages and ReLUs), where each ReLU whose phase the sound interval bounds
   fix costs nothing and every other ReLU becomes a ``relu`` atom; biases of later layers add their deltas
   linearly;
4. the point's goal clauses become rows (one alternative) or disjunctions (several).

Norms of the deltas are added once: L∞ with one bound variable, L1 with one per delta, L0 with one binary
per delta (needs a finite per-parameter bound).  Multiplying two unknowns (weights of a layer whose input
depends on another edit) becomes ``products`` atoms ``p = delta * h`` over a materialised input ``h``: the
checker only lets that through with `using z3`, and the MILP lowering refuses it.
"""

from __future__ import annotations

from dataclasses import dataclass
import numpy as np
import scipy.sparse as sp

from ..errors import PatchlangError
from ..model.edits import EditSpec, NormSpec
from ..model.ir import Affine, Layer, Linear, Network
from ..model.ops import apply_layer, layer_stages, param_entries
from .goals import Alternative, GoalGroup, PointGoal
from .walk import NetworkWalker
from ..query import Query, QueryBuilder, RowBlock


@dataclass
class DeltaLayout:
    """Which query variables are which parameter deltas, for lifting a solution back onto the network."""

    edits: list[EditSpec]
    var_index: list[np.ndarray]  # per edit: variable index of each masked entry (row-major order of the mask)

    def apply(self, net: Network, x: np.ndarray) -> Network:
        out = net
        for edit, idx in zip(self.edits, self.var_index):
            values = out.params(edit.layer, edit.kind).copy()
            values[edit.mask] += x[idx]
            out = out.with_params(edit.layer, edit.kind, values)
        return out

    def deltas(self, x: np.ndarray) -> np.ndarray:
        return np.concatenate([x[idx] for idx in self.var_index]) if self.var_index else np.zeros(0)

    @property
    def size(self) -> int:
        return int(sum(i.size for i in self.var_index))


@dataclass
class PatchEncoding:
    query: Query
    layout: DeltaLayout
    n_unstable: int
    n_points: int
    # The query as encoded, when ``query`` was derived from it by tighter bounds (same variables, fewer ReLU
    # atoms; see compile.bounds_tighten): warm starts are propagated through the encoder's own atoms.
    source: Query | None = None


def first_edited_position(net: Network, edits: list[EditSpec]) -> int:
    """Position in ``net.layers`` of the most upstream edited affine layer."""
    idx = net.affine_indices()
    return min(idx[e.layer] for e in edits)




class PatchEncoder:
    """Builds the Query for one patch problem; see the module docstring for the encoding."""

    def __init__(self, net: Network, edits: list[EditSpec], norms: NormSpec, name: str = "patch"):
        if not edits:
            raise PatchlangError("nothing may move: the patch has no `edit` statement",
                                 help="add e.g. `edit layer -1 weights`")
        self.net = net
        self.edits = edits
        self.norms = norms
        self.b = QueryBuilder(name)
        self.walk = NetworkWalker(self.b)  # the one encoder of the layers' exact forms (shared with compile.verify)
        self.start = first_edited_position(net, edits)
        self._make_delta_vars()
        self.n_points = 0

    @property
    def n_unstable(self) -> int:
        """ReLU atoms added so far."""
        return self.walk.n_unstable

    # ------------------------------------------------------------------ unknowns
    def _make_delta_vars(self) -> None:
        linf = self.norms.bounds.get("linf", np.inf)
        if np.isfinite(linf):
            from ..query import RowBlock

            self.b.var_bound_source = RowBlock(f"bound linf <= {linf:g}", 0, 0, "bound",
                                               self.norms.bound_spans.get("linf"))
        var_index = []
        for e in self.edits:
            n = int(np.count_nonzero(e.mask))
            var_index.append(self.b.add_vars(n, -linf, linf, name=e.label or f"delta_{e.layer}_{e.kind}",
                                             kind="delta", span=e.span))
        self.layout = DeltaLayout(self.edits, var_index)
        self._edits_at: dict[int, list[tuple[EditSpec, np.ndarray]]] = {}
        idx = self.net.affine_indices()
        for e, v in zip(self.edits, var_index):
            self._edits_at.setdefault(idx[e.layer], []).append((e, v))

    # ------------------------------------------------------------------ one point through the network
    def _edited_affine(self, pos: int, layer: Affine | Linear, E: sp.csr_matrix | None, c: np.ndarray,
                       name: str = "") -> tuple[sp.csr_matrix, np.ndarray]:
        """Pre-activation of an affine layer as ``E' x + c'`` including the deltas it owns.

        Edited weights meeting an input that depends on other unknowns give products ``delta * h``: the input is
        materialised as variables ``h`` and each product becomes a ``products`` atom (SMT only)."""
        n_out = layer.out_size
        if E is None:
            base_E = sp.csr_matrix((n_out, self.b.n_vars))
        else:
            base_E = sp.csr_matrix(layer.W) @ E
            base_E = sp.csr_matrix(base_E, shape=(n_out, self.b.n_vars))
        new_c = np.asarray(layer.W @ c).reshape(-1) + layer.b
        rows, cols, vals = [], [], []
        h_vars: np.ndarray | None = None
        for edit, var in self._edits_at.get(pos, []):
            r, j, k = param_entries(layer, edit.kind, edit.mask)
            rows.append(r)
            if edit.kind == "weights" and E is not None and E.nnz:
                if h_vars is None:
                    h_vars = self._materialize(E, c, f"{name or layer.name}.in")[0].indices
                cols.append(self._products(var[k], h_vars[j], f"{name or layer.name}.prod"))
                vals.append(np.ones(r.size))
            else:
                cols.append(var[k])
                vals.append(np.where(j >= 0, c[np.maximum(j, 0)], 1.0))
        if rows:
            D = sp.csr_matrix((np.concatenate(vals), (np.concatenate(rows), np.concatenate(cols))),
                              shape=(n_out, self.b.n_vars))
            base_E = sp.csr_matrix(base_E, shape=D.shape) + D  # products may have added variables
        return sp.csr_matrix(base_E), new_c

    def _products(self, a: np.ndarray, h: np.ndarray, name: str) -> np.ndarray:
        """New variables ``p = x_a * x_h`` (elementwise) with their interval bounds."""
        lb, ub = self.b.var_bounds()
        with np.errstate(invalid="ignore"):
            cands = np.stack([lb[a] * lb[h], lb[a] * ub[h], ub[a] * lb[h], ub[a] * ub[h]])
        cands = np.nan_to_num(cands, nan=0.0, posinf=np.inf, neginf=-np.inf)  # 0 * inf: the product is 0
        p = self.b.add_vars(a.size, cands.min(axis=0), cands.max(axis=0), name=name, kind="neuron")
        self.b.add_product(p, a, h)
        return p

    def _materialize(self, E: sp.csr_matrix, c: np.ndarray, name: str) -> tuple[sp.csr_matrix, np.ndarray]:
        """Introduce variables ``z = E x + c`` with their sound bounds; return the unit expression of ``z``."""
        return self.walk.materialize(E, c, name)

    def _relu(self, E: sp.csr_matrix, c: np.ndarray, name: str) -> tuple[sp.csr_matrix, np.ndarray]:
        return self.walk.relu(E, c, name)

    def _through_network(self, h: np.ndarray, point: str, materialize_last: bool = True
                         ) -> tuple[sp.csr_matrix, np.ndarray]:
        """Outputs of the network at one point as an expression over the query variables.

        ``materialize_last=False`` keeps the last affine layer as an expression even when it is dense (used by
        :func:`delta_expression`, which wants the outputs directly in terms of the deltas)."""
        net = self.net
        c = net.forward_suffix(h[None, :], 0, self.start)[0]
        E: sp.csr_matrix | None = None
        editable = set(net.affine_indices())
        last_affine = max(editable)
        for pos in range(self.start, len(net.layers)):
            layer = net.layers[pos]
            if pos in editable:
                E, c = self._edited_affine(pos, layer, E, c, f"{point}.{layer.name}")
                if pos != last_affine or (materialize_last and E.nnz > 4 * E.shape[0]):
                    E, c = self._materialize(E, c, f"{point}.{layer.name}")
            else:
                assert E is not None
                E, c = self._stages(layer, E, c, f"{point}.{layer.name}", 1)
        assert E is not None
        return sp.csr_matrix(E, shape=(E.shape[0], self.b.n_vars)), c

    def _stages(self, layer: Layer, E: sp.csr_matrix, c: np.ndarray, name: str, points: int
                ) -> tuple[sp.csr_matrix, np.ndarray]:
        """A layer without unknowns, through its exact piecewise-linear form from the operator table: affine stages
        are sparse products, ReLU stages ReLU atoms (stable ones free).  ``points`` points are stacked point-major
        in ``E``/``c``; the same stages apply to each.  This one walk is every operator's MILP and SMT encoding."""
        E, c = self.walk.stages(layer_stages(layer, c.size // points), E, c, name, points)
        if isinstance(layer, Linear) and E.nnz > 4 * E.shape[0]:
            E, c = self._materialize(E, c, name)  # as after an affine layer: keep later products sparse
        return sp.csr_matrix(E), c

    # ------------------------------------------------------------------ many points at once
    BATCH_NONZEROS = 4_000_000  # per chunk of points: rows of the block-diagonal layer products

    def _batchable(self) -> bool:
        """Points can go through the network together unless edited weights meet an input that depends on another
        edit (those give per-point products, SMT only)."""
        idx = self.net.affine_indices()
        return not any(e.kind == "weights" and idx[e.layer] != self.start for e in self.edits)

    def _add_points_batched(self, group: GoalGroup) -> None:
        """Encode a group's points in chunks: each layer costs a few sparse products for the whole chunk instead of
        a dozen small ones per point (thousands of `keep` points behind a hidden-layer edit).  The variables and
        rows are the same as point by point; only their blocks are per chunk."""
        later = [l for l in self.net.layers[self.start + 1:] if isinstance(l, Affine)]
        widest = max([np.count_nonzero(l.W) for l in later] + [1])
        edited = sum(int(np.count_nonzero(e.mask)) for e in self.edits)
        per_point = max(widest, edited, 1)
        size = max(1, min(len(group.points), self.BATCH_NONZEROS // per_point))
        for k in range(0, len(group.points), size):
            chunk = group.points[k:k + size]
            E, C = self._through_network_batch(np.stack([p.h for p in chunk]), f"{group.label}[{k}:{k + len(chunk)}]")
            n_out = C.shape[1]
            for i, pg in enumerate(chunk):
                self._add_point_goal(group, pg, E[i * n_out:(i + 1) * n_out], C[i])

    def _through_network_batch(self, H: np.ndarray, name: str, stop: int | None = None
                               ) -> tuple[sp.csr_matrix, np.ndarray]:
        """:meth:`_through_network` for the rows of ``H`` at once: ``E`` stacks the points' output rows
        (point-major) and ``C`` holds their constants, one row per point.  ``stop``: end after layer position
        ``stop - 1`` (an affine layer, left as an expression: hidden goals)."""
        net = self.net
        P = H.shape[0]
        C = net.forward_suffix(H, 0, self.start)
        E: sp.csr_matrix | None = None
        editable = set(net.affine_indices())
        last_affine = max(editable) if stop is None else stop - 1
        for pos in range(self.start, len(net.layers) if stop is None else stop):
            layer = net.layers[pos]
            label = f"{name}.{layer.name}"
            if pos in editable:
                E, C = self._edited_affine_batch(pos, layer, E, C)
                if stop is not None and pos == last_affine:
                    continue
                if pos != last_affine:
                    E, c = self._materialize(E, C.ravel(), label)
                    C = c.reshape(P, -1)
                else:
                    E, C = self._materialize_dense_points(E, C, label)
            else:
                assert E is not None
                E, c = self._stages(layer, E, C.ravel(), label, P)
                C = c.reshape(P, -1)
        assert E is not None
        return sp.csr_matrix(E, shape=(E.shape[0], self.b.n_vars)), C

    def _materialize_dense_points(self, E: sp.csr_matrix, C: np.ndarray, name: str
                                  ) -> tuple[sp.csr_matrix, np.ndarray]:
        """The last layer's outputs become variables for the points whose expression is dense (more than 4
        nonzeros per output), as :meth:`_through_network` decides point by point; the others stay expressions."""
        P, n_out = C.shape
        per_point = np.add.reduceat(np.diff(E.indptr), np.arange(0, P * n_out, n_out)) if P else np.zeros(0)
        dense_rows = np.repeat(per_point > 4 * n_out, n_out)
        if not np.any(dense_rows):
            return E, C
        rows = np.nonzero(dense_rows)[0]
        Ez, _ = self._materialize(E[rows], C.ravel()[rows], name)
        n = self.b.n_vars
        keep = sp.diags((~dense_rows).astype(float))
        S = sp.csr_matrix((np.ones(rows.size), (rows, Ez.indices)), shape=(E.shape[0], n))
        c = np.where(dense_rows, 0.0, C.ravel())
        return sp.csr_matrix(keep @ sp.csr_matrix(E, shape=(E.shape[0], n)) + S), c.reshape(P, n_out)

    def _edited_affine_batch(self, pos: int, layer: Affine | Linear, E: sp.csr_matrix | None, C: np.ndarray
                             ) -> tuple[sp.csr_matrix, np.ndarray]:
        """:meth:`_edited_affine` for a chunk of points (``C`` one row per point); weights are only edited where
        the input is constant (see :meth:`_batchable`)."""
        P, n_out = C.shape[0], layer.out_size
        n = self.b.n_vars
        if E is None:
            base_E = sp.csr_matrix((P * n_out, n))
        else:
            W = sp.kron(sp.identity(P, format="csr"), sp.csr_matrix(layer.W), format="csr")
            base_E = sp.csr_matrix(W @ E, shape=(P * n_out, n))
        rows, cols, vals = [], [], []
        offsets = (np.arange(P) * n_out)[:, None]
        for edit, var in self._edits_at.get(pos, []):
            r, j, k = param_entries(layer, edit.kind, edit.mask)
            vals.append(np.where(j >= 0, C[:, np.maximum(j, 0)], 1.0).ravel())
            rows.append((offsets + r).ravel())
            cols.append(np.tile(var[k], P))
        if rows:
            base_E = base_E + sp.csr_matrix((np.concatenate(vals), (np.concatenate(rows), np.concatenate(cols))),
                                            shape=(P * n_out, n))
        return sp.csr_matrix(base_E), apply_layer(layer, C)

    # ------------------------------------------------------------------ goals
    def add_goal_group(self, group: GoalGroup) -> None:
        if group.at is not None:
            self._add_hidden_points(group)
            return
        if self._last_layer_only():
            points = self._add_last_layer_points(group)
        elif len(group.points) > 1 and self._batchable():
            self._add_points_batched(group)  # hidden-layer edits: all points through the network together
            return
        else:
            points = group.points
        for pg in points:
            E, c = self._through_network(pg.h, pg.point)
            self._add_point_goal(group, pg, E, c)

    def _add_hidden_points(self, group: GoalGroup) -> None:
        """Clauses over the pre-activations of layer position ``group.at`` (the same rows as output goals, on a
        hidden vector): the network is encoded up to that layer only, so nothing after it adds a ReLU."""
        if group.at < self.start or not isinstance(self.net.layers[group.at], Affine) or not self._batchable():
            raise PatchlangError(f"`{group.label}` constrains layer {group.at}, which the edits do not reach "
                                 "linearly", help="edit the weights of that layer or of one before it")
        if not group.points:
            return
        if group.at == self.start and self._add_edited_layer_signs(group):
            return
        size = max(1, self.BATCH_NONZEROS // max(1, sum(int(np.count_nonzero(e.mask)) for e in self.edits)))
        for k in range(0, len(group.points), size):
            chunk = group.points[k:k + size]
            E, C = self._through_network_batch(np.stack([p.h for p in chunk]),
                                               f"{group.label}[{k}:{k + len(chunk)}]", stop=group.at + 1)
            n = C.shape[1]
            for i, pg in enumerate(chunk):
                self._add_point_goal(group, pg, E[i * n:(i + 1) * n], C[i])

    def _add_edited_layer_signs(self, group: GoalGroup) -> bool:
        """Bulk rows for clauses that each bound one pre-activation (``+-z_n``, the activation-pattern goals) at
        the edited layer itself, whose input is constant: ``z_n = c_n + sum_j x_j d_nj (+ d_n)`` is written for
        the constrained neurons only (not for every neuron of every point).  Returns False, encoding nothing, when
        some clause is of another shape (the general path then encodes the group)."""
        picks = []  # (point, neuron, sign, lo, hi)
        for i, pg in enumerate(group.points):
            for clause in pg.clauses:
                if len(clause) != 1 or np.any(np.count_nonzero(clause[0].C, axis=1) != 1):
                    return False
                alt = clause[0]
                r, n = np.nonzero(alt.C)
                picks.append((np.full(r.size, i), n, alt.C[r, n], alt.lo[r], alt.hi[r]))
        self.n_points += len(group.points)
        if not picks:
            return True
        pt, neuron, sign, lo, hi = (np.concatenate(a) for a in zip(*picks))
        layer = self.net.layers[self.start]
        X = self.net.forward_suffix(np.stack([pg.h for pg in group.points]), 0, self.start)
        const = (X @ layer.W.T + layer.b)[pt, neuron]
        # the edited entries of this layer, grouped by neuron: (neuron, input column or -1 for a bias, variable)
        en, ej, ev = [], [], []
        for edit, var in self._edits_at.get(self.start, []):
            if edit.kind == "weights":
                r, j = np.nonzero(edit.mask)
            else:
                (r,) = np.nonzero(edit.mask)
                j = np.full(r.size, -1)
            en.append(r), ej.append(j), ev.append(var)
        en, ej, ev = np.concatenate(en), np.concatenate(ej), np.concatenate(ev)
        order = np.argsort(en, kind="stable")
        en, ej, ev = en[order], ej[order], ev[order]
        first = np.searchsorted(en, neuron, "left")
        count = np.searchsorted(en, neuron, "right") - first
        row = np.repeat(np.arange(neuron.size), count)
        entry = np.repeat(first - np.concatenate([[0], np.cumsum(count)[:-1]]), count) + np.arange(count.sum())
        x_of = np.where(ej[entry] >= 0, X[pt[row], np.maximum(ej[entry], 0)], 1.0)
        M = sp.csr_matrix((sign[row] * x_of, (row, ev[entry])), shape=(neuron.size, self.b.n_vars))
        off = sign * const
        start = int(self.b.add_rows(M, lo - off, hi - off, label=group.label, group=group.group, span=group.span,
                                    statement=group.label)[0])
        self.b.row_blocks.pop()  # one block per point, so cores and reports name the point
        bounds = np.searchsorted(pt, np.arange(len(group.points) + 1))
        self.b.row_blocks.extend(RowBlock(f"{group.label} [{pg.point}]", start + int(a), int(b - a), group.group,
                                          group.span, statement=group.label, point=pg.point)
                                 for pg, a, b in zip(group.points, bounds[:-1], bounds[1:]) if b > a)
        return True

    def _add_point_goal(self, group: GoalGroup, pg: PointGoal, E: sp.csr_matrix, c: np.ndarray) -> None:
        """The rows (or disjunctions) of one point's clauses over its outputs ``E x + c``."""
        self.n_points += 1
        for clause in pg.clauses:
            if len(clause) == 1:
                alt = clause[0]
                M = sp.csr_matrix(alt.C) @ E
                off = alt.C @ c
                self.b.add_rows(M, alt.lo - off, alt.hi - off, label=f"{group.label} [{pg.point}]",
                                group=group.group, span=group.span, statement=group.label, point=pg.point)
            else:
                mats, los, his, alts = [], [], [], []
                for k, alt in enumerate(clause):
                    mats.append(sp.csr_matrix(alt.C) @ E)
                    off = alt.C @ c
                    los.append(alt.lo - off)
                    his.append(alt.hi - off)
                    alts.append(np.full(alt.C.shape[0], k))
                n = self.b.n_vars
                M = sp.vstack([sp.csr_matrix(m, shape=(m.shape[0], n)) for m in mats]).tocsr()
                self.b.add_disjunction(M, np.concatenate(los), np.concatenate(his), np.concatenate(alts),
                                       label=f"{group.label} [{pg.point}]", group=group.group, span=group.span,
                                       statement=group.label, point=pg.point)

    def _last_layer_only(self) -> bool:
        """Only the network's final layer (affine) is edited: the common LP, which has a bulk encoding."""
        idx = self.net.affine_indices()
        return self.start == idx[-1] == len(self.net.layers) - 1 and isinstance(self.net.layers[self.start], Affine)

    def _add_last_layer_points(self, group: GoalGroup) -> list[PointGoal]:
        """Encode the group's points in bulk when only the final affine layer moves; return the points left to the
        per-point path (those with a disjunctive clause, or too few nonzero coefficients to materialise).

        The same rows as the per-point path, built with a handful of array operations instead of a dozen sparse
        matrices per point: each output ``y_k = c_k + sum_j x_j d_kj (+ d_k)`` becomes a variable (one block for
        the group, with its defining `network` rows of the same name) and each point's goal rows its own row
        block "statement [point]", as before."""
        pos = self.start
        layer = self.net.layers[pos]
        n_out = layer.out_size
        entries = [(np.nonzero(e.mask)[0], np.nonzero(e.mask)[1] if e.kind == "weights" else None, v)
                   for e, v in self._edits_at.get(pos, [])]
        if not entries or not group.points:
            return group.points
        X = self.net.forward_suffix(np.stack([pg.h for pg in group.points]), 0, pos)  # inputs of the layer
        r_e = np.concatenate([r for r, _, _ in entries])
        v_e = np.concatenate([v for _, _, v in entries])
        coef = np.concatenate([X[:, j] if j is not None else np.ones((X.shape[0], r.size)) for r, j, _ in entries],
                              axis=1)  # (points, entries): the coefficient of each delta in its output
        dense = np.count_nonzero(coef, axis=1) > 4 * n_out  # the per-point path's materialisation rule
        bulk = np.nonzero(dense & np.array([all(len(cl) == 1 for cl in pg.clauses) for pg in group.points]))[0]
        if bulk.size == 0:
            return group.points
        pi, ei = np.nonzero(coef[bulk])
        E = sp.csr_matrix((coef[bulk][pi, ei], (pi * n_out + r_e[ei], v_e[ei])),
                          shape=(bulk.size * n_out, self.b.n_vars))
        c = (X[bulk] @ layer.W.T + layer.b).ravel()
        unit, _ = self._materialize(E, c, f"{group.label} outputs.{layer.name}")
        z = unit.indices.reshape(bulk.size, n_out)  # unit rows in order: variable of (point, output)
        self.n_points += int(bulk.size)
        rows, cols, vals, los, his, spans = [], [], [], [], [], []
        n = 0
        for k, i in enumerate(bulk):
            pg = group.points[i]
            first = n
            for (alt,) in pg.clauses:
                rr, kk = np.nonzero(alt.C)
                rows.append(rr + n)
                cols.append(z[k, kk])
                vals.append(alt.C[rr, kk])
                los.append(alt.lo)
                his.append(alt.hi)
                n += alt.C.shape[0]
            spans.append((pg.point, first, n - first))
        if n:
            M = sp.csr_matrix((np.concatenate(vals), (np.concatenate(rows), np.concatenate(cols))),
                              shape=(n, self.b.n_vars))
            start = int(self.b.add_rows(M, np.concatenate(los), np.concatenate(his), label=group.label,
                                        group=group.group, span=group.span, statement=group.label)[0])
            self.b.row_blocks.pop()  # one block per point instead, so cores and reports name the point
            self.b.row_blocks.extend(RowBlock(f"{group.label} [{point}]", start + off, size, group.group, group.span,
                                              statement=group.label, point=point)
                                     for point, off, size in spans if size)
        rest = np.ones(len(group.points), dtype=bool)
        rest[bulk] = False
        return [pg for pg, r in zip(group.points, rest) if r]

    # ------------------------------------------------------------------ norms and objective
    def _add_norms(self) -> None:
        deltas = np.concatenate(self.layout.var_index)
        n = deltas.size
        wanted = {norm for _, norm in self.norms.objective} | set(self.norms.bounds)
        weights = {norm: w for w, norm in self.norms.objective}
        if "linf" in wanted and "linf" in weights:
            t = self.b.add_vars(1, 0.0, self.norms.bounds.get("linf", np.inf), name="linf", kind="norm")
            self.b.mark_norm("linf", t)
            self._abs_rows(deltas, np.repeat(t, n), "linf")
            self.b.add_objective(t, weights["linf"])
        if "l1" in wanted:
            u = self.b.add_vars(n, 0.0, self.norms.bounds.get("linf", np.inf), name="abs", kind="norm")
            self.b.mark_norm("abs", u)
            self._abs_rows(deltas, u, "l1")
            if "l1" in weights:
                self.b.add_objective(u, weights["l1"])
            if "l1" in self.norms.bounds:
                self.b.add_rows(sp.csr_matrix((np.ones(n), (np.zeros(n, int), u)), shape=(1, self.b.n_vars)),
                                -np.inf, self.norms.bounds["l1"], label=f"bound l1 <= {self.norms.bounds['l1']:g}",
                                group="bound", span=self.norms.bound_spans.get("l1"))
        if "l0" in wanted:
            M = self.norms.bounds.get("linf", np.inf)
            if not np.isfinite(M):
                raise PatchlangError("l0 needs a finite bound on each changed parameter",
                                     help="add `bound linf <= c` next to the l0 norm")
            s = self.b.add_vars(n, 0.0, 1.0, integer=True, name="changed", kind="binary")
            self.b.mark_norm("changed", s)
            rows = np.arange(n)
            for sign in (1.0, -1.0):
                A = sp.csr_matrix((np.concatenate([np.full(n, sign), np.full(n, -M)]),
                                   (np.concatenate([rows, rows]), np.concatenate([deltas, s]))),
                                  shape=(n, self.b.n_vars))
                self.b.add_rows(A, -np.inf, 0.0, label="l0 indicator", group="norm")
            if "l0" in weights:
                self.b.add_objective(s, weights["l0"])
            if "l0" in self.norms.bounds:
                self.b.add_rows(sp.csr_matrix((np.ones(n), (np.zeros(n, int), s)), shape=(1, self.b.n_vars)),
                                -np.inf, self.norms.bounds["l0"], label=f"bound l0 <= {self.norms.bounds['l0']:g}",
                                group="bound", span=self.norms.bound_spans.get("l0"))

    def _abs_rows(self, x: np.ndarray, t: np.ndarray, label: str) -> None:
        """``-t <= x <= t`` as ``x - t <= 0`` and ``-x - t <= 0``."""
        n = x.size
        rows = np.arange(n)
        for sign in (1.0, -1.0):
            A = sp.csr_matrix((np.concatenate([np.full(n, sign), np.full(n, -1.0)]),
                               (np.concatenate([rows, rows]), np.concatenate([x, t]))), shape=(n, self.b.n_vars))
            self.b.add_rows(A, -np.inf, 0.0, label=f"{label} norm", group="norm")

    def build(self) -> PatchEncoding:
        self._add_norms()
        return PatchEncoding(self.b.build(), self.layout, self.n_unstable, self.n_points)


def encode_patch(net: Network, edits: list[EditSpec], goals: list[GoalGroup], norms: NormSpec,
                 name: str = "patch") -> PatchEncoding:
    enc = PatchEncoder(net, edits, norms, name)
    for g in goals:
        enc.add_goal_group(g)
    return enc.build()


def delta_expression(net: Network, edits: list[EditSpec], norms: NormSpec, h: np.ndarray
                     ) -> tuple[sp.csr_matrix, np.ndarray] | None:
    """The outputs at suffix input ``h`` as ``E @ deltas + c`` when they are affine in the deltas alone (the
    edited layer is the last affine one and nothing nonlinear follows), else ``None``.

    Columns of ``E`` are in the order of :attr:`DeltaLayout.deltas`.  Used for cheap, exact lower bounds
    (:func:`alternative_lower_bound`) without building or solving a query."""
    enc = PatchEncoder(net, edits, norms, "bound")
    n_delta = enc.b.n_vars
    E, c = enc._through_network(np.asarray(h, dtype=np.float64), "bound", materialize_last=False)
    if enc.b.n_vars != n_delta:  # a hidden neuron or unstable ReLU had to become a variable
        return None
    return sp.csr_matrix(E, shape=(E.shape[0], n_delta)), c


def alternative_lower_bound(E: sp.csr_matrix, c: np.ndarray, alt: Alternative, norms: NormSpec) -> float:
    """A lower bound on the objective of every patch that makes ``alt`` hold for outputs ``E @ d + c``.

    Each row ``a @ d >= r`` with ``r > 0`` needs ``||d||_inf >= r / ||a||_1`` and ``||d||_1 >= r / ||a||_inf``
    (Hölder); the best row gives the bound of each norm, and the objective's weights combine them.  For a
    single row and a single norm this is the exact optimum, so candidates ordered by it are solved in the
    right order and the rest are skipped without changing the optimum.  ``inf`` when a row cannot hold at all;
    ``-inf`` (no information) for objectives it cannot bound."""
    A = sp.csr_matrix(alt.C) @ E
    off = alt.C @ c
    rows, need = [], []
    for sign, side in ((1.0, alt.lo), (-1.0, alt.hi)):
        r = sign * (side - off)
        sel = np.isfinite(r) & (r > 0)
        if np.any(sel):
            rows.append(sign * A[np.nonzero(sel)[0]])
            need.append(r[sel])
    if not rows:
        return 0.0 if all(w >= 0 for w, _ in norms.objective) else -np.inf
    M = abs(sp.vstack(rows).tocsr())
    r = np.concatenate(need)
    n1 = np.asarray(M.sum(axis=1)).ravel()
    if np.any(n1 == 0):
        return np.inf  # a row with no delta in it that must move: no patch for this alternative
    ninf = np.asarray(M.max(axis=1).todense()).ravel()
    per_norm = {"linf": float(np.max(r / n1)), "l1": float(np.max(r / ninf)), "l0": 1.0}
    total = 0.0
    for w, norm in norms.objective:
        if w < 0:
            return -np.inf
        total += w * per_norm.get(norm, 0.0)
    return total
