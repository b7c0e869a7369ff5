"""`verify MODEL satisfies PROPERTY`: falsify first, then decide every input box completely; check every answer.

Per case (input box + unsafe outputs, see :mod:`patchlang.compile.verify`):

1. :func:`~patchlang.tasks.falsify.falsify_case` looks for a counterexample cheaply;
2. otherwise the input-split search (:func:`~patchlang.compile.verify.search_box`) decides the box with sound
   bounds, sending small leaf boxes to the MILP Query (HiGHS by default); ``using marabou`` instead sends the
   whole box's Query to Marabou;
3. a counterexample counts only after :class:`Confirmer` re-evaluates it in float64 (the IR) **and** with
   onnxruntime (float32) on the model file, at the float32 input that is saved.

"holds" is reported only when every case was decided by the complete method; anything else is "unknown" with the
reason.  One time limit covers the whole property.
"""

from __future__ import annotations

import os
import time
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any, Iterator

import numpy as np

from ..compile.bounds import ReluNet, backward_bounds, forward_bounds, relu_network, spec_lower_bounds
from ..compile.branch_and_bound import BabOptions, BabStats, relu_split_search
from ..compile.verify import (DEFAULT_TOL, RegionCase, SearchOptions, UnsafeSpec, search_box, unsafe_from_clauses,
                              unsafe_from_vnnlib)
from ..errors import PatchlangError
from ..lang.program import PropertySpec, VerifyTask
from ..model.ir import Network
from ..solvers.base import SolveOptions, Solution
from .falsify import FalsifyOptions, falsify_case
from .falsifiers import attack_options
from .goals import cnf_clauses
from .results import HOLDS, UNKNOWN, VIOLATED, SavedCheck, TaskResult

DEFAULT_TIMEOUT = 600.0


# ============================================================================ property -> cases


def property_cases(prop: PropertySpec, net: Network) -> list[RegionCase]:
    """The property as (box, unsafe region) cases over the model's flat input."""
    n_in, n_out = net.input_size, net.output_size
    boxes = [(np.broadcast_to(np.asarray(lo, float).reshape(-1), (n_in,)).copy(),
              np.broadcast_to(np.asarray(hi, float).reshape(-1), (n_in,)).copy()) for lo, hi in prop.boxes]
    if prop.unsafe_dnf is not None:
        return [RegionCase(lo, hi, unsafe_from_vnnlib(dnf, n_out), f"box {i}")
                for i, ((lo, hi), dnf) in enumerate(zip(boxes, prop.unsafe_dnf))]
    labels = _center_labels(prop, net, len(boxes))
    cases = []
    for i, (lo, hi) in enumerate(boxes):
        clauses = []
        for cnf in prop.ensures:
            clauses.extend(cnf_clauses(cnf, n_out, 0.0, net.decision, labels[i] if labels is not None else None))
        name = prop.centers.describe(i) if prop.centers is not None and labels is not None else f"box {i}"
        cases.append(RegionCase(lo, hi, unsafe_from_clauses(clauses, n_out), name))
    return cases


def _uses_label_stays(prop: PropertySpec) -> bool:
    from ..lang import ast as A

    return any(isinstance(atom, A.AtomLabelStays) for cnf in prop.ensures for clause in cnf.clauses
               for atom in clause)


def _center_labels(prop: PropertySpec, net: Network, n_boxes: int) -> list[int] | None:
    """Labels of the ball centres (their own labels when given, else the network's decisions)."""
    if prop.centers is None or len(prop.centers) != n_boxes:
        if _uses_label_stays(prop):
            raise PatchlangError(f"property `{prop.name}` says `label stays` but not every input region is a ball "
                                 "around a point", span=prop.span,
                                 help="use `input within linf EPS of POINTS` only, or name the label: `label is 3`")
        return None
    if prop.centers.y is not None:
        return [int(v) for v in prop.centers.y]
    return [int(v) for v in net.labels(prop.centers.x)]


# ============================================================================ confirming counterexamples


