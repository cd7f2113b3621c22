"""The cron loop behind `retention schedule`: ticks, the per-policy lock, run history and metrics.

Runs an injected `run_once()` with an injected clock and sleep; imports errors and croniter only
(plus the standard library). Installs no signal handlers: cli.py sets the `StopFlag` from them.
"""

from __future__ import annotations

import contextlib
import dataclasses
import errno
import fcntl
import hashlib
import json
import logging
import math
import os
import re
import socket
import tempfile
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, Literal
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from croniter import croniter

from retention.errors import LockHeld, RetentionError, ScheduleError

log = logging.getLogger(__name__)

# The longest single sleep: the loop re-reads the clock and the stop flag at least this often, so
# SIGTERM is honoured within a second and a wall-clock jump (suspend, NTP step) is noticed.
MAX_SLEEP_SECONDS = 1.0

Status = Literal["ok", "partial", "failed", "skipped"]


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


def _utc(moment: datetime) -> datetime:
    # Aware datetimes sharing one tzinfo compare and subtract as wall clock times, ignoring
    # `fold`: 02:30+02:00 == 02:30+01:00 on a fall-back day. Always compare in UTC.
    return moment.astimezone(UTC)


def _iso(moment: datetime) -> str:
    return moment.isoformat()


# --------------------------------------------------------------------------------------------
# Paths and the lock
# --------------------------------------------------------------------------------------------


def state_dir(env: Mapping[str, str]) -> Path:
    """`$XDG_STATE_HOME/retention`, or `~/.local/state/retention` (XDG base directory spec)."""
    base = env.get("XDG_STATE_HOME", "")
    if not base or not os.path.isabs(base):  # the spec says relative values are to be ignored
        home = env.get("HOME") or os.path.expanduser("~")
        base = os.path.join(home, ".local", "state")
    return Path(base) / "retention"


def default_history_path(env: Mapping[str, str]) -> Path:
    return state_dir(env) / "history.jsonl"


def lock_path_for(policy_path: str, env: Mapping[str, str]) -> Path:
    """The lock file for a policy: `<state>/locks/<policy stem>-<hash of its absolute path>.lock`.

    Derived from the resolved path, so `./p.yaml` and `/abs/p.yaml` share a lock while two
    `policy.yaml` files in different directories do not.
    """
    resolved = os.path.realpath(policy_path)
    digest = hashlib.sha256(resolved.encode("utf-8")).hexdigest()[:16]
    stem = re.sub(r"[^A-Za-z0-9_.-]", "_", Path(resolved).stem)[:64] or "policy"
    return state_dir(env) / "locks" / f"{stem}-{digest}.lock"


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
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError as exc:
            if exc.errno not in (errno.EWOULDBLOCK, errno.EAGAIN, errno.EACCES):
                raise ScheduleError(f"cannot lock {target}: {exc.strerror}") from exc
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
# Run records
# --------------------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class RunOutcome:
    """What one plan + apply (+ garbage collection) did; returned by the injected `run_once`."""

    repositories: int = 0
    tags: int = 0
    images: int = 0
    tags_planned: int = 0  # the plan's tags_deleted
    images_planned: int = 0  # the plan's images_deleted
    bytes_reclaimable: int = 0
    deleted: int = 0
    stale: int = 0
    gone: int = 0  # already deleted by someone else (404 on DELETE)
    failed: int = 0
    bytes_deleted: int = 0
    gc_command: tuple[str, ...] | None = None  # None: garbage collection did not run
    gc_exit_code: int | None = None
    gc_output: str | None = None
    gc_bytes_freed: int | None = None
    gc_error: str | None = None  # could not start, timed out
    warnings: tuple[str, ...] = ()
    error: str | None = None  # why the run failed although it returned (apply stopped, gc failed)

    @property
    def gc_failed(self) -> bool:
        return self.gc_command is not None and (self.gc_exit_code != 0 or self.gc_error is not None)


