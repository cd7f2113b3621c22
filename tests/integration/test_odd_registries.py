"""Registries in states our seeding never produces on its own, planned and applied for real:
an OCI referrers fallback tag, a nested index, a config blob gone from storage, a dangling tag
left by hand, an index missing a child, names full of separators, signatures in a repository of
their own, and a tag whose manifest cannot be read. Each must plan without a traceback (or refuse
to plan) and apply without touching anything a kept tag needs (DESIGN §6 invariants 1 and 2)."""

from __future__ import annotations

import json
import os
import shutil
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from retention import cli
from retention import plan as plan_mod
from retention.oci import OCI_INDEX
from tests.harness.faultproxy import Exchange, Fault, FaultProxy
from tests.harness.registry import RegistryProcess
from tests.harness.seed import Pushed, Pusher, list_tags, pull_complete, resolve, sha256_digest
from tests.support.applykit import (
    assert_plan_applied_exactly,
    load,
    make_plan,
    manifest_exists,
    run_apply,
    write_policy,
)

DAY = timedelta(days=1)


def _storage(registry: RegistryProcess) -> Path:
    return registry.storage_dir / "docker" / "registry" / "v2"


def _push_index(
    pusher: Pusher, repo: str, tag: str | None, children: list[tuple[str, str, int]]
) -> str:
    """Push an OCI index of `(media_type, digest, size)` entries, tagged or by digest."""
    body = json.dumps(
        {
            "schemaVersion": 2,
            "mediaType": OCI_INDEX,
            "manifests": [{"mediaType": m, "digest": d, "size": s} for m, d, s in children],
        }
    ).encode()
    return pusher.push_manifest(repo, tag or sha256_digest(body), body, OCI_INDEX)


def _entry(image: Pushed) -> tuple[str, str, int]:
    return image.media_type, image.digest, len(image.manifest)


def _plan_cli(
    policy: Path, out: Path, capsys: pytest.CaptureFixture[str], prefix: str | None = None
) -> tuple[int, str]:
    # on the session registry, the test's own repositories only: a walk of all of it (it grows
    # with the suite), through a proxy in some tests, would take most of the time and test
    # nothing more
    narrow = ["--repository", f"{prefix}/.*"] if prefix else []
    code = cli.main(["plan", "-p", str(policy), "-o", str(out), *narrow])
    err = capsys.readouterr().err
    assert "Traceback" not in err
    return code, err


def test_a_referrers_fallback_tag_follows_its_subject(
    registry: RegistryProcess,
    pusher: Pusher,
    repo_prefix: str,
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
) -> None:
    """`sha256-<hex>` (no suffix) is the OCI 1.1 tag-schema fallback that ORAS and cosign write
    on registries without a referrers API, such as 2.8: an index of the subject's referrers."""
    now = datetime.now(UTC)
    repo = f"{repo_prefix}/app"
    old = pusher.push_image(repo, "old", created=now - 9 * DAY)
    new = pusher.push_image(repo, "new", created=now - DAY)
    old_ref = pusher.push_referrer(repo, old)
    new_ref = pusher.push_referrer(repo, new)
    old_fb = _push_index(pusher, repo, "sha256-" + old.digest[7:], [_entry(old_ref)])
    new_fb = _push_index(pusher, repo, "sha256-" + new.digest[7:], [_entry(new_ref)])
    policy = write_policy(tmp_path / "p.yaml", registry.url, repo_prefix, protect=())

    code, err = _plan_cli(policy, tmp_path / "plan.json", capsys, repo_prefix)
    assert code == 0, err
    plan = plan_mod.from_json((tmp_path / "plan.json").read_bytes(), "plan.json")
    assert {e.digest for e in plan.deletions} == {old.digest, old_fb, old_ref.digest}
    assert {new.digest, new_fb, new_ref.digest} <= {e.digest for e in plan.kept}

    report = run_apply(load(policy), plan, tmp_path / "journal")
    assert_plan_applied_exactly(registry.url, plan, report)
    assert list_tags(registry.url, repo) == sorted(["new", "sha256-" + new.digest[7:]])


