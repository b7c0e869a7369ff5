"""Lower every verify and repair task without solving, so that `check` refuses exactly what `run` would.

The checker (``lang.check``) validates names, values and shapes; some refusals only appear when a property is
lowered against a network (a network with an opaque prefix cannot be bounded over a region, a property whose
negation has too many cases).  :func:`dry_run` performs those steps for every region task and turns each refusal
into a diagnostic at the task's line, so `patchlang check` is never more optimistic than `patchlang run`.
"""

from __future__ import annotations

from ..compile.bounds import relu_network
from ..errors import Diagnostic, PatchlangError
from ..lang.program import Program, RepairTask, VerifyTask


def dry_run(program: Program) -> list[Diagnostic]:
    """One PL267 diagnostic per verify/repair task that `run` would refuse before solving (none: all fine)."""
    from .verify import property_cases

    out: list[Diagnostic] = []
    for task in program.tasks:
        if not isinstance(task, (VerifyTask, RepairTask)):
            continue
        net = task.model.net
        try:
            relu_network(net)
            property_cases(task.prop, net)
        except PatchlangError as exc:
            out.append(Diagnostic("PL267", f"`{task.name}` cannot run: {exc.message}", task.span, exc.help))
    return out
