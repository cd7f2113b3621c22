"""The apply journal: JSON lines written around every DELETE and every untag, so a re-run
resumes and `restore` can put deleted manifests back and re-point untagged tags.

Imports `errors`, `files`, `state` and `text` (plus the standard library). Each record is one line,
written with one `write()` on an O_APPEND file, then flushed and fsynced before the caller goes on.
The journal never holds credentials: the registry URL is stored without userinfo and nothing else
comes from config.
"""

from __future__ import annotations

import base64
import binascii
import json
import logging
import os
import re
import threading
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, Literal, Self
from urllib.parse import urlsplit

from retention.closing import Closing
from retention.errors import JournalError, LockHeld
from retention.files import fsync_dir, try_lock, unlock
from retention.state import journal_dir
from retention.text import TIME_FORMAT, format_time
from retention.urls import registry_key

log = logging.getLogger(__name__)

JOURNAL_VERSION = 1

# kept: the policy, evaluated again at apply time, keeps it (never deleted; a re-run re-checks)
OutcomeKind = Literal["done", "gone", "stale", "kept", "failed"]
OUTCOME_KINDS: frozenset[str] = frozenset({"done", "gone", "stale", "kept", "failed"})
# An entry whose latest outcome is one of these needs no more work on a re-run.
TERMINAL_KINDS: frozenset[str] = frozenset({"done", "gone"})

_SAFE_NAME = re.compile(r"[^A-Za-z0-9._-]+")

Key = tuple[str, str]  # (repository, digest)
TagKey = tuple[str, str]  # (repository, tag): an untag


def _parse_time(text: str, where: str) -> datetime:
    try:
        return datetime.strptime(text, TIME_FORMAT).replace(tzinfo=UTC)
    except ValueError as exc:
        raise JournalError(f"{where}: invalid time {text!r}") from exc


def _utc_now() -> datetime:
    return datetime.now(UTC)


def default_journal_path(registry_url: str, plan_sha256: str, env: Mapping[str, str]) -> Path:
    """`$XDG_STATE_HOME/retention/journal/<registry-host>-<plan sha256 prefix>.jsonl`.

    XDG_STATE_HOME defaults to ~/.local/state (XDG Base Directory spec); the port is kept in the
    name (with `_` for `:`) so two registries on one host get two journals.
    """
    parts = urlsplit(registry_url)
    host = parts.hostname or "registry"
    if parts.port:
        host = f"{host}_{parts.port}"
    digest = plan_sha256.removeprefix("sha256:")
    name = f"{_SAFE_NAME.sub('_', host)}-{digest[:12]}.jsonl"
    return journal_dir(env) / name


@dataclass(frozen=True, slots=True)
class RunRecord:
    """Written when an apply starts writing to the journal."""

    registry: str
    plan_sha256: str
    policy_path: str
    at: datetime


@dataclass(frozen=True, slots=True)
class IntentRecord:
    """Written just before a DELETE: everything `restore` needs to put the manifest back."""

    registry: str
    repository: str
    digest: str
    media_type: str
    size: int  # the bytes the plan said this entry frees
    tags: tuple[str, ...]  # the tags that pointed at the digest when it was deleted
    parent: str | None  # the index digest of a platform manifest
    raw: bytes = field(repr=False)  # the manifest exactly as the registry served it
    at: datetime

    @property
    def key(self) -> Key:
        return (self.repository, self.digest)


@dataclass(frozen=True, slots=True)
class OutcomeRecord:
    """Written after a DELETE (done, gone, failed) or instead of one (stale, gone, failed)."""

    kind: OutcomeKind
    repository: str
    digest: str
    reason: str | None
    at: datetime

    @property
    def key(self) -> Key:
        return (self.repository, self.digest)


@dataclass(frozen=True, slots=True)
class UntagIntentRecord:
    """Written before an untag touches the registry: what `restore` needs to point the tag at its
    image again, and the throw-away manifest a resumed run must not leave behind.

    `digest`, `media_type` and `raw` are the image the tag pointed at (None for a dangling tag);
    `throwaway` is the digest of the manifest the throw-away method pushes to the tag (None for
    the delete-tag method)."""

    registry: str
    repository: str
    tag: str
    digest: str | None
    media_type: str | None
    raw: bytes | None = field(repr=False)
    method: str  # "delete-tag" or "throw-away"
    throwaway: str | None
    at: datetime

    @property
    def key(self) -> TagKey:
        return (self.repository, self.tag)


@dataclass(frozen=True, slots=True)
class UntagOutcomeRecord:
    """Written after an untag (done, gone, failed) or instead of one (stale, kept, failed)."""

    kind: OutcomeKind
    repository: str
    tag: str
    reason: str | None
    at: datetime

    @property
    def key(self) -> TagKey:
        return (self.repository, self.tag)


