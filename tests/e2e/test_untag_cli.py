"""Untag from the command line, end to end: `retention plan` with `settings.untag: true` plans
the doomed tag that shares its image and probes the method; `retention apply` removes it alone
(throw-away on 2.8, delete-tag where the registry deletes tags: 3.x, crane's); `retention
restore` puts it back; `retention doctor` reports whether the credentials may push."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from retention.cli import main
from retention.runlog import read_history
from tests.harness.probes import Capabilities
from tests.harness.registry import CraneRegistry, RegistryProcess
from tests.harness.seed import Pushed, Pusher, list_tags, pull_complete, resolve
from tests.integration.test_apply_faults import _dangle

NOW = datetime.now(UTC)


def _policy(path: Path, url: str, prefix: str) -> Path:
    path.write_text(
        f"version: 1\n"
        f"registry:\n  url: {url}\n"
        f"settings:\n  untag: true\n"
        f"rules:\n"
        f"  - name: releases\n"
        f"    match: {{repositories: ['{prefix}/.*'], tags: ['stable', 'lts']}}\n"
        f"    keep: all\n"
        f"  - name: builds\n"
        f"    match: {{repositories: ['{prefix}/.*'], tags: ['build-.*']}}\n"
        f"    keep: {{last: 1}}\n"
    )
    return path


def _push(pusher: Pusher, repo: str) -> tuple[Pushed, Pushed]:
    """An old build also released as `stable`, and a newer build: the old build's tag is
    doomed, its image kept by `stable`."""
    released = pusher.push_image(repo, ["build-1", "stable"], created=NOW - timedelta(days=9))
    newer = pusher.push_image(repo, "build-2", created=NOW - timedelta(days=1))
    return released, newer


def _plan_apply_restore(
    url: str,
    repo: str,
    prefix: str,
    tmp_path: Path,
    method: str,
    capsys: pytest.CaptureFixture[str],
) -> None:
    policy = _policy(tmp_path / "p.yaml", url, prefix)
    plan_file = tmp_path / "plan.json"
    assert main(["plan", "-p", str(policy), "-o", str(plan_file)]) == 0
    doc = json.loads(plan_file.read_text())
    assert [(u["repository"], u["tag"]) for u in doc["untags"]] == [(repo, "build-1")]
    assert doc["untag_methods"] == {repo: method}
    assert doc["deletions"] == []
    capsys.readouterr()

    journal = tmp_path / "journal.jsonl"
    assert main(["apply", str(plan_file), "--yes", "--journal", str(journal)]) == 0
    err = capsys.readouterr().err
    assert "untagged 1, stale 0, already gone 0, failed 0" in err

    assert list_tags(url, repo) == ["build-2", "stable"]
    assert pull_complete(url, repo, "stable")
    assert pull_complete(url, repo, "build-2")
    assert main(["apply", str(plan_file), "--yes", "--journal", str(journal)]) == 0  # resumed

    assert main(["restore", str(journal), "--yes"]) == 0
    assert list_tags(url, repo) == ["build-1", "build-2", "stable"]
    assert resolve(url, repo, "build-1") == resolve(url, repo, "stable")


def test_plan_apply_restore_on_the_matrix(
    registry: RegistryProcess,
    pusher: Pusher,
    capabilities: Capabilities,
    repo_prefix: str,
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
) -> None:
    repo = f"{repo_prefix}/app"
    _push(pusher, repo)
    method = "delete-tag" if capabilities.tag_delete else "throw-away"
    _plan_apply_restore(registry.url, repo, repo_prefix, tmp_path, method, capsys)


def test_plan_apply_restore_on_crane(
    tag_registry: CraneRegistry,
    repo_prefix: str,
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
) -> None:
    repo = f"{repo_prefix}/app"
    with Pusher(tag_registry.url) as pusher:
        _push(pusher, repo)
    _plan_apply_restore(tag_registry.url, repo, repo_prefix, tmp_path, "delete-tag", capsys)


def test_doctor_checks_push_when_the_policy_untags(
    registry: RegistryProcess,
    pusher: Pusher,
    repo_prefix: str,
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
) -> None:
    repo = f"{repo_prefix}/app"
    pusher.push_image(repo, "stable")
    policy = _policy(tmp_path / "p.yaml", registry.url, repo_prefix)
    assert main(["doctor", "-p", str(policy), "--repository", repo]) == 0
    out = capsys.readouterr().out
    assert f"push: allowed in {repo} (an upload started and cancelled)" in out
    assert list_tags(registry.url, repo) == ["stable"]


def test_an_untag_added_to_a_saved_plan_is_skipped_when_the_policy_keeps_the_tag(
    registry: RegistryProcess,
    pusher: Pusher,
    repo_prefix: str,
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
) -> None:
    """Invariant 8 for untags: `build-2` (the newest build, kept by `last: 1`) is moved from
    kept to untags by hand; apply evaluates the policy again and leaves it."""
    repo = f"{repo_prefix}/app"
    _released, newer = _push(pusher, repo)
    policy = _policy(tmp_path / "p.yaml", registry.url, repo_prefix)
    plan_file = tmp_path / "plan.json"
    assert main(["plan", "-p", str(policy), "-o", str(plan_file)]) == 0
    doc = json.loads(plan_file.read_text())
    for kept in doc["kept"]:
        if "build-2" in kept["tags"]:
            kept["tags"].remove("build-2")
    doc["untags"].append(
        {"repository": repo, "tag": "build-2", "digest": newer.digest, "rule": "builds",
         "reason": "added by hand"}
    )  # fmt: skip
    doc["summary"]["tags_untagged"] += 1
    plan_file.write_text(json.dumps(doc))
    capsys.readouterr()

    assert main(["apply", str(plan_file), "--yes", "--journal", str(tmp_path / "j")]) == 3

    err = capsys.readouterr().err
    assert f"untag kept: {repo}:build-2: the policy keeps it now:" in err
    assert list_tags(registry.url, repo) == ["build-2", "stable"]  # build-1 untagged as planned
    assert resolve(registry.url, repo, "build-2") == newer.digest


def test_a_tag_pushed_again_between_plan_and_apply_is_stale(
    registry: RegistryProcess,
    pusher: Pusher,
    repo_prefix: str,
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
) -> None:
    repo = f"{repo_prefix}/app"
    _push(pusher, repo)
    policy = _policy(tmp_path / "p.yaml", registry.url, repo_prefix)
    plan_file = tmp_path / "plan.json"
    assert main(["plan", "-p", str(policy), "-o", str(plan_file)]) == 0
    # build-1 moved onto another image the policy would untag it from too: the policy check
    # passes, the re-resolution right before sees the move
    lts = pusher.push_image(repo, "lts", created=NOW - timedelta(days=5))
    rebuilt = pusher.tag(repo, "build-1", lts)
    capsys.readouterr()

    assert main(["apply", str(plan_file), "--yes", "--journal", str(tmp_path / "j")]) == 3

    assert f"untag stale: {repo}:build-1: the tag points at {rebuilt.digest}" in (
        capsys.readouterr().err
    )
    assert resolve(registry.url, repo, "build-1") == rebuilt.digest
    assert pull_complete(registry.url, repo, "build-1")


def test_a_dangling_tag_is_planned_and_cleared(
    fresh_registry: RegistryProcess,
    fresh_pusher: Pusher,
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
) -> None:
    """A dangling tag (a registry killed inside a DELETE, as test_apply_faults.py leaves it) is
    planned by name and removed: the throw-away push re-points it, the DELETE takes it away."""
    repo = "team/app"
    _push(fresh_pusher, repo)
    lost = fresh_pusher.push_image(repo, "build-0", created=NOW - timedelta(days=20))
    _dangle(fresh_registry, repo, lost.digest, ["build-0"], "revision")
    policy = _policy(tmp_path / "p.yaml", fresh_registry.url, "team")
    plan_file = tmp_path / "plan.json"
    assert main(["plan", "-p", str(policy), "-o", str(plan_file)]) == 0
    untags = json.loads(plan_file.read_text())["untags"]
    assert [(u["tag"], u["digest"] is None) for u in untags] == [
        ("build-0", True),
        ("build-1", False),
    ]

    assert main(["apply", str(plan_file), "--yes", "--journal", str(tmp_path / "j")]) == 0

    assert list_tags(fresh_registry.url, repo) == ["build-2", "stable"]
    assert pull_complete(fresh_registry.url, repo, "stable")


def test_one_step_apply_untags(
    registry: RegistryProcess,
    pusher: Pusher,
    repo_prefix: str,
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
) -> None:
    """`apply -p POLICY --yes` (as scheduled runs do): plan, probe, untag in one process."""
    repo = f"{repo_prefix}/app"
    released, _newer = _push(pusher, repo)
    policy = _policy(tmp_path / "p.yaml", registry.url, repo_prefix)

    code = main(["apply", "-p", str(policy), "--yes", "--journal", str(tmp_path / "j")])

    assert code == 0
    assert "untagged 1, stale 0, already gone 0, failed 0" in capsys.readouterr().err
    assert list_tags(registry.url, repo) == ["build-2", "stable"]
    assert resolve(registry.url, repo, "stable") == released.digest


def test_a_scheduled_run_untags_and_warns_of_untags_not_done(
    fresh_registry: RegistryProcess,
    fresh_pusher: Pusher,
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
) -> None:
    """`schedule --once` applies a plan that only untags; the history counts the untags, and a
    failed one makes the run partial, as a failed deletion does, and is said as a warning (here:
    a read-only registry refuses the push)."""
    _push(fresh_pusher, "team/app")
    policy = _policy(tmp_path / "p.yaml", fresh_registry.url, "team")
    history = tmp_path / "history.jsonl"
    argv = ["schedule", "-p", str(policy), "--once", "--history", str(history)]
    fresh_registry.restart(readonly=True)

    assert main(argv) == 3

    (record,) = read_history(history)
    assert record.status == "partial" and record.outcome is not None
    assert (record.outcome.untags_planned, record.outcome.untagged) == (1, 0)
    assert record.outcome.untags_failed == 1
    (warning,) = [w for w in record.outcome.warnings if "untag(s) not done" in w]
    assert warning.startswith("1 untag(s) not done (failed team/app:build-1: ")
    assert "refuses uploads" in warning
    fresh_registry.restart(readonly=False)
    capsys.readouterr()
    assert main(argv) == 0
    assert list_tags(fresh_registry.url, "team/app") == ["build-2", "stable"]
    again = read_history(history)[-1]
    assert again.status == "ok" and again.outcome is not None
    assert (again.outcome.untags_planned, again.outcome.untagged, again.outcome.untags_failed) == (
        1,
        1,
        0,
    )
    assert [w for w in again.outcome.warnings if "untag" in w] == []
