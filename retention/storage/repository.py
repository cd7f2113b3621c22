"""One repository of the storage, read into a `Repository`: its tags and their history, every
manifest revision with its push time, and the images they are (retention/inventory.py
`build_images`, the API walk's own code, so both inventories build the same values).

    repositories/<name>/_manifests/tags/<tag>/current/link             the tag's manifest now
    repositories/<name>/_manifests/tags/<tag>/index/sha256/<hex>/link  every digest it had
    repositories/<name>/_manifests/revisions/sha256/<hex>/link         every manifest (mtime)
"""

from __future__ import annotations

import os
import sys
from dataclasses import dataclass, fields
from datetime import UTC, datetime
from operator import attrgetter

from retention.inventory import (
    MAX_MANIFESTS_PER_REPOSITORY,
    IndexMemo,
    _SingleFlight,
    build_images,
)
from retention.model import Image, Repository, Tag, TagEvent
from retention.oci import Manifest, is_tag
from retention.storage.blobs import Blobs
from retention.storage.files import Files, StorageError, garbage, not_a_folder
from retention.text import untrusted


@dataclass(frozen=True, slots=True)
class Read:
    """A repository as read, and what the read saw and left alone."""

    repository: Repository
    warnings: tuple[str, ...]


_IMAGE_FIELDS = [f.name for f in fields(Image)]
_IMAGE_VALUES = attrgetter(*_IMAGE_FIELDS)
_PUSHED_AT, _BLOBS, _MEDIA_TYPE, _PLATFORM = (
    _IMAGE_FIELDS.index(name) for name in ("pushed_at", "blobs", "media_type", "platform")
)


def _when(seconds: float) -> datetime:
    return datetime.fromtimestamp(seconds, UTC)


def _by_name(entries: list[os.DirEntry[str]]) -> dict[str, os.DirEntry[str]]:
    return {e.name: e for e in entries}


def _subfolder(inside: dict[str, os.DirEntry[str]], name: str) -> str | None:
    """The path of folder `name` among a listing's entries; None when absent."""
    entry = inside.get(name)
    if entry is None:
        return None
    if not entry.is_dir(follow_symlinks=False):
        raise not_a_folder(entry.path)
    return entry.path


