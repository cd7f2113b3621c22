"""The module table of STYLE.md, checked: each module imports only what it may."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parents[2] / "retention"

# module → (our modules it may import, third-party modules it may import)
ALLOWED: dict[str, tuple[set[str], set[str]]] = {
    "errors": (set(), set()),
    "text": (set(), set()),
    "oci": ({"errors"}, set()),
    "model": ({"oci", "errors", "text"}, set()),
    "policy.model": ({"errors"}, set()),
    "policy.load": ({"policy.model", "errors"}, {"yaml", "jsonschema", "re2", "croniter"}),
    "registry": ({"registry.api", "registry.client", "registry.urls"}, set()),
    "registry.api": ({"oci"}, set()),
    "registry.urls": ({"errors", "text"}, set()),
    "registry.deadlines": (set(), {"requests", "urllib3"}),
    "registry.transport": (
        {"registry.api", "registry.deadlines", "registry.urls", "oci", "errors", "policy.model"}
        | {"text"},
        {"requests", "urllib3"},
    ),
    "registry.credentials": ({"errors"}, set()),
    "registry.auth": (
        {"registry.credentials", "registry.transport", "registry.urls", "errors", "oci", "text"},
        set(),
    ),
    "registry.listing": ({"registry.transport", "registry.urls", "oci", "errors"}, set()),
    "registry.client": (
        {"registry.api", "registry.auth", "registry.credentials", "registry.listing"}
        | {"registry.transport", "registry.urls", "oci", "errors", "policy.model", "text"},
        set(),
    ),
    "cache": ({"oci", "errors"}, set()),
    "inventory": (
        {"registry", "registry.client", "cache", "model", "oci", "errors", "policy.model"},
        set(),
    ),
    "storage": (
        {"inventory", "model", "oci", "errors", "registry", "registry.client", "text"},
        set(),
    ),
    "evaluate": ({"policy.model", "model", "oci", "plan", "errors", "text"}, set()),
    "plan": ({"model", "oci", "errors", "text"}, {"jsonschema"}),
    "apply": (
        {"registry", "registry.api", "registry.client", "plan", "errors", "journal", "oci"}
        | {"policy.model"},
        set(),
    ),
    "journal": ({"errors", "oci", "files", "state", "text"}, set()),
    "restore": ({"registry.api", "journal", "oci", "errors", "text"}, set()),
    "doctor": ({"registry.api", "errors", "text"}, set()),
    "schedule": ({"errors", "files", "state", "runlog"}, {"croniter"}),
    "runlog": ({"errors", "files", "state"}, set()),
    "files": (set(), set()),
    "state": (set(), set()),
    "gc": ({"errors", "model"}, set()),
    "starter": ({"errors", "text"}, set()),
    "markdown": ({"plan", "oci", "text"}, set()),
    "progress": (set(), set()),
    "workflow": (
        {"apply", "cache", "errors", "evaluate", "gc", "inventory", "journal", "model", "oci"}
        | {"plan", "policy.model", "registry.client", "runlog", "schedule", "state", "storage"},
        set(),
    ),
}
PURE = {
    "registry.urls",
    "state",
    "markdown",
    "progress",
    "text",
    "oci",
    "model",
    "policy.model",
    "policy.load",
    "evaluate",
    "plan",
    "starter",
}
# The pure core may not reach the network, the clock or the environment (STYLE.md).
FORBIDDEN_IN_PURE = {"requests", "time", "urllib3", "socket", "subprocess"}


def _imports(path: Path) -> tuple[set[str], set[str], bool]:
    ours: set[str] = set()
    theirs: set[str] = set()
    uses_environ = False
    tree = ast.parse(path.read_text(encoding="utf-8"))
    for node in ast.walk(tree):
        names: list[str] = []
        if isinstance(node, ast.Import):
            names = [a.name for a in node.names]
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            names = [node.module]
            if node.module == "os" and any(a.name == "environ" for a in node.names):
                uses_environ = True
        elif (
            isinstance(node, ast.Attribute)
            and node.attr == "environ"
            and isinstance(node.value, ast.Name)
            and node.value.id == "os"
        ):
            uses_environ = True
        for name in names:
            if name == "retention" or name.startswith("retention."):
                ours.add(name.removeprefix("retention").lstrip("."))
            else:
                theirs.add(name.split(".")[0])
    return ours, theirs, uses_environ


def _modules() -> list[str]:
    found = []
    for path in sorted(PACKAGE.rglob("*.py")):
        rel = path.relative_to(PACKAGE).with_suffix("")
        parts = [p for p in rel.parts if p != "__init__"]
        found.append(".".join(parts))
    return found


def _stdlib(name: str) -> bool:
    import sys

    return name in sys.stdlib_module_names or name == "__future__"


def _path(module: str) -> Path:
    path = PACKAGE / (module.replace(".", "/") + ".py")
    return path if path.exists() else PACKAGE / module.replace(".", "/") / "__init__.py"


@pytest.mark.parametrize("module", [m for m in _modules() if m in ALLOWED], ids=str)
def test_module_imports_only_what_the_table_allows(module: str) -> None:
    path = _path(module)
    ours, theirs, uses_environ = _imports(path)
    allowed_ours, allowed_theirs = ALLOWED[module]
    assert ours - {""} <= allowed_ours, f"{module} imports {sorted(ours - allowed_ours)}"
    third_party = {t for t in theirs if not _stdlib(t)}
    assert third_party <= allowed_theirs, f"{module} imports {sorted(third_party)}"
    if module in PURE:
        assert not (theirs & FORBIDDEN_IN_PURE), (
            f"pure {module} imports {theirs & FORBIDDEN_IN_PURE}"
        )
        assert not uses_environ, f"pure {module} reads os.environ"


def test_nothing_imports_the_cli() -> None:
    for module in _modules():
        if module in ("cli", "__main__") or module.startswith("cli."):
            continue
        ours, _, _ = _imports(_path(module))
        assert "cli" not in ours, f"{module} imports retention.cli"


def test_every_module_is_in_the_table() -> None:
    exempt = {"", "cli", "__main__", "policy", "registry"}
    missing = [
        m for m in _modules() if m not in ALLOWED and m not in exempt and not m.startswith("cli.")
    ]
    assert not missing, f"add these modules to the table in STYLE.md and here: {missing}"
