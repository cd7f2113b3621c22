"""A saved inventory (`inventory --format json`, read back by `plan --from-inventory`) is user
input: a damaged or hand-edited one is refused with an InventoryError, never a traceback from
deep inside evaluate or the plan writer."""

from __future__ import annotations

import copy
import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from retention import cli
from retention.errors import InventoryError
from retention.evaluate import evaluate, explain
from retention.model import Inventory, Kind
from retention.plan import render_text, to_json
from tests.unit.evalkit import NOW, ago, image, index, inventory, policy, repo, rule, sig

INVENTORY = inventory(
    repo(
        "apps/web",
        {"latest": "A", "v1": "B", sig("B"): "S", "multi": "I"},
        [
            image("A", ago(1), blobs=[("c1", 10), ("l1", 20)]),
            image("B", ago(40)),
            image("S", None, kind=Kind.ARTIFACT, subject="B"),
            index("I", ago(5), ["K1", "K2"]),
            image("K1", ago(5), platform="linux/amd64"),
            image("K2", ago(6), platform="linux/arm64"),
        ],
        dangling=["ghost"],
    )
)
POLICY = policy(rule("r", last=1), protect=["latest"])

WEIRD: list[Any] = [None, 0, -1, True, 1.5, "", "x", "sha256:zz", [], {}, [1], {"a": 1}, 10**30]
_DELETE = object()


def _paths(value: Any, prefix: tuple[Any, ...] = ()) -> Iterator[tuple[Any, ...]]:
    if prefix:
        yield prefix
    if isinstance(value, dict):
        for key, item in value.items():
            yield from _paths(item, (*prefix, key))
    elif isinstance(value, list):
        for i, item in enumerate(value):
            yield from _paths(item, (*prefix, i))


def _mutated(doc: dict[str, Any], path: tuple[Any, ...], value: Any) -> dict[str, Any]:
    out = copy.deepcopy(doc)
    parent: Any = out
    for key in path[:-1]:
        parent = parent[key]
    if value is _DELETE:
        del parent[path[-1]]
    else:
        parent[path[-1]] = value
    return out


def _use(inv: Inventory) -> None:
    """Everything `plan --from-inventory` and `explain` do with a loaded inventory."""
    plan = evaluate(POLICY, inv, NOW)
    to_json(plan)
    render_text(plan, now=NOW)
    for r in inv.repositories:
        explain(POLICY, inv, NOW, r.name)


def test_the_saved_inventory_round_trips() -> None:
    doc = json.loads(json.dumps(INVENTORY.to_json()))
    assert Inventory.from_json(doc).to_json() == INVENTORY.to_json()


def test_dangling_tags_are_saved_only_where_there_are_some() -> None:
    """An inventory without dangling tags has the JSON it had before they were carried."""
    assert INVENTORY.to_json()["repositories"][0]["dangling_tags"] == ["ghost"]
    plain = inventory(repo("apps/api", {"a": "A"}, [image("A", ago(1))]))
    assert "dangling_tags" not in plain.to_json()["repositories"][0]
    assert Inventory.from_json(plain.to_json()) == plain


def test_every_field_damaged_either_loads_cleanly_or_is_an_inventory_error() -> None:
    doc = json.loads(json.dumps(INVENTORY.to_json()))
    tried = 0
    for path in list(_paths(doc)):
        for value in [*WEIRD, _DELETE]:
            tried += 1
            try:
                inv = Inventory.from_json(_mutated(doc, path, value))
            except InventoryError:
                continue
            _use(inv)  # anything else raised here fails the test, naming the path
    assert tried > 1000


@pytest.mark.parametrize(
    ("path", "value", "message"),
    [
        (("repositories", 0, "name"), None, "$.repositories[0].name: NoneType where str"),
        (("repositories", 0, "name"), "Apps/Web", "$.repositories[0].name: invalid repository"),
        (("repositories", 0, "tags", "latest"), [], "$.repositories[0].tags.latest: invalid"),
        (("repositories", 0, "tags"), ["latest"], "$.repositories[0].tags: list where dict"),
        (("repositories", 0, "images", 0, "blobs"), "x", "$.repositories[0].images[0].blobs:"),
        (("repositories", 0, "images", 2, "subject"), 0, "$.repositories[0].images[2].subject:"),
        (("repositories", 0, "images", 0, "children"), [[]], "images[0].children[0]: invalid"),
        (("repositories", 0, "images", 0, "size"), "big", "images[0].size: str where int"),
        (("repositories", 0, "images", 0, "size"), True, "images[0].size: bool where int"),
        (("complete",), "yes", "$.complete: str where bool"),
        (("repositories", 0, "dangling_tags", 0), "../x", "dangling_tags[0]: invalid tag name"),
        (("repositories", 0, "dangling_tags"), "ghost", "dangling_tags: str where list"),
        (("repositories", 0, "dangling_tags", 0), "latest", "dangling_tags[0]: 'latest' is in"),
    ],
    ids=[
        "name-null",
        "name-invalid",
        "tag-digest-list",
        "tags-list",
        "blobs-string",
        "subject-int",
        "child-list",
        "size-string",
        "size-bool",
        "complete-string",
        "dangling-tag-invalid",
        "dangling-tags-string",
        "dangling-tag-also-listed",
    ],
)
def test_damage_is_named(path: tuple[Any, ...], value: Any, message: str) -> None:
    doc = json.loads(json.dumps(INVENTORY.to_json()))
    with pytest.raises(InventoryError) as caught:
        Inventory.from_json(_mutated(doc, path, value))
    assert message in str(caught.value)


def test_plan_from_a_damaged_inventory_is_one_error_line(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    doc = INVENTORY.to_json()
    doc["repositories"][0]["images"][0]["blobs"] = "x"
    (tmp_path / "inv.json").write_text(json.dumps(doc))
    (tmp_path / "p.yaml").write_text(
        "version: 1\nregistry:\n  url: https://registry.example.test\n"
        "rules:\n  - name: r\n    match: {}\n    keep: {last: 1}\n"
    )
    code = cli.main(
        ["plan", "-p", str(tmp_path / "p.yaml"), "--from-inventory", str(tmp_path / "inv.json")]
    )
    err = capsys.readouterr().err
    assert code == 1
    assert "Traceback" not in err
    assert err.startswith(f"error: {tmp_path / 'inv.json'}: inventory file is malformed")
