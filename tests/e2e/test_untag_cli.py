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
from tests.harness.probes import Capabilities
from tests.harness.registry import CraneRegistry, RegistryProcess
from tests.harness.seed import Pushed, Pusher, list_tags, pull_complete, resolve

NOW = datetime.now(UTC)


def _policy(path: Path, url: str, prefix: str) -> Path:
    path.write_text(
        f"version: 1\n"
        f"registry:\n  url: {url}\n"
        f"settings:\n  untag: true\n"
        f"rules:\n"
        f"  - name: releases\n"
        f"    match: {{repositories: ['{prefix}/.*'], tags: ['stable']}}\n"
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
