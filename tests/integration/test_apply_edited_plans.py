"""Hand-edited plans applied from the command line against the real registry.

Each edit moves something the plan keeps into its deletions in a way the structural checks of
`check_plan` cannot see (no parent, a parent that does not list it, no tags, another repository).
Whatever the edit, apply must not delete it: it refuses the plan, or skips the entry as stale;
every kept image still pulls completely afterwards (DESIGN §6 invariants 1 and 2)."""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import replace
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import NamedTuple

import pytest

from retention import oci
from retention import plan as plan_mod
from retention.cli import main
from retention.plan import Entry, Plan
from tests.harness.registry import RegistryProcess
from tests.harness.seed import Pusher, pull_complete, resolve
from tests.integration.applyscene import Scene, push_scene
from tests.support.applykit import assert_untouched, load, make_plan, manifest_exists, write_policy
from tests.support.plans import index_raw


def _with(plan: Plan, deletions: list[Entry], kept: list[Entry]) -> Plan:
    key = lambda e: (e.repository, e.digest)  # noqa: E731
    return replace(
        plan,
        deletions=tuple(sorted(deletions, key=key)),
        kept=tuple(sorted(kept, key=key)),
        summary=replace(plan.summary, images_deleted=len(deletions)),
    )


def _move(plan: Plan, entry: Entry, **changes: object) -> Plan:
    """`entry` taken out of kept and listed as a deletion, with `changes` applied to it."""
    kept = [e for e in plan.kept if e != entry]
    return _with(plan, [*plan.deletions, replace(entry, **changes)], kept)  # type: ignore[arg-type]


def _kept(plan: Plan, digest: str) -> Entry:
    (found,) = [e for e in plan.kept if e.digest == digest]
    return found


def _child_without_parent(plan: Plan, s: Scene) -> tuple[Plan, str]:
    child = s.m_new.children[0].digest
    return _move(plan, _kept(plan, child), parent=None, reason="edited"), child


def _child_under_a_deleted_index(plan: Plan, s: Scene) -> tuple[Plan, str]:
    child = s.m_new.children[0].digest
    return _move(plan, _kept(plan, child), parent=s.m_old.digest), child


def _kept_digest_without_its_tags(plan: Plan, s: Scene) -> tuple[Plan, str]:
    return _move(plan, _kept(plan, s.latest.digest), tags=()), s.latest.digest


def _kept_digest_whose_kept_entry_names_another_digest(plan: Plan, s: Scene) -> tuple[Plan, str]:
    """The kept entry for `latest` still lists the tags, under the digest of `o2` (which the
    plan does not know in `app`); the real digest of `latest` is listed as a deletion, untagged."""
    entry = _kept(plan, s.latest.digest)
    kept = [e for e in plan.kept if e != entry] + [replace(entry, digest=s.o2.digest)]
    deletion = replace(entry, tags=(), rule="keep-recent", reason="edited")
    return _with(plan, [*plan.deletions, deletion], kept), s.latest.digest


def _digest_of_another_repository(plan: Plan, s: Scene) -> tuple[Plan, str]:
    entry = _kept(plan, s.o2.digest)
    return _move(plan, entry, repository=s.app, tags=(), reason="edited"), s.o2.digest


EDITS: dict[str, Callable[[Plan, Scene], tuple[Plan, str]]] = {
    "platform-manifest-of-kept-index-with-no-parent": _child_without_parent,
    "platform-manifest-of-kept-index-under-a-deleted-index": _child_under_a_deleted_index,
    "kept-digest-listed-without-its-tags": _kept_digest_without_its_tags,
    "kept-digest-whose-kept-entry-names-another-digest": _kept_digest_whose_kept_entry_names_another_digest,  # noqa: E501
    "digest-of-another-repository": _digest_of_another_repository,
}


class Planned(NamedTuple):
    """The apply scene under the test's prefix, its policy and the plan made from it."""

    scene: Scene
    policy_path: Path
    plan: Plan


@pytest.fixture
def planned(registry: RegistryProcess, pusher: Pusher, repo_prefix: str, tmp_path: Path) -> Planned:
    scene = push_scene(pusher, repo_prefix)
    policy_path = write_policy(tmp_path / "p.yaml", registry.url, repo_prefix)
    return Planned(scene, policy_path, make_plan(load(policy_path), repo_prefix))


