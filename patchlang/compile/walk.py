"""The one walk of a network's exact piecewise-linear form into a Query, shared by every encoder.

Why one walker: the patch encoder (:mod:`.patch`: unknown parameters, constant inputs) and the region encoder
(:mod:`.verify`: unknown inputs, fixed parameters) encode the same thing, the affine stages and ReLU stages of the
operator table's per-op forms (:mod:`patchlang.model.ops`), and used to do it with two copies of the code.  Both
now push an *expression* ``E x + c`` over the Query's variables (``E`` sparse, one row per unit; several points
stacked point-major) through :class:`NetworkWalker`:

- :meth:`~NetworkWalker.affine`: a sparse product, nothing added to the Query;
- :meth:`~NetworkWalker.materialize`: new variables ``z = E x + c`` with sound bounds (given by the caller's bound
  propagation, or the interval of ``E x + c`` over the variables' bounds) and their defining rows; a fast path
  assembles the rows straight from a dense weight matrix when the input is a vector of variables (the region
  encoder's thousands of leaf queries);
- :meth:`~NetworkWalker.relu`: units whose phase the bounds fix cost nothing (an active one passes, an inactive one
  is the constant 0); every other unit becomes a ``relu`` atom on its (materialised) input;
- :meth:`~NetworkWalker.stages`: a layer's stages from the operator table, one after the other.
"""

from __future__ import annotations

import numpy as np
import scipy.sparse as sp

from ..model.ops import ReluStage, Stage, matrix
from ..query import QueryBuilder

__all__ = ["NetworkWalker", "interval_of"]


