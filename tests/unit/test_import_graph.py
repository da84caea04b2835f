"""Imports run one way: no circle among the modules of loadstone, and no import
inside a function that exists to dodge one.

The graph is read from the source with `ast`, nothing is imported. An edge
A -> B means that running module A imports module B:
- every `import` / `from ... import` of a loadstone module, at module level or
  in a class body, inside `if`/`try`/`with` blocks included (they run at import);
- `if TYPE_CHECKING:` imports too: a circle that only the type checker follows
  is still a circle for the reader. The test checks the graph without them and
  with them, so a failure says which kind of circle came back;
- importing `a.b.c` also runs the packages `a` and `a.b` first, so those are
  edges too, except to A's own packages: they are already running when A runs
  (a package whose __init__ re-exports its submodules is not a circle).

Imports inside functions do not take part in the graph, so they are the way a
circle hides. Each one that names a loadstone module must be in FUNCTION_IMPORTS
with the reason it is there; the reason is never "to avoid a circular import".
"""

from __future__ import annotations

import ast
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

PACKAGE = "loadstone"
SOURCE = Path(__file__).resolve().parents[2] / "src" / PACKAGE

# (importing module, imported module): why the import waits for the function.
FUNCTION_IMPORTS: dict[tuple[str, str], str] = {
    # Optional heavy dependencies: aiomysql (galera, mysql) and aiormq with pamqp
    # (amqp) are loaded only by configurations that check those servers, which
    # keeps them out of the memory of every other loadstone.
    ("loadstone.checks.registry", "loadstone.checks.galera"): "aiomysql",
    ("loadstone.checks.registry", "loadstone.checks.mysql"): "aiomysql",
    ("loadstone.checks.registry", "loadstone.checks.amqp_probe"): "aiormq, pamqp",
    # The command line loads what a command needs: `check` and `ctl` start
    # without the data path, aiohttp and prometheus_client.
    ("loadstone.cli", "loadstone.runtime"): "only `run` runs the proxy",
    ("loadstone.cli", "loadstone.demo"): "only `demo` starts the demo backends",
    (
        "loadstone.cli",
        "loadstone.buildinfo",
    ): "only `version -v` loads the data path to describe it",
}


@dataclass(frozen=True)
class Import:
    importer: str  # dotted name of the module the import statement is in
    imported: str  # dotted name of the loadstone module it loads
    line: int
    type_checking: bool  # under `if TYPE_CHECKING:`
    in_function: bool


def module_name(path: Path) -> str:
    parts = path.relative_to(SOURCE.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def modules() -> dict[str, Path]:
    return {module_name(p): p for p in sorted(SOURCE.rglob("*.py"))}


def _is_type_checking(test: ast.expr) -> bool:
    return (isinstance(test, ast.Name) and test.id == "TYPE_CHECKING") or (
        isinstance(test, ast.Attribute) and test.attr == "TYPE_CHECKING"
    )


def _targets(
    node: ast.Import | ast.ImportFrom, importer: str, is_package: bool, known: dict[str, Path]
) -> set[str]:
    """The dotted names of the modules a statement loads: for `from X import y`,
    X.y when y is a submodule of X, and X when y is a name defined in X."""
    if isinstance(node, ast.Import):
        return {alias.name for alias in node.names}
    base = node.module or ""
    if node.level:  # relative: from the importer's package, `level - 1` packages up
        package = importer.split(".") if is_package else importer.split(".")[:-1]
        package = package[: len(package) - (node.level - 1)]
        base = ".".join([*package, base] if base else package)
    names = {f"{base}.{alias.name}" for alias in node.names}
    submodules = names & known.keys()
    return submodules | ({base} if names - submodules else set())


def imports_of(name: str, path: Path, known: dict[str, Path]) -> Iterator[Import]:
    tree = ast.parse(path.read_text(), str(path))
    is_package = path.name == "__init__.py"

    def visit(node: ast.AST, type_checking: bool, in_function: bool) -> Iterator[Import]:
        if isinstance(node, ast.Import | ast.ImportFrom):
            for target in sorted(_targets(node, name, is_package, known)):
                if target in known and target != name:
                    yield Import(name, target, node.lineno, type_checking, in_function)
            return
        if isinstance(node, ast.If) and _is_type_checking(node.test):
            for stmt in node.body:
                yield from visit(stmt, True, in_function)
            for stmt in node.orelse:
                yield from visit(stmt, type_checking, in_function)
            return
        if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef):
            in_function = True
        for child in ast.iter_child_nodes(node):
            yield from visit(child, type_checking, in_function)

    yield from visit(tree, False, False)


