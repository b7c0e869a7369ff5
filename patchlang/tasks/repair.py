"""`repair MODEL for PROPERTY { ... }`: counterexample-guided repair until a complete verifier proves the result.

Loop (each patch is computed from the *original* network, so the distance reported is the true distance):

1. verify the current network (falsify first, then the complete search of :mod:`patchlang.tasks.verify`);
   holds -> done; unknown -> stop, nothing is claimed;
2. violated -> add the confirmed counterexample plus a few more violating points found by falsification of the
   current network (``limit counterexamples N``, default 8 per iteration) to the set of repair points; each must
   satisfy the property's output constraints (the unsafe region's negation, :meth:`UnsafeSpec.safe_clauses`, with
   the patch's ``margin``);
3. the minimal patch for ``keep``/``change`` goals + all repair points, solved exactly as a `patch` task is
   (:func:`~patchlang.plan.solve.solve_patch`: the chain of reductions, lazy `keep` points); no patch -> not
   repairable with these edits;
4. round the edited parameters to float32 (what the file stores), and repeat.

The result network is written only after the final "holds" and after the usual independent check of every
goal in float64 and with onnxruntime on the written file.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field, replace
from typing import Any

import numpy as np

from ..compile.bounds import relu_network
from ..compile.goals import GoalGroup, PointGoal
from ..model.edits import NormSpec
from ..lang.program import RepairTask
from ..model.ir import Network
from ..solvers.base import FEASIBLE, INFEASIBLE, OPTIMAL
from .falsify import FalsifyOptions, falsify_case
from ..model.edits import norm_values
from ..plan.budget import Budget
from ..plan.solve import solve_patch
from .patch import build_groups, check_and_save, solve_options
from .step_text import step_notes
from .results import HOLDS, INCONCLUSIVE, NOT_REPAIRED, PATCHED, REPAIRED, UNKNOWN, VIOLATED, TaskResult
from .certify import certify_no_patch, record_holds
from .repair_defaults import choose as choose_defaults
from .verify import property_cases, second_method_holds, verify_cases

DEFAULT_ITERATIONS = 20
DEFAULT_CEX_PER_ITERATION = 8
VERIFY_TIMEOUT = 120.0  # per verification of an iteration's network (undecided: add near-violations)


def round_to_float32(net: Network) -> Network:
    """The network with every affine parameter rounded to float32, i.e. exactly what the ONNX file holds."""
    out = net
    for k in range(len(net.affine_indices())):
        for kind in ("weights", "biases"):
            out = out.with_params(k, kind, net.params(k, kind).astype(np.float32).astype(np.float64))
    return out


def more_counterexamples(net: Network, cases, n: int, seed: int, deadline: float) -> list[tuple[np.ndarray, int]]:
    """Up to ``n`` distinct violating inputs of the current network, found by falsification (float64)."""
    if n <= 0:
        return []
    rn = relu_network(net)
    out: list[tuple[np.ndarray, int]] = []
    for i, case in enumerate(cases):
        fr = falsify_case(rn, case, FalsifyOptions(seed=seed, starts=max(32, 4 * n), deadline=deadline), keep=n)
        for x in fr.candidates or []:
            out.append((x, i))
        if len(out) >= n:
            break
    return out[:n]


@dataclass
class RepairLoop:
    """The state of one counterexample-guided repair: what the loop has found so far and how long it may run."""

    task: RepairTask
    run: Any
    result: TaskResult
    deadline: float
    time_limit: float
    cases: list = field(default_factory=list)
    repair_points: list[tuple[np.ndarray, int]] = field(default_factory=list)
    iterations: list[dict[str, Any]] = field(default_factory=list)
    solver_notes: list[str] = field(default_factory=list)
    last_dist: dict[str, float] = field(default_factory=dict)
    undecided: int = 0  # verifications in a row that ran out of time: each doubles the next one's budget

    def __post_init__(self) -> None:
        ptask, net = self.task.patch, self.task.model.net
        self.net = self.current = net
        self.cases = property_cases(self.task.prop, net)
        self.max_iter = int(ptask.limits.get("iterations", DEFAULT_ITERATIONS))
        self.per_iter = int(ptask.limits.get("counterexamples", DEFAULT_CEX_PER_ITERATION))
        self.verify_limit = float(ptask.limits.get("verify", VERIFY_TIMEOUT))
        self.backend_name = self.run.backend or ptask.backend.name
        self.verify_backend = self.backend_name if self.backend_name in ("highs", "gurobi", "marabou") else "auto"
        self.options = solve_options(ptask, self.run)
        self.defaults = choose_defaults(net, ptask, self.cases, self.run.seed)
        samples = self.defaults.group(net, self.task.span)
        self.base_groups = self.groups = build_groups(net, ptask.goals, ptask.margin) + ([samples] if samples else [])
        disjunctive = any(len(c) > 1 for case in self.cases for c in case.spec.safe_clauses(net.output_size, 0.0))
        self.bounded_task = replace(ptask, norms=_bounded_norms(net, ptask, self.result, disjunctive))

    def step(self, it: int) -> bool:
        """One iteration: verify the current network, add counterexamples, patch.  False when the loop ends."""
        result = self.result
        left = self.deadline - time.perf_counter()
        if left <= 0:
            result.status = INCONCLUSIVE
            result.message = f"time limit ({self.time_limit:g} s) reached after {it} iteration(s); nothing proven"
            return False
        t0 = time.perf_counter()
        verdict = verify_cases(self.current, self.cases, timeout=min(left, self.verify_limit * 2.0 ** self.undecided),
                               backend=self.verify_backend, seed=self.run.seed + it)
        self.undecided = self.undecided + 1 if verdict.status not in (HOLDS, VIOLATED) else 0
        record: dict[str, Any] = {"iteration": it, "verify": verdict.status,
                                  "verify_seconds": round(time.perf_counter() - t0, 3)}
        self.iterations.append(record)
        if verdict.status == HOLDS:
            result.status = REPAIRED
            if it == 0:
                result.message = "the network already satisfies the property: nothing to repair"
                result.distances = norm_values(np.zeros(0))
            return False
        if verdict.status != VIOLATED and (it == self.max_iter or it == 0):
            result.status = INCONCLUSIVE
            result.message = f"iteration {it}: the verifier could not decide the property ({verdict.reason})"
            return False
        if it == self.max_iter:
            result.status = NOT_REPAIRED
            result.message = f"limit of {self.max_iter} iteration(s) reached while the property is still violated"
            return False
        self.add_points(it, verdict, record)
        return self.patch(it, record)

    def add_points(self, it: int, verdict, record: dict[str, Any]) -> None:
        """Counterexamples (or, when undecided, the points closest to a violation) join the points to repair."""
        seed = self.run.seed + it
        if verdict.status == VIOLATED:
            new = [(np.asarray(verdict.x32, np.float64).reshape(-1), verdict.case or 0)]
            new += more_counterexamples(self.current, self.cases, self.per_iter - 1, seed, self.deadline)
        else:
            # undecided: the patched network is barely safe somewhere; require the margin at the points closest
            # to violation, which makes the next network robustly safe there (and easier to prove)
            new = near_violations(self.current, self.cases, self.per_iter, seed, self.deadline)
            record["near_violations_added"] = len(new)
            if self.defaults.raise_margin():  # and further from the boundary at every repair point
                record["margin"] = self.defaults.margin
        self.repair_points.extend(new)
        record.setdefault("counterexamples_added", len(new))

    def patch(self, it: int, record: dict[str, Any]) -> bool:
        """The minimal patch making the property hold at every repair point (the patch tasks' own planning: MILP
        steps, lazy `keep` points); False when there is none or none in time."""
        ptask, result, net = self.task.patch, self.result, self.net
        t1 = time.perf_counter()
        n_out = net.output_size
        cex_group = GoalGroup(f"{self.task.prop.name} at counterexamples", "require", self.task.span,
                              [PointGoal(f"cex[{k}]", x, self.cases[ci].spec.safe_clauses(n_out, self.defaults.margin))
                               for k, (x, ci) in enumerate(self.repair_points)])
        self.groups = self.base_groups + [cex_group]
        opts = replace(self.options, time_limit=max(1.0, min(self.options.time_limit or np.inf,
                                                             self.deadline - time.perf_counter())))
        plan = solve_patch(net, self.bounded_task, self.groups,
                           self.backend_name if self.backend_name != "marabou" else "auto", opts, Budget.of(opts),
                           _steps_off(self.run))
        found = plan.best or plan.last
        sol = found.solution
        # how this iteration's patch was solved; the last iteration's are reported
        self.solver_notes = [f"last patch: {n}" for n in plan.notes + step_notes(plan.steps)]
        result.steps = plan.steps
        record["patch_seconds"] = round(time.perf_counter() - t1, 3)
        record["patch_status"] = sol.status
        result.backend, result.backend_version = sol.backend, sol.backend_version
        if plan.best is None and all(s == INFEASIBLE for s in plan.statuses):
            if self.defaults.fall_back():  # the default margin asked too much: the task's own before "no patch"
                record["margin"] = self.defaults.margin
                return self.patch(it, record)
            added = not np.isfinite(ptask.norms.bounds.get("linf", np.inf))
            _no_patch(it, len(self.repair_points), added, self.bounded_task, result)
            if result.status == NOT_REPAIRED:  # re-checked independently
                certify_no_patch(result, plan.infeasible, self.run.seed, self.deadline)
            return False
        if sol.x is None or sol.status not in (OPTIMAL, FEASIBLE):
            result.status = INCONCLUSIVE
            result.message = f"iteration {it}: the patch solver stopped without a patch ({sol.status})"
            return False
        layout, x = found.answer.patch
        self.current = round_to_float32(layout.apply(net, x))
        self.last_dist = norm_values(_param_deltas(net, self.current, ptask.edits))
        record.update({"linf": self.last_dist["linf"], "l1": self.last_dist["l1"], "points": len(self.repair_points),
                       "gap": sol.gap})
        result.objective, result.bound, result.gap = sol.objective, sol.bound, sol.gap
        q = found.problem.enc.query
        result.problem_class = q.problem_class
        result.query_size = {"variables": q.n_vars, "rows": q.n_rows, "nonzeros": int(q.A.nnz),
                             "binaries": q.n_integer + len(q.relus) + sum(d.n_alternatives for d in q.disjunctions)}
        return True

    def report(self) -> None:
        """Notes, the iteration log, and for a repaired network its check and file."""
        result = self.result
        result.notes.extend(self.defaults.notes())
        result.details["defaults"] = self.defaults.summary()
        result.notes.extend(self.solver_notes)
        result.details["iterations"] = len([r for r in self.iterations if "patch_status" in r])
        result.details["counterexamples"] = len(self.repair_points)
        result.details["log"] = self.iterations
        result.notes.extend(_log_line(r) for r in self.iterations)
        if result.status == REPAIRED and self.current is not self.net:
            self.finish()

    def finish(self) -> None:
        """The repaired network's deltas, independent check and file (only a checked network is `repaired`)."""
        ptask, result, net, current = self.task.patch, self.result, self.net, self.current
        result.distances = self.last_dist
        result.patched = current
        for e in ptask.edits:
            delta = current.params(e.layer, e.kind) - net.params(e.layer, e.kind)
            result.deltas.append((e.label, np.where(e.mask, delta, 0.0)))
        t2 = time.perf_counter()
        check_and_save(ptask, net, current, self.groups, result, self.run)
        result.seconds["check"] = time.perf_counter() - t2
        if result.status == PATCHED:
            result.status = REPAIRED
            result.message = (f"proven: the patched network satisfies `{self.task.prop.name}` on every input box "
                              f"after {result.details['iterations']} iteration(s)")
            record_holds(result, current, self.cases, self.run.seed,
                         self.deadline - time.perf_counter(),
                         second_method=second_method_holds,
                         first_seconds=float(self.iterations[-1].get("verify_seconds", 0.0)))  # re-proven independently


