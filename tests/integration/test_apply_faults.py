"""Apply under faults, against the real registry: killed mid-run, dangling tags, 503 bursts, a tag
re-pushed between plan and apply, hand-edited plans, deletion disabled. Each ends with the
registry holding exactly what the plan keeps."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from retention import plan as plan_mod
from retention.apply import ProgressEvent
from retention.cli import main
from retention.errors import DeleteDisabledError, TransportError
from retention.journal import read_journal
from retention.plan import Plan
from tests.harness.faultproxy import Exchange, Fault, FaultProxy, Upstream
from tests.harness.registry import RegistryProcess
from tests.harness.seed import Pushed, Pusher, pull_complete
from tests.integration.applyscene import push_scene
from tests.support.applykit import (
    assert_plan_applied_exactly,
    assert_untouched,
    load,
    make_plan,
    manifest_exists,
    run_apply,
    tags_of,
    write_policy,
)

NOW = datetime.now(UTC)


def _many(pusher: Pusher, repo: str, count: int) -> list[Pushed]:
    """`count` old images (every third a multi-arch index), then one new one the policy keeps."""
    images = []
    for i in range(count):
        kind = "oci-index" if i % 3 == 0 else "docker"
        images.append(
            pusher.push_image(repo, f"b{i:02d}", kind=kind, created=NOW - timedelta(days=30 - i))
        )
    images.append(pusher.push_image(repo, "newest", created=NOW - timedelta(hours=1)))
    return images


def _no_dangling(url: str, plan: Plan) -> None:
    for repo in {e.repository for e in (*plan.deletions, *plan.kept)}:
        listed = tags_of(url, repo)
        assert None not in listed.values(), f"dangling tags in {repo}: {listed}"


def test_registry_killed_mid_apply_then_rerun_finishes_exactly_the_plan(
    fresh_registry: RegistryProcess, fresh_pusher: Pusher, tmp_path: Path
) -> None:
    images = _many(fresh_pusher, "team/app", 12)
    other = fresh_pusher.push_image("team/lib", ["stable", "old"], created=NOW - timedelta(days=90))
    policy = load(write_policy(tmp_path / "p.yaml", fresh_registry.url, "team", protect=["stable"]))
    plan = make_plan(policy, "team")
    assert len(plan.deletions) == 12 + 4 * 2  # 12 images, 4 of them indexes of 2 platforms
    deleted: list[ProgressEvent] = []

    def kill_after_three(event: ProgressEvent) -> None:
        if event.outcome.kind == "deleted":
            deleted.append(event)
            if len(deleted) == 3:
                fresh_registry.kill()  # SIGKILL while other DELETEs are in flight

    journal = tmp_path / "journal.jsonl"
    first = run_apply(policy, plan, journal, progress=kill_after_three)
    assert isinstance(first.error, TransportError)
    assert not first.complete and 3 <= first.count("deleted") < len(plan.deletions)
    assert first.count("failed") > 0

    fresh_registry.start()
    second = run_apply(policy, plan, journal)
    assert second.complete, [(o.kind, o.reason) for o in second.outcomes]
    assert second.count("resumed") >= 3
    assert_plan_applied_exactly(fresh_registry.url, plan)
    assert_untouched(fresh_registry.url, [images[-1], other])
    _no_dangling(fresh_registry.url, plan)
    # every DELETE this plan needed is in the journal: intent before, an outcome after
    state = read_journal(journal)
    assert set(state.finished()) == {(e.repository, e.digest) for e in plan.deletions}


def _revision_link(registry: RegistryProcess, repo: str, digest: str) -> Path:
    algo, hexpart = digest.split(":")
    return (
        registry.storage_dir
        / "docker/registry/v2/repositories"
        / repo
        / "_manifests/revisions"
        / algo
        / hexpart
        / "link"
    )


def _dangle(registry: RegistryProcess, repo: str, digest: str, tags: list[str], depth: str) -> None:
    """What a registry 2.8 killed inside DeleteManifest leaves. It removes the manifest's revision
    link first, then each tag's folder: killed after the first step, the tags still point at the
    missing revision ("revision"); killed while removing a tag's folder, the folder can be left
    without its `current/link` ("tag-link"). Either way the tag is listed and answers 404."""
    link = _revision_link(registry, repo, digest)
    assert link.is_file()
    registry.stop()
    link.unlink()
    if depth == "tag-link":
        for tag in tags:
            tag_dir = link.parents[3] / "tags" / tag  # <repo>/_manifests/tags/<tag>
            (tag_dir / "current" / "link").unlink()
    registry.start()  # a fresh process: no descriptor cache remembering the manifest


@pytest.mark.parametrize(
    ("journal_has_copy", "depth"),
    [(True, "revision"), (True, "tag-link"), (False, "revision")],
    ids=["repaired", "repaired-tag-link", "no-copy"],
)
def test_a_dangling_tag_is_repaired_from_the_journal(
    fresh_registry: RegistryProcess,
    fresh_pusher: Pusher,
    tmp_path: Path,
    journal_has_copy: bool,
    depth: str,
) -> None:
    old = fresh_pusher.push_image("team/app", ["old", "old-alias"], created=NOW - timedelta(days=9))
    keep = fresh_pusher.push_image("team/app", "new", created=NOW - timedelta(days=1))
    policy = load(write_policy(tmp_path / "p.yaml", fresh_registry.url, "team"))
    plan = make_plan(policy, "team")
    assert [e.digest for e in plan.deletions] == [old.digest]
    journal = tmp_path / "journal.jsonl"
    if journal_has_copy:
        # a first apply got as far as the journal's intent (the registry refused the DELETE)
        fresh_registry.restart(delete_enabled=False)
        first = run_apply(policy, plan, journal)
        assert isinstance(first.error, DeleteDisabledError)
        assert read_journal(journal).intents()[("team/app", old.digest)].raw == old.manifest
        fresh_registry.restart(delete_enabled=True)
    _dangle(fresh_registry, "team/app", old.digest, ["old", "old-alias"], depth)
    assert tags_of(fresh_registry.url, "team/app") == {
        "old": None, "old-alias": None, "new": keep.digest,
    }  # fmt: skip

    report = run_apply(policy, plan, journal)

    (outcome,) = report.outcomes
    if journal_has_copy:
        assert (outcome.kind, outcome.repaired) == ("deleted", True)
        assert tags_of(fresh_registry.url, "team/app") == {"new": keep.digest}
        assert_plan_applied_exactly(fresh_registry.url, plan, report)
    else:
        assert outcome.kind == "failed"
        assert "dangling" in str(outcome.reason) and "no copy" in str(outcome.reason)
        assert tags_of(fresh_registry.url, "team/app")["new"] == keep.digest
    assert_untouched(fresh_registry.url, [keep])


def test_503_bursts_are_retried_and_a_longer_outage_resumes(
    fresh_registry: RegistryProcess, fresh_pusher: Pusher, tmp_path: Path
) -> None:
    images = _many(fresh_pusher, "team/app", 6)
    fresh_pusher.tag("team/app", "b01-alias", images[1])  # a second tag: verified with a HEAD
    policy = load(write_policy(tmp_path / "p.yaml", fresh_registry.url, "team"))
    plan = make_plan(policy, "team")
    journal = tmp_path / "journal.jsonl"
    with FaultProxy(fresh_registry.url) as proxy:
        # bursts shorter than the client's 3 attempts: everything still succeeds
        proxy.add(Fault("status", path="/tags/list", method="GET", times=2, status=503))
        proxy.add(Fault("status", path="/manifests/", method="GET", times=2, status=503))
        proxy.add(Fault("status", path="/manifests/", method="HEAD", times=2, status=503))
        proxy.add(Fault("status", path="/manifests/sha256:", method="DELETE", times=2, status=503))
        first = run_apply(policy, plan, journal, url=proxy.url, concurrency=1)
        injected = [r for r in proxy.requests if r.fault is not None]
        assert len(injected) == 8
        assert first.complete, [(o.kind, o.reason) for o in first.outcomes]
    assert_plan_applied_exactly(fresh_registry.url, plan, first)
    assert_untouched(fresh_registry.url, [images[-1]])

    more = _many(fresh_pusher, "team/app", 4)
    plan = make_plan(policy, "team")
    with FaultProxy(fresh_registry.url) as proxy:

        def outage_after_first(event: ProgressEvent) -> None:
            if event.outcome.kind == "deleted" and event.done == 1:
                # the next DELETE meets an outage longer than the client's retries
                proxy.add(Fault("status", path="/manifests/", method="DELETE", times=3))

        second = run_apply(
            policy, plan, journal, url=proxy.url, concurrency=1, progress=outage_after_first
        )
    assert isinstance(second.error, TransportError) and not second.complete
    assert (second.count("deleted"), second.count("failed")) == (1, len(plan.deletions) - 1)
    third = run_apply(policy, plan, journal)
    assert third.complete, [(o.kind, o.reason) for o in third.outcomes]
    assert_plan_applied_exactly(fresh_registry.url, plan, third)
    assert_untouched(fresh_registry.url, [more[-1]])


def test_a_tag_repushed_between_plan_and_apply_is_kept(
    fresh_registry: RegistryProcess,
    fresh_pusher: Pusher,
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
) -> None:
    old = fresh_pusher.push_image("team/app", "v1", created=NOW - timedelta(days=9))
    gone = fresh_pusher.push_image("team/app", "v2", created=NOW - timedelta(days=8))
    fresh_pusher.push_image("team/app", "v3", created=NOW - timedelta(days=1))
    policy_path = write_policy(tmp_path / "p.yaml", fresh_registry.url, "team")
    plan = make_plan(load(policy_path), "team")
    plan_file = tmp_path / "plan.json"
    plan_file.write_text(plan_mod.to_json(plan))
    repushed = fresh_pusher.push_image("team/app", "v1", created=NOW)  # CI pushes v1 again

    code = main(["apply", str(plan_file), "-p", str(policy_path), "--yes", "--journal",
                 str(tmp_path / "j.jsonl")])  # fmt: skip

    assert code == 3  # only part of the plan was applied
    err = capsys.readouterr().err
    assert f"stale: team/app@{old.digest[:19]} v1: tag v1 moved to {repushed.digest}" in err
    assert "deleted 1, stale 1, already gone 0, failed 0" in err
    assert tags_of(fresh_registry.url, "team/app")["v1"] == repushed.digest
    assert pull_complete(fresh_registry.url, "team/app", "v1")
    assert manifest_exists(fresh_registry.url, "team/app", old.digest)  # never deleted
    assert not manifest_exists(fresh_registry.url, "team/app", gone.digest)


@pytest.mark.parametrize("what", ["layer", "config"])
def test_a_plan_edited_to_list_a_blob_digest_is_refused_before_any_delete(
    fresh_registry: RegistryProcess,
    fresh_pusher: Pusher,
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
    what: str,
) -> None:
    kept = fresh_pusher.push_image("team/app", "keep", created=NOW - timedelta(hours=1))
    fresh_pusher.push_image("team/app", "old", created=NOW - timedelta(days=9))
    policy_path = write_policy(tmp_path / "p.yaml", fresh_registry.url, "team")
    doc = json.loads(plan_mod.to_json(make_plan(load(policy_path), "team")))
    blob = kept.layer_digests[0] if what == "layer" else kept.config_digest
    doc["deletions"].append(
        dict(doc["deletions"][0], digest=blob, tags=[], parent=None, reason="edited by hand")
    )
    doc["deletions"].sort(key=lambda e: e["digest"])
    doc["summary"]["images_deleted"] += 1
    plan_file = tmp_path / "plan.json"
    plan_file.write_text(json.dumps(doc))
    mark = fresh_registry.log_mark()

    code = main(["apply", str(plan_file), "-p", str(policy_path), "--yes", "--journal",
                 str(tmp_path / "j.jsonl")])  # fmt: skip

    assert code == 1
    err = capsys.readouterr().err
    assert "not manifests of their repository" in err and f"team/app@{blob}" in err
    assert "nothing was deleted" in err
    assert [e for e in fresh_registry.access_log(mark) if e.method == "DELETE"] == []
    assert pull_complete(fresh_registry.url, "team/app", "keep")
    assert pull_complete(fresh_registry.url, "team/app", "old")

    # the same edit with the blob's own media type fails the plan schema
    doc["deletions"] = [
        dict(e, media_type="application/vnd.docker.image.rootfs.diff.tar.gzip")
        if e["digest"] == blob
        else e
        for e in doc["deletions"]
    ]
    plan_file.write_text(json.dumps(doc))
    assert main(["apply", str(plan_file), "-p", str(policy_path), "--yes"]) == 1
    assert "never a layer or config blob" in capsys.readouterr().err


def test_deletion_disabled_gives_the_clear_error_and_deletes_nothing(
    fresh_registry: RegistryProcess,
    fresh_pusher: Pusher,
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
) -> None:
    scene = push_scene(fresh_pusher, "team")
    policy_path = write_policy(tmp_path / "p.yaml", fresh_registry.url, "team")
    plan = make_plan(load(policy_path), "team")
    plan_file = tmp_path / "plan.json"
    plan_file.write_text(plan_mod.to_json(plan))
    fresh_registry.restart(delete_enabled=False)
    before = {r: tags_of(fresh_registry.url, r) for r in (scene.app, scene.other)}
    mark = fresh_registry.log_mark()

    code = main(["apply", str(plan_file), "--yes", "--journal", str(tmp_path / "j.jsonl"),
                 "-p", str(policy_path)])  # fmt: skip

    assert code == 1
    err = capsys.readouterr().err
    assert "deletion is disabled on this registry: set storage.delete.enabled: true" in err
    deletes = [e for e in fresh_registry.access_log(mark) if e.method == "DELETE"]
    assert 1 <= len(deletes) <= 4 and {e.status for e in deletes} == {405}  # stops at once
    assert {r: tags_of(fresh_registry.url, r) for r in (scene.app, scene.other)} == before
    assert_untouched(fresh_registry.url, scene.kept + scene.deleted)


def test_a_delete_answered_500_counts_as_gone_only_when_the_manifest_is_gone(
    fresh_registry: RegistryProcess, fresh_pusher: Pusher, tmp_path: Path
) -> None:
    """Two DELETEs of one digest that cross inside distribution: one answers 500 although the
    manifest is gone (docs/decisions.md, "Concurrent DELETEs"). The proxy carries the DELETE out
    and answers 500 for it; a 500 that was not carried out still fails the entry."""
    images = _many(fresh_pusher, "team/app", 2)
    policy = load(write_policy(tmp_path / "p.yaml", fresh_registry.url, "team"))
    plan = make_plan(policy, "team")
    first, second = sorted(e.digest for e in plan.deletions if e.parent is None)[:2]

    def carried_out_then_500(_: object, upstream: Upstream) -> Exchange:
        assert upstream().status == 202
        return Exchange(500, (("Content-Type", "application/json"),), b'{"errors":[]}')

    with FaultProxy(fresh_registry.url) as proxy:
        proxy.add(Fault("respond", path=f"/manifests/{first}", method="DELETE", times=1,
                        handler=carried_out_then_500))  # fmt: skip
        proxy.add(Fault("status", path=f"/manifests/{second}", method="DELETE", times=1,
                        status=500))  # fmt: skip
        report = run_apply(policy, plan, tmp_path / "j.jsonl", url=proxy.url, concurrency=1)

    kinds = {o.entry.digest: o.kind for o in report.outcomes}
    assert (kinds[first], kinds[second]) == ("gone", "failed"), [
        (o.kind, o.reason) for o in report.outcomes
    ]
    assert not manifest_exists(fresh_registry.url, "team/app", first)
    assert manifest_exists(fresh_registry.url, "team/app", second)
    again = run_apply(policy, plan, tmp_path / "j.jsonl")
    assert again.complete, [(o.kind, o.reason) for o in again.outcomes]
    assert_plan_applied_exactly(fresh_registry.url, plan, again)
    assert_untouched(fresh_registry.url, [images[-1]])