class Confirmer:
    """Re-evaluates a candidate counterexample in float64 (IR) and float32 (onnxruntime on the model file).

    The confirmed input is the float32 vector inside the box (nudged by one ulp where rounding left the box),
    because that is what a user feeds the file and what is saved.
    """

    def __init__(self, net: Network):
        self.net = net
        self.ort = None
        self.note = ""
        self._tmp: str | None = None
        try:
            from ..model.onnx_export import patched_proto
            from ..model.runtime import OrtModel

            if net.source_format == "nnet" and net.proto is None:
                raise PatchlangError("NNet model")
            self.ort = OrtModel(patched_proto(net), input_shape=net.input_shape)
        except PatchlangError as exc:
            self.note = f"onnxruntime check skipped: {exc.message}"

    @staticmethod
    def to_float32_in_box(x: np.ndarray, lo: np.ndarray, hi: np.ndarray) -> np.ndarray:
        x32 = np.clip(x, lo, hi).astype(np.float32)
        below = x32.astype(np.float64) < lo
        x32[below] = np.nextafter(x32[below], np.float32(np.inf))
        above = x32.astype(np.float64) > hi
        x32[above] = np.nextafter(x32[above], np.float32(-np.inf))
        return x32

    def check(self, x: np.ndarray, case: RegionCase) -> tuple[bool, np.ndarray, np.ndarray, np.ndarray | None]:
        """(confirmed, x32, y64, y32) for a candidate of ``case``."""
        x32 = self.to_float32_in_box(np.asarray(x, float).reshape(-1), case.lo, case.hi)
        inside = bool(np.all(x32 >= case.lo) and np.all(x32 <= case.hi))
        y64 = self.net.forward(x32.astype(np.float64)[None])
        ok = inside and bool(case.spec.violated(y64)[0])
        y32 = None
        if ok and self.ort is not None:
            y32 = self.ort.run(x32.reshape((1, *self.net.input_shape)))
            ok = bool(case.spec.violated(y32.astype(np.float64))[0])
        return ok, x32, y64[0], None if y32 is None else y32[0]


# ============================================================================ the procedure


@dataclass
class Verdict:
    status: str  # holds | violated | unknown
    reason: str = ""
    case: int | None = None
    x32: np.ndarray | None = None
    y64: np.ndarray | None = None
    y32: np.ndarray | None = None
    unsafe: str = ""
    stats: dict[str, Any] = field(default_factory=dict)
    seconds: float = 0.0
    found_by: str = ""


@contextmanager
def _one_blas_thread() -> Iterator[None]:
    """The bound computations are many small GEMMs: BLAS threads only spin on a shared machine."""
    try:
        from threadpoolctl import threadpool_limits
    except ImportError:  # pragma: no cover
        yield
        return
    with threadpool_limits(1):
        yield


@dataclass(frozen=True)
class LeafSolve:
    """The verifier's leaf solver (a Query to a Solution with the chosen backend, within ``deadline``): a class,
    not a closure, so that branch and bound's worker processes can be handed it (:mod:`..compile.bab_parallel`)."""

    backend_name: str
    options: SolveOptions
    deadline: float  # perf_counter value (the system's monotonic clock: the same in every process)

    def __call__(self, query, time_limit: float | None = None, bound_only: bool = False) -> Solution:
        """``bound_only``: the caller expects a proof (infeasible), not a point: the backend's options for a
        search by bound (HiGHS: primal heuristics off; see ``HighsBackend.bound_only_options``)."""
        from ..solvers.registry import choose_backend

        left = max(0.1, self.deadline - time.perf_counter())
        if time_limit is not None:  # a caller's share of the time left (branch and bound's MILP fallback)
            left = max(0.1, min(left, time_limit))
        backend, _ = choose_backend(self.backend_name, query, "MILP")
        extra = {**(getattr(backend, "bound_only_options", {}) if bound_only else {}), **self.options.extra}
        opts = SolveOptions(time_limit=min(left, self.options.time_limit or left), seed=self.options.seed,
                            threads=1, extra=extra, relaxation_first=True)
        return backend.solve(query, opts)


def _bound_tightener():
    """HiGHS's bound tightening, for branch and bound's optional refinement of the root's bounds (compile imports
    no solver); None without highspy."""
    from ..solvers.highs import HighsBackend

    backend = HighsBackend()
    return backend.tighten_bounds if backend.available() else None


# ---------------------------------------------------------------------------- which complete method (issue 12)

METHODS = ("auto", "input-split", "relu-split", "milp")
MAX_INPUTS_TO_SPLIT = 20


RESTART_SHARE = 0.1  # of the time limit, for the falsifier's random restarts on networks with many inputs