Record = RunRecord | IntentRecord | OutcomeRecord | UntagIntentRecord | UntagOutcomeRecord


def to_document(record: Record) -> dict[str, Any]:
    if isinstance(record, RunRecord):
        return {
            "record": "run",
            "version": JOURNAL_VERSION,
            "registry": record.registry,
            "plan_sha256": record.plan_sha256,
            "policy": record.policy_path,
            "at": format_time(record.at),
        }
    if isinstance(record, IntentRecord):
        return {
            "record": "intent",
            "registry": record.registry,
            "repository": record.repository,
            "digest": record.digest,
            "media_type": record.media_type,
            "size": record.size,
            "tags": list(record.tags),
            "parent": record.parent,
            "manifest": base64.b64encode(record.raw).decode("ascii"),
            "at": format_time(record.at),
        }
    if isinstance(record, UntagIntentRecord):
        return {
            "record": "untag",
            "registry": record.registry,
            "repository": record.repository,
            "tag": record.tag,
            "digest": record.digest,
            "media_type": record.media_type,
            "manifest": None
            if record.raw is None
            else base64.b64encode(record.raw).decode("ascii"),
            "method": record.method,
            "throwaway": record.throwaway,
            "at": format_time(record.at),
        }
    if isinstance(record, UntagOutcomeRecord):
        return {
            "record": "untag-outcome",
            "outcome": record.kind,
            "repository": record.repository,
            "tag": record.tag,
            "reason": record.reason,
            "at": format_time(record.at),
        }
    return {
        "record": record.kind,
        "repository": record.repository,
        "digest": record.digest,
        "reason": record.reason,
        "at": format_time(record.at),
    }


def to_json(record: Record) -> bytes:
    """One journal line: compact JSON with sorted keys and a trailing newline."""
    text = json.dumps(to_document(record), sort_keys=True, separators=(",", ":"))
    return text.encode("utf-8") + b"\n"


def _field(doc: Mapping[str, Any], name: str, kind: type, where: str) -> Any:
    value = doc.get(name)
    if not isinstance(value, kind) or (kind is int and isinstance(value, bool)):
        raise JournalError(f"{where}: field {name!r} is missing or not a {kind.__name__}")
    return value


def _optional_str(doc: Mapping[str, Any], name: str, where: str) -> str | None:
    value = doc.get(name)
    if value is not None and not isinstance(value, str):
        raise JournalError(f"{where}: field {name!r} is not a string")
    return value


def from_json(line: bytes | str, where: str = "journal") -> Record:
    """Parse one journal line; raises JournalError saying what is wrong with it."""
    try:
        doc = json.loads(line)
    except (ValueError, UnicodeDecodeError) as exc:
        raise JournalError(f"{where}: not a JSON record ({exc})") from exc
    if not isinstance(doc, dict):
        raise JournalError(f"{where}: not a JSON object")
    kind = _field(doc, "record", str, where)
    at = _parse_time(_field(doc, "at", str, where), where)
    if kind == "run":
        version = _field(doc, "version", int, where)
        if version != JOURNAL_VERSION:
            raise JournalError(
                f"{where}: journal version {version} is not supported (this is {JOURNAL_VERSION})",
                hint="use the retention release that wrote the journal",
            )
        return RunRecord(
            registry=_field(doc, "registry", str, where),
            plan_sha256=_field(doc, "plan_sha256", str, where),
            policy_path=_field(doc, "policy", str, where),
            at=at,
        )
    if kind == "intent":
        tags = _field(doc, "tags", list, where)
        if not all(isinstance(t, str) for t in tags):
            raise JournalError(f"{where}: field 'tags' must list strings")
        try:
            raw = base64.b64decode(_field(doc, "manifest", str, where), validate=True)
        except (binascii.Error, ValueError) as exc:
            raise JournalError(f"{where}: field 'manifest' is not base64") from exc
        return IntentRecord(
            registry=_field(doc, "registry", str, where),
            repository=_field(doc, "repository", str, where),
            digest=_field(doc, "digest", str, where),
            media_type=_field(doc, "media_type", str, where),
            size=_field(doc, "size", int, where),
            tags=tuple(tags),
            parent=_optional_str(doc, "parent", where),
            raw=raw,
            at=at,
        )
    if kind == "untag":
        return _untag_intent(doc, at, where)
    if kind == "untag-outcome":
        outcome = _field(doc, "outcome", str, where)
        if outcome not in OUTCOME_KINDS:
            raise JournalError(f"{where}: unknown untag outcome {outcome!r}")
        return UntagOutcomeRecord(
            kind=outcome,
            repository=_field(doc, "repository", str, where),
            tag=_field(doc, "tag", str, where),
            reason=_optional_str(doc, "reason", where),
            at=at,
        )
    if kind in OUTCOME_KINDS:
        return OutcomeRecord(
            kind=kind,
            repository=_field(doc, "repository", str, where),
            digest=_field(doc, "digest", str, where),
            reason=_optional_str(doc, "reason", where),
            at=at,
        )
    raise JournalError(f"{where}: unknown record type {kind!r}")


