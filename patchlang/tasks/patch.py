"""The minimal-modification task: plan and solve (patchlang.plan), lift the deltas onto the network, check
independently in float64 and with onnxruntime on the written file, save, and fill in the result.

How the problem is solved (reductions, drivers, backends) is the planner's business: this module only states what
the task is, checks what comes back, and says what happened.
"""

from __future__ import annotations

import os
import tempfile
import time
from dataclasses import dataclass, replace
from typing import Any

import numpy as np

from ..compile.fixed_phase import propagate
from ..compile.goals import GoalGroup
from ..compile.patch import PatchEncoding
from ..errors import PatchlangError
from ..lang.program import GoalSpec, PatchTask
from ..model.edits import norm_values
from ..model.ir import Network
from ..plan.budget import Budget
from ..plan.chain import hidden_goal_steps, planning_backend
from ..plan.conflict import explain_budget
from ..plan.solve import PlanResult, solve_patch
from ..solution import FEASIBLE, INFEASIBLE, OPTIMAL, TIMEOUT, UNBOUNDED, Solution, SolveOptions
from .certify import certify_no_patch
from .checking import check_group
from .explain import explain_infeasible
from .goals import goal_group, has_strict
from .results import INCONCLUSIVE, NO_PATCH, PATCHED, UNSOUND, SavedCheck, TaskResult
from .rounding import round_significand, rounding_notes
from .step_text import step_notes


@dataclass
class RunOptions:
    backend: str | None = None  # overrides the spec's `using`
    time_limit: float | None = None
    seed: int = 0
    verbose: bool = False
    write_files: bool = True
    disable_steps: frozenset[str] = frozenset()  # planning steps switched off (tests; see plan.chain.STEP_NAMES)
    progress: Any = None  # callable(dict) for long proofs (domains left, best bound, elapsed); the CLI shows it
    threads: int | None = None  # solver threads when the task's `using` sets none (`run --jobs` budgets them)
    explain: bool = True  # name the conflicting statements of a task with no patch (experts skip it: many tasks)
    certify: bool = True  # re-check a "no patch" independently (experts skip it: a class without one is no claim)


def solve_options(task: PatchTask, run: RunOptions) -> SolveOptions:
    opts = dict(task.backend.options)
    tl = opts.pop("time_limit", None)
    if tl is None:  # `limit time SECONDS` in the block bounds the task like `using ... (time_limit = ...)` does
        tl = getattr(task, "limits", {}).get("time")
    gap = opts.pop("mip_gap", None)
    threads = opts.pop("threads", run.threads)
    seed = opts.pop("seed", run.seed)
    return SolveOptions(time_limit=run.time_limit if run.time_limit is not None else tl, mip_gap=gap,
                        threads=int(threads) if threads is not None else None, seed=int(seed),
                        verbose=run.verbose, extra=opts)


def build_groups(net: Network, goals: list[GoalSpec], margin: float,
                 away_override: dict[int, dict[int, int]] | None = None) -> list[GoalGroup]:
    return [goal_group(net, g, margin, override_labels=(away_override or {}).get(i)) for i, g in enumerate(goals)]


def bound_reached(sol: Solution) -> str:
    """What a solver that stopped early proved: ``"; every patch has objective >= B"`` (empty when nothing)."""
    if sol.bound is None or not np.isfinite(sol.bound) or sol.bound <= 0:
        return ""
    text = f"; every patch has objective >= {sol.bound:.6g}"
    if sol.objective is not None:
        text += f" (best found {sol.objective:.6g})"
    return text


MARGIN_RELATIVE = 1e-5


def _scaled_default_margin(net: Network, task: PatchTask, result: TaskResult) -> PatchTask:
    """Without an explicit `margin`, strict inequalities get max(default, 1e-5 x the largest output magnitude).

    Why: the float32 file must satisfy them outright, and float32 rounding grows with the outputs (raw-pixel
    MNIST nets reach 5e4, where 1e-3 is below one float32 ulp of the accumulated dot products)."""
    if task.margin_explicit:
        return task
    scale = 0.0
    for g in task.goals:
        if len(g.points):
            scale = max(scale, float(np.max(np.abs(net.forward(g.points.x)))))
    margin = max(task.margin, MARGIN_RELATIVE * scale)
    if margin > task.margin:
        result.notes.append(f"margin {margin:.3g} for strict inequalities (default: {MARGIN_RELATIVE:g} x the "
                            f"largest output magnitude {scale:.3g}; set `margin` to choose)")
        return replace(task, margin=margin)
    return task


def run_patch(task: PatchTask, run: RunOptions) -> TaskResult:
    t_start = time.perf_counter()
    result = TaskResult(task.name, task.kind, INCONCLUSIVE, line=task.span.line, problem_class=task.problem_class,
                        class_reason=task.class_reason, minimized=list(task.norms.objective))
    net, task = _prepare(task, result)
    options = solve_options(task, run)
    budget = Budget.of(options)
    backend_name = run.backend or task.backend.name
    groups = build_groups(net, task.goals, task.margin)
    disable = run.disable_steps | hidden_goal_steps(groups)  # hidden goals: the plain encoding
    plan = solve_patch(net, task, groups, backend_name, options, budget, disable)
    _describe_plan(plan, task, result)
    if plan.best is None:
        _no_patch(plan, options, budget, backend_name, result, run.explain, run.certify)
    else:
        _patched(plan, task, net, groups, run, result)
    result.seconds["total"] = time.perf_counter() - t_start
    return result