@dataclass(frozen=True, slots=True)
class RunRecord:
    """One line of the run history: a run, its outcome or error, and the ticks it made us miss."""

    policy: str
    tick: datetime  # the cron time this run was for (the start time for `--once`)
    started_at: datetime
    finished_at: datetime
    status: Status
    outcome: RunOutcome | None = None
    error: str | None = None
    missed_ticks: tuple[datetime, ...] = ()

    @property
    def success(self) -> bool:
        return self.status == "ok"

    @property
    def duration_seconds(self) -> float:
        return max(0.0, (_utc(self.finished_at) - _utc(self.started_at)).total_seconds())

    def to_json(self) -> dict[str, Any]:
        o = self.outcome
        gc: dict[str, Any] | None = None
        if o is not None and o.gc_command is not None:
            gc = {
                "command": list(o.gc_command),
                "exit_code": o.gc_exit_code,
                "output": o.gc_output,
                "bytes_freed": o.gc_bytes_freed,
                "error": o.gc_error,
            }
        return {
            "format_version": 1,
            "policy": self.policy,
            "tick": _iso(self.tick),
            "start": _iso(self.started_at),
            "end": _iso(self.finished_at),
            "duration_seconds": round(self.duration_seconds, 3),
            "status": self.status,
            "success": self.success,
            "plan": None
            if o is None
            else {
                "repositories": o.repositories,
                "tags": o.tags,
                "images": o.images,
                "tags_deleted": o.tags_planned,
                "images_deleted": o.images_planned,
                "bytes_reclaimable": o.bytes_reclaimable,
            },
            "deleted": None if o is None else o.deleted,
            "stale": None if o is None else o.stale,
            "gone": None if o is None else o.gone,
            "failed": None if o is None else o.failed,
            "bytes": None if o is None else o.bytes_deleted,
            "gc": gc,
            "warnings": [] if o is None else list(o.warnings),
            "error": self.error,
            "missed_ticks": [_iso(t) for t in self.missed_ticks],
        }

    @classmethod
    def from_json(cls, doc: Any) -> RunRecord:
        """Parse one history line; ScheduleError naming the problem when it is not a record."""
        try:
            if doc["format_version"] != 1:
                raise ScheduleError(f"unsupported history format_version {doc['format_version']!r}")
            outcome = None
            if doc["plan"] is not None:
                plan, gc = doc["plan"], doc["gc"] or {}
                outcome = RunOutcome(
                    repositories=int(plan["repositories"]),
                    tags=int(plan["tags"]),
                    images=int(plan["images"]),
                    tags_planned=int(plan["tags_deleted"]),
                    images_planned=int(plan["images_deleted"]),
                    bytes_reclaimable=int(plan["bytes_reclaimable"]),
                    deleted=int(doc["deleted"]),
                    stale=int(doc["stale"]),
                    gone=int(doc["gone"]),
                    failed=int(doc["failed"]),
                    bytes_deleted=int(doc["bytes"]),
                    gc_command=tuple(gc["command"]) if gc else None,
                    gc_exit_code=gc.get("exit_code"),
                    gc_output=gc.get("output"),
                    gc_bytes_freed=gc.get("bytes_freed"),
                    gc_error=gc.get("error"),
                    warnings=tuple(str(w) for w in doc["warnings"]),
                    error=doc["error"],
                )
            status = doc["status"]
            if status not in ("ok", "partial", "failed", "skipped"):
                raise ValueError(f"unknown status {status!r}")
            return cls(
                policy=str(doc["policy"]),
                tick=datetime.fromisoformat(doc["tick"]),
                started_at=datetime.fromisoformat(doc["start"]),
                finished_at=datetime.fromisoformat(doc["end"]),
                status=status,
                outcome=outcome,
                error=doc["error"],
                missed_ticks=tuple(datetime.fromisoformat(t) for t in doc["missed_ticks"]),
            )
        except (KeyError, TypeError, ValueError, AttributeError) as exc:
            raise ScheduleError(f"not a run record: {exc!r}") from exc


