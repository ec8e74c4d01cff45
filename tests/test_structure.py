"""The package's shape: no import cycles, small modules (DESIGN.md, "Layout" and "Habits").

Every import statement counts, wherever it is: module level, inside functions (lazy imports)
and under ``if TYPE_CHECKING:``. A lazy or type-only import still says that one module needs
the other; a cycle hidden behind one is still a cycle for the reader. Generated protobuf code
(``corolla.protos.gen``) is left out: it imports only its own messages and protobuf.
"""

from __future__ import annotations

import ast
from pathlib import Path

import corolla

PACKAGE = Path(corolla.__file__).parent
GENERATED = PACKAGE / "protos" / "gen"
MAX_LINES = 500


def _modules() -> dict[str, Path]:
    out = {}
    for path in sorted(PACKAGE.rglob("*.py")):
        if GENERATED in path.parents:
            continue
        parts = ["corolla", *path.relative_to(PACKAGE).with_suffix("").parts]
        if parts[-1] == "__init__":
            parts.pop()
        out[".".join(parts)] = path
    return out


def _imported(module: str, path: Path, known: dict[str, Path]) -> set[str]:
    """The corolla modules that ``module`` imports (each resolved to the longest known name)."""

    def resolve(name: str) -> str | None:
        while name and name not in known:
            name = name.rpartition(".")[0]
        return name or None

    package = module if path.name == "__init__.py" else module.rpartition(".")[0]
    found: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        names: list[str] = []
        if isinstance(node, ast.Import):
            names = [a.name for a in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                parts = package.split(".")[: len(package.split(".")) - node.level + 1]
                base = ".".join([*parts, base] if base else parts)
            # ``from corolla import frontend`` imports a module; ``from x import name`` x.
            names = [f"{base}.{a.name}" if f"{base}.{a.name}" in known else base
                     for a in node.names]
        for name in names:
            target = resolve(name) if name.startswith("corolla") else None
            if target is not None and target != module:
                found.add(target)
    return found


def import_graph() -> dict[str, set[str]]:
    known = _modules()
    return {m: _imported(m, p, known) for m, p in known.items()}


def cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """Strongly connected components with more than one module (Tarjan)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    found: list[list[str]] = []

    def visit(v: str) -> None:
        index[v] = low[v] = len(index)
        stack.append(v)
        on_stack.add(v)
        for w in sorted(graph[v]):
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on_stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            component = []
            while True:
                w = stack.pop()
                on_stack.discard(w)
                component.append(w)
                if w == v:
                    break
            if len(component) > 1:
                found.append(sorted(component))

    for v in sorted(graph):
        if v not in index:
            visit(v)
    return found


def test_the_checker_sees_a_cycle() -> None:
    graph = {"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}
    assert cycles(graph) == [["a", "b", "c"]]
    assert cycles({"a": {"b"}, "b": set()}) == []


def test_the_graph_sees_lazy_and_type_only_imports() -> None:
    graph = import_graph()
    # corolla.server imports corolla.grpc.server inside a method, and corolla.repository.
    # serving_map imports corolla.runner under TYPE_CHECKING only.
    assert "corolla.grpc.server" in graph["corolla.server"]
    assert "corolla.runner" in graph["corolla.repository.serving_map"]


def test_the_import_graph_has_no_cycles() -> None:
    assert cycles(import_graph()) == []


def test_no_module_over_max_lines() -> None:
    long = {str(p.relative_to(PACKAGE)): n for p in _modules().values()
            if (n := len(p.read_text(encoding="utf-8").splitlines())) > MAX_LINES}
    assert long == {}