def _prepare(task: PatchTask, result: TaskResult) -> tuple[Network, PatchTask]:
    """The network to patch (rounded when asked) and the task with its default margin scaled."""
    net = task.model.net
    if task.round_bits is not None:
        net = round_significand(net, task.round_bits)
        result.notes.append(f"parameters rounded to {task.round_bits} significand bits before patching")
        result.notes.extend(rounding_notes(task.model.net, net, task.round_bits,
                                           [(g.text, g.points) for g in task.goals if len(g.points)]))
    return net, _scaled_default_margin(net, task, result)


def _describe_plan(plan: PlanResult, task: PatchTask, result: TaskResult) -> None:
    """Steps, notes, backend, timings and the size of the query solved (the best attempt's, else the last)."""
    outcome = plan.best or plan.last
    sol = plan.last.solution
    result.backend, result.backend_version = (plan.best or plan.last).solution.backend, sol.backend_version
    if plan.best is not None:
        result.backend_version = plan.best.solution.backend_version
    result.steps = plan.steps
    notes = plan.notes + step_notes(plan.steps)
    result.notes.extend(n for n in notes if n not in result.notes)
    result.seconds.update(build=plan.build_seconds, solve=plan.solve_seconds)
    enc = outcome.problem.enc
    if enc is None:  # the budget ran out before anything was encoded
        return
    q = enc.query
    _exact_details(outcome.solution, q, result)
    result.query_size = {"variables": q.n_vars, "rows": q.n_rows, "nonzeros": int(q.A.nnz),
                         "binaries": q.n_integer + len(q.relus) + sum(d.n_alternatives for d in q.disjunctions),
                         "relu_atoms": len(q.relus), "disjunctions": len(q.disjunctions)}
    result.problem_class = q.problem_class if task.problem_class != "SMT" else "SMT"
    if result.problem_class != task.problem_class:
        result.class_reason += (f"; compiled to an {result.problem_class}: the bounds fixed every ReLU phase and "
                                "every disjunction had one alternative" if result.problem_class == "LP" else "")


def _no_patch(plan: PlanResult, options: SolveOptions, budget: Budget, backend_name: str,
              result: TaskResult, explain: bool = True, certify: bool = True) -> None:
    """The verdict when no attempt found a patch: proven infeasible, unbounded, or stopped (with its bound)."""
    statuses, sol = plan.statuses, plan.last.solution
    if all(s == INFEASIBLE for s in statuses):
        result.status = NO_PATCH
        result.core = sol.core
        result.message = "no patch exists: the constraints cannot all hold with the allowed edits and bounds"
        if len(statuses) == 1 and plan.last.problem.enc is not None and explain:
            _explain(plan.last.problem.enc, options, result, budget, backend_name)
        if certify:
            certify_no_patch(result, plan.infeasible, options.seed, budget.deadline)  # re-checked independently
        else:
            result.notes.append("no patch: not independently re-checked")
    elif any(s == UNBOUNDED for s in statuses):
        result.message = "the problem is unbounded (internal: the norm should bound it)"
    else:
        result.message = f"solver stopped without an answer ({', '.join(sorted(set(statuses)))})"
        if TIMEOUT in statuses:
            result.message = "time limit reached before any patch was found" + bound_reached(sol)
            result.bound = sol.bound


def _patched(plan: PlanResult, task: PatchTask, net: Network, groups: list[GoalGroup], run: RunOptions,
             result: TaskResult) -> None:
    """Apply the best answer's patch, report its figures, check it independently and save it."""
    answer = plan.best.answer
    sol = answer.solution
    result.objective, result.bound, result.gap = sol.objective, sol.bound, sol.gap
    if sol.status == FEASIBLE:
        result.notes.append(f"not proven minimal: gap {f'{sol.gap:.3g}' if sol.gap is not None else 'unknown'}"
                            + bound_reached(sol))
    layout, x = answer.patch  # on the task's own edits (a row surrogate's solution is lifted back already)
    result.distances = norm_values(layout.deltas(x))
    patched = layout.apply(net, x)
    result.patched = patched
    for e, idx in zip(layout.edits, layout.var_index):
        result.deltas.append((e.label, _delta_array(e, x[idx])))
    t2 = time.perf_counter()
    check_and_save(task, net, patched, groups, result, run)
    result.seconds["check"] = time.perf_counter() - t2


