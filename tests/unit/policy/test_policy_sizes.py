"""retention/policy/ stays in rooms a reader can find (issue 18): no module over 700 lines, no
function over 80, measured on the AST."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

POLICY = Path(__file__).resolve().parents[3] / "retention" / "policy"
MODULES = sorted(POLICY.glob("*.py"))
MAX_MODULE_LINES = 700
MAX_FUNCTION_LINES = 80


def test_the_package_has_its_rooms() -> None:
    names = {p.stem for p in MODULES}
    rooms = {"model", "patterns", "report", "nodes", "env", "schema", "checks", "build", "load"}
    assert rooms <= names


@pytest.mark.parametrize("path", MODULES, ids=lambda p: p.name)
def test_module_and_function_sizes(path: Path) -> None:
    text = path.read_text(encoding="utf-8")
    assert len(text.splitlines()) <= MAX_MODULE_LINES
    long = [
        f"{node.name} ({node.end_lineno - node.lineno + 1} lines)"
        for node in ast.walk(ast.parse(text))
        if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef)
        and node.end_lineno is not None
        and node.end_lineno - node.lineno + 1 > MAX_FUNCTION_LINES
    ]
    assert not long, f"{path.name}: {long}"
