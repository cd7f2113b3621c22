"""Untagged manifests planned from a real registry's own storage: re-pushed tags, untagged and
tagged indexes, referrers with and without their subject, pushes by digest, the one-hour floor
and `protect.digests`.

Pushes are aged by moving their revision links' mtime back two hours (the push time the storage
inventory reads), except the scene that checks the one-hour in-flight floor.
"""

from __future__ import annotations

import json
import os
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from retention.cli import main
from tests.harness.registry import RegistryProcess
from tests.harness.seed import Pushed, Pusher

NOW = datetime.now(UTC)


def _age(registry: RegistryProcess, repo: str, digest: str, hours: float = 2) -> None:
    hexpart = digest.split(":")[1]
    base = registry.storage_dir / "docker/registry/v2/repositories" / repo / "_manifests"
    when = time.time() - hours * 3600
    for link in [
        base / "revisions/sha256" / hexpart / "link",
        *base.glob(f"tags/*/index/sha256/{hexpart}/link"),
    ]:
        os.utime(link, (when, when))


def test_every_untagged_scene_plans_as_the_contract_says(
    fresh_registry: RegistryProcess, fresh_pusher: Pusher, tmp_path: Path
) -> None:
    p = fresh_pusher
    old = NOW - timedelta(days=5)
    latest = [p.push_image("repush", "latest", created=old + timedelta(hours=i)) for i in range(4)]
    untagged_index = p.push_image("uindex", None, kind="oci-index", created=old)
    tagged_index = p.push_image("tindex", "v1", kind="oci-index", created=old)
    subject = p.push_image("refs", "app", created=old)
    referrer = p.push_referrer("refs", subject, created=old)
    gone = p.push_image("orphan", "tmp", created=old)
    orphan = p.push_referrer("orphan", gone, created=old)
    by_digest = p.push_image("bydigest", None, created=old)
    fresh = p.push_image("fresh", None, created=old)
    protected = p.push_image("protected", None, created=old)
    p.push_image("protected", "keep-me", created=old)  # a tagged image beside it
    assert p.delete_manifest("orphan", gone.digest) == 202  # its subject (and tag) is gone
    everything: list[Pushed] = [
        *latest,
        untagged_index,
        *untagged_index.children,
        tagged_index,
        *tagged_index.children,
        subject,
        referrer,
        orphan,
        by_digest,
        protected,
    ]
    for image in everything:
        _age(fresh_registry, image.repo, image.digest)

    policy = tmp_path / "policy.yaml"
    policy.write_text(
        f"version: 1\nregistry:\n  url: {fresh_registry.url}\n"
        f"  storage:\n    filesystem: {fresh_registry.storage_dir}\n"
        "settings:\n  max_deletions: '100%'\n"
        f"protect:\n  digests: ['{protected.digest}']\n"
        "rules:\n"
        "  - name: untagged\n    match: {untagged: true}\n    keep: {last: 1}\n"
        "  - name: tags\n    match: {}\n    keep: all\n",
        encoding="utf-8",
    )
    plan_file = tmp_path / "plan.json"
    assert main(["plan", "-p", str(policy), "-o", str(plan_file), "-q"]) == 0
    plan = json.loads(plan_file.read_text())
    assert plan["inventory_source"] == "storage"
    deleted = {(e["repository"], e["digest"]): e for e in plan["deletions"]}

    # re-pushed `latest`: four versions, the three earlier untagged; `last: 1` keeps the newest
    assert ("repush", latest[3].digest) not in deleted  # tagged
    assert ("repush", latest[2].digest) not in deleted  # the newest untagged one
    for image in latest[:2]:
        entry = deleted[("repush", image.digest)]
        assert entry["tags"] == [] and entry["rule"] == "untagged"
        assert "latest" in entry["reason"]  # the tag it used to carry
    # an untagged index is one untagged image, with its children following it: kept by last 1
    assert not [k for k in deleted if k[0] == "uindex"]
    # a tagged index's children are not untagged; a referrer of a present subject follows it
    assert not [k for k in deleted if k[0] in ("tindex", "refs")]
    # a referrer whose subject is gone is an untagged orphan: the only one, kept by last 1
    assert ("orphan", orphan.digest) not in deleted
    # a push by digest alone, the newest untagged of its repository: kept; a fresh one too
    assert not [k for k in deleted if k[0] in ("bydigest", "fresh", "protected")]
    assert set(deleted) == {("repush", latest[0].digest), ("repush", latest[1].digest)}

    # now `last: 0`: everything untagged goes but the fresh push and the protected digest
    policy.write_text(policy.read_text().replace("{last: 1}", "{last: 0}"), encoding="utf-8")
    assert main(["plan", "-p", str(policy), "-o", str(plan_file), "-q"]) == 0
    plan = json.loads(plan_file.read_text())
    deleted = {(e["repository"], e["digest"]): e for e in plan["deletions"]}
    expected = {("repush", i.digest) for i in latest[:3]}
    expected |= {("uindex", untagged_index.digest)}
    expected |= {("uindex", c.digest) for c in untagged_index.children}
    expected |= {("orphan", orphan.digest), ("bydigest", by_digest.digest)}
    assert set(deleted) == expected
    for child in untagged_index.children:
        assert deleted[("uindex", child.digest)]["parent"] == untagged_index.digest

    # the plan's bytes: every blob once, at its size on disk
    assert plan["summary"]["bytes_reclaimable"] > 0
    assert plan["summary"]["images_deleted"] == len(expected)
    assert ("fresh", fresh.digest) not in deleted  # pushed a minute ago: the one-hour floor
    assert ("protected", protected.digest) not in deleted  # protect.digests

    # apply: the policy is evaluated again on the storage, which selects the same untagged
    # manifests, so every planned entry is deleted
    fresh_registry.garbage_collect()  # first what the deleted `gone` left: not the plan's bytes
    before = fresh_registry.blob_bytes()
    journal = tmp_path / "journal"
    assert main(["apply", str(plan_file), "--yes", "--journal", str(journal), "-q"]) == 0
    for repo, digest in expected:
        assert not fresh_pusher.pull_complete(repo, digest), (repo, digest)
    # garbage collection WITHOUT --delete-untagged frees the plan's figure within 1%
    fresh_registry.garbage_collect()
    freed = before - fresh_registry.blob_bytes()
    figure = plan["summary"]["bytes_reclaimable"]
    assert abs(freed - figure) <= 0.01 * figure, (freed, figure)
    # no kept image is broken: every blob of every kept image (tagged or not) still downloads
    kept = [
        *(i for i in everything if (i.repo, i.digest) not in expected),
        fresh,
    ]
    for image in kept:
        assert fresh_pusher.pull_complete(image.repo, image.digest), (image.repo, image.digest)
    for repo, tag in [("repush", "latest"), ("tindex", "v1"), ("refs", "app")]:
        assert fresh_pusher.pull_complete(repo, tag), (repo, tag)
    assert fresh_pusher.pull_complete("protected", "keep-me")


