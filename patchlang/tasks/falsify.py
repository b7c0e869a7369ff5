"""Falsify first: a cheap search for counterexamples before (and instead of) the complete method.

The *satisfaction function* of a case (:mod:`patchlang.inputs.satisfaction`) is ``s(x) = min_j max_{r in j}
(a_r·y(x) - d_r)`` over the unsafe conjunctions ``j`` of its :class:`~patchlang.compile.verify.UnsafeSpec`: it is
``< 0`` exactly where ``x`` is a counterexample.  This is the white-box search verify runs first (exact gradients
of the piecewise-linear IR); the black-box falsifiers of the language are in :mod:`patchlang.tasks.falsifiers`.
We sample the box uniformly, then run batched projected sign-gradient descent on ``s`` from the best samples
(the network is piecewise linear, so the exact gradient of the active row is a product of masked weight
matrices), and finally polish the best point with scipy's L-BFGS-B.  Every network evaluation is
counted so the report can say what the search cost.

verify's search (``targeted``) first descends once per unsafe conjunction from the box centre, then, with a time
share (``restart_seconds``), restarts that descent in rounds from random points, longer and with momentum (a
PGD with random restarts, targeted per rival class).  The MNIST networks of VNN-COMP are flat near their images
(outputs close to one-hot, tiny gradients): the 10-step descent stalls on mnist-net_256x4 prop_1_0.05 where a
100-step descent with momentum from the same centre reaches a counterexample in 0.1 s.

Nothing here proves anything: a point is returned only when ``s(x) < 0`` in float64; the caller confirms it
with onnxruntime before calling the property violated.
"""

from __future__ import annotations

import time
from dataclasses import dataclass

import numpy as np

from ..compile.bounds import ReluNet
from ..compile.verify import RegionCase, UnsafeSpec
from ..inputs.satisfaction import satisfaction_with_rows


@dataclass
class FalsifyOptions:
    samples: int = 2000
    starts: int = 32
    steps: int = 60
    polish: int = 3  # L-BFGS-B runs from the best points
    seed: int = 0
    deadline: float | None = None  # time.perf_counter() value
    targeted: bool = False  # also one descent per unsafe conjunction from the box centre (verify's first search)
    restart_seconds: float = 0.0  # with ``targeted``: time for rounds of per-conjunction restarts (0: none)
    restart_rounds: int = 1000  # at most this many rounds (tests fix it so the result does not depend on speed)
    restart_starts: int = 8  # starts per conjunction and round (round 0 also includes the box centre)
    restart_steps: int = 100
    restart_patience: int = 2  # stop after this many rounds that lower the best value by less than 1%


@dataclass
class FalsifyResult:
    x: np.ndarray | None  # a float64 counterexample candidate, or None
    best: float  # the smallest satisfaction value found (< 0: violated)
    best_x: np.ndarray  # where it was found
    evaluations: int
    seconds: float
    candidates: list[np.ndarray] | None = None  # further distinct candidates (for repair)
    near: list[np.ndarray] | None = None  # the final search population, best first (near-violations)