def run_repair(task: RepairTask, run: Any) -> TaskResult:
    t_start = time.perf_counter()
    result = TaskResult(task.name, task.kind, UNKNOWN, line=task.span.line, problem_class=task.patch.problem_class,
                        class_reason="counterexample-guided: verify, add counterexamples, minimal patch, verify again",
                        minimized=list(task.patch.norms.objective))
    time_limit = float(task.patch.limits.get("time", run.time_limit or 3600.0))
    loop = RepairLoop(task, run, result, deadline=t_start + time_limit, time_limit=time_limit)
    for it in range(loop.max_iter + 1):
        if not loop.step(it):
            break
    loop.report()
    result.seconds["total"] = time.perf_counter() - t_start
    return result


def _log_line(r: dict[str, Any]) -> str:
    """One iteration of the log, for the report."""
    line = f"iteration {r['iteration']}: verify {r['verify']} ({r['verify_seconds']:.2f}s)"
    if "near_violations_added" in r:
        line += f", +{r['near_violations_added']} near-violation(s)"
    elif "counterexamples_added" in r:
        line += f", +{r['counterexamples_added']} counterexample(s)"
    if "linf" in r:
        line += f", patch linf {r['linf']:.4g} l1 {r['l1']:.4g} ({r['patch_seconds']:.2f}s)"
    elif "patch_status" in r:
        line += f", patch {r['patch_status']} ({r['patch_seconds']:.2f}s)"
    return line


