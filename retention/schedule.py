"""The cron loop behind `retention schedule`: ticks, the per-policy lock, the loop itself.

Runs an injected `run_once()` with an injected clock and sleep, recording each run through
runlog.py. Installs no signal handlers: cli.py sets the `StopFlag` from them.
"""

from __future__ import annotations

import contextlib
import dataclasses
import hashlib
import logging
import os
import re
import socket
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from croniter import croniter

from retention.errors import LockHeld, RetentionError, ScheduleError
from retention.files import try_lock
from retention.runlog import HistoryRecord, RunOutcome, as_utc, iso, status_of
from retention.state import locks_dir

log = logging.getLogger(__name__)

# The longest single sleep: the loop re-reads the clock and the stop flag at least this often, so
# SIGTERM is honoured within a second and a wall-clock jump (suspend, NTP step) is noticed.
MAX_SLEEP_SECONDS = 1.0

# --------------------------------------------------------------------------------------------
# Cron times
# --------------------------------------------------------------------------------------------


def zone(name: str) -> ZoneInfo:
    """The IANA time zone `name`; ScheduleError when unknown."""
    try:
        return ZoneInfo(name)
    except (ZoneInfoNotFoundError, ValueError) as exc:
        raise ScheduleError(
            f"unknown time zone {name!r}", hint="use an IANA name such as UTC or Europe/Berlin"
        ) from exc


def cron_times(cron: str, timezone: str, start: datetime) -> Iterator[datetime]:
    """croniter's own `get_next` sequence for `cron` in `timezone`, strictly after `start`.

    Times are aware datetimes in `timezone`; DST is handled exactly as croniter does (a time that
    a spring-forward skips runs at the first valid time after it; a fall-back repeats the hour).
    """
    if start.tzinfo is None:
        raise ScheduleError("the schedule clock must return timezone-aware datetimes")
    tz = zone(timezone)
    if not croniter.is_valid(cron):
        raise ScheduleError(
            f"invalid cron expression {cron!r}", hint='five fields, e.g. "30 3 * * *"'
        )
    it = croniter(cron, start.astimezone(tz))
    while True:
        yield it.get_next(datetime)


def next_times(cron: str, timezone: str, start: datetime, count: int) -> list[datetime]:
    """The next `count` run times after `start` (what `schedule --next N` prints)."""
    times = cron_times(cron, timezone, start)
    return [next(times) for _ in range(count)]


# --------------------------------------------------------------------------------------------
# Paths and the lock
# --------------------------------------------------------------------------------------------


def lock_path_for(policy_path: str, env: Mapping[str, str]) -> Path:
    """The lock file for a policy: `<state>/locks/<policy stem>-<hash of its absolute path>.lock`.

    Derived from the resolved path, so `./p.yaml` and `/abs/p.yaml` share a lock while two
    `policy.yaml` files in different directories do not.
    """
    resolved = os.path.realpath(policy_path)
    digest = hashlib.sha256(resolved.encode("utf-8")).hexdigest()[:16]
    stem = re.sub(r"[^A-Za-z0-9_.-]", "_", Path(resolved).stem)[:64] or "policy"
    return locks_dir(env) / f"{stem}-{digest}.lock"


@contextlib.contextmanager
def acquire_lock(path: str | os.PathLike[str], *, purpose: str = "run") -> Iterator[Path]:
    """Hold an exclusive `flock` on `path` for the duration of the block; LockHeld if taken.

    Never waits. The file holds who took it (pid, host, time, purpose) for the LockHeld message;
    it is never deleted, since unlinking a lock file races with a process about to lock it.
    The lock dies with the process, so a crash never leaves a stale lock. flock is per open
    file, so two acquisitions in one process also exclude each other.
    """
    target = Path(path)
    try:
        target.parent.mkdir(parents=True, exist_ok=True)
        fd = os.open(target, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o644)
    except OSError as exc:
        raise ScheduleError(f"cannot open lock file {target}: {exc.strerror}") from exc
    try:
        try:
            locked = try_lock(fd)
        except OSError as exc:
            raise ScheduleError(f"cannot lock {target}: {exc.strerror}") from exc
        if not locked:
            holder = _read_holder(fd)
            raise LockHeld(
                f"another retention run holds the lock {target}"
                + (f" ({holder})" if holder else ""),
                hint="wait for it to finish; two runs against one policy never overlap",
            ) from None
        owner = (
            f"pid {os.getpid()} on {socket.gethostname()}, {purpose}, "
            f"since {datetime.now(UTC).isoformat(timespec='seconds')}\n"
        )
        with contextlib.suppress(OSError):  # the holder note is informative only
            os.ftruncate(fd, 0)
            os.pwrite(fd, owner.encode("utf-8"), 0)
        yield target
    finally:
        os.close(fd)  # closing the descriptor releases the flock


def _read_holder(fd: int) -> str:
    try:
        return os.pread(fd, 512, 0).decode("utf-8", "replace").strip()
    except OSError:
        return ""


# --------------------------------------------------------------------------------------------
# The loop
# --------------------------------------------------------------------------------------------


