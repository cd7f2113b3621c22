"""PURE OCI/Docker vocabulary: media types, the manifest Accept set, digest and reference grammar,
manifest and config parsing, cosign tag detection, and the `created` date rules.

No I/O here: callers pass the bytes they received and the digest they computed.
"""

from __future__ import annotations

import hashlib
import json
import re
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from retention.errors import ProtocolError

OCI_INDEX = "application/vnd.oci.image.index.v1+json"
OCI_MANIFEST = "application/vnd.oci.image.manifest.v1+json"
DOCKER_LIST = "application/vnd.docker.distribution.manifest.list.v2+json"
DOCKER_MANIFEST = "application/vnd.docker.distribution.manifest.v2+json"
DOCKER_SCHEMA1 = "application/vnd.docker.distribution.manifest.v1+json"
DOCKER_SCHEMA1_SIGNED = "application/vnd.docker.distribution.manifest.v1+prettyjws"
OCI_CONFIG = "application/vnd.oci.image.config.v1+json"
DOCKER_CONFIG = "application/vnd.docker.container.image.v1+json"
OCI_EMPTY = "application/vnd.oci.empty.v1+json"

INDEX_TYPES = frozenset({OCI_INDEX, DOCKER_LIST})
IMAGE_TYPES = frozenset({OCI_MANIFEST, DOCKER_MANIFEST})
MANIFEST_TYPES = INDEX_TYPES | IMAGE_TYPES
SCHEMA1_TYPES = frozenset({DOCKER_SCHEMA1, DOCKER_SCHEMA1_SIGNED})
IMAGE_CONFIG_TYPES = frozenset({OCI_CONFIG, DOCKER_CONFIG})

# Every manifest request sends all four: a narrower set makes distribution 2.8 answer 404 for an
# OCI index or convert the manifest to another digest (docs/registries.md, "distribution (the
# CNCF registry) 2.x").
MANIFEST_ACCEPT = ", ".join((OCI_INDEX, OCI_MANIFEST, DOCKER_LIST, DOCKER_MANIFEST))

CREATED_ANNOTATION = "org.opencontainers.image.created"

_DIGEST_RE = re.compile(r"sha256:[0-9a-f]{64}|sha512:[0-9a-f]{128}")
# distribution's reference grammar (reference/regexp.go), repository path components
_REPO_RE = re.compile(
    r"[a-z0-9]+(?:(?:\.|_|__|-+)[a-z0-9]+)*(?:/[a-z0-9]+(?:(?:\.|_|__|-+)[a-z0-9]+)*)*"
)
_TAG_RE = re.compile(r"[\w][\w.-]{0,127}", re.ASCII)
_COSIGN_RE = re.compile(r"sha256-([0-9a-f]{64})(?:\.(?:sig|att|sbom))?")
ZERO_DIGEST = "sha256:" + "0" * 64


def is_digest(value: str) -> bool:
    """True for a well-formed `sha256:<64 hex>` or `sha512:<128 hex>` digest."""
    return _DIGEST_RE.fullmatch(value) is not None


def is_repository(value: str) -> bool:
    return len(value) <= 255 and _REPO_RE.fullmatch(value) is not None


def is_tag(value: str) -> bool:
    return _TAG_RE.fullmatch(value) is not None


def sha256_digest(data: bytes) -> str:
    return "sha256:" + hashlib.sha256(data).hexdigest()


def digest_matches(data: bytes, digest: str) -> bool:
    """True when `digest` is a well-formed sha256 or sha512 digest of exactly `data`: the two
    registered algorithms of the OCI image spec (descriptor.md, "Digests"). The one check of
    "do these bytes hash to this digest" (retention/storage.py still has its own)."""
    if not is_digest(digest):
        return False
    algorithm, _, hexpart = digest.partition(":")
    return hashlib.new(algorithm, data).hexdigest() == hexpart


