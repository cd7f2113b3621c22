"""PURE inventory values: what a registry holds, as frozen dataclasses.

An `Inventory` is built by `inventory.py` (or loaded from JSON) and read by `evaluate.py`.
Nothing here talks to a registry or reads the clock.
"""

from __future__ import annotations

import enum
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any, Literal

from retention.errors import InventoryError
from retention.oci import format_time, is_digest, is_repository, is_tag, parse_created
from retention.text import untrusted


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
    # When the manifest was pushed: its revision link's mtime in the storage inventory
    # (docs/decisions.md, "Storage inventory"); None from the API, which does not say.
    pushed_at: datetime | None = None


@dataclass(frozen=True, slots=True)
class Tag:
    name: str
    digest: str


@dataclass(frozen=True, slots=True)
class TagEvent:
    """A tag pointed at `digest` from `at` on: one entry of its history (storage inventory only,
    `_manifests/tags/<tag>/index/`); the next event of the same tag ends it."""

    tag: str
    digest: str
    at: datetime


@dataclass(frozen=True, slots=True)
class Repository:
    """A repository's tags and every manifest reachable from them, both sorted for determinism.

    `dangling_tags` are listed by the registry but their manifest is gone (a registry killed
    mid-DELETE leaves them): sorted names, in no `Tag`, since they point at nothing there is.
    """

    name: str
    tags: tuple[Tag, ...]
    images: tuple[Image, ...]
    history: tuple[TagEvent, ...] = ()  # sorted by (tag, at, digest); empty from the API
    dangling_tags: tuple[str, ...] = ()
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
    # "api": tags and what they reach; "storage": every manifest revision on disk, untagged too
    source: Literal["api", "storage"] = "api"

    def __iter__(self) -> Iterator[Repository]:
        return iter(self.repositories)

    def names_left_alone(self) -> tuple[str, ...]:
        """The warnings about repository and tag names outside the grammar, sorted: the plan
        repeats them (`outside_grammar`)."""
        return tuple(sorted(w for w in self.warnings if w.endswith(_LEFT_ALONE)))

    def to_json(self) -> dict[str, Any]:
        return {
            "format_version": 1,
            "registry": self.registry,
            "taken_at": format_time(self.taken_at),
            "complete": self.complete,
            "source": self.source,
            "warnings": list(self.warnings),
            "repositories": [_repository_json(r) for r in self.repositories],
        }

    @classmethod
    def from_json(cls, doc: Any) -> Inventory:
        """Parse a saved inventory; raises InventoryError naming the first bad field.

        Every field is type-checked here: the file is user input (`plan --from-inventory`), and a
        wrong type must not surface later as a traceback from evaluate or the plan writer.
        """
        try:
            return _inventory_from(doc)
        except (KeyError, TypeError, AttributeError, ValueError, IndexError) as exc:
            raise InventoryError(f"inventory file is malformed: {exc}") from exc


_LEFT_ALONE = "(distribution grammar); it is left alone"


def outside_grammar(what: str, name: str, where: str) -> str:
    """The warning for a repository or tag name outside the distribution grammar (ESC, LF,
    `../`, NUL, more than 255 characters): escaped, cut to 200 characters; the name is left alone
    (docs/decisions.md, "Names outside the grammar")."""
    shown = untrusted(name[:200]) + (f"... ({len(name)} characters)" if len(name) > 200 else "")
    return f'{where} lists {what} "{shown}", which is not a valid {what} name {_LEFT_ALONE}'


def _repository_json(r: Repository) -> dict[str, Any]:
    doc: dict[str, Any] = {
        "name": r.name,
        "tags": {t.name: t.digest for t in r.tags},
        "images": [_image_json(i) for i in r.images],
    }
    if r.history:  # storage inventories only: API inventories stay as they were
        doc["history"] = [[e.tag, e.digest, _precise(e.at)] for e in r.history]
    if r.dangling_tags:  # written only when there are some: older files and readers agree
        doc["dangling_tags"] = list(r.dangling_tags)
    return doc