def _values_and_grads(rn: ReluNet, spec: UnsafeSpec, x: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """``s(x)`` (:mod:`patchlang.inputs.satisfaction`) and a subgradient for a batch ``(N, d)``."""
    v, G = rn.forward_with_gradient(x, spec.A)  # (N, R) of A y, (N, R, d)
    s, rstar = satisfaction_with_rows(v - spec.d, spec.conj, spec.strict, spec.n_conj)
    N = x.shape[0]
    grad = np.zeros_like(x)
    has = rstar >= 0
    if G.shape[1] and np.any(has):
        grad[has] = G[np.arange(N)[has], rstar[has]]
    return s, grad


def falsify_case(rn: ReluNet, case: RegionCase, options: FalsifyOptions | None = None, keep: int = 0
                 ) -> FalsifyResult:
    """Search one case; ``keep`` > 0 also collects up to that many distinct violating points."""
    opt = options or FalsifyOptions()
    t0 = time.perf_counter()
    spec = case.spec
    lo = np.asarray(case.lo, float).reshape(-1)
    hi = np.asarray(case.hi, float).reshape(-1)
    width = hi - lo
    rng = np.random.default_rng(opt.seed)
    evals = 0
    found: list[np.ndarray] = []

    def harvest(x: np.ndarray, s: np.ndarray) -> None:
        if not np.any(s < 0):
            return
        y = rn.forward(x[s < 0])
        ok = spec.violated(y)
        for p in x[s < 0][ok]:
            if len(found) < max(keep, 1) and all(np.max(np.abs(p - q)) > 1e-6 for q in found):
                found.append(p.copy())

    def done() -> bool:
        return len(found) >= max(keep, 1) or (opt.deadline is not None and time.perf_counter() > opt.deadline)

    if opt.targeted and spec.A.shape[0] > 0:  # first: a few batched steps, often decisive
        if spec.n_conj > 1:
            evals += _targeted(rn, spec, lo, hi, harvest, done)
        if not done() and opt.restart_seconds > 0:
            evals += _restarts(rn, spec, lo, hi, harvest, done, rng, opt)
        if done():  # found enough (or out of time): the sampling below would cost far more on large inputs
            best_x = found[0] if found else (lo + hi) / 2
            best = float(_values_and_grads(rn, spec, best_x[None])[0][0]) if found else np.inf
            return FalsifyResult(best_x if found else None, best, best_x, evals, time.perf_counter() - t0,
                                 found or None, None)
    X = np.vstack([(lo + hi)[None] / 2, lo + rng.random((opt.samples, lo.size)) * width])
    s, _ = _values_and_grads(rn, spec, X)
    evals += X.shape[0]
    harvest(X, s)
    best_i = int(np.argmin(s))
    best, best_x = float(s[best_i]), X[best_i].copy()
    near = [X[i].copy() for i in np.argsort(s)[:opt.starts]]
    if not done() and opt.steps > 0:
        order = np.argsort(s)[:opt.starts]
        x = X[order].copy()
        for it in range(opt.steps):
            eta = 0.1 * (0.02 ** (it / max(1, opt.steps - 1)))  # geometric decay from 10% to 0.2% of the width
            sv, g = _values_and_grads(rn, spec, x)
            evals += x.shape[0]
            harvest(x, sv)
            i = int(np.argmin(sv))
            if sv[i] < best:
                best, best_x = float(sv[i]), x[i].copy()
            if done():
                break
            x = np.clip(x - eta * width * np.sign(g), lo, hi)
        sv, _ = _values_and_grads(rn, spec, x)
        evals += x.shape[0]
        near = [x[i].copy() for i in np.argsort(sv)]
    if not done() and opt.polish > 0 and lo.size <= 1000:
        best, best_x, n = _polish(rn, spec, lo, hi, best_x, best, opt, harvest, done)
        evals += n
    x_out = found[0] if found else None
    return FalsifyResult(x_out, best, best_x, evals, time.perf_counter() - t0, found or None, near)


def _targeted(rn: ReluNet, spec: UnsafeSpec, lo: np.ndarray, hi: np.ndarray, harvest, done, steps: int = 10) -> int:
    """One projected sign-gradient descent per unsafe conjunction, all in one batch, from the box centre.

    Descending ``s`` follows whichever conjunction is lowest and stalls there, while the violated one may be another
    (a CIFAR-10 robustness property falls to the third-closest rival class): each conjunction gets its own descent
    on the largest of its rows.  The first step, half the box wide, jumps to a vertex (FGSM).  Returns the
    evaluations spent."""
    k = spec.n_conj
    return _descend(rn, spec, np.tile((lo + hi) / 2, (k, 1)), np.arange(k), lo, hi, harvest, done, steps,
                    first=0.5, last=0.025)[0]


def _restarts(rn: ReluNet, spec: UnsafeSpec, lo: np.ndarray, hi: np.ndarray, harvest, done,
              rng: np.random.Generator, opt: FalsifyOptions) -> int:
    """Rounds of per-conjunction descents (``restart_steps`` each, momentum, the step shrinking from a quarter of
    the box to 0.2%) from ``restart_starts`` uniform points per conjunction, round 0 also from the centre, until
    ``restart_seconds`` or ``restart_rounds`` run out, or ``restart_patience`` rounds in a row bring the best
    satisfaction value down by less than 1% (a property that holds does not pay the whole share; on the
    mnist_fc networks every counterexample found in 30 s of restarts was found in round 0).  Returns the
    evaluations spent."""
    end = time.perf_counter() + opt.restart_seconds

    def stop() -> bool:
        return done() or time.perf_counter() > end

    k, n = spec.n_conj, max(1, opt.restart_starts)
    which = np.repeat(np.arange(k), n)
    evals, best, idle = 0, np.inf, 0
    for r in range(opt.restart_rounds):
        if stop() or idle >= opt.restart_patience:
            break
        x = lo + rng.random((which.size, lo.size)) * (hi - lo)
        if r == 0:
            x[::n] = (lo + hi) / 2
        spent, low = _descend(rn, spec, x, which, lo, hi, harvest, stop, opt.restart_steps,
                              first=0.25, last=0.002, momentum=0.75)
        evals += spent
        idle = 0 if low < best - 0.01 * abs(best) else idle + 1
        best = min(best, low)
    return evals


def _descend(rn: ReluNet, spec: UnsafeSpec, x: np.ndarray, which: np.ndarray, lo: np.ndarray, hi: np.ndarray,
             harvest, stop, steps: int, first: float, last: float, momentum: float = 0.0) -> tuple[int, float]:
    """Projected sign-gradient descent of each start ``x[i]`` on the largest row of its own conjunction
    ``which[i]``, the step shrinking geometrically from ``first`` to ``last`` of the box width; with
    ``momentum`` the sign of a running sum of gradient signs is followed (steadier on flat, noisy plateaus).
    Every iterate is offered to ``harvest``.  Returns the evaluations spent and the lowest satisfaction seen."""
    width = hi - lo
    mine = spec.conj[None, :] == which[:, None]  # (N, R): the rows each start descends on
    velocity = np.zeros_like(x)
    evals, low = 0, np.inf
    for it in range(steps):
        v, G = rn.forward_with_gradient(x, spec.A)  # (N, R), (N, R, d)
        evals += x.shape[0]
        vals = v - spec.d
        s, _ = satisfaction_with_rows(vals, spec.conj, spec.strict, spec.n_conj)
        harvest(x, s)
        low = min(low, float(np.min(s)))
        if stop():
            return evals, low
        r = np.argmax(np.where(mine, vals, -np.inf), axis=1)
        velocity = momentum * velocity + np.sign(G[np.arange(x.shape[0]), r])
        eta = first * ((last / first) ** (it / max(1, steps - 1)))
        x = np.clip(x - eta * width * np.sign(velocity), lo, hi)
    s, _ = _values_and_grads(rn, spec, x)
    harvest(x, s)
    return evals + x.shape[0], min(low, float(np.min(s)))


def _polish(rn: ReluNet, spec: UnsafeSpec, lo: np.ndarray, hi: np.ndarray, x0: np.ndarray, best: float,
            opt: FalsifyOptions, harvest, done) -> tuple[float, np.ndarray, int]:
    """L-BFGS-B from the best point (and jittered copies) with the exact piecewise gradient."""
    from scipy.optimize import minimize

    rng = np.random.default_rng(opt.seed + 1)
    count = [0]
    best_x = x0.copy()

    def fun(x: np.ndarray) -> tuple[float, np.ndarray]:
        s, g = _values_and_grads(rn, spec, x[None])
        count[0] += 1
        harvest(x[None], s)
        return float(s[0]), g[0]

    for k in range(opt.polish):
        if done():
            break
        start = x0 if k == 0 else np.clip(x0 + (hi - lo) * 0.05 * rng.standard_normal(x0.size), lo, hi)
        r = minimize(fun, start, jac=True, method="L-BFGS-B", bounds=list(zip(lo, hi)),
                     options={"maxiter": 50})
        if r.fun < best:
            best, best_x = float(r.fun), np.asarray(r.x, float)
    return best, best_x, count[0]