def all_imports() -> list[Import]:
    known = modules()
    return [imp for name, path in known.items() for imp in imports_of(name, path, known)]


def _packages_of(name: str) -> set[str]:
    """`name` and the packages it is in: a.b.c -> {a, a.b, a.b.c}."""
    parts = name.split(".")
    return {".".join(parts[:depth]) for depth in range(1, len(parts) + 1)}


def graph(with_type_checking: bool) -> dict[str, set[str]]:
    edges: dict[str, set[str]] = {name: set() for name in modules()}
    for imp in all_imports():
        if imp.in_function or (imp.type_checking and not with_type_checking):
            continue
        own_packages = _packages_of(imp.importer)
        parts = imp.imported.split(".")
        for depth in range(1, len(parts) + 1):
            loaded = ".".join(parts[:depth])
            if loaded in edges and loaded not in own_packages:
                edges[imp.importer].add(loaded)
    return edges


def cycles(edges: dict[str, set[str]]) -> list[list[str]]:
    """The strongly connected components of more than one module (Tarjan)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    found: list[list[str]] = []

    def visit(v: str) -> None:
        index[v] = low[v] = len(index)
        stack.append(v)
        on_stack.add(v)
        for w in sorted(edges[v]):
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
            if len(component) > 1 or v in edges[v]:
                found.append(sorted(component))

    for v in sorted(edges):
        if v not in index:
            visit(v)
    return found


def describe(component: list[str], edges: dict[str, set[str]]) -> str:
    """One shortest circle through the first module of a component, as a path."""
    members = set(component)
    start = component[0]
    paths = {w: [start, w] for w in edges[start] & members}
    queue = sorted(paths)
    while start not in paths:
        v = queue.pop(0)
        for w in sorted(edges[v] & members):
            if w not in paths:
                paths[w] = [*paths[v], w]
                queue.append(w)
    return " -> ".join(paths[start])


def test_the_graph_is_read() -> None:
    """Guard against a test that passes because it reads nothing."""
    edges = graph(with_type_checking=True)
    assert {"loadstone.server", "loadstone.admin"} <= edges["loadstone.runtime"]
    assert "loadstone.balance" in edges["loadstone.server"]
    # `from loadstone.checks.scheduler import ...` runs the package loadstone.checks too.
    assert {"loadstone.checks", "loadstone.checks.scheduler"} <= edges["loadstone.runtime"]
    # Not an edge to one's own package: loadstone.checks is running already.
    assert "loadstone.checks" not in edges["loadstone.checks.mysql"]
    assert any(
        imp.in_function and (imp.importer, imp.imported) == ("loadstone.cli", "loadstone.runtime")
        for imp in all_imports()
    )


@pytest.mark.parametrize("with_type_checking", [False, True], ids=["run-time", "type-checking"])
def test_no_import_circle(with_type_checking: bool) -> None:
    edges = graph(with_type_checking)
    found = cycles(edges)
    assert not found, "import circles:\n" + "\n".join(describe(c, edges) for c in found)


def test_no_function_level_import_of_loadstone_but_the_listed_ones() -> None:
    seen = {(imp.importer, imp.imported): imp for imp in all_imports() if imp.in_function}
    unlisted = [
        f"{imp.importer}:{imp.line} imports {imp.imported} inside a function"
        for key, imp in sorted(seen.items())
        if key not in FUNCTION_IMPORTS
    ]
    assert not unlisted, (
        "move these imports to the top of their module (and break the circle that "
        "kept them down by design), or list them in FUNCTION_IMPORTS with the "
        "reason:\n" + "\n".join(unlisted)
    )
    stale = sorted(set(FUNCTION_IMPORTS) - set(seen))
    assert not stale, f"FUNCTION_IMPORTS lists imports that are gone: {stale}"


def test_a_circle_is_found() -> None:
    """The detector itself, on a made-up graph."""
    edges = {"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}, "e": set()}
    assert cycles(edges) == [["a", "b", "c"]]
    assert describe(["a", "b", "c"], edges) == "a -> b -> c -> a"
