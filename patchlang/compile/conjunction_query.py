"""One conjunction of the unsafe region over the whole input box as one exact Query (MILP: a binary per unstable
ReLU), for branch and bound (:mod:`.branch_and_bound`) and its worker processes (:mod:`.bab_parallel`).

Why beside the trees: with tight hidden-layer bounds the MILP solver decides a conjunction the trees leave open.
Measured on mnist_fc (HiGHS, one thread): 256x2 prop_1_0.03's hardest parts in 9-11 s each after their trees
stalled; 256x4 after stabilisation (:mod:`.stabilise`) prop_3_0.03's nine parts in 1.0-8.1 s each (its trees
left them open after 37 s on two cores), prop_8_0.05's in 6.5-8.9 s, prop_4_0.05's and prop_9_0.03's in
0.1-2.0 s (their trees took about 20 s); over the root's unstabilised bounds the same Queries time out.

Soundness: the Query's big-M bounds are the hidden-layer bounds given, which are sound (proven); "holds" is the
solver's proof of infeasibility, and a point it returns counts only once the caller's ``confirm`` accepts it.
"""

from __future__ import annotations

import inspect
from functools import partial

import numpy as np

from .bab_tree import BabOptions, absorb_leaf
from .bounds import LayerBounds, ReluNet
from .verify import Confirm, LeafSolver, SearchResult, _leaf, searched_by_bound


def time_boxed(solve: LeafSolver, seconds: float, bound_only: bool = False) -> LeafSolver:
    """``solve`` limited to ``seconds`` when it takes a ``time_limit`` (the verifier's leaf solver does; a plain
    callable is used as it is), and asked for a search by bound when it takes ``bound_only``.  A partial, not a
    closure: a picklable ``solve`` stays picklable for the worker processes (:mod:`.bab_parallel`)."""
    if "time_limit" not in inspect.signature(solve).parameters:
        return solve
    timed = partial(solve, time_limit=seconds)
    return searched_by_bound(timed) if bound_only else timed


def whole_conjunction_query(rn: ReluNet, lo: np.ndarray, hi: np.ndarray, root: LayerBounds, spec, j: int,
                            solve: LeafSolver, confirm: Confirm, opt: BabOptions, res: SearchResult) -> str:
    """Conjunction ``j`` over the whole input box (``lo``/``hi`` of shape ``(1, n)``) as one exact Query: "holds",
    "violated" (``res`` filled) or the reason it stayed open.

    The Query minimises the sum of the conjunction's rows (its constraints decide; the objective lets the MILP
    solver prune by bound): with the leaf solver's search by bound (HiGHS without primal heuristics) mnist_fc
    256x2 prop_1_0.03's hardest parts are proven in 9-11 s each, where a pure feasibility MILP with heuristics had
    not finished its root node in 30 s (measured)."""
    conj_open = np.zeros(spec.n_conj, bool)
    conj_open[j] = True
    objective = spec.A[spec.conj == j].sum(axis=0)
    sub = _leaf(rn, lo[0], hi[0], conj_open, root, spec, solve, confirm, opt, SearchResult("unknown"), final=True,
                objective=objective)
    if absorb_leaf(res, sub):
        return "violated"
    return "holds" if sub.status == "holds" else f"unsafe part {j}: {sub.reason}"
