"""One conjunction's branch and bound over ReLU phases (:func:`conjunction_tree`), and its options.

A *domain* is the input box with some ReLUs' phases fixed (expressed by clamping their pre-activation bounds:
``l >= 0`` active, ``u <= 0`` inactive, see :mod:`patchlang.compile.alpha`).  Its own module because two
searches run such trees: the verifier's (:mod:`.branch_and_bound`, one per conjunction of the unsafe region) and
the stabilisation of hidden ReLUs before it (:mod:`.stabilise`, one per neuron).

1. each domain gets a sound lower bound of every row ``a·y - d`` of the conjunction by back-substitution with
   optimised slopes, warm-started from its parent's; a row whose bound exceeds the tolerance refutes the
   conjunction on the domain (no input of the domain is unsafe);
2. domains are processed best-first: a batch of the domains with the smallest bound, each split on the unstable
   ReLU whose relaxation loses most in the bound (a BaBSR-like score: intercepts of the upper relaxation met by
   negative coefficients, gaps of the lower one met by positive ones); the children's later-layer bounds are
   recomputed from the clamped bounds and intersected with the parent's, so a split phase is enforced in every
   later layer, and a child whose bounds contradict (``l > u``) is empty;
3. domains left with few unstable ReLUs go to the exact Query (MILP, the split phases become variable bounds);
4. the corner minimising each linear bound is evaluated as a counterexample candidate (confirmed by the caller).

Soundness: the two children of a split cover their parent; every bound is pushed outward by ``1e-9 (1+|b|)``
before a comparison, and rows are enlarged by the verifier's tolerance as in the input-split search.
"""

from __future__ import annotations

import inspect
import time
from dataclasses import dataclass
from typing import Any, Callable, Generator

import numpy as np

from .alpha import crown_lower, optimise, optimised_layer_bounds, outward
from .bounds import LayerBounds, ReluNet, relu_relaxation
from .verify import DEFAULT_TOL, Confirm, LeafSolver, SearchResult, _leaf

Progress = Callable[[dict[str, Any]], None]


