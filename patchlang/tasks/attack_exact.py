"""The exact attack: the smallest input change (l0, l1 or l∞) that makes the decision a target, or a proof that
none exists within the bounds.

Why this order of work: the solver is the slow part, so it is asked as little as possible and only well-bounded
questions.

- **l0** (changed inputs): a fast attack (:func:`~patchlang.tasks.attack_search.greedy_l0`) gives an upper bound
  ``K``.  Then for ``k = 1, 2, ...`` below ``K``, the bounds for "at most ``k`` inputs change"
  (:func:`~patchlang.compile.attack.l0_layer_bounds`) refute most targets outright; the remaining targets share one
  feasibility MILP (a disjunction over them) with the budget row and those tight big-Ms.  One MILP rather than
  one per target: the hard part of an l0 MILP is the search over which inputs change, and the joint MILP does it
  once (on aigent_mnist it proved the minimum on 4 of the 5 images of the first 40 that the per-target MILPs
  left unproven at 10 s).  The first ``k`` with a confirmed answer is the
  minimum (every smaller budget was refuted); if all ``k < K`` are refuted, the fast attack is minimal.
- **l1 / l∞**: one minimisation MILP per target not refuted by the bounds, started from the best fast attack (MIP
  start) and cut off at it (no node worse than the incumbent is explored).

Each claim is qualified by what the solver proved: ``lower`` is a proven lower bound on the smallest change,
``proven`` says it meets the change found.  The answer is only a candidate until the caller confirms it.
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass, replace
from typing import Callable

import numpy as np

from ..compile.attack import (attack_start, box_layer_bounds, encode_attack_query, l0_crown_bounds,
                              l0_open_inputs, refuted_targets, single_input_walk)
from ..compile.bounds import ReluNet
from ..compile.verify import UnsafeSpec
from ..solution import FEASIBLE, INFEASIBLE, OPTIMAL, SolveOptions, Solution

Solve = Callable[[object, SolveOptions], Solution]
Confirm = Callable[[np.ndarray], bool]


@dataclass
class ExactOutcome:
    x: np.ndarray | None  # the smallest confirmed adversarial input found (float64), or None
    size: float | None  # its size in the norm
    lower: float  # proven lower bound on the smallest size (inf: proven that none exists within the bounds)
    proven: bool  # lower meets size (or none exists)
    queries: int = 0
    note: str = ""


def size_of(x: np.ndarray, x0: np.ndarray, norm: str) -> float:
    d = np.asarray(x, float) - np.asarray(x0, float)
    if norm == "l0":
        return float(np.count_nonzero(d))
    if norm == "l1":
        return float(np.sum(np.abs(d)))
    return float(np.max(np.abs(d), initial=0.0))


def exact_attack(rn: ReluNet, x0: np.ndarray, lo: np.ndarray, hi: np.ndarray, spec: UnsafeSpec, norm: str,
                 margin: float, solve: Solve, confirm: Confirm, options: SolveOptions, deadline: float,
                 incumbent: np.ndarray | None, budget: float | None = None) -> ExactOutcome:
    """See the module docstring.  ``incumbent`` is a confirmed adversarial input (or None); ``budget`` a bound
    on the size from the spec (`bound l0 <= c`)."""
    box = box_layer_bounds(rn, lo, hi)
    if norm == "l0":
        return _exact_l0(rn, x0, lo, hi, spec, margin, solve, confirm, options, deadline, incumbent, budget, box)
    return _exact_min(rn, x0, lo, hi, spec, norm, margin, solve, confirm, options, deadline, incumbent, budget, box)


def _snap(x: np.ndarray, x0: np.ndarray, lo: np.ndarray, hi: np.ndarray) -> np.ndarray:
    """The solver's input with its rounding noise removed: inputs within 1e-7 of ``x0`` are ``x0``."""
    x = np.clip(np.asarray(x, float), lo, hi)
    same = np.abs(x - x0) <= 1e-7 * (1.0 + np.abs(x0))
    x[same] = x0[same]
    return x


def _left(deadline: float) -> float:
    return deadline - time.perf_counter()


