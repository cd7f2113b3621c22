"""The whole pipeline on a real registry with every kind of manifest the harness can push:
validate -> plan -o -> apply --yes -> garbage-collect, all through `retention.cli.main`.

Proves: the plan deletes exactly the set written out by hand below from the policy; after GC the
blob bytes actually freed match the plan's `bytes_reclaimable` (within 1%, and blob for blob);
every kept tag still pulls completely (manifests, children, configs, layers).
"""

from __future__ import annotations

import json
import random
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from retention.cli import main
from tests.harness.registry import RegistryProcess
from tests.harness.seed import Pushed, Pusher, list_tags, make_layer, pull_complete, resolve

POLICY = """\
version: 1
registry:
  url: {url}
settings:
  max_deletions: 50
  unknown_age: oldest
protect:
  tags: ['latest', 'v\\d+\\.\\d+\\.\\d+']
rules:
  - name: orphaned-signatures
    match: {{tags: ['sha256-[0-9a-f]{{64}}\\.(sig|att|sbom)']}}
    keep: {{newer_than: 1d}}
  - name: web
    match: {{repositories: ['apps/web']}}
    keep: {{last: 2}}
  - name: multi
    match: {{repositories: ['apps/multi']}}
    keep: {{last: 1}}
  - name: oci
    match: {{repositories: ['apps/oci']}}
    keep: {{newer_than: 10d}}
  - name: dates
    match: {{repositories: ['apps/dates']}}
    keep: {{last: 2}}
  - name: everything-else
    match: {{}}
    keep: all
"""


def _blob_data(registry: RegistryProcess) -> dict[str, int]:
    """Every blob the storage holds (manifests, configs, layers): digest -> bytes of `data`."""
    root = registry.storage_dir / "docker" / "registry" / "v2" / "blobs"
    return {
        f"{path.parent.parent.parent.name}:{path.parent.name}": path.stat().st_size
        for path in root.rglob("data")
    }


def _blobs(images: list[Pushed]) -> dict[str, int]:
    out: dict[str, int] = {}
    for image in images:
        out.update(image.blob_sizes)
    return out


