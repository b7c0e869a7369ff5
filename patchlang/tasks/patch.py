"""The minimal-modification task: encode, solve, lift the deltas onto the network, check independently, save.

A single `away from label` point with nothing else disjunctive is solved as one LP per alternative of its
clause ("label j beats the old label", the best wins), which is exact and avoids binaries entirely; the
candidates are ordered by a closed-form lower bound and those that cannot beat the incumbent are skipped.
"""

from __future__ import annotations

import os
import tempfile
import time
from dataclasses import dataclass, replace
from typing import Any

import numpy as np

from ..compile.goals import Alternative, GoalGroup, PointGoal
from ..compile.patch import (NormSpec, PatchEncoding, alternative_lower_bound, delta_expression, encode_patch,
                             first_edited_position)
from ..errors import PatchlangError
from ..lang.program import GoalSpec, PatchTask
from ..model.ir import Network
from ..solvers.base import FEASIBLE, INFEASIBLE, OPTIMAL, TIMEOUT, UNBOUNDED, Solution, SolveOptions
from ..solvers.registry import choose_backend
from .checking import check_group
from .goals import goal_group
from .lazy import LazyKeep
from .milp_strategy import (MilpPlan, bound_reached, plan_tidy, prepare_encoding, row_setup,
                            with_start_incumbent)
from .results import INCONCLUSIVE, NO_PATCH, PATCHED, UNSOUND, TaskResult


@dataclass
class RunOptions:
    backend: str | None = None  # overrides the spec's `using`
    time_limit: float | None = None
    seed: int = 0
    verbose: bool = False
    write_files: bool = True
    progress: Any = None  # callable(dict) for long proofs (domains left, best bound, elapsed); the CLI shows it


def solve_options(task: PatchTask, run: RunOptions) -> SolveOptions:
    opts = dict(task.backend.options)
    tl = opts.pop("time_limit", None)
    gap = opts.pop("mip_gap", None)
    threads = opts.pop("threads", None)
    seed = opts.pop("seed", run.seed)
    return SolveOptions(time_limit=run.time_limit if run.time_limit is not None else tl, mip_gap=gap,
                        threads=int(threads) if threads is not None else None, seed=int(seed),
                        verbose=run.verbose, extra=opts)


def round_significand(net: Network, bits: int) -> Network:
    """Keep ``bits`` significand bits of every affine parameter (smaller exact problems, as in bias patching)."""
    out = net
    for k in range(len(net.affine_indices())):
        layer = net.affine(k)
        out = out.with_affine(k, W=_round_bits(layer.W, bits), b=_round_bits(layer.b, bits))
    return out


def _round_bits(a: np.ndarray, bits: int) -> np.ndarray:
    m, e = np.frexp(a)
    return np.ldexp(np.round(m * 2.0**bits) / 2.0**bits, e)


def distances(deltas: np.ndarray) -> dict[str, float]:
    if deltas.size == 0:
        return {"linf": 0.0, "l1": 0.0, "l0": 0.0}
    return {"linf": float(np.max(np.abs(deltas))), "l1": float(np.sum(np.abs(deltas))),
            "l0": float(np.count_nonzero(np.abs(deltas) > 1e-9))}


def build_groups(net: Network, goals: list[GoalSpec], margin: float,
                 away_override: dict[int, dict[int, int]] | None = None) -> list[GoalGroup]:
    return [goal_group(net, g, margin, override_labels=(away_override or {}).get(i)) for i, g in enumerate(goals)]


def single_away_candidates(net: Network, task: PatchTask) -> tuple[int, list[int]] | None:
    """(goal index, candidate labels) when exactly one point must move away from its label and the task is an LP."""
    if task.problem_class != "LP":
        return None
    away = [(i, g) for i, g in enumerate(task.goals) if g.kind == "away" and len(g.points)]
    if len(away) != 1 or len(away[0][1].points) != 1:
        return None
    i, g = away[0]
    own = int(g.points.y[0]) if g.points.y is not None else int(net.labels(g.points.x[:1])[0])
    return i, [j for j in range(net.output_size) if j != own]


def _away_alternative(point: PointGoal, label: int) -> Alternative:
    """The alternative of the point's `away from label` clause in which output ``label`` beats the old label."""
    (clause,) = point.clauses
    return next(a for a in clause if a.C[0, label] != 0)