def cosign_subject(tag: str) -> str | None:
    """The subject digest of a cosign-style tag `sha256-<hex>.sig|.att|.sbom`, else None.

    A bare `sha256-<hex>` is the OCI 1.1 referrers tag-schema fallback: it follows its subject too.
    """
    m = _COSIGN_RE.fullmatch(tag)
    return f"sha256:{m.group(1)}" if m else None


@dataclass(frozen=True, slots=True)
class Platform:
    os: str
    architecture: str
    variant: str | None = None

    def __str__(self) -> str:
        text = f"{self.os}/{self.architecture}"
        return f"{text}/{self.variant}" if self.variant else text


@dataclass(frozen=True, slots=True)
class Descriptor:
    media_type: str
    digest: str
    size: int
    platform: Platform | None = None
    annotations: tuple[tuple[str, str], ...] = ()
    artifact_type: str | None = None


@dataclass(frozen=True, slots=True)
class Manifest:
    """A parsed image manifest or index; `digest` is the sha256 of the bytes received."""

    media_type: str
    digest: str
    size: int
    config: Descriptor | None
    layers: tuple[Descriptor, ...]
    children: tuple[Descriptor, ...]
    subject: Descriptor | None
    annotations: tuple[tuple[str, str], ...]
    artifact_type: str | None

    @property
    def is_index(self) -> bool:
        return self.media_type in INDEX_TYPES

    def annotation(self, key: str) -> str | None:
        return dict(self.annotations).get(key)


@dataclass(frozen=True, slots=True)
class ImageConfig:
    """What retention reads from an image config blob."""

    created: str | None
    labels: tuple[tuple[str, str], ...]

    def label(self, key: str) -> str | None:
        return dict(self.labels).get(key)


def load_json(data: bytes | str) -> Any:
    """`json.loads` for what a registry or token server sent: JSON nested too deeply for the
    parser (it recurses once per level) is a ValueError like any other unreadable JSON, never a
    RecursionError that escapes as a traceback."""
    try:
        return json.loads(data)
    except RecursionError as exc:
        raise ValueError("JSON nested too deeply to read") from exc


def _obj(value: Any, what: str) -> dict[str, Any]:
    if not isinstance(value, dict):
        raise ProtocolError(f"{what} is not a JSON object")
    return value


def _str_pairs(value: Any) -> tuple[tuple[str, str], ...]:
    if not isinstance(value, dict):
        return ()
    return tuple(sorted((str(k), str(v)) for k, v in value.items() if isinstance(v, str)))


def _descriptor(value: Any, what: str) -> Descriptor:
    d = _obj(value, what)
    digest, size, media_type = d.get("digest"), d.get("size"), d.get("mediaType", "")
    if not isinstance(digest, str) or not is_digest(digest):
        raise ProtocolError(f"{what} has an invalid digest {digest!r}")
    if not isinstance(size, int) or isinstance(size, bool) or size < 0:
        raise ProtocolError(f"{what} has an invalid size {size!r}")
    if not isinstance(media_type, str):
        raise ProtocolError(f"{what} has an invalid mediaType")
    platform = None
    p = d.get("platform")
    if (
        isinstance(p, dict)
        and isinstance(p.get("os"), str)
        and isinstance(p.get("architecture"), str)
    ):
        variant = p.get("variant")
        platform = Platform(
            p["os"], p["architecture"], variant if isinstance(variant, str) else None
        )
    artifact_type = d.get("artifactType")
    return Descriptor(
        media_type=media_type,
        digest=digest,
        size=size,
        platform=platform,
        annotations=_str_pairs(d.get("annotations")),
        artifact_type=artifact_type if isinstance(artifact_type, str) else None,
    )


