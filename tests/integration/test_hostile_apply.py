"""Apply against the hostile front (tests/harness/hostile.py): a DELETE that lies, and a DELETE
whose error body is nested too deeply to parse (issue 13, items 8 and 5).

A 202 is only a claim: each one is confirmed by a HEAD of the digest, which must answer 404;
otherwise the entry is a failed deletion, never "deleted". A DELETE's unreadable error body fails
that entry; the run goes on, prints its summary, exits 3 and journals every outcome.
"""

from __future__ import annotations

from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import NamedTuple

import pytest

from retention.cli import main
from retention.journal import read_journal
from retention.plan import Plan, from_json
from tests.harness.hostile import HostileRegistry
from tests.harness.registry import RegistryProcess
from tests.harness.seed import Pusher
from tests.support.applykit import manifest_exists, write_policy

NOW = datetime.now(UTC)


@pytest.fixture
def hostile(registry: RegistryProcess, tmp_path: Path) -> Iterator[HostileRegistry]:
    with HostileRegistry(registry.url, tmp_path / "hostile") as front:
        yield front


def _scene(pusher: Pusher, prefix: str) -> None:
    for repo in (f"{prefix}/a", f"{prefix}/b"):
        for i in range(3):
            pusher.push_image(repo, f"v{i}", created=NOW - timedelta(days=10 - i))


def _plan(hostile: HostileRegistry, prefix: str, tmp_path: Path) -> tuple[Path, Path]:
    policy = write_policy(tmp_path / "p.yaml", hostile.url, prefix, last=1)
    plan_file = tmp_path / "plan.json"
    # its own repositories: the whole session registry through the hostile front is slow
    mine = ["--repository", f"{prefix}/.*"]
    assert main(["plan", "-p", str(policy), "-o", str(plan_file), "--quiet", *mine]) == 0
    return policy, plan_file


class Planned(NamedTuple):
    """`_scene` under the test's prefix, planned through the hostile front (keep the newest)."""

    policy: Path
    plan_file: Path
    plan: Plan


@pytest.fixture
def planned(hostile: HostileRegistry, pusher: Pusher, repo_prefix: str, tmp_path: Path) -> Planned:
    _scene(pusher, repo_prefix)
    policy, plan_file = _plan(hostile, repo_prefix, tmp_path)
    return Planned(policy, plan_file, from_json(plan_file.read_bytes(), str(plan_file)))


def _apply(policy: Path, plan_file: Path, journal: Path) -> int:
    return main(["apply", str(plan_file), "-p", str(policy), "--yes", "--journal", str(journal)])


def test_a_202_that_deletes_nothing_is_a_failed_deletion(
    hostile: HostileRegistry,
    registry: RegistryProcess,
    planned: Planned,
    repo_prefix: str,
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
) -> None:
    policy, plan_file, plan = planned
    assert len(plan.deletions) == 4
    hostile.enable("lying-delete", repo=f"{repo_prefix}/a")
    capsys.readouterr()

    code = _apply(policy, plan_file, tmp_path / "j.jsonl")

    err = capsys.readouterr().err
    assert code == 3, err
    assert "deleted 2, stale 0, already gone 0, failed 2" in err
    assert err.count("but still serves the manifest") == 2
    for e in plan.deletions:
        assert manifest_exists(registry.url, e.repository, e.digest) == e.repository.endswith("/a")
    outcomes = read_journal(tmp_path / "j.jsonl").latest_outcomes()
    kinds = {k: r.kind for k, r in outcomes.items()}
    assert sorted(kinds.values()) == ["done", "done", "failed", "failed"]
    # one HEAD of the digest confirms each 202
    for e in plan.deletions:
        path = rf"^/v2/{e.repository}/manifests/{e.digest}$"
        assert hostile.proxy.count("HEAD", path) >= 1


def test_a_delete_error_body_too_deep_to_parse_fails_only_that_entry(
    hostile: HostileRegistry,
    registry: RegistryProcess,
    planned: Planned,
    repo_prefix: str,
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
) -> None:
    policy, plan_file, plan = planned
    hostile.enable("deep-json-delete", repo=f"{repo_prefix}/a", status=400)
    capsys.readouterr()

    code = _apply(policy, plan_file, tmp_path / "j.jsonl")

    err = capsys.readouterr().err
    assert code == 3, err
    assert "Traceback" not in err and "RecursionError" not in err
    assert "deleted 2, stale 0, already gone 0, failed 2" in err
    for e in plan.deletions:
        assert manifest_exists(registry.url, e.repository, e.digest) == e.repository.endswith("/a")
    outcomes = read_journal(tmp_path / "j.jsonl").latest_outcomes()
    assert set(outcomes) == {(e.repository, e.digest) for e in plan.deletions}
    assert sorted(r.kind for r in outcomes.values()) == ["done", "done", "failed", "failed"]
