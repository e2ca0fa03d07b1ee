"""The package's import graph has no circles (STYLE.md rule 23).

Every ``import`` and ``from ... import`` of a ``musicgen_edu`` module is an edge, at module
level and inside functions alike (a lazy import defers a circle, it does not remove it);
imports under ``if TYPE_CHECKING:`` are left out (annotations only). A submodule importing its
own package (``from . import helper`` inside ``exercises/lecture01.py``, where
``exercises/__init__.py`` defines ``helper`` and imports its lectures) is Python's package
idiom, not a circle between modules, and is left out too. Circles are the strongly connected
components of the graph (Tarjan's algorithm).
"""

from __future__ import annotations

import ast
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
PACKAGE = ROOT / "musicgen_edu"


def module_name(path: Path, root: Path = ROOT) -> str:
    """``musicgen_edu/cli/common.py`` -> ``musicgen_edu.cli.common``; a package is its ``__init__``
    (``musicgen_edu/cli/__init__.py`` -> ``musicgen_edu.cli``)."""
    parts = list(path.relative_to(root).with_suffix("").parts)
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def _targets(node: ast.ImportFrom, module: str, is_package: bool, modules: set[str]) -> set[str]:
    """The package modules one ``from ... import ...`` statement imports."""
    if node.level:                                   # relative: from .x / ..x / . import y
        base = module.split(".") if is_package else module.split(".")[:-1]
        base = base[:len(base) - (node.level - 1)]
        target = ".".join(base + ([node.module] if node.module else []))
    else:
        target = node.module or ""
    found = set()
    for alias in node.names:                         # `from . import batch` names a module
        sub = f"{target}.{alias.name}"
        found.add(sub if sub in modules else target)
    return found & modules


def _imports(tree: ast.AST, module: str, is_package: bool, modules: set[str]) -> set[str]:
    found: set[str] = set()

    def visit(body: list[ast.stmt]) -> None:
        for node in body:
            if isinstance(node, ast.If) and "TYPE_CHECKING" in ast.unparse(node.test):
                visit(node.orelse)
                continue
            if isinstance(node, ast.ImportFrom):
                found.update(_targets(node, module, is_package, modules))
            elif isinstance(node, ast.Import):
                found.update(a.name for a in node.names if a.name in modules)
            for field in ("body", "orelse", "finalbody", "handlers"):
                inner = getattr(node, field, None)
                if isinstance(inner, list):
                    visit(inner)

    visit(tree.body)
    return found


def import_graph(package: Path = PACKAGE) -> dict[str, set[str]]:
    """module -> the package modules it imports (its own ancestor packages left out)."""
    files = {module_name(p, package.parent): p for p in sorted(package.rglob("*.py"))}
    modules = set(files)
    graph = {}
    for module, path in files.items():
        deps = _imports(ast.parse(path.read_text(encoding="utf-8")), module,
                        path.name == "__init__.py", modules)
        graph[module] = {d for d in deps if d != module and not module.startswith(d + ".")}
    return graph


def circles(graph: dict[str, set[str]]) -> list[list[str]]:
    """The strongly connected components with more than one module (Tarjan)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    found: list[list[str]] = []

    def connect(v: str) -> None:
        index[v] = low[v] = len(index)
        stack.append(v)
        for w in graph.get(v, ()):
            if w not in index:
                connect(w)
                low[v] = min(low[v], low[w])
            elif w in stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            component = []
            while True:
                w = stack.pop()
                component.append(w)
                if w == v:
                    break
            if len(component) > 1:
                found.append(sorted(component))

    for v in sorted(graph):
        if v not in index:
            connect(v)
    return found


def test_the_finder_sees_a_circle_and_a_lazy_import(tmp_path):
    pkg = tmp_path / "musicgen_edu"
    pkg.mkdir()
    (pkg / "__init__.py").write_text("")
    (pkg / "a.py").write_text("from .b import x\n")
    (pkg / "b.py").write_text("def f():\n    from .a import y\n")        # lazy, still an edge
    (pkg / "c.py").write_text("from typing import TYPE_CHECKING\n"
                              "if TYPE_CHECKING:\n    from .a import y\n")  # annotations only
    graph = import_graph(pkg)
    assert graph["musicgen_edu.c"] == set()
    assert circles(graph) == [["musicgen_edu.a", "musicgen_edu.b"]]


def test_no_import_circles_in_the_package():
    graph = import_graph()
    assert "musicgen_edu.cli.measure" in graph["musicgen_edu.cli"]    # the graph is not empty
    found = circles(graph)
    assert not found, (f"import circles: {found}. Move what both sides need into a module "
                       "that both import, or pass it in as an argument.")
