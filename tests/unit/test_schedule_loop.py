"""The cron loop with an injected clock and sleep: ticks, DST, overruns, stop, lock, errors."""

from __future__ import annotations

import itertools
import logging
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from zoneinfo import ZoneInfo

import pytest
from croniter import croniter
from hypothesis import given, settings
from hypothesis import strategies as st

from retention.errors import InventoryError, LockHeld, ScheduleError
from retention.runlog import HistoryRecord, RunOutcome
from retention.schedule import (
    MAX_SLEEP_SECONDS,
    StopFlag,
    acquire_lock,
    cron_times,
    next_times,
    run_loop,
    run_now,
    sleep_until,
)

BERLIN = ZoneInfo("Europe/Berlin")


@dataclass
class FakeClock:
    """A clock that only moves when the loop sleeps or a fake run takes time."""

    t: datetime
    sleeps: list[float] = field(default_factory=list)
    on_sleep: Callable[[FakeClock], None] | None = None
    zone: ZoneInfo | None = None  # the zone now() answers in (the instant is the same)

    def __post_init__(self) -> None:
        # A real clock returns instants; adding a timedelta to a Berlin-zoned datetime would add
        # wall-clock time (an hour off across DST), so the fake keeps UTC like time.time() does.
        self.t = self.t.astimezone(UTC)

    def now(self) -> datetime:
        return self.t if self.zone is None else self.t.astimezone(self.zone)

    def sleep(self, seconds: float) -> None:
        assert seconds > 0, "the loop must never sleep zero or negative seconds"
        self.sleeps.append(seconds)
        self.t += timedelta(seconds=seconds)
        if self.on_sleep:
            self.on_sleep(self)


@dataclass
class FakeRuns:
    """run_once: records when it ran, takes `durations[i]` of fake time, stops after `limit`."""

    clock: FakeClock
    stop: StopFlag
    limit: int
    durations: dict[int, timedelta] = field(default_factory=dict)
    fail: dict[int, Exception] = field(default_factory=dict)
    started: list[datetime] = field(default_factory=list)

    def __call__(self) -> RunOutcome:
        n = len(self.started)
        # kept in UTC: PEP 495 makes a time in a repeated hour unequal to every other zone's
        self.started.append(self.clock.now().astimezone(UTC))
        self.clock.t += self.durations.get(n, timedelta(seconds=5))
        if len(self.started) >= self.limit:
            self.stop.set("test limit")
        if n in self.fail:
            raise self.fail[n]
        return RunOutcome(deleted=n)


def loop(
    cron: str,
    timezone: str,
    start: datetime,
    *,
    limit: int,
    tmp_path: Path,
    durations: dict[int, timedelta] | None = None,
    fail: dict[int, Exception] | None = None,
    clock_zone: ZoneInfo | None = None,
) -> tuple[FakeRuns, list[HistoryRecord], int]:
    clock = FakeClock(start, zone=clock_zone)
    stop = StopFlag()
    runs = FakeRuns(clock, stop, limit, durations or {}, fail or {})
    records: list[HistoryRecord] = []
    count = run_loop(
        runs,
        cron=cron,
        timezone=timezone,
        policy="p.yaml",
        now=clock.now,
        sleep=clock.sleep,
        stop=stop,
        lock_path=tmp_path / "p.lock",
        on_record=records.append,
    )
    assert all(s <= MAX_SLEEP_SECONDS for s in clock.sleeps)
    return runs, records, count


def utc(*args: int) -> datetime:
    return datetime(*args, tzinfo=UTC)  # type: ignore[misc]


def berlin(*args: int, fold: int = 0) -> datetime:
    return datetime(*args, tzinfo=BERLIN, fold=fold)  # type: ignore[misc]