def _exact_l0(rn: ReluNet, x0: np.ndarray, lo: np.ndarray, hi: np.ndarray, spec: UnsafeSpec, margin: float,
              solve: Solve, confirm: Confirm, options: SolveOptions, deadline: float, incumbent: np.ndarray | None,
              budget: float | None, box) -> ExactOutcome:
    n_movable = int(np.count_nonzero(hi > lo))
    K = size_of(incumbent, x0, "l0") if incumbent is not None else math.inf
    cap = min(K - 1, float(budget) if budget is not None else math.inf, n_movable)
    queries = 0
    k = 1
    while k <= cap:
        if _left(deadline) <= 0:
            return ExactOutcome(incumbent, None if incumbent is None else K, float(k), False, queries,
                                "time limit reached")
        bounds = l0_crown_bounds(rn, x0, lo, hi, k, box)
        refuted, usable = l0_open_inputs(rn, spec, bounds, x0, lo, hi, k, margin)
        if k == 1 and not np.all(refuted):  # one changed input: decided exactly by walking each input's line
            walk = single_input_walk(rn, x0, lo, hi, spec, margin)
            undecided = False
            for i in np.nonzero(walk.found)[0]:
                x = x0.copy()
                x[walk.inputs[i]] = walk.value[i]
                if confirm(x):
                    return ExactOutcome(x, 1.0, 1.0, True, queries)
                undecided = True
            if undecided:
                return ExactOutcome(incumbent, None if incumbent is None else K, 1.0, False, queries,
                                    "a one-input candidate on a boundary did not confirm")
            k += 1
            continue
        undecided = False
        # one MILP over every target the bounds leave open (it shares the search over which inputs change:
        # measured 1.5x faster than one MILP per target on the hard budgets), over the inputs some target can use
        open_j = np.nonzero(~refuted)[0]
        if open_j.size == 0:
            k += 1
            continue
        fixed = np.ones(lo.size, dtype=bool)
        fixed[np.unique(np.concatenate([usable[j] for j in open_j]))] = False
        lo_j, hi_j = np.where(fixed, x0, lo), np.where(fixed, x0, hi)
        bounds_j = l0_crown_bounds(rn, x0, lo_j, hi_j, k, bounds)
        enc = encode_attack_query(rn, x0, lo_j, hi_j, spec, ~refuted, "l0", bounds_j, margin, budget=k,
                                  minimize=False)
        queries += 1
        sol = solve(enc.query, replace(options, time_limit=max(0.05, _left(deadline))))
        if sol.status != INFEASIBLE:
            if sol.x is not None and sol.status in (OPTIMAL, FEASIBLE):
                x = _snap(sol.x[enc.inputs], x0, lo, hi)
                if confirm(x):
                    # every budget below k was refuted, so this size is the minimum
                    size = size_of(x, x0, "l0")
                    return ExactOutcome(x, size, float(k), size <= k, queries)
            undecided = True  # a timeout, or a boundary answer that does not confirm: no proof at this k
        if undecided:
            return ExactOutcome(incumbent, None if incumbent is None else K, float(k), False, queries,
                                f"the search at {k} changed input(s) ended without a proof")
        k += 1
    if incumbent is not None and K - 1 <= cap:
        return ExactOutcome(incumbent, K, K, True, queries)
    # no attack with at most `cap` changes exists (cap = the spec's bound or every movable input)
    return ExactOutcome(None, None, math.inf if cap >= n_movable else cap + 1, True, queries,
                        "no adversarial input exists within the bounds" if cap >= n_movable else
                        f"no adversarial input changes at most {cap:g} inputs")


def _exact_min(rn: ReluNet, x0: np.ndarray, lo: np.ndarray, hi: np.ndarray, spec: UnsafeSpec, norm: str,
               margin: float, solve: Solve, confirm: Confirm, options: SolveOptions, deadline: float,
               incumbent: np.ndarray | None, budget: float | None, box) -> ExactOutcome:
    best_x = incumbent
    best = size_of(incumbent, x0, norm) if incumbent is not None else math.inf
    open_j = np.nonzero(~refuted_targets(rn, spec, box, margin))[0]
    lowers: list[float] = []
    queries = 0
    for j in open_j:
        if _left(deadline) <= 0:
            lowers.append(0.0)
            continue
        mask = np.zeros(spec.n_conj, dtype=bool)
        mask[j] = True
        cap = min(best, budget if budget is not None else math.inf)
        enc = encode_attack_query(rn, x0, lo, hi, spec, mask, norm, box, margin,
                                  budget=cap if np.isfinite(cap) else None)
        opts = replace(options, time_limit=max(0.05, _left(deadline)))
        if best_x is not None:
            opts = replace(opts, start=attack_start(rn, enc, box, best_x, x0, norm))
        queries += 1
        sol = solve(enc.query, opts)
        if sol.status == INFEASIBLE:
            lowers.append(cap)  # nothing towards this target is smaller than the cap
            continue
        if sol.x is not None and sol.status in (OPTIMAL, FEASIBLE):
            x = _snap(sol.x[enc.inputs], x0, lo, hi)
            s = size_of(x, x0, norm)
            if s < best and confirm(x):
                best, best_x = s, x
        lowers.append(float(sol.bound) if sol.bound is not None and np.isfinite(sol.bound) else 0.0)
    lower = min(lowers + [best]) if lowers else best
    if best_x is None:
        proven = all(v >= (budget if budget is not None else math.inf) for v in lowers)
        return ExactOutcome(None, None, lower, proven, queries,
                            "no adversarial input exists within the bounds" if proven else "")
    tol = 1e-6 * (1.0 + best)
    return ExactOutcome(best_x, best, min(lower, best), lower >= best - tol, queries)