def _pin_away(groups: list[GoalGroup], gi: int, label: int) -> list[GoalGroup]:
    """The goals with the single `away from label` point pinned to one alternative of its clause: the clause is
    the disjunction of these alternatives, so the best of these LPs is exactly the disjunctive optimum."""
    point = groups[gi].points[0]
    pinned = replace(groups[gi], points=[replace(point, clauses=[[_away_alternative(point, label)]])])
    return [pinned if i == gi else g for i, g in enumerate(groups)]


def _away_attempts(net: Network, task: PatchTask, point: PointGoal, labels: list[int]
                   ) -> list[tuple[int | None, float]]:
    """Candidate labels with a lower bound on their optimum, best first (ties by label, as the plain order).

    The bound ignores every other goal, so it is valid for the full problem; with the point alone at the last
    layer it is the exact optimum and only the winning candidate is ever solved."""
    expr = delta_expression(net, task.edits, task.norms, point.h)
    out = []
    for lab in labels:
        lower = -np.inf if expr is None else alternative_lower_bound(*expr, _away_alternative(point, lab), task.norms)
        out.append((lab, lower))
    return sorted(out, key=lambda a: (a[1], a[0]))


def _tie_tol(sol: Solution) -> float:
    """Objectives of separately solved LPs closer than this are treated as equal (solver tolerances)."""
    return 1e-9 * max(1.0, abs(sol.objective or 0.0))


def _better(sol: Solution, label: int | None, best: Solution, best_label: int | None) -> bool:
    """Strictly better objective, or equal within tolerance and a lower label (the order without pruning)."""
    a, b = sol.objective or 0.0, best.objective or 0.0
    if a < b - _tie_tol(best):
        return True
    return abs(a - b) <= _tie_tol(best) and label is not None and best_label is not None and label < best_label


def _tidy_primary(task: PatchTask) -> str | None:
    """The norm a second, least-L1 solve follows up on (a single-norm objective), else None."""
    return task.norms.objective[0][1] if len(task.norms.objective) == 1 else None


def lazy_keep(net: Network, task: PatchTask, groups: list[GoalGroup]) -> LazyKeep | None:
    """Working sets for the large `keep` groups of an LP or MILP (see :mod:`patchlang.tasks.lazy`), or None.

    For a MILP the gain is larger than for an LP: every keep point carries its own copy of the ReLUs after the
    edit (binaries), and a thousand of them make the MILP intractable while the few that the optimum breaks
    are cheap (bias patching, keep 1000: 9340 binaries)."""
    eligible = LazyKeep.eligible(groups)
    if task.problem_class not in ("LP", "MILP") or not eligible:
        return None
    if row_setup(net, task, groups) is not None:
        return None  # one unknown per row (milp_strategy.plan_rows): the keep points are cheap, all encoded at once
    return LazyKeep(net, groups, first_edited_position(net, task.edits), eligible)


