"""Hangs (issue 13, item 3): a registry that sends its headers or its body one byte at a time
(tests/harness/hostile.py, "drip-headers" / "drip-body") ends `plan`, `doctor`, `apply` and a
scheduled run by `settings.timeouts`: `request` bounds one request in total, `run` a whole
command. Before, only the 60 s read timeout existed, and each byte reset it.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from retention.cli import main
from retention.runlog import read_history
from retention.schedule import acquire_lock
from tests.harness.faultproxy import Exchange
from tests.harness.hostile import HostileRegistry
from tests.harness.registry import RegistryProcess
from tests.harness.seed import Pusher
from tests.support.applykit import manifest_exists, write_policy

NOW = datetime.now(UTC)
SLOW = 0.3  # seconds per byte: a manifest takes minutes, the 60 s read timeout never trips
BOUND = 20.0  # what "ended quickly" means on a loaded machine


@pytest.fixture
def registry(fresh_registry: RegistryProcess) -> RegistryProcess:
    """A registry of each test's own: a walk of the shared one grows with the suite, and these
    tests measure time."""
    return fresh_registry


@pytest.fixture
def pusher(fresh_pusher: Pusher) -> Pusher:
    return fresh_pusher


@pytest.fixture
def hostile(registry: RegistryProcess, tmp_path: Path) -> Iterator[HostileRegistry]:
    with HostileRegistry(registry.url, tmp_path / "hostile") as front:
        yield front


def _policy(
    hostile: HostileRegistry, prefix: str, tmp_path: Path, timeouts: str, **kw: int
) -> Path:
    path = write_policy(tmp_path / "p.yaml", hostile.url, prefix, last=1, **kw)
    text = path.read_text().replace("settings:\n", f"settings:\n  timeouts: {timeouts}\n", 1)
    path.write_text(text)
    return path


def _timed(argv: list[str]) -> tuple[int, float]:
    started = time.monotonic()
    code = main(argv)
    return code, time.monotonic() - started


def _push(pusher: Pusher, prefix: str, count: int = 2) -> str:
    repo = f"{prefix}/app"
    for i in range(count):
        pusher.push_image(repo, f"v{i}", created=NOW - timedelta(days=10 - i))
    return repo


def _dripping_manifests(
    hostile: HostileRegistry,
    pusher: Pusher,
    prefix: str,
    tmp_path: Path,
    scenario: str,
    timeouts: str,
) -> Path:
    """Two images under `prefix` whose manifests drip (`scenario`), and a policy with
    `timeouts`."""
    repo = _push(pusher, prefix)
    hostile.enable(scenario, path=rf"^/v2/{repo}/manifests/", interval=SLOW)
    return _policy(hostile, prefix, tmp_path, timeouts)


@pytest.mark.parametrize("scenario", ["drip-headers", "drip-body"])
def test_plan_ends_by_the_request_deadline(
    hostile: HostileRegistry,
    pusher: Pusher,
    repo_prefix: str,
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
    scenario: str,
) -> None:
    policy = _dripping_manifests(hostile, pusher, repo_prefix, tmp_path, scenario, "{request: 2s}")
    capsys.readouterr()
    code, took = _timed(["plan", "-p", str(policy), "--quiet"])
    err = capsys.readouterr().err
    assert code == 1, err
    assert took < BOUND
    assert "no complete answer within 2s (settings.timeouts.request)" in err
    assert "Traceback" not in err


@pytest.mark.parametrize("scenario", ["drip-headers", "drip-body"])
def test_doctor_ends_by_the_request_deadline(
    hostile: HostileRegistry,
    repo_prefix: str,
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
    scenario: str,
) -> None:
    # every answer drips: /v2/ and its 401 body are short, so drip the catalog too
    hostile.enable(scenario, path=r"^/v2/", interval=SLOW)
    policy = _policy(hostile, repo_prefix, tmp_path, "{request: 1s}")
    capsys.readouterr()
    code, took = _timed(["doctor", "-p", str(policy)])
    out = capsys.readouterr()
    assert code == 1, out
    assert took < 2 * BOUND
    assert "settings.timeouts.request" in out.out + out.err


def test_plan_ends_by_the_run_deadline(
    hostile: HostileRegistry,
    pusher: Pusher,
    repo_prefix: str,
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
) -> None:
    # request stays 120s
    policy = _dripping_manifests(hostile, pusher, repo_prefix, tmp_path, "drip-body", "{run: 3s}")
    capsys.readouterr()
    code, took = _timed(["plan", "-p", str(policy), "--quiet"])
    err = capsys.readouterr().err
    assert code == 1, err
    assert took < BOUND
    assert "the command's deadline passed (3s, settings.timeouts.run)" in err


def test_apply_past_its_run_deadline_stops_with_its_summary(
    hostile: HostileRegistry,
    registry: RegistryProcess,
    pusher: Pusher,
    repo_prefix: str,
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
) -> None:
    repo = _push(pusher, repo_prefix, count=4)
    policy = _policy(hostile, repo_prefix, tmp_path, "{}", concurrency=1)
    plan_file = tmp_path / "plan.json"
    assert main(["plan", "-p", str(policy), "-o", str(plan_file), "--quiet"]) == 0
    policy = _policy(hostile, repo_prefix, tmp_path, "{run: 6s}", concurrency=1)  # for apply
    # the first DELETE goes through; every later one drips an answer that never arrives
    hostile.enable(
        "drip-headers",
        path=rf"^/v2/{repo}/manifests/",
        method="DELETE",
        after=1,
        interval=SLOW,
        answer=Exchange(202),
    )
    capsys.readouterr()
    argv = ["apply", str(plan_file), "-p", str(policy), "--yes", "--journal", str(tmp_path / "j")]
    code, took = _timed(argv)
    err = capsys.readouterr().err
    assert code == 3, err
    assert took < BOUND
    assert "deleted 1, stale 0, already gone 0, failed 2" in err
    assert "settings.timeouts.run" in err
    assert sum(manifest_exists(registry.url, repo, f"v{i}") for i in range(4)) == 3


def test_a_scheduled_run_ends_and_releases_its_lock(
    hostile: HostileRegistry,
    pusher: Pusher,
    repo_prefix: str,
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
) -> None:
    policy = _dripping_manifests(hostile, pusher, repo_prefix, tmp_path, "drip-body", "{run: 3s}")
    lock = tmp_path / "run.lock"
    argv = ["schedule", "-p", str(policy), "--once", "--lock", str(lock)]
    argv += ["--history", str(tmp_path / "h.jsonl")]
    code, took = _timed(argv)
    err = capsys.readouterr().err
    assert code == 1, err
    assert took < BOUND
    assert "settings.timeouts.run" in err
    with acquire_lock(lock):  # free again: the run did not keep it
        pass
    (record,) = read_history(tmp_path / "h.jsonl")
    assert record.status == "failed"
