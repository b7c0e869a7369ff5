"""SCIP (through OR-Tools' model builder) as an independent re-check of a MILP that has no solution.

Why: "no patch" claims on MILPs too large for Z3's exact arithmetic and for a size-limited Gurobi licence were
re-checked only by HiGHS again, the solver that made the claim.  SCIP is another branch-and-bound code with its own
presolve, cuts and LP solver (SoPlex), free and on PyPI (``ortools``, the optional ``recheck`` extra).  The query
is the one every backend gets (:func:`patchlang.solvers.milp.lower_to_milp`), handed over as an MPS file written by
HiGHS's writer and parsed by OR-Tools: no second encoding.  Only the verdict is used (infeasible, a solution, or
undecided); the solution values are not read back.
"""

from __future__ import annotations

import os
import tempfile
import time
from pathlib import Path

import numpy as np

from ..query import Query
from ..solution import FEASIBLE, INFEASIBLE, OPTIMAL, TIMEOUT, UNKNOWN, Solution, SolveOptions

NAME = "SCIP (OR-Tools)"


def available() -> bool:
    try:
        from ortools.linear_solver.python import model_builder  # noqa: F401
    except ImportError:
        return False
    return True


def scip_verdict(q: Query, options: SolveOptions) -> Solution:
    """Solve ``q`` with SCIP for its status alone (``x`` is a zero vector when a solution exists)."""
    from ortools.linear_solver.python import model_builder as mb

    from .highs import _new_highs, to_highs_lp
    from .milp import lower_to_milp

    t0 = time.perf_counter()
    m = lower_to_milp(q)
    h = _new_highs()
    h.setOptionValue("output_flag", False)
    h.passModel(to_highs_lp(m, bool(np.any(m.integer))))
    with tempfile.TemporaryDirectory(prefix="patchlang-scip-") as tmp:
        path = os.path.join(tmp, "query.mps")
        h.writeModel(path)
        text = Path(path).read_text()
    model = mb.Model()
    if not model.import_from_mps_string(text):
        return Solution(UNKNOWN, backend="scip", message="OR-Tools could not read the MPS file")
    solver = mb.Solver("scip")
    if not solver.solver_is_supported():
        return Solution(UNKNOWN, backend="scip", message="this OR-Tools build has no SCIP")
    if options.time_limit is not None:
        solver.set_time_limit_in_seconds(float(options.time_limit))
    status = solver.solve(model)
    seconds = time.perf_counter() - t0
    if status == mb.SolveStatus.INFEASIBLE:
        return Solution(INFEASIBLE, backend="scip", seconds=seconds)
    if status in (mb.SolveStatus.OPTIMAL, mb.SolveStatus.FEASIBLE):
        return Solution(OPTIMAL if status == mb.SolveStatus.OPTIMAL else FEASIBLE, x=np.zeros(m.n_vars),
                        backend="scip", seconds=seconds)
    return Solution(TIMEOUT, backend="scip", seconds=seconds, message=str(status))
