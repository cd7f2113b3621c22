"""What a user does, end to end against a real registry: seed ~30 images over 3 repositories,
write a policy, validate, plan -o, apply --yes, run garbage-collect, and check what is left."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from retention.cli import main
from tests.harness.registry import RegistryProcess
from tests.harness.seed import Pusher, make_layer

NOW = datetime.now(UTC).replace(microsecond=0)

POLICY = """\
version: 1
registry:
  url: {url}
settings:
  max_deletions: 100
protect:
  tags: ['latest', 'stable', 'v\\d+\\.\\d+\\.\\d+']
rules:
  - name: pr-builds
    match:
      repositories: ['shop/.*']
      tags: ['pr-\\d+']
    keep: {{last: 2}}
  - name: main-builds
    match: {{tags: ['main-\\d+']}}
    keep: {{last: 3, newer_than: 10d}}
  - name: everything-else
    match: {{}}
    keep: all
"""

# repository → [(tags, days old)]; each entry is one image
SCENARIO: dict[str, list[tuple[tuple[str, ...], int]]] = {
    "shop/web": [
        (("v1.0.0",), 300),
        (("v1.1.0",), 200),
        (("main-1",), 80),
        (("main-2",), 70),
        (("main-3", "stable"), 60),  # shares its digest with a protected tag
        (("main-4",), 50),
        (("main-5",), 40),
        (("main-6",), 30),
        (("main-7",), 9),
        (("main-8", "latest"), 2),
        (("pr-1",), 50),
        (("pr-2",), 40),
        (("pr-3",), 30),
        (("pr-4",), 20),
        (("pr-5",), 10),
    ],
    "shop/api": [
        (("v2.0.0",), 150),
        (("main-1",), 100),
        (("main-2",), 90),
        (("main-3",), 80),
        (("main-4",), 70),
        (("main-5",), 5),
        (("main-6",), 1),
        (("pr-7", "pr-8"), 60),  # two tags, one image, both to be deleted
        (("pr-9",), 3),
        (("pr-10",), 1),
    ],
    "tools/ci": [
        (("main-1",), 40),
        (("main-2",), 30),
        (("main-3",), 20),
        (("main-4",), 15),
        (("pr-1",), 25),  # no rule for pr- tags outside shop/: kept by everything-else
        (("nightly",), 100),
    ],
}

EXPECTED_DELETED_TAGS = (
    {("shop/web", t) for t in ("main-1", "main-2", "main-4", "main-5", "pr-1", "pr-2", "pr-3")}
    | {("shop/api", t) for t in ("main-1", "main-2", "main-3", "pr-7", "pr-8")}
    | {("tools/ci", "main-1")}
)


def _blob_bytes(registry: RegistryProcess) -> int:
    """Bytes of blob data (layers, configs, manifests) in the registry's storage."""
    blobs = registry.storage_dir / "docker" / "registry" / "v2" / "blobs"
    return sum(p.stat().st_size for p in blobs.rglob("data"))


def test_plan_apply_gc_keeps_exactly_what_the_policy_says(
    fresh_registry: RegistryProcess,
    fresh_pusher: Pusher,
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
) -> None:
    base = make_layer("shared base layer " * 40)  # every image shares it: GC must keep it
    pushed: dict[tuple[str, str], str] = {}
    for repo, images in SCENARIO.items():
        for tags, days in images:
            image = fresh_pusher.push_image(
                repo, list(tags), created=NOW - timedelta(days=days), layers=[base, f"{repo}{tags}"]
            )
            pushed.update({(repo, t): image.digest for t in tags})
    assert len(pushed) == 34  # 31 images

    policy = tmp_path / "policy.yaml"
    policy.write_text(POLICY.format(url=fresh_registry.url))
    assert main(["validate", str(policy)]) == 0

    plan_file = tmp_path / "plan.json"
    assert main(["plan", "-p", str(policy), "-o", str(plan_file)]) == 0
    text = capsys.readouterr().out
    assert "Plan: 12 images (13 tags) to delete in 3 repositories" in text
    assert "pr-7" in text and "main-builds" in text
    plan = json.loads(plan_file.read_text())
    deleted = {(e["repository"], t) for e in plan["deletions"] for t in e["tags"]}
    assert deleted == EXPECTED_DELETED_TAGS
    assert plan["summary"]["images_deleted"] == 12
    assert plan["summary"]["tags_deleted"] == 13
    assert all(e["digest"] == pushed[(e["repository"], e["tags"][0])] for e in plan["deletions"])
    kept_reasons = {(e["repository"], t): e["reason"] for e in plan["kept"] for t in e["tags"]}
    assert "stable" in kept_reasons[("shop/web", "main-3")]

    blobs_before = _blob_bytes(fresh_registry)
    assert main(["apply", str(plan_file), "--yes"]) == 0
    fresh_registry.garbage_collect()
    freed = blobs_before - _blob_bytes(fresh_registry)

    for (repo, tag), digest in sorted(pushed.items()):
        if (repo, tag) in EXPECTED_DELETED_TAGS:
            assert fresh_pusher.resolve(repo, tag) is None, f"{repo}:{tag} still there"
        else:
            assert fresh_pusher.resolve(repo, tag) == digest, f"{repo}:{tag} moved or vanished"
            assert fresh_pusher.pull_complete(repo, tag), f"{repo}:{tag} no longer pulls"
    assert freed > 0
    reclaimable = plan["summary"]["bytes_reclaimable"]
    assert abs(freed - reclaimable) <= reclaimable * 0.01, (freed, reclaimable)