def _scene_policy(tmp_path: Path, registry: RegistryProcess, rule: str) -> Path:
    policy = tmp_path / "policy.yaml"
    policy.write_text(
        f"version: 1\nregistry:\n  url: {registry.url}\n"
        f"  storage:\n    filesystem: {registry.storage_dir}\n"
        "settings:\n  max_deletions: '100%'\n"
        f"rules:\n{rule}"
        "  - name: tags\n    match: {}\n    keep: all\n",
        encoding="utf-8",
    )
    return policy


UNTAGGED_RULE = "  - name: untagged\n    match: {untagged: true}\n    keep: {last: 0}\n"


def test_an_untagged_entry_in_an_api_plan_is_refused_and_nothing_is_deleted(
    fresh_registry: RegistryProcess,
    fresh_pusher: Pusher,
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
) -> None:
    """The same plan with `inventory_source: api` (edited, or from a registry that the API
    alone listed) is refused as an edited plan: the API cannot see untagged manifests."""
    old = [
        fresh_pusher.push_image("app", "latest", created=NOW - timedelta(days=3 - i))
        for i in range(2)
    ]
    for image in old:
        _age(fresh_registry, image.repo, image.digest)
    policy = _scene_policy(tmp_path, fresh_registry, UNTAGGED_RULE)
    plan_file = tmp_path / "plan.json"
    assert main(["plan", "-p", str(policy), "-o", str(plan_file), "-q"]) == 0
    doc = json.loads(plan_file.read_text())
    assert [e["digest"] for e in doc["deletions"]] == [old[0].digest]
    doc["inventory_source"] = "api"
    plan_file.write_text(json.dumps(doc), encoding="utf-8")
    capsys.readouterr()
    code = main(["apply", str(plan_file), "--yes", "--journal", str(tmp_path / "j"), "-q"])
    assert code != 0
    assert "not held by anything the plan deletes" in capsys.readouterr().err
    assert fresh_pusher.pull_complete("app", old[0].digest)


def test_an_untagged_entry_no_untagged_rule_selects_now_is_refused(
    fresh_registry: RegistryProcess,
    fresh_pusher: Pusher,
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
) -> None:
    """A storage plan with an untagged entry the policy no longer selects (its rule narrowed
    since the plan was made) is refused before the first DELETE: the untagged entry is held by
    nothing now, as in an edited plan."""
    old = [
        fresh_pusher.push_image("app", "latest", created=NOW - timedelta(days=3 - i))
        for i in range(2)
    ]
    other = fresh_pusher.push_image("other", None, created=NOW - timedelta(days=3))
    fresh_pusher.push_image("other", "v1", created=NOW - timedelta(days=1))
    for image in [*old, other]:
        _age(fresh_registry, image.repo, image.digest)
    rule = "  - name: untagged\n    match: {untagged: true, repositories: [app, other]}\n"
    policy = _scene_policy(tmp_path, fresh_registry, rule + "    keep: {last: 0}\n")
    plan_file = tmp_path / "plan.json"
    assert main(["plan", "-p", str(policy), "-o", str(plan_file), "-q"]) == 0
    doc = json.loads(plan_file.read_text())
    assert {e["digest"] for e in doc["deletions"]} == {old[0].digest, other.digest}
    policy.write_text(policy.read_text().replace("[app, other]", "[app]"), encoding="utf-8")
    capsys.readouterr()
    journal = tmp_path / "j"
    code = main(["apply", str(plan_file), "--yes", "--journal", str(journal), "-q"])
    assert code != 0
    err = capsys.readouterr().err
    assert "not held by anything the plan deletes" in err
    assert f"other@{other.digest}" in err
    assert fresh_pusher.pull_complete("app", old[0].digest)
    assert fresh_pusher.pull_complete("other", other.digest)