def _image_json(i: Image) -> dict[str, Any]:
    doc = {
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
    if i.pushed_at is not None:
        doc["pushed_at"] = _precise(i.pushed_at)
    return doc


def _precise(when: datetime) -> str:
    """Link mtimes keep their microseconds: pushes a second apart must stay in order."""
    return when.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


class _Bad(ValueError):
    """A field of a saved inventory with the wrong type or value (internal)."""


def _get(d: Any, key: str, path: str, kind: type | tuple[type, ...], *, default: Any = ...) -> Any:
    if not isinstance(d, dict):
        raise _Bad(f"{path}: expected an object")
    if key not in d:
        if default is not ...:
            return default
        raise _Bad(f"{path}.{key}: missing")
    value = d[key]
    if value is None and default is None:
        return None
    if not isinstance(value, kind) or (isinstance(value, bool) and bool not in _types(kind)):
        raise _Bad(f"{path}.{key}: {type(value).__name__} where {_names(kind)} was expected")
    return value


def _types(kind: type | tuple[type, ...]) -> tuple[type, ...]:
    return kind if isinstance(kind, tuple) else (kind,)


def _names(kind: type | tuple[type, ...]) -> str:
    return " or ".join(t.__name__ for t in _types(kind))


def _digest(value: Any, path: str) -> str:
    if not isinstance(value, str) or not is_digest(value):
        raise _Bad(f"{path}: invalid digest {value!r}")
    return value


def _opt_digest(d: Any, key: str, path: str) -> str | None:
    value = _get(d, key, path, str, default=None)
    return None if value is None else _digest(value, f"{path}.{key}")


def _count(d: Any, key: str, path: str) -> int:
    value: int = _get(d, key, path, int)
    if value < 0:
        raise _Bad(f"{path}.{key}: negative size {value}")
    return value


def _inventory_from(doc: Any) -> Inventory:
    if _get(doc, "format_version", "$", int) != 1:
        raise InventoryError(f"unsupported inventory format_version {doc['format_version']!r}")
    taken_text = _get(doc, "taken_at", "$", str)
    taken_at = parse_created(taken_text)
    if taken_at is None:
        raise InventoryError(f"inventory taken_at {taken_text!r} is not a valid time")
    warnings = _get(doc, "warnings", "$", list, default=[])
    repos = []
    for ri, r in enumerate(_get(doc, "repositories", "$", list)):
        where = f"$.repositories[{ri}]"
        name = _get(r, "name", where, str)
        if not is_repository(name):
            raise _Bad(f"{where}.name: invalid repository name {name!r}")
        tags = []
        for tag, digest in _get(r, "tags", where, dict).items():
            if not is_tag(tag):
                raise _Bad(f"{where}.tags: invalid tag name {tag[:140]!r}")
            tags.append(Tag(tag, _digest(digest, f"{where}.tags.{tag}")))
        images = [
            _image_from(i, f"{where}.images[{ii}]")
            for ii, i in enumerate(_get(r, "images", where, list))
        ]
        history = []
        for hi, h in enumerate(_get(r, "history", where, list, default=[])):
            at = parse_created(h[2]) if isinstance(h, list) and len(h) == 3 else None
            if at is None or not isinstance(h[0], str) or not is_tag(h[0]):
                raise _Bad(f"{where}.history[{hi}]: expected [tag, digest, time]")
            history.append(TagEvent(h[0], _digest(h[1], f"{where}.history[{hi}]"), at))
        dangling = _get(r, "dangling_tags", where, list, default=[])
        listed = {t.name for t in tags}
        for di, tag in enumerate(dangling):
            if not isinstance(tag, str) or not is_tag(tag):
                raise _Bad(f"{where}.dangling_tags[{di}]: invalid tag name {str(tag)[:140]!r}")
            if tag in listed:  # a tag resolves to a manifest or it does not: never both
                raise _Bad(f"{where}.dangling_tags[{di}]: {tag!r} is in tags too")
        repos.append(
            Repository(
                name=name,
                tags=tuple(sorted(tags, key=lambda t: t.name)),
                images=tuple(sorted(images, key=lambda i: i.digest)),
                history=tuple(sorted(history, key=lambda e: (e.tag, e.at, e.digest))),
                dangling_tags=tuple(sorted(set(dangling))),
            )
        )
    return Inventory(
        registry=_get(doc, "registry", "$", str),
        taken_at=taken_at,
        repositories=tuple(sorted(repos, key=lambda r: r.name)),
        complete=_get(doc, "complete", "$", bool),
        warnings=tuple(str(w) for w in warnings),
        source=_source(_get(doc, "source", "$", str, default="api")),
    )


def _source(value: str) -> Literal["api", "storage"]:
    if value == "api":
        return "api"
    if value == "storage":
        return "storage"
    raise _Bad(f"$.source: {value[:40]!r} is neither 'api' nor 'storage'")


def _image_from(d: Any, path: str) -> Image:
    created = _get(d, "created", path, str, default=None)
    blobs = []
    for bi, b in enumerate(_get(d, "blobs", path, list, default=[])):
        if not isinstance(b, list) or len(b) != 2:
            raise _Bad(f"{path}.blobs[{bi}]: expected [digest, size]")
        size = b[1]
        if not isinstance(size, int) or isinstance(size, bool) or size < 0:
            raise _Bad(f"{path}.blobs[{bi}]: invalid size {size!r}")
        blobs.append(Blob(_digest(b[0], f"{path}.blobs[{bi}]"), size))
    children = tuple(
        _digest(c, f"{path}.children[{ci}]")
        for ci, c in enumerate(_get(d, "children", path, list, default=[]))
    )
    return Image(
        digest=_digest(_get(d, "digest", path, str), f"{path}.digest"),
        media_type=_get(d, "media_type", path, str),
        kind=Kind(_get(d, "kind", path, str)),
        manifest_size=_count(d, "manifest_size", path),
        size=_count(d, "size", path),
        created=parse_created(created) if created else None,
        created_raw=_get(d, "created_raw", path, str, default=None),
        config_digest=_opt_digest(d, "config_digest", path),
        blobs=tuple(blobs),
        children=children,
        platform=_get(d, "platform", path, str, default=None),
        subject=_opt_digest(d, "subject", path),
        artifact_type=_get(d, "artifact_type", path, str, default=None),
        pushed_at=_time_or_none(_get(d, "pushed_at", path, str, default=None), f"{path}.pushed_at"),
    )


def _time_or_none(text: str | None, path: str) -> datetime | None:
    if text is None:
        return None
    when = parse_created(text)
    if when is None:
        raise _Bad(f"{path}: {text[:40]!r} is not a valid time")
    return when
