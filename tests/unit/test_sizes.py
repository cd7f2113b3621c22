"""retention/ stays in rooms a reader can find (issue 18): no module over 700 lines, no function
or method over 80, measured on the AST of every module; the split packages keep their rooms."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parents[2] / "retention"
MODULES = sorted(PACKAGE.rglob("*.py"))
MAX_MODULE_LINES = 700
MAX_FUNCTION_LINES = 80
ROOMS = {
    "apply": {"preflight", "verify", "order", "execute"},
    "evaluate": {"tags", "untagged", "graph", "repository", "entries", "explain"},
    "registry": {"api", "transport", "auth", "credentials", "listing", "client"},
    "storage": {"files", "blobs", "repository", "read", "compare"},
}


def _name(path: Path) -> str:
    return path.relative_to(PACKAGE).as_posix()


def test_every_module_is_measured() -> None:
    assert len(MODULES) >= 60, f"found only {len(MODULES)} modules under {PACKAGE}"


@pytest.mark.parametrize(("package", "rooms"), sorted(ROOMS.items()), ids=sorted(ROOMS))
def test_the_package_has_its_rooms(package: str, rooms: set[str]) -> None:
    names = {p.stem for p in (PACKAGE / package).glob("*.py")}
    assert rooms <= names, f"retention/{package}/ lacks {sorted(rooms - names)}"


@pytest.mark.parametrize("path", MODULES, ids=_name)
def test_module_is_at_most_700_lines(path: Path) -> None:
    lines = len(path.read_text(encoding="utf-8").splitlines())
    assert lines <= MAX_MODULE_LINES, f"{_name(path)} has {lines} lines"


@pytest.mark.parametrize("path", MODULES, ids=_name)
def test_functions_are_at_most_80_lines(path: Path) -> None:
    long = [
        f"{node.name} ({node.end_lineno - node.lineno + 1} lines)"
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8")))
        if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef)
        and node.end_lineno is not None
        and node.end_lineno - node.lineno + 1 > MAX_FUNCTION_LINES
    ]
    assert not long, f"{_name(path)}: {long}"