# --- ticks -----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("cron", "timezone", "start"),
    [
        ("30 3 * * *", "UTC", utc(2024, 1, 1, 12)),
        ("*/15 * * * *", "America/New_York", utc(2024, 11, 3, 4, 50)),
        ("0 9 * * 1-5", "Asia/Kolkata", utc(2024, 6, 7, 1)),
        ("0 */6 * * *", "Australia/Lord_Howe", utc(2024, 4, 6, 10)),
        ("@hourly", "Europe/Berlin", utc(2024, 3, 30, 22, 10)),
    ],
    ids=["daily-utc", "quarter-hour-ny-fall-back", "weekdays-kolkata", "lord-howe-dst", "hourly"],
)
def test_runs_happen_exactly_at_croniters_ticks(
    cron: str, timezone: str, start: datetime, tmp_path: Path
) -> None:
    runs, records, count = loop(cron, timezone, start, limit=8, tmp_path=tmp_path)
    it = croniter(cron, start.astimezone(ZoneInfo(timezone)))
    expected = [it.get_next(datetime).astimezone(UTC) for _ in range(8)]
    assert [t.astimezone(UTC) for t in runs.started] == expected
    assert [r.tick for r in records] == [t.astimezone(ZoneInfo(timezone)) for t in expected]
    assert count == 8
    assert all(r.status == "ok" and not r.missed_ticks for r in records)


def test_spring_forward_runs_the_skipped_time_at_croniters_substitute(tmp_path: Path) -> None:
    # 2024-03-31 02:00 Berlin does not exist (clocks jump 02:00 → 03:00); croniter runs at 03:00.
    runs, records, _ = loop(
        "30 2 * * *", "Europe/Berlin", berlin(2024, 3, 29, 12), limit=4, tmp_path=tmp_path
    )
    assert runs.started == [
        utc(2024, 3, 30, 1, 30),  # 02:30+01:00
        utc(2024, 3, 31, 1, 0),  # 03:00+02:00, the substitute for the missing 02:30
        utc(2024, 4, 1, 0, 30),  # 02:30+02:00
        utc(2024, 4, 2, 0, 30),
    ]
    assert [r.tick.isoformat() for r in records] == [
        "2024-03-30T02:30:00+01:00",
        "2024-03-31T03:00:00+02:00",
        "2024-04-01T02:30:00+02:00",
        "2024-04-02T02:30:00+02:00",
    ]


CLOCK_ZONES = pytest.mark.parametrize(
    "clock_zone", [None, BERLIN], ids=["utc-clock", "berlin-clock"]
)


@CLOCK_ZONES
def test_fall_back_runs_both_0230s_an_hour_apart_as_croniter_does(
    tmp_path: Path, clock_zone: ZoneInfo | None
) -> None:
    # 2024-10-27 02:30 Berlin happens twice (+02:00, then +01:00). croniter yields both, so the
    # loop runs at both; the second must wait the full hour (same wall time, different instant).
    # With a clock answering in Berlin time, a comparison of wall times would run it at once.
    runs, records, _ = loop(
        "30 2 * * *",
        "Europe/Berlin",
        berlin(2024, 10, 25, 12),
        limit=4,
        tmp_path=tmp_path,
        clock_zone=clock_zone,
    )
    assert runs.started == [
        utc(2024, 10, 26, 0, 30),
        utc(2024, 10, 27, 0, 30),  # 02:30+02:00
        utc(2024, 10, 27, 1, 30),  # 02:30+01:00 (fold=1)
        utc(2024, 10, 28, 1, 30),
    ]
    assert [r.tick.isoformat() for r in records][1:3] == [
        "2024-10-27T02:30:00+02:00",
        "2024-10-27T02:30:00+01:00",
    ]
    assert not any(r.missed_ticks for r in records)


def test_a_run_overrunning_two_ticks_skips_both_logs_them_and_runs_the_next(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.WARNING, logger="retention.schedule")
    runs, records, count = loop(
        "*/15 * * * *",
        "UTC",
        utc(2024, 5, 1, 23, 59, 30),
        limit=3,
        tmp_path=tmp_path,
        durations={0: timedelta(minutes=40)},
    )
    assert runs.started == [utc(2024, 5, 2, 0, 0), utc(2024, 5, 2, 0, 45), utc(2024, 5, 2, 1, 0)]
    assert count == 3
    assert records[0].missed_ticks == (utc(2024, 5, 2, 0, 15), utc(2024, 5, 2, 0, 30))
    assert records[0].finished_at == utc(2024, 5, 2, 0, 40)
    assert records[1].missed_ticks == () and records[2].missed_ticks == ()
    warning = " ".join(r.getMessage() for r in caplog.records if r.levelno == logging.WARNING)
    assert "2 later tick(s)" in warning
    assert "2024-05-02T00:15:00+00:00" in warning and "2024-05-02T00:30:00+00:00" in warning


