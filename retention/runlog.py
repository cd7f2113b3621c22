"""The run history (JSON lines) and metrics (Prometheus text format) of `retention schedule`:
what one scheduled run did, as a `HistoryRecord`, appended and read back torn-line safe.

Imports errors, files and state (plus the standard library); knows nothing of the cron loop.
"""

from __future__ import annotations

import contextlib
import json
import logging
import math
import os
import re
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, Literal

from retention.errors import ScheduleError
from retention.files import atomic_write
from retention.state import history_path

# the name these records were logged under before the split: `--log-format json` lines keep it
log = logging.getLogger("retention.schedule")

RunStatus = Literal["ok", "partial", "failed", "skipped"]


def as_utc(moment: datetime) -> datetime:
    """`moment` in UTC. Aware datetimes sharing one tzinfo compare and subtract as wall clock
    times, ignoring `fold`: 02:30+02:00 == 02:30+01:00 on a fall-back day. Always compare in UTC.
    """
    return moment.astimezone(UTC)


def iso(moment: datetime) -> str:
    """ISO 8601 with the offset the datetime has (the history keeps the schedule's zone)."""
    return moment.isoformat()


def default_history_path(env: Mapping[str, str]) -> Path:
    return history_path(env)


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
    # untags (settings.untag): planned, done (untagged, already gone or resumed), skipped as
    # stale or kept by the policy now, failed
    untags_planned: int = 0
    untagged: int = 0
    untags_skipped: int = 0
    untags_failed: int = 0
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
class HistoryRecord:
    """One line of the run history: a run, its outcome or error, and the ticks it made us miss."""

    policy: str
    tick: datetime  # the cron time this run was for (the start time for `--once`)
    started_at: datetime
    finished_at: datetime
    status: RunStatus
    outcome: RunOutcome | None = None
    error: str | None = None
    missed_ticks: tuple[datetime, ...] = ()

    @property
    def success(self) -> bool:
        return self.status == "ok"

    @property
    def duration_seconds(self) -> float:
        return max(0.0, (as_utc(self.finished_at) - as_utc(self.started_at)).total_seconds())

    def to_document(self) -> dict[str, Any]:
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
            "tick": iso(self.tick),
            "start": iso(self.started_at),
            "end": iso(self.finished_at),
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
            **({} if o is None or not o.untags_planned else {"untags": _untags_document(o)}),
            "deleted": None if o is None else o.deleted,
            "stale": None if o is None else o.stale,
            "gone": None if o is None else o.gone,
            "failed": None if o is None else o.failed,
            "bytes": None if o is None else o.bytes_deleted,
            "gc": gc,
            "warnings": [] if o is None else list(o.warnings),
            "error": self.error,
            "missed_ticks": [iso(t) for t in self.missed_ticks],
        }

    @classmethod
    def from_document(cls, doc: Any) -> HistoryRecord:
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
                    **_untags_from(doc.get("untags")),
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


def _untags_document(o: RunOutcome) -> dict[str, int]:
    # written only for a plan with untags, so the lines of every other run stay as they were
    return {
        "planned": o.untags_planned,
        "untagged": o.untagged,
        "skipped": o.untags_skipped,
        "failed": o.untags_failed,
    }


def _untags_from(doc: Any) -> dict[str, int]:
    """The untag counts of a history line; none (all 0) in a line without `untags`."""
    if doc is None:
        return {}
    fields = {"planned": "untags_planned", "untagged": "untagged", "skipped": "untags_skipped",
              "failed": "untags_failed"}  # fmt: skip
    if not isinstance(doc, dict) or set(doc) != set(fields):
        raise ValueError(f"untags must be an object with {sorted(fields)}")
    counts = {}
    for key, name in fields.items():
        value = doc[key]
        if not isinstance(value, int) or isinstance(value, bool) or value < 0:
            raise ValueError(f"untags.{key} must be a whole number")
        counts[name] = value
    return counts


def status_of(outcome: RunOutcome) -> RunStatus:
    """ok; partial when some deletions or untags failed; failed when apply stopped or gc
    failed."""
    if outcome.gc_failed or outcome.error is not None:
        return "failed"
    if outcome.failed or outcome.untags_failed:
        return "partial"
    return "ok"


# --------------------------------------------------------------------------------------------
# History (JSON lines) and metrics (Prometheus text format)
# --------------------------------------------------------------------------------------------


def append_history(path: str | os.PathLike[str], record: HistoryRecord) -> None:
    """Append one record as one line, flushed and fsynced.

    The line is written with a single `write` on an O_APPEND descriptor, so a process killed by a
    signal leaves either the whole line or none of it. A power cut can still tear the last line;
    `read_history` skips such a line, and the next append starts on a fresh line so that a torn
    fragment never merges with a record.
    """
    target = Path(path)
    line = json.dumps(record.to_document(), sort_keys=True, separators=(",", ":")) + "\n"
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


def read_history(path: str | os.PathLike[str]) -> list[HistoryRecord]:
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
            records.append(HistoryRecord.from_document(json.loads(line)))
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
    ("retention_tags_untag_planned", "gauge", "Tags the last run's plan would remove alone."),
    ("retention_tags_untagged", "gauge", "Tags the last run removed alone (their image kept)."),
    ("retention_tags_untag_failed", "gauge", "Untags that failed in the last run."),
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
    record: HistoryRecord, policy: str, previous: Mapping[str, float] | None = None
) -> str:
    """Prometheus text exposition of the last run, counters continued from `previous`."""
    prev = previous or {}
    o = record.outcome or RunOutcome()
    finished = as_utc(record.finished_at).timestamp()
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
        "retention_tags_untag_planned": o.untags_planned,
        "retention_tags_untagged": o.untagged,
        "retention_tags_untag_failed": o.untags_failed,
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


def write_metrics(path: str | os.PathLike[str], record: HistoryRecord, policy: str) -> None:
    """Rewrite the metrics file atomically: temp file in the same directory, fsync, rename.

    The temp file's name neither ends in `.prom` nor is visible to a `*.prom` glob, so the node
    exporter's textfile collector never reads it half-written; mode 0644 so it can read the result.
    """
    target = Path(path)
    text = render_metrics(record, policy, read_metrics(path, policy))
    try:
        atomic_write(target, text.encode("utf-8"), mode=0o644, suffix=".tmp", make_parents=True)
    except OSError as exc:
        raise ScheduleError(f"cannot write {target}: {exc.strerror}") from exc


@dataclass(frozen=True, slots=True)
class RunLog:
    """Where records go: the history file and, optionally, the metrics file.

    A skipped run (the lock was held) goes to the history only: it did not run, so the metrics
    keep describing the last run that did.
    """

    policy: str
    history: Path
    metrics: Path | None = None

    def __call__(self, record: HistoryRecord) -> None:
        append_history(self.history, record)
        if self.metrics is not None and record.status != "skipped":
            write_metrics(self.metrics, record, self.policy)