@dataclass
class BabOptions:
    tol: float = DEFAULT_TOL
    batch: int = 64  # parent domains split per step (2x as many children bounded at once; 256 or 1024 bound fewer
    # domains per CPU second on mnist_fc 256x4 prop_3_0.03, measured after pruning)
    root_steps: int = 30  # slope optimisation steps for the root's hidden-layer bounds and spec bound
    steps: int = 8  # slope steps per batch of children (warm-started from the parents; a child refuted earlier
    # leaves the batch). Re-measured on 256x4 prop_5_0.03 after pruning: 8 steps prove it with 72.2k domains in
    # 14.3 CPU s; 6 steps 99.7k in 14.4 s; 12 steps 89.2k in 22.8 s; 4 steps take 2x as long on prop_0_0.03
    # the children's Adam step sizes: their slopes start from the parent's optimum, so small steps keep it (the root
    # uses alpha.optimise's 0.1). Measured (domains to a proof, mnist_fc, old 0.1/0.05 -> 0.03/0.1): 256x4
    # prop_5_0.03 72.2k -> 26.1k, prop_0_0.03 12.8k -> 10.9k, 256x2 prop_3_0.03 49.6k -> 44.6k; 0.01/0.1 is close,
    # a multiplier step of 0.2 or 0.3 worse
    lr_alpha: float = 0.03
    lr_beta: float = 0.1
    milp_unstable: int = 12  # domains with at most this many unstable ReLUs go to the exact Query
    max_pool: int = 100_000  # more open domains than this: depth first (smallest pool growth) instead
    deadline: float | None = None  # time.perf_counter() value
    progress: Progress | None = None
    progress_every: float = 1.0  # seconds between progress calls
    candidates: int = 1  # split candidates per domain tried by one cheap bound each (1: the score alone; measured
    # on mnist_fc: 4 candidates cost more time than their better choices save; re-checked after pruning on 256x4
    # prop_0_0.03: 1: 12.8k domains 4.9 CPU s, 2: 10.6k 4.8 s, 3: 11.9k, 4: 12.6k 6.8 s)
    # stabilisation (:mod:`.stabilise`): on networks with at least ``stabilise_min_hidden`` hidden layers and a
    # deadline, the trees first get ``stabilise_after`` of the time; the parts they leave open start again after
    # the falsely unstable ReLUs of layers 1.. were proven stable and the others' bounds halved where a search
    # proves it (``stabilise_neuron`` seconds per search at most, within ``stabilise_share`` of the time left:
    # a stabilised tree decides in seconds what an unstabilised one leaves open, so most of the time goes there).
    # Measured on mnist_fc 256x4 prop_9_0.03 (120 s, two jobs on the two cores): unstable ReLUs [43, 79, 35, 192]
    # -> [43, 47, 9, 35] in 51 s and the case holds in 104 s (open after 300 s without; stabilising alone, without
    # halving, took the parts' root bounds from about -3.3 to -2, with halving to -0.06 .. -0.5).  Re-bounding
    # the later layers of shallow children in the tree instead (depth < 8 or 12) moved the bound from -1.9 to
    # -1.7 only.  The decided 256x4 instances never reach it (prop_0_0.03 8.0 s, prop_5_0.03 10.6 s with it on).
    stabilise: bool = True
    stabilise_after: float = 0.15
    stabilise_after_max: float = 10.0  # seconds: the first turn is for the instances easy without stabilisation
    # (mnist_fc 256x4 prop_0_0.03 and prop_5_0.03 hold in 7.1 and 8.2 s with 10 s as with 20 s); a longer one
    # only delays the hard ones' stabilisation (prop_6_0.05's Queries started at 48 s with 20 s, 43 s with 10 s)
    stabilise_share: float = 0.85  # prop_4_0.05 with 120 s: open with 0.7 (cut short in the last layer), holds
    # in 106 s with 0.85; where the stabilisation ends early (prop_9_0.03 in ~65 s) the share does not matter
    stabilise_neuron: float = 2.0  # seconds per search at most (a cap: ``stabilise_domains`` normally ends it)
    stabilise_domains: int | None = 4500  # and at most this many domains per search, which makes the searches'
    # verdicts independent of the machine's load.  Measured on mnist_fc 256x4 with two workers, 120 s: with
    # 0.5 s per search alone prop_4_0.05 held in 66 s twice and stayed open in a third run (fewer bounds halved
    # in the last layer); with 3000 domains it stays open (20 halved there, 33 with 4500); 4500: prop_4_0.05 and
    # prop_9_0.03 hold in 86 s (stabilisation 61 s each); 6000: 86 s and 98 s
    stabilise_last_domains: int = 500  # per search in the last hidden layer when the exact Query follows
    # (:func:`.stabilise.stabilise`'s ``query_follows``: its binaries split those ReLUs; the open searches'
    # narrowing is what helps it)
    stabilise_halve: int = 3  # rounds of halving (prop_4_0.05 holds in 183 s with 3, open after 300 s with 1)
    stabilise_min_hidden: int = 3
    # after stabilisation the parts still open go first to the exact Query (:mod:`.conjunction_query`, a MILP
    # searched by bound) within ``stabilised_query_share`` of the time left, the likeliest proofs first, each
    # until it is decided or that share ends (a case holds only when every part does: a Query cut short to start
    # the next gains nothing; at 300 s prop_6_0.05's part 2 needs 37 s and an equal slice of 25 s left it open);
    # the trees get what is left.  Measured on mnist_fc 256x4 (one part at a time, HiGHS): prop_3_0.03's nine
    # parts hold in 1.0-8.1 s each, prop_8_0.05's in 6.5-8.9 s (both open after 120 s of trees), prop_4_0.05's
    # and prop_9_0.03's in 0.1-2.0 s (about 20 s of trees)
    stabilised_query: bool = True
    stabilised_query_share: float = 0.95  # with 0.8 prop_6_0.05's last two Queries were cut short at 120 s (its
    # nine take 56 s on two cores); the trees after them rarely decide what a Query left open
    workers: int = 0  # worker processes for the staged search's trees and stability searches (:mod:`.bab_parallel`;
    # 0: every core this process may use, 1: none, all in this process)
    max_domains: int | None = None  # a tree pauses (like at its time limit) once it has bounded this many domains
    intermediate: bool = False  # recompute later layers' bounds (CROWN) after each split (costly with many rows)
    # with a deadline, every conjunction gets a turn (one left open leaves the case open): first its tree gets an
    # equal part of ``bab_share`` (``milp_bab_share`` when the MILP fallback follows) of the time left; open trees
    # are then resumed with ``resume_share`` of what is left (all of it without the MILP fallback), and on
    # networks with at most ``milp_max_hidden`` hidden layers what is still open goes whole to the exact Query
    # over the root's bounds (one binary per unstable ReLU, searched by bound: HiGHS decides mnist_fc 256x2 parts
    # a stalled tree does not; on 256x4 it times out, measured).  mnist_fc 256x2 prop_1_0.03 (5 parts left to
    # the MILP, 8-12 s each): open with 0.5/0.5, holds in 95 s with 0.5/0 and in 82 s with 0.25/0 (measured)
    bab_share: float = 0.5
    milp_bab_share: float = 0.25
    resume_share: float = 0.0
    milp_fallback: bool = True
    milp_max_hidden: int = 2
    # bab-refine (:mod:`.refine_bounds`): before the search, the unstable neurons of hidden layers 1 .. H-1 get
    # MILP bounds over the layers before them (HiGHS dual bounds, ``refine_solve`` seconds per bound), within
    # ``refine_share`` of the time left; only with a deadline and on networks with at least ``refine_min_hidden``
    # hidden layers (see :func:`refine_pays`); refined roots may also go to the whole-conjunction MILP fallback.
    # Off by default: within mnist_fc's 120 s it decides nothing more (measured, single-threaded HiGHS): on 256x4
    # prop_3_0.03 30 s of refinement (1 s per bound) leaves 70 of 71 layer-1 ReLUs unstable and moves the root
    # bounds by 15%; it does make each part's MILP faster (two parts: 23.5 s and 25.8 s instead of > 40 s and
    # 37.1 s), but 9 parts at ~25 s do not fit; on 256x2 the MILP fallback alone decides prop_1_0.03
    refine: bool = False
    tighten: Callable[..., Any] | None = None  # the backend's bound tightening (refine_bounds.Tighten), which
    # ``refine`` needs: compile imports no solver, the verifier passes HiGHS's
    refine_share: float = 0.3
    refine_solve: float = 1.0
    refine_min_hidden: int = 3
    fast: bool = False  # slope/multiplier iterates in float32, each domain's bound then evaluated in float64
    # (off: on mnist_fc 256x4 prop_5_0.03 the float32 choices loosen the bounds, 114.7k domains left it open in
    # 100 CPU s where float64 proves it with 72.2k; on 256x2 it bounds 28% more domains per CPU second; re-checked
    # on 256x4 prop_0_0.03: float64 proves it with 12.8k domains, float32 leaves it open after 41k: the proofs'
    # margins are ~1e-6, below float32's resolution of these sums)