def encode_and_solve(net: Network, task: PatchTask, groups: list[GoalGroup], norms: NormSpec | None,
                      backend_name: str, options: SolveOptions, notes: list[str], lazy: LazyKeep | None,
                      cutoff: float = np.inf) -> tuple[Solution, PatchEncoding, float, float]:
    """Encode and solve, returning build and solve seconds too.  ``norms=None``: the task's own problem
    (prepared by milp_strategy for MILPs); otherwise the tidy problem with these norms.  With ``lazy``, round
    after round until no keep point outside the working sets is broken: the same optimum as encoding them all.
    A round whose (relaxed, so lower) optimum is above ``cutoff`` ends the loop: that answer cannot win.
    The rounds share the time limit; running out with points still broken gives no answer (never a patch that
    breaks a point it was not asked about)."""
    t_build = t_solve = 0.0
    deadline = time.perf_counter() + options.time_limit if options.time_limit is not None else None
    best_bound: float | None = None  # every round solves a relaxation: its bound holds for the whole problem
    while True:
        t0 = time.perf_counter()
        sub = lazy.subset(groups) if lazy is not None else groups
        options = _until(options, deadline)
        if norms is None:
            plan = prepare_encoding(net, task, sub, options)  # MILPs: derived bound, warm start (milp_strategy)
        else:
            plan = MilpPlan(encode_patch(net, task.edits, sub, norms, name=task.name + ".tidy"), options)
        enc = plan.enc
        t1 = time.perf_counter()
        backend, bnotes = choose_backend(backend_name, enc.query,
                                         task.problem_class if norms is None else enc.query.problem_class)
        notes.extend(n for n in plan.notes + bnotes if n not in notes)
        solve_opts = _until(plan.options, deadline)  # planning used part of the time limit
        sol = plan.solution or backend.solve(enc.query, solve_opts)  # milp_strategy may have solved it already
        sol = with_start_incumbent(sol, solve_opts, plan.lp_objective)
        if sol.bound is not None and np.isfinite(sol.bound) and sol.status in (OPTIMAL, FEASIBLE, TIMEOUT):
            best_bound = sol.bound if best_bound is None else max(best_bound, sol.bound)
        t_build += t1 - t0 - plan.lp_seconds
        t_solve += time.perf_counter() - t1 + plan.lp_seconds
        if lazy is None or sol.x is None or sol.status not in (OPTIMAL, FEASIBLE):
            if sol.status == TIMEOUT and best_bound is not None:
                sol.bound = best_bound  # an earlier round's optimum may be the strongest bound known
            return sol, enc, t_build, t_solve  # an infeasible relaxation means the full problem is infeasible
        if sol.status == OPTIMAL and (sol.objective or 0.0) > cutoff:
            return sol, enc, t_build, t_solve
        probe = None
        if (norms is None and _tidy_primary(task) == "linf" and sol.status == OPTIMAL
                and enc.query.problem_class == "LP"):
            # an L∞ optimum is far from unique and its arbitrary corner breaks many points no optimum needs to
            # break; the least-L1 patch among the L∞-optimal ones (the answer we report) is the one to test.
            # Not for MILPs: there this second MILP costs more than the extra points it saves (bias patching,
            # keep 1000: 10 s of a 60 s limit)
            t2 = time.perf_counter()
            probe = _tidy(net, task, lazy.subset(groups), sol, backend_name, _until(options, deadline), "linf",
                          None, enc)
            t_solve += time.perf_counter() - t2
        layout, x = (probe[1].layout, probe[0].x) if probe is not None else enc.patch_of(sol.x)
        if not lazy.add_violated(groups, layout.apply(net, x)):
            if probe is not None:
                lazy.remember_tidy(sol, probe)
            if sol.status == FEASIBLE and best_bound is not None:
                sol.bound = best_bound
            return sol, enc, t_build, t_solve
        if deadline is not None and time.perf_counter() >= deadline:
            return (Solution(TIMEOUT, backend=sol.backend, backend_version=sol.backend_version, bound=best_bound,
                             message="time limit reached while adding keep points lazily"), enc, t_build, t_solve)