def _untag_intent(doc: Mapping[str, Any], at: datetime, where: str) -> UntagIntentRecord:
    encoded = _optional_str(doc, "manifest", where)
    raw = None
    if encoded is not None:
        try:
            raw = base64.b64decode(encoded, validate=True)
        except (binascii.Error, ValueError) as exc:
            raise JournalError(f"{where}: field 'manifest' is not base64") from exc
    method = _field(doc, "method", str, where)
    if method not in ("delete-tag", "throw-away"):
        raise JournalError(f"{where}: unknown untag method {method!r}")
    return UntagIntentRecord(
        registry=_field(doc, "registry", str, where),
        repository=_field(doc, "repository", str, where),
        tag=_field(doc, "tag", str, where),
        digest=_optional_str(doc, "digest", where),
        media_type=_optional_str(doc, "media_type", where),
        raw=raw,
        method=method,
        throwaway=_optional_str(doc, "throwaway", where),
        at=at,
    )


@dataclass(frozen=True, slots=True)
class JournalState:
    """Everything a journal file says, in order."""

    path: Path
    records: tuple[Record, ...]

    @property
    def registry(self) -> str | None:
        for record in self.records:
            if isinstance(record, RunRecord | IntentRecord | UntagIntentRecord):
                return record.registry
        return None

    @property
    def policy_path(self) -> str | None:
        runs = [r for r in self.records if isinstance(r, RunRecord)]
        return runs[-1].policy_path if runs else None

    def latest_outcomes(self) -> dict[Key, OutcomeRecord]:
        latest: dict[Key, OutcomeRecord] = {}
        for record in self.records:
            if isinstance(record, OutcomeRecord):
                latest[record.key] = record
        return latest

    def finished(self) -> dict[Key, OutcomeRecord]:
        """Entries a re-run skips: their latest outcome is `done` or `gone`."""
        return {k: r for k, r in self.latest_outcomes().items() if r.kind in TERMINAL_KINDS}

    def intents(self) -> dict[Key, IntentRecord]:
        """The latest intent per (repository, digest): the manifest bytes to restore or repair."""
        latest: dict[Key, IntentRecord] = {}
        for record in self.records:
            if isinstance(record, IntentRecord):
                latest[record.key] = record
        return latest

    def untag_intents(self) -> dict[TagKey, UntagIntentRecord]:
        """The latest untag intent per (repository, tag)."""
        return {r.key: r for r in self.records if isinstance(r, UntagIntentRecord)}

    def untag_outcomes(self) -> dict[TagKey, UntagOutcomeRecord]:
        """The latest untag outcome per (repository, tag)."""
        return {r.key: r for r in self.records if isinstance(r, UntagOutcomeRecord)}

    def untags_finished(self) -> dict[TagKey, UntagOutcomeRecord]:
        """Untags a re-run skips: their latest outcome is `done` or `gone`."""
        return {k: r for k, r in self.untag_outcomes().items() if r.kind in TERMINAL_KINDS}


def read_journal(path: Path | str) -> JournalState:
    """Read every record. A torn last line (a crash while writing it) is ignored with a warning;
    a bad line anywhere else is a JournalError."""
    target = Path(path)
    try:
        data = target.read_bytes()
    except FileNotFoundError as exc:
        raise JournalError(f"journal {target} does not exist") from exc
    except OSError as exc:
        raise JournalError(f"cannot read journal {target}: {exc.strerror or exc}") from exc
    lines = data.split(b"\n")
    torn = lines.pop()  # b"" when the file ends in a newline, as every complete record does
    records: list[Record] = []
    for number, line in enumerate(lines, start=1):
        if not line.strip():
            continue
        records.append(from_json(line, f"{target}:{number}"))
    if torn.strip():
        log.warning("%s: ignoring an incomplete last line (a crash while writing it)", target)
    return JournalState(path=target, records=tuple(records))


