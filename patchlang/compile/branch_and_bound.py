"""Branch and bound over ReLU phases (for networks with many inputs, where splitting the input box does not pay).

One case (input box + unsafe region, see :mod:`patchlang.compile.verify`) is decided conjunction by conjunction
of the unsafe region, each by its own tree (:mod:`.bab_tree`, where domains, bounds and splits are described):

1. the root's hidden-layer bounds are CROWN bounds tightened by optimised slopes (layer by layer); the ReLUs they
   show dead over the whole box are removed from the network (:mod:`patchlang.compile.prune`: on mnist_fc
   ε = 0.03 most are, and every later bound then multiplies much smaller matrices); optionally the root's
   bounds are first refined by MILP (:mod:`.refine_bounds`, ``BabOptions.refine``), and on deep networks the
   falsely unstable ReLUs of the later layers are proven stable by small searches of their own
   (:mod:`.stabilise`, ``BabOptions.stabilise``);
2. with a deadline, every conjunction's tree gets a turn (an equal share of the time left), the open ones are
   resumed, and on shallow networks (or refined roots) what is still open goes whole to the exact Query,
   searched by bound (an objective on the outputs, the solver's primal heuristics off);
3. on deep networks with a deadline (the staged search: first turn, stabilisation, the exact Query of each part
   still open over the stabilised bounds (:mod:`.conjunction_query`), trees again) the trees, the stability
   searches and the Queries run on every core, in worker processes (:mod:`.bab_parallel`).

Soundness: see :mod:`.bab_tree`; a conjunction is proven only when its whole tree (or its whole-conjunction
Query) refutes it, and the case holds only when every conjunction is proven.
"""

from __future__ import annotations

import math
import time
from contextlib import ExitStack
from dataclasses import dataclass, replace
from functools import partial
from typing import Callable, Generator

import numpy as np

from .alpha import crown_lower, optimised_layer_bounds
from .bab_parallel import (PartTask, Workers, even_slices, in_this_process, picklable, query_task, rest_of_time,
                           tree_task, until, worker_count)
from .bab_tree import BabOptions, TreeStats, advance, conjunction_tree
from .bounds import LayerBounds, ReluNet, backward_bounds, forward_bounds
from .conjunction_query import time_boxed, whole_conjunction_query
from .prune import prune_inactive
from .refine_bounds import RefineStats, refine_layer_bounds
from .stabilise import StabiliseStats, stabilise
from .verify import Confirm, LeafSolver, RegionCase, SearchResult

__all__ = ["BabOptions", "BabStats", "TreeStats", "relu_split_search", "root_bounds"]


@dataclass
class BabStats(TreeStats):
    milp_decided: int = 0  # conjunctions the whole-conjunction MILP decided after branch and bound stalled
    refine: RefineStats | None = None  # the root's bab-refine, when it ran
    stabilise: StabiliseStats | None = None  # the root's stabilisation (:mod:`.stabilise`), when it ran
    workers: int = 1  # processes the trees, Queries and stability searches ran in (:mod:`.bab_parallel`; 1: here)
    query_decided: int = 0  # conjunctions the exact Query proved on the stabilised bounds


def root_bounds(rn: ReluNet, lo: np.ndarray, hi: np.ndarray, steps: int = 30) -> tuple[LayerBounds, np.ndarray]:
    """The root's hidden-layer bounds: forward symbolic ∩ CROWN, then optimised slopes layer by layer."""
    fb = forward_bounds(rn, lo, hi)
    bb = backward_bounds(rn, lo, hi, fb)
    return optimised_layer_bounds(rn, lo, hi, bb, steps=steps)


def refine_pays(rn: ReluNet, opt: BabOptions) -> bool:
    """Whether the root's bounds are worth refining by MILP (:mod:`.refine_bounds`): only on networks deep
    enough that α-CROWN's bounds of the later hidden layers are loose (measured on mnist_fc, see BabOptions)."""
    return rn.n_hidden >= opt.refine_min_hidden



def first_turn_share(opt: BabOptions, left: float) -> float:
    """The share of the time ``left`` (seconds) the staged search's first turn of the trees gets:
    ``opt.stabilise_after``, but never more than ``opt.stabilise_after_max`` seconds."""
    return min(opt.stabilise_after, opt.stabilise_after_max / max(left, 1e-9))