def _until(options: SolveOptions, deadline: float | None) -> SolveOptions:
    """``options`` with the time left before ``deadline`` as time limit (unchanged without a deadline): the
    task's time limit bounds the whole task, planning LPs and follow-up solves included, not each call."""
    if deadline is None:
        return options
    return replace(options, time_limit=max(deadline - time.perf_counter(), 1e-3))


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
    net = task.model.net
    result = TaskResult(task.name, task.kind, INCONCLUSIVE, line=task.span.line, problem_class=task.problem_class,
                        class_reason=task.class_reason)
    if task.round_bits is not None:
        net = round_significand(net, task.round_bits)
        result.notes.append(f"parameters rounded to {task.round_bits} significand bits before patching")
        from .rounding import rounding_notes

        result.notes.extend(rounding_notes(task.model.net, net, task.round_bits,
                                           [(g.text, g.points) for g in task.goals if len(g.points)]))
    task = _scaled_default_margin(net, task, result)
    options = solve_options(task, run)
    deadline = t_start + options.time_limit if options.time_limit is not None else None
    backend_name = run.backend or task.backend.name

    candidates = single_away_candidates(net, task)
    attempts: list[tuple[int | None, float]] = [(None, -np.inf)]  # (pinned label, lower bound of its optimum)
    base_groups = build_groups(net, task.goals, task.margin)
    if candidates is not None:
        gi, labels = candidates
        attempts = _away_attempts(net, task, base_groups[gi].points[0], labels)
    lazy = lazy_keep(net, task, base_groups)

    best: tuple[Solution, PatchEncoding, list[GoalGroup], int | None] | None = None
    t_build = t_solve = 0.0
    statuses = []
    for label, lower in attempts:
        if best is not None and lower > (best[0].objective or 0.0) + _tie_tol(best[0]):
            break  # attempts are sorted by lower bound: no later candidate can beat (or tie) the incumbent
        groups = base_groups if label is None else _pin_away(base_groups, gi, label)
        cutoff = (best[0].objective or 0.0) + _tie_tol(best[0]) if best is not None else np.inf
        sol, enc, tb, ts = encode_and_solve(net, task, groups, None, backend_name, _until(options, deadline),
                                             result.notes, lazy, cutoff)
        t_build += tb
        t_solve += ts
        statuses.append(sol.status)
        result.backend, result.backend_version = sol.backend, sol.backend_version
        _exact_details(sol, enc.query, result)
        if sol.x is not None and sol.status in (OPTIMAL, FEASIBLE):
            if best is None or _better(sol, label, best[0], best[3]):
                best = (sol, enc, groups, label)
        elif best is None and sol.status == INFEASIBLE:
            result.core = sol.core
    if candidates is not None:
        result.notes.append(f"`away from label` on one point: one LP per candidate label, best lower bound first; "
                            f"solved {len(statuses)} of {len(attempts)}, the others provably cannot do better")
    if lazy is not None:
        result.notes.append(lazy.describe(base_groups))
    result.seconds.update(build=t_build, solve=t_solve)
    last_enc = enc
    q = (best[1] if best else last_enc).query
    result.query_size = {"variables": q.n_vars, "rows": q.n_rows, "nonzeros": int(q.A.nnz),
                         "binaries": q.n_integer + len(q.relus) + sum(d.n_alternatives for d in q.disjunctions),
                         "relu_atoms": len(q.relus), "disjunctions": len(q.disjunctions)}
    result.problem_class = q.problem_class if task.problem_class != "SMT" else "SMT"
    if result.problem_class != task.problem_class:
        result.class_reason += (f"; compiled to an {result.problem_class}: the bounds fixed every ReLU phase and "
                                "every disjunction had one alternative" if result.problem_class == "LP" else "")
    if best is None:
        if all(s == INFEASIBLE for s in statuses):
            result.status = NO_PATCH
            result.message = "no patch exists: the constraints cannot all hold with the allowed edits and bounds"
            if len(statuses) == 1:
                _explain(enc, options, result, deadline)
        elif any(s == UNBOUNDED for s in statuses):
            result.status = INCONCLUSIVE
            result.message = "the problem is unbounded (internal: the norm should bound it)"
        else:
            result.status = INCONCLUSIVE
            result.message = f"solver stopped without an answer ({', '.join(sorted(set(statuses)))})"
            if TIMEOUT in statuses:
                result.message = "time limit reached before any patch was found" + bound_reached(sol)
                result.bound = sol.bound
        result.seconds["total"] = time.perf_counter() - t_start
        return result
    sol, enc, groups, _ = best
    result.objective, result.bound, result.gap = sol.objective, sol.bound, sol.gap
    primary = _tidy_primary(task)
    if primary in ("linf", "l0") and sol.status == OPTIMAL and task.problem_class != "SMT":
        tidy = _tidy(net, task, groups, sol, backend_name, _until(options, deadline), primary, lazy, enc)
        if tidy is not None:
            sol, enc = tidy
            name = "L∞" if primary == "linf" else "L0"
            scope = sol.stats.get("tidy_note")  # a MILP's tidy may be restricted to the optimum's ReLU phases
            if enc.reduction is not None:
                result.notes.append(f"among the {name}-minimal patches with one unknown per row, the least total "
                                    "row change; each row lifted to the least-L1 weights with its effect and L∞"
                                    + (f", {scope}" if scope else ""))
            else:
                result.notes.append(f"among the {name}-minimal patches, the one with the least L1 change"
                                    + (f" {scope}" if scope else ""))
    if sol.status == FEASIBLE:
        result.notes.append(f"not proven minimal: gap {sol.gap if sol.gap is not None else 'unknown'}"
                            + bound_reached(sol))
    layout, x = enc.patch_of(sol.x)  # a row-direction surrogate's solution lifted back onto the weights
    deltas = layout.deltas(x)
    result.distances = distances(deltas)
    patched = layout.apply(net, x)
    result.patched = patched
    for e, idx in zip(layout.edits, layout.var_index):
        result.deltas.append((e.label, _delta_array(e, x[idx])))
    t2 = time.perf_counter()
    check_and_save(task, net, patched, groups, result, run)
    result.seconds["check"] = time.perf_counter() - t2
    result.seconds["total"] = time.perf_counter() - t_start
    return result