@pytest.mark.parametrize(
    ("duration", "missed", "next_start"),
    [
        (timedelta(minutes=14, seconds=59), 0, utc(2024, 5, 2, 0, 15)),
        (timedelta(minutes=15), 0, utc(2024, 5, 2, 0, 15)),  # ends on the tick: runs, not missed
        (timedelta(minutes=15, seconds=1), 1, utc(2024, 5, 2, 0, 30)),
        (timedelta(hours=2, minutes=1), 8, utc(2024, 5, 2, 2, 15)),
    ],
    ids=["just-in-time", "ends-on-the-tick", "one-second-late", "eight-ticks"],
)
def test_overrun_boundaries(
    duration: timedelta, missed: int, next_start: datetime, tmp_path: Path
) -> None:
    runs, records, _ = loop(
        "*/15 * * * *",
        "UTC",
        utc(2024, 5, 1, 23, 59, 30),
        limit=2,
        tmp_path=tmp_path,
        durations={0: duration},
    )
    assert len(records[0].missed_ticks) == missed
    assert runs.started[1] == next_start


@CLOCK_ZONES
def test_overrun_across_the_fall_back_hour_counts_instants_not_wall_times(
    tmp_path: Path, clock_zone: ZoneInfo | None
) -> None:
    # Hourly at :30 in Berlin; a run at 01:30+02:00 lasting 2h10m ends at 02:40+01:00. It passed
    # 02:30+02:00 and 02:30+01:00 (two instants with the same wall time): both are missed.
    runs, records, _ = loop(
        "30 * * * *",
        "Europe/Berlin",
        berlin(2024, 10, 27, 1, 0),
        limit=2,
        tmp_path=tmp_path,
        durations={0: timedelta(hours=2, minutes=10)},
        clock_zone=clock_zone,
    )
    assert [t.isoformat() for t in records[0].missed_ticks] == [
        "2024-10-27T02:30:00+02:00",
        "2024-10-27T02:30:00+01:00",
    ]
    assert runs.started[1] == berlin(2024, 10, 27, 3, 30).astimezone(UTC)


def test_waking_late_runs_the_overdue_tick_once_and_skips_the_rest(tmp_path: Path) -> None:
    # The machine sleeps through three hourly ticks (suspend): one catch-up run, the rest missed.
    clock = FakeClock(utc(2024, 5, 1, 0, 59, 59))
    stop = StopFlag()

    def suspend(c: FakeClock) -> None:
        if c.t == utc(2024, 5, 1, 1, 0, 0):
            c.t = utc(2024, 5, 1, 3, 20)
            c.on_sleep = None

    clock.on_sleep = suspend
    runs = FakeRuns(clock, stop, limit=2)
    records: list[HistoryRecord] = []
    run_loop(
        runs,
        cron="0 * * * *",
        timezone="UTC",
        policy="p",
        now=clock.now,
        sleep=clock.sleep,
        stop=stop,
        lock_path=tmp_path / "l",
        on_record=records.append,
    )
    assert records[0].tick == utc(2024, 5, 1, 1)
    assert runs.started[0] == utc(2024, 5, 1, 3, 20)
    assert records[0].missed_ticks == (utc(2024, 5, 1, 2), utc(2024, 5, 1, 3))
    assert runs.started[1] == utc(2024, 5, 1, 4)


@settings(max_examples=60, deadline=None)
@given(
    start=st.datetimes(min_value=datetime(2000, 1, 1), max_value=datetime(2037, 1, 1)),
    cron=st.sampled_from(["*/7 * * * *", "30 2 * * *", "0 0 * * 0", "15 1,2,3 * * *"]),
    timezone=st.sampled_from(["UTC", "Europe/Berlin", "America/Sao_Paulo", "Pacific/Chatham"]),
)
def test_cron_times_strictly_increase_after_start(
    start: datetime, cron: str, timezone: str
) -> None:
    begin = start.replace(tzinfo=UTC)
    times = next_times(cron, timezone, begin, 6)
    instants = [t.astimezone(UTC) for t in times]
    assert instants[0] > begin
    assert all(a < b for a, b in itertools.pairwise(instants))
    assert all(str(t.tzinfo) == timezone for t in times)


