"""`patchlang plan`: what `run` would do for each task, without solving.

For a patch task (and the patch part of a repair) the view reads the chain the planner would build
(:class:`patchlang.plan.chain.Planner`) and asks each step's ``accepts`` on the problem as it would reach that step;
the ``encode`` step is applied (building the query is cheap next to solving it), so the query size is exact and
the backend ``auto`` would choose is known.  Steps that solve while they are applied (the row reductions, L∞
bisection, the fixed-phase bound) are only asked whether they apply, never run.  A verify task's queries depend on
how the region splits while solving: its size is an estimate (input dimension, ReLUs, region boxes).
"""

from __future__ import annotations

from dataclasses import dataclass, field

from ..lang.program import ExpertsTask, PatchTask, RepairTask, VerifyTask


@dataclass
class TaskPlan:
    name: str
    kind: str
    line: int
    problem_class: str
    reason: str
    backend: str
    query: dict[str, int] = field(default_factory=dict)
    query_exact: bool = True  # False: an estimate (the query is only built while solving)
    steps: list[str] = field(default_factory=list)
    cached: str = "no cache"  # "cached" | "not cached" | "no cache" (the task kind is never cached) | "--no-cache"

    @property
    def to_run(self) -> bool:
        return self.cached != "cached"


def plan_program(program, backend: str | None = None, only: list[str] | None = None,
                 cache_state=None) -> list[TaskPlan]:
    """A :class:`TaskPlan` per task (those named in ``only``), in source order.  ``cache_state(task)`` says whether
    a cached result applies (see :mod:`patchlang.cache`)."""
    out = []
    for task in program.tasks:
        if only and task.name not in only:
            continue
        if isinstance(task, PatchTask):
            p = _patch_plan(task, backend or task.backend.name)
        elif isinstance(task, RepairTask):
            p = _patch_plan(task.patch, backend or task.patch.backend.name)
            p.name, p.kind, p.line = task.name, task.kind, task.span.line
            p.query_exact = False  # the first round's query: counterexamples found while solving add goals
            p.steps = ["verify the property (falsify, then complete verification)",
                       "patch the counterexamples, then verify again (rounds until proven):"] + \
                      ["  " + s for s in p.steps]
        elif isinstance(task, ExpertsTask):
            p = _experts_plan(task, backend)
        elif getattr(task, "kind", "") == "attack":
            p = _attack_plan(task, backend or task.backend.name)
        else:
            p = _verify_plan(task, backend or task.backend.name)
        if cache_state is not None:
            p.cached = cache_state(task)
        out.append(p)
    return out


def _experts_plan(task: ExpertsTask, backend: str | None) -> TaskPlan:
    """The plan of the first expert (the others are the same query for another class), then the combinations."""
    first = task.experts[0].patch
    p = _patch_plan(first, backend or first.backend.name)
    p.name, p.kind, p.line = task.name, task.kind, task.span.line
    p.steps = ([f"{len(task.experts)} expert(s), one patch per class; the first (class {task.experts[0].label}):"]
               + ["  " + s for s in p.steps]
               + [f"combine ({', '.join(task.combinations)}), each file checked with onnxruntime"])
    return p


def _patch_plan(task: PatchTask, backend_name: str) -> TaskPlan:
    from ..plan.away import single_away_candidates
    from ..plan.chain import Planner, hidden_goal_steps
    from ..plan.reduction import PatchProblem
    from ..solvers.registry import choose_backend
    from .patch import RunOptions, build_groups, solve_options

    net = task.model.net
    groups = build_groups(net, task.goals, task.margin)
    options = solve_options(task, RunOptions())
    planner = Planner(backend_name, hidden_goal_steps(groups))
    plan = TaskPlan(task.name, task.kind, task.span.line, task.problem_class, task.class_reason, backend_name)
    problem = PatchProblem(net, task, groups, options)
    caps = planner.capabilities
    if single_away_candidates(net, task) is not None:
        plan.steps.append("away_candidates: one query per candidate label, best first")
    lazy = planner.lazy_keep(net, task, groups)
    if lazy is not None:
        plan.steps.append("lazy_keep: keep points added in rounds, as the optimum breaks them")
    steps = planner.steps(tidy=True)
    rows = [s for s in steps if s.name in ("one_unknown_per_row", "keep_bracket") and s.accepts(problem, caps)]
    if rows:
        plan.steps.append(f"{rows[0].name}: the weight edit solved one row at a time (sizes decided while solving)")
        plan.query_exact = False
    for step in steps:
        if step.name in ("one_unknown_per_row", "keep_bracket"):
            continue
        if step.name == "least_l1_tidy":
            if step.accepts(problem, caps):
                plan.steps.append("least_l1_tidy: among the optimal patches, the one with the least L1 change")
            continue
        if step.name == "encode" and not rows:
            problem, _ = step.apply(problem, _no_budget(options))
            q = problem.enc.query
            plan.query = {"variables": q.n_vars, "rows": q.n_rows, "nonzeros": int(q.A.nnz),
                          "integers": q.n_integer}
            plan.steps.append(f"encode: {q.problem_class} query, {q.n_vars} variables, {q.n_rows} rows")
            klass = "SMT" if task.problem_class == "SMT" else q.problem_class
            chosen, _ = choose_backend(backend_name, q, klass)
            plan.backend = chosen.name if backend_name in ("auto", "milp") else backend_name
            continue
        if rows or problem.enc is None and step.name != "linf_bisection":
            continue
        if step.name == "lp_bound_tightening":
            if step.requires <= caps and problem.enc.query.problem_class == "MILP":
                plan.steps.append("lp_bound_tightening: if the fixed-phase bound finds a warm start")
            continue
        if step.accepts(problem, caps):
            plan.steps.append(_STEP_TEXT.get(step.name, step.name))
    if rows and plan.backend in ("auto", "milp"):
        plan.backend = "highs"
    plan.steps.append(f"solve with {plan.backend}; check independently (float64 and onnxruntime)")
    return plan


