"""Black-box falsifiers: counterexamples to a property with few network evaluations (`falsify with METHOD`).

Every falsifier minimises the property's satisfaction function (:mod:`patchlang.inputs.satisfaction`, ``< 0``
exactly at a violation) over each input box of the property, seeing the network only through an *oracle*: a
batched function from inputs to outputs.  By default the oracle is onnxruntime on the model file
(:class:`~patchlang.model.runtime.OrtModel`), so any ONNX model onnxruntime runs can be attacked, whatever its
operators; NNet models are evaluated by the float64 IR.  The oracle counts every evaluated input (a *query*) and
enforces the budget and the deadline.

Methods (``METHODS``):

- ``shgo``, ``differential_evolution``, ``basinhopping``: scipy's global optimisers on the box;
- ``gradient``: projected sign-gradient descent with finite-difference gradients (central differences per
  coordinate up to 64 inputs, random directions above), batched over several starts;
- ``targeted``: one projected sign-gradient descent per unsafe conjunction (per rival class of a robustness
  property), gradients from a forward-difference Jacobian of all outputs (``d + 1`` queries a step), from the box
  centre first: the black-box counterpart of a targeted PGD attack, for high-dimensional L∞ balls;
- ``random``: uniform sampling, the baseline;
- ``auto``: ``shgo`` for up to 32 inputs, ``gradient`` above (see ``bench/specattack.py`` for why).

All but ``random`` start with the same *focus* stage: uniform samples, then rounds of Gaussian samples around the
points with the lowest satisfaction (where the watched output is most extreme), each round at half the radius;
the optimiser starts from the best of them (``focus=0`` turns it off).  A property with several input boxes (a
non-convex region) is attacked box by box, the budget shared among the boxes still to do.  Restarts continue until
the budget or the deadline is spent.

A candidate (``f < 0`` on the oracle) counts only after the caller's ``confirm`` accepts it: in patchlang the
:class:`~patchlang.tasks.verify.Confirmer`, float64 on the IR and float32 onnxruntime on the file, at the float32
input inside the box that is saved.  ``queries`` is the number of oracle evaluations up to and including the
first confirmed counterexample (all of them when none is found).
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Any, Callable

import numpy as np

from ..compile.verify import RegionCase
from ..lang.program import FALSIFIERS

METHODS = FALSIFIERS  # the names the language accepts (lang.program, so that lang imports no task)
DEFAULT_QUERIES = 20_000
JACOBIAN_STEP = 0.25  # finite-difference step of `targeted`, as a fraction of the box width
SHGO_MAX_INPUTS = 10  # SHGO triangulates its samples: beyond ~10 free inputs that is hopeless (Qhull)

Evaluate = Callable[[np.ndarray], np.ndarray]  # (N, d) float64 -> (N, n_out)
Confirm = Callable[[np.ndarray, RegionCase], "tuple[bool, np.ndarray, np.ndarray, np.ndarray | None]"]


@dataclass
class AttackOptions:
    method: str = "auto"
    queries: int = DEFAULT_QUERIES  # budget of network evaluations for the whole property
    seconds: float | None = None  # time budget for the whole property
    seed: int = 0
    focus: bool = True


@dataclass
class AttackResult:
    method: str  # the method run (``auto`` resolved)
    found: bool
    queries: int  # evaluations up to the first confirmed counterexample, else all spent
    seconds: float
    fsat: float  # satisfaction at the counterexample (float64, IR), else the smallest value the oracle saw
    case: int | None = None
    x32: np.ndarray | None = None  # the confirmed counterexample (float32, inside its box)
    y64: np.ndarray | None = None
    y32: np.ndarray | None = None
    best_x: np.ndarray | None = None
    unconfirmed: int = 0
    notes: list[str] = field(default_factory=list)


class _Stop(Exception):
    """Raised inside an objective to end the optimiser: found, budget spent or deadline passed."""


class Oracle:
    """The satisfaction of one case through the network oracle, counting queries and confirming candidates."""

    def __init__(self, evaluate: Evaluate, case: RegionCase, budget: int, deadline: float | None,
                 confirm: Callable[[np.ndarray], bool], max_confirm: int = 3):
        self.evaluate, self.case, self.budget, self.deadline = evaluate, case, budget, deadline
        self.confirm = confirm
        self.max_confirm = max_confirm
        self.count = 0
        self.found_at: int | None = None
        self.full_lo = np.asarray(case.lo, float).reshape(-1)
        self.full_hi = np.asarray(case.hi, float).reshape(-1)
        # the search runs over the inputs the box lets vary (inputs fixed by the property are not searched)
        self.free = self.full_hi > self.full_lo
        self.lo, self.hi = self.full_lo[self.free], self.full_hi[self.free]
        self.best = np.inf
        self.best_x = (self.full_lo + self.full_hi) / 2
        self.best_z = self.best_x[self.free]
        self.unconfirmed = 0

    @property
    def left(self) -> int:
        return self.budget - self.count

    def batch(self, Z: np.ndarray) -> np.ndarray:
        """Satisfaction values of a batch ``(N, free inputs)``; raises :class:`_Stop` when done."""
        Z = np.asarray(Z, dtype=np.float64)
        Z = Z.reshape(Z.shape[0] if Z.ndim == 2 else 1, self.lo.size)
        asked = len(Z)
        if self.found_at is not None or self.left <= 0 or (self.deadline is not None and
                                                           time.perf_counter() > self.deadline):
            raise _Stop
        n = min(len(Z), self.left)
        Z = np.clip(Z[:n], self.lo, self.hi)
        X = np.tile(self.full_lo, (n, 1))
        X[:, self.free] = Z
        Y = np.asarray(self.evaluate(X), dtype=np.float64).reshape(n, -1)
        s = self.case.spec.satisfaction(Y)
        before = self.count
        self.count += n
        i = int(np.argmin(s))
        if s[i] < self.best:
            self.best, self.best_x, self.best_z = float(s[i]), X[i].copy(), Z[i].copy()
        negative = np.nonzero(s < 0)[0]
        if negative.size:
            for k in negative[:self.max_confirm]:  # in evaluation order: the first confirmed one counts
                if self.confirm(X[k]):
                    self.found_at = before + int(k) + 1
                    raise _Stop
                self.unconfirmed += 1
        if n < asked or self.left <= 0:
            raise _Stop
        self.last_y = Y
        return s

    def __call__(self, x: np.ndarray) -> float:
        """One point (scipy's scalar objective)."""
        return float(self.batch(np.asarray(x, float)[None])[0])

    def smooth(self, x: np.ndarray, t: float) -> float:
        """A smooth surrogate for local minimisers: the max over a clause's atoms becomes ``t·log Σ exp(s/t)``
        (an upper bound, within ``t·log(atoms)``), so that at a tie the descent lowers every tied atom instead of
        stalling on the kink.  The true value is what counts: counterexamples are found by :meth:`batch`."""
        s = self.batch(np.asarray(x, float)[None])
        spec = self.case.spec
        if spec.n_conj == 0 or not np.isfinite(s[0]):
            return float(s[0])
        v = spec.row_values(self.last_y)[0]
        best = np.inf
        for j in range(spec.n_conj):
            r = v[spec.conj == j]
            if r.size == 0:
                return float(s[0])
            m = float(np.max(r))
            best = min(best, m + t * float(np.log(np.sum(np.exp((r - m) / t)))))
        return best

    def temperature(self) -> float:
        """The smoothing scale for :meth:`smooth`: a fifth of the best value so far (ACAS Xu: ~1e-4)."""
        return float(max(1e-9, 0.2 * abs(self.best))) if np.isfinite(self.best) else 1e-3


# ============================================================================ the methods


def _uniform(rng: np.random.Generator, lo: np.ndarray, hi: np.ndarray, n: int) -> np.ndarray:
    return lo + rng.random((n, lo.size)) * (hi - lo)


def _focus(oracle: Oracle, rng: np.random.Generator, budget: int) -> np.ndarray:
    """Uniform samples, then rounds of denser samples around the lowest satisfaction values; the pool, best first."""
    lo, hi = oracle.lo, oracle.hi
    width = hi - lo
    n0 = int(np.clip(budget // 2, 8, 256))
    X = _uniform(rng, lo, hi, n0)
    s = oracle.batch(X)
    per_round, k = max(4, n0 // 4), 8
    for r in range(3):
        order = np.argsort(s)[:k]
        centres = X[order]
        sigma = width * 0.1 * 0.5 ** r
        Z = centres[rng.integers(0, len(centres), per_round)] + sigma * rng.standard_normal((per_round, lo.size))
        Z = np.clip(Z, lo, hi)
        X, s = np.vstack([X, Z]), np.concatenate([s, oracle.batch(Z)])
    return X[np.argsort(s)]


def _shgo(oracle: Oracle, rng: np.random.Generator, pool: np.ndarray | None, restart: int) -> None:
    from scipy.optimize import shgo

    lo, hi = oracle.lo, oracle.hi
    if restart > 0:  # restarts: a smaller box around the best point so far or a promising sample, in turn
        k = (restart - 1) // 2
        c = oracle.best_z if restart % 2 or pool is None else pool[k % min(len(pool), 16)]
        r = (hi - lo) * 0.25 * 0.7 ** k
        lo, hi = np.maximum(lo, c - r), np.minimum(hi, c + r)
        hi = np.where(hi > lo, hi, lo + 1e-12)
    # one iteration per call: SHGO's triangulation grows quadratically with the points it keeps
    # in the unit cube: SHGO's Delaunay triangulation (Qhull) loses precision on boxes of very unequal sides
    n = 2 ** int(np.clip(np.ceil(np.log2(max(16, 4 * lo.size))), 4, 8))
    width, t = hi - lo, oracle.temperature()
    shgo(lambda u: oracle.smooth(lo + u * width, t), [(0.0, 1.0)] * lo.size, n=n, iters=1, sampling_method="sobol",
         minimizer_kwargs={"method": "L-BFGS-B", "options": {"maxiter": 50}})


def _differential_evolution(oracle: Oracle, rng: np.random.Generator, pool: np.ndarray | None, restart: int) -> None:
    from scipy.optimize import differential_evolution

    lo, hi = oracle.lo, oracle.hi
    size = max(10, 5 * lo.size)
    init = _uniform(rng, lo, hi, size)
    if pool is not None and restart == 0:
        init[:min(size // 2, len(pool))] = pool[:size // 2]
    init = np.clip(init, lo, np.nextafter(hi, -np.inf))  # DE rejects an initial population on the upper bound
    differential_evolution(lambda X: oracle.batch(np.asarray(X).T), list(zip(lo, hi)), init=init,
                           maxiter=10_000, tol=0.0, atol=0.0, polish=False, vectorized=True, updating="deferred",
                           rng=np.random.default_rng(rng.integers(2 ** 31)))


def _basinhopping(oracle: Oracle, rng: np.random.Generator, pool: np.ndarray | None, restart: int) -> None:
    from scipy.optimize import basinhopping

    lo, hi = oracle.lo, oracle.hi
    x0 = pool[min(restart, len(pool) - 1)] if pool is not None else _uniform(rng, lo, hi, 1)[0]
    width = hi - lo

    def step(x: np.ndarray) -> np.ndarray:
        return np.clip(x + 0.1 * width * rng.standard_normal(x.size), lo, hi)

    t = oracle.temperature()
    basinhopping(lambda x: oracle.smooth(x, t), x0, niter=10_000, T=t, take_step=step,
                 minimizer_kwargs={"method": "L-BFGS-B", "bounds": list(zip(lo, hi)), "options": {"maxiter": 50}},
                 rng=np.random.default_rng(rng.integers(2 ** 31)))


def _gradient(oracle: Oracle, rng: np.random.Generator, pool: np.ndarray | None, restart: int) -> None:
    lo, hi = oracle.lo, oracle.hi
    d, width = lo.size, hi - lo
    starts = 8
    x = pool[restart * starts:(restart + 1) * starts] if pool is not None else np.zeros((0, d))
    if len(x) < starts:
        x = np.vstack([x, _uniform(rng, lo, hi, starts - len(x))])
    x = x.copy()
    h = 1e-3 * np.maximum(width, 1e-12)
    steps = 50
    for it in range(steps):
        if d <= 64:
            dirs = np.eye(d)
        else:  # random directions (SPSA-like) when one difference per coordinate is too dear
            dirs = rng.choice([-1.0, 1.0], size=(16, d))
        P = (x[:, None, :] + dirs[None] * h).reshape(-1, d)
        M = (x[:, None, :] - dirs[None] * h).reshape(-1, d)
        sp = oracle.batch(P).reshape(len(x), len(dirs))
        sm = oracle.batch(M).reshape(len(x), len(dirs))
        g = ((sp - sm) / 2.0)[:, :, None] * dirs[None]  # directional differences -> gradient estimate
        g = g.sum(axis=1) / (h if d <= 64 else h * len(dirs))
        g = np.where(np.isfinite(g), g, 0.0)
        eta = 0.1 * (0.02 ** (it / (steps - 1)))
        x = np.clip(x - eta * width * np.sign(g), lo, hi)
        oracle.batch(x)


def _jacobian(oracle: Oracle, x: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Outputs at ``x`` and their forward-difference Jacobian over the free inputs: ``d + 1`` queries in one batch
    give the derivative of *every* output at once (exact on a linear piece of a piecewise-linear network)."""
    # a wide step (a quarter of the box): the oracle computes in float32, and a step of 1e-3 of a CIFAR ball's
    # width (1e-5) changes the outputs by about their rounding error, so the signs of such differences are noise
    h = JACOBIAN_STEP * np.maximum(oracle.hi - oracle.lo, 1e-12)
    step = np.where(x + h <= oracle.hi, h, -h)  # stay inside the box: step down on the upper face
    oracle.batch(np.vstack([x[None], x[None] + np.diag(step)]))
    Y = oracle.last_y
    return Y[0], (Y[1:] - Y[0]).T / step  # (n_out,), (n_out, d)


def _targeted(oracle: Oracle, rng: np.random.Generator, pool: np.ndarray | None, restart: int) -> None:
    """One descent per unsafe conjunction (for `label stays`: per rival class), most promising first.

    The satisfaction is a minimum over conjunctions; descending it follows whichever conjunction is lowest now and
    stalls there, while the violated one may be another (a CIFAR-10 robustness property falls to the third-closest
    rival class, not the closest).  So each conjunction gets its own projected sign-gradient descent on the largest
    of its rows, from the box centre first (the first step, half the box wide, jumps to a vertex: FGSM) and from
    random points on restarts; gradients come from one finite-difference Jacobian of all outputs per step."""
    spec = oracle.case.spec
    lo, hi = oracle.lo, oracle.hi
    width = hi - lo
    start = (lo + hi) / 2 if restart == 0 else _uniform(rng, lo, hi, 1)[0]
    y0, _ = _jacobian(oracle, start)
    rows = spec.row_values(y0[None])[0]
    scores = [float(np.max(rows[spec.conj == j])) if np.any(spec.conj == j) else -np.inf for j in range(spec.n_conj)]
    steps = 10
    for j in np.argsort(scores, kind="stable"):
        mine = np.nonzero(spec.conj == j)[0]
        if mine.size == 0:
            continue
        x = start.copy()
        for it in range(steps):
            y, J = _jacobian(oracle, x)
            r = mine[int(np.argmax(spec.row_values(y[None])[0, mine]))]
            g = spec.A[r] @ J
            eta = 0.5 * (0.05 ** (it / (steps - 1)))
            x = np.clip(x - eta * width * np.sign(g), lo, hi)
        oracle.batch(x[None])


def _random(oracle: Oracle, rng: np.random.Generator, pool: np.ndarray | None, restart: int) -> None:
    lo, hi = oracle.lo, oracle.hi
    while True:
        oracle.batch(_uniform(rng, lo, hi, 256))


_RUNNERS = {"shgo": _shgo, "differential_evolution": _differential_evolution, "basinhopping": _basinhopping,
            "gradient": _gradient, "targeted": _targeted, "random": _random}


def resolve_method(method: str, n_inputs: int) -> str:
    if method == "auto":
        return "differential_evolution"
    if method not in _RUNNERS:
        raise ValueError(f"unknown falsifier {method!r}; choose one of {', '.join(METHODS)}")
    return method


def attack_cases(cases: list[RegionCase], evaluate: Evaluate, confirm: Confirm,
                 options: AttackOptions | None = None) -> AttackResult:
    """Search ``cases`` (the input boxes of one property) for a confirmed counterexample."""
    opt = options or AttackOptions()
    t0 = time.perf_counter()
    deadline = None if opt.seconds is None else t0 + opt.seconds
    method = resolve_method(opt.method, int(np.size(cases[0].lo)) if cases else 0)
    notes: list[str] = []
    free = max((int(np.sum(np.asarray(c.hi) > np.asarray(c.lo))) for c in cases), default=0)
    if method == "shgo" and free > SHGO_MAX_INPUTS:
        notes.append(f"shgo triangulates its samples and handles at most {SHGO_MAX_INPUTS} free inputs, the "
                     f"property has {free}: differential_evolution was used instead")
        method = "differential_evolution"
    runner = _RUNNERS[method]
    if method != "random":
        import scipy.optimize  # noqa: F401  (imported before the clock starts: a second or two the first time)
        import scipy.stats.qmc  # noqa: F401  (SHGO's Sobol sampling)
    t0 = time.perf_counter()
    deadline = None if opt.seconds is None else t0 + opt.seconds
    rng = np.random.default_rng(opt.seed)
    spent, unconfirmed, best, best_x = 0, 0, np.inf, None
    for i, case in enumerate(cases):
        share = (opt.queries - spent) // (len(cases) - i)
        hit: list[tuple[np.ndarray, np.ndarray, np.ndarray | None]] = []

        def check(x: np.ndarray, case: RegionCase = case) -> bool:
            ok, x32, y64, y32 = confirm(x, case)
            if ok:
                hit.append((x32, y64, y32))
            return ok

        oracle = Oracle(evaluate, case, share, deadline, check)
        pool = None
        try:
            if oracle.lo.size == 0:  # a single point
                oracle.batch(np.zeros((1, 0)))
                raise _Stop
            if opt.focus and method != "random":
                pool = _focus(oracle, rng, max(16, share // 10))
            for restart in range(10_000):
                runner(oracle, rng, pool, restart)
                if oracle.left <= 0:
                    break
        except _Stop:
            pass
        unconfirmed += oracle.unconfirmed
        if oracle.best < best:
            best, best_x = oracle.best, oracle.best_x
        if oracle.found_at is not None and hit:
            x32, y64, y32 = hit[-1]
            fsat = float(case.spec.satisfaction(np.asarray(y64, float)[None])[0])
            return AttackResult(method, True, spent + oracle.found_at, time.perf_counter() - t0, fsat, i, x32, y64,
                                y32, best_x, unconfirmed, notes)
        spent += oracle.count
        if deadline is not None and time.perf_counter() > deadline:
            break
    return AttackResult(method, False, spent, time.perf_counter() - t0, float(best), best_x=best_x,
                        unconfirmed=unconfirmed, notes=notes)


def model_oracle(net: Any, ort_model: Any = None) -> tuple[Evaluate, str]:
    """The batched oracle of a model: onnxruntime on its file when there is one, else the float64 IR."""
    if ort_model is not None:
        return (lambda X: ort_model.run(X).astype(np.float64)), "onnxruntime"
    return (lambda X: net.forward(X)), "float64 IR"


# ============================================================================ in the language


def attack_options(choice: Any, timeout: float | None, seed: int) -> AttackOptions:
    """`falsify [only] with METHOD (queries = N, focus = 0|1, seed = N)` as options (timeout: the statement's)."""
    o = choice.options
    return AttackOptions(choice.method, int(o.get("queries", DEFAULT_QUERIES)), timeout,
                         int(o.get("seed", seed)), bool(o.get("focus", 1)))


def falsify_first(net: Any, cases: list[RegionCase], attack: AttackOptions, confirmer: Any, stats: dict[str, Any]
                  ) -> tuple[int, np.ndarray, np.ndarray, np.ndarray | None, str] | None:
    """Verify's first stage with a chosen falsifier: ``(case, x32, y64, y32, how)`` when one is confirmed."""
    evaluate, _ = model_oracle(net, confirmer.ort)
    r = attack_cases(cases, evaluate, confirmer.check, attack)
    stats["evaluations"] = stats.get("evaluations", 0) + r.queries
    stats["unconfirmed"] = stats.get("unconfirmed", 0) + r.unconfirmed
    stats.update({"falsifier": r.method, "falsifier queries": r.queries, "falsify seconds": r.seconds})
    stats.setdefault("notes", []).extend(r.notes)
    if not r.found or r.case is None or r.x32 is None or r.y64 is None:
        return None
    return r.case, r.x32, r.y64, r.y32, f"falsification with {r.method}, {r.queries} queries"
