"""Marabou (maraboupy, in process) for network-verification queries: a feasibility backend.

Why a translation and not Marabou's own ONNX reader: the network is encoded once, into the Query (principle 1).
Rows become Marabou equations (``EQ`` when both sides are equal, else ``GE``/``LE``), ``relu`` atoms become
ReLU constraints, disjunctions become Marabou disjunction constraints (one list of equations per alternative),
variable bounds are set directly.  Marabou decides satisfiability only: the Query must have no objective and no
integer variables, which is what verification queries are.  Optional: ``pip install 'patchlang[marabou]'``.
"""

from __future__ import annotations

import os
import time

import numpy as np

from ..query import Query
from ..errors import PatchlangError
from .base import FEASIBLE, INFEASIBLE, TIMEOUT, UNKNOWN, Solution, SolveOptions, module_available

_LARGE = 1e7  # Marabou needs finite bounds on every variable; unbounded ones get this magnitude


class MarabouBackend:
    name = "marabou"
    capabilities = frozenset({"feasibility"})

    def available(self) -> bool:
        return module_available("maraboupy.MarabouCore")

    def version(self) -> str:
        try:
            from importlib.metadata import version

            return version("maraboupy")
        except Exception:  # pragma: no cover
            return "unknown"

    def check_size(self, query: Query) -> str | None:
        if query.n_integer:
            return "Marabou has no integer variables"
        if np.any(query.c):
            return "Marabou decides feasibility only (the query has an objective)"
        return None

    def to_input_query(self, q: Query):
        """The Query as a ``MarabouCore.InputQuery`` (rows, ReLUs, disjunctions, bounds)."""
        from maraboupy import MarabouCore

        reason = self.check_size(q)
        if reason:
            raise PatchlangError(f"backend `marabou` cannot take this problem: {reason}")
        iq = MarabouCore.InputQuery()
        iq.setNumberOfVariables(q.n_vars)
        lb = np.where(np.isfinite(q.lb), q.lb, -_LARGE)
        ub = np.where(np.isfinite(q.ub), q.ub, _LARGE)
        for i in range(q.n_vars):
            iq.setLowerBound(i, float(lb[i]))
            iq.setUpperBound(i, float(ub[i]))
        A = q.A.tocsr()
        for r in range(q.n_rows):
            for eq in _equations(MarabouCore, A.indices[A.indptr[r]:A.indptr[r + 1]],
                                 A.data[A.indptr[r]:A.indptr[r + 1]], q.row_lo[r], q.row_hi[r]):
                iq.addEquation(eq)
        for y, x in q.relus:
            MarabouCore.addReluConstraint(iq, int(x), int(y))
        for d in q.disjunctions:
            D = d.A.tocsr()
            disjuncts = []
            for k in range(d.n_alternatives):
                eqs = []
                for r in np.nonzero(d.alt == k)[0]:
                    eqs.extend(_equations(MarabouCore, D.indices[D.indptr[r]:D.indptr[r + 1]],
                                          D.data[D.indptr[r]:D.indptr[r + 1]], d.lo[r], d.hi[r]))
                disjuncts.append(eqs)
            MarabouCore.addDisjunctionConstraint(iq, disjuncts)
        return iq

    def solve(self, query: Query, options: SolveOptions) -> Solution:
        from maraboupy import MarabouCore

        t0 = time.perf_counter()
        iq = self.to_input_query(query)
        opts = MarabouCore.Options()
        opts._timeoutInSeconds = int(np.ceil(options.time_limit)) if options.time_limit else 0
        opts._verbosity = 0
        opts._numWorkers = 1
        exit_code, vals, _ = MarabouCore.solve(iq, opts, os.devnull)
        seconds = time.perf_counter() - t0
        sol = Solution(UNKNOWN, backend=self.name, backend_version=self.version(), seconds=seconds,
                       message=str(exit_code))
        if exit_code == "sat":
            x = np.zeros(query.n_vars)
            for i, v in vals.items():
                if 0 <= int(i) < query.n_vars:
                    x[int(i)] = v
            sol.status, sol.x, sol.objective = FEASIBLE, x, 0.0
        elif exit_code == "unsat":
            sol.status = INFEASIBLE
        elif exit_code == "TIMEOUT":
            sol.status = TIMEOUT
        return sol


def _equations(core, cols: np.ndarray, vals: np.ndarray, lo: float, hi: float) -> list:
    """One row ``lo <= sum vals*x[cols] <= hi`` as Marabou equations."""
    out = []
    kinds = []
    if np.isfinite(lo) and np.isfinite(hi) and lo == hi:
        kinds = [(core.Equation.EQ, lo)]
    else:
        if np.isfinite(lo):
            kinds.append((core.Equation.GE, lo))
        if np.isfinite(hi):
            kinds.append((core.Equation.LE, hi))
    for kind, rhs in kinds:
        eq = core.Equation(kind)
        for c, v in zip(cols, vals):
            eq.addAddend(float(v), int(c))
        eq.setScalar(float(rhs))
        out.append(eq)
    return out