def parse_manifest(raw: bytes, content_type: str | None, digest: str) -> Manifest:
    """Parse manifest bytes; `digest` must be the digest computed over `raw`.

    The media type comes from the body's `mediaType`, else the Content-Type header. Schema1 is
    refused: its digest cannot be deleted safely and it carries no config blob.
    """
    try:
        doc = load_json(raw)
    except (ValueError, UnicodeDecodeError) as exc:
        raise ProtocolError(f"manifest {digest} is not valid JSON: {exc}") from exc
    body = _obj(doc, f"manifest {digest}")
    header_type = (content_type or "").split(";")[0].strip()
    body_type = body.get("mediaType")
    if body_type is not None and not isinstance(body_type, str):
        raise ProtocolError(f"manifest {digest} has an invalid mediaType")
    if body.get("schemaVersion") == 1 or header_type in SCHEMA1_TYPES or body_type in SCHEMA1_TYPES:
        raise ProtocolError(
            f"manifest {digest} is Docker schema 1, which retention does not support",
            hint="re-push the image with a current client (schema 2 or OCI)",
        )
    media_type = body_type or header_type
    if not media_type:
        media_type = OCI_INDEX if "manifests" in body else OCI_MANIFEST
    if media_type not in MANIFEST_TYPES:
        raise ProtocolError(f"manifest {digest} has unsupported media type {media_type!r}")
    children: tuple[Descriptor, ...] = ()
    layers: tuple[Descriptor, ...] = ()
    config = None
    if media_type in INDEX_TYPES:
        entries = body.get("manifests")
        if not isinstance(entries, list):
            raise ProtocolError(f"index {digest} has no 'manifests' list")
        children = tuple(
            _descriptor(e, f"index {digest} manifests[{i}]") for i, e in enumerate(entries)
        )
    else:
        config = _descriptor(body.get("config"), f"manifest {digest} config")
        raw_layers = body.get("layers", [])
        if not isinstance(raw_layers, list):
            raise ProtocolError(f"manifest {digest} has an invalid 'layers' list")
        layers = tuple(
            _descriptor(e, f"manifest {digest} layers[{i}]") for i, e in enumerate(raw_layers)
        )
    subject = None
    if body.get("subject") is not None:
        subject = _descriptor(body["subject"], f"manifest {digest} subject")
    artifact_type = body.get("artifactType")
    return Manifest(
        media_type=media_type,
        digest=digest,
        size=len(raw),
        config=config,
        layers=layers,
        children=children,
        subject=subject,
        annotations=_str_pairs(body.get("annotations")),
        artifact_type=artifact_type if isinstance(artifact_type, str) else None,
    )


def parse_config(raw: bytes, digest: str) -> ImageConfig:
    """Read `created` and labels from an image config blob; a non-JSON config has neither."""
    try:
        doc = json.loads(raw)
    except (ValueError, UnicodeDecodeError):
        return ImageConfig(created=None, labels=())
    except RecursionError as exc:
        raise ProtocolError(
            f"config {digest} is JSON nested too deeply to read",
            hint="the registry serves a config blob no image builder writes",
        ) from exc
    if not isinstance(doc, dict):
        return ImageConfig(created=None, labels=())
    created = doc.get("created")
    inner = doc.get("config")
    labels = _str_pairs(inner.get("Labels")) if isinstance(inner, dict) else ()
    return ImageConfig(created=created if isinstance(created, str) else None, labels=labels)


_FRACTION_RE = re.compile(r"(\.\d{6})\d+")


def parse_created(value: str | None) -> datetime | None:
    """An RFC 3339 timestamp as an aware UTC datetime, or None when it says nothing.

    None for a missing or unparseable value and for any time on 0001-01-01 or 1970-01-01 UTC,
    which reproducible builds stamp (SOURCE_DATE_EPOCH=0, reproducible-builds.org).
    """
    if not value:
        return None
    text = _FRACTION_RE.sub(r"\1", value.strip())  # nanoseconds: Python keeps microseconds
    if text.endswith(("Z", "z")):
        text = text[:-1] + "+00:00"
    try:
        when = datetime.fromisoformat(text)
        when = when.replace(tzinfo=UTC) if when.tzinfo is None else when.astimezone(UTC)
    except (ValueError, OverflowError):
        return None
    if (when.year, when.month, when.day) in ((1, 1, 1), (1970, 1, 1)):
        return None
    return when


def format_time(when: datetime) -> str:
    """UTC, second precision, with `Z` — the one time format of plans and journals."""
    return when.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
