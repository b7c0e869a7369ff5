"""Lower every verify and repair task without solving, so that `check` refuses exactly what `run` would.

The checker (``lang.check``) validates names, values and shapes; some refusals only appear when a property is
lowered against a network (a network with an opaque prefix cannot be bounded over a region, a property whose
negation has too many cases).  :func:`dry_run` performs those steps for every region task and turns each refusal
into a diagnostic at the task's line, so `patchlang check` is never more optimistic than `patchlang run`.  A verify
task on a model that cannot be encoded is not refused (it runs as a black-box search, :mod:`.falsify_only`) but
warned about (PL380): `check` says that `run` can only answer violated or unknown.
"""

from __future__ import annotations

from ..compile.bounds import relu_network
from ..errors import Diagnostic, PatchlangError
from ..lang.program import PatchTask, Program, RepairTask, VerifyTask


def dry_run(program: Program) -> list[Diagnostic]:
    """One PL267 diagnostic per verify/repair task that `run` would refuse before solving (none: all fine), and a
    PL380 warning per verify task that `run` will not try to prove (its model cannot be encoded)."""
    from .falsify_only import fallback_warning
    from .verify import property_cases

    out: list[Diagnostic] = []
    for task in program.tasks:
        backend = getattr(task, "backend", None) or getattr(getattr(task, "patch", None), "backend", None)
        problem = _backend_problem(task, backend.name if backend is not None else "auto")
        if problem is not None:
            out.append(Diagnostic("PL267", f"`{task.name}` cannot run: {problem.message}",
                                  getattr(backend, "span", None) or task.span, problem.help))
            continue
        if not isinstance(task, (VerifyTask, RepairTask)):
            continue
        net = task.model.net
        # a verify task never needs the network encoding: `falsify only`, and any model the encoder refuses, run
        # the file through onnxruntime (a black-box search); `check` says so (PL380) instead of refusing
        warning = fallback_warning(task) if isinstance(task, VerifyTask) else None
        if warning is not None:
            out.append(Diagnostic("PL380", warning, task.span, "a counterexample found this way is checked and "
                                  "reported as violated; to get a proof, give a model whose operations patchlang "
                                  "encodes (docs/language.md lists them)", severity="warning"))
        try:
            if not isinstance(task, VerifyTask):
                relu_network(net)
            property_cases(task.prop, net)
        except PatchlangError as exc:
            out.append(Diagnostic("PL267", f"`{task.name}` cannot run: {exc.message}", task.span, exc.help))
    return out


def _backend_problem(task, name: str) -> PatchlangError | None:
    """Why the backend the task names cannot run it (not installed; Marabou cannot minimise), or None."""
    if name in ("auto", "milp"):
        return None
    if name == "marabou" and isinstance(task, PatchTask):
        return PatchlangError("Marabou decides feasibility only, and a patch minimises a norm",
                              help="use `using highs`, `using gurobi` or `using z3` for a patch")
    from ..solvers.registry import get_backend

    try:
        get_backend(name)
    except PatchlangError as exc:
        return exc
    return None
