"""Run history (JSON lines, torn-line safe), Prometheus metrics (atomic), lock paths and locks."""

from __future__ import annotations

import dataclasses
import json
import logging
import os
import re
import stat
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from retention.errors import LockHeld, ScheduleError
from retention.runlog import (
    HistoryRecord,
    RunLog,
    RunOutcome,
    append_history,
    default_history_path,
    read_history,
    read_metrics,
    render_metrics,
    status_of,
    write_metrics,
)
from retention.schedule import acquire_lock, lock_path_for
from retention.state import state_dir

T0 = datetime(2024, 5, 2, 3, 30, tzinfo=UTC)

FULL = RunOutcome(
    repositories=3,
    tags=40,
    images=30,
    tags_planned=12,
    images_planned=10,
    bytes_reclaimable=5_000_000,
    deleted=9,
    stale=1,
    gone=0,
    failed=0,
    bytes_deleted=4_500_000,
    gc_command=("docker-registry", "garbage-collect", "/etc/docker/registry/config.yml"),
    gc_exit_code=0,
    gc_output="9 blobs marked, 4 blobs eligible for deletion\n",
    gc_bytes_freed=4_400_000,
    warnings=("an image of unknown age was kept",),
)


def record(n: int = 0, *, status: str = "ok", outcome: RunOutcome | None = FULL) -> HistoryRecord:
    start = T0 + timedelta(days=n)
    return HistoryRecord(
        policy="/etc/retention/policy.yaml",
        tick=start,
        started_at=start,
        finished_at=start + timedelta(seconds=42.5),
        status=status,  # type: ignore[arg-type]
        outcome=outcome,
        error=None if status == "ok" else "something failed",
        missed_ticks=(start + timedelta(minutes=15),) if n % 2 else (),
    )


# --- records ---------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("outcome", "status"),
    [
        (RunOutcome(), "ok"),
        (RunOutcome(deleted=5, stale=2), "ok"),  # stale entries are safety skips, not failures
        (RunOutcome(deleted=5, failed=1), "partial"),
        (RunOutcome(deleted=5, gc_command=("gc",), gc_exit_code=1), "failed"),
        (RunOutcome(deleted=5, gc_command=("gc",), gc_error="timed out"), "failed"),
        (RunOutcome(deleted=5, gc_command=("gc",), gc_exit_code=0), "ok"),
    ],
    ids=["nothing", "stale-is-ok", "failed-deletion", "gc-nonzero", "gc-timeout", "gc-ok"],
)
def test_status_of(outcome: RunOutcome, status: str) -> None:
    assert status_of(outcome) == status


def test_record_json_has_every_field_the_history_promises() -> None:
    doc = record(1).to_document()
    assert doc["start"] == "2024-05-03T03:30:00+00:00"
    assert doc["end"] == "2024-05-03T03:30:42.500000+00:00"
    assert doc["duration_seconds"] == 42.5
    assert doc["plan"] == {
        "repositories": 3,
        "tags": 40,
        "images": 30,
        "tags_deleted": 12,
        "images_deleted": 10,
        "bytes_reclaimable": 5_000_000,
    }
    assert (doc["deleted"], doc["stale"], doc["failed"], doc["bytes"]) == (9, 1, 0, 4_500_000)
    assert doc["gc"]["exit_code"] == 0 and doc["gc"]["bytes_freed"] == 4_400_000
    assert doc["error"] is None and doc["success"] is True
    assert doc["missed_ticks"] == ["2024-05-03T03:45:00+00:00"]


@pytest.mark.parametrize(
    "rec",
    [
        record(0),
        record(1),
        record(2, status="failed", outcome=None),
        record(3, status="skipped", outcome=None),
    ],
    ids=["full", "missed-ticks", "failed", "skipped"],
)
def test_record_round_trips_through_json(rec: HistoryRecord) -> None:
    assert HistoryRecord.from_document(json.loads(json.dumps(rec.to_document()))) == rec


def test_from_json_rejects_a_foreign_document() -> None:
    with pytest.raises(ScheduleError, match="not a run record"):
        HistoryRecord.from_document({"hello": "world"})
    with pytest.raises(ScheduleError, match="format_version"):
        HistoryRecord.from_document({**record().to_document(), "format_version": 2})