class _Repository:
    """The reading of one repository: its folder's layout, then its images."""

    def __init__(self, files: Files, blobs: Blobs, name: str) -> None:
        self.files = files
        self.blobs = blobs
        self.name = name
        self.warnings: list[str] = []
        self.current: dict[str, str | None] = {}  # tag -> digest now (None: dangling)
        self.history: list[TagEvent] = []
        self.revisions: dict[str, float] = {}  # digest -> its revision link's mtime
        self.dangling: list[str] = []  # tags whose manifest is gone

    def read_layout(self) -> None:
        files = self.files
        base = f"{files.v2}/repositories/{self.name}/_manifests"
        inside = _by_name(files.listing(base, listed=True))
        tags = _subfolder(inside, "tags")
        if tags is not None:
            for entry in files.listing(tags, listed=True):
                if entry.is_dir(follow_symlinks=False):
                    self._tag(entry)
        revisions = _subfolder(inside, "revisions")
        if revisions is not None:
            for algorithm in files.folders(revisions, listed=True):
                for folder in files.folders(algorithm.path, listed=True):
                    expect = f"{algorithm.name}:{folder.name}"
                    link = files.link(f"{folder.path}/link", expect=expect)
                    if link is not None:
                        self.revisions[link[0]] = link[1]

    def _tag(self, entry: os.DirEntry[str]) -> None:
        tag = entry.name
        if not is_tag(tag):
            raise garbage(entry.path, "a tag folder whose name is not a valid tag")
        files = self.files
        # two lstats, not a listing of the tag folder: `current` and `index` must not be links
        current = f"{entry.path}/current"
        link = files.link(f"{current}/link") if files.check_folder(current) else None
        self.current[tag] = None if link is None else link[0]
        index = f"{entry.path}/index"
        if not files.check_folder(index):
            return
        for algorithm in files.folders(index, listed=True):
            for folder in files.folders(algorithm.path, listed=True):
                expect = f"{algorithm.name}:{folder.name}"
                event = files.link(f"{folder.path}/link", expect=expect)
                if event is not None:
                    self.history.append(TagEvent(tag, event[0], _when(event[1])))

    def manifests(self) -> dict[str, Manifest]:
        if len(self.revisions) > MAX_MANIFESTS_PER_REPOSITORY:
            # the API walk's cap (retention/inventory.py), for the same reason: the walk's memory
            raise StorageError(
                f"{untrusted(self.name)}: the storage holds more than "
                f"{MAX_MANIFESTS_PER_REPOSITORY:,} manifest revisions in this repository; "
                "retention does not plan such a repository",
                hint="check the repository for a runaway push loop; "
                "--repository REGEX can leave it out",
            )
        manifests: dict[str, Manifest] = {}
        for digest in sorted(self.revisions):
            manifest = self.blobs.manifest(self.name, digest)
            if manifest is None:
                self.warnings.append(
                    f"{self.name}@{digest}: a revision whose manifest data is missing from the "
                    "storage; it is left alone"
                )
                continue
            manifests[digest] = manifest
        return manifests

    def tags(self, manifests: dict[str, Manifest]) -> tuple[list[Tag], dict[str, list[str]]]:
        tags: list[Tag] = []
        tags_of: dict[str, list[str]] = {}
        for tag, digest in sorted(self.current.items()):
            if digest is None or digest not in manifests:
                self.warnings.append(
                    f"{self.name}:{tag} is listed but its manifest is gone (a dangling tag)"
                )
                self.dangling.append(tag)  # planned only with settings.untag
                continue
            tags.append(Tag(tag, digest))
            tags_of.setdefault(digest, []).append(tag)
        return tags, tags_of

    def images(
        self, manifests: dict[str, Manifest], tags_of: dict[str, list[str]]
    ) -> tuple[Image, ...]:
        """As the API walk: a tagged manifest's own entry, then index children (with their
        platform), then every other revision; each built by the same code."""
        # each index walked once per digest, as in the API walk, however many indexes list it
        memo: IndexMemo = _SingleFlight[tuple[list[Image], int]]().get
        blobs = self.blobs

        def images_of(digest: str, tag_names: list[str]) -> list[Image]:
            return build_images(
                self.name,
                manifests[digest],
                tag_names,
                child=manifests.get,
                config=blobs.config,
                warn=self.warnings.append,
                blob_size=blobs.size,
                memo=memo,
            )

        chosen: dict[str, Image] = {}
        children: list[Image] = []
        for digest in sorted(tags_of):
            first, *below = images_of(digest, tags_of[digest])
            chosen[digest] = first
            children.extend(below)
        untagged_children: list[Image] = []
        untagged: dict[str, Image] = {}
        for digest in sorted(manifests):
            if digest not in chosen:
                first, *below = images_of(digest, [])
                untagged[digest] = first
                untagged_children.extend(below)
        for image in (*children, *untagged_children):
            chosen.setdefault(image.digest, image)
        for digest, image in untagged.items():
            chosen.setdefault(digest, image)
        return tuple(self._settled(image) for _, image in sorted(chosen.items()))

    def _settled(self, image: Image) -> Image:
        """The image with its push time, sharing what many images hold: one `Blob` per blob
        and one string per media type or platform (a tenth of the memory, and far less to
        send back from a worker process)."""
        pushed = self.revisions.get(image.digest)
        shared = self.blobs.shared
        values = list(_IMAGE_VALUES(image))  # dataclasses.replace, at a third of the cost
        values[_PUSHED_AT] = None if pushed is None else _when(pushed)
        values[_BLOBS] = tuple([shared.setdefault(b, b) for b in image.blobs])
        values[_MEDIA_TYPE] = sys.intern(image.media_type)
        if image.platform is not None:
            values[_PLATFORM] = sys.intern(image.platform)
        return Image(*values)


def read_repository(files: Files, blobs: Blobs, name: str) -> Read:
    """One repository, every manifest revision of it, tagged or not. Raises StorageError for a
    damaged storage; what the API walk also tolerates (a dangling tag, a missing manifest or
    config) is a warning."""
    reading = _Repository(files, blobs, name)
    blobs.warnings = reading.warnings  # a missing config is this repository's warning
    reading.read_layout()
    manifests = reading.manifests()
    tags, tags_of = reading.tags(manifests)
    images = reading.images(manifests, tags_of)
    repository = Repository(
        name=name,
        tags=tuple(tags),
        images=images,
        history=tuple(sorted(reading.history, key=lambda e: (e.tag, e.at, e.digest))),
        dangling_tags=tuple(reading.dangling),
    )
    return Read(repository, tuple(reading.warnings))