def near_violations(net: Network, cases, n: int, seed: int, deadline: float) -> list[tuple[np.ndarray, int]]:
    """The ``n`` inputs (over all cases) where falsification got closest to a violation."""
    rn = relu_network(net)
    scored: list[tuple[float, np.ndarray, int]] = []
    for i, case in enumerate(cases):
        fr = falsify_case(rn, case, FalsifyOptions(seed=seed, starts=max(32, 2 * n), deadline=deadline))
        pts = fr.near or [fr.best_x]
        vals = case.spec.satisfaction(rn.forward(np.array(pts)))
        scored += [(float(v), p, i) for v, p in zip(vals, pts)]
    scored.sort(key=lambda t: t[0])
    return [(p, i) for _, p, i in scored[:n]]


def _steps_off(run: Any) -> frozenset[str]:
    """Planning steps off for repair's patches: the run's own choice, plus the least-L1 follow-up (each iteration's
    patch is a step towards the repaired network, not the answer; a second MILP per iteration doubles the cost)."""
    return frozenset(getattr(run, "disable_steps", frozenset())) | {"least_l1_tidy"}


def _no_patch(it: int, points: int, added_bound: bool, bounded_task, result: TaskResult) -> None:
    """No patch at this iteration's counterexamples.  Proven only within the bounds the spec gives: when repair
    added the per-parameter bound itself (the spec has none), a larger change might still repair the network, so
    the verdict is inconclusive."""
    what = (f"iteration {it}: no patch with the allowed edits makes the property hold at the {points} "
            "counterexample(s) while meeting the other goals")
    if added_bound:
        result.status = INCONCLUSIVE
        result.message = (what + f" within |change| <= {bounded_task.norms.bounds['linf']:g}, the bound repair added "
                          "(the spec gives no `bound linf`); a larger change is not ruled out")
    else:
        result.status = NOT_REPAIRED
        result.message = what


