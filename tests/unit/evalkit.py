"""Small builders for evaluate/plan tests: readable digests, images, rules and policies.

`D("a")` is the digest named `a`; images and tags refer to each other by those names.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterable, Mapping
from dataclasses import replace
from datetime import UTC, datetime, timedelta
from typing import Literal

import re2

from retention import oci
from retention.model import Blob, Image, Inventory, Kind, Repository, Tag, TagEvent
from retention.policy.model import (
    Keep,
    Match,
    MaxDeletions,
    Pattern,
    Policy,
    RegistryConfig,
    Rule,
    Settings,
    UnknownAge,
)

NOW = datetime(2024, 6, 1, 12, 0, tzinfo=UTC)
REGISTRY = "https://registry.example.test"


def D(name: str) -> str:
    """The digest named `name` (sha256 of the name, so stable and well-formed)."""
    return oci.sha256_digest(name.encode())


def hex_of(name: str) -> str:
    return D(name).removeprefix("sha256:")


def sig(name: str, suffix: str = "sig") -> str:
    """The cosign-style tag of the image named `name`."""
    return f"sha256-{hex_of(name)}.{suffix}"


def ago(days: float) -> datetime:
    return NOW - timedelta(days=days)


def pat(source: str) -> Pattern:
    return Pattern(source, re2.compile(source))


def image(
    name: str,
    created: datetime | None = None,
    *,
    kind: Kind = Kind.IMAGE,
    children: Iterable[str] = (),
    subject: str | None = None,
    platform: str | None = None,
    blobs: Iterable[tuple[str, int]] = (),
    manifest_size: int = 500,
    created_raw: str | None = None,
    media_type: str | None = None,
    pushed_at: datetime | None = None,
) -> Image:
    blob_values = tuple(Blob(D(b), size) for b, size in blobs)
    kids = tuple(D(c) for c in children)
    if media_type is None:
        media_type = oci.OCI_INDEX if kind is Kind.INDEX else oci.OCI_MANIFEST
    return Image(
        digest=D(name),
        media_type=media_type,
        kind=kind,
        manifest_size=manifest_size,
        size=manifest_size + sum(b.size for b in blob_values),
        created=created,
        created_raw=created_raw,
        config_digest=blob_values[0].digest if blob_values else None,
        blobs=blob_values,
        children=kids,
        platform=platform,
        subject=D(subject) if subject is not None else None,
        pushed_at=pushed_at,
    )


def index(name: str, created: datetime | None, children: Iterable[str], size: int = 0) -> Image:
    """An index; `size` adds its children's sizes as the inventory does."""
    made = image(name, created, kind=Kind.INDEX, children=children)
    return replace(made, size=made.size + size)


def repo(
    name: str,
    tags: Mapping[str, str],
    images: Iterable[Image],
    history: Iterable[tuple[str, str, datetime]] = (),
    dangling: Iterable[str] = (),
) -> Repository:
    """`tags` maps a tag name to the image name it points at; `history` is (tag, image, at);
    `dangling` names tags listed whose manifest is gone."""
    events = (TagEvent(t, D(i), at) for t, i, at in history)
    return Repository(
        name=name,
        tags=tuple(sorted((Tag(t, D(i)) for t, i in tags.items()), key=lambda t: t.name)),
        images=tuple(sorted(images, key=lambda i: i.digest)),
        history=tuple(sorted(events, key=lambda e: (e.tag, e.at, e.digest))),
        dangling_tags=tuple(sorted(dangling)),
    )


def inventory(
    *repos: Repository,
    complete: bool = True,
    source: Literal["api", "storage"] = "api",
    taken_at: datetime = NOW,
) -> Inventory:
    return Inventory(
        registry=REGISTRY,
        taken_at=taken_at,
        repositories=tuple(sorted(repos, key=lambda r: r.name)),
        complete=complete,
        source=source,
    )


def rule(
    name: str,
    *,
    repos: Iterable[str] = (),
    tags: Iterable[str] = (),
    exclude_repos: Iterable[str] = (),
    exclude_tags: Iterable[str] = (),
    last: int | None = None,
    newer_than: str | None = None,
    keep_all: bool = False,
    untagged: bool = False,
) -> Rule:
    delta = _duration(newer_than) if newer_than is not None else None
    return Rule(
        name=name,
        match=Match(
            repositories=tuple(pat(p) for p in repos),
            exclude_repositories=tuple(pat(p) for p in exclude_repos),
            tags=tuple(pat(p) for p in tags),
            exclude_tags=tuple(pat(p) for p in exclude_tags),
            untagged=untagged,
        ),
        keep=Keep(all=keep_all, last=last, newer_than=delta, newer_than_text=newer_than),
    )


def policy(
    *rules: Rule,
    protect: Iterable[str] = (),
    unknown_age: UnknownAge = "keep",
    max_deletions: MaxDeletions | None = None,
    protect_digests: Iterable[str] = (),
    untag: bool = False,
) -> Policy:
    return Policy(
        registry=RegistryConfig(url=REGISTRY),
        rules=rules,
        protect_tags=tuple(pat(p) for p in protect),
        protect_digests=frozenset(D(n) for n in protect_digests),
        settings=Settings(
            unknown_age=unknown_age,
            max_deletions=max_deletions or MaxDeletions(count=500),
            untag=untag,
        ),
        path="policies/test.yaml",
        sha256=hashlib.sha256(b"policy").hexdigest(),
    )


_UNITS = {"s": 1, "m": 60, "h": 3600, "d": 86400, "w": 604800}


def _duration(text: str) -> timedelta:
    return timedelta(seconds=int(text[:-1]) * _UNITS[text[-1]])