def _explain(enc: PatchEncoding, options: SolveOptions, result: TaskResult, budget: Budget,
             backend_name: str) -> None:
    """Name a small set of the user's statements that conflict (see :mod:`patchlang.plan.conflict`), within a
    share of the task's budget; the unpatched network's assignment is the reference whose ReLU phases show a
    conflict needs its `bound`.  The checks use the task's backend (HiGHS when patchlang chooses)."""
    t0 = time.perf_counter()
    # the encoder's own query: bounds tightened by LPs over *every* statement would carry dropped statements into
    # a restriction and make a smaller set look conflicting
    q = enc.source or enc.query
    reference = propagate(q, enc.layout, np.zeros(q.n_vars))
    share = budget.cap(explain_budget(options))
    try:
        why = explain_infeasible(q, options, share, prefer=result.backend, reference=reference,
                                 backend=planning_backend(backend_name))
    except PatchlangError as exc:
        result.notes.append(f"no conflict explanation: {exc.message}")
        return
    result.seconds["explain"] = time.perf_counter() - t0
    if why is None:
        result.notes.append("no conflict explanation was found within the time limit")
        return
    result.core = why.lines
    result.message = f"no patch exists: {why.sentence}"
    result.notes.append(f"conflict found by {why.method} ({why.calls} solver calls)"
                        + ("; each statement listed is needed" if why.minimal else "; it may not be minimal"))


def _exact_details(sol: Solution, q, result: TaskResult) -> None:
    """Z3's exact figures (method, calls, bracket) for the report, and the warning for nonlinear searches."""
    if len(getattr(q, "products", ())):
        note = (f"nonlinear: {len(q.products)} products of unknowns; Z3's search may not end — "
                "set a time limit (`using z3 (time_limit = 60)` or --time-limit)")
        if note not in result.notes:
            result.notes.append(note)
    st = sol.stats
    if sol.backend != "z3" or "method" not in st:
        return
    text = f"{st['method']}, {st.get('calls', 1)} call(s)"
    if "bracket_float" in st and st["bracket_float"][0] is not None:
        lo, hi = st["bracket_float"]
        text += f", bracket [{lo:.10g}, {hi:.10g}]"
    if sol.status == OPTIMAL and sol.objective is not None:
        text += ", optimum exact"
    result.details["z3"] = text
    result.details["z3_exact"] = {k: st[k] for k in ("objective_exact", "bracket") if k in st}


def _delta_array(edit, values: np.ndarray) -> np.ndarray:
    full = np.zeros(edit.mask.shape)
    full[edit.mask] = values
    return full


def hidden_values(net: Network, at: int, x: np.ndarray) -> tuple[np.ndarray, np.ndarray | None]:
    """Outputs of layer position ``at`` in float64 and, for a network without an opaque prefix, in float32 with
    onnxruntime on a model of the layers up to it (None with a prefix: the float64 check alone)."""
    from ..model.build import build_onnx
    from ..model.runtime import OrtModel

    h = net.to_suffix_input(x)
    y64 = net.forward_suffix(h, 0, at + 1)
    if net.prefix is not None:
        return y64, None
    return y64, OrtModel(build_onnx(net.layers[:at + 1], (net.suffix_in_size,))).run(h.astype(np.float32))


def check_and_save(task: PatchTask, original: Network, patched: Network, groups: list[GoalGroup],
                    result: TaskResult, run: RunOptions) -> None:
    """float64 check of every goal, then write the file (atomically) and check it with onnxruntime."""
    from ..guard import claim_output
    from ..model.onnx_export import save_network
    from ..model.runtime import OrtModel

    target = task.save if (task.save and run.write_files) else None
    tmpdir = tempfile.mkdtemp(prefix="patchlang-")
    suffix = ".nnet" if target and target.endswith(".nnet") else ".onnx"
    tmp_path = os.path.join(tmpdir, "patched" + suffix)
    ort_path = tmp_path
    try:
        save_network(patched, tmp_path)
        if suffix == ".nnet":
            # onnxruntime cannot read NNet: check the same parameters through an ONNX build of them
            ort_path = os.path.join(tmpdir, "patched_check.onnx")
            save_network(patched, ort_path)
        ort = OrtModel(ort_path)
        all_ok = True
        saved = SavedCheck("network", None)
        for spec, group in zip(task.goals, groups):
            if not group.points:
                continue
            x = spec.points.x
            if group.at is None:
                y64 = patched.forward(x)
                y32 = ort.run(x.reshape((len(x), *patched.input_shape)))
            else:  # hidden pre-activations: float64, and float32 through the layers up to them
                y64, y32 = hidden_values(patched, group.at, x)
            chk = check_group(group, y64, y32, task.margin, spec.span.line, strict=has_strict(spec))
            result.checks.append(chk)
            saved.groups.append((group, x, task.margin, spec.span.line, has_strict(spec)))
            all_ok &= chk.ok
        if not all_ok:
            result.status = UNSOUND
            result.message = ("the solver's patch does not pass the independent check "
                              "(see the check table); nothing was saved — try a larger `margin`")
            return
        result.status = PATCHED
        if target:
            claim_output(target, f"the patched model of `{task.name}`")  # never an input, never twice
            save_network(patched, target)  # atomic: temp file in the target folder, then rename
            result.files.append(target)
            saved.path = target
        result.recheck.append(saved)
    except PatchlangError:
        raise
    finally:
        for f in os.listdir(tmpdir):
            try:
                os.remove(os.path.join(tmpdir, f))
            except OSError:
                pass
        os.rmdir(tmpdir)