_STEP_TEXT = {
    "linf_bisection": "linf_bisection: the L∞ optimum by bisection over feasibility LPs",
    "fixed_phase_bound": "fixed_phase_bound: a derived bound and a checked warm start for the MILP",
}


def _no_budget(options):
    from ..plan.budget import Budget

    return Budget.of(options)


def _attack_plan(task, backend_name: str) -> TaskPlan:
    """What an attack does per input (see :mod:`patchlang.tasks.attack`): no query is built before it runs."""
    from ..compile.bounds import relu_network

    rn = relu_network(task.model.net)
    size = {"inputs": rn.input_size, "relus": int(sum(W.shape[0] for W in rn.Ws[:-1])), "points": len(task.points)}
    if task.method == "patch":
        steps = ["patch: the middle layer's weights (the patch pipeline), per input",
                 "reproduce: LPs for the hidden values, layer by layer down to the input",
                 "input: the fewest changed inputs (an LP, then a short MILP)"]
    else:
        steps = ["fast attack: greedy changed inputs (an upper bound)",
                 ("bound: CROWN over 'at most k inputs change', k = 1, 2, ... (one input: an exact line walk)"
                  if task.minimize == "l0" else "bound: CROWN over each input's box, per target"),
                 f"decide: one MILP per target the bounds leave open ({backend_name})"]
    return TaskPlan(task.name, task.kind, task.span.line, task.problem_class, task.class_reason,
                    "highs" if backend_name in ("auto", "milp") else backend_name, size, False,
                    steps + ["check: each adversarial input in float64 and by onnxruntime"])


def _verify_plan(task: VerifyTask, backend_name: str) -> TaskPlan:
    net = task.model.net
    from ..compile.bounds import relu_network
    from .falsify_only import FALLBACK_METHODS, verify_class

    cls, reason = verify_class(task)
    if cls == "none":  # `falsify only`, or a model the encoder refuses: a black-box search, no query (issue 11)
        method = task.falsify.method if task.falsify is not None else ", then ".join(FALLBACK_METHODS)
        return TaskPlan(task.name, task.kind, task.span.line, cls, reason, "none",
                        {"inputs": net.input_size, "boxes": len(task.prop.boxes)}, False,
                        [f"falsify: black-box search ({method}) on the model file (onnxruntime); no proof, so "
                         "the answer is violated or unknown"])
    rn = relu_network(net, smooth=True)  # `check` (tasks.dryrun) already lowered it: a verify task's network is a ReLU chain
    size = {"inputs": rn.input_size, "relus": int(sum(W.shape[0] for W in rn.Ws[:-1])),
            "boxes": len(task.prop.boxes)}
    return TaskPlan(task.name, task.kind, task.span.line, "MILP",
                    "complete verification over an input region (falsify first)",
                    "highs" if backend_name in ("auto", "milp") else backend_name, size, False,
                    ["falsify: global optimisers on the network (onnxruntime)",
                     "bound: interval and symbolic bounds over each region box",
                     (f"decide: split the input boxes until the bounds refute each piece (no exact query through "
                      f"{'/'.join(rn.smooth)})" if rn.smooth else
                      f"decide: one MILP per undecided box and property case ({backend_name})")])