def restart_seconds(rn: ReluNet, limit: float, n_cases: int) -> float:
    """The falsifier's time for random restarts per case: a share of the limit where the input is too large to
    split (MNIST's 784 pixels: a counterexample found by restarts in 0.4 s took branch and bound 14 s), none
    where it is small (ACAS Xu's 5 inputs: the sampling stage covers the box, and most cases hold, so every
    restart second would be paid on every instance)."""
    if rn.input_size <= MAX_INPUTS_TO_SPLIT:
        return 0.0
    return RESTART_SHARE * limit / max(1, n_cases)


def proven_by_crown(rn: ReluNet, case: RegionCase) -> bool:
    """Whether one CROWN pass over the whole box refutes every unsafe conjunction (a row above its threshold, as
    in the searches).  Checked before falsifying: on mnist_fc most properties that hold fall to it in 0.06 s,
    where the restarts of the falsifier would spend 3 s looking for a counterexample that cannot exist."""
    spec = case.spec
    if rn.smooth or spec.A.shape[0] == 0 or spec.always_unsafe:
        return False
    lo = np.asarray(case.lo, float).reshape(1, -1)
    hi = np.asarray(case.hi, float).reshape(1, -1)
    bounds = backward_bounds(rn, lo, hi, forward_bounds(rn, lo, hi))
    lb = spec_lower_bounds(rn, spec.A, -spec.d, lo, hi, bounds)[0][0]
    refuted = lb > DEFAULT_TOL * (1.0 + np.abs(spec.d))
    return bool(np.all(np.bincount(spec.conj[refuted], minlength=spec.n_conj) > 0))


def choose_method(rn: ReluNet, strategy: str, backend: str) -> str:
    """The complete method for a network's shape: few inputs (ACAS Xu has 5): split the input box; many inputs
    (MNIST has 784): branch and bound over ReLU phases with optimised slopes and split multipliers; ``milp``:
    one Query per box (also whenever the backend is Marabou, which searches by itself)."""
    if strategy == "split":  # the historical name of the automatic choice
        strategy = "auto"
    if strategy not in METHODS:
        raise PatchlangError(f"unknown verification strategy `{strategy}`", help="strategies: " + ", ".join(METHODS))
    if rn.smooth:  # sigmoid/tanh: bounds only, so the input-split search without exact leaves (issue 11)
        return "input-split"
    if backend == "marabou":
        return "milp"
    if strategy == "auto":
        return "input-split" if rn.input_size <= MAX_INPUTS_TO_SPLIT else "relu-split"
    return strategy