def status_of(outcome: RunOutcome) -> Status:
    """ok; partial when some deletions failed; failed when apply stopped or gc failed."""
    if outcome.gc_failed or outcome.error is not None:
        return "failed"
    if outcome.failed:
        return "partial"
    return "ok"


# --------------------------------------------------------------------------------------------
# History (JSON lines) and metrics (Prometheus text format)
# --------------------------------------------------------------------------------------------


def append_history(path: str | os.PathLike[str], record: RunRecord) -> None:
    """Append one record as one line, flushed and fsynced.

    The line is written with a single `write` on an O_APPEND descriptor, so a process killed by a
    signal leaves either the whole line or none of it. A power cut can still tear the last line;
    `read_history` skips such a line, and the next append starts on a fresh line so that a torn
    fragment never merges with a record.
    """
    target = Path(path)
    line = json.dumps(record.to_json(), sort_keys=True, separators=(",", ":")) + "\n"
    data = line.encode("utf-8")
    try:
        target.parent.mkdir(parents=True, exist_ok=True)
        fd = os.open(target, os.O_WRONLY | os.O_APPEND | os.O_CREAT | os.O_CLOEXEC, 0o644)
    except OSError as exc:
        raise ScheduleError(f"cannot open run history {target}: {exc.strerror}") from exc
    try:
        size = os.fstat(fd).st_size
        if size and _last_byte(target, size) != b"\n":
            data = b"\n" + data  # a torn previous line: end it so this record stands alone
        view = memoryview(data)
        while view:  # one write in practice; loops only on a short write (a full disk)
            written = os.write(fd, view)
            view = view[written:]
        os.fsync(fd)
    except OSError as exc:
        raise ScheduleError(f"cannot append to run history {target}: {exc.strerror}") from exc
    finally:
        os.close(fd)


def _last_byte(path: Path, size: int) -> bytes:
    with path.open("rb") as fh:
        fh.seek(size - 1)
        return fh.read(1)


def read_history(path: str | os.PathLike[str]) -> list[RunRecord]:
    """Every complete record in a history file; torn or foreign lines are skipped and logged."""
    target = Path(path)
    try:
        raw = target.read_bytes()
    except FileNotFoundError:
        return []
    except OSError as exc:
        raise ScheduleError(f"cannot read run history {target}: {exc.strerror}") from exc
    records = []
    lines = raw.split(b"\n")
    for number, line in enumerate(lines, start=1):
        if not line.strip():
            continue
        try:
            records.append(RunRecord.from_json(json.loads(line)))
        except (ValueError, ScheduleError) as exc:
            last = number == len(lines)  # no newline after it: the write never finished
            log.warning(
                "%s:%d: skipped %s line: %s",
                target,
                number,
                "a torn last" if last else "an unreadable",
                exc,
            )
    return records


_METRICS: tuple[tuple[str, str, str], ...] = (
    ("retention_last_run_timestamp_seconds", "gauge", "When the last run finished (Unix time)."),
    ("retention_last_run_duration_seconds", "gauge", "How long the last run took."),
    ("retention_last_run_success", "gauge", "1 when the last run completed without failures."),
    (
        "retention_last_success_timestamp_seconds",
        "gauge",
        "When the last successful run finished (Unix time); 0 if none yet.",
    ),
    ("retention_images_planned", "gauge", "Images the last run's plan would delete."),
    ("retention_images_deleted", "gauge", "Images (manifests) the last run deleted."),
    ("retention_images_stale", "gauge", "Plan entries the last run skipped as stale."),
    ("retention_images_failed", "gauge", "Deletions that failed in the last run."),
    ("retention_bytes_reclaimable", "gauge", "Bytes the last run's plan said deletion frees."),
    ("retention_bytes_deleted", "gauge", "Bytes of the images the last run deleted."),
    (
        "retention_gc_bytes_freed",
        "gauge",
        "Bytes the last garbage collection freed (storage walk before/after); 0 if not measured.",
    ),
    ("retention_runs_total", "counter", "Runs recorded in this metrics file."),
    ("retention_failures_total", "counter", "Runs that failed or were partial."),
    ("retention_missed_ticks_total", "counter", "Cron ticks skipped because a run overran."),
)

