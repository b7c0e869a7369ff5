"""SCIP (OR-Tools) as the independent re-check of a "no patch" MILP too large for Z3 and for a size-limited Gurobi
licence (issue 10): before it, only HiGHS re-checked HiGHS."""

from __future__ import annotations

import numpy as np
import pytest
import scipy.sparse as sp

import patchlang.solvers.registry as registry
import patchlang.tasks.certify as C
from patchlang.errors import PatchlangError
from patchlang.query import QueryBuilder
from patchlang.solution import INFEASIBLE, OPTIMAL, SolveOptions
from patchlang.solvers import scip

pytestmark = pytest.mark.skipif(not scip.available(), reason="ortools is not installed (the `recheck` extra; the "
                                                             "test extra installs it)")


def _query(lo: float, hi: float):
    """x in [0.2, 0.3] or in [0.6, 0.7] (a disjunction: one binary), and lo <= x <= hi: for [0.4, 0.5] its LP
    relaxation has points but the MILP has none."""
    b = QueryBuilder("d")
    x = b.add_vars(1, 0.0, 1.0)
    b.add_disjunction(sp.csr_matrix(np.ones((2, 1))), np.array([0.2, 0.6]), np.array([0.3, 0.7]), np.arange(2),
                      label="d", group="require")
    b.add_rows(sp.csr_matrix(np.ones((1, 1))), lo, hi, label="window", group="require")
    b.add_objective(x, 1.0)
    return b.build()


def test_scip_decides_both_ways() -> None:
    assert scip.scip_verdict(_query(0.4, 0.5), SolveOptions(time_limit=10)).status == INFEASIBLE
    sol = scip.scip_verdict(_query(0.25, 0.5), SolveOptions(time_limit=10))
    assert sol.status == OPTIMAL and sol.x is not None


def test_no_patch_too_large_for_z3_and_gurobi_is_certified_by_scip(monkeypatch) -> None:
    real = registry.get_backend

    def no_gurobi(name: str):
        if name == "gurobi":
            raise PatchlangError("backend `gurobi` is not installed (stand-in)")
        return real(name)

    monkeypatch.setattr(registry, "get_backend", no_gurobi)
    monkeypatch.setattr(C, "Z3_MAX_VARS", 0)
    cert = C.certify_infeasible(_query(0.4, 0.5))
    assert cert.certified is True and "SCIP" in cert.method
    cert = C.certify_infeasible(_query(0.25, 0.5))  # a wrong claim: SCIP finds a solution
    assert cert.refuted and "SCIP (OR-Tools) finds a solution" in cert.method
    monkeypatch.setattr(scip, "available", lambda: False)
    cert = C.certify_infeasible(_query(0.4, 0.5))  # only HiGHS again: said plainly
    assert cert.certified is False and "same solver" in cert.method