_LISTS = ("lower", "upper", "alpha", "phase", "beta")  # one array per hidden layer
_ARRAYS = ("lb", "score", "depth", "split")


class _Pool:
    """The open domains, one row each, in arrays with spare capacity: removing a batch (its places are filled
    from the end) and appending children cost O(batch), not O(pool) -- copying a pool of 10,000 domains on every
    step took a sixth of the search's time (measured on mnist_fc 256x2).

    Fields (views of the first ``size`` rows): ``lower``/``upper`` per-layer bounds ``(N, n_k)``; ``alpha``
    float32 warm starts ``(N, K, n_k)``; ``phase`` int8 ``(N, n_k)`` (-1 split active, +1 split inactive, 0 not
    split); ``beta`` float32 split multipliers ``(N, K, n_k)``; ``lb`` ``(N, K)`` the domain's row bounds (a
    child inherits them: its domain is a subset); ``score`` ``(N,)`` max over rows of ``lb - threshold`` (> 0
    would be refuted); ``depth``; ``split`` ``(N, 2)`` the (layer, neuron) chosen for the next split.
    """

    def __init__(self, **fields: Any) -> None:
        self._buf: dict[str, Any] = fields
        self.size = int(np.asarray(fields["score"]).shape[0])

    def __getattr__(self, name: str) -> Any:
        if name.startswith("_") or name not in _LISTS + _ARRAYS:
            raise AttributeError(name)
        v = self._buf[name]
        return [a[:self.size] for a in v] if name in _LISTS else v[:self.size]

    def _apply(self, f: Callable[[np.ndarray], Any]) -> dict[str, Any]:
        return {k: [f(a) for a in v] if k in _LISTS else f(v) for k, v in self._buf.items()}

    def take(self, idx: np.ndarray) -> "_Pool":
        """A new pool of the domains ``idx`` (copies)."""
        return _Pool(**{k: [a[idx] for a in v] if k in _LISTS else v[idx] for k, v in self._buf.items()})

    def remove(self, idx: np.ndarray) -> None:
        """Drop the domains ``idx`` (distinct); the last surviving domains move into their places."""
        n, p = self.size, idx.size
        holes = np.sort(idx[idx < n - p])
        tail = np.arange(n - p, n)
        movers = tail[~np.isin(tail, idx)]
        if holes.size:
            def move(a: np.ndarray) -> None:
                a[holes] = a[movers]
            self._apply(move)
        self.size = n - p

    def extend(self, other: "_Pool") -> None:
        """Append ``other``'s domains (the buffers grow by doubling)."""
        n, m = self.size, other.size
        cap = np.asarray(self._buf["score"]).shape[0]
        if n + m > cap:
            new_cap = max(2 * cap, n + m, 64)
            self._buf = self._apply(lambda a: np.concatenate([a[:n], np.empty((new_cap - n,) + a.shape[1:], a.dtype)]))
        for k, v in other._buf.items():
            if k in _LISTS:
                for a, b in zip(self._buf[k], v):
                    a[n:n + m] = b[:m]
            else:
                self._buf[k][n:n + m] = v[:m]
        self.size = n + m



