"""`retention schedule` end to end: --next against croniter, --once against the real registry
(through `main`), the gc step, the lock between two real processes, and SIGTERM mid-run."""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
import threading
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from zoneinfo import ZoneInfo

import pytest
from croniter import croniter

from retention.cli import main
from retention.journal import read_journal
from retention.runlog import read_history, read_metrics
from tests.harness.faultproxy import Exchange, Fault, FaultProxy, RecordedRequest, Upstream
from tests.harness.registry import RegistryProcess
from tests.harness.seed import Pushed, Pusher

ROOT = Path(__file__).resolve().parents[2]
OLD = datetime.now(UTC) - timedelta(days=30)


def policy_text(
    url: str,
    prefix: str,
    *,
    schedule: str | None = None,
    gc: list[str] | None = None,
    storage_path: str | None = None,
    keep_last: int = 1,
    max_deletions: int = 50,
    concurrency: int = 8,
) -> str:
    lines = ["version: 1", "registry:", f"  url: {url}"]
    if schedule is not None:
        lines.append(f"schedule: {schedule}")
    if gc is not None:
        lines += ["gc:", f"  command: {json.dumps(gc)}"]
        if storage_path is not None:
            lines.append(f"  storage_path: {json.dumps(storage_path)}")
    lines += [
        "settings:",
        f"  max_deletions: {max_deletions}",
        f"  concurrency: {concurrency}",
        "rules:",
        "  - name: keep-newest",
        "    match:",
        f"      repositories: ['{re.escape(prefix)}/.*']",
        f"    keep: {{last: {keep_last}}}",
    ]
    return "\n".join(lines) + "\n"


