"""Prove hidden ReLUs stable by branch and bound before the real search ("stabilise"): tighter intermediate
bounds where α-CROWN's stay loose.

Why: on deep networks with many inputs the α-CROWN bounds of the later hidden layers are far from the neurons'
true ranges. On mnist_fc 256x4 prop_9_0.03 the root has 43, 79, 35 and 192 unstable ReLUs per hidden layer, yet
projected gradient steps make only 1 of the 35 and 1 of the 192 cross zero: most of them are stable and only the
bounds say otherwise. Every falsely unstable ReLU is a loose triangle in every bound and a candidate split in the
search, whose tree then grows with their number. α-CROWN cannot tighten them (its optimised slopes already reach
the triangle LP's bound) and a MILP per neuron costs seconds once a hundred earlier ReLUs are binaries.

How (:func:`stabilise`): for hidden layers ``1 .. H-1`` in order, each unstable neuron ``z_k[i]`` is a small
verification problem over the network cut after layer ``k``: "``z_k[i] >= 0`` somewhere in the box" (or ``<= 0``,
for the side its bounds are nearer to) is refuted by the same ReLU-split branch and bound
(:func:`.bab_tree.conjunction_tree`), each search bounded in time and (``opt.max_domains``) in domains, nearest to
stable first. A point the search meets on the wrong side ends that neuron at once (it is truly unstable). The
neurons left unstable then get their bounds halved where a search proves "``z_k[i] <= u/2``" (or "``>= l/2``"): a
truly unstable ReLU often has one side far looser than its true range, and its triangle is what the bound loses (on
prop_9_0.03 the halving took the parts' root bounds from about -2 to -0.06 .. -0.5; stabilising alone from -3.3 to
-2); a side halved is tried again, up to ``halve`` times. (Retrying the stability searches that ran out of time
with 4x as long gained 4 of 50 on prop_3_0.03 and took the time the trees needed: measured, left out.) A search
that runs out of its domains still proves something: its tree's smallest open bound is a lower bound of
``sign * (z_k[i] - t)`` over the whole box, so the neuron's bound moves to ``t + sign * (that bound)``
(``StabiliseStats.narrowed``). Measured on mnist_fc 256x4 prop_8_0.05 (120 s, two workers): the last hidden
layer's 77 searches that ran out of domains had been thrown away; taken in, its unstable ReLUs after
stabilisation fell from 97 to 24-29, the exact Queries of the nine parts from 14-44 s each to 1 s for all nine,
and the instance holds in 78-107 s (open at 120 s before, 144 s at 300 s). After each
layer the later layers are bounded again by α-CROWN from the tightened bounds, which usually stabilises many more.
The time left is shared by the layers in proportion to their unstable ReLUs. One layer's searches are independent
of each other (:func:`prove_side`, one per neuron and side): ``map_tasks`` may run them on worker processes
(:mod:`.bab_parallel`); the bounds they prove are taken in by the caller.

Soundness: a refuted conjunction means ``z_k[i] < t - tol`` (or ``> t + tol``) on the whole box for its
threshold ``t`` (0, ``u/2`` or ``l/2``), by the search's sound bounds, so setting ``u = t`` (or ``l = t``) keeps
the bounds sound; a paused tree's smallest open bound covers every domain not yet refuted, leaves its Query left
undecided included (:class:`.bab_tree.TreeStats`); a bound only ever moves inwards.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field, replace
from functools import partial
from typing import Any, Callable

import numpy as np

from .alpha import optimised_layer_bounds
from .bab_tree import BabOptions, run_tree
from .bounds import LayerBounds, ReluNet
from .refine_bounds import truncated, unstable_counts
from .verify import LeafSolver, UnsafeSpec

# ``map``'s contract (results in the tasks' order), for running the searches of a layer in worker processes
MapTasks = Callable[[Callable[[Any], Any], list[Any]], list[Any]]


@dataclass
class StabiliseStats:
    unstable_before: list[int] = field(default_factory=list)  # per hidden layer
    unstable_after: list[int] = field(default_factory=list)
    tried: list[int] = field(default_factory=list)  # per hidden layer, neurons given a search
    stabilised: list[int] = field(default_factory=list)  # per hidden layer, neurons the searches proved stable
    # (more follow from bounding the later layers again)
    halved: list[int] = field(default_factory=list)  # per hidden layer, bounds of unstable ReLUs halved
    narrowed: list[int] = field(default_factory=list)  # per hidden layer, bounds moved by searches left open
    domains: int = 0
    seconds: float = 0.0


def stabilise(rn: ReluNet, lo: np.ndarray, hi: np.ndarray, bounds: LayerBounds, solve: LeafSolver,
              opt: BabOptions, deadline: float, per_neuron: float = 0.25, steps: int = 20,
              stats: StabiliseStats | None = None, halve: int = 1, map_tasks: MapTasks | None = None,
              query_follows: bool = False) -> LayerBounds:
    """``bounds`` (one box ``lo``/``hi`` of shape ``(1, d)``) with as many unstable ReLUs of layers ``1 ..``
    proven stable as fit before ``deadline`` (perf_counter), ``per_neuron`` seconds each at most; see the module
    docstring. Never looser than ``bounds``.  For a caller whose exact Query follows (its binaries split the last
    hidden layer's ReLUs exactly, so there only the big-M bounds matter), ``query_follows``: no halving in the
    last hidden layer, and ``opt.stabilise_last_domains`` per search there (``opt.max_domains`` elsewhere),
    whose open searches still narrow the bounds.  Measured on mnist_fc 256x4 (two workers, the
    pickled state after the first turn): without the halving prop_6_0.05's stabilisation took 73 s instead of
    117 s and its nine Queries 63 s instead of 77 s, prop_8_0.05's 59 s instead of 67 s (Queries 1.1 s as
    before); then 500 domains instead of 4500 in the last layer: prop_6_0.05's stabilisation 25 s instead of
    62 s (82 unstable ReLUs left there instead of 78, 75 bounds narrowed), its Queries 56 s instead of 66 s;
    prop_8_0.05's 32 s instead of 42 s (34 left instead of 24), Queries 1.1 s.  With 200 domains prop_6_0.05's
    Queries took 80 s; with no searches at all in the last layer (88 unstable there, none narrowed) two of its
    nine Queries were open after 78 s."""
    stats = stats if stats is not None else StabiliseStats()
    map_tasks = map_tasks or _in_order
    t0 = time.perf_counter()
    cur = LayerBounds([l.copy() for l in bounds.lower], [u.copy() for u in bounds.upper])
    stats.unstable_before = unstable_counts(cur)
    H = rn.n_hidden
    stats.tried = [0] * H
    stats.stabilised = [0] * H
    stats.halved = [0] * H
    stats.narrowed = [0] * H
    for k in range(1, H):
        l, u = cur.lower[k][0], cur.upper[k][0]
        unstable = np.nonzero((l < 0) & (u > 0))[0]
        # the side nearer to zero, nearest first: the likeliest to be proven in a short search
        inactive_side = u[unstable] <= -l[unstable]
        gap = np.where(inactive_side, u[unstable], -l[unstable]) / (u[unstable] - l[unstable])
        order = np.argsort(gap, kind="stable")
        cut = truncated(rn, k)
        root = LayerBounds(cur.lower[:k], cur.upper[:k])
        # the time left shared by the layers still to do in proportion to their unstable ReLUs now
        counts = unstable_counts(cur)[k:]
        layer_end = time.perf_counter() + (deadline - time.perf_counter()) * counts[0] / max(1, sum(counts))
        changed = False

        stripped = replace(opt, progress=None, tighten=None)
        last_before_query = query_follows and k + 1 == H
        if last_before_query:
            stripped = replace(stripped, max_domains=opt.stabilise_last_domains)
        search = partial(prove_side, cut, lo, hi, root, stripped, solve, per_neuron, layer_end)

        def run(tasks: list[tuple[int, float, float]]) -> list[str | None]:
            """The searches' verdicts (in order), each bound they prove taken into ``cur``."""
            nonlocal changed
            out = []
            for (i, sign, _), (verdict, domains, reached) in zip(tasks, map_tasks(search, tasks)):
                stats.domains += domains
                moved = False
                if reached is not None:
                    if sign < 0 and reached < cur.upper[k][0, i]:
                        cur.upper[k][0, i] = reached
                        moved = True
                    elif sign > 0 and reached > cur.lower[k][0, i]:
                        cur.lower[k][0, i] = reached
                        moved = True
                changed |= moved
                stats.narrowed[k] += moved and verdict == "open"
                out.append(verdict)
            return out

        # stability: z >= 0 refuted means inactive on the box (u = 0), z <= 0 refuted active (l = 0)
        tasks = [(int(unstable[o]), -1.0 if inactive_side[o] else 1.0, 0.0) for o in order]
        verdicts = run(tasks)
        stats.tried[k] += sum(v is not None for v in verdicts)
        stats.stabilised[k] += sum(v == "holds" for v in verdicts)
        # the ReLUs left unstable: a tighter triangle where half the range is out of reach; a side halved is
        # tried again in the next round
        todo = [(int(i), sign) for i in np.nonzero((cur.lower[k][0] < 0) & (cur.upper[k][0] > 0))[0]
                for sign in (-1.0, 1.0)]
        for _ in range(0 if last_before_query else halve):
            tasks = [(i, sign, (cur.upper[k][0, i] if sign < 0 else cur.lower[k][0, i]) / 2) for i, sign in todo]
            verdicts = run(tasks)
            stats.halved[k] += sum(v == "holds" for v in verdicts)
            todo = [(i, sign) for (i, sign, _), v in zip(tasks, verdicts) if v == "holds"]
            if not todo or None in verdicts:
                break
        if changed and k + 1 < H:
            cur, empty = optimised_layer_bounds(rn, lo, hi, cur, steps=steps, from_layer=k + 1)
            if empty[0]:
                break
    stats.unstable_after = unstable_counts(cur)
    stats.seconds = time.perf_counter() - t0
    return cur


