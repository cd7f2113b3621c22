"""Apply against the real registry: exactly the plan, nothing else (DESIGN §6 invariants 1-4),
with the request budget of docs/decisions.md (Apply) checked in the registry's own access log."""

from __future__ import annotations

import uuid
from dataclasses import replace
from pathlib import Path

import pytest
import requests

from retention import plan as plan_mod
from retention.apply import check_plan
from retention.cli import main
from retention.errors import PlanError
from retention.plan import Entry, Plan
from tests.harness.registry import AccessLogEntry, RegistryProcess
from tests.harness.seed import Pusher, pull_complete
from tests.integration.applyscene import Scene, push_scene
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


def _requests_during(registry: RegistryProcess, mark: int, prefix: str) -> list[AccessLogEntry]:
    """Access-log lines after `mark` that touch `prefix`, once a sentinel request shows that the
    registry has logged everything sent before it."""
    token = uuid.uuid4().hex
    requests.get(f"{registry.url}/v2/?sentinel={token}", timeout=10)
    for _ in range(200):
        entries = registry.wait_for_requests(mark, 1, timeout=5.0)
        if any(token in e.path for e in entries):
            return [e for e in entries if f"/v2/{prefix}/" in e.path]
    raise AssertionError("the registry never logged the sentinel request")


def _entry(plan: Plan, tag: str) -> Entry:
    (found,) = [e for e in (*plan.deletions, *plan.kept) if tag in e.tags]
    return found


@pytest.fixture
def scene(pusher: Pusher, repo_prefix: str) -> Scene:
    return push_scene(pusher, repo_prefix)


def test_apply_deletes_exactly_the_plan_with_the_request_budget(
    registry: RegistryProcess, scene: Scene, repo_prefix: str, tmp_path: Path
) -> None:
    policy = load(write_policy(tmp_path / "p.yaml", registry.url, repo_prefix))
    plan = make_plan(policy, repo_prefix)
    assert {t for e in plan.deletions for t in e.tags} == {
        "v1", "v1-sbom", "v2", scene.v2_sig.tag, "v3", "v3-alias", "m-old", "o1",
    }  # fmt: skip
    mark = registry.log_mark()
    report = run_apply(policy, plan, tmp_path / "journal.jsonl")
    seen = _requests_during(registry, mark, repo_prefix)

    assert_plan_applied_exactly(registry.url, plan, report)
    assert_untouched(registry.url, scene.kept)
    assert manifest_exists(registry.url, scene.app, scene.v1_note.digest)  # never in the plan
    assert report.count("deleted") == len(plan.deletions) == 9

    by_kind: dict[str, int] = {}
    for e in seen:
        kind = "tags" if e.path.endswith("/tags/list") or "/tags/list?" in e.path else e.method
        by_kind[kind] = by_kind.get(kind, 0) + 1
    listed_tags = sum(len(e.tags) for e in plan.deletions)
    untagged = sum(1 for e in plan.deletions if not e.tags)
    # 1 tags/list per repository + 1 per listed tag + 1 per untagged entry + 1 DELETE each,
    # and 1 HEAD of the digest confirming each DELETE (it must answer 404)
    assert by_kind == {
        "tags": 2,
        "GET": 7 + untagged,  # one GET per tagged entry (its first tag), one per untagged one
        "HEAD": listed_tags - 7 + 9,  # v3-alias: the second tag of v3; 9 confirmations
        "DELETE": 9,
    }
    assert by_kind["GET"] + by_kind["HEAD"] == listed_tags + untagged + 9


def test_a_rerun_finds_nothing_to_do_and_deletes_nothing(
    registry: RegistryProcess, scene: Scene, repo_prefix: str, tmp_path: Path
) -> None:
    policy = load(write_policy(tmp_path / "p.yaml", registry.url, repo_prefix))
    plan = make_plan(policy, repo_prefix)
    run_apply(policy, plan, tmp_path / "journal.jsonl")

    mark = registry.log_mark()
    again = run_apply(policy, plan, tmp_path / "journal.jsonl")
    assert again.complete and again.count("resumed") == len(plan.deletions)
    assert _requests_during(registry, mark, repo_prefix) == []  # the journal says all is done

    mark = registry.log_mark()
    fresh = run_apply(policy, plan, tmp_path / "other-journal.jsonl")
    assert fresh.complete and fresh.count("gone") == len(plan.deletions)
    assert not [e for e in _requests_during(registry, mark, repo_prefix) if e.method == "DELETE"]
    assert_plan_applied_exactly(registry.url, plan)


