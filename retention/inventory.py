"""Walks the registry concurrently into an immutable `Inventory`.

Requests: one tags/list per repository, one manifest GET per tag, one GET per index child and one
config GET per distinct config digest — children and configs come from the digest cache when it
holds them. Never deletes anything; a walk that cannot complete raises InventoryError.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable, Iterable
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, replace
from datetime import datetime

from retention.cache import DigestCache
from retention.errors import AuthError, InventoryError, RegistryError
from retention.model import Blob, Image, Inventory, Kind, Repository, Tag
from retention.oci import (
    CREATED_ANNOTATION,
    IMAGE_CONFIG_TYPES,
    ImageConfig,
    Manifest,
    cosign_subject,
    parse_config,
    parse_created,
    parse_manifest,
)
from retention.registry.client import RegistryClient

log = logging.getLogger(__name__)

# Deeper nesting is refused: digests make a cycle impossible, but not a pathological depth.
_MAX_INDEX_DEPTH = 8

# (phase, done, total): how far the walk is; the CLI draws it on a TTY and ignores it otherwise
Progress = Callable[[str, int, int], None]


def _no_progress(phase: str, done: int, total: int) -> None:
    return None


@dataclass(frozen=True, slots=True)
class _Resolved:
    """One tag's answer: the manifest it points at now."""

    repository: str
    tag: str
    manifest: Manifest | None  # None: listed but its manifest is gone (a dangling tag)


