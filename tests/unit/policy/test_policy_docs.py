"""docs/policy.md is generated from the schema's descriptions; the committed file is current."""

from __future__ import annotations

import importlib.util
from pathlib import Path
from types import ModuleType

from retention.policy.load import policy_schema

ROOT = Path(__file__).resolve().parents[3]


def _generator() -> ModuleType:
    spec = importlib.util.spec_from_file_location(
        "gen_policy_docs", ROOT / "scripts" / "gen_policy_docs.py"
    )
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_the_committed_reference_is_up_to_date() -> None:
    expected = _generator().generate()
    actual = (ROOT / "docs" / "policy.md").read_text(encoding="utf-8")
    assert actual == expected, "docs/policy.md is stale: run python scripts/gen_policy_docs.py"


def test_the_reference_names_every_field_of_the_schema() -> None:
    text = (ROOT / "docs" / "policy.md").read_text(encoding="utf-8")
    schema = policy_schema()
    for name in schema["properties"]:
        assert f"### `{name}`" in text
    for name in ("registry.auth.password", "rules[].keep.newer_than", "gc.command"):
        assert f"### `{name}`" in text


def test_check_mode_fails_on_a_stale_file(tmp_path: Path) -> None:
    module = _generator()
    module.OUTPUT = tmp_path / "policy.md"
    module.OUTPUT.write_text("stale\n", encoding="utf-8")
    assert module.main(["--check"]) == 1
    assert module.main([]) == 0
    assert module.main(["--check"]) == 0
