"""Walks the registry concurrently into an immutable `Inventory`.

Requests: one tags/list per repository, one manifest GET per tag, one GET per index child and one
config GET per distinct config digest — children and configs come from the digest cache when it
holds them. Never deletes anything; a walk that cannot complete raises InventoryError.
"""

from __future__ import annotations

import hashlib
import logging
import threading
from collections.abc import Callable, Iterable, Sequence
from concurrent.futures import FIRST_EXCEPTION, Future, ThreadPoolExecutor, wait
from dataclasses import dataclass, replace
from datetime import datetime
from typing import Generic, TypeVar, cast

from retention.cache import DigestCache
from retention.errors import AuthError, InventoryError, RegistryError
from retention.model import Blob, Image, Inventory, Kind, Repository, Tag, outside_grammar
from retention.oci import (
    CREATED_ANNOTATION,
    IMAGE_CONFIG_TYPES,
    Descriptor,
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

# Distinct manifests (tagged, index children, nested indexes) one repository may hold before the
# walk refuses it: ten times the 10,000-tag benchmark registry, in one repository, at about
# 5 KB of walk memory each (benchmarks/RESULTS.md) ~0.5 GB. A registry that lists more is
# broken or hostile; docs/decisions.md, "Bounded manifest graphs".
MAX_MANIFESTS_PER_REPOSITORY = 100_000

# (phase, done, total): how far the walk is; the CLI draws it on a TTY and ignores it otherwise
Progress = Callable[[str, int, int], None]


T = TypeVar("T")
A = TypeVar("A")
R = TypeVar("R")

_PROGRESS_EVERY = 0.2  # seconds between progress reports during a phase


def _no_progress(phase: str, done: int, total: int) -> None:
    return None


@dataclass(frozen=True, slots=True)
class _Resolved:
    """One tag's answer: the manifest it points at now."""

    repository: str
    tag: str
    manifest: Manifest | None  # None: listed but its manifest is gone (a dangling tag)


class _SingleFlight(Generic[T]):
    """Runs a function once per key, even when many threads ask for the same key at once.

    Keeps each finished call's outcome (value or exception), not a Future: a Future carries a
    Condition, and a 10,000-tag walk holds one outcome per config and platform manifest. While a
    call runs, its key holds a plain lock the caller has acquired; others wait on that lock.
    """

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._running: dict[str, threading.Lock] = {}
        self._done: dict[str, tuple[T] | BaseException] = {}

    def get(self, key: str, fetch: Callable[[], T]) -> T:
        with self._lock:
            outcome = self._done.get(key)
            running = self._running.get(key) if outcome is None else None
            if outcome is None and running is None:
                mine = threading.Lock()
                mine.acquire()
                self._running[key] = mine
        if running is not None:
            with running:  # released when the running call has stored its outcome
                pass
            outcome = self._done[key]
        if outcome is not None:
            if isinstance(outcome, BaseException):
                raise outcome
            return outcome[0]
        try:
            value = fetch()
        except BaseException as exc:
            self._finish(key, exc, mine)
            raise
        self._finish(key, (value,), mine)
        return value

    def _finish(self, key: str, outcome: tuple[T] | BaseException, mine: threading.Lock) -> None:
        with self._lock:
            self._done[key] = outcome
            del self._running[key]
        mine.release()


class _Walker:
    def __init__(
        self,
        client: RegistryClient,
        cache: DigestCache | None,
        pool: ThreadPoolExecutor,
        concurrency: int,
        progress: Progress,
    ) -> None:
        self.client = client
        self.cache = cache
        self.pool = pool
        self.concurrency = concurrency
        self.progress = progress
        # parsed once per digest, whichever thread asks first; the bytes are not kept
        self.configs: _SingleFlight[ImageConfig | None] = _SingleFlight()
        self.children: _SingleFlight[Manifest | None] = _SingleFlight()
        # manifests already fetched by tag, per repository and digest: an index child that is
        # also tagged needs no request of its own (filled once the tags are resolved)
        self.resolved: dict[str, dict[str, Manifest]] = {}
        # each index walked once per repository, however many indexes list it: the images it
        # stands for, and the height of the index tree below it (1: no nested index)
        self.indexes: _SingleFlight[tuple[list[Image], int]] = _SingleFlight()
        # distinct manifest digests met per repository, against MAX_MANIFESTS_PER_REPOSITORY
        self.seen: dict[str, set[str]] = {}
        self.max_manifests = MAX_MANIFESTS_PER_REPOSITORY
        # a repository named by the caller (not the catalog) that the registry does not know
        self.unknown_is_empty = False
        self.warnings: list[str] = []
        self._lock = threading.Lock()

    def _warn(self, message: str) -> None:
        log.warning("%s", message)
        with self._lock:
            self.warnings.append(message)

    def _load(self, digest: str, fetch: Callable[[], bytes]) -> bytes:
        """Bytes for a digest from the cache, else fetched and cached."""
        if self.cache is not None:
            hit = self.cache.get(digest)
            if hit is not None:
                return hit
        data = fetch()
        if self.cache is not None:
            self.cache.put(digest, data)
        return data

    def list_tags(self, repository: str) -> list[str]:
        def bad_tag(tag: str) -> None:
            self._warn(outside_grammar("tag", tag, f"tags/list of {repository}"))

        try:
            return self.client.list_tags(repository, bad_tag)
        except RegistryError as exc:
            if exc.status == 404 and self.unknown_is_empty:  # NAME_UNKNOWN: it holds nothing
                return []
            raise

    def resolve(self, repository: str, tag: str) -> _Resolved:
        fetched = self.client.get_manifest(repository, tag)
        if fetched is None:
            return _Resolved(repository, tag, None)
        # not cached: a tag can move, so the next walk GETs it again whatever the cache holds
        return _Resolved(repository, tag, fetched.manifest)

    def count(self, repository: str, digests: Iterable[str]) -> None:
        """Note manifests met in `repository`; refuses it past the cap on distinct manifests."""
        with self._lock:
            seen = self.seen.setdefault(repository, set())
            seen.update(digests)
            over = len(seen) > self.max_manifests
        if over:
            raise InventoryError(
                f"{repository}: the registry lists more than {self.max_manifests:,} distinct "
                "manifests in this repository (tags, index children and nested indexes); "
                "retention does not plan such a repository",
                hint="check the repository for a runaway push loop or a broken registry; "
                "--repository REGEX can leave it out",
            )

    def child(self, repository: str, digest: str) -> Manifest | None:
        tagged = self.resolved.get(repository, {}).get(digest)
        if tagged is not None:
            return tagged
        self.count(repository, (digest,))

        def fetch() -> bytes:
            fetched = self.client.get_manifest(repository, digest)
            if fetched is None:
                raise _Missing(digest)
            return fetched.raw

        def load() -> Manifest | None:
            try:
                raw = self._load(digest, fetch)
            except _Missing:
                return None
            # the bytes hash to `digest` (checked on fetch and on cache read); cached children
            # carry no Content-Type, so the media type comes from the body
            return parse_manifest(raw, None, digest)

        return self.children.get(digest, load)

    def config(self, repository: str, manifest: Manifest) -> ImageConfig | None:
        cfg = manifest.config
        if cfg is None or cfg.media_type not in IMAGE_CONFIG_TYPES:
            return None

        def load() -> ImageConfig | None:
            try:
                raw = self._load(cfg.digest, lambda: self.client.get_blob(repository, cfg.digest))
            except RegistryError as exc:
                if exc.status != 404:
                    raise
                # A registry after a bad garbage collection: the image cannot be pulled, but its
                # tags and digest are known. Its age is unknown, which keeps it (docs/decisions.md,
                # "A config blob missing from storage").
                self._warn(
                    f"{repository}@{manifest.digest}: its config blob {cfg.digest} is missing "
                    "from the registry (404), so its created date is unknown"
                )
                return None
            return parse_config(raw, cfg.digest)

        return self.configs.get(cfg.digest, load)

    def image(self, repository: str, manifest: Manifest, tags: Iterable[str]) -> list[Image]:
        """The Image for `manifest`, and for an index also one per platform manifest."""
        return build_images(
            repository,
            manifest,
            tags,
            child=lambda digest: self.child(repository, digest),
            config=lambda m: self.config(repository, m),
            warn=self._warn,
            memo=self.indexes.get,
        )


def _descriptor_size(desc: Descriptor) -> int:
    return desc.size


# (key, walk) -> the walk's outcome, computed once per key: the images an index stands for and
# the height of the index tree below it (1: no nested index). `_SingleFlight.get` is one.
IndexMemo = Callable[[str, Callable[[], tuple[list[Image], int]]], tuple[list[Image], int]]


def build_images(
    repository: str,
    manifest: Manifest,
    tags: Iterable[str],
    *,
    child: Callable[[str], Manifest | None],
    config: Callable[[Manifest], ImageConfig | None],
    warn: Callable[[str], None],
    blob_size: Callable[[Descriptor], int] = _descriptor_size,
    memo: IndexMemo | None = None,
) -> list[Image]:
    """The Image for `manifest`, and for an index also one per platform manifest (recursively).

    The one path from manifests and configs to `Image` values, for the API walk here and the
    storage reader (retention/storage/repository.py): `child` gives a manifest the index lists
    (None when the registry lacks it), `config` the parsed config of an image manifest,
    `blob_size` the size a config or layer takes (the descriptor's from the API, `stat` from the
    storage).
    `memo` walks each index once per (repository, digest), however many indexes list it; pass
    the same one for a whole repository (a fresh one per call otherwise).
    """
    if manifest.is_index:
        walk = _IndexWalk(
            repository,
            child,
            config,
            warn,
            blob_size,
            memo or _SingleFlight[tuple[list[Image], int]]().get,
        )
        images, _ = walk.tree(manifest)
        return images
    return [image_of(manifest, config(manifest), tags=tags, platform=None, blob_size=blob_size)]


def image_of(
    manifest: Manifest,
    config: ImageConfig | None,
    *,
    tags: Iterable[str],
    platform: str | None,
    blob_size: Callable[[Descriptor], int] = _descriptor_size,
) -> Image:
    """The Image of a single (non-index) manifest and its parsed config, if any."""
    created_raw = config.created if config else None
    created = _created(manifest, config)
    blobs = tuple(
        Blob(d.digest, blob_size(d)) for d in ((manifest.config,) if manifest.config else ())
    ) + tuple(Blob(d.digest, blob_size(d)) for d in manifest.layers)
    tag_list = list(tags)
    artifact = (
        manifest.subject is not None
        or manifest.artifact_type is not None
        or (manifest.config is not None and manifest.config.media_type not in IMAGE_CONFIG_TYPES)
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


@dataclass(frozen=True, slots=True)
class _IndexWalk:
    """An index, then its platform manifests, then (nested indexes) theirs, recursively."""

    repository: str
    child_of: Callable[[str], Manifest | None]
    config: Callable[[Manifest], ImageConfig | None]
    warn: Callable[[str], None]
    blob_size: Callable[[Descriptor], int]
    memo: IndexMemo

    def tree(self, manifest: Manifest) -> tuple[list[Image], int]:
        """The index's images and the height of the tree, walked once per (repository, digest):
        an index listed by many others (or many times by one) costs one walk, not one per path
        to it. Digests make a cycle impossible, so the recursion ends."""
        return self.memo(f"{self.repository}@{manifest.digest}", lambda: self._walk(manifest))

    def _walk(self, manifest: Manifest) -> tuple[list[Image], int]:
        repository = self.repository
        children: list[Image] = []
        below: dict[str, Image] = {}  # platform manifests of nested indexes, by digest
        listed: set[str] = set()
        height = 1
        for desc in manifest.children:
            if desc.digest in listed:
                continue  # listed twice (another platform, or hostile): one image, counted once
            listed.add(desc.digest)
            child = self.child_of(desc.digest)
            if child is None:
                self.warn(
                    f"{repository}: index {manifest.digest} lists {desc.digest}, which the "
                    "registry does not have; its size is not counted"
                )
                continue
            platform = str(desc.platform) if desc.platform else None
            if child.is_index:
                # Nested indexes are rare, but what they reference must be known: a kept one
                # keeps its platform manifests, which another, deleted index may share.
                (nested, *grandchildren), nested_height = self.tree(child)
                height = max(height, nested_height + 1)
                if height > _MAX_INDEX_DEPTH:
                    raise InventoryError(
                        f"{repository}: index {manifest.digest} nests indexes more than "
                        f"{_MAX_INDEX_DEPTH} levels deep; retention does not plan such a "
                        "repository"
                    )
                children.append(replace(nested, platform=platform))
                for grandchild in grandchildren:
                    below.setdefault(grandchild.digest, grandchild)
            else:
                children.append(
                    image_of(
                        child,
                        self.config(child),
                        tags=(),
                        platform=platform,
                        blob_size=self.blob_size,
                    )
                )
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
        child_digests = {c.digest for c in children}
        return [
            index,
            *children,
            *(b for digest, b in below.items() if digest not in child_digests),
        ], height


class _Missing(Exception):
    """A child manifest the index lists is not in the registry (internal, never escapes)."""


def _created(manifest: Manifest, config: ImageConfig | None) -> datetime | None:
    """The config's `created` (OCI image spec, config.md), else the
    `org.opencontainers.image.created` annotation (annotations.md) or label, else unknown."""
    if config is not None:
        when = parse_created(config.created)
        if when is not None:
            return when
    when = parse_created(manifest.annotation(CREATED_ANNOTATION))
    if when is None and config is not None:
        when = parse_created(config.label(CREATED_ANNOTATION))
    return when


@dataclass(frozen=True, slots=True)
class Shard:
    """Worker `index` of `count` (0-based, as a Kubernetes Indexed Job numbers its pods)."""

    index: int
    count: int

    def __post_init__(self) -> None:
        if self.count < 1 or not 0 <= self.index < self.count:
            raise InventoryError(
                f"shard {self.index}/{self.count} does not exist",
                hint="a shard is K/N with N >= 1 and 0 <= K < N",
            )

    def __str__(self) -> str:
        return f"{self.index}/{self.count}"

    def __contains__(self, repository: str) -> bool:
        return in_shard(repository, self.index, self.count)


def in_shard(repository: str, index: int, count: int) -> bool:
    """Whether `repository` belongs to shard `index` of `count`: the SHA-256 of its UTF-8 name,
    read as a big-endian integer, modulo `count`.

    Stable across processes, machines and Python versions (unlike `hash()`), so N workers split
    a registry between them without talking: every repository lands in exactly one shard.
    """
    digest = hashlib.sha256(repository.encode("utf-8")).digest()
    return int.from_bytes(digest, "big") % count == index


def take_inventory(
    client: RegistryClient,
    *,
    now: datetime,
    select: Callable[[str], bool] = lambda name: True,
    complete: bool = True,
    concurrency: int = 8,
    cache: DigestCache | None = None,
    progress: Progress = _no_progress,
    repositories: Iterable[str] | None = None,
) -> Inventory:
    """Walk every catalog repository that `select` accepts.

    `complete` says whether `select` admits the whole registry (no --repository or --shard):
    only then are reclaimable bytes exact. `repositories`, when given, are walked instead of the
    catalog's (no catalog request: apply's account may not read it); one the registry does not
    know (404 on tags/list) is empty.
    """
    invalid: list[str] = []

    def bad_repository(name: str) -> None:
        invalid.append(outside_grammar("repository", name, "the catalog"))

    if repositories is not None:
        return _take_named(
            client,
            sorted(set(repositories)),
            now=now,
            complete=complete,
            concurrency=concurrency,
            cache=cache,
            progress=progress,
        )
    try:
        names = sorted(name for name in client.catalog(bad_repository) if select(name))
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
    return _take_named(
        client,
        names,
        now=now,
        complete=complete,
        concurrency=concurrency,
        cache=cache,
        progress=progress,
        catalog=True,
        warnings=invalid,
    )


def _take_named(
    client: RegistryClient,
    repositories: list[str],
    *,
    now: datetime,
    complete: bool,
    concurrency: int,
    cache: DigestCache | None,
    progress: Progress,
    catalog: bool = False,
    warnings: Sequence[str] = (),
) -> Inventory:
    workers = max(1, concurrency)
    with ThreadPoolExecutor(max_workers=workers) as pool:
        walker = _Walker(client, cache, pool, workers, progress)
        walker.unknown_is_empty = not catalog
        for warning in warnings:  # names the catalog listed outside the grammar
            walker._warn(warning)
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


def _fan_out(
    pool: ThreadPoolExecutor,
    concurrency: int,
    progress: Progress,
    phase: str,
    work: Callable[[A], R],
    items: Sequence[A],
) -> list[R]:
    """`work` of every item, in order, by `concurrency` workers pulling from one shared queue.

    Not `pool.map`: that makes a Future (and its Condition) per item, 21,000 on a 10,000-tag
    walk, a measurable share of the walk's CPU. The first failure stops the workers (each
    finishes the item in hand) and is raised here. Progress is reported from this thread.
    """
    results: list[R | None] = [None] * len(items)
    source = iter(range(len(items)))
    lock = threading.Lock()
    stop = threading.Event()
    finished = [0]

    def drain() -> None:
        while not stop.is_set():
            with lock:
                index = next(source, None)
            if index is None:
                return
            results[index] = work(items[index])
            with lock:
                finished[0] += 1

    total = len(items)
    workers = [pool.submit(drain) for _ in range(min(concurrency, total))]
    try:
        pending: set[Future[None]] = set(workers)
        while pending:
            done, pending = wait(pending, timeout=_PROGRESS_EVERY, return_when=FIRST_EXCEPTION)
            progress(phase, finished[0], total)
            for future in done:
                future.result()  # the first failure, raised while the others stop
    finally:
        stop.set()
    return cast("list[R]", results)


def _walk(walker: _Walker, repositories: list[str]) -> list[Repository]:
    def fan_out(phase: str, work: Callable[[A], R], items: Sequence[A]) -> list[R]:
        return _fan_out(walker.pool, walker.concurrency, walker.progress, phase, work, items)

    tag_lists = fan_out("repositories", walker.list_tags, repositories)
    jobs = [(repo, tag) for repo, tags in zip(repositories, tag_lists, strict=True) for tag in tags]
    resolved = fan_out("tags", lambda job: walker.resolve(*job), jobs)

    by_repo: dict[str, dict[str, Manifest]] = {repo: {} for repo in repositories}
    tags_of: dict[str, dict[str, list[str]]] = {repo: {} for repo in repositories}
    repo_tags: dict[str, list[Tag]] = {repo: [] for repo in repositories}
    dangling: dict[str, list[str]] = {repo: [] for repo in repositories}
    for r in resolved:
        if r.manifest is None:
            # evaluate plans it only with settings.untag (docs/decisions.md, "Untag")
            walker._warn(
                f"{r.repository}:{r.tag} is listed but its manifest is gone (a dangling tag)"
            )
            dangling[r.repository].append(r.tag)
            continue
        by_repo[r.repository][r.manifest.digest] = r.manifest
        tags_of[r.repository].setdefault(r.manifest.digest, []).append(r.tag)
        repo_tags[r.repository].append(Tag(r.tag, r.manifest.digest))
    for repo, manifests in by_repo.items():
        walker.count(repo, manifests)
    walker.resolved = by_repo

    image_jobs = [
        (repo, manifest, tags_of[repo][digest])
        for repo in repositories
        for digest, manifest in sorted(by_repo[repo].items())
    ]
    images_of: dict[str, dict[str, Image]] = {repo: {} for repo in repositories}
    children: list[tuple[str, Image]] = []
    results = fan_out("images", lambda job: walker.image(*job), image_jobs)
    for (repo, _, _), (image, *platforms) in zip(image_jobs, results, strict=True):
        images_of[repo][image.digest] = image
        children.extend((repo, child) for child in platforms)
    for repo, child in children:
        # a platform manifest that is also tagged keeps its own, tagged entry
        images_of[repo].setdefault(child.digest, child)
    _add_referrers(walker, images_of)

    return [
        Repository(
            name=repo,
            tags=tuple(sorted(repo_tags[repo], key=lambda t: t.name)),
            images=tuple(sorted(images_of[repo].values(), key=lambda i: i.digest)),
            dangling_tags=tuple(sorted(dangling[repo])),
        )
        for repo in repositories
    ]


def _add_referrers(walker: _Walker, images_of: dict[str, dict[str, Image]]) -> None:
    """Untagged referrers the OCI 1.1 referrers API lists (GET /v2/<name>/referrers/<digest>),
    added to their repository's images, and theirs in turn (a signature of an SBOM). The API is
    probed once per walk, on the first image: where it does not answer (404/400/405, as on
    distribution), that one request is all, and the tag-schema fallback (`sha256-<hex>` tags,
    walked as tags) is what finds referrers. Each referrer carries its `subject`, so evaluate
    deletes it with its subject (docs/registries.md)."""

    def fan_out(phase: str, work: Callable[[A], R], items: Sequence[A]) -> list[R]:
        return _fan_out(walker.pool, walker.concurrency, walker.progress, phase, work, items)

    everything = [(repo, digest) for repo in images_of for digest in sorted(images_of[repo])]
    if not everything:
        return
    first = walker.client.referrers(*everything[0])
    if first is None:
        return
    pending = everything[1:]
    known: dict[tuple[str, str], list[str]] = {everything[0]: first}
    while known or pending:
        lists = fan_out("referrers", lambda job: walker.client.referrers(*job) or [], pending)
        known.update(zip(pending, lists, strict=True))
        new = sorted(
            {(repo, r) for (repo, _), found in known.items() for r in found}
            - {(repo, d) for repo in images_of for d in images_of[repo]}
        )
        known = {}

        def load(job: tuple[str, str]) -> list[Image]:
            manifest = walker.child(*job)
            return [] if manifest is None else walker.image(job[0], manifest, ())

        for (repo, digest), images in zip(new, fan_out("referrers", load, new), strict=True):
            if not images:
                walker._warn(f"{repo}: the referrers API lists {digest}, which it does not have")
                continue
            for image in images:
                images_of[repo].setdefault(image.digest, image)
        pending = [job for job in new if job[1] in images_of[job[0]]]