class _SingleFlight:
    """Runs a function once per key, even when many threads ask for the same key at once."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._futures: dict[str, Future[bytes]] = {}

    def get(self, key: str, fetch: Callable[[], bytes]) -> bytes:
        with self._lock:
            future = self._futures.get(key)
            owner = future is None
            if future is None:
                future = Future()
                self._futures[key] = future
        if owner:
            try:
                future.set_result(fetch())
            except BaseException as exc:
                future.set_exception(exc)
        return future.result()


class _Walker:
    def __init__(
        self,
        client: RegistryClient,
        cache: DigestCache | None,
        pool: ThreadPoolExecutor,
        progress: Progress,
    ) -> None:
        self.client = client
        self.cache = cache
        self.pool = pool
        self.progress = progress
        self.flight = _SingleFlight()
        self.warnings: list[str] = []
        self._lock = threading.Lock()

    def _warn(self, message: str) -> None:
        log.warning("%s", message)
        with self._lock:
            self.warnings.append(message)

    def _cached(self, digest: str, fetch: Callable[[], bytes]) -> bytes:
        """Bytes for a digest from the cache, else fetched once (single-flight) and cached."""

        def load() -> bytes:
            if self.cache is not None:
                hit = self.cache.get(digest)
                if hit is not None:
                    return hit
            data = fetch()
            if self.cache is not None:
                self.cache.put(digest, data)
            return data

        return self.flight.get(digest, load)

    def resolve(self, repository: str, tag: str) -> _Resolved:
        fetched = self.client.get_manifest(repository, tag)
        if fetched is None:
            return _Resolved(repository, tag, None)
        if self.cache is not None and self.cache.get(fetched.manifest.digest) is None:
            self.cache.put(fetched.manifest.digest, fetched.raw)
        return _Resolved(repository, tag, fetched.manifest)

    def child(self, repository: str, digest: str) -> Manifest | None:
        def fetch() -> bytes:
            fetched = self.client.get_manifest(repository, digest)
            if fetched is None:
                raise _Missing(digest)
            return fetched.raw

        try:
            raw = self._cached(digest, fetch)
        except _Missing:
            return None
        # the bytes hash to `digest` (checked on fetch and on cache read); cached children carry
        # no Content-Type, so the media type comes from the body
        return parse_manifest(raw, None, digest)

    def config(self, repository: str, manifest: Manifest) -> ImageConfig | None:
        cfg = manifest.config
        if cfg is None or cfg.media_type not in IMAGE_CONFIG_TYPES:
            return None
        try:
            raw = self._cached(cfg.digest, lambda: self.client.get_blob(repository, cfg.digest))
        except RegistryError as exc:
            if exc.status != 404:
                raise
            # A registry after a bad garbage collection: the image cannot be pulled, but its
            # tags and digest are known. Its age is unknown (DESIGN §2), which keeps it.
            self._warn(
                f"{repository}@{manifest.digest}: its config blob {cfg.digest} is missing from "
                "the registry (404), so its created date is unknown"
            )
            return None
        return parse_config(raw, cfg.digest)

    def image(self, repository: str, manifest: Manifest, tags: Iterable[str]) -> list[Image]:
        """The Image for `manifest`, and for an index also one per platform manifest."""
        if manifest.is_index:
            return self._index(repository, manifest)
        return [self._single(repository, manifest, tags=tags, platform=None)]

    def _single(
        self, repository: str, manifest: Manifest, *, tags: Iterable[str], platform: str | None
    ) -> Image:
        config = self.config(repository, manifest)
        created_raw = config.created if config else None
        created = _created(manifest, config)
        blobs = tuple(
            Blob(d.digest, d.size) for d in ((manifest.config,) if manifest.config else ())
        ) + tuple(Blob(d.digest, d.size) for d in manifest.layers)
        tag_list = list(tags)
        artifact = (
            manifest.subject is not None
            or manifest.artifact_type is not None
            or (
                manifest.config is not None and manifest.config.media_type not in IMAGE_CONFIG_TYPES
            )
            or (bool(tag_list) and all(cosign_subject(t) for t in tag_list))
        )
        return Image(
            digest=manifest.digest,
            media_type=manifest.media_type,
            kind=Kind.ARTIFACT if artifact else Kind.IMAGE,
            manifest_size=manifest.size,
            size=manifest.size + sum(b.size for b in blobs),
            created=created,
            created_raw=created_raw,
            config_digest=manifest.config.digest if manifest.config else None,
            blobs=blobs,
            platform=platform,
            subject=manifest.subject.digest if manifest.subject else None,
            artifact_type=manifest.artifact_type,
        )

    def _index(self, repository: str, manifest: Manifest, depth: int = 0) -> list[Image]:
        """The index, then its platform manifests, then (nested indexes) theirs, recursively."""
        if depth > _MAX_INDEX_DEPTH:
            raise InventoryError(
                f"{repository}: index {manifest.digest} is nested more than "
                f"{_MAX_INDEX_DEPTH} levels deep; retention does not plan such a repository"
            )
        children: list[Image] = []
        below: list[Image] = []  # platform manifests of nested indexes
        for desc in manifest.children:
            child = self.child(repository, desc.digest)
            if child is None:
                self._warn(
                    f"{repository}: index {manifest.digest} lists {desc.digest}, which the "
                    "registry does not have; its size is not counted"
                )
                continue
            platform = str(desc.platform) if desc.platform else None
            if child.is_index:
                # Nested indexes are rare, but what they reference must be known: a kept one
                # keeps its platform manifests, which another, deleted index may share.
                nested, *grandchildren = self._index(repository, child, depth + 1)
                children.append(replace(nested, platform=platform))
                below.extend(grandchildren)
            else:
                children.append(self._single(repository, child, tags=(), platform=platform))
        dated = [c.created for c in children if c.created is not None]
        created = max(dated) if dated else parse_created(manifest.annotation(CREATED_ANNOTATION))
        index = Image(
            digest=manifest.digest,
            media_type=manifest.media_type,
            kind=Kind.INDEX,
            manifest_size=manifest.size,
            size=manifest.size + sum(c.size for c in children),
            created=created,
            created_raw=None,
            children=tuple(d.digest for d in manifest.children),
            subject=manifest.subject.digest if manifest.subject else None,
            artifact_type=manifest.artifact_type,
        )
        return [index, *children, *below]


class _Missing(Exception):
    """A child manifest the index lists is not in the registry (internal, never escapes)."""


def _created(manifest: Manifest, config: ImageConfig | None) -> datetime | None:
    """DESIGN §2: the config's `created`, else the OCI annotation or label, else unknown."""
    if config is not None:
        when = parse_created(config.created)
        if when is not None:
            return when
    when = parse_created(manifest.annotation(CREATED_ANNOTATION))
    if when is None and config is not None:
        when = parse_created(config.label(CREATED_ANNOTATION))
    return when


