"""The package's shape: no module imports one that imports it back.

Every ``import`` statement counts, at module level or inside a function (a function-local
import only postpones the circle to the first call; ``rancherd.cli`` <->
``rancherd.install.command`` was one), and so does a string that is exactly a module's
dotted name (a module loaded by name, ``importlib.import_module("rancherd.x")`` or a table
of names as ``cli``'s lazy commands had).
Only imports under ``if TYPE_CHECKING:`` are left out: they never run. A module's edge goes
to the module it names (``from rancherd.gossip import core`` names ``rancherd.gossip.core``),
not to the packages above it, which Python initialises first and which cannot import back
half-initialised children without a module-level edge of their own.
"""

from __future__ import annotations

import ast
from collections.abc import Collection, Iterator
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2] / "rancherd"


def _module_name(path: Path, root: Path) -> str:
    parts = list(path.relative_to(root.parent).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def _is_type_checking(node: ast.If) -> bool:
    test = node.test
    return (isinstance(test, ast.Name) and test.id == "TYPE_CHECKING") or (
        isinstance(test, ast.Attribute) and test.attr == "TYPE_CHECKING"
    )


def _named_modules(tree: ast.AST, package: str, modules: Collection[str]) -> Iterator[str]:
    """Every module name an import in ``tree`` names (``package``: for relative imports);
    ``from a.b import c`` names the module ``a.b.c`` when ``modules`` has it, else ``a.b``."""
    pending: list[ast.AST] = [tree]
    while pending:
        node = pending.pop()
        if isinstance(node, ast.If) and _is_type_checking(node):
            pending.extend(node.orelse)
            continue
        if isinstance(node, ast.Import):
            yield from (alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                parts = package.split(".")[: len(package.split(".")) - node.level + 1]
                base = ".".join([*parts, *([base] if base else [])])
            for alias in node.names:
                child = f"{base}.{alias.name}"
                yield child if child in modules else base
        elif (
            isinstance(node, ast.Constant) and isinstance(node.value, str) and node.value in modules
        ):
            yield node.value  # loaded by name: importlib.import_module("rancherd.x"), a table
        pending.extend(ast.iter_child_nodes(node))


def import_graph(root: Path) -> dict[str, set[str]]:
    """Module -> the modules of the same tree it imports."""
    paths = {_module_name(path, root): path for path in sorted(root.rglob("*.py"))}
    graph: dict[str, set[str]] = {}
    for name, path in paths.items():
        package = name if path.name == "__init__.py" else name.rpartition(".")[0]
        tree = ast.parse(path.read_text(), str(path))
        edges = set()
        for named in _named_modules(tree, package, paths):
            # ``import a.b.c`` of a name inside a module (or outside the tree): its module.
            target = named
            while target and target not in paths:
                target = target.rpartition(".")[0]
            if target and target != name:
                edges.add(target)
        graph[name] = edges
    return graph


def cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """The strongly connected components with more than one module (Tarjan), sorted."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    found: list[list[str]] = []

    def visit(start: str) -> None:
        # Iterative, so a deep graph cannot exhaust the recursion limit.
        work = [(start, iter(sorted(graph[start])))]
        index[start] = low[start] = len(index)
        stack.append(start)
        on_stack.add(start)
        while work:
            node, children = work[-1]
            child = next(children, None)
            if child is not None:
                if child not in index:
                    index[child] = low[child] = len(index)
                    stack.append(child)
                    on_stack.add(child)
                    work.append((child, iter(sorted(graph[child]))))
                elif child in on_stack:
                    low[node] = min(low[node], index[child])
                continue
            work.pop()
            if work:
                low[work[-1][0]] = min(low[work[-1][0]], low[node])
            if low[node] == index[node]:
                component = []
                while True:
                    member = stack.pop()
                    on_stack.discard(member)
                    component.append(member)
                    if member == node:
                        break
                if len(component) > 1:
                    found.append(sorted(component))

    for node in sorted(graph):
        if node not in index:
            visit(node)
    return sorted(found)


def test_no_module_imports_one_that_imports_it_back() -> None:
    assert cycles(import_graph(ROOT)) == []


def _package(root: Path, files: dict[str, str]) -> Path:
    for name, text in files.items():
        path = root / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text)
    return root


def test_the_check_sees_function_local_and_importlib_circles(tmp_path: Path) -> None:
    root = _package(
        tmp_path / "pkg",
        {
            "__init__.py": "",
            "a.py": "def f():\n    from pkg.b import g\n",
            "b.py": "import importlib\ng = importlib.import_module('pkg.a')\n",
            "c.py": "from . import d\n",
            "d.py": "import pkg.c\n",
        },
    )
    assert cycles(import_graph(root)) == [["pkg.a", "pkg.b"], ["pkg.c", "pkg.d"]]


def test_the_check_leaves_out_type_checking_imports(tmp_path: Path) -> None:
    root = _package(
        tmp_path / "pkg",
        {
            "__init__.py": "",
            "a.py": "from pkg import b\n",
            "b.py": "from typing import TYPE_CHECKING\nif TYPE_CHECKING:\n    from pkg import a\n",
        },
    )
    assert cycles(import_graph(root)) == []
