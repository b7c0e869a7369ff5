"""The reduction protocol itself: one budget, a chain that applies in order and inverts in reverse, step records.

Pure-Python stand-in steps: what is tested here is the machinery every planning step relies on, not a step.
"""

from __future__ import annotations

import time
from dataclasses import replace

import numpy as np
import pytest

from patchlang.plan.budget import Budget
from patchlang.plan.chain import STEP_NAMES, Planner
from patchlang.plan.reduction import Answer, Chain, Inverse, PatchProblem, Reduction, StepRecord
from patchlang.solution import OPTIMAL, TIMEOUT, Solution, SolveOptions


def test_budget_time_left_share_and_options() -> None:
    unlimited = Budget()
    assert unlimited.time_left() is None and not unlimited.expired
    assert unlimited.share(0.5) is unlimited
    assert unlimited.options(SolveOptions(time_limit=None)).time_limit is None
    b = Budget.seconds(10.0)
    assert 9.0 < b.time_left() <= 10.0 and not b.expired
    assert 4.0 < b.share(0.5).time_left() <= 5.0
    assert b.cap(1.0).time_left() <= 1.0 and b.cap(100.0).deadline == b.deadline
    assert 9.0 < b.options(SolveOptions(time_limit=99.0)).time_limit <= 10.0
    gone = Budget(time.perf_counter() - 1.0)
    assert gone.expired and gone.time_left() == 0.0
    assert gone.options(SolveOptions()).time_limit > 0  # never 0: solvers read that as "no limit"
    assert Budget.of(SolveOptions(time_limit=5.0)).time_left() <= 5.0


class Tag(Reduction):
    """Appends its tag to the problem's name on apply; the inverse appends it to the answer's message."""

    def __init__(self, tag: str, applies: bool = True):
        self.name, self.applies = tag, applies

    def accepts(self, problem, capabilities) -> bool:
        return self.applies and "lp" in capabilities

    def apply(self, problem, budget):
        out = replace(problem, task=problem.task + self.name)

        def invert(answer: Answer) -> Answer:
            answer.solution.message += self.name
            return answer

        return out, Inverse(StepRecord(self.name, {"seen": problem.task}), invert)


def _problem() -> PatchProblem:
    return PatchProblem(net=None, task="", groups=[], options=SolveOptions())  # type: ignore[arg-type]


def test_chain_applies_in_order_and_inverts_in_reverse() -> None:
    solved_with = []

    def solver(problem, budget):
        solved_with.append(problem.task)
        return Solution(OPTIMAL, message="")

    chain = Chain([Tag("a"), Tag("b", applies=False), Tag("c")], frozenset({"lp"}))
    answer, last = chain.solve(_problem(), Budget(), solver)
    assert solved_with == ["ac"] and last.task == "ac"  # b did not accept
    assert answer.solution.message == "ca"  # inverses in reverse order
    assert [(r.name, r.summary["seen"]) for r in chain.records] == [("a", ""), ("c", "a")]


def test_a_step_needs_the_capabilities_it_requires() -> None:
    chain = Chain([Tag("a")], frozenset({"smt"}))
    answer, last = chain.solve(_problem(), Budget(), lambda p, b: Solution(OPTIMAL))
    assert last.task == "" and not chain.records


def test_a_solved_problem_is_not_solved_again() -> None:
    done = Solution(TIMEOUT, message="driver")
    chain = Chain([], frozenset())
    answer, _ = chain.solve(replace(_problem(), solution=done), Budget(),
                            lambda p, b: pytest.fail("the chain must not solve a solved problem"))
    assert answer.solution is done and answer.status == TIMEOUT


def test_planner_rejects_unknown_step_names_and_lists_its_steps() -> None:
    with pytest.raises(ValueError, match="unknown planning step"):
        Planner("highs", frozenset({"no_such_step"}))
    names = [s.name for s in Planner("highs").steps(tidy=True)]
    assert names == ["one_unknown_per_row", "keep_bracket", "least_l1_tidy", "linf_bisection", "encode",
                     "fixed_phase_bound", "lp_bound_tightening"]
    assert set(names) <= set(STEP_NAMES)
    off = Planner("highs", frozenset({"fixed_phase_bound", "keep_bracket"})).steps(tidy=False)
    assert "fixed_phase_bound" not in [s.name for s in off] and "keep_bracket" not in [s.name for s in off]


def test_answer_patch_defaults_to_the_encoding_layout() -> None:
    assert Answer(Solution(OPTIMAL, x=np.zeros(2)), None).patch is None


def test_derived_queries_keep_products_and_integrality() -> None:
    """The one query-copy helper: a fixed-phase restriction keeps products and leaves an unbounded integer variable
    integer (only indicators it fixes lose integrality); a derived query with new columns must say which are."""
    import scipy.sparse as sp

    from patchlang.compile.fixed_phase import fixed_phase_query
    from patchlang.query import Query

    q = Query(lb=np.array([0.0, 0.0, -1.0, 0.0]), ub=np.array([1.0, np.inf, 1.0, 1.0]),
              integer=np.array([True, True, False, False]), A=sp.csr_matrix((1, 4)), row_lo=np.zeros(1),
              row_hi=np.ones(1), c=np.zeros(4), products=np.array([[3, 2, 2]]))
    r = fixed_phase_query(q, np.zeros(4))
    assert np.array_equal(r.products, q.products) and r.problem_class == "SMT"
    assert list(r.integer) == [False, True, False, False] and r.lb[0] == r.ub[0] == 1.0
    with pytest.raises(ValueError):
        q.derive(A=sp.csr_matrix((1, 5)))


def test_write_atomic_takes_bytes_text_or_a_writer(tmp_path) -> None:
    from patchlang.files import write_atomic

    write_atomic(str(tmp_path / "a.bin"), b"\x00\x01")
    write_atomic(str(tmp_path / "b.txt"), "ü")
    write_atomic(str(tmp_path / "c.bin"), lambda fh: fh.write(b"abc"))
    assert (tmp_path / "a.bin").read_bytes() == b"\x00\x01"
    assert (tmp_path / "b.txt").read_text(encoding="utf-8") == "ü"
    assert (tmp_path / "c.bin").read_bytes() == b"abc"
    assert not [p for p in tmp_path.iterdir() if p.name.endswith(".tmp")]
