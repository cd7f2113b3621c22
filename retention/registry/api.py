"""The registry port: the one `Protocol` apply, restore, doctor and inventory use, and the value
types it speaks in (`Ping`, `ManifestRef`, `FetchedManifest`, `RetryPolicy`, `RunDeadline`).

No HTTP here (that is `registry.transport`); `registry.client.RegistryClient` implements it.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from datetime import datetime
from typing import Protocol

from retention import oci


@dataclass(frozen=True, slots=True)
class RetryPolicy:
    """How often and how long to retry what is safe to retry.

    `attempts` counts every try (the first included); the wait before retry n (0-based) is
    `min(cap, base * 2**n)` scaled by a jitter factor in [0.5, 1.0], or the server's Retry-After;
    `budget` bounds the total seconds spent waiting per request — a Retry-After beyond what is
    left of it fails at once rather than sleeping.
    """

    attempts: int = 5
    base: float = 0.5
    cap: float = 30.0
    budget: float = 120.0

    def __post_init__(self) -> None:
        if self.attempts < 1 or self.base < 0 or self.cap < 0 or self.budget < 0:
            raise ValueError("RetryPolicy needs attempts >= 1 and non-negative times")


@dataclass(frozen=True, slots=True)
class RunDeadline:
    """When a whole command must end (`settings.timeouts.run`): a `time.monotonic()` instant,
    and the configured length for messages."""

    at: float
    seconds: float

    @classmethod
    def after(cls, seconds: float, clock: Callable[[], float] = time.monotonic) -> RunDeadline:
        return cls(at=clock() + seconds, seconds=seconds)


@dataclass(frozen=True, slots=True)
class Ping:
    """The answer of `GET /v2/`."""

    status: int
    api_version: str | None
    server_date: datetime | None
    auth_scheme: str | None = None  # "basic", "bearer" or None (anonymous access)


@dataclass(frozen=True, slots=True)
class ManifestRef:
    """What a manifest HEAD tells: the digest (sha256 of the manifest bytes), type and size."""

    digest: str
    media_type: str
    size: int


@dataclass(frozen=True, slots=True)
class FetchedManifest:
    """A manifest as received: the parsed value, the exact bytes, and the media type served."""

    manifest: oci.Manifest
    raw: bytes
    media_type: str

    @property
    def digest(self) -> str:
        return self.manifest.digest


class RegistryPort(Protocol):
    """What the commands need of a registry; `RegistryClient` satisfies it. Every method raises
    only `RegistryError` subclasses; `on_invalid` receives a name outside the distribution
    grammar (raw: the caller escapes it) instead of an error."""

    @property
    def url(self) -> str: ...
    @property
    def credential_source(self) -> str: ...
    def ping(self) -> Ping: ...
    def catalog(self, on_invalid: Callable[[str], None] | None = None) -> Iterator[str]: ...
    def list_tags(
        self, repo: str, on_invalid: Callable[[str], None] | None = None
    ) -> list[str]: ...
    def head_manifest(self, repo: str, reference: str) -> ManifestRef | None: ...
    def get_manifest(self, repo: str, reference: str) -> FetchedManifest | None: ...
    def referrers(self, repo: str, digest: str) -> list[str] | None: ...
    def get_blob(self, repo: str, digest: str, *, max_bytes: int = ...) -> bytes: ...
    def blob_exists(self, repo: str, digest: str) -> bool: ...
    def put_manifest(self, repo: str, reference: str, raw: bytes, media_type: str) -> str: ...
    def delete_manifest(self, repo: str, digest: str) -> bool: ...
    def probe_delete(self, repo: str) -> bool: ...
    def upload_blob(self, repo: str, data: bytes) -> str: ...
    def probe_push(self, repo: str) -> bool: ...
    def delete_tag(self, repo: str, tag: str) -> bool: ...
    def probe_tag_delete(self, repo: str) -> bool: ...
