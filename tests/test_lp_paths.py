"""The LP path's fast paths give exactly the plain path's optimum, on small random problems.

Fast paths under test (see tasks/patch.py, tasks/lazy.py, compile/patch.py, solvers/highs.py):

- a single `away from label` point: one LP per alternative of its clause, ordered by a closed-form lower bound,
  the rest skipped once they cannot beat the incumbent (or cut off after one relaxed round)  == the disjunctive
  MILP encoding of the same clause, and == solving every alternative;
- large `keep` groups added lazily (cutting planes, tested on the tidy patch for L∞)  == encoding every point;
- the bulk encoding of last-layer edits  == the per-point encoding (same query size, same optimum);
- the LP algorithm chosen by size (dual / primal simplex, IPM)  == each other.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from patchlang.api import load_program_text, run_program
from patchlang.compile import patch as compile_patch
from patchlang.compile.patch import alternative_lower_bound, delta_expression, encode_patch
from patchlang.model import network_from_arrays, save_network
from patchlang.solvers.base import INFEASIBLE, OPTIMAL, SolveOptions
from patchlang.solvers.highs import HighsBackend
from patchlang.plan import lazy as lazy_module
from patchlang.plan.away import away_alternative as _away_alternative
from patchlang.plan.away import pin_away as _pin_away
from patchlang.plan.away import single_away_candidates
from patchlang.tasks.patch import RunOptions, build_groups

N_IN, N_HIDDEN, N_OUT = 6, 8, 5
N_KEEP = 80  # above lazy.LAZY_MIN_POINTS, so the lazy path is taken
REL = 1e-6


def make_case(seed: int, folder: Path) -> Path:
    """A random 6 -> 8 ReLU -> 5 network and points (``x.npz``: 90 random inputs, no labels)."""
    rng = np.random.default_rng(seed)
    net = network_from_arrays([rng.normal(size=(N_HIDDEN, N_IN)), rng.normal(size=(N_OUT, N_HIDDEN))],
                              [rng.normal(size=N_HIDDEN) * 0.3, rng.normal(size=N_OUT) * 0.3], name="net")
    save_network(net, str(folder / "net.onnx"))
    np.savez(folder / "x.npz", x=rng.normal(size=(N_KEEP + 10, N_IN)))
    return folder


def program(folder: Path, body: str):
    source = f'model net = "net.onnx"\npoints x = "x.npz"\npoints keepers = x[10:{10 + N_KEEP}]\n' \
             f"patch t on net {{\n{body}\n}}\n"
    return load_program_text(source, folder, filename=str(folder / "spec.patch"))


def run(folder: Path, body: str):
    result = run_program(program(folder, body), RunOptions(write_files=False)).tasks[0]
    assert result.status == "patched", (result.status, result.message)
    return result


def solve(net, task, groups, norms=None) -> float:
    enc = encode_patch(net, task.edits, groups, norms or task.norms)
    sol = HighsBackend().solve(enc.query, SolveOptions())
    if sol.status == INFEASIBLE:
        return np.inf
    assert sol.status == OPTIMAL
    return float(sol.objective)


# ------------------------------------------------------------------ single `away from label`
@pytest.mark.parametrize("seed", [0, 1, 2])
@pytest.mark.parametrize("norm", ["linf", "l1"])
@pytest.mark.parametrize("keep", [False, True])
def test_single_away_equals_disjunction_and_every_alternative(seed: int, norm: str, keep: bool,
                                                              tmp_path: Path) -> None:
    folder = make_case(seed, tmp_path)
    body = (f"edit layer -1 weights and biases\nchange x[{seed}] away from label\n"
            + ("keep keepers\n" if keep else "") + f"minimize {norm}\nmargin 0.01\nbound linf <= 100")
    fast = run(folder, body)
    task = program(folder, body).tasks[0]
    net = task.model.net
    groups = build_groups(net, task.goals, task.margin)
    # plain path 1: the clause as a disjunction (one MILP; its big-Ms need the loose `bound linf`)
    milp = solve(net, task, groups)
    # plain path 2: every alternative solved, the best wins
    gi, labels = single_away_candidates(net, task)
    every = min(solve(net, task, _pin_away(groups, gi, lab)) for lab in labels)
    assert fast.objective == pytest.approx(milp, rel=REL)
    assert fast.objective == pytest.approx(every, rel=REL)
    assert fast.distances[norm] == pytest.approx(every, rel=REL)


@pytest.mark.parametrize("seed", [3, 4])
@pytest.mark.parametrize("norm", ["linf", "l1"])
def test_lower_bound_exact_alone_and_below_with_keep(seed: int, norm: str, tmp_path: Path) -> None:
    folder = make_case(seed, tmp_path)
    task = program(folder, f"edit layer -1 weights\nchange x[0] away from label\nkeep keepers\n"
                           f"minimize {norm}\nmargin 0.01").tasks[0]
    net = task.model.net
    groups = build_groups(net, task.goals, task.margin)
    gi, labels = single_away_candidates(net, task)
    point = groups[gi].points[0]
    expr = delta_expression(net, task.edits, task.norms, point.h)
    assert expr is not None
    for lab in labels:
        pinned = _pin_away(groups, gi, lab)
        bound = alternative_lower_bound(*expr, _away_alternative(point, lab), task.norms)
        alone = solve(net, task, [pinned[gi]])
        assert bound == pytest.approx(alone, rel=REL)  # one row, one norm: the bound is the optimum
        assert bound <= solve(net, task, pinned) * (1 + REL)  # other goals only raise it


def test_no_closed_form_for_a_hidden_layer(tmp_path: Path) -> None:
    folder = make_case(5, tmp_path)
    task = program(folder, "edit layer 0 biases\nchange x[0] to 1\nbound linf <= 0.5\nminimize linf").tasks[0]
    assert delta_expression(task.model.net, task.edits, task.norms, np.zeros(N_IN)) is None


# ------------------------------------------------------------------ lazy keep
@pytest.mark.parametrize("seed", [6, 7, 8])
@pytest.mark.parametrize("norm", ["linf", "l1"])
def test_lazy_keep_equals_full_encoding(seed: int, norm: str, tmp_path: Path,
                                        monkeypatch: pytest.MonkeyPatch) -> None:
    folder = make_case(seed, tmp_path)
    body = f"edit layer -1 weights and biases\nchange x[0] to runner-up\nkeep keepers\nminimize {norm}\nmargin 0.01"
    lazy = run(folder, body)
    assert any("added lazily" in n for n in lazy.notes)
    monkeypatch.setattr(lazy_module, "LAZY_MIN_POINTS", 10**9)
    full = run(folder, body)
    assert not any("added lazily" in n for n in full.notes)
    assert lazy.objective == pytest.approx(full.objective, rel=REL)
    assert lazy.distances["l1"] == pytest.approx(full.distances["l1"], rel=1e-5)  # L∞: the tidy too
    assert lazy.query_size["rows"] < full.query_size["rows"]


@pytest.mark.parametrize("seed", [6, 9])
def test_lazy_keep_milp_equals_full_encoding(seed: int, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Hidden-layer edits (a MILP, one copy of the ReLUs per keep point): the lazy rounds reach the optimum of
    the whole encoding, with fewer binaries in the last round (small sizes so both solve in a blink)."""
    monkeypatch.setattr(lazy_module, "LAZY_MIN_POINTS", 10)
    monkeypatch.setattr(lazy_module, "INITIAL_POINTS", 4)
    folder = make_case(seed, tmp_path)
    body = "edit layers 0, 1 biases\nchange x[0] to runner-up\nkeep x[10:40]\nminimize linf\nmargin 0.01\nbound linf <= 3"
    lazy = run(folder, body)
    assert lazy.problem_class == "MILP"
    assert any("added lazily" in n and "(1 rounds)" not in n for n in lazy.notes)  # points were added
    monkeypatch.setattr(lazy_module, "LAZY_MIN_POINTS", 10**9)
    full = run(folder, body)
    assert not any("added lazily" in n for n in full.notes)
    assert lazy.objective == pytest.approx(full.objective, rel=1e-6)
    assert lazy.query_size["binaries"] < full.query_size["binaries"]