@dataclass
class TreeStats:
    domains: int = 0  # domains bounded
    final_bound: float = float("nan")  # the smallest open bound at the end (>= 0: proven); at a pause, a lower
    # bound of the conjunction's rows minus their thresholds over the whole box (the stability searches use it)
    left: int = 0


def _branch_scores(r, lower: list[np.ndarray], upper: list[np.ndarray], alpha: list[np.ndarray]) -> np.ndarray:
    """Per domain and (flattened) hidden neuron, how much its relaxation costs the bound; 0 for stable ones."""
    out = []
    for k, (l, u) in enumerate(zip(lower, upper)):
        _, s, t = relu_relaxation(l, u)
        unstable = (l < 0) & (u > 0)
        a = np.clip(alpha[k], 0.0, 1.0)
        gap_lo = np.maximum((1.0 - a) * u[:, None, :], a * (-l)[:, None, :])
        sc = (-r.neg[k] * t[:, None, :]).sum(axis=1) + 0.5 * (r.pos[k] * gap_lo).sum(axis=1)
        out.append(np.where(unstable, sc + 1e-9, 0.0))
    return np.concatenate(out, axis=1)


def _choose_splits(rn: ReluNet, A: np.ndarray, a0: np.ndarray, lo: np.ndarray, hi: np.ndarray,
                   lower: list[np.ndarray], upper: list[np.ndarray], alpha: list[np.ndarray],
                   phase: list[np.ndarray], beta: list[np.ndarray], scores: np.ndarray, offsets: np.ndarray,
                   candidates: int) -> np.ndarray:
    """The neuron (flattened index) to split per domain: among the ``candidates`` best by score, the one whose
    worse child gets the best bound (one back-substitution per child with the parent's slopes and multipliers:
    a cheap form of filtered smart branching)."""
    M = scores.shape[0]
    k = min(candidates, scores.shape[1])
    if k <= 1 or M == 0:
        return np.argmax(scores, axis=1)
    top = np.argsort(-scores, axis=1)[:, :k]  # (M, k)
    rep = np.repeat(np.arange(M), 2 * k)
    flat = np.repeat(top.reshape(-1), 2)
    side = np.tile([0, 1], M * k)  # 0 inactive, 1 active
    layer = np.searchsorted(offsets, flat, side="right") - 1
    neuron = flat - offsets[layer]
    L = [l[rep].copy() for l in lower]
    U = [u[rep].copy() for u in upper]
    P = [p[rep].astype(float) for p in phase]
    ci = np.arange(rep.size)
    for h in range(len(L)):
        sel = layer == h
        ina, act = sel & (side == 0), sel & (side == 1)
        U[h][ci[ina], neuron[ina]] = np.minimum(U[h][ci[ina], neuron[ina]], 0.0)
        L[h][ci[act], neuron[act]] = np.maximum(L[h][ci[act], neuron[act]], 0.0)
        P[h][ci[ina], neuron[ina]] = 1.0
        P[h][ci[act], neuron[act]] = -1.0
    lob = np.repeat(lo, rep.size, axis=0)
    hib = np.repeat(hi, rep.size, axis=0)
    r = crown_lower(rn, len(L), A, a0, lob, hib, L, U, [a[rep] for a in alpha], phase=P,
                    beta=[b[rep].astype(float) for b in beta])
    child = r.lb.max(axis=1).reshape(M, k, 2).min(axis=2)
    top_scores = scores[np.arange(M)[:, None], top]
    child = np.where(top_scores > 0, child, -np.inf)  # only unstable neurons (score > 0): a split must progress
    choice = np.argmax(child + 1e-9 * top_scores, axis=1)
    return top[np.arange(M), choice]