# --- stop, errors, lock ------------------------------------------------------------------------


def test_stop_during_a_run_lets_it_finish_and_record(tmp_path: Path) -> None:
    _, records, count = loop("* * * * *", "UTC", utc(2024, 1, 1), limit=1, tmp_path=tmp_path)
    assert count == 1 and len(records) == 1 and records[0].outcome == RunOutcome(deleted=0)


def test_stop_while_sleeping_returns_without_running(tmp_path: Path) -> None:
    clock = FakeClock(utc(2024, 1, 1))
    stop = StopFlag()

    def stop_after_a_while(c: FakeClock) -> None:
        if len(c.sleeps) == 10:
            stop.set("SIGTERM")

    clock.on_sleep = stop_after_a_while
    ran: list[int] = []
    count = run_loop(
        lambda: ran.append(1) or RunOutcome(),
        cron="0 3 * * *",
        timezone="UTC",
        policy="p",
        now=clock.now,
        sleep=clock.sleep,
        stop=stop,
        lock_path=tmp_path / "l",
        on_record=lambda r: None,
    )
    assert count == 0 and ran == [] and len(clock.sleeps) == 10
    assert stop.reason == "SIGTERM"


def test_sleep_until_is_chunked_and_stops_on_the_flag() -> None:
    clock = FakeClock(utc(2024, 1, 1))
    assert sleep_until(
        utc(2024, 1, 1, 0, 0, 3, 500000), now=clock.now, sleep=clock.sleep, stop=StopFlag()
    )
    assert clock.sleeps == [1.0, 1.0, 1.0, 0.5]
    stopped = StopFlag()
    stopped.set()
    assert not sleep_until(utc(2025, 1, 1), now=clock.now, sleep=clock.sleep, stop=stopped)


def test_stop_flag_keeps_the_first_reason() -> None:
    flag = StopFlag()
    assert not flag.is_set()
    flag.set("SIGTERM")
    flag.set("SIGINT")
    assert flag.is_set() and flag.reason == "SIGTERM"


def test_a_failed_run_is_recorded_and_the_loop_goes_on(tmp_path: Path) -> None:
    _, records, count = loop(
        "0 * * * *",
        "UTC",
        utc(2024, 1, 1),
        limit=3,
        tmp_path=tmp_path,
        fail={1: ScheduleError("registry unreachable", hint="check the URL")},
    )
    assert [r.status for r in records] == ["ok", "failed", "ok"]
    assert records[1].error == "registry unreachable\nhint: check the URL"
    assert records[1].outcome is None
    assert count == 3


def test_a_bug_in_run_once_is_recorded_then_raised(tmp_path: Path) -> None:
    records: list[HistoryRecord] = []
    clock = FakeClock(utc(2024, 1, 1))

    def broken() -> RunOutcome:
        raise ZeroDivisionError("boom")

    with pytest.raises(ZeroDivisionError):
        run_loop(
            broken,
            cron="* * * * *",
            timezone="UTC",
            policy="p",
            now=clock.now,
            sleep=clock.sleep,
            stop=StopFlag(),
            lock_path=tmp_path / "l",
            on_record=records.append,
        )
    assert len(records) == 1
    assert records[0].status == "failed"
    assert records[0].error == "internal error: ZeroDivisionError('boom')"


