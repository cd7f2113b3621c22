"""The module table of docs/architecture.md, checked: each module imports only what its row
allows, the pure core stays pure, and every module has a row (the table is the single source)."""

from __future__ import annotations

import ast
import re
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
PACKAGE = ROOT / "retention"
ARCHITECTURE = ROOT / "docs" / "architecture.md"
# The pure core may not reach the network, the clock, processes or the environment.
FORBIDDEN_IN_PURE = {"requests", "time", "urllib3", "socket", "subprocess"}
_ROW = re.compile(r"^\| `(?P<module>[\w.]+)` \|(?P<cells>.*)\|$")
_NAME = re.compile(r"`([\w.]+)`")


class Row:
    """One module's row: the modules of ours and the third-party ones it may import."""

    def __init__(self, cells: list[str]) -> None:
        _owns, ours, theirs, pure = (c.strip() for c in cells)
        self.ours = set(_NAME.findall(ours))
        self.theirs = set(_NAME.findall(theirs))
        self.pure = pure == "yes"

    def allows(self, module: str) -> bool:
        return module in self.ours


def _table() -> dict[str, Row]:
    rows: dict[str, Row] = {}
    for line in ARCHITECTURE.read_text(encoding="utf-8").splitlines():
        match = _ROW.match(line)
        if match:
            rows[match["module"]] = Row(match["cells"].split("|"))
    return rows


TABLE = _table()


def _imports(path: Path) -> tuple[set[str], set[str], bool]:
    ours: set[str] = set()
    theirs: set[str] = set()
    uses_environ = False
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        names: list[str] = []
        if isinstance(node, ast.Import):
            names = [a.name for a in node.names]
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            names = [node.module]
            uses_environ |= node.module == "os" and any(a.name == "environ" for a in node.names)
        elif isinstance(node, ast.Attribute) and node.attr == "environ":
            uses_environ |= isinstance(node.value, ast.Name) and node.value.id == "os"
        for name in names:
            if name == "retention" or name.startswith("retention."):
                ours.add(name.removeprefix("retention").lstrip("."))
            else:
                theirs.add(name.split(".")[0])
    return ours - {""}, theirs, uses_environ


def _modules() -> dict[str, Path]:
    found = {}
    for path in sorted(PACKAGE.rglob("*.py")):
        parts = [p for p in path.relative_to(PACKAGE).with_suffix("").parts if p != "__init__"]
        found[".".join(parts) or "retention"] = path
    return found


MODULES = _modules()


def test_the_table_is_read() -> None:
    assert len(TABLE) >= 20, f"no module table found in {ARCHITECTURE}"


@pytest.mark.parametrize("module", sorted(MODULES), ids=str)
def test_module_imports_only_what_its_row_allows(module: str) -> None:
    row = TABLE.get(module)
    assert row is not None, f"{module} has no row in docs/architecture.md: add one"
    ours, theirs, uses_environ = _imports(MODULES[module])
    refused = sorted(m for m in ours if not row.allows(m))
    assert not refused, f"{module} imports {refused}, which its row does not allow"
    third_party = {t for t in theirs if t not in sys.stdlib_module_names and t != "__future__"}
    assert third_party <= row.theirs, f"{module} imports {sorted(third_party - row.theirs)}"
    if row.pure:
        assert not (theirs & FORBIDDEN_IN_PURE), (
            f"pure {module} imports {theirs & FORBIDDEN_IN_PURE}"
        )
        assert not uses_environ, f"pure {module} reads os.environ"


def test_every_row_names_a_module() -> None:
    stale = [m for m in TABLE if m not in MODULES]
    assert not stale, f"docs/architecture.md has rows for modules that do not exist: {stale}"


def test_only_the_registry_package_speaks_http() -> None:
    speakers = sorted(m for m, row in TABLE.items() if row.theirs & {"requests", "urllib3"})
    assert speakers and all(m.startswith("registry.") for m in speakers), speakers


def test_nothing_outside_the_cli_imports_it() -> None:
    for module, path in MODULES.items():
        if module == "__main__" or module == "cli" or module.startswith("cli."):
            continue
        ours, _, _ = _imports(path)
        assert not any(m == "cli" or m.startswith("cli.") for m in ours), (
            f"{module} imports retention.cli"
        )