def verify_cases(net: Network, cases: list[RegionCase], timeout: float | None = None, backend: str = "auto",
                 seed: int = 0, strategy: str = "split", falsify: bool = True, rn: ReluNet | None = None,
                 search: SearchOptions | None = None, progress: Any = None,
                 bab: BabOptions | None = None, attack: Any = None) -> Verdict:
    """Decide ``cases`` (all must be safe for "holds"), stopping at the first confirmed counterexample."""
    t0 = time.perf_counter()
    deadline = t0 + (timeout if timeout is not None else DEFAULT_TIMEOUT)
    rn = rn or relu_network(net, smooth=True)
    confirmer = Confirmer(net)
    stats: dict[str, Any] = {"evaluations": 0, "sub-boxes": 0, "queries": 0, "unconfirmed": 0}
    if rn.smooth:
        stats["smooth"] = rn.smooth
    unknown: list[str] = []
    with _one_blas_thread():
        # falsify every case first: violations are usually cheap to find, proofs are not
        if falsify and attack is not None:  # `falsify with METHOD`: a black-box falsifier (tasks.falsifiers)
            from .falsifiers import falsify_first

            found = falsify_first(net, cases, attack, confirmer, stats)
            if found is not None:
                i, x32, y64, y32, how = found
                return _violated(cases[i], i, x32, y64, y32, stats, t0, how, confirmer)
        elif falsify:
            restart = restart_seconds(rn, deadline - t0, len(cases))
            for i, case in enumerate(cases):
                if restart > 0 and proven_by_crown(rn, case):  # nothing to look for (the search proves it again);
                    continue  # only where restarts would cost seconds: on ACAS Xu the check costs more than it saves
                # one L-BFGS polish, not three, where the input-split search follows (its corners and descents
                # find what the others would; on ACAS Xu they found nothing more and cost 40% of falsifying)
                polish = 1 if choose_method(rn, strategy, backend) == "input-split" else 3
                fr = falsify_case(rn, case, FalsifyOptions(seed=seed, deadline=deadline, targeted=True, polish=polish,
                                                           restart_seconds=restart))
                stats["evaluations"] += fr.evaluations
                if fr.x is not None:
                    ok, x32, y64, y32 = confirmer.check(fr.x, case)
                    if ok:
                        return _violated(case, i, x32, y64, y32, stats, t0, "falsification", confirmer)
                    stats["unconfirmed"] += 1
        method = choose_method(rn, strategy, backend)
        stats["method"] = method
        bab_stats = BabStats()
        final_bounds: list[float] = []
        leaf = LeafSolve(backend, SolveOptions(seed=seed), deadline)
        for i, case in enumerate(cases):
            if time.perf_counter() > deadline:
                unknown.append(f"{case.label}: time limit reached before it was examined")
                continue
            confirmed: list[tuple[np.ndarray, np.ndarray, np.ndarray | None]] = []

            def confirm(x: np.ndarray, case: RegionCase = case) -> bool:
                ok, x32, y64, y32 = confirmer.check(x, case)
                if not ok:  # a boundary point: look for a deeper one nearby before giving up on it
                    x = _polish_near(rn, case, x, seed)
                    if x is not None:
                        ok, x32, y64, y32 = confirmer.check(x, case)
                if ok:
                    confirmed.append((x32, y64, y32))
                return ok

            if method == "relu-split":
                bo = bab or BabOptions()
                one = BabStats()
                res = relu_split_search(rn, case, leaf, confirm, BabOptions(
                    **{**bo.__dict__, "deadline": deadline, "tighten": bo.tighten or _bound_tightener(),
                       "progress": _labelled(progress, case.label, t0, deadline)}), one)
                bab_stats.domains += one.domains
                bab_stats.left += one.left
                if one.workers > 1:
                    stats["workers"] = one.workers
                if one.query_decided:  # parts the exact Query decided after stabilisation
                    stats["query decided"] = stats.get("query decided", 0) + one.query_decided
                if one.stabilise is not None:  # unstable ReLUs per hidden layer before and after (the last case's)
                    stats["unstable relus"] = {"before": one.stabilise.unstable_before,
                                               "after stabilising": one.stabilise.unstable_after}
                if not np.isnan(one.final_bound):
                    final_bounds.append(one.final_bound)
            else:
                opts = search or SearchOptions()
                opts = SearchOptions(**{**opts.__dict__, "deadline": deadline, "split": method != "milp",
                                        "progress": _labelled(progress, case.label, t0, deadline)})
                res = search_box(rn, case, leaf, confirm, opts)
            stats["sub-boxes"] += res.boxes
            stats["queries"] += res.queries
            stats["evaluations"] += res.evaluations
            stats["unconfirmed"] += res.unconfirmed
            if res.status == "violated" and confirmed:
                x32, y64, y32 = confirmed[-1]
                return _violated(case, i, x32, y64, y32, stats, t0, "complete search", confirmer)
            if res.status != "holds":
                unknown.append(f"{case.label}: {res.reason or 'undecided'}")
        if method == "relu-split":
            stats["domains"] = bab_stats.domains
            stats["domains left"] = bab_stats.left
            if final_bounds:
                stats["final bound"] = float(min(final_bounds))
    seconds = time.perf_counter() - t0
    if unknown:
        return Verdict(UNKNOWN, "; ".join(unknown[:3]) + (f" (and {len(unknown) - 3} more)" if len(unknown) > 3 else ""),
                       stats=stats, seconds=seconds)
    return Verdict(HOLDS, stats=stats, seconds=seconds)