def relu_split_search(rn: ReluNet, case: RegionCase, solve: LeafSolver, confirm: Confirm,
                      options: BabOptions | None = None, stats: BabStats | None = None) -> SearchResult:
    """Decide one case by branch and bound over ReLU phases (see the module docstring)."""
    with ExitStack() as cleanup:  # the worker processes, where the search uses them, stop on every way out
        return _search(rn, case, solve, confirm, options or BabOptions(),
                       stats if stats is not None else BabStats(), cleanup)


def _search(rn: ReluNet, case: RegionCase, solve: LeafSolver, confirm: Confirm, opt: BabOptions, stats: BabStats,
            cleanup: ExitStack) -> SearchResult:
    spec = case.spec
    lo = np.asarray(case.lo, float).reshape(1, -1)
    hi = np.asarray(case.hi, float).reshape(1, -1)
    res = SearchResult("unknown")
    t0 = time.perf_counter()
    bounds, empty = root_bounds(rn, lo, hi, opt.root_steps)
    timed = opt.deadline is not None
    refined = timed and opt.refine and opt.tighten is not None and refine_pays(rn, opt)
    if refined and not empty[0]:
        if opt.progress is not None:
            opt.progress({"method": "relu-split", "stage": "refining the root's bounds", "domains": 0, "left": 0,
                          "bound": None, "elapsed": time.perf_counter() - t0})
        stats.refine = RefineStats()
        now = time.perf_counter()
        bounds = refine_layer_bounds(rn, lo, hi, bounds, spec.A, -spec.d,
                                     now + opt.refine_share * max(0.0, opt.deadline - now),  # type: ignore[operator]
                                     opt.tighten, opt.refine_solve, stats=stats.refine)
        empty[0] = stats.refine.empty
    if empty[0]:
        res.status = "holds"
        return res
    rn, bounds = prune_inactive(rn, bounds)  # the ReLUs dead over the box: every later bound skips them
    # conjunctions ordered by their best row's root CROWN bound: the likeliest to be violated first
    crown = crown_lower(rn, rn.n_hidden, spec.A, -spec.d, lo, hi, bounds.lower, bounds.upper).lb[0]
    order = sorted(range(spec.n_conj), key=lambda j: float(np.max(crown[spec.conj == j], initial=-np.inf)))
    reasons: list[str] = []
    bounds_min = np.inf
    # with a deadline, every conjunction gets a turn: first an equal part of ``bab_share`` of the time left, then
    # the trees left open are resumed (nearest to a proof first) and, on shallow networks, what is still open goes
    # whole to the exact Query; any part left open leaves the case open, so no part may take all of the time
    use_milp = timed and opt.milp_fallback and (rn.n_hidden <= opt.milp_max_hidden or refined)
    open_trees: dict[int, tuple[Generator[str, float | None, str] | None, TreeStats]] = {}  # None: ended
    last_reason: dict[int, str] = {}

    def finish(j: int, sub: str, one: BabStats) -> None:
        nonlocal bounds_min
        stats.left += one.left
        if np.isfinite(one.final_bound):
            bounds_min = min(bounds_min, one.final_bound)
        if sub != "holds":
            reasons.append(sub)

    def share_of_left(fraction: float, parts: int) -> float:
        now = time.perf_counter()
        return now + fraction * max(0.0, opt.deadline - now) / max(1, parts)  # type: ignore[operator]

    def parts_elsewhere(task: PartTask, parts: list[int], slices: Callable[[int], float], keep_open: bool,
                        proven: list[int] | None = None) -> bool:
        """Conjunctions ``parts`` decided by ``task`` (a tree or the exact Query, :mod:`.bab_parallel`) on the
        worker processes, or in this process when there are none, each for ``slices(parts still to start)``
        seconds; ``keep_open``: the parts left open join ``open_trees`` (ended: a tree is not resumed across
        processes); the parts proven are appended to ``proven``.  True when one found a counterexample that
        confirms (``res`` filled)."""
        run = pool.parts if pool is not None else in_this_process
        for n_done, (j, verdict, decided, one, sub) in enumerate(
                run(task, rn, lo, hi, bounds, spec, parts, solve, opt, t0, slices), 1):
            stats.domains += one.domains
            res.evaluations += sub.evaluations
            res.queries += sub.queries
            res.unconfirmed += sub.unconfirmed
            res.max_depth = max(res.max_depth, sub.max_depth)
            if opt.progress is not None:
                where = f"on {pool.n} workers" if pool is not None else "here"
                opt.progress({"method": "relu-split", "stage": f"{n_done} of {len(parts)} parts searched {where}",
                              "domains": stats.domains, "left": one.left, "bound": None,
                              "elapsed": time.perf_counter() - t0})
            if decided and verdict == "violated":
                if sub.x is not None and confirm(sub.x):
                    res.status, res.x, res.conj, res.boxes = "violated", sub.x, sub.conj, 1
                    return True
                res.unconfirmed += 1
                verdict = f"unsafe part {j}: a candidate counterexample did not confirm"
            if keep_open and not decided:
                open_trees[j] = (None, one)
            else:
                finish(j, verdict, one)
            if verdict == "holds" and proven is not None:
                proven.append(j)
        return False

    def trees_on_workers(parts: list[int], share: float, evenly: bool) -> bool:
        """:func:`start_trees` on the worker processes: ``evenly``, each tree gets a worker's part of ``share``
        of the time left and those left open join ``open_trees``; otherwise every tree runs to its verdict or
        its part of all the time left."""
        assert pool is not None and opt.deadline is not None
        left = max(0.0, opt.deadline - time.perf_counter())
        slices = (even_slices(share * left / math.ceil(max(1, len(parts)) / pool.n)) if evenly
                  else rest_of_time(opt.deadline, pool.n))
        return parts_elsewhere(tree_task, parts, slices, keep_open=evenly)

    def start_trees(parts: list[int], share: float, evenly: bool = False) -> bool:
        """A tree per conjunction of ``parts``, each run for an equal part of ``share`` of the time left (of the
        time left *now* when ``evenly``: the time a part leaves unused is not passed on); those left open join
        ``open_trees``.  True when one found a counterexample (``res`` filled)."""
        searched = []
        for j in parts:
            if np.any(spec.conj == j):
                searched.append(j)
                continue
            x = (lo[0] + hi[0]) / 2
            if confirm(x):
                res.status, res.x, res.conj = "violated", x, [j]
                return True
            reasons.append("an always-unsafe conjunction whose point does not confirm")
        if pool is not None:
            return trees_on_workers(searched, share, evenly)
        each = share * max(0.0, opt.deadline - time.perf_counter()) / max(1, len(searched)) if timed else 0.0  # type: ignore[operator]
        for n_done, j in enumerate(searched):
            rows = np.nonzero(spec.conj == j)[0]
            if timed and time.perf_counter() > opt.deadline:  # type: ignore[operator]
                reasons.append("time limit reached before every part of the unsafe region was examined")
                break
            one = BabStats()
            limit = None
            if timed:
                limit = time.perf_counter() + each if evenly else share_of_left(share, len(searched) - n_done)
            gen = conjunction_tree(rn, lo, hi, bounds, spec, j, rows, solve, confirm, opt, res, one, t0, limit)
            before = one.domains
            sub = advance(gen)
            stats.domains += one.domains - before
            if sub == "violated":
                res.boxes = 1
                return True
            if sub is None:
                open_trees[j] = (gen, one)
                continue
            finish(j, sub, one)
        return False

    # on deep networks the trees first get a short turn; the parts they leave open start again from a root whose
    # falsely unstable ReLUs were proven stable (:mod:`.stabilise`), which pays only where the search is hard
    staged = timed and opt.stabilise and rn.n_hidden >= opt.stabilise_min_hidden
    # the staged search (no MILP fallback: it resumes trees) runs its trees and stability searches on every core
    n_workers = worker_count(opt.workers) if staged and not use_milp else 1
    pool: Workers | None = None
    if n_workers > 1 and picklable(solve):
        # every part's root first, here: an instance decided there never pays for starting workers (0.5 s)
        if start_trees(order, 0.0, evenly=True):
            return res
        order = [j for j in order if j in open_trees]
        for gen, _ in open_trees.values():
            advance(gen, None)  # type: ignore[arg-type]  # ends the tree
        open_trees.clear()
        if order:
            pool = cleanup.enter_context(Workers(n_workers, opt.deadline))  # type: ignore[arg-type]
    stats.workers = pool.n if pool is not None else 1
    first_share = (first_turn_share(opt, opt.deadline - time.perf_counter()) if staged  # type: ignore[operator]
                   else opt.milp_bab_share if use_milp else opt.bab_share)
    if start_trees(order, first_share, evenly=staged):
        return res
    if staged and open_trees:
        for gen, _ in open_trees.values():
            if gen is not None:
                advance(gen, None)  # ends the tree
        if opt.progress is not None:
            opt.progress({"method": "relu-split", "stage": "proving hidden ReLUs stable", "domains": stats.domains,
                          "left": 0, "bound": None, "elapsed": time.perf_counter() - t0})
        stats.stabilise = StabiliseStats()
        now = time.perf_counter()
        bounds = stabilise(rn, lo, hi, bounds, time_boxed(solve, opt.stabilise_neuron),
                           replace(opt, max_domains=opt.stabilise_domains),
                           now + opt.stabilise_share * max(0.0, opt.deadline - now),  # type: ignore[operator]
                           per_neuron=opt.stabilise_neuron, stats=stats.stabilise, halve=opt.stabilise_halve,
                           map_tasks=partial(pool.map, lost=(None, 0, None)) if pool is not None else None,
                           query_follows=opt.stabilised_query)
        rn, bounds = prune_inactive(rn, bounds)
        again = sorted(open_trees, key=lambda j: -open_trees[j][1].final_bound)
        open_trees.clear()
        if opt.stabilised_query and again:  # the exact Query first: on stabilised bounds it decides in seconds
            now = time.perf_counter()
            stage_end = now + opt.stabilised_query_share * max(0.0, opt.deadline - now)  # type: ignore[operator]
            if opt.progress is not None:
                opt.progress({"method": "relu-split", "stage": f"exact Query on {len(again)} parts",
                              "domains": stats.domains, "left": 0, "bound": None, "elapsed": now - t0})
            proven: list[int] = []
            if parts_elsewhere(query_task, again, until(stage_end), keep_open=True, proven=proven):
                return res
            stats.query_decided += len(proven)  # (a point that did not confirm ends its part too, unproven)
            again = [j for j in again if j in open_trees]
            open_trees.clear()
        if start_trees(again, opt.milp_bab_share if use_milp else opt.bab_share):
            return res
    queue = sorted(open_trees, key=lambda j: -open_trees[j][1].final_bound)
    for n_done, j in enumerate(queue):  # resume the open trees
        gen, one = open_trees[j]
        before = one.domains
        sub = advance(gen, share_of_left(opt.resume_share if use_milp else 1.0, len(queue) - n_done))
        stats.domains += one.domains - before
        if sub == "violated":
            res.boxes = 1
            return res
        if sub is not None:
            del open_trees[j]
            finish(j, sub, one)
    queue = sorted(open_trees, key=lambda j: -open_trees[j][1].final_bound)
    for n_done, j in enumerate(queue):
        gen, one = open_trees.pop(j)
        last_reason[j] = advance(gen, None) or "time limit reached"  # ends the tree
        now = time.perf_counter()
        if not use_milp or now > opt.deadline:  # type: ignore[operator]
            finish(j, last_reason[j], one)
            continue
        if opt.progress is not None:
            opt.progress({"method": "relu-split", "stage": f"MILP on unsafe part {j}", "domains": stats.domains,
                          "left": one.left, "bound": None, "elapsed": now - t0})
        seconds = (opt.deadline - now) / (len(queue) - n_done)  # type: ignore[operator]
        sub_res = whole_conjunction_query(rn, lo, hi, bounds, spec, j, time_boxed(solve, seconds, bound_only=True),
                                          confirm, opt, res)
        if sub_res == "violated":
            res.boxes = 1
            return res
        if sub_res == "holds":  # its open domains are all refuted: 0.0, as when every open domain went to a leaf
            stats.milp_decided += 1
            bounds_min = min(bounds_min, 0.0)
        else:
            finish(j, sub_res, one)
    stats.final_bound = float(bounds_min)
    res.status, res.reason = ("unknown", reasons[0]) if reasons else ("holds", "")
    res.boxes = 1  # the input box is not split (the domains are counted in stats)
    return res