@pytest.fixture
def env(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> dict[str, str]:
    """State, cache and docker config inside the test's folder, for main() and subprocesses."""
    values = {
        "XDG_STATE_HOME": str(tmp_path / "state"),
        "XDG_CACHE_HOME": str(tmp_path / "cache"),
        "HOME": str(tmp_path / "home"),
        "DOCKER_CONFIG": str(tmp_path / "docker"),
    }
    for key, value in values.items():
        monkeypatch.setenv(key, value)
    return {**os.environ, **values, "PYTHONPATH": str(ROOT)}


def write(path: Path, text: str) -> str:
    path.write_text(text)
    return str(path)


def push_three(push: Callable[..., Pushed], prefix: str) -> tuple[Pushed, Pushed, Pushed]:
    repo = f"{prefix}/app"
    return (
        push(repo, "v1", created=OLD),
        push(repo, "v2", created=OLD + timedelta(days=1)),
        push(repo, "v3", created=OLD + timedelta(days=2)),
    )


# --- --next ----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("cron", "timezone", "after"),
    [
        ("30 2 * * *", "Europe/Berlin", "2024-03-29T12:00:00+01:00"),  # spring forward
        ("30 2 * * *", "Europe/Berlin", "2024-10-25T12:00:00+02:00"),  # fall back: 02:30 twice
        ("*/20 1-2 * * *", "America/New_York", "2024-11-02T23:00:00-04:00"),
        ("0 9 * * 1-5", "Asia/Kolkata", "2024-06-07T00:00:00Z"),
        ("0 */6 * * *", "Australia/Lord_Howe", "2024-04-06T00:00:00Z"),
        ("@weekly", "UTC", "2024-02-28T00:00:00"),
        ("0 0 29 2 *", "Pacific/Auckland", "2023-01-01T00:00:00Z"),
    ],
    ids=["berlin-spring", "berlin-fall", "new-york", "kolkata", "lord-howe", "weekly", "leap-day"],
)
def test_next_prints_croniters_own_sequence(
    cron: str, timezone: str, after: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    policy = write(
        tmp_path / "p.yaml",
        policy_text(
            "http://127.0.0.1:9", "x", schedule=json.dumps({"cron": cron, "timezone": timezone})
        ),
    )
    assert main(["schedule", "-p", policy, "--next", "6", "--after", after]) == 0
    printed = capsys.readouterr().out.splitlines()
    start = datetime.fromisoformat(after.replace("Z", "+00:00"))
    start = start if start.tzinfo else start.replace(tzinfo=UTC)
    it = croniter(cron, start.astimezone(ZoneInfo(timezone)))
    assert printed == [it.get_next(datetime).isoformat() for _ in range(6)]


def test_next_from_now_is_croniters_sequence_from_now(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    cron, timezone = "*/5 * * * *", "Europe/Berlin"
    policy = write(
        tmp_path / "p.yaml",
        policy_text(
            "http://127.0.0.1:9", "x", schedule=json.dumps({"cron": cron, "timezone": timezone})
        ),
    )

    def expected(start: datetime) -> list[str]:
        it = croniter(cron, start.astimezone(ZoneInfo(timezone)))
        return [it.get_next(datetime).isoformat() for _ in range(4)]

    before = expected(datetime.now(UTC))
    assert main(["schedule", "-p", policy, "--next", "4"]) == 0
    after = expected(datetime.now(UTC))
    # "now" is read inside main: its sequence is the one before or after (a tick may pass).
    assert capsys.readouterr().out.splitlines() in (before, after)


def test_next_and_the_loop_need_a_schedule_section_but_once_does_not(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    policy = write(tmp_path / "p.yaml", policy_text("http://127.0.0.1:9", "x"))
    for argv in (["--next", "3"], []):
        assert main(["schedule", "-p", policy, *argv]) == 1
        err = capsys.readouterr().err
        assert f"{policy}: the policy has no schedule: section" in err
        assert "--once" in err  # the hint names the way out


def test_after_without_next_is_an_error(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    policy = write(
        tmp_path / "p.yaml", policy_text("http://127.0.0.1:9", "x", schedule="{cron: '@daily'}")
    )
    assert main(["schedule", "-p", policy, "--after", "2024-01-01"]) == 1
    assert "--after goes with --next" in capsys.readouterr().err


# --- --once against the real registry -------------------------------------------------------


def test_once_plans_applies_records_history_and_metrics(
    registry: RegistryProcess,
    pusher: Pusher,
    repo_prefix: str,
    tmp_path: Path,
    env: dict[str, str],
    capsys: pytest.CaptureFixture[str],
) -> None:
    v1, v2, v3 = push_three(pusher.push_image, repo_prefix)
    policy = write(tmp_path / "p.yaml", policy_text(registry.url, repo_prefix))  # no schedule:
    history, metrics = tmp_path / "history.jsonl", tmp_path / "m" / "retention.prom"
    argv = [
        "schedule",
        "-p",
        policy,
        "--once",
        "--history",
        str(history),
        "--metrics-file",
        str(metrics),
    ]

    assert main(argv) == 0
    assert pusher.resolve(v3.repo, "v3") == v3.digest
    assert pusher.resolve(v1.repo, "v1") is None and pusher.resolve(v2.repo, "v2") is None
    assert "run ok" in capsys.readouterr().err

    (record,) = read_history(history)
    assert record.status == "ok" and record.policy == policy
    assert record.outcome is not None
    assert record.outcome.images_planned == 2 and record.outcome.deleted == 2
    assert record.outcome.bytes_deleted > 0 and record.outcome.gc_command is None
    values = read_metrics(metrics, policy)
    assert values["retention_last_run_success"] == 1
    assert values["retention_images_deleted"] == 2
    assert values["retention_bytes_reclaimable"] == record.outcome.bytes_reclaimable

    assert main(argv) == 0  # a second run finds nothing more to delete
    records = read_history(history)
    assert [r.outcome.deleted if r.outcome else None for r in records] == [2, 0]
    assert read_metrics(metrics, policy)["retention_runs_total"] == 2
    # the default lock sits in the state dir, named after the policy
    assert list((tmp_path / "state" / "retention" / "locks").glob("p-*.lock"))


def test_once_refused_by_max_deletions_is_a_failed_run_and_deletes_nothing(
    registry: RegistryProcess,
    pusher: Pusher,
    repo_prefix: str,
    tmp_path: Path,
    env: dict[str, str],
    capsys: pytest.CaptureFixture[str],
) -> None:
    v1, v2, _ = push_three(pusher.push_image, repo_prefix)
    policy = write(tmp_path / "p.yaml", policy_text(registry.url, repo_prefix, max_deletions=1))
    history = tmp_path / "h.jsonl"
    assert main(["schedule", "-p", policy, "--once", "--history", str(history)]) == 1
    assert pusher.resolve(v1.repo, "v1") == v1.digest and pusher.resolve(v2.repo, "v2")
    (record,) = read_history(history)
    assert record.status == "failed" and record.error is not None
    assert "more than the 1 allowed" in record.error
    assert "run failed" in capsys.readouterr().err


def test_once_runs_gc_after_deleting_and_records_the_bytes_freed(
    fresh_registry: RegistryProcess, fresh_pusher: Pusher, tmp_path: Path, env: dict[str, str]
) -> None:
    push_three(fresh_pusher.push_image, "gc")
    # The collector runs while this test's own registry serves: nothing else pushes to it, which
    # is what read-only mode guarantees in production (docs/scheduling.md).
    gc = [fresh_registry.binary, "garbage-collect", str(fresh_registry.config_path)]
    policy = write(
        tmp_path / "p.yaml",
        policy_text(fresh_registry.url, "gc", gc=gc, storage_path=str(fresh_registry.storage_dir)),
    )
    history = tmp_path / "h.jsonl"
    assert main(["schedule", "-p", policy, "--once", "--history", str(history)]) == 0
    (record,) = read_history(history)
    assert record.outcome is not None and record.outcome.deleted == 2
    assert record.outcome.gc_command == tuple(gc)
    assert record.outcome.gc_exit_code == 0
    assert record.outcome.gc_bytes_freed is not None and record.outcome.gc_bytes_freed > 0
    assert "eligible for deletion" in (record.outcome.gc_output or "")
    fresh_registry.restart()  # empties the blob-descriptor cache, as after every GC
    assert fresh_pusher.pull_complete("gc/app", "v3")


def test_a_failing_gc_fails_the_run_but_keeps_what_was_deleted(
    fresh_registry: RegistryProcess, fresh_pusher: Pusher, tmp_path: Path, env: dict[str, str]
) -> None:
    push_three(fresh_pusher.push_image, "gcfail")
    gc = [sys.executable, "-c", "import sys; print('read-only mode not set'); sys.exit(4)"]
    policy = write(tmp_path / "p.yaml", policy_text(fresh_registry.url, "gcfail", gc=gc))
    history = tmp_path / "h.jsonl"
    assert main(["schedule", "-p", policy, "--once", "--history", str(history)]) == 1
    (record,) = read_history(history)
    assert record.status == "failed" and record.error == "garbage collection exited 4"
    assert record.outcome is not None and record.outcome.deleted == 2
    assert record.outcome.gc_output == "read-only mode not set\n"


def test_gc_is_not_run_when_nothing_was_deleted(
    registry: RegistryProcess, tmp_path: Path, env: dict[str, str], repo_prefix: str
) -> None:
    marker = tmp_path / "gc-ran"
    gc = [sys.executable, "-c", f"open({str(marker)!r}, 'w').close()"]
    policy = write(tmp_path / "p.yaml", policy_text(registry.url, repo_prefix, gc=gc))
    history = tmp_path / "h.jsonl"
    assert main(["schedule", "-p", policy, "--once", "--history", str(history)]) == 0
    assert not marker.exists()
    (record,) = read_history(history)
    assert record.outcome is not None and record.outcome.gc_command is None


def test_delete_untagged_gc_with_an_index_in_the_registry_warns(
    registry: RegistryProcess,
    pusher: Pusher,
    repo_prefix: str,
    tmp_path: Path,
    env: dict[str, str],
    caplog: pytest.LogCaptureFixture,
) -> None:
    pusher.push_image(f"{repo_prefix}/multi", "v1", kind="oci-index")
    gc = [sys.executable, "-c", "print('pretend'); import sys; sys.argv", "-m"]
    policy = write(tmp_path / "p.yaml", policy_text(registry.url, repo_prefix, gc=gc))
    history = tmp_path / "h.jsonl"
    assert main(["schedule", "-p", policy, "--once", "--history", str(history)]) == 0
    (record,) = read_history(history)
    assert record.outcome is not None
    assert any("--delete-untagged (-m)" in w and "#3178" in w for w in record.outcome.warnings)


# --- real processes: the lock and SIGTERM ----------------------------------------------------


def retention(*args: str, env: dict[str, str]) -> subprocess.Popen[str]:
    return subprocess.Popen(
        [sys.executable, "-m", "retention", *args],
        env=env,
        stdin=subprocess.DEVNULL,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )


def test_a_second_process_finds_the_lock_held_and_exits_1(
    tmp_path: Path, env: dict[str, str]
) -> None:
    policy = write(tmp_path / "p.yaml", policy_text("http://127.0.0.1:9", "x"))
    lock = tmp_path / "p.lock"
    once = ["schedule", "-p", policy, "--once", "--lock", str(lock)]
    once += ["--history", str(tmp_path / "h.jsonl")]
    holder = subprocess.Popen(
        [
            sys.executable,
            "-c",
            "import sys\n"
            "from retention.schedule import acquire_lock\n"
            f"with acquire_lock({str(lock)!r}, purpose='apply plan.json'):\n"
            "    print('locked', flush=True)\n"
            "    sys.stdin.readline()\n",
        ],
        env=env,
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        assert holder.stdout is not None and holder.stdout.readline() == "locked\n"
        second = retention(*once, env=env)
        _, err = second.communicate(timeout=60)
        assert second.returncode == 1
        assert f"error: another retention run holds the lock {lock}" in err
        assert f"pid {holder.pid}" in err and "apply plan.json" in err
        assert [r.status for r in read_history(tmp_path / "h.jsonl")] == ["skipped"]
    finally:
        assert holder.stdin is not None
        holder.stdin.close()
        holder.wait(timeout=60)
        assert holder.stdout is not None
        holder.stdout.close()
    # released with its process: the next run gets it (and fails only at the unreachable registry)
    third = retention(*once, env=env)
    _, err = third.communicate(timeout=120)
    assert "holds the lock" not in err
    assert [r.status for r in read_history(tmp_path / "h.jsonl")] == ["skipped", "failed"]


@dataclass
class HeldDelete:
    """The first DELETE through the proxy waits until `release` is set: a deletion in flight,
    for a test to act on without sleeping or timing anything."""

    url: str
    seen: threading.Event = field(default_factory=threading.Event)
    release: threading.Event = field(default_factory=threading.Event)

    def handler(self, request: RecordedRequest, upstream: Upstream) -> Exchange:
        self.seen.set()
        self.release.wait(120)
        return upstream()


@pytest.fixture
def held_delete(registry: RegistryProcess) -> Iterator[HeldDelete]:
    with FaultProxy(registry.url) as proxy:
        held = HeldDelete(proxy.url)
        proxy.add(Fault("respond", method="DELETE", path="/manifests/", handler=held.handler))
        try:
            yield held
        finally:
            held.release.set()


def test_sigterm_mid_run_finishes_the_run_writes_whole_files_and_exits_0(
    registry: RegistryProcess,
    pusher: Pusher,
    held_delete: HeldDelete,
    repo_prefix: str,
    tmp_path: Path,
    env: dict[str, str],
) -> None:
    v1, v2, v3 = push_three(pusher.push_image, repo_prefix)
    marker = tmp_path / "gc-ran"
    gc = [sys.executable, "-c", f"open({str(marker)!r}, 'w').close()"]
    policy = write(tmp_path / "p.yaml", policy_text(held_delete.url, repo_prefix, gc=gc))
    history, metrics = tmp_path / "h.jsonl", tmp_path / "retention.prom"
    run = retention(
        "schedule",
        "-p",
        policy,
        "--once",
        "--history",
        str(history),
        "--metrics-file",
        str(metrics),
        env=env,
    )
    try:
        assert held_delete.seen.wait(120), "the run never reached a DELETE"
        run.send_signal(signal.SIGTERM)  # a deletion is in flight, held by the proxy
    finally:
        held_delete.release.set()
    _, err = run.communicate(timeout=120)

    assert run.returncode == 0, err
    assert "SIGTERM: stopped after the run in flight" in err
    # the run finished: both deletions done, v3 kept
    assert pusher.resolve(v1.repo, "v1") is None and pusher.resolve(v2.repo, "v2") is None
    assert pusher.resolve(v3.repo, "v3") == v3.digest
    # history: one whole record; metrics: a whole file; journal: no torn line
    raw = history.read_bytes()
    assert raw.endswith(b"\n") and raw.count(b"\n") == 1
    (record,) = read_history(history)
    assert record.status == "ok" and record.outcome is not None and record.outcome.deleted == 2
    # stopping means no garbage collection is started
    assert not marker.exists() and record.outcome.gc_command is None
    assert "stopped before garbage collection" in record.outcome.warnings
    assert read_metrics(metrics, policy)["retention_images_deleted"] == 2
    assert metrics.read_text().endswith("\n")
    (journal,) = (tmp_path / "state" / "retention" / "journal").glob("*.jsonl")
    assert journal.read_bytes().endswith(b"\n")
    assert len(read_journal(journal).finished()) == 2
    assert not [p for p in os.listdir(tmp_path) if p.startswith(".")]  # no temp files left


def test_sigterm_with_deletions_left_stops_between_them_and_the_run_is_partial(
    registry: RegistryProcess,
    pusher: Pusher,
    held_delete: HeldDelete,
    repo_prefix: str,
    tmp_path: Path,
    env: dict[str, str],
) -> None:
    repo = f"{repo_prefix}/app"
    images = [pusher.push_image(repo, f"b{i}", created=OLD + timedelta(days=i)) for i in range(5)]
    policy = write(tmp_path / "p.yaml", policy_text(held_delete.url, repo_prefix, concurrency=1))
    history = tmp_path / "h.jsonl"
    run = retention("schedule", "-p", policy, "--once", "--history", str(history), env=env)
    try:
        assert held_delete.seen.wait(120), "the run never reached a DELETE"
        run.send_signal(signal.SIGTERM)  # one deletion in flight, three not started
    finally:
        held_delete.release.set()
    _, err = run.communicate(timeout=120)

    assert run.returncode == 3, err  # partial: stopped on request, not broken
    (record,) = read_history(history)
    assert record.status == "partial" and record.error is None
    assert record.outcome is not None and record.outcome.deleted == 1
    assert record.outcome.failed == 3
    assert "SIGTERM: stopped between deletions; the next run goes on" in record.outcome.warnings
    left = pusher.list_tags(repo)
    assert len(left) == 4 and "b4" in left  # one deleted; the newest kept; the rest wait
    assert pusher.resolve(repo, "b4") == images[4].digest


def test_sigterm_while_waiting_for_the_next_tick_exits_0_without_running(
    tmp_path: Path, env: dict[str, str]
) -> None:
    policy = write(
        tmp_path / "p.yaml",
        policy_text("http://127.0.0.1:9", "x", schedule="{cron: '0 0 1 1 *', timezone: UTC}"),
    )
    history = tmp_path / "h.jsonl"
    run = retention("schedule", "-p", policy, "--history", str(history), "-v", env=env)
    assert run.stderr is not None
    seen = []
    for line in run.stderr:
        seen.append(line)
        if "next run at" in line:
            break
    run.send_signal(signal.SIGTERM)
    _, rest = run.communicate(timeout=60)
    assert run.returncode == 0, "".join(seen) + rest
    assert "next run at 20" in "".join(seen)
    assert "SIGTERM: stopped" in rest
    assert not history.exists()


# --- the deploy files use flags the CLI has ---------------------------------------------------


def test_the_deploy_commands_parse_with_the_real_parser() -> None:
    import shlex

    import yaml

    from retention.cli.parser import make_parser as _parser

    for doc in yaml.safe_load_all((ROOT / "deploy" / "kubernetes" / "cronjob.yaml").read_text()):
        if doc and doc["kind"] == "CronJob":
            pod = doc["spec"]["jobTemplate"]["spec"]["template"]["spec"]
            args = _parser().parse_args(pod["containers"][0]["args"])
            assert args.command == "schedule" and args.once and args.metrics_file
    service = (ROOT / "deploy" / "systemd" / "retention.service").read_text()
    (exec_start,) = re.findall(r"^ExecStart=(.*)$", service, re.M)
    args = _parser().parse_args(shlex.split(exec_start)[1:])
    assert args.command == "schedule" and args.once and args.metrics_file