def second_method_holds(net: Network, cases: list[RegionCase], used: str | None, seed: int, budget: float):
    """Re-prove "holds" with the complete method the search did not use (input splitting <-> ReLU-split branch
    and bound), leaves solved by Gurobi where it is installed and licensed for their size, else HiGHS; no
    falsification first.  For networks too large for the exact Z3 re-check (:func:`certify.record_holds` calls
    it): a second algorithm over the same encoders, so a bug in one search cannot make both agree.  Returns a
    :class:`certify.Certificate`-like ``(certified, method)``: True, False (undecided in ``budget`` seconds) or
    None (it found a counterexample: the claim is wrong)."""
    rn = relu_network(net, smooth=True)
    if rn.smooth:
        return False, (f"not independently certified: no second complete method applies to {'/'.join(rn.smooth)} "
                       "activations (only the input-split search bounds them)")
    first = used if used in ("input-split", "relu-split", "milp") else choose_method(rn, "auto", "auto")
    other = "relu-split" if first in ("input-split", "milp") else "input-split"
    verdict = verify_cases(net, cases, timeout=budget, backend="auto", seed=seed + 1, strategy=other,
                           falsify=False, rn=rn)
    what = f"{other} search, leaves by Gurobi where licensed else HiGHS; the first proof used {first}"
    if verdict.status == HOLDS:
        return True, f"re-proven by a second method: {what}, {verdict.seconds:.1f}s"
    if verdict.status == VIOLATED:
        return None, f"the second method ({what}) finds a counterexample in {cases[verdict.case or 0].label}"
    return False, f"not independently certified: the second method ({what}) was undecided within {budget:g}s"


def _labelled(progress: Any, label: str, t0: float, deadline: float) -> Any:
    """The caller's progress callback with the case's name, the total elapsed time and the time limit added."""
    if progress is None:
        return None

    def report(info: dict[str, Any]) -> None:
        progress({**info, "case": label, "elapsed": time.perf_counter() - t0, "limit": deadline - t0})

    return report


def _polish_near(rn: ReluNet, case: RegionCase, x: np.ndarray, seed: int) -> np.ndarray | None:
    """Falsification in a small box around ``x`` (1% of the case's widths): a candidate on the boundary of the
    unsafe region usually has strictly unsafe neighbours, which survive float32 rounding."""
    r = 0.01 * (case.hi - case.lo)
    near = RegionCase(np.maximum(case.lo, x - r), np.minimum(case.hi, x + r), case.spec, case.label)
    fr = falsify_case(rn, near, FalsifyOptions(samples=200, starts=8, steps=30, polish=1, seed=seed))
    return fr.x


def _violated(case: RegionCase, i: int, x32: np.ndarray, y64: np.ndarray, y32: np.ndarray | None,
              stats: dict[str, Any], t0: float, how: str, confirmer: Confirmer) -> Verdict:
    which = case.spec.which(y64[None])
    text = "; ".join(case.spec.texts[j] for j in which if j < len(case.spec.texts))
    v = Verdict(VIOLATED, case=i, x32=x32, y64=y64, y32=y32, unsafe=text, stats=stats,
                seconds=time.perf_counter() - t0, found_by=how)
    if confirmer.note:
        v.reason = confirmer.note
    return v


def save_counterexample(path: str, x32: np.ndarray, shape: tuple[int, ...]) -> None:
    """Write the counterexample as a float32 ``.npy`` in the model's input shape, atomically, through the run's
    output guard (never onto an input, never onto another output)."""
    import io

    from ..guard import write_output

    buf = io.BytesIO()
    np.save(buf, np.asarray(x32, np.float32).reshape(shape))
    write_output(path, buf.getvalue(), f"the counterexample {os.path.basename(path)}")


def _counterexample_check(task: VerifyTask, case: RegionCase, x32: np.ndarray) -> SavedCheck:
    """What a cache hit re-runs on the saved counterexample: inside the box, and no safe clause set holds there
    on the model file (a point on the boundary of a non-strict region re-checks as safe: a miss, never a wrong hit)."""
    from ..compile.goals import GoalGroup, PointGoal

    net = task.model.net
    x = np.asarray(x32, np.float64).reshape(1, -1)
    group = GoalGroup(f"{task.prop.name} (safe)", "property", task.span,
                      [PointGoal("counterexample", x[0], case.spec.safe_clauses(net.output_size, 0.0))])
    return SavedCheck("counterexample", task.save, [(group, x, 0.0, task.span.line, False)],
                      model=os.path.abspath(task.model.path),
                      box=(np.asarray(case.lo, np.float64), np.asarray(case.hi, np.float64)))


def _fmt_vec(v: np.ndarray | None) -> str:
    if v is None:
        return "-"
    v = np.asarray(v).reshape(-1)
    body = ", ".join(f"{float(a):.6g}" for a in v[:8])
    return f"[{body}{', ...' if v.size > 8 else ''}]"