# --- history ---------------------------------------------------------------------------------


def test_append_writes_one_fsynced_line_per_record(tmp_path: Path) -> None:
    path = tmp_path / "state" / "history.jsonl"  # parent directories are created
    for n in range(3):
        append_history(path, record(n))
    raw = path.read_bytes()
    assert raw.endswith(b"\n") and raw.count(b"\n") == 3
    assert read_history(path) == [record(0), record(1), record(2)]


def test_reading_a_missing_history_gives_nothing(tmp_path: Path) -> None:
    assert read_history(tmp_path / "none.jsonl") == []


def test_a_torn_last_line_is_skipped_and_the_next_append_starts_a_fresh_line(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    path = tmp_path / "history.jsonl"
    append_history(path, record(0))
    whole = json.dumps(record(1).to_document())
    with path.open("ab") as fh:  # what a power cut in the middle of a write can leave
        fh.write(whole[: len(whole) // 2].encode())
    assert read_history(path) == [record(0)]
    assert "torn last line" in caplog.text
    append_history(path, record(2))
    assert read_history(path) == [record(0), record(2)]
    lines = path.read_bytes().split(b"\n")
    assert json.loads(lines[2])["start"] == record(2).to_document()["start"]


def test_a_history_cut_at_every_byte_yields_exactly_the_whole_records(tmp_path: Path) -> None:
    # Every prefix of the file, as a crash or a full disk could leave it: the reader returns the
    # records whose JSON is whole (the trailing newline alone may be missing) and never raises;
    # an append after the cut keeps every whole record and adds the new one.
    path = tmp_path / "cut.jsonl"
    for n in range(3):
        append_history(path, record(n))
    raw = path.read_bytes()
    ends = [i for i, byte in enumerate(raw) if byte == ord("\n")]  # offsets of each newline
    logging.getLogger("retention.schedule").disabled = True  # thousands of "torn line" warnings
    try:
        for cut in range(len(raw) + 1):
            path.write_bytes(raw[:cut])
            whole = sum(1 for end in ends if cut >= end)  # JSON up to `end` is all there
            assert read_history(path) == [record(n) for n in range(whole)], cut
            if cut % 97 == 0 or cut in ends:
                append_history(path, record(9))
                assert read_history(path) == [*(record(n) for n in range(whole)), record(9)], cut
    finally:
        logging.getLogger("retention.schedule").disabled = False


def test_history_write_failure_is_a_schedule_error(tmp_path: Path) -> None:
    blocker = tmp_path / "file"
    blocker.write_text("x")
    with pytest.raises(ScheduleError, match="cannot open run history"):
        append_history(blocker / "history.jsonl", record())


# --- metrics ---------------------------------------------------------------------------------

_HELP = re.compile(r"^# HELP ([a-z_]+) \S.*$")
_TYPE = re.compile(r"^# TYPE ([a-z_]+) (gauge|counter)$")
_SAMPLE = re.compile(r'^([a-z_]+)\{policy="((?:[^"\\\n]|\\[\\"n])*)"\} (-?[0-9.e+]+)$')


def parse_exposition(text: str) -> dict[str, float]:
    """A strict reader of the Prometheus text format subset we emit: HELP, TYPE, then a sample."""
    assert text.endswith("\n")
    lines = text.splitlines()
    samples: dict[str, float] = {}
    assert len(lines) % 3 == 0
    for i in range(0, len(lines), 3):
        help_m, type_m, sample_m = (
            _HELP.match(lines[i]),
            _TYPE.match(lines[i + 1]),
            _SAMPLE.match(lines[i + 2]),
        )
        assert help_m and type_m and sample_m, lines[i : i + 3]
        assert help_m.group(1) == type_m.group(1) == sample_m.group(1)
        if type_m.group(2) == "counter":
            assert sample_m.group(1).endswith("_total") or "timestamp" in sample_m.group(1)
        samples[sample_m.group(1)] = float(sample_m.group(3))
    return samples


def test_metrics_text_format_and_values() -> None:
    text = render_metrics(record(1), "/etc/retention/policy.yaml")
    values = parse_exposition(text)
    assert (
        values["retention_last_run_timestamp_seconds"]
        == (T0 + timedelta(days=1, seconds=42.5)).timestamp()
    )
    assert values["retention_last_run_duration_seconds"] == 42.5
    assert values["retention_last_run_success"] == 1
    assert values["retention_images_deleted"] == 9
    assert values["retention_bytes_reclaimable"] == 5_000_000
    assert values["retention_gc_bytes_freed"] == 4_400_000
    assert values["retention_failures_total"] == 0
    assert values["retention_runs_total"] == 1
    assert values["retention_missed_ticks_total"] == 1
    for name in (
        "retention_last_run_timestamp_seconds",
        "retention_last_run_duration_seconds",
        "retention_last_run_success",
        "retention_images_deleted",
        "retention_bytes_reclaimable",
        "retention_failures_total",
    ):
        assert f"# HELP {name} " in text and f"# TYPE {name} " in text


def test_label_values_are_escaped() -> None:
    text = render_metrics(record(), 'odd"dir\\new\nline.yaml')
    assert 'policy="odd\\"dir\\\\new\\nline.yaml"' in text
    parse_exposition(text)


def test_counters_and_last_success_carry_over_between_processes(tmp_path: Path) -> None:
    path = tmp_path / "retention.prom"
    policy = "/etc/retention/policy.yaml"
    write_metrics(path, record(0), policy)
    write_metrics(path, record(1, status="failed", outcome=None), policy)
    write_metrics(path, record(2, status="partial"), policy)
    values = parse_exposition(path.read_text())
    assert values["retention_runs_total"] == 3
    assert values["retention_failures_total"] == 2
    assert values["retention_last_run_success"] == 0
    # the last success is still the first run's end
    assert (
        values["retention_last_success_timestamp_seconds"]
        == (T0 + timedelta(seconds=42.5)).timestamp()
    )
    assert read_metrics(path, "another.yaml") == {}


def test_metrics_are_written_atomically_world_readable_with_no_temp_left(tmp_path: Path) -> None:
    path = tmp_path / "textfile" / "retention.prom"
    write_metrics(path, record(), "p")
    assert stat.S_IMODE(path.stat().st_mode) == 0o644  # node_exporter runs as another user
    assert sorted(os.listdir(path.parent)) == ["retention.prom"]


def test_a_failed_metrics_write_keeps_the_old_file_and_leaves_no_temp(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    path = tmp_path / "retention.prom"
    write_metrics(path, record(0), "p")
    before = path.read_bytes()

    def failing_replace(src: str, dst: str) -> None:
        raise OSError(28, "No space left on device")

    monkeypatch.setattr("retention.files.os.replace", failing_replace)
    with pytest.raises(ScheduleError, match=r"cannot write .*No space left"):
        write_metrics(path, record(1), "p")
    assert path.read_bytes() == before
    assert sorted(os.listdir(tmp_path)) == ["retention.prom"]


def test_run_log_writes_history_and_metrics_but_a_skip_only_to_history(tmp_path: Path) -> None:
    log = RunLog("p", tmp_path / "h.jsonl", tmp_path / "m.prom")
    log(record(0))
    first = (tmp_path / "m.prom").read_text()
    log(record(1, status="skipped", outcome=None))
    assert (tmp_path / "m.prom").read_text() == first
    assert [r.status for r in read_history(tmp_path / "h.jsonl")] == ["ok", "skipped"]


# --- paths and the lock ----------------------------------------------------------------------


@pytest.mark.parametrize(
    ("env", "expected"),
    [
        ({"XDG_STATE_HOME": "/var/lib/x", "HOME": "/home/u"}, "/var/lib/x/retention"),
        ({"HOME": "/home/u"}, "/home/u/.local/state/retention"),
        ({"XDG_STATE_HOME": "", "HOME": "/home/u"}, "/home/u/.local/state/retention"),
        ({"XDG_STATE_HOME": "relative", "HOME": "/home/u"}, "/home/u/.local/state/retention"),
    ],
    ids=["xdg", "home", "empty-xdg", "relative-xdg-ignored"],
)
def test_state_dir_follows_xdg(env: dict[str, str], expected: str) -> None:
    assert state_dir(env) == Path(expected)
    assert default_history_path(env) == Path(expected) / "history.jsonl"


def test_lock_path_derives_from_the_resolved_policy_path(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    env = {"XDG_STATE_HOME": str(tmp_path / "state")}
    (tmp_path / "a").mkdir()
    (tmp_path / "b").mkdir()
    monkeypatch.chdir(tmp_path / "a")
    relative = lock_path_for("policy.yaml", env)
    absolute = lock_path_for(str(tmp_path / "a" / "policy.yaml"), env)
    other = lock_path_for(str(tmp_path / "b" / "policy.yaml"), env)
    assert relative == absolute != other
    assert relative.parent == tmp_path / "state" / "retention" / "locks"
    assert re.fullmatch(r"policy-[0-9a-f]{16}\.lock", relative.name)


def test_lock_excludes_a_second_holder_names_the_first_and_frees_on_exit(tmp_path: Path) -> None:
    path = tmp_path / "locks" / "p.lock"
    with acquire_lock(path, purpose="apply plan.json"):
        with pytest.raises(LockHeld) as info, acquire_lock(path):
            pass
        assert f"pid {os.getpid()}" in info.value.message
        assert "apply plan.json" in info.value.message
        assert str(path) in info.value.message
        assert info.value.hint
    with acquire_lock(path):  # released: free again
        assert path.exists()
    assert path.exists()  # never unlinked (unlinking races with the next locker)


def test_lock_is_released_when_the_block_raises(tmp_path: Path) -> None:
    path = tmp_path / "p.lock"
    with pytest.raises(RuntimeError), acquire_lock(path):
        raise RuntimeError("inside")
    with acquire_lock(path):
        pass


def test_an_unopenable_lock_path_is_a_schedule_error(tmp_path: Path) -> None:
    blocker = tmp_path / "file"
    blocker.write_text("x")
    with pytest.raises(ScheduleError, match="cannot open lock file"), acquire_lock(blocker / "l"):
        pass


# --- untags (settings.untag) -----------------------------------------------------------------

UNTAGS = dataclasses.replace(FULL, untags_planned=4, untagged=2, untags_skipped=1, untags_failed=1)


def test_untag_counts_round_trip_and_appear_only_for_a_plan_with_untags() -> None:
    with_untags = record(0, outcome=UNTAGS)
    doc = with_untags.to_document()
    assert doc["untags"] == {"planned": 4, "untagged": 2, "skipped": 1, "failed": 1}
    assert HistoryRecord.from_document(json.loads(json.dumps(doc))) == with_untags
    assert "untags" not in record(0).to_document()  # the lines of other runs are as they were


@pytest.mark.parametrize(
    "untags",
    [
        [],
        {"planned": 1},
        {"planned": 1, "untagged": 1, "skipped": 0, "failed": -1},
        {"planned": 1, "untagged": True, "skipped": 0, "failed": 0},
        {"planned": 1, "untagged": "1", "skipped": 0, "failed": 0},
    ],
    ids=["not-an-object", "missing-counts", "negative", "boolean", "string"],
)
def test_malformed_untag_counts_are_not_a_run_record(untags: object) -> None:
    doc = {**record(0, outcome=UNTAGS).to_document(), "untags": untags}
    with pytest.raises(ScheduleError, match="not a run record"):
        HistoryRecord.from_document(doc)


@pytest.mark.parametrize(
    ("outcome", "status"),
    [
        (dataclasses.replace(FULL, untags_planned=2, untagged=2), "ok"),
        (dataclasses.replace(FULL, untags_planned=2, untagged=1, untags_skipped=1), "ok"),
        (UNTAGS, "partial"),
    ],
    ids=["all-untagged", "one-stale", "one-failed"],
)
def test_a_failed_untag_makes_the_run_partial(outcome: RunOutcome, status: str) -> None:
    assert status_of(outcome) == status


def test_untag_metrics_are_always_written() -> None:
    values = parse_exposition(render_metrics(record(0, outcome=UNTAGS), "p"))
    assert values["retention_tags_untag_planned"] == 4
    assert values["retention_tags_untagged"] == 2
    assert values["retention_tags_untag_failed"] == 1
    none = parse_exposition(render_metrics(record(0), "p"))
    assert none["retention_tags_untagged"] == 0  # present at 0: alerts need no absent() guard