# ------------------------------------------------------------------ bulk last-layer encoding
@pytest.mark.parametrize("seed", [9, 10])
@pytest.mark.parametrize("edit", ["weights", "biases", "weights and biases", "weights rows [1, 3]"])
def test_bulk_last_layer_encoding_equals_per_point(seed: int, edit: str, tmp_path: Path,
                                                  monkeypatch: pytest.MonkeyPatch) -> None:
    folder = make_case(seed, tmp_path)
    task = program(folder, f"edit layer -1 {edit}\nchange x[0:3] to runner-up\nkeep keepers\n"
                           "minimize linf\nmargin 0.01").tasks[0]
    net = task.model.net
    groups = build_groups(net, task.goals, task.margin)
    bulk = encode_patch(net, task.edits, groups, task.norms).query
    monkeypatch.setattr(compile_patch.PatchEncoder, "_last_layer_only", lambda self: False)
    plain = encode_patch(net, task.edits, groups, task.norms).query
    assert (bulk.n_vars, bulk.n_rows) == (plain.n_vars, plain.n_rows)
    assert bulk.A.nnz == plain.A.nnz
    labels = {b.label for b in plain.row_blocks if b.group in ("keep", "change")}
    assert labels == {b.label for b in bulk.row_blocks if b.group in ("keep", "change")}
    backend = HighsBackend()
    a, b = backend.solve(bulk, SolveOptions()), backend.solve(plain, SolveOptions())
    assert a.status == b.status
    if a.status == OPTIMAL:
        assert a.objective == pytest.approx(b.objective, rel=REL)


