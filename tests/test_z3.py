"""The Z3 backend: exact literals, known optima, both minimisation methods, nonlinear edits, limits."""

from __future__ import annotations

from decimal import Decimal
from fractions import Fraction
from pathlib import Path

import numpy as np
import pytest

from patchlang.api import load_program_text, run_program
from patchlang.query import QueryBuilder
from patchlang.errors import PatchlangError, SpecError
from patchlang.model.build import network_from_arrays
from patchlang.model.onnx_export import save_network
from patchlang.solvers.base import FEASIBLE, INFEASIBLE, OPTIMAL, TIMEOUT, SolveOptions
from patchlang.solvers.milp import lower_to_milp
from patchlang.solvers.registry import get_backend
from patchlang.solvers.z3backend import Z3Backend, query_to_smt2, real_literals
from patchlang.tasks.patch import RunOptions

REPO = Path(__file__).resolve().parents[1]
MODELS = REPO / "examples" / "models"


def _value(literal: str) -> Fraction:
    neg = literal.startswith("(- ")
    text = literal[3:-1] if neg else literal
    return -Fraction(Decimal(text)) if neg else Fraction(Decimal(text))


def test_literals_are_exact() -> None:
    values = np.array([0.1, -0.1, 1.0, -3.0, 1e-300, 5e-324, 1.7976931348623157e308, 2.0 ** -60, 1 / 3])
    for v, lit in zip(values, real_literals(values)):
        assert _value(lit) == Fraction(float(v)), lit
    assert "e" not in "".join(real_literals(values)).lower()


def _toy(tmp_path: Path, extra: str = "", norm: str = "linf"):
    source = f"""
        model toy = "toy.onnx"
        points p = [[3, 4]]
        patch fix on toy {{
            edit layer -1 weights
            require p: y[0] >= y[1]
            minimize {norm}
            {extra}
        }}
    """
    return load_program_text(source, MODELS, filename=str(tmp_path / "toy.patch"))


@pytest.mark.parametrize("method", ["optimize", "bisect"])
@pytest.mark.parametrize("norm,expected", [("linf", 1), ("l1", 2)])
def test_toy_exact_optimum(tmp_path: Path, method: str, norm: str, expected: int) -> None:
    """The toy's minimal change is exactly 1 (L∞) / 2 (L1): Z3 proves it with no tolerance at all."""
    program = _toy(tmp_path, f'using z3 (method = "{method}")', norm)
    result = run_program(program, RunOptions(write_files=False))
    task = result.tasks[0]
    assert task.status == "patched" and task.backend == "z3"
    assert task.problem_class == "SMT"
    assert task.gap == 0.0
    assert task.details["z3_exact"]["objective_exact"] == str(expected)
    assert method in task.details["z3"]


def test_backend_override_on_the_command_line(tmp_path: Path) -> None:
    result = run_program(_toy(tmp_path), RunOptions(backend="z3", write_files=False))
    assert result.tasks[0].backend == "z3"
    assert result.tasks[0].objective == 1.0


def _lp(lo_bound: float):
    """min t s.t. x >= lo_bound, -t <= x <= t, x <= 5: optimum max(lo_bound, 0), infeasible above 5."""
    b = QueryBuilder("lp")
    x = b.add_vars(1, -np.inf, 5.0, name="x", kind="delta")
    t = b.add_vars(1, 0.0, np.inf, name="t", kind="norm")
    b.add_rows(np.array([[1.0, 0.0]]), lo_bound, np.inf, label="keep a [a[0]]", group="keep")
    b.add_rows(np.array([[1.0, -1.0], [-1.0, -1.0]]), -np.inf, 0.0, label="norm", group="norm")
    b.add_objective(t, 1.0)
    del x
    return b.build()


@pytest.mark.parametrize("method", ["optimize", "bisect"])
def test_thirds_are_exact(method: str) -> None:
    """1/3 is not a float: the exact optimum is the float64 nearest to 1/3 as given, not a rounded neighbour."""
    sol = Z3Backend().solve(_lp(1 / 3), SolveOptions(extra={"method": method}))
    assert sol.status == OPTIMAL
    assert Fraction(sol.stats["objective_exact"]) == Fraction(1 / 3)
    assert sol.objective == 1 / 3


def test_infeasible_and_bisection_bracket() -> None:
    assert Z3Backend().solve(_lp(6.0), SolveOptions()).status == INFEASIBLE
    sol = Z3Backend().solve(_lp(2.5), SolveOptions(extra={"method": "bisect"}))
    assert sol.status == OPTIMAL and sol.stats["calls"] >= 2
    lo, hi = (Fraction(v) for v in sol.stats["bracket"])
    assert lo == hi == Fraction(5, 2)