_COUNTERS = (
    "retention_runs_total",
    "retention_failures_total",
    "retention_missed_ticks_total",
    "retention_last_success_timestamp_seconds",
)

_SAMPLE = re.compile(r'^([a-z_]+)\{policy="((?:[^"\\]|\\.)*)"\} (\S+)$')


def _label(value: str) -> str:
    # Prometheus text format: backslash, double quote and newline are escaped in label values.
    return value.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n")


def _number(value: float) -> str:
    if value == int(value) and abs(value) < 2**53:
        return str(int(value))
    return repr(value)


def read_metrics(path: str | os.PathLike[str], policy: str) -> dict[str, float]:
    """The samples for `policy` in a metrics file we wrote; {} when absent or unreadable.

    Counters and the last-success time carry over from one process to the next through this file
    (a CronJob or a timer starts a fresh process for every run).
    """
    try:
        text = Path(path).read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError):
        return {}
    values: dict[str, float] = {}
    for line in text.splitlines():
        m = _SAMPLE.match(line)
        if m and m.group(2) == _label(policy):
            with contextlib.suppress(ValueError):
                number = float(m.group(3))
                if math.isfinite(number):
                    values[m.group(1)] = number
    return values


def render_metrics(
    record: RunRecord, policy: str, previous: Mapping[str, float] | None = None
) -> str:
    """Prometheus text exposition of the last run, counters continued from `previous`."""
    prev = previous or {}
    o = record.outcome or RunOutcome()
    finished = _utc(record.finished_at).timestamp()
    values: dict[str, float] = {
        "retention_last_run_timestamp_seconds": finished,
        "retention_last_run_duration_seconds": round(record.duration_seconds, 3),
        "retention_last_run_success": 1 if record.success else 0,
        "retention_last_success_timestamp_seconds": finished
        if record.success
        else prev.get("retention_last_success_timestamp_seconds", 0),
        "retention_images_planned": o.images_planned,
        "retention_images_deleted": o.deleted,
        "retention_images_stale": o.stale,
        "retention_images_failed": o.failed,
        "retention_bytes_reclaimable": o.bytes_reclaimable,
        "retention_bytes_deleted": o.bytes_deleted,
        "retention_gc_bytes_freed": o.gc_bytes_freed or 0,
        "retention_runs_total": prev.get("retention_runs_total", 0) + 1,
        "retention_failures_total": prev.get("retention_failures_total", 0)
        + (0 if record.success else 1),
        "retention_missed_ticks_total": prev.get("retention_missed_ticks_total", 0)
        + len(record.missed_ticks),
    }
    label = f'{{policy="{_label(policy)}"}}'
    lines = []
    for name, kind, help_text in _METRICS:
        lines += [
            f"# HELP {name} {help_text}",
            f"# TYPE {name} {kind}",
            f"{name}{label} {_number(values[name])}",
        ]
    return "\n".join(lines) + "\n"


def write_metrics(path: str | os.PathLike[str], record: RunRecord, policy: str) -> None:
    """Rewrite the metrics file atomically: temp file in the same directory, fsync, rename."""
    text = render_metrics(record, policy, read_metrics(path, policy))
    atomic_write(Path(path), text.encode("utf-8"))


