"""The policy schema itself: valid 2020-12, documented, closed, and shipped with the package."""

from __future__ import annotations

import json
import os
from collections.abc import Iterator
from importlib import resources
from pathlib import Path
from typing import Any

import jsonschema

from retention.policy.load import policy_schema

ROOT = Path(__file__).resolve().parents[3]


def _objects(node: Any, where: str = "#") -> Iterator[tuple[str, dict[str, Any]]]:
    if isinstance(node, dict):
        if node.get("type") == "object" or "properties" in node:
            yield where, node
        for key, value in node.items():
            yield from _objects(value, f"{where}/{key}")
    elif isinstance(node, list):
        for i, value in enumerate(node):
            yield from _objects(value, f"{where}/{i}")


def test_the_schema_is_valid_json_schema_2020_12() -> None:
    schema = policy_schema()
    assert schema["$schema"] == "https://json-schema.org/draft/2020-12/schema"
    jsonschema.Draft202012Validator.check_schema(schema)


def test_every_object_is_closed_and_every_property_described() -> None:
    objects = list(_objects(policy_schema()))
    assert len(objects) >= 10
    for where, node in objects:
        assert node.get("additionalProperties") is False, where
        for name, prop in node.get("properties", {}).items():
            assert prop.get("description"), f"{where}/properties/{name} has no description"


def test_version_1_is_required() -> None:
    schema = policy_schema()
    assert "version" in schema["required"]
    assert schema["properties"]["version"]["const"] == 1


def test_the_package_reads_the_top_level_schema_through_a_symlink() -> None:
    link = ROOT / "retention" / "schemas"
    assert link.is_symlink()
    assert os.readlink(link) == "../schemas"
    packaged = resources.files("retention") / "schemas" / "policy.schema.json"
    top = ROOT / "schemas" / "policy.schema.json"
    assert packaged.read_text(encoding="utf-8") == top.read_text(encoding="utf-8")
    assert json.loads(top.read_text(encoding="utf-8")) == policy_schema()


def test_the_wheel_declares_the_schemas_as_package_data() -> None:
    text = (ROOT / "pyproject.toml").read_text(encoding="utf-8")
    assert '"retention" = ["schemas/*.json", "py.typed"]' in text