def interval_of(E: sp.csr_matrix, c: np.ndarray, lb: np.ndarray, ub: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Sound bounds of ``E x + c`` for ``lb <= x <= ub`` (infinite where an unbounded variable enters)."""
    Ep = E.maximum(0).tocsr()
    En = E.minimum(0).tocsr()
    lbf = np.where(np.isfinite(lb), lb, 0.0)
    ubf = np.where(np.isfinite(ub), ub, 0.0)
    lo = c + Ep @ lbf + En @ ubf
    hi = c + Ep @ ubf + En @ lbf
    inf_lo = (Ep @ (~np.isfinite(lb)).astype(float)) + (En.multiply(-1) @ (~np.isfinite(ub)).astype(float))
    inf_hi = (Ep @ (~np.isfinite(ub)).astype(float)) + (En.multiply(-1) @ (~np.isfinite(lb)).astype(float))
    lo = np.where(inf_lo > 0, -np.inf, lo)
    hi = np.where(inf_hi > 0, np.inf, hi)
    return lo, hi


def unit_rows(E: sp.csr_matrix, c: np.ndarray) -> np.ndarray | None:
    """When every row of ``E x + c`` is one variable or the constant 0: the variable of each row (-1 for 0);
    else None."""
    counts = np.diff(E.indptr)
    if np.any(counts > 1) or np.any(c != 0) or np.any(E.data != 1.0):
        return None
    idx = np.full(E.shape[0], -1, dtype=np.int64)
    idx[counts == 1] = E.indices
    return idx


class NetworkWalker:
    """Encodes stages into the Query of ``b``; counts the ReLU atoms it adds (``n_unstable``)."""

    def __init__(self, b: QueryBuilder, define: bool = True):
        self.b = b
        self.define = define  # record defining rows (the patch pipeline's bound tightening reads them)
        self.n_unstable = 0

    # ------------------------------------------------------------------ expressions
    def unit(self, idx: np.ndarray) -> tuple[sp.csr_matrix, np.ndarray]:
        """The expression of the variables ``idx`` (-1: the constant 0)."""
        live = idx >= 0
        rows = np.nonzero(live)[0]
        E = sp.csr_matrix((np.ones(rows.size), (rows, idx[live])), shape=(idx.size, self.b.n_vars))
        return E, np.zeros(idx.size)

    def affine(self, E: sp.csr_matrix, c: np.ndarray, W, b: np.ndarray, points: int = 1
               ) -> tuple[sp.csr_matrix, np.ndarray]:
        """``W (E x + c) + b``, per point when ``points`` points are stacked."""
        S = matrix(W)
        if points > 1:
            S = sp.kron(sp.identity(points, format="csr"), S, format="csr")
        E = sp.csr_matrix(S @ sp.csr_matrix(E, shape=(E.shape[0], self.b.n_vars)))
        return E, S @ c + np.tile(np.asarray(b, float), points)

    def materialize(self, E: sp.csr_matrix, c: np.ndarray, name: str, lo: np.ndarray | None = None,
                    hi: np.ndarray | None = None, label: str | None = None) -> tuple[sp.csr_matrix, np.ndarray]:
        """New variables ``z = E x + c`` with bounds ``[lo, hi]`` (default: the interval over the variables'
        bounds); returns the unit expression of ``z``."""
        if lo is None or hi is None:
            lb, ub = self.b.var_bounds()
            lo, hi = interval_of(sp.csr_matrix(E, shape=(E.shape[0], lb.size)), c, lb, ub)
        n = E.shape[0]
        z = self.b.add_vars(n, lo, hi, name=name, kind="neuron")
        M = sp.hstack([E, sp.csr_matrix((n, self.b.n_vars - E.shape[1]))]).tocsr()
        M = M - sp.csr_matrix((np.ones(n), (np.arange(n), z)), shape=(n, self.b.n_vars))
        rows = self.b.add_rows(M, -c, -c, label=label or name, group="network")
        if self.define:
            self.b.define(z, rows)
        return sp.csr_matrix((np.ones(n), (np.arange(n), z)), shape=(n, self.b.n_vars)), np.zeros(n)

    def dense_layer(self, h_idx: np.ndarray, W: np.ndarray, b: np.ndarray, lo: np.ndarray, hi: np.ndarray,
                    name: str, label: str) -> np.ndarray:
        """``z = W h + b`` materialised, for an input ``h`` that is a vector of variables (``h_idx``, -1 for the
        constant 0) and a dense ``W``: the rows are assembled as COO triplets directly (no sparse products: the
        region encoder builds thousands of small leaf queries).  Returns the variables ``z``."""
        live = h_idx >= 0
        Wl = W[:, live]
        n_out = W.shape[0]
        z = self.b.add_vars(n_out, lo, hi, name=name, kind="neuron")
        r, cc = np.nonzero(Wl)
        rows = np.concatenate([r, np.arange(n_out)])
        cols = np.concatenate([h_idx[live][cc], z])
        vals = np.concatenate([Wl[r, cc], -np.ones(n_out)])
        added = self.b.add_rows(sp.coo_matrix((vals, (rows, cols)), shape=(n_out, self.b.n_vars)), -b, -b,
                                label=label, group="network")
        if self.define:
            self.b.define(z, added)
        return z

    # ------------------------------------------------------------------ ReLU
    def relu(self, E: sp.csr_matrix, c: np.ndarray, name: str, lo: np.ndarray | None = None,
             hi: np.ndarray | None = None) -> tuple[sp.csr_matrix, np.ndarray]:
        """``max(E x + c, 0)``: stable units are free; each unstable one a ``relu`` atom (its input reused when it is
        a variable, else materialised).  ``lo``/``hi``: sound bounds of the input (default: its interval)."""
        E = sp.csr_matrix(E, shape=(E.shape[0], self.b.n_vars))
        if lo is None or hi is None:
            lb, ub = self.b.var_bounds()
            lo, hi = interval_of(E, c, lb, ub)
        active = lo >= 0
        inactive = hi <= 0
        unstable = ~(active | inactive)
        keep = sp.diags(active.astype(float))
        E_out = sp.csr_matrix(keep @ E)
        c_out = np.where(active, c, 0.0)
        if np.any(unstable):
            # infinite bounds are fine for SMT backends; the MILP lowering refuses them with a clear error
            u = np.nonzero(unstable)[0]
            x_idx = self.materialize(E[u], c[u], f"{name}.in")[0].indices  # unit rows: one column each
            y = self.relu_atoms(x_idx, np.maximum(hi[u], 0.0), f"{name}.out")
            add = sp.csr_matrix((np.ones(u.size), (u, y)), shape=(E.shape[0], self.b.n_vars))
            E_out = sp.csr_matrix(E_out, shape=(E.shape[0], self.b.n_vars)) + add
        return sp.csr_matrix(E_out), c_out

    def relu_of_vars(self, z: np.ndarray, lo: np.ndarray, hi: np.ndarray, name: str) -> np.ndarray:
        """``max(z, 0)`` for variables ``z`` with sound bounds: the variable of each unit afterwards (``z`` where
        active, -1 (the constant 0) where inactive, a new ``relu`` atom where unstable)."""
        active, inactive = lo >= 0, hi <= 0
        unstable = ~(active | inactive)
        out = np.where(active, z, -1)
        if np.any(unstable):
            ui = np.nonzero(unstable)[0]
            out[ui] = self.relu_atoms(z[ui], np.maximum(hi[ui], 0.0) * (1 + 1e-9) + 1e-9, name)
        return out

    def relu_atoms(self, x: np.ndarray, upper: np.ndarray, name: str) -> np.ndarray:
        """New variables ``y = max(x, 0)`` (one ``relu`` atom each) with ``0 <= y <= upper``."""
        y = self.b.add_vars(x.size, 0.0, upper, name=name, kind="neuron")
        self.b.add_relu(y, x)
        self.n_unstable += int(x.size)
        return y

    # ------------------------------------------------------------------ the operator table's forms
    def stages(self, stages: list[Stage], E: sp.csr_matrix, c: np.ndarray, name: str, points: int = 1
               ) -> tuple[sp.csr_matrix, np.ndarray]:
        """A layer's exact piecewise-linear form (affine stages and ReLUs) applied to ``points`` stacked points."""
        relus = 0
        for stage in stages:
            if isinstance(stage, ReluStage):
                E, c = self.relu(E, c, name if relus == 0 else f"{name}.{relus}")
                relus += 1
            else:
                E, c = self.affine(E, c, stage.W, stage.b, points)
        return sp.csr_matrix(E), c