def atomic_write(target: Path, data: bytes) -> None:
    """Replace `target` with `data` so that readers see the old file or the new one, never a mix.

    The temp file's name neither ends in `.prom` nor is visible to a `*.prom` glob, so the node
    exporter's textfile collector never reads it half-written; mode 0644 so it can read the result.
    """
    try:
        target.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(prefix=f".{target.name}.", suffix=".tmp", dir=target.parent)
    except OSError as exc:
        raise ScheduleError(f"cannot write {target}: {exc.strerror}") from exc
    try:
        with os.fdopen(fd, "wb") as fh:
            os.fchmod(fh.fileno(), 0o644)
            fh.write(data)
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, target)
        _fsync_dir(target.parent)
    except OSError as exc:
        Path(tmp).unlink(missing_ok=True)
        raise ScheduleError(f"cannot write {target}: {exc.strerror}") from exc
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def _fsync_dir(directory: Path) -> None:
    # The rename is durable only once the directory entry is; some filesystems refuse, harmlessly.
    with contextlib.suppress(OSError):
        fd = os.open(directory, os.O_RDONLY | os.O_DIRECTORY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)


@dataclass(frozen=True, slots=True)
class RunLog:
    """Where records go: the history file and, optionally, the metrics file.

    A skipped run (the lock was held) goes to the history only: it did not run, so the metrics
    keep describing the last run that did.
    """

    policy: str
    history: Path
    metrics: Path | None = None

    def __call__(self, record: RunRecord) -> None:
        append_history(self.history, record)
        if self.metrics is not None and record.status != "skipped":
            write_metrics(self.metrics, record, self.policy)


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
OnRecord = Callable[[RunRecord], None]


def run_now(
    run_once: RunOnce,
    *,
    policy: str,
    now: Clock,
    lock_path: str | os.PathLike[str],
    on_record: OnRecord,
    tick: datetime | None = None,
) -> RunRecord:
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
            RunRecord(
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
) -> RunRecord:
    try:
        outcome = run_once()
    except RetentionError as exc:
        log.error("run failed: %s", exc.diagnostics())
        return RunRecord(policy, tick, start, now(), "failed", error=exc.diagnostics())
    except Exception as exc:
        # A bug: leave a trace in the history before the traceback ends the process.
        on_record(RunRecord(policy, tick, start, now(), "failed", error=f"internal error: {exc!r}"))
        raise
    if outcome.error is None and outcome.gc_failed:
        gc_error = outcome.gc_error or f"garbage collection exited {outcome.gc_exit_code}"
        outcome = dataclasses.replace(outcome, error=gc_error)
    return RunRecord(
        policy, tick, start, now(), status_of(outcome), outcome=outcome, error=outcome.error
    )


def sleep_until(target: datetime, *, now: Clock, sleep: Sleep, stop: StopFlag) -> bool:
    """Sleep until `target` in short steps; False as soon as `stop` is set."""
    goal = _utc(target)
    while not stop.is_set():
        remaining = (goal - _utc(now())).total_seconds()
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
        log.info("next run at %s", _iso(tick))
        if not sleep_until(tick, now=now, sleep=sleep, stop=stop):
            break
        started = now()
        late = (_utc(started) - _utc(tick)).total_seconds()
        if late > 60:
            log.warning("run for %s starts %.0f s late", _iso(tick), late)
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
            log.warning("run for %s skipped: %s", _iso(tick), exc.message)
            record = RunRecord(policy, tick, started, now(), "skipped", error=exc.message)
        following = next(ticks)
        missed: list[datetime] = []
        ended = _utc(record.finished_at)
        while _utc(following) < ended:
            missed.append(following)
            following = next(ticks)
        if missed:
            log.warning(
                "run for %s ended at %s, after %d later tick(s); skipped: %s",
                _iso(tick),
                _iso(record.finished_at),
                len(missed),
                ", ".join(_iso(t) for t in missed),
            )
            record = dataclasses.replace(record, missed_ticks=tuple(missed))
        on_record(record)
        tick = following
        if stop.is_set():
            break
    if stop.reason:
        log.info("schedule stopped: %s", stop.reason)
    return runs
