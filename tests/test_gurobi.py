"""The Gurobi backend: licence-size detection before solving, the automatic choice, options, gap, cores."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

pytest.importorskip("gurobipy")

from patchlang.api import load_program_text, run_program  # noqa: E402
from patchlang.query import QueryBuilder  # noqa: E402
from patchlang.errors import SolverUnavailable  # noqa: E402
from patchlang.solvers import gurobi as G  # noqa: E402
from patchlang.solvers.base import INFEASIBLE, OPTIMAL, SolveOptions  # noqa: E402
from patchlang.solvers.registry import choose_backend  # noqa: E402
from patchlang.tasks.patch import RunOptions  # noqa: E402

MODELS = Path(__file__).resolve().parents[1] / "examples" / "models"
HIDDEN = """
model toy = "toy.onnx"
points p = [[3, 4]]
patch fix on toy {{
    edit layer 0 weights
    require p: y[0] >= y[1]
    minimize linf
    bound linf <= {bound}
    {using}
}}
"""


@pytest.fixture(scope="module")
def licence() -> str:
    state = G.licence_state()
    if state.startswith("none"):
        pytest.skip(f"Gurobi cannot run here: {state}")
    return state


def chain(n_vars: int, n_rows: int):
    """A feasible LP with ``n_vars`` variables and ``n_rows`` rows (x_i - x_{i+1} <= 1), for size checks."""
    b = QueryBuilder("size")
    x = b.add_vars(n_vars, 0.0, 10.0)
    k = np.arange(n_rows) % (n_vars - 1)
    import scipy.sparse as sp

    M = sp.csr_matrix((np.r_[np.ones(n_rows), -np.ones(n_rows)], (np.r_[np.arange(n_rows), np.arange(n_rows)],
                                                                    np.r_[x[k], x[k + 1]])), shape=(n_rows, n_vars))
    b.add_rows(M, -np.inf, 1.0, label="chain", group="require")
    b.add_objective(x, 1.0)
    return b.build()


def test_version_and_state(licence: str) -> None:
    assert G.GurobiBackend().available()
    assert G.GurobiBackend().version().count(".") == 2
    assert licence in ("full", "limited")


def test_size_check_counts_after_lowering(licence: str) -> None:
    if licence == "full":
        pytest.skip("an unrestricted licence has no size limit")
    backend = G.GurobiBackend()
    assert backend.check_size(chain(100, 100)) is None
    assert backend.check_size(chain(2000, 2000)) is None  # exactly at the limit is allowed
    reason = backend.check_size(chain(2001, 10))
    assert reason is not None and "2000" in reason
    assert "2000" in (backend.check_size(chain(100, 2001)) or "")


def test_explicit_gurobi_on_too_big_problem_is_a_clear_error(licence: str) -> None:
    if licence == "full":
        pytest.skip("an unrestricted licence has no size limit")
    with pytest.raises(SolverUnavailable, match="size-limited licence"):
        choose_backend("gurobi", chain(3000, 10), "LP")


def test_auto_choice(licence: str) -> None:
    """auto picks gurobi only for MILPs with an unrestricted licence; with the pip licence always highs."""
    backend, notes = choose_backend("auto", chain(10, 10), "LP")
    assert backend.name == "highs"
    milp = load_program_text(HIDDEN.format(bound=5, using=""), MODELS, filename=str(MODELS / "x.patch"))
    from patchlang.compile.patch import encode_patch
    from patchlang.tasks.patch import build_groups

    task = milp.tasks[0]
    q = encode_patch(task.model.net, task.edits, build_groups(task.model.net, task.goals, task.margin),
                     task.norms).query
    backend, _ = choose_backend("auto", q, "MILP")
    assert backend.name == ("gurobi" if licence == "full" else "highs")


def test_hidden_layer_milp_with_options(licence: str) -> None:
    """The toy hidden-layer golden (2/7) through `using gurobi (...)` with every option; gap reported."""
    spec = HIDDEN.format(bound=5, using="using gurobi (time_limit = 30, mip_gap = 1e-9, threads = 1, seed = 7)")
    run = run_program(load_program_text(spec, MODELS, filename=str(MODELS / "x.patch")),
                      RunOptions(write_files=False))
    task = run.tasks[0]
    assert task.backend == "gurobi"
    assert task.status == "patched"
    assert task.distances["linf"] == pytest.approx(2 / 7, rel=1e-7)
    assert task.gap == 0.0


def test_infeasible_gives_status_and_core(licence: str) -> None:
    """Bound 0.25 < 2/7: no patch; Gurobi's IIS names the require statement."""
    from patchlang.compile.patch import encode_patch
    from patchlang.tasks.patch import build_groups

    task = load_program_text(HIDDEN.format(bound=0.25, using=""), MODELS, filename=str(MODELS / "x.patch")).tasks[0]
    net = task.model.net
    q = encode_patch(net, task.edits, build_groups(net, task.goals, task.margin), task.norms).query
    sol = G.GurobiBackend().solve(q, SolveOptions())
    assert sol.status == INFEASIBLE
    assert any("require" in c for c in sol.core)


def test_warm_start_is_accepted(licence: str) -> None:
    """A feasible start (the fixed-phase LP patch) leaves the optimum unchanged."""
    from patchlang.plan.chain import Planner
    from patchlang.tasks.patch import build_groups, solve_options

    task = load_program_text(HIDDEN.format(bound=5, using=""), MODELS, filename=str(MODELS / "x.patch")).tasks[0]
    net = task.model.net
    plan = Planner("highs").prepare(net, task, build_groups(net, task.goals, task.margin),
                                    solve_options(task, RunOptions()))
    assert plan.options.start is not None
    sol = G.GurobiBackend().solve(plan.enc.query, plan.options)
    assert sol.status == OPTIMAL
    assert sol.objective == pytest.approx(2 / 7, rel=1e-7)
