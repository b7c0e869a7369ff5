"""Differential testing: the same Query solved by HiGHS, exact Z3 and (licence permitting) Gurobi must agree.

40 random small specs (tests/specgen.py: 2-4 layer ReLU nets, random keep/change sets, linf/l1/l0, about a
third infeasible).  Agreement means: the same feasibility verdict; every claimed optimum within tolerance of
the others; a bracket reported by a backend that stopped early must contain the others' optimum; every returned
solution satisfies every goal when lifted back onto the network (checked in float64, independently).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from specgen import case_encoding, case_query, random_case

from patchlang.errors import PatchlangError
from patchlang.solvers.base import FEASIBLE, INFEASIBLE, OPTIMAL, Solution, SolveOptions
from patchlang.solvers.registry import get_backend
from patchlang.tasks.patch import build_groups

N_CASES = 40
RTOL, ATOL = 1e-5, 1e-6
Z3_TIME = 10.0


def _backends() -> list:
    out = [get_backend("highs"), get_backend("z3")]
    try:
        out.append(get_backend("gurobi"))
    except PatchlangError:
        pass  # not installed: HiGHS and Z3 still check each other
    return out


BACKENDS = _backends()


@pytest.fixture(scope="module")
def folder(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("differential")


def _close(a: float, b: float) -> bool:
    return abs(a - b) <= ATOL + RTOL * max(1.0, abs(a), abs(b))


def _goals_hold(task, layout, x: np.ndarray, tol: float = 1e-6) -> bool:
    """Lift the solution onto the network and check every clause of every goal in float64."""
    from patchlang.compile.goals import clause_slack

    net = task.model.net
    patched = layout.apply(net, x)
    for g in build_groups(net, task.goals, task.margin):
        for pg in g.points:
            y = patched.forward_suffix(pg.h[None, :])[0]
            for clause in pg.clauses:
                if clause_slack(clause, y) < -tol * (1 + np.max(np.abs(y))):
                    return False
    return True


def test_generator_covers_the_space(folder: Path) -> None:
    """The generator really produces every norm, LP and MILP, feasible and infeasible cases."""
    cases = [random_case(s, folder) for s in range(N_CASES)]
    text = " ".join(c.description for c in cases)
    for word in ("linf", "l1", "l0", "2 layers", "3 layers", "4 layers", "edit layer -1", "tight bound"):
        assert word in text
    assert any("edit layer 0" in c.description or "edit layer 1" in c.description for c in cases)


@pytest.mark.parametrize("seed", range(N_CASES))
def test_backends_agree(seed: int, folder: Path) -> None:
    case = random_case(seed, folder)
    task, enc = case_encoding(case, folder)
    query = enc.query
    results: dict[str, Solution] = {}
    for backend in BACKENDS:
        if backend.check_size(query) is not None:
            continue  # size-limited licence
        limit = Z3_TIME if backend.name == "z3" else 60.0
        results[backend.name] = backend.solve(query, SolveOptions(mip_gap=1e-9, time_limit=limit, seed=0))
    assert {"highs", "z3"} <= set(results), case.description
    decided = {k: s for k, s in results.items() if s.status in (OPTIMAL, FEASIBLE, INFEASIBLE)}
    assert "highs" in decided, f"{case.description}: highs {results['highs'].status}"
    verdicts = {k: s.status == INFEASIBLE for k, s in decided.items()}
    assert len(set(verdicts.values())) == 1, f"{case.description}: feasibility differs {verdicts}"
    if any(verdicts.values()):
        return
    optima = {k: s.objective for k, s in decided.items() if s.status == OPTIMAL}
    assert optima, f"{case.description}: no backend proved an optimum"
    ref = next(iter(optima.values()))
    for name, value in optima.items():
        assert _close(value, ref), f"{case.description}: optima differ {optima}"
    for name, sol in decided.items():
        assert sol.x is not None
        assert _goals_hold(task, enc.layout, sol.x), f"{case.description}: {name}'s patch breaks a goal"
        if sol.status == FEASIBLE:  # stopped early: its bracket must contain the proven optimum
            assert sol.objective >= ref - ATOL - RTOL * abs(ref), f"{case.description}: {name} below optimum"
            if sol.bound is not None:
                assert sol.bound <= ref + ATOL + RTOL * abs(ref), f"{case.description}: {name} bound above"


def test_verdicts_mix(folder: Path) -> None:
    """At least a quarter of the cases are infeasible and at least a quarter feasible (HiGHS's verdicts)."""
    highs = get_backend("highs")
    infeasible = 0
    for seed in range(N_CASES):
        _, q = case_query(random_case(seed, folder), folder)
        infeasible += highs.solve(q, SolveOptions()).status == INFEASIBLE
    assert N_CASES // 4 <= infeasible <= 3 * N_CASES // 4
