"""Imports point down the pipeline and never form a cycle (read with ``ast``; nothing is imported).

cli -> api -> run (parallel tasks, `plan`) -> cache -> tasks; api -> report -> tasks -> plan -> compile, solvers; compile imports no solver, solvers know only the
Query, lang imports neither, model and inputs import none of them.  Function-level imports count too: a late
import only hides a cycle.
"""

from __future__ import annotations

import ast
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1] / "patchlang"
BOTTOM = {"patchlang", "errors", "files", "guard", "query", "solution"}  # plain data and helpers every layer may use
ALLOWED: dict[str, set[str]] = {
    "patchlang": set(), "errors": set(), "solution": set(), "files": {"errors"}, "guard": {"errors", "files"}, "query": {"errors"},
    "model": BOTTOM,
    "inputs": BOTTOM | {"model"},
    "lang": BOTTOM | {"model", "inputs"},
    "compile": BOTTOM | {"model", "inputs", "lang"},
    "solvers": BOTTOM,
    "plan": BOTTOM | {"model", "inputs", "lang", "compile", "solvers"},
    "tasks": BOTTOM | {"model", "inputs", "lang", "compile", "solvers", "plan"},
    "report": BOTTOM | {"model", "inputs", "lang", "tasks"},
    "lockfile": BOTTOM,
    "cache": BOTTOM | {"model", "inputs", "lang", "tasks"},
    "run": BOTTOM | {"model", "inputs", "lang", "tasks", "cache", "lockfile"},
    "api": BOTTOM | {"model", "inputs", "lang", "tasks", "report", "run", "cache"},
    "cli": BOTTOM | {"model", "inputs", "lang", "tasks", "report", "api", "run", "cache", "lockfile"},
}


def _module_name(path: Path) -> str:
    parts = path.relative_to(ROOT.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def _modules() -> dict[str, Path]:
    return {_module_name(p): p for p in ROOT.rglob("*.py")}


def import_graph() -> dict[str, set[str]]:
    """Module -> the patchlang modules it imports (a name imported from a package that is a module of it counts
    as that module)."""
    modules = _modules()
    graph: dict[str, set[str]] = {}
    for mod, path in modules.items():
        package = mod if path.name == "__init__.py" else mod.rsplit(".", 1)[0]
        out: set[str] = set()
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            if isinstance(node, ast.ImportFrom):
                if node.level:
                    base = package.split(".")[: len(package.split(".")) - node.level + 1]
                    target = ".".join(base + ([node.module] if node.module else []))
                else:
                    target = node.module or ""
                if not target.startswith("patchlang"):
                    continue
                subs = [f"{target}.{a.name}" for a in node.names if f"{target}.{a.name}" in modules]
                out.update(subs or [target])
            elif isinstance(node, ast.Import):
                out.update(a.name for a in node.names if a.name.startswith("patchlang"))
        graph[mod] = {t for t in out if t != mod}
    return graph


def _layer(mod: str) -> str:
    parts = mod.split(".")
    return parts[1] if len(parts) > 1 else "patchlang"


def find_cycle(graph: dict[str, set[str]]) -> list[str] | None:
    """One import cycle (as a list of modules, first repeated last), or None."""
    state: dict[str, int] = {}
    stack: list[str] = []

    def visit(m: str) -> list[str] | None:
        state[m] = 1
        stack.append(m)
        for n in sorted(graph.get(m, ())):
            if state.get(n) == 1:
                return stack[stack.index(n):] + [n]
            if n not in state and (found := visit(n)):
                return found
        stack.pop()
        state[m] = 2
        return None

    for m in sorted(graph):
        if m not in state and (found := visit(m)):
            return found
    return None


def test_no_import_cycle() -> None:
    # a package importing its own modules (``__init__`` re-exports) is not a cycle of the modules themselves
    graph = {m: {t for t in ts if not m.startswith(t + ".")} for m, ts in import_graph().items()}
    cycle = find_cycle(graph)
    assert cycle is None, "import cycle: " + " -> ".join(cycle or [])


def test_imports_point_down_the_pipeline() -> None:
    bad = sorted(f"{m} imports {t}" for m, ts in import_graph().items() for t in ts
                 if _layer(t) != _layer(m) and _layer(t) not in ALLOWED[_layer(m)])
    assert not bad, "upward or sideways imports:\n" + "\n".join(bad)


def test_the_checker_finds_a_cycle() -> None:
    assert find_cycle({"a": {"b"}, "b": {"c"}, "c": {"a"}}) == ["a", "b", "c", "a"]
    assert find_cycle({"a": {"b"}, "b": set()}) is None
