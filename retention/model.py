"""PURE inventory values: what a registry holds, as frozen dataclasses.

An `Inventory` is built by `inventory.py` (or loaded from JSON) and read by `evaluate.py`.
Nothing here talks to a registry or reads the clock.
"""

from __future__ import annotations

import enum
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from retention.errors import InventoryError
from retention.oci import format_time, is_digest, parse_created


class Kind(enum.StrEnum):
    IMAGE = "image"  # a single-platform image manifest
    INDEX = "index"  # OCI index or Docker manifest list
    ARTIFACT = "artifact"  # a manifest with `subject`, or one behind a cosign-style tag


@dataclass(frozen=True, slots=True)
class Blob:
    digest: str
    size: int


@dataclass(frozen=True, slots=True)
class Image:
    """One manifest in one repository, tagged or not (an index's platform manifests are here too).

    `created` is the effective creation time by the DESIGN §2 rules (None = unknown);
    `created_raw` is the config's own `created` text, kept so `explain` can say why it was ignored.
    `blobs` are the config and layer blobs this manifest references (not child manifests);
    `size` is manifest + config + layers, and for an index also its children's sizes.
    """

    digest: str
    media_type: str
    kind: Kind
    manifest_size: int
    size: int
    created: datetime | None
    created_raw: str | None = None
    config_digest: str | None = None
    blobs: tuple[Blob, ...] = ()
    children: tuple[str, ...] = ()  # platform manifest digests of an index
    platform: str | None = None  # "linux/amd64" for an index child, when the index says
    subject: str | None = None  # the digest an OCI 1.1 artifact refers to
    artifact_type: str | None = None


@dataclass(frozen=True, slots=True)
class Tag:
    name: str
    digest: str


@dataclass(frozen=True, slots=True)
class Repository:
    """A repository's tags and every manifest reachable from them, both sorted for determinism."""

    name: str
    tags: tuple[Tag, ...]
    images: tuple[Image, ...]
    _by_digest: Mapping[str, Image] = field(init=False, repr=False, compare=False, hash=False)

    def __post_init__(self) -> None:
        object.__setattr__(self, "_by_digest", {i.digest: i for i in self.images})

    def image(self, digest: str) -> Image | None:
        return self._by_digest.get(digest)


@dataclass(frozen=True, slots=True)
class Inventory:
    """What the registry holds, as walked at `taken_at`.

    `complete` is False when only part of the registry was walked (a `--repository` filter or a
    shard): then blobs shared with repositories outside it are unknown, and reclaimable bytes are
    an upper bound.
    """

    registry: str
    taken_at: datetime
    repositories: tuple[Repository, ...]
    complete: bool = True
    warnings: tuple[str, ...] = ()  # what the walk saw and left alone, e.g. dangling tags

    def __iter__(self) -> Iterator[Repository]:
        return iter(self.repositories)

    def to_json(self) -> dict[str, Any]:
        return {
            "format_version": 1,
            "registry": self.registry,
            "taken_at": format_time(self.taken_at),
            "complete": self.complete,
            "warnings": list(self.warnings),
            "repositories": [
                {
                    "name": r.name,
                    "tags": {t.name: t.digest for t in r.tags},
                    "images": [_image_json(i) for i in r.images],
                }
                for r in self.repositories
            ],
        }

    @classmethod
    def from_json(cls, doc: Any) -> Inventory:
        """Parse a saved inventory; raises PlanError naming the first bad field."""
        try:
            if doc["format_version"] != 1:
                raise InventoryError(
                    f"unsupported inventory format_version {doc['format_version']!r}"
                )
            taken_at = parse_created(doc["taken_at"])
            if taken_at is None:
                raise InventoryError(f"inventory taken_at {doc['taken_at']!r} is not a valid time")
            repos = []
            for r in doc["repositories"]:
                tags = tuple(
                    sorted((Tag(n, d) for n, d in r["tags"].items()), key=lambda t: t.name)
                )
                images = tuple(
                    sorted((_image_from(i) for i in r["images"]), key=lambda i: i.digest)
                )
                repos.append(Repository(name=r["name"], tags=tags, images=images))
            return cls(
                registry=str(doc["registry"]),
                taken_at=taken_at,
                repositories=tuple(sorted(repos, key=lambda r: r.name)),
                complete=bool(doc["complete"]),
                warnings=tuple(str(w) for w in doc.get("warnings", [])),
            )
        except (KeyError, TypeError, AttributeError, ValueError) as exc:
            raise InventoryError(f"inventory file is malformed: {exc!r}") from exc


def _image_json(i: Image) -> dict[str, Any]:
    return {
        "digest": i.digest,
        "media_type": i.media_type,
        "kind": i.kind.value,
        "manifest_size": i.manifest_size,
        "size": i.size,
        "created": format_time(i.created) if i.created else None,
        "created_raw": i.created_raw,
        "config_digest": i.config_digest,
        "blobs": [[b.digest, b.size] for b in i.blobs],
        "children": list(i.children),
        "platform": i.platform,
        "subject": i.subject,
        "artifact_type": i.artifact_type,
    }


def _image_from(d: dict[str, Any]) -> Image:
    digest = d["digest"]
    if not isinstance(digest, str) or not is_digest(digest):
        raise ValueError(f"invalid digest {digest!r}")
    return Image(
        digest=digest,
        media_type=str(d["media_type"]),
        kind=Kind(d["kind"]),
        manifest_size=int(d["manifest_size"]),
        size=int(d["size"]),
        created=parse_created(d["created"]) if d["created"] else None,
        created_raw=d.get("created_raw"),
        config_digest=d.get("config_digest"),
        blobs=tuple(Blob(str(b[0]), int(b[1])) for b in d.get("blobs", [])),
        children=tuple(str(c) for c in d.get("children", [])),
        platform=d.get("platform"),
        subject=d.get("subject"),
        artifact_type=d.get("artifact_type"),
    )
