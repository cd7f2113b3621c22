"""`plan`, `inventory` and `apply` with `registry.storage.filesystem` against a real registry and
its own storage directory: `inventory_source`, the API plan as a subset, exact bytes checked by
garbage collection, and the storage errors a user meets (exit 1, one message, nothing written)."""

from __future__ import annotations

import dataclasses
import json
import os
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any, NamedTuple

import pytest

from retention import workflow
from retention.cli import main
from retention.model import Inventory
from tests.harness.registry import RegistryProcess
from tests.harness.seed import Pushed, Pusher, make_layer

NOW = datetime.now(UTC)


def _policy(
    folder: Path, url: str, storage: Path | None, rules: str, name: str = "policy.yaml"
) -> Path:
    store = f"  storage:\n    filesystem: {storage}\n" if storage is not None else ""
    path = folder / name
    path.write_text(
        f"version: 1\nregistry:\n  url: {url}\n{store}"
        "settings:\n  max_deletions: '100%'\n"
        f"rules:\n{rules}",
        encoding="utf-8",
    )
    return path


RULES = """\
  - name: old
    match: {tags: ['old-.*']}
    keep: {last: 0}
  - name: rest
    match: {}
    keep: all
"""


def _plan(capsys: pytest.CaptureFixture[str], *argv: str) -> dict[str, Any]:
    assert main(["plan", *argv, "--format", "json"]) == 0
    out, _ = capsys.readouterr()
    doc: dict[str, Any] = json.loads(out)
    return doc


def _scene(pusher: Pusher) -> dict[str, Pushed]:
    """`old-1` shares a big layer with an untagged revision of `dev` (re-pushed twice)."""
    shared = make_layer(b"s" * 300_000, "shared.bin")
    own = make_layer(b"o" * 200_000, "own.bin")
    created = NOW - timedelta(days=3)
    return {
        "old": pusher.push_image("app", "old-1", layers=[shared, own], created=created),
        "dev1": pusher.push_image("app", "dev", layers=[shared], created=created),
        "dev2": pusher.push_image("app", "dev", layer_size=200_000, created=created),
        "dev3": pusher.push_image("app", "dev", layers=1, created=created),
        "index": pusher.push_image("app", "multi", kind="oci-index", created=created),
    }


class Stored(NamedTuple):
    """`_scene` in a registry of the test's own, and a policy that reads its storage (RULES)."""

    scene: dict[str, Pushed]
    policy: Path


@pytest.fixture
def stored(fresh_registry: RegistryProcess, fresh_pusher: Pusher, tmp_path: Path) -> Stored:
    scene = _scene(fresh_pusher)
    policy = _policy(tmp_path, fresh_registry.url, fresh_registry.storage_dir, RULES)
    return Stored(scene, policy)


def test_the_storage_plan_says_so_and_adds_only_untagged_kept_entries(
    stored: Stored, capsys: pytest.CaptureFixture[str]
) -> None:
    scene, policy = stored
    storage = _plan(capsys, "-p", str(policy))
    api = _plan(capsys, "-p", str(policy), "--inventory-source", "api")
    assert storage["inventory_source"] == "storage"
    assert api["inventory_source"] == "api"
    assert storage["deletions"] == api["deletions"]
    api_kept = {(e["repository"], e["digest"]): e for e in api["kept"]}
    extra = [e for e in storage["kept"] if (e["repository"], e["digest"]) not in api_kept]
    assert {e["digest"] for e in extra} == {scene["dev1"].digest, scene["dev2"].digest}
    assert all(e["tags"] == [] for e in extra)
    for e in storage["kept"]:
        if (e["repository"], e["digest"]) in api_kept:
            assert e == api_kept[(e["repository"], e["digest"])]


def test_bytes_are_exact_garbage_collection_frees_what_the_storage_plan_says(
    fresh_registry: RegistryProcess,
    fresh_pusher: Pusher,
    stored: Stored,
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
) -> None:
    scene, policy = stored
    api = _plan(capsys, "-p", str(policy), "--inventory-source", "api")
    plan_file = tmp_path / "plan.json"
    assert main(["plan", "-p", str(policy), "-o", str(plan_file), "-q"]) == 0
    storage = json.loads(plan_file.read_text())
    # the API sees no one else using the shared layer; the storage sees the untagged `dev`
    shared = dict(scene["dev1"].blob_sizes)[scene["dev1"].layer_digests[0]]
    gap = api["summary"]["bytes_reclaimable"] - storage["summary"]["bytes_reclaimable"]
    assert gap == shared
    assert main(["apply", str(plan_file), "--yes", "--journal", str(tmp_path / "journal")]) == 0
    before = fresh_registry.blob_bytes()
    fresh_registry.garbage_collect()  # without --delete-untagged
    freed = before - fresh_registry.blob_bytes()
    expected = storage["summary"]["bytes_reclaimable"]
    assert abs(freed - expected) <= 0.01 * expected, (freed, expected)
    # nothing kept is broken: every kept tag still pulls, blob by blob, and so do the untagged
    for key in ("dev3", "index"):
        assert fresh_pusher.pull_complete("app", scene[key].tag)
    for key in ("dev1", "dev2"):
        assert fresh_pusher.pull_complete("app", scene[key].digest)
    assert not fresh_pusher.pull_complete("app", scene["old"].digest)


