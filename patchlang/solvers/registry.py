"""Backend lookup and automatic choice."""

from __future__ import annotations

from ..query import Query
from ..errors import SolverUnavailable
from .base import Backend


def _factories() -> dict[str, type]:
    from .highs import HighsBackend

    table: dict[str, type] = {"highs": HighsBackend}
    try:
        from .gurobi import GurobiBackend

        table["gurobi"] = GurobiBackend
    except ImportError:
        pass
    try:
        from .z3backend import Z3Backend

        table["z3"] = Z3Backend
    except ImportError:
        pass
    from .marabou import MarabouBackend

    table["marabou"] = MarabouBackend
    return table


def get_backend(name: str) -> Backend:
    table = _factories()
    if name not in table:
        raise SolverUnavailable(f"backend `{name}` is not available in this installation",
                                help="available: " + ", ".join(sorted(table)))
    backend = table[name]()
    if not backend.available():
        extra = {"gurobi": "pip install 'patchlang[gurobi]'", "z3": "pip install z3-solver",
                 "marabou": "pip install 'patchlang[marabou]'"}.get(name, "")
        raise SolverUnavailable(f"backend `{name}` is not installed", help=extra or None)
    return backend


def choose_backend(name: str, query: Query, problem_class: str) -> tuple[Backend, list[str]]:
    """The backend to use and notes explaining the choice (e.g. a licence-size fallback)."""
    notes: list[str] = []
    if name in ("auto", "milp"):
        if problem_class == "SMT":
            return get_backend("z3"), notes
        table = _factories()
        if "gurobi" in table:
            gurobi = table["gurobi"]()
            if gurobi.available() and getattr(gurobi, "prefer_automatically", lambda q: False)(query):
                reason = gurobi.check_size(query)
                if reason is None:
                    return gurobi, notes
                notes.append(f"gurobi skipped: {reason}; using highs")
        return get_backend("highs"), notes
    backend = get_backend(name)
    reason = backend.check_size(query)
    if reason is not None:
        raise SolverUnavailable(f"backend `{name}` cannot take this problem: {reason}",
                                help="remove `using " + name + "` to let patchlang fall back to highs, "
                                     "or use a full licence")
    return backend, notes