def test_relu_and_disjunction_agree_with_highs() -> None:
    """y = relu(x), x = d - 1, goal: y >= 0.5 or d <= -2 (a disjunction); min |d| is 1.5 via the first."""
    b = QueryBuilder("milp")
    d = b.add_vars(1, -3.0, 3.0, name="d", kind="delta")
    x = b.add_vars(1, -4.0, 2.0, name="x", kind="neuron")
    y = b.add_vars(1, 0.0, 2.0, name="y", kind="neuron")
    t = b.add_vars(1, 0.0, 3.0, name="t", kind="norm")
    b.add_rows(np.array([[1.0, -1.0, 0, 0]]), 1.0, 1.0, label="net", group="network")
    b.add_relu(y, x)
    b.add_disjunction(np.array([[0, 0, 1.0, 0], [1.0, 0, 0, 0]]), np.array([0.5, -np.inf]),
                      np.array([np.inf, -2.0]), np.array([0, 1]), label="require", group="require")
    b.add_rows(np.array([[1.0, 0, 0, -1.0], [-1.0, 0, 0, -1.0]]), -np.inf, 0.0, label="norm", group="norm")
    b.add_objective(t, 1.0)
    q = b.build()
    exact = Z3Backend().solve(q, SolveOptions())
    approx = get_backend("highs").solve(q, SolveOptions())
    assert exact.status == OPTIMAL and Fraction(exact.stats["objective_exact"]) == Fraction(3, 2)
    assert approx.objective == pytest.approx(1.5, abs=1e-7)


def test_smt2_text_declares_every_atom() -> None:
    b = QueryBuilder("p")
    u = b.add_vars(3, -1.0, 1.0, name="u")
    b.add_product(np.array([u[2]]), np.array([u[0]]), np.array([u[1]]))
    text = query_to_smt2(b.build())
    assert "(assert (= x2 (* x0 x1)))" in text
    assert text.count("declare-const") == 4  # three variables and the objective


def test_milp_lowering_refuses_products() -> None:
    b = QueryBuilder("p")
    u = b.add_vars(3, -1.0, 1.0)
    b.add_product(np.array([u[2]]), np.array([u[0]]), np.array([u[1]]))
    q = b.build()
    assert q.problem_class == "SMT"
    with pytest.raises(PatchlangError, match="multiplies unknowns") as err:
        lower_to_milp(q)
    assert "using z3" in (err.value.help or "")


def _two_layer(tmp_path: Path) -> Path:
    rng = np.random.default_rng(0)
    net = network_from_arrays([rng.normal(size=(4, 3)), rng.normal(size=(3, 4))],
                              [rng.normal(size=4) * 0.1, rng.normal(size=3) * 0.1])
    save_network(net, str(tmp_path / "small.onnx"))
    return tmp_path / "small.onnx"


BILINEAR = """
    model net = "small.onnx"
    points p = [[0.5, -0.2, 0.1], [1.0, 0.3, -0.5]]
    patch both on net {{
        edit layer 0 biases
        edit layer 1 weights rows [{row}]
        change p[0] to {target}
        bound linf <= 1
        {using}
    }}
"""


def test_nonlinear_edit_needs_z3(tmp_path: Path) -> None:
    _two_layer(tmp_path)
    with pytest.raises(SpecError) as err:
        load_program_text(BILINEAR.format(row=0, target=0, using=""), tmp_path, filename=str(tmp_path / "s.patch"))
    assert err.value.diagnostics[0].code == "PL230"


def test_nonlinear_edit_with_z3_is_checked_and_warned(tmp_path: Path) -> None:
    """Biases of layer 0 and weights of layer 1 move together: products of unknowns, solved exactly by Z3."""
    _two_layer(tmp_path)
    from patchlang.model.loader import load_model

    model = load_model(str(tmp_path / "small.onnx"))
    x = np.array([[0.5, -0.2, 0.1]])
    own = int(model.labels(x)[0])
    target = (own + 1) % 3
    program = load_program_text(BILINEAR.format(row=target, target=target, using="using z3 (time_limit = 60)"),
                                tmp_path, filename=str(tmp_path / "s.patch"))
    task = run_program(program, RunOptions(write_files=False)).tasks[0]
    assert task.problem_class == "SMT"
    assert any("products of unknowns" in n and "may not end" in n for n in task.notes)
    assert task.status == "patched", task.message
    assert int(task.patched.labels(x)[0]) == target
    assert task.query_size["variables"] > 0


def test_time_limit_is_respected() -> None:
    """A hard nonlinear feasibility problem with a 1 s limit stops with a timeout (or an answer), promptly."""
    import time

    rng = np.random.default_rng(1)
    b = QueryBuilder("hard")
    n = 12
    a = b.add_vars(n, -1.0, 1.0)
    c = b.add_vars(n, -1.0, 1.0)
    p = b.add_vars(n, -1.0, 1.0)
    b.add_product(p, a, c)
    M = np.hstack([rng.normal(size=(n, 2 * n)), np.eye(n)])
    b.add_rows(M, rng.normal(size=n), rng.normal(size=n) + 0.01, label="rows", group="require")
    t0 = time.perf_counter()
    sol = Z3Backend().solve(b.build(), SolveOptions(time_limit=1.0))
    assert time.perf_counter() - t0 < 10
    assert sol.status in (TIMEOUT, INFEASIBLE, OPTIMAL, FEASIBLE)


def test_exact_example(capsys) -> None:
    """examples/exact: Z3's exact optimum, then a proven "no patch" with its conflict in the spec's words."""
    from patchlang.cli import main

    assert main(["run", str(REPO / "examples" / "exact" / "exact.patch"), "--no-save"]) == 0
    out = capsys.readouterr().out
    assert "optimum exact" in out
    assert "conflict  bound linf <= 0.1 (line 26)" in out
    assert "no patch exists: change wrong[0] to label" in out
