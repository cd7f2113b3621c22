"""A saved plan cannot widen what the policy allows (DESIGN §6 invariant 8): before the first
DELETE, apply evaluates the policy again on a fresh inventory of the repositories it touches and
deletes only what both the plan and that evaluation delete. Against the real registry."""

from __future__ import annotations

from dataclasses import replace
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from retention import plan as plan_mod
from retention.cli import main
from retention.journal import read_journal
from retention.plan import Plan
from tests.harness.faultproxy import FaultProxy
from tests.harness.registry import RegistryProcess
from tests.harness.seed import Pushed, Pusher
from tests.support.applykit import assert_untouched, load, make_plan, manifest_exists, write_policy

DAY = timedelta(days=1)


def _push(pusher: Pusher, prefix: str) -> tuple[Pushed, Pushed, Pushed]:
    """`app` with three images, 9, 5 and 1 day(s) old, tagged old, mid and new."""
    now = datetime.now(UTC)
    repo = f"{prefix}/app"
    old = pusher.push_image(repo, "old", created=now - 9 * DAY)
    mid = pusher.push_image(repo, "mid", created=now - 5 * DAY)
    new = pusher.push_image(repo, "new", created=now - DAY)
    return old, mid, new


def _with_extra(plan: Plan, digest: str) -> Plan:
    """The kept entry for `digest` moved into the deletions, named with its real tags, as a
    hand edit (or a bad merge) would."""
    (entry,) = [e for e in plan.kept if e.digest == digest]
    extra = replace(entry, rule="keep-recent", reason="beyond the 2 most recent")
    deletions = sorted([*plan.deletions, extra], key=lambda e: (e.repository, e.digest))
    return replace(
        plan,
        deletions=tuple(deletions),
        kept=tuple(e for e in plan.kept if e is not entry),
        summary=replace(plan.summary, images_deleted=len(deletions)),
    )


def _kept_records(journal: Path) -> dict[str, str | None]:
    return {
        digest: record.reason
        for (_, digest), record in read_journal(journal).latest_outcomes().items()
        if record.kind == "kept"
    }


def test_an_entry_added_to_a_saved_plan_is_skipped_when_the_policy_keeps_it(
    registry: RegistryProcess,
    pusher: Pusher,
    repo_prefix: str,
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
) -> None:
    old, mid, new = _push(pusher, repo_prefix)
    policy_path = write_policy(tmp_path / "p.yaml", registry.url, repo_prefix, last=2)
    plan = make_plan(load(policy_path), repo_prefix)
    assert [e.digest for e in plan.deletions] == [old.digest]
    plan_file = tmp_path / "plan.json"
    plan_file.write_text(plan_mod.to_json(_with_extra(plan, mid.digest)))
    journal = tmp_path / "journal.jsonl"

    code = main(
        ["apply", str(plan_file), "-p", str(policy_path), "--yes", "--journal", str(journal)]
    )

    err = capsys.readouterr().err
    assert code == 3, err  # partial: the plan was not applied as written
    assert not manifest_exists(registry.url, old.repo, old.digest)
    assert manifest_exists(registry.url, mid.repo, mid.digest)
    assert_untouched(registry.url, [mid, new])
    line = next(x for x in err.splitlines() if x.startswith("kept: "))
    assert mid.digest[7:19] in line and "mid" in line
    assert "the policy keeps it now: rule `keep-recent`: among the 2 most recent" in line
    assert (
        "deleted 1, stale 0, already gone 0, failed 0; 1 skipped: the policy keeps them now" in err
    )
    kept = _kept_records(journal)
    assert list(kept) == [mid.digest]
    assert (kept[mid.digest] or "").startswith("the policy keeps it now: ")
    assert "Traceback" not in err


def test_a_plan_made_from_another_policy_deletes_only_what_this_policy_deletes(
    registry: RegistryProcess,
    pusher: Pusher,
    repo_prefix: str,
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
) -> None:
    """A plan from a policy that keeps 1 image, applied with one that keeps 2: `mid` stays."""
    old, mid, new = _push(pusher, repo_prefix)
    aggressive = write_policy(tmp_path / "keep1.yaml", registry.url, repo_prefix, last=1)
    careful = write_policy(tmp_path / "keep2.yaml", registry.url, repo_prefix, last=2)
    plan = make_plan(load(aggressive), repo_prefix)
    assert {e.digest for e in plan.deletions} == {old.digest, mid.digest}
    plan_file = tmp_path / "plan.json"
    plan_file.write_text(plan_mod.to_json(plan))
    journal = tmp_path / "journal.jsonl"

    code = main(["apply", str(plan_file), "-p", str(careful), "--yes", "--journal", str(journal)])

    err = capsys.readouterr().err
    assert code == 3, err
    assert not manifest_exists(registry.url, old.repo, old.digest)
    assert_untouched(registry.url, [mid, new])
    assert list(_kept_records(journal)) == [mid.digest]


def test_a_plan_the_policy_agrees_with_applies_completely(
    registry: RegistryProcess,
    pusher: Pusher,
    repo_prefix: str,
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
) -> None:
    """The check costs a walk of the touched repositories, and skips nothing it should not."""
    old, mid, new = _push(pusher, repo_prefix)
    with FaultProxy(registry.url) as proxy:
        policy_path = write_policy(tmp_path / "p.yaml", proxy.url, repo_prefix, last=1)
        plan = make_plan(load(policy_path), repo_prefix)
        plan_file = tmp_path / "plan.json"
        plan_file.write_text(plan_mod.to_json(plan))
        proxy.clear()

        code = main(["apply", str(plan_file), "--yes", "--journal", str(tmp_path / "j.jsonl")])

        tags_lists = proxy.count("GET", r"/tags/list")
        catalog = proxy.count("GET", r"/_catalog")
    err = capsys.readouterr().err
    assert code == 0, err
    assert not manifest_exists(registry.url, old.repo, old.digest)
    assert not manifest_exists(registry.url, mid.repo, mid.digest)
    assert_untouched(registry.url, [new])
    assert (tags_lists, catalog) == (2, 0)  # apply's own listing, and the policy check's


def test_apply_with_p_plans_once_and_does_not_evaluate_twice(
    fresh_registry: RegistryProcess,
    fresh_pusher: Pusher,
    repo_prefix: str,
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
) -> None:
    """`apply -p POLICY --yes` applies a plan this process has just made with that policy: the
    registry is walked once: one tags/list for the plan and one for apply's re-listing; one GET
    per tag for the plan and one per planned tag for apply's re-resolution, no second walk."""
    registry = fresh_registry  # `apply -p` walks the whole registry: only this test's in it
    old, _mid, new = _push(fresh_pusher, repo_prefix)
    with FaultProxy(registry.url) as proxy:
        policy_path = write_policy(tmp_path / "p.yaml", proxy.url, repo_prefix, last=1)
        argv = ["apply", "-p", str(policy_path), "--yes", "--journal", str(tmp_path / "j.jsonl")]
        code = main(argv)
        by_tag = proxy.count("GET", rf"/{old.repo}/manifests/(old|mid|new)$")
        tags_lists = proxy.count("GET", rf"/{old.repo}/tags/list")
    err = capsys.readouterr().err
    assert code == 0, err
    assert not manifest_exists(registry.url, old.repo, old.digest)
    assert_untouched(registry.url, [new])
    assert (tags_lists, by_tag) == (2, 3 + 2)