# ------------------------------------------------------------------ LP algorithm choice
def test_lp_algorithms_agree(tmp_path: Path) -> None:
    folder = make_case(7, tmp_path)
    body = "edit layer -1 weights and biases\nchange x[0] to runner-up\nkeep keepers\nminimize linf\nmargin 0.01"
    values = [run(folder, body + f'\nusing highs(lp_solver = "{s}")').objective for s in ("simplex", "ipm", "primal")]
    assert values == pytest.approx([values[0]] * 3, rel=REL)


def test_lazy_rounds_share_the_time_limit(tmp_path: Path) -> None:
    """Out of time with points still broken: no answer, never a patch that fails the independent check."""
    folder = make_case(6, tmp_path)
    body = ("edit layer -1 weights and biases\nchange x[0] to runner-up\nkeep keepers\nminimize linf\n"
            "margin 0.01\nusing highs(time_limit = 0.000001)")
    result = run_program(program(folder, body), RunOptions(write_files=False)).tasks[0]
    assert result.status in ("patched", "inconclusive"), (result.status, result.message)


@pytest.mark.parametrize("seed", [3, 6, 9])
@pytest.mark.parametrize("goal", ["x[0] away from label", "x[1] to runner-up"])
def test_warm_linf_keep_equals_plain_lazy_and_full(seed: int, goal: str, tmp_path: Path,
                                                   monkeypatch: pytest.MonkeyPatch) -> None:
    """The L∞ keep rounds on two warm LPs (plan.linf_keep) give the optimum and the least-L1 patch of the plain
    lazy rounds and of the full encoding (for `away from label`: over every candidate label, pruned ones too)."""
    from patchlang.plan import linf_keep

    folder = make_case(seed, tmp_path)
    body = f"edit layer -1 weights and biases\nchange {goal}\nkeep keepers\nminimize linf\nmargin 0.01"
    warm = run(folder, body)
    assert any(s.summary.get("warm_lp_solves") for s in warm.steps), [s.name for s in warm.steps]
    monkeypatch.setattr(linf_keep, "applies", lambda *a: False)
    import patchlang.plan.chain as chain_module
    monkeypatch.setattr(chain_module, "linf_keep_applies", lambda *a: False)
    plain = run(folder, body)
    assert not any(s.summary.get("warm_lp_solves") for s in plain.steps)
    monkeypatch.setattr(lazy_module, "LAZY_MIN_POINTS", 10**9)
    full = run(folder, body)
    for other in (plain, full):
        assert warm.objective == pytest.approx(other.objective, rel=REL)
        assert warm.distances["linf"] == pytest.approx(other.distances["linf"], rel=REL)
        assert warm.distances["l1"] == pytest.approx(other.distances["l1"], rel=1e-5)


@pytest.mark.parametrize("seed", [3, 6, 9])
def test_linf_keep_rows_one_at_a_time_equal_whole_points(seed: int, tmp_path: Path,
                                                         monkeypatch: pytest.MonkeyPatch) -> None:
    """Row mode of plan.linf_keep (a keep point's rows added one competing label at a time) reaches the optimum of
    whole-point rounds, with fewer keep rows in the LPs."""
    from patchlang.plan import linf_keep

    folder = make_case(seed, tmp_path)
    body = "edit layer -1 weights and biases\nchange x[0] away from label\nkeep keepers\nminimize linf\nmargin 0.01"
    sizes: dict[bool, list[int]] = {True: [], False: []}
    real_solve = linf_keep.LinfKeepLp.solve

    def spy(self, problem, budget, cutoff):
        got = real_solve(self, problem, budget, cutoff)
        sizes[self.rows_in is not None].append(self.lp_b.rows)
        return got

    monkeypatch.setattr(linf_keep.LinfKeepLp, "solve", spy)
    rows = run(folder, body)
    assert sizes[True] and not sizes[False]
    monkeypatch.setattr(linf_keep.LinfKeepLp, "_row_mode", lambda self, problem: False)
    points = run(folder, body)
    assert sizes[False] and max(sizes[True]) < max(sizes[False])
    assert rows.status == points.status == "patched"
    assert rows.distances["linf"] == pytest.approx(points.distances["linf"], rel=REL)
    assert rows.objective == pytest.approx(points.objective, rel=REL)
