"""Task selection for ``patchlang run --select / --exclude``: by task name or by tag (``tag "ci"`` in a block)."""

from __future__ import annotations

from ..errors import PatchlangError
from . import ast as A
from .parser import parse_text
from .program import Program


def task_tags(program: Program) -> dict[str, tuple[str, ...]]:
    """Each task's tags, in source order (tags are syntax only: read from the AST, matched by the task's span)."""
    by_span: dict[tuple[int, int], tuple[str, ...]] = {}
    for st in parse_text(program.source, program.path).statements:
        if isinstance(st, (A.PatchBlock, A.RepairBlock, A.FinetuneBlock, A.ExpertsBlock, A.AttackBlock)):
            tags = tuple(t for item in st.items if isinstance(item, A.Tag) for t in item.tags)
        elif isinstance(st, A.Verify):
            tags = st.tags
        else:
            continue
        by_span[(st.span.line, st.span.column)] = tuple(dict.fromkeys(tags))
    return {t.name: by_span.get((t.span.line, t.span.column), ()) for t in program.tasks}


def _names(values: list[str] | None) -> list[str]:
    return [v.strip() for arg in values or [] for v in arg.split(",") if v.strip()]


def select_tasks(program: Program, select: list[str] | None, exclude: list[str] | None,
                 only: list[str] | None = None) -> list[str]:
    """The names of the tasks to run, in source order.

    A task is selected when ``select`` (comma-separated, repeatable) names it or one of its tags (everything when
    there is no ``select``), and dropped when ``exclude`` does; ``only`` (``--task``) narrows further.  A name in
    ``select`` that is neither a task nor a tag is a usage error (exit 2) listing what exists; a selection that
    leaves nothing to run is one too.
    """
    tags = task_tags(program)
    known = set(tags) | {t for ts in tags.values() for t in ts}
    wanted, unwanted = _names(select), _names(exclude)
    available = ("tasks: " + ", ".join(t.name for t in program.tasks)
                 + ("; tags: " + ", ".join(sorted({t for ts in tags.values() for t in ts}))
                    if any(tags.values()) else ""))
    unknown = [n for n in wanted if n not in known]
    if unknown:
        raise PatchlangError(f"--select: no task or tag named {', '.join(unknown)}", help=available)
    chosen = [name for name, ts in tags.items()
              if (not wanted or name in wanted or set(ts) & set(wanted))
              and not (name in unwanted or set(ts) & set(unwanted))
              and (not only or name in only)]
    if not chosen:
        raise PatchlangError("no task selected (--select / --exclude / --task leave nothing to run)", help=available)
    return chosen
