"""Build `Plan` values and manifest bytes directly, for tests of apply, restore and the journal."""

from __future__ import annotations

import json
from collections.abc import Iterable
from datetime import UTC, datetime

from retention import oci
from retention.plan import Entry, Plan, Summary

NOW = datetime(2026, 11, 27, 12, 0, 0, tzinfo=UTC)
REGISTRY = "http://127.0.0.1:5000"


def image_raw(seed: str, *, subject: tuple[str, int] | None = None) -> bytes:
    """Bytes of a small OCI image manifest, distinct per seed (blobs need not exist)."""
    doc: dict[str, object] = {
        "schemaVersion": 2,
        "mediaType": oci.OCI_MANIFEST,
        "config": {
            "mediaType": oci.OCI_CONFIG,
            "digest": oci.sha256_digest(f"config-{seed}".encode()),
            "size": 10,
        },
        "layers": [
            {
                "mediaType": "application/vnd.oci.image.layer.v1.tar+gzip",
                "digest": oci.sha256_digest(f"layer-{seed}".encode()),
                "size": 20,
            }
        ],
    }
    if subject is not None:
        doc["subject"] = {"mediaType": oci.OCI_MANIFEST, "digest": subject[0], "size": subject[1]}
    return json.dumps(doc, sort_keys=True).encode()


def index_raw(children: Iterable[bytes]) -> bytes:
    doc = {
        "schemaVersion": 2,
        "mediaType": oci.OCI_INDEX,
        "manifests": [
            {"mediaType": oci.OCI_MANIFEST, "digest": oci.sha256_digest(c), "size": len(c)}
            for c in children
        ],
    }
    return json.dumps(doc, sort_keys=True).encode()


def entry(
    repo: str,
    raw_or_digest: bytes | str,
    *,
    tags: Iterable[str] = (),
    parent: str | None = None,
    media_type: str | None = None,
    size: int = 100,
    reason: str = "older than the last 1",
) -> Entry:
    if isinstance(raw_or_digest, bytes):
        digest = oci.sha256_digest(raw_or_digest)
        kind = json.loads(raw_or_digest).get("mediaType", oci.OCI_MANIFEST)
    else:
        digest, kind = raw_or_digest, oci.OCI_MANIFEST
    return Entry(
        repository=repo,
        digest=digest,
        media_type=media_type or kind,
        tags=tuple(sorted(tags)),
        parent=parent,
        created=None,
        size=size,
        rule="rule" if parent is None else None,
        reason=reason,
    )


def make_plan(
    deletions: Iterable[Entry],
    kept: Iterable[Entry] = (),
    *,
    registry: str = REGISTRY,
    generated_at: datetime = NOW,
    max_deletions: str = "500",
    images: int | None = None,
    images_deleted: int | None = None,
    bytes_reclaimable: int | None = None,
    format_version: int = 1,
) -> Plan:
    dels = tuple(sorted(deletions, key=lambda e: (e.repository, e.digest)))
    keeps = tuple(sorted(kept, key=lambda e: (e.repository, e.digest)))
    return Plan(
        generated_at=generated_at,
        registry=registry,
        policy_path="policy.yaml",
        policy_sha256="0" * 64,
        max_deletions=max_deletions,
        summary=Summary(
            repositories=len({e.repository for e in (*dels, *keeps)}),
            tags=sum(len(e.tags) for e in (*dels, *keeps)),
            images=len(dels) + len(keeps) if images is None else images,
            tags_deleted=sum(len(e.tags) for e in dels),
            images_deleted=len(dels) if images_deleted is None else images_deleted,
            bytes_reclaimable=(
                sum(e.size for e in dels if e.parent is None)
                if bytes_reclaimable is None
                else bytes_reclaimable
            ),
        ),
        deletions=dels,
        kept=keeps,
        format_version=format_version,
    )