def take_inventory(
    client: RegistryClient,
    *,
    now: datetime,
    select: Callable[[str], bool] = lambda name: True,
    complete: bool = True,
    concurrency: int = 8,
    cache: DigestCache | None = None,
    progress: Progress = _no_progress,
) -> Inventory:
    """Walk every catalog repository that `select` accepts.

    `complete` says whether `select` admits the whole registry (no --repository or --shard):
    only then are reclaimable bytes exact.
    """
    try:
        repositories = sorted(name for name in client.catalog() if select(name))
    except RegistryError as exc:
        # the catalog hint fits a refusal only: on a connection error it would send the reader
        # after credentials when the registry is down or the URL is wrong
        hint = exc.hint
        if isinstance(exc, AuthError) and exc.status == 403:
            # authenticated, but not allowed to list: the catalog needs its own scope
            hint = "check that the credentials may read the catalog (scope registry:catalog:*)"
        raise InventoryError(
            f"cannot list the registry's repositories: {_first_line(exc)}", hint=hint
        ) from exc
    with ThreadPoolExecutor(max_workers=max(1, concurrency)) as pool:
        walker = _Walker(client, cache, pool, progress)
        try:
            repos = _walk(walker, repositories)
        except RegistryError as exc:
            raise InventoryError(
                f"the registry walk failed: {_first_line(exc)}", hint=exc.hint
            ) from exc
    inventory = Inventory(
        registry=client.url,
        taken_at=now,
        repositories=tuple(repos),
        complete=complete,
        warnings=tuple(walker.warnings),
    )
    return inventory


def _first_line(exc: RegistryError) -> str:
    """The error with its status and URL, without the hint (the caller passes that on)."""
    return exc.diagnostics().splitlines()[0]


def _walk(walker: _Walker, repositories: list[str]) -> list[Repository]:
    pool = walker.pool
    tag_lists = list(pool.map(walker.client.list_tags, repositories))
    walker.progress("repositories", len(repositories), len(repositories))
    jobs = [(repo, tag) for repo, tags in zip(repositories, tag_lists, strict=True) for tag in tags]
    total = len(jobs)
    resolved: list[_Resolved] = []
    for done, result in enumerate(pool.map(lambda job: walker.resolve(*job), jobs), start=1):
        resolved.append(result)
        walker.progress("tags", done, total)

    by_repo: dict[str, dict[str, Manifest]] = {repo: {} for repo in repositories}
    tags_of: dict[str, dict[str, list[str]]] = {repo: {} for repo in repositories}
    repo_tags: dict[str, list[Tag]] = {repo: [] for repo in repositories}
    for r in resolved:
        if r.manifest is None:
            walker._warn(
                f"{r.repository}:{r.tag} is listed but its manifest is gone (a dangling tag); "
                "it is left alone"
            )
            continue
        by_repo[r.repository][r.manifest.digest] = r.manifest
        tags_of[r.repository].setdefault(r.manifest.digest, []).append(r.tag)
        repo_tags[r.repository].append(Tag(r.tag, r.manifest.digest))

    image_jobs = [
        (repo, manifest, tags_of[repo][digest])
        for repo in repositories
        for digest, manifest in sorted(by_repo[repo].items())
    ]
    images_of: dict[str, dict[str, Image]] = {repo: {} for repo in repositories}
    children: list[tuple[str, Image]] = []
    total = len(image_jobs)
    results = pool.map(lambda job: walker.image(*job), image_jobs)
    for done, ((repo, _, _), (image, *platforms)) in enumerate(
        zip(image_jobs, results, strict=True), start=1
    ):
        images_of[repo][image.digest] = image
        children.extend((repo, child) for child in platforms)
        walker.progress("images", done, total)
    for repo, child in children:
        # a platform manifest that is also tagged keeps its own, tagged entry
        images_of[repo].setdefault(child.digest, child)

    return [
        Repository(
            name=repo,
            tags=tuple(sorted(repo_tags[repo], key=lambda t: t.name)),
            images=tuple(sorted(images_of[repo].values(), key=lambda i: i.digest)),
        )
        for repo in repositories
    ]