@pytest.mark.parametrize("trust_kept_tags", [False, True], ids=["default", "no-verify-kept-tags"])
@pytest.mark.parametrize("edit", sorted(EDITS))
def test_an_edited_plan_never_deletes_what_is_kept(
    registry: RegistryProcess,
    planned: Planned,
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
    edit: str,
    trust_kept_tags: bool,
) -> None:
    scene, policy_path, plan = planned
    edited, target = EDITS[edit](plan, scene)
    plan_file = tmp_path / "plan.json"
    plan_file.write_text(plan_mod.to_json(edited))
    argv = ["apply", str(plan_file), "-p", str(policy_path), "--yes"]
    argv += ["--journal", str(tmp_path / "journal.jsonl")]
    if trust_kept_tags:
        argv.append("--no-verify-kept-tags")

    code = main(argv)

    err = capsys.readouterr().err
    assert "Traceback" not in err
    assert_untouched(registry.url, scene.kept)
    assert manifest_exists(registry.url, scene.app, scene.m_new.children[0].digest)
    assert manifest_exists(registry.url, scene.app, scene.latest.digest)
    assert manifest_exists(registry.url, scene.other, scene.o2.digest)
    if edit == "digest-of-another-repository":
        # `app` never held it: already gone, and nothing is deleted in its name
        assert code == 0, err
        assert f"{scene.app}@{target}" not in err
    else:
        assert code in (1, 3), err  # refused, or everything but the edit applied
        assert target[:19] in err, err


@pytest.mark.parametrize(
    ("plan_url", "policy_url"),
    [("{url}/", "{url}"), ("{url}", "{url}/"), ("{url}", "HTTP://{host}/")],
    ids=["plan-trailing-slash", "policy-trailing-slash", "policy-upper-case-scheme"],
)
def test_a_plan_for_the_same_registry_spelled_differently_applies(
    registry: RegistryProcess,
    planned: Planned,
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
    plan_url: str,
    policy_url: str,
) -> None:
    scene, policy_path, plan = planned
    spell = {"url": registry.url, "host": registry.host}
    plan_file = tmp_path / "plan.json"
    plan_file.write_text(plan_mod.to_json(replace(plan, registry=plan_url.format(**spell))))
    policy_path.write_text(
        policy_path.read_text().replace(registry.url, policy_url.format(**spell))
    )

    code = main(["apply", str(plan_file), "--yes", "--journal", str(tmp_path / "j.jsonl")])

    err = capsys.readouterr().err
    assert code == 0, err
    for e in plan.deletions:
        assert not manifest_exists(registry.url, e.repository, e.digest)
    assert_untouched(registry.url, scene.kept)


def test_a_platform_manifest_of_a_kept_untagged_index_listed_without_parent_is_refused(
    registry: RegistryProcess,
    pusher: Pusher,
    repo_prefix: str,
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
) -> None:
    """Even with the default re-resolution of kept tags: the kept tag resolves to the outer index,
    whose body names only the inner index, so only the bytes of the entry itself can tell."""
    repo = f"{repo_prefix}/app"
    image = pusher.push_image(repo, None, kind="oci")
    inner = index_raw([image.manifest])
    inner_digest = pusher.push_manifest(repo, oci.sha256_digest(inner), inner, oci.OCI_INDEX)
    outer = json.dumps(
        {
            "schemaVersion": 2,
            "mediaType": oci.OCI_INDEX,
            "manifests": [{"mediaType": oci.OCI_INDEX, "digest": inner_digest, "size": len(inner)}],
        }
    ).encode()
    pusher.push_manifest(repo, "keep", outer, oci.OCI_INDEX)
    pusher.push_image(repo, "old", created=datetime.now(UTC) - timedelta(days=9))
    policy_path = write_policy(
        tmp_path / "p.yaml", registry.url, repo_prefix, last=0, protect=("keep",)
    )
    plan = make_plan(load(policy_path), repo_prefix)
    edited = _move(plan, _kept(plan, image.digest), parent=None, reason="edited")
    plan_file = tmp_path / "plan.json"
    plan_file.write_text(plan_mod.to_json(edited))

    code = main(["apply", str(plan_file), "--yes", "--journal", str(tmp_path / "j.jsonl")])

    err = capsys.readouterr().err
    assert code == 1, err
    assert "not held by anything the plan deletes" in err and image.digest in err
    assert pull_complete(registry.url, repo, "keep")
    assert resolve(registry.url, repo, "old") is not None  # refused as a whole