def test_a_platform_manifest_of_a_kept_nested_index_is_never_deleted(
    registry: RegistryProcess, pusher: Pusher, repo_prefix: str, tmp_path: Path
) -> None:
    """`keep` is an index whose only entry is another index; `old` is an index sharing a
    platform manifest with that inner index. Deleting `old` must not take the shared one."""
    now = datetime.now(UTC)
    repo = f"{repo_prefix}/app"
    shared = pusher.push_image(repo, None, kind="oci", created=now - 30 * DAY)
    other = pusher.push_image(repo, None, kind="oci", created=now - 30 * DAY)
    only_old = pusher.push_image(repo, None, kind="oci", created=now - 30 * DAY)
    inner = _push_index(pusher, repo, None, [_entry(shared), _entry(other)])
    inner_size = len(pusher.get_manifest(repo, inner)[0])
    keep = _push_index(pusher, repo, "keep", [(OCI_INDEX, inner, inner_size)])
    old = _push_index(pusher, repo, "old", [_entry(shared), _entry(only_old)])
    # and a nested index that goes, with everything below it
    gone_image = pusher.push_image(repo, None, kind="oci", created=now - 30 * DAY)
    gone_inner = _push_index(pusher, repo, None, [_entry(gone_image)])
    gone_inner_size = len(pusher.get_manifest(repo, gone_inner)[0])
    gone = _push_index(pusher, repo, "gone", [(OCI_INDEX, gone_inner, gone_inner_size)])
    policy = load(
        write_policy(tmp_path / "p.yaml", registry.url, repo_prefix, last=0, protect=("keep",))
    )

    plan = make_plan(policy, repo_prefix)
    assert {e.digest for e in plan.deletions} == {
        old,
        only_old.digest,
        gone,
        gone_inner,
        gone_image.digest,
    }
    assert {keep, inner, shared.digest, other.digest} <= {e.digest for e in plan.kept}

    report = run_apply(policy, plan, tmp_path / "journal")
    assert_plan_applied_exactly(registry.url, plan, report)
    assert pull_complete(registry.url, repo, "keep")


def test_an_image_whose_config_blob_is_gone_is_kept_with_its_age_unknown(
    fresh_registry: RegistryProcess,
    fresh_pusher: Pusher,
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
) -> None:
    """A registry after a bad garbage collection: one image's config is gone from storage. The
    rest of the registry is still planned; that image is kept (unknown age), with a warning."""
    now = datetime.now(UTC)
    repo = "team/app"
    broken = fresh_pusher.push_image(repo, "broken", created=now - 90 * DAY)
    old = fresh_pusher.push_image(repo, "old", created=now - 9 * DAY)
    new = fresh_pusher.push_image(repo, "new", created=now - DAY)
    assert broken.config_digest is not None
    hexpart = broken.config_digest.removeprefix("sha256:")
    shutil.rmtree(_storage(fresh_registry) / "blobs" / "sha256" / hexpart[:2] / hexpart)
    fresh_registry.restart()  # forget the blob descriptor cache
    policy_path = write_policy(tmp_path / "p.yaml", fresh_registry.url, "team", protect=())

    code, err = _plan_cli(policy_path, tmp_path / "plan.json", capsys)
    assert code == 0, err
    assert f"{repo}@{broken.digest}" in err and "config" in err  # the warning names it
    plan = plan_mod.from_json((tmp_path / "plan.json").read_bytes(), "plan.json")
    assert [e.digest for e in plan.deletions] == [old.digest]
    kept = {e.digest: e for e in plan.kept}
    assert "age unknown" in kept[broken.digest].reason

    report = run_apply(load(policy_path), plan, tmp_path / "journal")
    assert report.complete
    assert not manifest_exists(fresh_registry.url, repo, old.digest)
    assert resolve(fresh_registry.url, repo, "broken") == broken.digest
    assert new.digest in kept and pull_complete(fresh_registry.url, repo, "new")


def test_a_dangling_tag_left_on_disk_is_reported_and_left_alone(
    fresh_registry: RegistryProcess,
    fresh_pusher: Pusher,
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
) -> None:
    now = datetime.now(UTC)
    repo = "team/app"
    ghost = fresh_pusher.push_image(repo, "ghost", created=now - 90 * DAY)
    old = fresh_pusher.push_image(repo, "old", created=now - 9 * DAY)
    fresh_pusher.push_image(repo, "new", created=now - DAY)
    revisions = _storage(fresh_registry) / "repositories" / repo / "_manifests" / "revisions"
    (revisions / "sha256" / ghost.digest.removeprefix("sha256:") / "link").unlink()
    fresh_registry.restart()
    assert resolve(fresh_registry.url, repo, "ghost") is None
    assert "ghost" in list_tags(fresh_registry.url, repo)
    policy_path = write_policy(tmp_path / "p.yaml", fresh_registry.url, "team", protect=())

    code, err = _plan_cli(policy_path, tmp_path / "plan.json", capsys)
    assert code == 0, err
    assert f"{repo}:ghost is listed but its manifest is gone" in err
    plan = plan_mod.from_json((tmp_path / "plan.json").read_bytes(), "plan.json")
    assert [e.digest for e in plan.deletions] == [old.digest]

    report = run_apply(load(policy_path), plan, tmp_path / "journal")
    assert_plan_applied_exactly(fresh_registry.url, plan, report)
    assert list_tags(fresh_registry.url, repo) == ["ghost", "new"]