def _in_order(fn: Callable[[Any], Any], tasks: list[Any]) -> list[Any]:
    return [fn(t) for t in tasks]


def prove_side(cut: ReluNet, lo: np.ndarray, hi: np.ndarray, root: LayerBounds, opt: BabOptions, solve: LeafSolver,
               seconds: float, layer_end: float, task: tuple[int, float, float]
               ) -> tuple[str | None, int, float | None]:
    """Try to prove ``sign * z[i] > sign * at`` on the whole box for the output ``z`` of the ``cut`` network
    (refute ``sign * z[i] <= sign * at``), ``task = (i, sign, at)``, within ``seconds`` and before
    ``layer_end``: ``("holds" | "violated" (a point on the wrong side: no such bound) | "open" (out of time),
    domains bounded, the bound proven)``, or ``(None, 0, None)`` when ``layer_end`` has passed.  The bound
    proven is ``at`` when the search holds (an upper bound of ``z[i]`` for ``sign < 0``, a lower one for
    ``sign > 0``); an open search proves the weaker bound its tree's smallest open bound gives, ``at + sign *
    (that bound)`` (see the module docstring); None when it proves nothing.  Module-level, for worker
    processes."""
    i, sign, at = task
    now = time.perf_counter()
    if now >= layer_end:
        return None, 0, None
    n_k = cut.Ws[-1].shape[0]
    row = np.zeros((1, n_k))
    row[0, i] = sign
    spec = UnsafeSpec(row, np.array([sign * at]), np.zeros(1, np.int64), np.zeros(1, bool), 1)
    limit = min(now + seconds, layer_end)
    verdict, decided, one, _ = run_tree(cut, lo, hi, root, spec, 0, solve, lambda x: True,
                                        replace(opt, deadline=limit), now, limit)
    if decided:
        return verdict, one.domains, (at if verdict == "holds" else None)
    # paused: sign * z[i] - sign * at >= final_bound on the whole box (bab_tree.TreeStats)
    reached = at + sign * one.final_bound if np.isfinite(one.final_bound) else None
    return "open", one.domains, reached