def test_every_kind_is_planned_applied_and_collected(
    fresh_registry: RegistryProcess,
    fresh_pusher: Pusher,
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
) -> None:
    reg, push = fresh_registry, fresh_pusher
    now = datetime.now(UTC).replace(microsecond=0)

    def ago(days: int) -> datetime:
        return now - timedelta(days=days)

    rng = random.Random("all-kinds")
    shared_kept = make_layer(rng.randbytes(6000))  # libs/base keeps it; deleted main-5 uses it
    shared_gone = make_layer(rng.randbytes(5000))  # only deleted images use it, in two repos
    web_common = make_layer(rng.randbytes(3000))  # kept main-1 and deleted main-5

    # apps/web, rule `web` keeps the 2 most recent: main-1, main-2
    release = push.push_image("apps/web", "v1.0.0", created=ago(400))  # protected
    release_sig = push.push_cosign_signature("apps/web", release)
    main1 = push.push_image(
        "apps/web", "main-1", created=ago(1), layers=[web_common, rng.randbytes(2000)]
    )
    main1_sig = push.push_cosign_signature("apps/web", main1)
    main1_att = push.push_cosign_signature("apps/web", main1, "att")
    main2 = push.push_image("apps/web", "main-2", created=ago(2))
    # rank 3, not kept by its rule, but `latest` (protected) holds the same digest
    main3 = push.push_image("apps/web", ["main-3", "latest"], created=ago(30))
    main4 = push.push_image(
        "apps/web", ["main-4", "main-4-alias"], created=ago(40), layers=[shared_gone, "m4"]
    )
    main4_sig = push.push_cosign_signature("apps/web", main4)
    main4_att = push.push_cosign_signature("apps/web", main4, "att")
    main5 = push.push_image("apps/web", "main-5", created=ago(50), layers=[shared_kept, web_common])
    gone = push.push_image("apps/web", "gone", created=ago(60))
    orphan_sig = push.push_cosign_signature("apps/web", gone)
    assert push.delete_manifest("apps/web", gone.digest) == 202  # its signature is now an orphan

    # apps/multi, rule `multi` keeps the most recent index: idx-new
    idx_new = push.push_image(
        "apps/multi",
        "idx-new",
        kind="oci-index",
        seed="rebuilt",
        platforms=("linux/amd64", "linux/arm64"),
        platform_created={"linux/amd64": ago(20), "linux/arm64": ago(1)},
    )
    # the same seed: the same amd64 manifest as idx-new, and an arm/v7 child sharing arm64's layer
    idx_rebuilt = push.push_image(
        "apps/multi",
        "idx-rebuilt",
        kind="oci-index",
        seed="rebuilt",
        platforms=("linux/amd64", "linux/arm/v7"),
        platform_created={"linux/amd64": ago(20), "linux/arm/v7": ago(25)},
    )
    shared_child = idx_new.child("linux/amd64")
    assert idx_rebuilt.child("linux/amd64").digest == shared_child.digest
    idx_old = push.push_image("apps/multi", "idx-old", kind="oci-index", created=ago(30))
    idx_old_sig = push.push_cosign_signature("apps/multi", idx_old)
    list_old = push.push_image("apps/multi", "list-old", kind="docker-list", created=ago(40))

    # apps/oci, rule `oci` keeps what is younger than 10 days
    oci_new = push.push_image("apps/oci", "o-new", kind="oci", created=ago(3))
    oci_old = push.push_image(
        "apps/oci", "o-old", kind="oci", created=ago(15), layers=[shared_gone]
    )
    oci_annotated = push.push_image(
        "apps/oci", "o-annotated", kind="oci", created=None, created_annotation=ago(12)
    )

    # apps/dates, rule `dates` keeps 2; unknown_age: oldest ranks unknown dates last
    d_new = push.push_image("apps/dates", "d-new", created=ago(2))
    d_label = push.push_image("apps/dates", "d-labelled", created=None, created_label=ago(100))
    d_epoch = push.push_image("apps/dates", "d-epoch", created="1970-01-01T00:00:00Z")
    d_nodate = push.push_image("apps/dates", "d-nodate", created=None)

    # libs/base: `everything-else` keeps all
    base = push.push_image("libs/base", "base", created=ago(100), layers=[shared_kept])

    # Written by hand from the policy: (repository, digest) -> tags
    deleted_images = [
        main4,
        main4_sig,
        main4_att,
        main5,
        orphan_sig,
        idx_rebuilt,
        idx_old,
        idx_old_sig,
        list_old,
        oci_old,
        oci_annotated,
        d_epoch,
        d_nodate,
    ]
    expected: dict[tuple[str, str], tuple[str, ...]] = {
        (p.repo, p.digest): tuple(sorted(p.tags)) for p in deleted_images
    }
    expected_children = {
        (idx_rebuilt.repo, idx_rebuilt.child("linux/arm/v7").digest): idx_rebuilt.digest,
        **{(idx_old.repo, c.digest): idx_old.digest for c in idx_old.children},
        **{(list_old.repo, c.digest): list_old.digest for c in list_old.children},
    }
    expected.update(dict.fromkeys(expected_children, ()))
    kept_images = [
        release,
        release_sig,
        main1,
        main1_sig,
        main1_att,
        main2,
        main3,
        idx_new,
        oci_new,
        d_new,
        d_label,
        base,
    ]
    kept_blobs = _blobs(kept_images)
    expected_freed = {d: s for d, s in _blobs(deleted_images).items() if d not in kept_blobs}
    assert shared_child.digest not in expected_freed
    assert shared_kept.digest not in expected_freed and shared_gone.digest in expected_freed

    # `gone` was deleted through the API before the run: collect its blobs now, so that the
    # measurement below sees only what the retention run frees
    reg.garbage_collect()
    before = _blob_data(reg)
    assert set(expected_freed) <= set(before)

    policy = tmp_path / "policy.yaml"
    policy.write_text(POLICY.format(url=reg.url))
    plan_file = tmp_path / "plan.json"
    assert main(["validate", str(policy)]) == 0
    capsys.readouterr()

    assert main(["plan", "-p", str(policy), "-o", str(plan_file), "--detailed-exitcode"]) == 2
    out, err = capsys.readouterr()
    doc = json.loads(plan_file.read_text())
    got = {(e["repository"], e["digest"]): tuple(e["tags"]) for e in doc["deletions"]}
    assert got == expected
    parents = {(e["repository"], e["digest"]): e["parent"] for e in doc["deletions"]}
    assert {k: v for k, v in parents.items() if v is not None} == expected_children
    summary = doc["summary"]
    assert (summary["images_deleted"], summary["tags_deleted"]) == (18, 14)
    assert summary["complete"] is True
    assert out.splitlines()[-1].startswith(
        "Plan: 18 images (14 tags) to delete in 4 repositories, ~"
    )
    assert out.splitlines()[-1].endswith(" reclaimable after garbage collection.")
    lines = out.splitlines()
    assert lines[lines.index("Warnings:") + 1 : -2] == [
        "  ! 3 images owned by a rule with unknown created date: ranked oldest and counted as "
        "old (settings.unknown_age: oldest)",
        "  ! 1 orphan attachment tag (their subject no longer exists): deleted only where a rule "
        "selects them",
    ]
    assert err == ""
    assert summary["bytes_reclaimable"] == sum(expected_freed.values())

    journal = tmp_path / "journal.jsonl"
    assert main(["apply", str(plan_file), "--yes", "--journal", str(journal)]) == 0
    assert "deleted 18, stale 0, already gone 0, failed 0" in capsys.readouterr().err

    reg.garbage_collect()
    after = _blob_data(reg)
    freed = {d: before[d] for d in set(before) - set(after)}
    assert set(after) <= set(before)
    # blob for blob: GC freed exactly what the plan counted (a difference names the blob)
    assert sorted(set(freed) - set(expected_freed)) == []
    assert sorted(set(expected_freed) - set(freed)) == []
    freed_bytes = sum(freed.values())
    assert abs(summary["bytes_reclaimable"] - freed_bytes) <= 0.01 * freed_bytes

    for repo, digest in expected:
        assert resolve(reg.url, repo, digest) is None, f"{repo}@{digest} survived"
    kept_tags = {
        "apps/web": sorted(
            ["v1.0.0", "main-1", "main-2", "main-3", "latest"]
            + [t for p in (release_sig, main1_sig, main1_att) for t in p.tags]
        ),
        "apps/multi": ["idx-new"],
        "apps/oci": ["o-new"],
        "apps/dates": ["d-labelled", "d-new"],
        "libs/base": ["base"],
    }
    for repo, tags in kept_tags.items():
        assert list_tags(reg.url, repo) == tags
        for tag in tags:
            assert pull_complete(reg.url, repo, tag), f"kept {repo}:{tag} does not pull"