def absorb_leaf(res: SearchResult, sub: SearchResult) -> bool:
    """Count a leaf Query's work into ``res``, and take its counterexample: True when the leaf found one."""
    res.queries += sub.queries
    res.unconfirmed += sub.unconfirmed
    if sub.status == "violated":
        res.status, res.x, res.conj = "violated", sub.x, sub.conj
        return True
    return False


def conjunction_tree(rn: ReluNet, lo: np.ndarray, hi: np.ndarray, root: LayerBounds, spec, j: int,
                     rows: np.ndarray, solve: LeafSolver, confirm: Confirm, opt: BabOptions, res: SearchResult,
                     stats: TreeStats, t0: float, limit: float | None = None) -> Generator[str, float | None, str]:
    """Branch and bound for conjunction ``j``, a generator: it returns "holds", "violated" (``res`` filled) or
    the reason it is open, and *yields* that reason when it passes ``limit`` (a perf_counter value; leaves still
    run to ``opt.deadline``): ``send`` a later limit to continue the same tree, or ``None`` to end it (see
    :func:`.branch_and_bound._advance`)."""
    A = spec.A[rows]
    a0 = -spec.d[rows]
    thr = opt.tol * (1.0 + np.abs(spec.d[rows]))  # (K,)
    K = rows.size
    H = rn.n_hidden
    sizes = [W.shape[0] for W in rn.Ws[:-1]]
    offsets = np.concatenate([[0], np.cumsum(sizes)])
    conj_open = np.zeros(spec.n_conj, bool)
    conj_open[j] = True

    def bound(lower, upper, alpha, steps, lo_b, hi_b, phase=None, beta=None, parent_lb=None):
        rates = {} if phase is None else {"lr": opt.lr_alpha, "lr_beta": opt.lr_beta}  # children (warm-started)
        r, best, best_alpha, best_beta = optimise(rn, H, A, a0, lo_b, hi_b, lower, upper, alpha, steps=steps,
                                                  stop_above=thr, phase=phase, beta=beta, fast=opt.fast, **rates)
        lb = outward(best)
        if parent_lb is not None:  # the parent's bound holds on the child's (smaller) domain too
            lb = np.maximum(lb, parent_lb)
        return r, lb, best_alpha, best_beta

    def candidates(r, lo_b) -> bool:
        X = r.x_star.reshape(-1, lo_b.shape[1])
        y = rn.forward(X)
        res.evaluations += X.shape[0]
        hits = np.nonzero(spec.violated(y))[0]
        for i in hits[:4]:
            if confirm(X[i]):
                res.status, res.x, res.conj = "violated", X[i], spec.which(y[i:i + 1])
                return True
            res.unconfirmed += 1
        return False

    proven = [np.inf]  # the smallest bound (minus threshold) of the domains refuted by bounds
    unsettled = [np.inf]  # the smallest bound (minus threshold) of the leaves the Query left undecided

    r, lb, alpha, _ = bound(root.lower, root.upper, None, opt.root_steps, lo, hi)
    stats.domains += 1
    if np.any(lb > thr):
        stats.final_bound = float((lb - thr).max())
        return "holds"
    if candidates(r, lo):
        return "violated"
    pool: _Pool | None = None
    undecided: list[str] = []

    def admit(lower, upper, alpha, phase, beta, r, lb, depth) -> str:
        """Refuted domains vanish, small ones go to the Query, the rest join the pool."""
        nonlocal pool
        keep = ~np.any(lb > thr, axis=1)
        if not np.all(keep):
            proven[0] = min(proven[0], float((lb - thr).max(axis=1)[~keep].min()))
        n_unst = sum(((l < 0) & (u > 0)).sum(axis=1) for l, u in zip(lower, upper))
        leaf = keep & (n_unst <= opt.milp_unstable)
        for i in np.nonzero(leaf)[0]:
            if opt.deadline is not None and time.perf_counter() > opt.deadline:
                undecided.append("time limit reached while solving leaf domains")
                continue
            lb_i = LayerBounds([l[i:i + 1] for l in lower], [u[i:i + 1] for u in upper])
            sub = _leaf(rn, lo[0], hi[0], conj_open, lb_i, spec, solve, confirm, opt, SearchResult("unknown"),
                        final=False)
            if absorb_leaf(res, sub):
                return "violated"
            if sub.status != "holds":
                undecided.append(sub.reason)
                unsettled[0] = min(unsettled[0], float((lb[i] - thr).max()))
        push = keep & ~leaf
        if np.any(push):
            idx = np.nonzero(push)[0]
            sc = _branch_scores(r, lower, upper, alpha)[idx]
            flat = _choose_splits(rn, A, a0, lo, hi, [l[idx] for l in lower], [u[idx] for u in upper],
                                  [a[idx] for a in alpha], [p[idx] for p in phase], [b[idx] for b in beta], sc,
                                  offsets, opt.candidates)
            layer = np.searchsorted(offsets, flat, side="right") - 1
            new = _Pool(lower=[l[idx] for l in lower], upper=[u[idx] for u in upper],
                        alpha=[a[idx].astype(np.float32) for a in alpha], phase=[p[idx] for p in phase],
                        beta=[b[idx].astype(np.float32) for b in beta], lb=lb[idx], score=(lb - thr).max(axis=1)[idx],
                        depth=depth[idx], split=np.stack([layer, flat - offsets[layer]], axis=1))
            if pool is None:
                pool = new
            else:
                pool.extend(new)
        return ""

    phase0 = [np.zeros((1, n), np.int8) for n in sizes]
    beta0 = [np.zeros((1, K, n)) for n in sizes]
    if admit(root.lower, root.upper, alpha, phase0, beta0, r, lb, np.zeros(1, np.int64)) == "violated":
        return "violated"
    last_report = time.perf_counter()
    while pool is not None and pool.size:
        now = time.perf_counter()
        if opt.progress is not None and now - last_report >= opt.progress_every:
            last_report = now
            opt.progress({"method": "relu-split", "domains": stats.domains, "left": pool.size,
                          "bound": float(pool.score.min()), "elapsed": now - t0})
        if limit is not None and now > limit or opt.max_domains is not None and stats.domains >= opt.max_domains:
            # sound over the whole box: every domain is refuted (above it), in the pool, or an undecided leaf
            stats.final_bound, stats.left = min(float(pool.score.min()), unsettled[0]), pool.size
            why = "time limit" if limit is not None and now > limit else f"budget of {opt.max_domains} domains"
            reason = f"{why} reached with {pool.size} ReLU-split domains left ({stats.domains} bounded)"
            later = yield reason  # paused: the caller may resume the same tree with a later limit
            if later is None:
                return reason
            limit = later
            continue
        n = min(opt.batch, pool.size)
        if pool.size > opt.max_pool:  # deepest first: keeps the pool from growing further
            pick = np.argsort(-pool.depth, kind="stable")[:n]
        else:
            pick = np.argpartition(pool.score, n - 1)[:n] if n < pool.size else np.arange(pool.size)
        parents = pool.take(pick)
        pool.remove(pick)
        # children: inactive (u <= 0) then active (l >= 0)
        two = np.concatenate([np.arange(n), np.arange(n)])
        lower = [l[two].copy() for l in parents.lower]
        upper = [u[two].copy() for u in parents.upper]
        phase = [p[two].copy() for p in parents.phase]
        ci = np.arange(2 * n)
        for k in range(H):
            sel = parents.split[two, 0] == k
            if np.any(sel):
                nn = parents.split[two[sel], 1]
                ii = ci[sel]
                inact = ii < n
                upper[k][ii[inact], nn[inact]] = np.minimum(upper[k][ii[inact], nn[inact]], 0.0)
                lower[k][ii[~inact], nn[~inact]] = np.maximum(lower[k][ii[~inact], nn[~inact]], 0.0)
                phase[k][ii[inact], nn[inact]] = 1
                phase[k][ii[~inact], nn[~inact]] = -1
        lo_b = np.repeat(lo, 2 * n, axis=0)
        hi_b = np.repeat(hi, 2 * n, axis=0)
        if opt.intermediate:
            first = int(parents.split[:, 0].min()) + 1
            lb_new, empty = optimised_layer_bounds(rn, lo_b, hi_b, LayerBounds(lower, upper), steps=0,
                                                   from_layer=first)
        else:  # the split constraints reach later layers through the multipliers only
            lb_new = LayerBounds(lower, upper)
            empty = np.zeros(2 * n, bool)
            for l, u in zip(lower, upper):
                empty |= np.any(l > u, axis=1)
        alive = ~empty
        if not np.any(alive):
            continue
        ai = np.nonzero(alive)[0]
        lower = [l[ai] for l in lb_new.lower]
        upper = [u[ai] for u in lb_new.upper]
        warm = [a[two[ai]].astype(float) for a in parents.alpha]
        phase = [p[ai] for p in phase]
        warm_beta = [b[two[ai]].astype(float) for b in parents.beta]
        r, lb, alpha, beta = bound(lower, upper, warm, opt.steps, lo_b[ai], hi_b[ai],
                                   [p.astype(float) for p in phase], warm_beta, parents.lb[two[ai]])
        stats.domains += ai.size
        if candidates(r, lo_b[ai]):
            return "violated"
        if admit(lower, upper, alpha, phase, beta, r, lb, parents.depth[two[ai]] + 1) == "violated":
            return "violated"
        res.max_depth = max(res.max_depth, int(parents.depth.max()) + 1)
    stats.left = 0
    if undecided:
        return f"{len(undecided)} ReLU-split domain(s) undecided: {undecided[0]}"
    stats.final_bound = proven[0] if np.isfinite(proven[0]) else 0.0  # 0.0: every open domain went to the Query
    return "holds"


