"""The import rule of docs/architecture.md, checked: a module imports only from its own stage or the stages
listed below it in "The stages", and no modules import each other in a circle. Imports under
``if TYPE_CHECKING:`` are type hints, not imports."""

from __future__ import annotations

import ast
import re
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
PACKAGE = ROOT / "reidx"


def stage_rows() -> dict[str, int]:
    """Each top-level module or package of reidx, mapped to its row in the stages table (0 = the top)."""
    text = (ROOT / "docs" / "architecture.md").read_text()
    table = text.split("## The stages", 1)[1].split("\n## ", 1)[0]
    rows = [line.split("|")[2] for line in table.splitlines() if line.startswith("| ") and "`" in line]
    return {
        name.removesuffix(".py").removesuffix("/"): row
        for row, cell in enumerate(rows)
        for name in re.findall(r"`([\w/.]+)`", cell)
    }


def module_name(path: Path) -> str:
    parts = path.relative_to(ROOT).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def imports(path: Path) -> set[str]:
    """The reidx modules ``path`` imports, anywhere in it (lazy imports count too)."""
    name, found = module_name(path), set()
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    for node in runtime_nodes(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                anchor = package.split(".")[: len(package.split(".")) - node.level + 1]
                base = ".".join([*anchor, base] if base else anchor)
            found.update(f"{base}.{alias.name}" for alias in node.names)
            found.add(base)
    return {resolve(target) for target in found if target.split(".")[0] == "reidx"} - {name}


def runtime_nodes(tree: ast.AST) -> list[ast.AST]:
    """Every node of ``tree`` except those under ``if TYPE_CHECKING:`` (names for type hints, never imported)."""
    nodes, todo = [], [tree]
    while todo:
        node = todo.pop()
        nodes.append(node)
        if isinstance(node, ast.If) and ast.unparse(node.test).endswith("TYPE_CHECKING"):
            todo.extend(node.orelse)
            continue
        todo.extend(ast.iter_child_nodes(node))
    return nodes


def resolve(target: str) -> str:
    """The module a dotted import names (``reidx.errors.ReidxError`` is ``reidx.errors``)."""
    parts = target.split(".")
    while len(parts) > 1:
        base = ROOT.joinpath(*parts)
        if base.with_suffix(".py").is_file() or (base / "__init__.py").is_file():
            break
        parts.pop()
    return ".".join(parts)


def graph() -> dict[str, set[str]]:
    return {module_name(path): imports(path) for path in PACKAGE.rglob("*.py")}


def stage(module: str) -> str:
    parts = module.split(".")
    return parts[1] if len(parts) > 1 else "reidx"


def test_every_stage_is_in_the_table():
    rows = stage_rows()
    assert {stage(module) for module in graph()} - {"reidx", "__main__"} <= set(rows)


def upward(edges: dict[str, set[str]], rows: dict[str, int]) -> list[str]:
    """The imports of ``edges`` that point up the stages."""
    return [
        f"{module} imports {target}"
        for module, targets in sorted(edges.items())
        for target in sorted(targets)
        if stage(target) in rows and stage(module) in rows and rows[stage(target)] < rows[stage(module)]
    ]


def test_imports_point_down_the_stages():
    assert not upward(graph(), stage_rows())


def test_an_upward_import_and_a_circle_are_caught():
    edges = graph()
    edges["reidx.gallery.ranking"] = edges["reidx.gallery.ranking"] | {"reidx.retrieval.search"}
    assert upward(edges, stage_rows()) == ["reidx.gallery.ranking imports reidx.retrieval.search"]
    circle = {"reidx.io": {"reidx.errors"}, "reidx.errors": {"reidx.io"}}
    assert [sorted(group) for group in strongly_connected(circle) if len(group) > 1] == [["reidx.errors", "reidx.io"]]


def test_no_import_circles():
    edges = graph()
    for module, targets in edges.items():  # importing a.b.c runs a/__init__ and a/b/__init__ first: not a circle
        targets -= {module.rsplit(".", depth)[0] for depth in range(1, module.count(".") + 1)}
    circles = [sorted(group) for group in strongly_connected(edges) if len(group) > 1]
    assert not circles


def strongly_connected(edges: dict[str, set[str]]) -> list[set[str]]:
    """Tarjan's strongly connected components of the import graph."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    groups: list[set[str]] = []

    def visit(node: str) -> None:
        index[node] = low[node] = len(index)
        stack.append(node)
        for target in edges.get(node, ()):
            if target not in index:
                visit(target)
                low[node] = min(low[node], low[target])
            elif target in stack:
                low[node] = min(low[node], index[target])
        if low[node] == index[node]:
            group = set()
            while True:
                member = stack.pop()
                group.add(member)
                if member == node:
                    break
            groups.append(group)

    for node in list(edges):
        if node not in index:
            visit(node)
    return groups