def _bounded_norms(net: Network, ptask, result: TaskResult, disjunctive: bool = True) -> NormSpec:
    """The patch norms with a finite per-parameter bound: a property's disjunctions need one for their big-M
    constants, and every repair works within one.  Without `bound linf`, a generous default (4x the largest edited
    magnitude, at least 1) is used and said in the report (naming disjunctions only when the property has any)."""
    if np.isfinite(ptask.norms.bounds.get("linf", np.inf)):
        return ptask.norms
    biggest = max(float(np.max(np.abs(net.params(e.layer, e.kind)), initial=0.0)) for e in ptask.edits)
    bound = float(max(1.0, 4.0 * biggest))
    why = ("the property's disjunctions need a finite bound" if disjunctive
           else "repair always works within a finite bound; a larger change is not ruled out")
    result.notes.append(f"each parameter change bounded by {bound:g} (no `bound linf` given; {why})")
    return NormSpec(objective=list(ptask.norms.objective), bounds={**ptask.norms.bounds, "linf": bound},
                    bound_spans=dict(ptask.norms.bound_spans))


def _param_deltas(net: Network, patched: Network, edits) -> np.ndarray:
    parts = []
    for e in edits:
        parts.append((patched.params(e.layer, e.kind) - net.params(e.layer, e.kind))[e.mask])
    return np.concatenate(parts) if parts else np.zeros(0)