def test_inventory_from_the_storage_lists_untagged_revisions_in_json(
    stored: Stored, capsys: pytest.CaptureFixture[str]
) -> None:
    scene, policy = stored
    assert main(["inventory", "-p", str(policy), "--format", "json"]) == 0
    doc = json.loads(capsys.readouterr().out)
    assert doc["source"] == "storage"
    (repo,) = doc["repositories"]
    digests = {i["digest"] for i in repo["images"]}
    assert {scene["dev1"].digest, scene["dev2"].digest} <= digests
    assert [h[1] for h in repo["history"] if h[0] == "dev"] == [
        scene[k].digest for k in ("dev1", "dev2", "dev3")
    ]
    assert (
        main(["inventory", "-p", str(policy), "--format", "json", "--inventory-source", "api"]) == 0
    )
    api = json.loads(capsys.readouterr().out)
    assert api["source"] == "api"
    assert scene["dev1"].digest not in {i["digest"] for i in api["repositories"][0]["images"]}


def _fails(capsys: pytest.CaptureFixture[str], argv: list[str], *expected: str) -> str:
    assert main(argv) == 1
    _, err = capsys.readouterr()
    assert "Traceback" not in err
    for text in expected:
        assert text in err, err
    return err


def test_storage_errors_are_one_clear_message_and_write_no_plan(
    fresh_registry: RegistryProcess,
    fresh_pusher: Pusher,
    registry: RegistryProcess,
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
) -> None:
    _scene(fresh_pusher)
    out = tmp_path / "plan.json"
    missing = _policy(tmp_path, fresh_registry.url, tmp_path / "nowhere", RULES, "missing.yaml")
    _fails(capsys, ["plan", "-p", str(missing), "-o", str(out)], "does not exist", "hint:")
    wrong = _policy(tmp_path, registry.url, fresh_registry.storage_dir, RULES, "wrong.yaml")
    _fails(capsys, ["plan", "-p", str(wrong), "-o", str(out)], "disagree", "--inventory-source")
    none = _policy(tmp_path, fresh_registry.url, None, RULES, "none.yaml")
    _fails(
        capsys,
        ["plan", "-p", str(none), "--inventory-source", "storage", "-o", str(out)],
        "no registry.storage.filesystem",
    )
    assert not out.exists()
    # forcing the API works whatever the storage path says
    assert main(["plan", "-p", str(missing), "--inventory-source", "api", "-o", str(out)]) == 0
    assert json.loads(out.read_text())["inventory_source"] == "api"


def test_a_tag_pushed_while_the_storage_was_read_is_planned_as_tagged(
    fresh_registry: RegistryProcess,
    fresh_pusher: Pusher,
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """The same-registry check runs beside `evaluate` (retention/workflow.py `make_plan`): when it
    adds a tag in flight, the plan is evaluated again, so the image is not planned untagged."""
    pushed = fresh_pusher.push_image("app", "new", created=NOW - timedelta(days=3))
    # its revision is old (past the one-hour floor); only its tag's link is fresh
    hexpart = pushed.digest.split(":")[1]
    link = (
        fresh_registry.storage_dir
        / "docker/registry/v2/repositories/app/_manifests/revisions/sha256"
        / hexpart
        / "link"
    )
    old = (NOW - timedelta(hours=2)).timestamp()
    os.utime(link, (old, old))
    read = workflow.inventory_for

    def read_before_the_push(*args: Any, **kwargs: Any) -> Inventory:
        inventory = read(*args, **kwargs)  # as if read just before `new` was tagged
        repos = tuple(
            dataclasses.replace(r, tags=tuple(t for t in r.tags if t.name != "new"))
            for r in inventory.repositories
        )
        return dataclasses.replace(inventory, repositories=repos)

    monkeypatch.setattr(workflow, "inventory_for", read_before_the_push)
    rules = "  - name: untagged\n    match: {untagged: true}\n    keep: {last: 0}\n"
    rules += "  - name: rest\n    match: {}\n    keep: all\n"
    policy = _policy(tmp_path, fresh_registry.url, fresh_registry.storage_dir, rules)
    argv = ["plan", "-p", str(policy), "--format", "json"]
    with monkeypatch.context() as m:  # the premise: without the check, it would be deleted
        m.setattr(workflow, "_same_registry", lambda policy, inventory: inventory)
        assert main(argv) == 0
        stale = json.loads(capsys.readouterr().out)
    assert pushed.digest in {e["digest"] for e in stale["deletions"]}
    assert main(argv) == 0
    out, err = capsys.readouterr()
    doc = json.loads(out)
    assert "app:new was pushed while the storage was read" in err
    assert pushed.digest not in {e["digest"] for e in doc["deletions"]}
    kept = [e for e in doc["kept"] if e["digest"] == pushed.digest]
    assert kept and kept[0]["tags"] == ["new"]
