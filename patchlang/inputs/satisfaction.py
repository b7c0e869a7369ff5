"""The satisfaction function of a property: one function, one sign rule, used by every falsifier.

A property (an input region and a CNF over the outputs) is stored per input box as its *unsafe* region, an OR of
conjunctions of rows ``a_r·y <= d_r`` (``<`` where the row is strict; see
:class:`~patchlang.compile.verify.UnsafeSpec`).  Row ``r`` is the negation of one atom of the property, so the
atom's **slack** is ``v_r = a_r·y - d_r``:

- a *strict* unsafe row (``a·y < d``: the negation of a non-strict atom such as ``y[0] >= 3`` or ``label is 1``
  with ties allowed) is violated where ``v_r < 0``;
- a *non-strict* unsafe row (``a·y <= d``: the negation of a strict atom, e.g. every VNN-LIB row) is violated
  where ``v_r <= 0``; there the slack ``0`` is replaced by the smallest negative float64 (``-5e-324``) so the
  boundary, which *is* a violation, gets a negative value.

The satisfaction of a point is ``f(y) = min over clauses j of max over atoms r in j of slack_r``
(a conjunction with no rows, "every output is unsafe", gives ``-inf``; no unsafe conjunction at all gives
``+inf``).  **Sign rule: ``f(y) < 0`` exactly where the property is violated at ``y``** (the same float64 row
values as :meth:`UnsafeSpec.violated <patchlang.compile.verify.UnsafeSpec.violated>`), ``f(y) >= 0`` where it
holds, and ``|f|`` is how far the worst clause is from flipping, in output units.  Falsifiers minimise ``f``.
"""

from __future__ import annotations

import numpy as np

__all__ = ["BOUNDARY", "satisfaction_values", "satisfaction_with_rows"]

BOUNDARY = -np.nextafter(0.0, 1.0)  # -5e-324: a non-strict unsafe row met with equality is violated


def _slack(v: np.ndarray, strict: np.ndarray) -> np.ndarray:
    v = np.asarray(v, dtype=np.float64)
    return np.where((v == 0.0) & ~np.asarray(strict, bool), BOUNDARY, v)


def satisfaction_with_rows(v: np.ndarray, conj: np.ndarray, strict: np.ndarray, n_conj: int
                           ) -> tuple[np.ndarray, np.ndarray]:
    """``(f, row)`` for row values ``v = A y - d`` of shape ``(N, R)``: the satisfaction of each point and the
    row that decides it (``-1`` where no row does: an empty conjunction or none at all)."""
    v = np.atleast_2d(np.asarray(v, dtype=np.float64))
    n = v.shape[0]
    conj = np.asarray(conj, np.int64).reshape(-1)
    if n_conj == 0:
        return np.full(n, np.inf), np.full(n, -1, dtype=np.int64)
    s = _slack(v, strict)
    s = np.where(np.isnan(s), np.inf, s)  # a NaN output proves nothing either way: never a counterexample
    worst = np.full((n, n_conj), -np.inf)
    worst_row = np.full((n, n_conj), -1, dtype=np.int64)
    for j in range(n_conj):
        rows = np.nonzero(conj == j)[0]
        if rows.size:
            k = np.argmax(s[:, rows], axis=1)
            worst_row[:, j] = rows[k]
            worst[:, j] = s[np.arange(n), rows[k]]
    jstar = np.argmin(worst, axis=1)
    return worst[np.arange(n), jstar], worst_row[np.arange(n), jstar]


def satisfaction_values(v: np.ndarray, conj: np.ndarray, strict: np.ndarray, n_conj: int) -> np.ndarray:
    """The satisfaction ``f`` of each point from its unsafe-row values ``v = A y - d`` (``(N, R)``)."""
    return satisfaction_with_rows(v, conj, strict, n_conj)[0]