@dataclass(slots=True)
class StopFlag:
    """Set by cli.py's SIGTERM/SIGINT handlers; the loop finishes the run in flight and returns.

    A plain attribute, not a threading.Event: Event.set takes a lock, which a signal handler
    interrupting the main thread inside Event.wait could deadlock on.
    """

    reason: str | None = field(default=None)

    def set(self, reason: str = "stop requested") -> None:
        if self.reason is None:
            self.reason = reason

    def is_set(self) -> bool:
        return self.reason is not None


Clock = Callable[[], datetime]
Sleep = Callable[[float], None]
RunOnce = Callable[[], RunOutcome]
OnRecord = Callable[[HistoryRecord], None]


def run_now(
    run_once: RunOnce,
    *,
    policy: str,
    now: Clock,
    lock_path: str | os.PathLike[str],
    on_record: OnRecord,
    tick: datetime | None = None,
) -> HistoryRecord:
    """One run under the lock (`schedule --once`), recorded; LockHeld propagates after recording.

    A RetentionError from `run_once` becomes a failed record (the caller decides the exit code);
    any other exception is recorded and re-raised, since it is a bug.
    """
    started = now()
    try:
        with acquire_lock(lock_path, purpose=f"schedule {policy}"):
            record = _attempt(
                run_once,
                policy=policy,
                tick=tick or started,
                now=now,
                start=started,
                on_record=on_record,
            )
    except LockHeld as exc:  # recorded, then raised: the caller reports it once
        on_record(
            HistoryRecord(
                policy=policy,
                tick=tick or started,
                started_at=started,
                finished_at=now(),
                status="skipped",
                error=exc.message,
            )
        )
        raise
    on_record(record)
    return record


def _attempt(
    run_once: RunOnce,
    *,
    policy: str,
    tick: datetime,
    now: Clock,
    start: datetime,
    on_record: OnRecord,
) -> HistoryRecord:
    try:
        outcome = run_once()
    except RetentionError as exc:
        log.error("run failed: %s", exc.diagnostics())
        return HistoryRecord(policy, tick, start, now(), "failed", error=exc.diagnostics())
    except Exception as exc:
        # A bug: leave a trace in the history before the traceback ends the process.
        on_record(
            HistoryRecord(policy, tick, start, now(), "failed", error=f"internal error: {exc!r}")
        )
        raise
    if outcome.error is None and outcome.gc_failed:
        gc_error = outcome.gc_error or f"garbage collection exited {outcome.gc_exit_code}"
        outcome = dataclasses.replace(outcome, error=gc_error)
    return HistoryRecord(
        policy, tick, start, now(), status_of(outcome), outcome=outcome, error=outcome.error
    )


def sleep_until(target: datetime, *, now: Clock, sleep: Sleep, stop: StopFlag) -> bool:
    """Sleep until `target` in short steps; False as soon as `stop` is set."""
    goal = as_utc(target)
    while not stop.is_set():
        remaining = (goal - as_utc(now())).total_seconds()
        if remaining <= 0:
            return True
        sleep(min(remaining, MAX_SLEEP_SECONDS))
    return False


def run_loop(
    run_once: RunOnce,
    *,
    cron: str,
    timezone: str,
    policy: str,
    now: Clock,
    sleep: Sleep,
    stop: StopFlag,
    lock_path: str | os.PathLike[str],
    on_record: OnRecord,
) -> int:
    """Run `run_once` at every cron tick until `stop` is set; returns the number of runs.

    The first run is at the first tick after start. A run that ends after later ticks have passed
    skips them: they are logged and listed in that run's record (`missed_ticks`), and the loop
    waits for the next tick still in the future. A process that wakes late (suspend) runs the
    overdue tick once and skips the others the same way. A tick whose lock is held by another run
    is skipped and recorded as such. The stop flag is read between runs: the run in flight always
    finishes and is recorded.
    """
    ticks = cron_times(cron, timezone, now())
    tick = next(ticks)
    runs = 0
    while True:
        log.info("next run at %s", iso(tick))
        if not sleep_until(tick, now=now, sleep=sleep, stop=stop):
            break
        started = now()
        late = (as_utc(started) - as_utc(tick)).total_seconds()
        if late > 60:
            log.warning("run for %s starts %.0f s late", iso(tick), late)
        try:
            with acquire_lock(lock_path, purpose=f"schedule {policy}"):
                record = _attempt(
                    run_once,
                    policy=policy,
                    tick=tick,
                    now=now,
                    start=started,
                    on_record=on_record,
                )
            runs += 1
        except LockHeld as exc:
            log.warning("run for %s skipped: %s", iso(tick), exc.message)
            record = HistoryRecord(policy, tick, started, now(), "skipped", error=exc.message)
        following = next(ticks)
        missed: list[datetime] = []
        ended = as_utc(record.finished_at)
        while as_utc(following) < ended:
            missed.append(following)
            following = next(ticks)
        if missed:
            log.warning(
                "run for %s ended at %s, after %d later tick(s); skipped: %s",
                iso(tick),
                iso(record.finished_at),
                len(missed),
                ", ".join(iso(t) for t in missed),
            )
            record = dataclasses.replace(record, missed_ticks=tuple(missed))
        on_record(record)
        tick = following
        if stop.is_set():
            break
    if stop.reason:
        log.info("schedule stopped: %s", stop.reason)
    return runs