def test_a_tick_whose_lock_is_held_is_skipped_and_recorded(tmp_path: Path) -> None:
    lock = tmp_path / "p.lock"
    clock = FakeClock(utc(2024, 1, 1))
    stop = StopFlag()
    records: list[HistoryRecord] = []
    held = acquire_lock(lock, purpose="apply")
    held.__enter__()

    calls: list[datetime] = []

    def run() -> RunOutcome:
        calls.append(clock.now())
        stop.set()
        return RunOutcome()

    def release_after_first_record(record: HistoryRecord) -> None:
        records.append(record)
        if len(records) == 1:
            held.__exit__(None, None, None)

    run_loop(
        run,
        cron="0 * * * *",
        timezone="UTC",
        policy="p",
        now=clock.now,
        sleep=clock.sleep,
        stop=stop,
        lock_path=lock,
        on_record=release_after_first_record,
    )
    assert [r.status for r in records] == ["skipped", "ok"]
    assert records[0].error is not None and "holds the lock" in records[0].error
    assert "apply" in records[0].error  # who holds it
    assert calls == [utc(2024, 1, 1, 2)]


def test_invalid_cron_or_zone_is_a_schedule_error() -> None:
    with pytest.raises(ScheduleError, match="invalid cron expression"):
        next(cron_times("61 * * * *", "UTC", utc(2024, 1, 1)))
    with pytest.raises(ScheduleError, match="unknown time zone 'Mars/Olympus'"):
        next(cron_times("* * * * *", "Mars/Olympus", utc(2024, 1, 1)))
    with pytest.raises(ScheduleError, match="timezone-aware"):
        next(cron_times("* * * * *", "UTC", datetime(2024, 1, 1)))


# --- run_now (--once) ------------------------------------------------------------------------


def test_run_now_records_one_run_at_the_current_time(tmp_path: Path) -> None:
    clock = FakeClock(utc(2024, 7, 1, 12))
    records: list[HistoryRecord] = []

    def run() -> RunOutcome:
        clock.t += timedelta(seconds=90)
        return RunOutcome(deleted=3, failed=1)

    record = run_now(
        run, policy="p.yaml", now=clock.now, lock_path=tmp_path / "l", on_record=records.append
    )
    assert records == [record]
    assert record.tick == record.started_at == utc(2024, 7, 1, 12)
    assert record.duration_seconds == 90
    assert record.status == "partial" and not record.success


def test_run_now_with_the_lock_held_records_a_skip_and_raises(tmp_path: Path) -> None:
    clock = FakeClock(utc(2024, 7, 1, 12))
    records: list[HistoryRecord] = []
    with acquire_lock(tmp_path / "l"), pytest.raises(LockHeld, match="holds the lock"):
        run_now(
            lambda: pytest.fail("must not run"),
            policy="p",
            now=clock.now,
            lock_path=tmp_path / "l",
            on_record=records.append,
        )
    assert [r.status for r in records] == ["skipped"]


def test_run_now_turns_a_retention_error_into_a_failed_record(tmp_path: Path) -> None:
    def run() -> RunOutcome:
        raise InventoryError("the walk of apps/web did not finish")

    record = run_now(
        run,
        policy="p",
        now=FakeClock(utc(2024, 1, 1)).now,
        lock_path=tmp_path / "l",
        on_record=lambda r: None,
    )
    assert record.status == "failed"
    assert record.error == "the walk of apps/web did not finish"


@pytest.mark.parametrize(
    ("outcome", "error"),
    [
        (RunOutcome(deleted=2, gc_command=("gc",), gc_exit_code=1), "garbage collection exited 1"),
        (
            RunOutcome(deleted=2, gc_command=("gc",), gc_error="timed out after 5 s"),
            "timed out after 5 s",
        ),
        (RunOutcome(deleted=1, error="deletion is disabled (405)"), "deletion is disabled (405)"),
    ],
    ids=["gc-exit", "gc-timeout", "apply-stopped"],
)
def test_a_run_that_returns_with_an_error_is_failed_and_says_why(
    outcome: RunOutcome, error: str, tmp_path: Path
) -> None:
    record = run_now(
        lambda: outcome,
        policy="p",
        now=FakeClock(utc(2024, 1, 1)).now,
        lock_path=tmp_path / "l",
        on_record=lambda r: None,
    )
    assert record.status == "failed" and record.error == error
    assert record.outcome is not None and record.outcome.error == error
    assert record.outcome.deleted == outcome.deleted
    assert HistoryRecord.from_document(record.to_document()) == record