def _tidy(net: Network, task: PatchTask, groups: list[GoalGroup], sol: Solution, backend_name: str,
          options: SolveOptions, primary: str = "linf", lazy: LazyKeep | None = None,
          main: PatchEncoding | None = None) -> tuple[Solution, PatchEncoding] | None:
    """Second solve: keep the optimal L∞ (to 1e-9) or L0 and minimise L1, so that parameters the goals do
    not need stay untouched instead of sitting anywhere in the L∞ box (or at the big-M bound for L0)."""
    if lazy is not None and lazy.tidy_of(sol) is not None:
        return lazy.tidy_of(sol)  # found (and checked on every keep point) while growing the working sets
    t = float(sol.objective or 0.0)
    if primary == "linf":
        bound = t + 1e-9 * max(1.0, t) if t > 1e-12 else 0.0
        if task.norms.bounds.get("linf", np.inf) < bound:
            bound = task.norms.bounds["linf"]
    else:
        bound = float(np.round(t))
    norms = NormSpec(objective=[(1.0, "l1")], bounds={**task.norms.bounds, primary: bound},
                     bound_spans=task.norms.bound_spans)
    red = main.reduction if main is not None else None
    if red is not None:  # a row-direction surrogate: the tidy problem lives in its space (its network and points)
        net, groups = red.net, red.groups
    plan = plan_tidy(main, sol, primary, bound, options, net, groups) if main is not None else None
    if plan is not None:  # a MILP: solved from the main encoding (milp_strategy.plan_tidy), no second encoding
        tidy, enc = plan.solution, plan.enc
    elif red is not None:
        return None  # encoding the tidy problem afresh would encode every weight: keep the optimum as it is
    else:
        tidy, enc, _, _ = encode_and_solve(net, task, groups, norms, backend_name, options, [], lazy)
    if tidy.status != OPTIMAL or tidy.x is None:
        return None
    tidy.objective, tidy.bound = sol.objective, sol.bound  # the task's objective is still L∞
    tidy.seconds += sol.seconds
    return tidy, enc


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


def _explain(enc: PatchEncoding, options: SolveOptions, result: TaskResult, deadline: float | None = None) -> None:
    """Name a small set of the user's statements that conflict (see :mod:`patchlang.tasks.explain`), within a
    budget (:func:`~patchlang.tasks.explain.explain_budget`, and never past the task's ``deadline``); the
    unpatched network's assignment is the reference whose ReLU phases show a conflict needs its `bound`."""
    from ..compile.fixed_phase import propagate
    from .explain import explain_budget, explain_infeasible

    t0 = time.perf_counter()
    # the encoder's own query: bounds tightened by LPs over *every* statement (obbt) would carry dropped
    # statements into a restriction and make a smaller set look conflicting
    q = enc.source or enc.query
    reference = propagate(q, enc.layout, np.zeros(q.n_vars))
    try:
        budget = explain_budget(options)
        if deadline is not None:
            budget = min(budget, max(deadline - time.perf_counter(), 0.0))
        why = explain_infeasible(q, options, budget, prefer=result.backend, reference=reference)
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


def _delta_array(edit, values: np.ndarray) -> np.ndarray:
    full = np.zeros(edit.mask.shape)
    full[edit.mask] = values
    return full


def check_and_save(task: PatchTask, original: Network, patched: Network, groups: list[GoalGroup],
                    result: TaskResult, run: RunOptions) -> None:
    """float64 check of every goal, then write the file (atomically) and check it with onnxruntime."""
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
        for spec, group in zip(task.goals, groups):
            if not group.points:
                continue
            x = spec.points.x
            y64 = patched.forward(x)
            y32 = ort.run(x.reshape((len(x), *patched.input_shape)))
            chk = check_group(group, y64, y32, task.margin, spec.span.line)
            result.checks.append(chk)
            all_ok &= chk.ok
        if not all_ok:
            result.status = UNSOUND
            result.message = ("the solver's patch does not pass the independent check "
                              "(see the check table); nothing was saved — try a larger `margin`")
            return
        result.status = PATCHED
        if target:
            save_network(patched, target)  # atomic: temp file in the target folder, then rename
            result.files.append(target)
    except PatchlangError:
        raise
    finally:
        for f in os.listdir(tmpdir):
            try:
                os.remove(os.path.join(tmpdir, f))
            except OSError:
                pass
        os.rmdir(tmpdir)