@pytest.mark.parametrize("source", ["api", "storage"])
def test_a_dangling_tag_is_untagged_with_settings_untag(
    fresh_registry: RegistryProcess,
    fresh_pusher: Pusher,
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
    source: str,
) -> None:
    """Both inventories carry the dangling tag to evaluation, which plans it as an untag with no
    digest; the storage one compares with the API without calling it another registry (the tag
    folder is still there, its revision gone: what a registry killed mid-DELETE leaves)."""
    now = datetime.now(UTC)
    repo = "team/app"
    ghost = fresh_pusher.push_image(repo, "ghost", created=now - 90 * DAY)
    new = fresh_pusher.push_image(repo, "new", created=now - DAY)
    revisions = _storage(fresh_registry) / "repositories" / repo / "_manifests" / "revisions"
    (revisions / "sha256" / ghost.digest.removeprefix("sha256:") / "link").unlink()
    # a tag link written a day ago: not a push in flight (retention/storage.py IN_FLIGHT_SECONDS)
    link = revisions.parent / "tags" / "ghost" / "current" / "link"
    day_ago = (now - DAY).timestamp()
    os.utime(link, (day_ago, day_ago))
    fresh_registry.restart()
    assert resolve(fresh_registry.url, repo, "ghost") is None
    policy_path = tmp_path / "p.yaml"
    policy_path.write_text(
        f"version: 1\nregistry:\n  url: {fresh_registry.url}\n"
        f"  storage:\n    filesystem: {fresh_registry.storage_dir}\n"
        "settings: {untag: true}\n"
        "rules:\n  - name: all\n    match: {repositories: ['team/.*']}\n    keep: {last: 1}\n"
    )
    out = tmp_path / "plan.json"
    code = cli.main(["plan", "-p", str(policy_path), "-o", str(out), "--inventory-source", source])
    err = capsys.readouterr().err
    assert code == 0, err
    assert f"{repo}:ghost is listed but its manifest is gone (a dangling tag)" in err
    assert "in flight" not in err
    plan = plan_mod.from_json(out.read_bytes(), "plan.json")
    assert plan.inventory_source == source
    assert [(u.repository, u.tag, u.digest, u.rule) for u in plan.untags] == [
        (repo, "ghost", None, "all")
    ]
    assert plan.deletions == ()
    assert [(e.digest, e.tags) for e in plan.kept if e.tags] == [(new.digest, ("new",))]


def test_an_index_missing_a_platform_manifest_is_planned_by_what_is_there(
    registry: RegistryProcess, pusher: Pusher, repo_prefix: str, tmp_path: Path
) -> None:
    now = datetime.now(UTC)
    repo = f"{repo_prefix}/app"
    old = pusher.push_image(repo, "old", kind="oci-index", created=now - 9 * DAY)
    new = pusher.push_image(repo, "new", kind="oci-index", created=now - DAY)
    assert pusher.delete_manifest(repo, old.children[0].digest) == 202
    assert pusher.delete_manifest(repo, new.children[0].digest) == 202
    policy = load(write_policy(tmp_path / "p.yaml", registry.url, repo_prefix, protect=()))

    plan = make_plan(policy, repo_prefix)
    assert {e.digest for e in plan.deletions} == {old.digest, old.children[1].digest}
    assert new.children[1].digest in {e.digest for e in plan.kept}

    report = run_apply(policy, plan, tmp_path / "journal")
    assert report.complete
    for e in plan.deletions:
        assert not manifest_exists(registry.url, repo, e.digest)
    assert resolve(registry.url, repo, "new") == new.digest
    assert manifest_exists(registry.url, repo, new.children[1].digest)


def test_repository_and_tag_names_full_of_separators(
    registry: RegistryProcess, pusher: Pusher, repo_prefix: str, tmp_path: Path
) -> None:
    now = datetime.now(UTC)
    repo = f"{repo_prefix}/a.b/c_d/e--f/g__h"
    old = pusher.push_image(repo, ["v1.0_x-y", "1.0"], created=now - 9 * DAY)
    pusher.push_image(repo, "__v2.0-rc.1", created=now - DAY)
    policy = load(write_policy(tmp_path / "p.yaml", registry.url, repo_prefix, protect=()))

    plan = make_plan(policy, repo_prefix)
    assert [(e.repository, e.digest, e.tags) for e in plan.deletions] == [
        (repo, old.digest, ("1.0", "v1.0_x-y"))
    ]
    report = run_apply(policy, plan, tmp_path / "journal")
    assert_plan_applied_exactly(registry.url, plan, report)
    assert list_tags(registry.url, repo) == ["__v2.0-rc.1"]