def test_new_tags_keep_the_index_its_platform_manifests_and_the_signed_image(
    registry: RegistryProcess, pusher: Pusher, scene: Scene, repo_prefix: str, tmp_path: Path
) -> None:
    policy = load(write_policy(tmp_path / "p.yaml", registry.url, repo_prefix))
    plan = make_plan(policy, repo_prefix)
    # after the plan: someone tags the old index and the signed image again
    pusher.tag(scene.app, "hotfix", scene.m_old)
    pusher.tag(scene.app, "v2-again", scene.v2)

    report = run_apply(policy, plan, tmp_path / "journal.jsonl")
    kinds = {o.entry.digest: (o.kind, o.reason) for o in report.outcomes}
    assert kinds[scene.m_old.digest] == ("stale", "new tag hotfix points at it")
    for child in scene.m_old.children:
        assert kinds[child.digest][0] == "stale"
    assert kinds[scene.v2.digest] == ("stale", "new tag v2-again points at it")
    assert kinds[scene.v2_sig.digest][0] == "stale"  # the artifact follows its kept subject
    assert not report.complete
    for tag in ("hotfix", "v2-again", "m-old", "v2", scene.v2_sig.tag):
        assert pull_complete(registry.url, scene.app, tag), tag
    gone = [scene.v1, scene.v3, scene.v1_sbom, scene.o1]
    assert not any(manifest_exists(registry.url, p.repo, p.digest) for p in gone)
    assert_untouched(registry.url, scene.kept)


@pytest.mark.parametrize("edit", ["child-of-kept-index", "subject-of-kept-artifact"])
def test_a_plan_edited_against_invariant_2_is_refused_without_a_request(
    registry: RegistryProcess, scene: Scene, repo_prefix: str, tmp_path: Path, edit: str
) -> None:
    policy_path = write_policy(tmp_path / "p.yaml", registry.url, repo_prefix)
    policy = load(policy_path)
    plan = make_plan(policy, repo_prefix)
    if edit == "child-of-kept-index":
        (child,) = [e for e in plan.kept if e.parent == scene.m_new.digest][:1]
        moved = [child]
    else:
        moved = [_entry(plan, "latest")]
    edited = replace(
        plan,
        deletions=tuple(sorted((*plan.deletions, *moved), key=lambda e: (e.repository, e.digest))),
        kept=tuple(e for e in plan.kept if e not in moved),
        summary=replace(plan.summary, images_deleted=len(plan.deletions) + 1),
    )
    plan_file = tmp_path / "plan.json"
    plan_file.write_text(plan_mod.to_json(edited))
    mark = registry.log_mark()
    with pytest.raises(PlanError, match="never"):
        check_plan(edited, registry_url=registry.url, now=edited.generated_at, policy=policy)
    code = main(["apply", str(plan_file), "-p", str(policy_path), "--yes"])
    assert code == 1
    assert _requests_during(registry, mark, repo_prefix) == []
    assert_untouched(registry.url, scene.kept + scene.deleted)


def test_over_max_deletions_is_refused_before_any_request(
    registry: RegistryProcess,
    scene: Scene,
    repo_prefix: str,
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
) -> None:
    policy_path = write_policy(tmp_path / "p.yaml", registry.url, repo_prefix, max_deletions=3)
    plan = make_plan(load(policy_path), repo_prefix)
    plan_file = tmp_path / "plan.json"
    plan_file.write_text(plan_mod.to_json(plan))
    before = {r: tags_of(registry.url, r) for r in (scene.app, scene.other)}
    mark = registry.log_mark()

    code = main(["apply", str(plan_file), "--yes", "-p", str(policy_path)])

    assert code == 1
    err = capsys.readouterr().err
    assert "the plan deletes 9 images, more than the 3 allowed by plan max_deletions 3" in err
    assert "raise settings.max_deletions" in err
    assert _requests_during(registry, mark, repo_prefix) == []
    assert {r: tags_of(registry.url, r) for r in (scene.app, scene.other)} == before


@pytest.mark.parametrize(
    ("flags", "why"),
    [
        ([], "tag latest points at it"),
        (["--verify-kept-tags"], "tag latest points at it"),
        # trusting the plan's kept tags no longer deletes it: the policy, evaluated again before
        # the first DELETE, keeps what `latest` points at now (invariant 8)
        (
            ["--no-verify-kept-tags"],
            "the policy keeps it now: `latest`: protected by pattern `latest`",
        ),
    ],
    ids=["saved-plan-default", "explicit", "opted-out"],
)
def test_a_rolled_back_latest_is_kept_even_when_kept_tags_are_trusted(
    registry: RegistryProcess,
    pusher: Pusher,
    scene: Scene,
    repo_prefix: str,
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
    flags: list[str],
    why: str,
) -> None:
    policy_path = write_policy(tmp_path / "p.yaml", registry.url, repo_prefix)
    plan = make_plan(load(policy_path), repo_prefix)
    plan_file = tmp_path / "plan.json"
    plan_file.write_text(plan_mod.to_json(plan))
    pusher.tag(scene.app, "latest", scene.v3)  # a rollback: the kept `latest` moves to v3

    argv = ["apply", str(plan_file), "-p", str(policy_path), "--yes", *flags]
    assert main([*argv, "--journal", str(tmp_path / "j.jsonl")]) == 3

    assert not manifest_exists(registry.url, scene.app, scene.v1.digest)
    err = capsys.readouterr().err
    assert why in err, err
    assert tags_of(registry.url, scene.app)["latest"] == scene.v3.digest
    assert pull_complete(registry.url, scene.app, "latest")