class Journal(Closing):
    """An open journal that apply appends to; thread-safe, one exclusive lock per file.

    Each `write` is one line in one `write()` on an O_APPEND descriptor, flushed and fsynced
    before it returns: a record on disk means the step it describes is about to happen (intent)
    or has happened (outcome).
    """

    def __init__(
        self,
        path: Path | str,
        *,
        registry: str,
        clock: Callable[[], datetime] = _utc_now,
    ) -> None:
        self.path = Path(path)
        self.registry = registry_key(registry)
        self._clock = clock
        self._lock = threading.Lock()
        self._fd: int | None = None
        self.state = JournalState(path=self.path, records=())

    def open(self, *, plan_sha256: str, policy_path: str) -> Self:
        """Lock the file, read what earlier runs wrote, and append a run record."""
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            created = not self.path.exists()
            fd = os.open(self.path, os.O_WRONLY | os.O_APPEND | os.O_CREAT | os.O_CLOEXEC, 0o600)
        except OSError as exc:
            raise JournalError(
                f"cannot open journal {self.path}: {exc.strerror or exc}",
                hint="pass --journal PATH to a writable location",
            ) from exc
        try:
            locked = try_lock(fd)
        except OSError as exc:
            os.close(fd)
            raise JournalError(f"cannot lock journal {self.path}: {exc.strerror or exc}") from exc
        if not locked:
            os.close(fd)
            raise LockHeld(
                f"journal {self.path} is locked: another apply of this plan is running",
                hint="wait for it to finish; two applies of one plan must not run at once",
            )
        self._fd = fd
        try:
            if created:
                fsync_dir(self.path.parent)
            else:
                self.state = read_journal(self.path)
                self._check_registry(self.state.registry)
                self._repair_torn_tail()
            self.write(
                RunRecord(
                    registry=self.registry,
                    plan_sha256=plan_sha256,
                    policy_path=policy_path,
                    at=self._clock(),
                )
            )
        except BaseException:
            self.close()
            raise
        return self

    def _check_registry(self, found: str | None) -> None:
        if found is not None and registry_key(found) != self.registry:
            raise JournalError(
                f"journal {self.path} belongs to registry {found}, not {self.registry}",
                hint="pass --journal PATH to use another journal file",
            )

    def _repair_torn_tail(self) -> None:
        # A crash mid-write can leave a last line without its newline. That record never took
        # effect (apply acts only after a write returns), so cut it off before appending.
        data = self.path.read_bytes()
        if not data or data.endswith(b"\n"):
            return
        keep = data.rfind(b"\n") + 1
        if self._fd is None:
            raise JournalError(f"journal {self.path} is not open")
        try:
            os.ftruncate(self._fd, keep)
            os.fsync(self._fd)
        except OSError as exc:
            raise JournalError(f"cannot repair journal {self.path}: {exc.strerror or exc}") from exc

    def _write_bytes(self, data: bytes) -> None:
        if self._fd is None:
            raise JournalError(f"journal {self.path} is not open")
        try:
            written = os.write(self._fd, data)
            if written != len(data):
                raise JournalError(f"short write to journal {self.path}")
            os.fsync(self._fd)
        except OSError as exc:
            raise JournalError(f"cannot write journal {self.path}: {exc.strerror or exc}") from exc

    def write(self, record: Record) -> None:
        line = to_json(record)
        with self._lock:
            self._write_bytes(line)
            self.state = JournalState(path=self.path, records=(*self.state.records, record))

    def intent(
        self,
        *,
        repository: str,
        digest: str,
        media_type: str,
        size: int,
        tags: Iterable[str],
        parent: str | None,
        raw: bytes,
    ) -> IntentRecord:
        record = IntentRecord(
            registry=self.registry,
            repository=repository,
            digest=digest,
            media_type=media_type,
            size=size,
            tags=tuple(tags),
            parent=parent,
            raw=raw,
            at=self._clock(),
        )
        self.write(record)
        return record

    def outcome(
        self, kind: OutcomeKind, *, repository: str, digest: str, reason: str | None = None
    ) -> None:
        self.write(
            OutcomeRecord(
                kind=kind, repository=repository, digest=digest, reason=reason, at=self._clock()
            )
        )

    def untag_intent(
        self,
        *,
        repository: str,
        tag: str,
        digest: str | None,
        media_type: str | None,
        raw: bytes | None,
        method: str,
        throwaway: str | None,
    ) -> UntagIntentRecord:
        record = UntagIntentRecord(
            registry=self.registry,
            repository=repository,
            tag=tag,
            digest=digest,
            media_type=media_type,
            raw=raw,
            method=method,
            throwaway=throwaway,
            at=self._clock(),
        )
        self.write(record)
        return record

    def untag_outcome(
        self, kind: OutcomeKind, *, repository: str, tag: str, reason: str | None = None
    ) -> None:
        self.write(
            UntagOutcomeRecord(
                kind=kind, repository=repository, tag=tag, reason=reason, at=self._clock()
            )
        )

    def close(self) -> None:
        with self._lock:
            if self._fd is not None:
                unlock(self._fd)
                os.close(self._fd)
                self._fd = None