def test_signatures_in_their_own_repository_live_as_long_as_their_image(
    fresh_registry: RegistryProcess,
    fresh_pusher: Pusher,
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
) -> None:
    """cosign with COSIGN_REPOSITORY=<registry>/team/sigs: the signatures of `team/app` images
    live in `team/sigs`. Cosign signatures have no created date, and with `unknown_age: oldest`
    a rule over `team/sigs` used to delete every one of them as an orphan, although their
    images were alive in `team/app`. They go only once their image is gone from the registry
    (a whole-registry plan: with part of it, the image might be outside)."""
    now = datetime.now(UTC)
    app, sigs = "team/app", "team/sigs"
    old = fresh_pusher.push_image(app, "old", created=now - 9 * DAY)
    new = fresh_pusher.push_image(app, "new", created=now - DAY)
    old_sig = fresh_pusher.push_cosign_signature(sigs, old)
    new_sig = fresh_pusher.push_cosign_signature(sigs, new)
    policy_path = tmp_path / "p.yaml"
    policy_path.write_text(
        f"version: 1\nregistry:\n  url: {fresh_registry.url}\n"
        "settings:\n  unknown_age: oldest\n"
        "rules:\n"
        f"  - name: signatures\n    match:\n      repositories: ['{sigs}']\n"
        "    keep:\n      last: 0\n"
        "  - name: images\n    match:\n      repositories: ['team/.*']\n"
        "    keep:\n      last: 1\n"
    )
    policy = load(policy_path)

    def plan_and_apply(run: int) -> plan_mod.Plan:
        code, err = _plan_cli(policy_path, tmp_path / f"plan{run}.json", capsys)
        assert code == 0, err
        plan = plan_mod.from_json((tmp_path / f"plan{run}.json").read_bytes(), "plan.json")
        report = run_apply(policy, plan, tmp_path / f"journal{run}")
        assert_plan_applied_exactly(fresh_registry.url, plan, report)
        return plan

    first = plan_and_apply(1)
    assert [e.digest for e in first.deletions] == [old.digest]
    assert resolve(fresh_registry.url, sigs, old_sig.tag) == old_sig.digest

    second = plan_and_apply(2)  # the old image is gone: now its signature is an orphan
    assert [e.digest for e in second.deletions] == [old_sig.digest]
    assert list_tags(fresh_registry.url, sigs) == [new_sig.tag]
    assert pull_complete(fresh_registry.url, app, "new")


SCHEMA1 = json.dumps(
    {"schemaVersion": 1, "name": "x", "tag": "b", "architecture": "amd64", "fsLayers": []}
).encode()


@pytest.mark.parametrize(
    ("body", "content_type", "message"),
    [
        (SCHEMA1, "application/vnd.docker.distribution.manifest.v1+prettyjws", "schema 1"),
        (b"{garbage", "application/vnd.oci.image.manifest.v1+json", "not valid JSON"),
        (b"<html>bad gateway</html>", "text/html", "not valid JSON"),
        (b"[]", "application/json", "not a JSON object"),
    ],
    ids=["schema1", "garbage", "html", "array"],
)
def test_a_tag_whose_manifest_cannot_be_read_stops_the_plan(
    registry: RegistryProcess,
    pusher: Pusher,
    repo_prefix: str,
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
    body: bytes,
    content_type: str,
    message: str,
) -> None:
    """Unknown ⇒ no plan: `kept` shares a digest with `old`; were it dropped from the walk, the
    plan would delete that digest and `kept` with it."""
    now = datetime.now(UTC)
    repo = f"{repo_prefix}/app"
    pusher.push_image(repo, ["old", "kept"], created=now - 9 * DAY)
    pusher.push_image(repo, "new", created=now - DAY)

    def answer(_request: object, upstream: Callable[..., Exchange]) -> Exchange:
        real = upstream()
        headers = [
            (k, v)
            for k, v in real.headers
            if k.lower() not in ("content-type", "docker-content-digest", "content-length")
        ]
        return Exchange(200, (*headers, ("Content-Type", content_type)), body)

    with FaultProxy(registry.url) as proxy:
        proxy.add(Fault("respond", path=f"/{repo}/manifests/kept$", handler=answer, times=None))
        policy = write_policy(tmp_path / "p.yaml", proxy.url, repo_prefix, protect=("kept",))
        code, err = _plan_cli(policy, tmp_path / "plan.json", capsys, repo_prefix)

    assert code == 1
    assert message in err and "Traceback" not in err
    assert not (tmp_path / "plan.json").exists()
