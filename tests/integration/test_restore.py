"""`retention restore` against the real registry: a multi-arch image and a signed image deleted
by apply come back completely, until garbage collection runs."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from retention.cli import main
from retention.journal import read_journal
from retention.registry.client import RegistryClient
from retention.restore import restore, select
from tests.harness.registry import RegistryProcess
from tests.harness.seed import Pushed, Pusher, pull_complete
from tests.support.applykit import (
    assert_untouched,
    load,
    make_plan,
    manifest_exists,
    run_apply,
    tags_of,
    write_policy,
)

NOW = datetime.now(UTC)
Deleted = tuple[dict[str, Pushed], Path, Path]
"""The images by name, the apply's journal and the policy file (`_deleted_scene`)."""


def _deleted_scene(
    registry: RegistryProcess, pusher: Pusher, tmp_path: Path, prefix: str
) -> Deleted:
    repo = f"{prefix}/app"
    multi = pusher.push_image(
        repo, ["multi", "multi-1"], kind="oci-index", created=NOW - timedelta(days=9)
    )
    signed = pusher.push_image(repo, "signed", kind="oci", created=NOW - timedelta(days=8))
    sig = pusher.push_cosign_signature(repo, signed)
    sbom = pusher.push_referrer(repo, signed, tag="signed-sbom")
    keep = pusher.push_image(repo, "keep", created=NOW - timedelta(hours=1))
    policy_path = write_policy(tmp_path / "p.yaml", registry.url, prefix)
    policy = load(policy_path)
    plan = make_plan(policy, prefix)
    journal = tmp_path / "journal.jsonl"
    report = run_apply(policy, plan, journal)
    assert report.complete and report.count("deleted") == 6  # index + 2 platforms, 2 artifacts
    for image in (multi, signed, sig, sbom):
        assert not manifest_exists(registry.url, repo, image.digest)
    images = {"multi": multi, "signed": signed, "sig": sig, "sbom": sbom, "keep": keep}
    return images, journal, policy_path


@pytest.fixture
def deleted(registry: RegistryProcess, pusher: Pusher, tmp_path: Path, repo_prefix: str) -> Deleted:
    """`_deleted_scene` in the shared registry, under this test's prefix."""
    return _deleted_scene(registry, pusher, tmp_path, repo_prefix)


def test_restore_brings_back_a_multi_arch_and_a_signed_image_completely(
    registry: RegistryProcess,
    deleted: Deleted,
    tmp_path: Path,
    repo_prefix: str,
) -> None:
    images, journal, _ = deleted
    repo = f"{repo_prefix}/app"
    items = select(read_journal(journal))
    order = [i.digest for i in items]
    multi = images["multi"]
    for child in multi.children:  # children before their index
        assert order.index(child.digest) < order.index(multi.digest)
    for artifact in (images["sig"], images["sbom"]):  # subjects before their referrers
        assert order.index(images["signed"].digest) < order.index(artifact.digest)

    with RegistryClient(load(tmp_path / "p.yaml").registry, env={}) as client:
        report = restore(client, items)

    assert report.complete and report.count("restored") == 6
    for tag in ("multi", "multi-1", "signed", images["sig"].tag, "signed-sbom", "keep"):
        assert pull_complete(registry.url, repo, tag), tag
    listed = tags_of(registry.url, repo)
    assert listed["multi"] == listed["multi-1"] == multi.digest
    assert listed["signed"] == images["signed"].digest
    assert listed[images["sig"].tag] == images["sig"].digest
    for child in multi.children:
        assert manifest_exists(registry.url, repo, child.digest)


def test_restore_one_tag_leaves_the_rest_and_never_overwrites_a_newer_tag(
    registry: RegistryProcess,
    pusher: Pusher,
    deleted: Deleted,
    repo_prefix: str,
    capsys: pytest.CaptureFixture[str],
) -> None:
    images, journal, policy_path = deleted
    repo = f"{repo_prefix}/app"
    newer = pusher.push_image(repo, "multi-1", created=NOW)  # pushed again after the apply

    code = main(["restore", str(journal), "-p", str(policy_path), "--tag", "multi", "--yes"])

    assert code == 3  # restored, but one tag left alone
    err = capsys.readouterr().err
    assert f"tag not restored: {repo}:multi-1: now points at {newer.digest}" in err
    assert "restored 3 manifest(s), 1 tag(s); failed 0" in err
    assert "only until garbage collection runs" in err
    listed = tags_of(registry.url, repo)
    assert listed["multi"] == images["multi"].digest and listed["multi-1"] == newer.digest
    assert pull_complete(registry.url, repo, "multi")
    assert "signed" not in listed and not manifest_exists(
        registry.url, repo, images["signed"].digest
    )


def test_after_garbage_collection_restore_says_so(
    fresh_registry: RegistryProcess,
    fresh_pusher: Pusher,
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
) -> None:
    images, journal, policy_path = _deleted_scene(fresh_registry, fresh_pusher, tmp_path, "team")
    fresh_registry.garbage_collect()

    code = main(["restore", str(journal), "-p", str(policy_path), "--yes"])

    assert code == 1
    err = capsys.readouterr().err
    assert "garbage collection already ran since the apply" in err
    assert "restored 0 manifest(s)" in err
    assert_untouched(fresh_registry.url, [images["keep"]])


def test_restore_without_yes_and_without_a_terminal_restores_nothing(
    registry: RegistryProcess,
    deleted: Deleted,
    repo_prefix: str,
    capsys: pytest.CaptureFixture[str],
) -> None:
    images, journal, policy_path = deleted
    assert main(["restore", str(journal), "-p", str(policy_path)]) == 1
    assert "pass --yes" in capsys.readouterr().err
    assert not manifest_exists(registry.url, f"{repo_prefix}/app", images["multi"].digest)
