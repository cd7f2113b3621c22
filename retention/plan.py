"""The deletion plan: frozen `Plan` and its entries; deterministic JSON, schema-checked loading,
and the text a reviewer reads.

Pure: no I/O beyond the schema file shipped in the package.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime

FORMAT_VERSION = 1


@dataclass(frozen=True, slots=True)
class Entry:
    """One manifest the plan deletes or keeps, and why.

    `parent` is the index digest for an index's platform manifest, else None.
    `rule` is the owning rule's name (None when no rule owns it: unselected, protected, a child).
    """

    repository: str
    digest: str
    media_type: str
    tags: tuple[str, ...]
    parent: str | None
    created: datetime | None
    size: int
    rule: str | None
    reason: str


@dataclass(frozen=True, slots=True)
class Summary:
    repositories: int
    tags: int
    images: int
    tags_deleted: int
    images_deleted: int
    bytes_reclaimable: int
    # False when the inventory covered part of the registry: bytes are then an upper bound
    complete: bool = True


@dataclass(frozen=True, slots=True)
class Plan:
    """What `apply` will delete; `deletions` and `kept` are sorted by (repository, digest)."""

    generated_at: datetime
    registry: str
    policy_path: str
    policy_sha256: str
    max_deletions: str  # as the policy wrote it: "500" or "25%"
    summary: Summary
    deletions: tuple[Entry, ...]
    kept: tuple[Entry, ...]
    warnings: tuple[str, ...] = ()
    format_version: int = FORMAT_VERSION
