"""The HTTP modules reach the store through the ports they use, never the whole union.

Each ``gateway/api`` module (but the wiring: ``context.py``, ``app.py``) names the ports
it calls in a small ``_Ports`` protocol and reads ``ctx.store`` in one place, its
``_store`` accessor, so mypy checks every handler's store use against those ports.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

API = Path(__file__).resolve().parents[1] / "gateway" / "api"
WIRING = {"context.py", "app.py"}
MODULES = sorted(p for p in API.glob("*.py") if p.name not in WIRING)


def _union_imports(tree: ast.Module) -> list[int]:
    return [
        node.lineno
        for node in ast.walk(tree)
        if isinstance(node, ast.ImportFrom)
        and node.module == "gateway.store"
        and any(alias.name == "Store" for alias in node.names)
    ]


def _store_reads_outside_accessor(tree: ast.Module) -> list[int]:
    lines: list[int] = []

    def visit(node: ast.AST, inside: bool) -> None:
        if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef):
            inside = node.name == "_store"
        if isinstance(node, ast.Attribute) and node.attr == "store" and not inside:
            lines.append(node.lineno)
        for child in ast.iter_child_nodes(node):
            visit(child, inside)

    visit(tree, False)
    return lines


@pytest.mark.parametrize("path", MODULES, ids=lambda p: p.name)
def test_api_module_uses_ports_not_the_union(path: Path) -> None:
    tree = ast.parse(path.read_text(), str(path))
    assert _union_imports(tree) == [], f"{path.name} imports the Store union"
    assert _store_reads_outside_accessor(tree) == [], (
        f"{path.name} reads .store outside its _store accessor (typed by its ports)"
    )


def test_the_guard_sees_a_union_use() -> None:
    bad = "from gateway.store import Store\nasync def h(ctx):\n    return ctx.store.get_message()\n"
    tree = ast.parse(bad)
    assert _union_imports(tree) == [1]
    assert _store_reads_outside_accessor(tree) == [3]