def advance(gen: Generator[str, float | None, str], limit: float | None = None) -> str | None:
    """Run a conjunction's tree (:func:`conjunction_tree`) to its next pause: its verdict, or None when it paused at
    its limit.  ``limit`` resumes a paused tree until then; on a paused tree, ``None`` ends it and returns its
    reason."""
    try:
        if inspect.getgeneratorstate(gen) == inspect.GEN_CREATED:
            next(gen)
        else:
            gen.send(limit)
    except StopIteration as stop:
        return stop.value
    return None


def run_tree(rn: ReluNet, lo: np.ndarray, hi: np.ndarray, root: LayerBounds, spec, j: int, solve: LeafSolver,
             confirm: Confirm, opt: BabOptions, t0: float, limit: float | None
             ) -> tuple[str, bool, TreeStats, SearchResult]:
    """Conjunction ``j``'s tree run to its verdict or to ``limit`` and ended there, for the searches that never
    resume a tree (a stability search, a tree in a worker process): ``(verdict or the reason it is open,
    whether it was decided, its statistics, its result)``."""
    stats = TreeStats()
    res = SearchResult("unknown")
    gen = conjunction_tree(rn, lo, hi, root, spec, j, np.nonzero(spec.conj == j)[0], solve, confirm, opt, res,
                           stats, t0, limit)
    verdict = advance(gen)
    if verdict is not None:
        return verdict, True, stats, res
    return advance(gen, None) or "time limit reached", False, stats, res