def run_verify(task: VerifyTask, run: Any) -> TaskResult:
    """The `verify` statement (``run`` is the CLI's RunOptions)."""
    net = task.model.net
    result = TaskResult(task.name, task.kind, UNKNOWN, line=task.span.line, problem_class="MILP",
                        class_reason="complete verification over an input region (falsify first, then input "
                                     "splitting with symbolic bounds and MILP leaves)")
    cases = property_cases(task.prop, net)
    opts = dict(task.backend.options)
    backend = run.backend or task.backend.name
    timeout = task.timeout if task.timeout is not None else (run.time_limit or DEFAULT_TIMEOUT)
    strategy = str(opts.get("strategy", "split"))
    verdict = verify_cases(net, cases, timeout, backend if backend != "milp" else "auto", seed=run.seed,
                           strategy=strategy, falsify=bool(opts.get("falsify", 1)),
                           progress=getattr(run, "progress", None),
                           # `run --jobs N` budgets cores // N per task; alone, branch and bound uses every core
                           bab=BabOptions(workers=getattr(run, "threads", None) or 0),
                           attack=None if task.falsify is None else attack_options(task.falsify, timeout, run.seed))
    result.status = verdict.status
    result.backend = "patchlang-bab" + (f" + {backend}" if backend not in ("auto", "milp") else " + highs")
    result.seconds["total"] = verdict.seconds
    result.details.update({"cases": len(cases), "evaluations": verdict.stats.get("evaluations", 0),
                           "sub-boxes": verdict.stats.get("sub-boxes", 0),
                           "queries": verdict.stats.get("queries", 0)})
    method = verdict.stats.get("method")
    if method is not None:
        result.details["method"] = method
    if verdict.stats.get("smooth"):
        result.class_reason = ("verification over an input region through smooth activations (falsify first, then "
                               "input splitting with sound linear bounds only: no exact leaves, so a box the "
                               "bounds cannot refute stays undecided)")
    if method == "relu-split":  # issue 12: the count of ReLU-split domains and the final bound of the proof
        result.class_reason = ("complete verification over an input region (falsify first, then branch and bound "
                               "over ReLU phases with optimised bounds and MILP leaves)")
        result.details["domains"] = verdict.stats.get("domains", 0)
        if "final bound" in verdict.stats:
            result.details["final bound"] = verdict.stats["final bound"]
        for key in ("unstable relus", "query decided"):
            if key in verdict.stats:
                result.details[key] = verdict.stats[key]
    elif method == "milp":
        result.class_reason = "complete verification over an input region (falsify first, then one MILP per box)"
    if "falsifier" in verdict.stats:
        result.details["falsifier"] = verdict.stats["falsifier"]
        result.details["falsifier queries"] = verdict.stats["falsifier queries"]
        result.seconds["falsify"] = verdict.stats["falsify seconds"]
        result.notes.extend(verdict.stats.get("notes", []))
    if verdict.status == VIOLATED:
        case = cases[verdict.case or 0]
        result.message = (f"counterexample in {case.label} (found by {verdict.found_by}), unsafe: {verdict.unsafe}; "
                          "confirmed in float64" + ("" if verdict.y32 is None else " and by onnxruntime (float32)"))
        result.details["input"] = _fmt_vec(verdict.x32)
        result.details["output64"] = _fmt_vec(verdict.y64)
        if verdict.y32 is not None:
            result.details["output32"] = _fmt_vec(verdict.y32)
        result.details["counterexample"] = np.asarray(verdict.x32, np.float32).reshape(-1).tolist()
        if verdict.reason:
            result.notes.append(verdict.reason)
        if task.save and run.write_files:
            save_counterexample(task.save, verdict.x32, net.input_shape)
            result.files.append(task.save)
            result.recheck.append(_counterexample_check(task, case, verdict.x32))
    elif verdict.status == HOLDS:
        result.message = (f"proven on all {len(cases)} input box(es): no input reaches the unsafe region "
                          "(bounds enlarged by 1e-6 toward unsafe)")
        from .certify import record_holds

        record_holds(result, net, cases, run.seed, timeout, second_method=second_method_holds,
                     first_seconds=verdict.seconds)
    else:
        result.message = f"undecided: {verdict.reason}"
    return result
