"""Step: lower the (possibly reduced) patch problem to a Query with the one encoder.

Not a simplification but the hinge of the chain: the steps before it transform the problem as the user wrote it
(network, edits, points), the steps after it transform its Query.  Its inverse is the identity.
"""

from __future__ import annotations

import time
from dataclasses import replace

import numpy as np

from ..compile.goals import GoalGroup
from ..compile.patch import encode_patch, first_edited_position
from ..lang.program import PatchTask
from ..model.ir import Network
from ..model.ops import out_size, relu_width
from .budget import Budget
from .reduction import Inverse, PatchProblem, Reduction, StepRecord

DEFAULT_MIP_GAP = 1e-6  # a claim of minimality should mean it; HiGHS's and Gurobi's default is 1e-4
HUGE_NONZEROS = 5_000_000
HUGE_BINARIES = 50_000


def size_estimate(net: Network, task: PatchTask, groups: list[GoalGroup]) -> tuple[int, int]:
    """Upper estimates ``(nonzeros, binaries)`` of a task's MILP, from the spec alone (before anything is built):
    each point carries one coefficient per edited parameter and may need a binary per ReLU after the first edit
    and per alternative of its clauses."""
    n_points = sum(len(g.points) for g in groups)
    params = sum(int(np.count_nonzero(e.mask)) for e in task.edits)
    start = first_edited_position(net, task.edits)
    n = net.forward_suffix(np.zeros((1, net.suffix_in_size)), 0, start + 1).shape[1]
    relus = 0
    for layer in net.layers[start + 1:]:
        relus += relu_width(layer, n)
        n = out_size(layer, n)
    alts = sum(len(c) for g in groups for p in g.points for c in p.clauses if len(c) > 1)
    return n_points * params, n_points * relus + alts


def huge(net: Network, task: PatchTask, groups: list[GoalGroup]) -> dict[str, int]:
    """``{"huge_nonzeros", "huge_binaries"}`` when the MILP about to be built is beyond what solves in minutes
    (decided from the spec, before building anything), else empty."""
    if task.problem_class != "MILP":
        return {}
    nnz, binaries = size_estimate(net, task, groups)
    if nnz <= HUGE_NONZEROS and binaries <= HUGE_BINARIES:
        return {}
    return {"huge_nonzeros": nnz, "huge_binaries": binaries}


class Encode(Reduction):
    """Encode the problem (see the module docstring); ``seconds`` accumulates the time spent building queries."""

    name = "encode"

    def __init__(self) -> None:
        self.seconds = 0.0

    def accepts(self, problem: PatchProblem, capabilities: frozenset[str]) -> bool:
        return problem.enc is None and problem.solution is None

    def apply(self, problem: PatchProblem, budget: Budget) -> tuple[PatchProblem, Inverse]:
        t0 = time.perf_counter()
        warning = {} if problem.surrogate else huge(problem.net, problem.task, problem.groups)
        enc = encode_patch(problem.net, problem.task.edits, problem.groups, problem.task.norms,
                           name=problem.task.name)
        q = enc.query
        record = StepRecord(self.name, {"variables": q.n_vars, "rows": q.n_rows, "nonzeros": int(q.A.nnz),
                                        "class": q.problem_class, "seconds": time.perf_counter() - t0, **warning})
        options = problem.options
        if enc.query.problem_class == "MILP" and options.mip_gap is None:
            options = replace(options, mip_gap=DEFAULT_MIP_GAP)
        self.seconds += time.perf_counter() - t0
        return replace(problem, enc=enc, options=options), Inverse(record)
