"""Reads a distribution registry's filesystem storage, read-only, into an `Inventory`.

The layout (distribution 2.x and 3.x, `storage.filesystem.rootdirectory`), under
`docker/registry/v2/`:

    repositories/<name>/_manifests/tags/<tag>/current/link             the tag's manifest now
    repositories/<name>/_manifests/tags/<tag>/index/sha256/<hex>/link  every digest it had
    repositories/<name>/_manifests/revisions/sha256/<hex>/link         every manifest (mtime)
    blobs/sha256/<hex[:2]>/<hex>/data                                  manifest/config/layer

Each link file holds one digest. A repository is a folder holding `_manifests`; names nest.
Nothing here writes, renames or locks: files are opened O_RDONLY|O_NOFOLLOW, folders are listed
with their entries' own types, and a symbolic link anywhere is an error, never followed
(docs/decisions.md, "Storage inventory"). Manifests and configs are turned into `Image` values by
`retention.inventory.build_images`, the API walk's own code. Deletion never happens here.
"""

from __future__ import annotations

import errno
import logging
import os
import stat
import threading
import time
from collections.abc import Callable, Mapping
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, replace
from datetime import UTC, datetime

from retention.errors import InventoryError, ProtocolError, RegistryError
from retention.inventory import (
    MAX_MANIFESTS_PER_REPOSITORY,
    IndexMemo,
    Progress,
    _fan_out,
    _SingleFlight,
    build_images,
)
from retention.model import Image, Inventory, Repository, Tag, TagEvent
from retention.oci import (
    IMAGE_CONFIG_TYPES,
    Descriptor,
    ImageConfig,
    Manifest,
    is_digest,
    is_repository,
    is_tag,
    parse_config,
    parse_manifest,
    sha256_digest,
)
from retention.registry.client import RegistryClient
from retention.text import untrusted

log = logging.getLogger(__name__)

V2 = os.path.join("docker", "registry", "v2")
_LINK_MAX = 256  # a link file holds "sha256:<64 hex>"; anything longer is not a link
_MANIFEST_MAX = 4 * 1024 * 1024  # distribution's own limit on a manifest
_CONFIG_MAX = 8 * 1024 * 1024
_FLAGS = (
    os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC | getattr(os, "O_NOATIME", 0)
)  # NONBLOCK: a FIFO planted where a file belongs must not hang the read

# A tag the API and the storage disagree about is a push (or delete) in flight when a second look
# at the storage agrees with the API and the tag's link changed less than this long ago.
IN_FLIGHT_SECONDS = 300

_HINT_ROOT = (
    "set registry.storage.filesystem to the registry's storage.filesystem.rootdirectory "
    "(the folder that holds docker/registry/v2), or use --inventory-source api"
)
_HINT_READ = (
    "run retention on the registry host as a user that may read the storage, or in a pod that "
    "mounts the registry's volume read-only (docs/registries.md)"
)
_HINT_GARBAGE = (
    "a file of the registry's storage is half-written or damaged; nothing was planned. If a "
    "push was running, plan again; otherwise check the registry (docs/troubleshooting.md)"
)


class StorageError(InventoryError):
    """The storage cannot be read as a registry's: missing, unreadable, not a root, damaged."""


def _garbage(path: str, what: str) -> StorageError:
    return StorageError(f"{path}: {what}", hint=_HINT_GARBAGE)


def _os_error(path: str, exc: OSError) -> StorageError:
    if exc.errno == errno.ELOOP:
        return StorageError(
            f"{path} is a symbolic link: retention never follows links in the registry's storage",
            hint="distribution never writes links there; replace it with the file or folder",
        )
    if isinstance(exc, PermissionError):
        return StorageError(f"cannot read {path}: permission denied", hint=_HINT_READ)
    return StorageError(f"cannot read {path}: {exc.strerror or exc}", hint=_HINT_READ)


def _when(seconds: float) -> datetime:
    return datetime.fromtimestamp(seconds, UTC)


@dataclass(frozen=True, slots=True)
class _Link:
    digest: str
    mtime: datetime


class _Reader:
    """The storage root and its blob store; methods are safe to call from many threads."""

    def __init__(self, root: str) -> None:
        self.root = root
        self.v2 = os.path.join(root, V2)
        self.blobs = os.path.join(self.v2, "blobs")
        self._sizes: dict[str, int | None] = {}
        self._configs: dict[str, ImageConfig | None] = {}
        self._dirs_ok: set[str] = set()
        self._lock = threading.Lock()
        self.warnings: list[str] = []
        self.missing_blobs: set[str] = set()

    def warn(self, message: str) -> None:
        log.warning("%s", message)
        with self._lock:
            self.warnings.append(message)

    # -- files and folders ---------------------------------------------------------------------

    def entries(self, path: str) -> list[os.DirEntry[str]]:
        """The entries of a folder, none of them a symbolic link; [] when it does not exist."""
        try:
            st = os.lstat(path)
        except FileNotFoundError:
            return []
        except OSError as exc:
            raise _os_error(path, exc) from exc
        if stat.S_ISLNK(st.st_mode):
            raise _os_error(path, OSError(errno.ELOOP, "symbolic link"))
        if not stat.S_ISDIR(st.st_mode):
            raise _garbage(path, "a file where the registry keeps a folder")
        try:
            with os.scandir(path) as it:
                found = list(it)
        except FileNotFoundError:
            return []  # removed since: a delete in flight
        except OSError as exc:
            raise _os_error(path, exc) from exc
        for entry in found:
            if entry.is_symlink():
                raise _os_error(entry.path, OSError(errno.ELOOP, "symbolic link"))
        return sorted(found, key=lambda e: e.name)

    def read(self, path: str, limit: int) -> tuple[bytes, os.stat_result] | None:
        """A regular file's bytes (at most `limit`) and its stat; None when it does not exist."""
        try:
            fd = os.open(path, _FLAGS)
        except FileNotFoundError:
            return None
        except PermissionError as exc:
            if getattr(os, "O_NOATIME", 0):  # O_NOATIME needs ownership; retry without it
                try:
                    fd = os.open(path, _FLAGS & ~os.O_NOATIME)
                except OSError as again:
                    raise _os_error(path, again) from again
            else:
                raise _os_error(path, exc) from exc
        except OSError as exc:
            raise _os_error(path, exc) from exc
        try:
            st = os.fstat(fd)
            if not stat.S_ISREG(st.st_mode):
                raise _garbage(path, "not a regular file")
            if st.st_size > limit:
                raise _garbage(path, f"{st.st_size} bytes, more than the {limit} it may hold")
            chunks = []
            left = st.st_size
            while left > 0:
                chunk = os.read(fd, left)
                if not chunk:
                    break
                chunks.append(chunk)
                left -= len(chunk)
            return b"".join(chunks), st
        finally:
            os.close(fd)

    def link(self, path: str, expect: str | None = None) -> _Link | None:
        """A link file's digest and mtime; None when it does not exist."""
        got = self.read(path, _LINK_MAX)
        if got is None:
            return None
        raw, st = got
        try:
            text = raw.decode("ascii")
        except UnicodeDecodeError:
            text = ""
        if not is_digest(text):
            shown = raw[:80].decode("ascii", "replace").encode("unicode_escape").decode()
            raise _garbage(path, f"a link file that does not hold a digest: {shown!r}")
        if expect is not None and text != expect:
            raise _garbage(path, f"names {text}, but the folder it is in names {expect}")
        return _Link(text, _when(st.st_mtime))

    def _blob_dir(self, digest: str) -> str:
        algorithm, hexpart = digest.split(":", 1)
        prefix = os.path.join(self.blobs, algorithm, hexpart[:2])
        if prefix not in self._dirs_ok:
            self._check_dir(prefix)
            with self._lock:
                self._dirs_ok.add(prefix)
        folder = os.path.join(prefix, hexpart)
        self._check_dir(folder)
        return folder

    def _check_dir(self, path: str) -> None:
        try:
            st = os.lstat(path)
        except FileNotFoundError:
            return  # the blob is missing; the caller finds out
        except OSError as exc:
            raise _os_error(path, exc) from exc
        if stat.S_ISLNK(st.st_mode):
            raise _os_error(path, OSError(errno.ELOOP, "symbolic link"))

    def blob(self, digest: str, limit: int) -> bytes | None:
        """A blob's bytes, checked against its digest; None when the storage lacks it."""
        path = os.path.join(self._blob_dir(digest), "data")
        got = self.read(path, limit)
        if got is None:
            return None
        raw = got[0]
        if digest.startswith("sha256:") and sha256_digest(raw) != digest:
            raise _garbage(path, f"its bytes do not hash to {digest} (half-written or damaged)")
        return raw

    def blob_size(self, desc: Descriptor) -> int:
        """The blob's size on disk (stat); 0, with one warning per run, when it is not there."""
        size = self._sizes.get(desc.digest, -1)
        if size == -1:
            path = os.path.join(self._blob_dir(desc.digest), "data")
            try:
                st = os.lstat(path)
            except FileNotFoundError:
                size = None
            except OSError as exc:
                raise _os_error(path, exc) from exc
            else:
                if stat.S_ISLNK(st.st_mode):
                    raise _os_error(path, OSError(errno.ELOOP, "symbolic link"))
                if not stat.S_ISREG(st.st_mode):
                    raise _garbage(path, "not a regular file")
                size = st.st_size
            self._sizes[desc.digest] = size
        if size is None:
            with self._lock:
                self.missing_blobs.add(desc.digest)
            return 0  # garbage collection cannot free what is not there
        return size

    def config(self, manifest: Manifest) -> ImageConfig | None:
        cfg = manifest.config
        if cfg is None or cfg.media_type not in IMAGE_CONFIG_TYPES:
            return None
        if cfg.digest in self._configs:
            return self._configs[cfg.digest]
        raw = self.blob(cfg.digest, _CONFIG_MAX)
        if raw is None:
            self.warn(
                f"{manifest.digest}: its config blob {cfg.digest} is missing from the storage, "
                "so its created date is unknown"
            )
            parsed = None
        else:
            parsed = parse_config(raw, cfg.digest)
        self._configs[cfg.digest] = parsed
        return parsed

    # -- the layout ----------------------------------------------------------------------------

    def repositories(self) -> list[str]:
        """Every repository name: a folder under repositories/ holding `_manifests`."""
        top = os.path.join(self.v2, "repositories")
        found: list[str] = []

        def walk(path: str, parts: tuple[str, ...]) -> None:
            entries = self.entries(path)
            if parts and any(e.name == "_manifests" and e.is_dir() for e in entries):
                name = "/".join(parts)
                if not is_repository(name):
                    raise _garbage(path, f"a repository folder with an invalid name {name!r}")
                found.append(name)
            for e in entries:
                if e.name.startswith("_") or not e.is_dir(follow_symlinks=False):
                    continue
                walk(e.path, (*parts, e.name))

        walk(top, ())
        return sorted(found)

    def tags(self, repo: str) -> tuple[dict[str, _Link | None], list[TagEvent]]:
        """Each tag's current link (None: dangling) and every entry of its index."""
        base = os.path.join(self.v2, "repositories", repo, "_manifests", "tags")
        current: dict[str, _Link | None] = {}
        history: list[TagEvent] = []
        for entry in self.entries(base):
            if not entry.is_dir(follow_symlinks=False):
                continue
            if not is_tag(entry.name):
                raise _garbage(entry.path, "a tag folder whose name is not a valid tag")
            current[entry.name] = self.link(os.path.join(entry.path, "current", "link"))
            index = os.path.join(entry.path, "index")
            for algorithm in self.entries(index):
                for digest_dir in self.entries(algorithm.path):
                    link = self.link(
                        os.path.join(digest_dir.path, "link"),
                        expect=f"{algorithm.name}:{digest_dir.name}",
                    )
                    if link is not None:
                        history.append(TagEvent(entry.name, link.digest, link.mtime))
        return current, history

    def revisions(self, repo: str) -> dict[str, datetime]:
        """Every manifest revision of the repository and its link's mtime (the push time)."""
        base = os.path.join(self.v2, "repositories", repo, "_manifests", "revisions")
        out: dict[str, datetime] = {}
        for algorithm in self.entries(base):
            for digest_dir in self.entries(algorithm.path):
                expect = f"{algorithm.name}:{digest_dir.name}"
                link = self.link(os.path.join(digest_dir.path, "link"), expect=expect)
                if link is not None:
                    out[link.digest] = link.mtime
        return out

    def manifest(self, repo: str, digest: str) -> Manifest | None:
        raw = self.blob(digest, _MANIFEST_MAX)
        if raw is None:
            return None
        try:
            return parse_manifest(raw, None, digest)
        except ProtocolError as exc:
            path = os.path.join(self._blob_dir(digest), "data")
            raise _garbage(path, f"{repo}@{digest}: {exc.message}") from exc


def open_storage(root: str) -> str:
    """The storage root, resolved once (the configured path itself may be a link, as
    /var/lib/registry often is); raises StorageError when it is not a registry's root."""
    try:
        st = os.stat(root)
    except FileNotFoundError as exc:
        raise StorageError(
            f"registry.storage.filesystem {root!r} does not exist", hint=_HINT_ROOT
        ) from exc
    except OSError as exc:
        raise _os_error(root, exc) from exc
    if not stat.S_ISDIR(st.st_mode):
        raise StorageError(f"registry.storage.filesystem {root!r} is not a folder", hint=_HINT_ROOT)
    real = os.path.realpath(root)
    if not os.access(real, os.R_OK | os.X_OK):
        raise StorageError(f"cannot read {root}: permission denied", hint=_HINT_READ)
    v2 = os.path.join(real, V2)
    try:
        v2_st = os.lstat(v2)
    except FileNotFoundError:
        v2_st = None
    except OSError as exc:
        raise _os_error(v2, exc) from exc
    if v2_st is None or not stat.S_ISDIR(v2_st.st_mode):
        near = ""
        if os.path.isdir(os.path.join(real, "repositories")) or os.path.isdir(
            os.path.join(real, "blobs")
        ):
            near = " (it looks like docker/registry/v2 itself: give the folder three levels up)"
        raise StorageError(
            f"registry.storage.filesystem {root!r} is not a registry's storage root: it has no "
            f"{V2} folder{near}",
            hint=_HINT_ROOT,
        )
    return real


def take_storage_inventory(
    root: str,
    *,
    registry: str,
    now: datetime,
    select: Callable[[str], bool] = lambda name: True,
    complete: bool = True,
    concurrency: int = 8,
    progress: Progress = lambda phase, done, total: None,
) -> Inventory:
    """Every manifest revision of every selected repository, tagged or not, from the storage.

    Raises StorageError (nothing half-read is returned) for a missing, unreadable or damaged
    storage. `registry` is the URL the plan names; `plan` checks it is the same registry
    (`compare_with_api`).
    """
    reader = _Reader(open_storage(root))
    names = [n for n in reader.repositories() if select(n)]
    workers = max(1, concurrency)
    with ThreadPoolExecutor(max_workers=workers) as pool:
        repos = _fan_out(
            pool, workers, progress, "repositories", lambda n: _repository(reader, n), names
        )
    warnings = list(reader.warnings)
    if reader.missing_blobs:
        warnings.append(
            f"{len(reader.missing_blobs)} blobs that manifests reference are not in the storage; "
            "they are counted as 0 bytes (garbage collection cannot free them)"
        )
    return Inventory(
        registry=registry,
        taken_at=now,
        repositories=tuple(repos),
        complete=complete,
        warnings=tuple(warnings),
        source="storage",
    )


def _repository(reader: _Reader, name: str) -> Repository:
    current, history = reader.tags(name)
    revisions = reader.revisions(name)
    if len(revisions) > MAX_MANIFESTS_PER_REPOSITORY:
        # the API walk's cap (retention/inventory.py), for the same reason: the walk's memory
        raise StorageError(
            f"{untrusted(name)}: the storage holds more than {MAX_MANIFESTS_PER_REPOSITORY:,} "
            "manifest revisions in this repository; retention does not plan such a repository",
            hint="check the repository for a runaway push loop; "
            "--repository REGEX can leave it out",
        )
    manifests: dict[str, Manifest] = {}
    for digest in sorted(revisions):
        manifest = reader.manifest(name, digest)
        if manifest is None:
            reader.warn(
                f"{name}@{digest}: a revision whose manifest data is missing from the storage; "
                "it is left alone"
            )
            continue
        manifests[digest] = manifest

    tags: list[Tag] = []
    tags_of: dict[str, list[str]] = {}
    dangling: list[str] = []
    for tag, link in sorted(current.items()):
        if link is None or link.digest not in manifests:
            reader.warn(f"{name}:{tag} is listed but its manifest is gone (a dangling tag)")
            dangling.append(tag)  # planned only with settings.untag
            continue
        tags.append(Tag(tag, link.digest))
        tags_of.setdefault(link.digest, []).append(tag)

    def warn(message: str) -> None:
        reader.warn(message)

    def child(digest: str) -> Manifest | None:
        return manifests.get(digest)

    # each index walked once per digest, as in the API walk, however many indexes list it
    memo: IndexMemo = _SingleFlight[tuple[list[Image], int]]().get

    def images_of(digest: str, tag_names: list[str], quiet: bool) -> list[Image]:
        return build_images(
            name,
            manifests[digest],
            tag_names,
            child=child,
            config=reader.config,
            warn=(lambda m: None) if quiet else warn,
            blob_size=reader.blob_size,
            memo=memo,
        )

    # As the API walk: a tagged manifest's own entry, then index children (with their
    # platform), then every other revision; each built by the same code.
    chosen: dict[str, Image] = {}
    children: list[Image] = []
    for digest in sorted(tags_of):
        first, *below = images_of(digest, tags_of[digest], quiet=False)
        chosen[digest] = first
        children.extend(below)
    untagged_children: list[Image] = []
    untagged: dict[str, Image] = {}
    for digest in sorted(manifests):
        if digest in chosen:
            continue
        first, *below = images_of(digest, [], quiet=False)
        untagged[digest] = first
        untagged_children.extend(below)
    for image in children:
        chosen.setdefault(image.digest, image)
    for image in untagged_children:
        chosen.setdefault(image.digest, image)
    for digest, image in untagged.items():
        chosen.setdefault(digest, image)
    images = tuple(
        _pushed(image, revisions) for image in sorted(chosen.values(), key=lambda i: i.digest)
    )
    return Repository(
        name=name,
        tags=tuple(tags),
        images=images,
        history=tuple(sorted(history, key=lambda e: (e.tag, e.at, e.digest))),
        dangling_tags=tuple(dangling),
    )


def _pushed(image: Image, revisions: Mapping[str, datetime]) -> Image:
    return replace(image, pushed_at=revisions.get(image.digest))


# --- is it the same registry? -------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Disagreement:
    """A tag the storage and the API's tags/list disagree about."""

    repository: str
    tag: str
    where: str  # "storage" (only on disk) or "api" (only in the API's list)
    in_flight: bool
    digest: str | None = None  # for a tag pushed in flight: what its link names now


def compare_with_api(
    client: RegistryClient,
    inventory: Inventory,
    root: str,
    *,
    concurrency: int = 8,
    clock: Callable[[], float] = time.time,
) -> list[Disagreement]:
    """One tags/list per repository of the storage inventory, compared with the storage's tags.

    Returns the tags in flight (the caller warns, and `with_in_flight` adds the pushed ones);
    raises StorageError when the two disagree otherwise: the storage is not the URL's registry.
    A second look at the storage decides (docs/decisions.md, "Storage inventory"): a tag the API
    lists and the inventory lacks is in flight when its link is on disk now, written less than
    IN_FLIGHT_SECONDS ago (a dangling tag, a folder without a link, agrees with the API); a tag
    only in the inventory is in flight when its folder is gone from the disk now.
    """
    reader = _Reader(open_storage(root))
    names = [r.name for r in inventory.repositories]

    def listed(name: str) -> list[str] | None:
        try:
            return client.list_tags(name)
        except RegistryError as exc:
            if exc.status == 404:
                return None  # distribution answers 404 for a repository without tags
            raise

    try:
        with ThreadPoolExecutor(max_workers=max(1, concurrency)) as pool:
            answers = list(pool.map(listed, names))
    except RegistryError as exc:
        raise InventoryError(
            f"cannot compare the storage with the registry's API: {exc.diagnostics()}"
        ) from exc

    found: list[Disagreement] = []
    for repo, api_tags in zip(inventory.repositories, answers, strict=True):
        # a dangling tag is listed by both (its folder stays, its manifest is gone)
        stored = {t.name for t in repo.tags} | set(repo.dangling_tags)
        api = set(api_tags or ())
        for tag in sorted(stored ^ api):
            seen = _second_look(reader, repo.name, tag, tag in api, clock())
            if seen is not None:
                found.append(seen)
    wrong = [d for d in found if not d.in_flight]
    if wrong:
        shown = ", ".join(
            f"{untrusted(d.repository)}:{untrusted(d.tag)} "
            f"({'only in the storage' if d.where == 'storage' else 'only in the API'})"
            for d in wrong[:5]
        )
        more = f" and {len(wrong) - 5} more" if len(wrong) > 5 else ""
        raise StorageError(
            f"the storage at {root} and the registry at {inventory.registry} disagree about "
            f"{len(wrong)} tag(s): {shown}{more}; they do not look like the same registry, and "
            "nothing was planned",
            hint="point registry.storage.filesystem at the rootdirectory of the registry that "
            "registry.url serves, or use --inventory-source api",
        )
    return found


def _second_look(
    reader: _Reader, repo: str, tag: str, in_api: bool, now: float
) -> Disagreement | None:
    folder = os.path.join(reader.v2, "repositories", repo, "_manifests", "tags", tag)
    try:
        link = reader.link(os.path.join(folder, "current", "link"))
    except StorageError:
        link = None
    present = os.path.lexists(folder)
    if in_api:
        if present and link is None:
            return None  # a dangling tag: listed by both, left alone by the inventory
        fresh = link is not None and now - link.mtime.timestamp() < IN_FLIGHT_SECONDS
        return Disagreement(repo, tag, "api", fresh, link.digest if link else None)
    return Disagreement(repo, tag, "storage", not present)


def with_in_flight(inventory: Inventory, disagreements: list[Disagreement]) -> Inventory:
    """The inventory with the tags pushed in flight added where their image is in it, so a
    manifest tagged while the storage was read is never planned as untagged."""
    added: dict[str, list[Tag]] = {}
    for d in disagreements:
        if d.in_flight and d.where == "api" and d.digest is not None:
            added.setdefault(d.repository, []).append(Tag(d.tag, d.digest))
    if not added:
        return inventory
    repos = []
    for repo in inventory.repositories:
        extra = [t for t in added.get(repo.name, ()) if repo.image(t.digest) is not None]
        if extra:
            tags = tuple(sorted((*repo.tags, *extra), key=lambda t: t.name))
            repo = replace(repo, tags=tags)
        repos.append(repo)
    return replace(inventory, repositories=tuple(repos))


def in_flight_warnings(disagreements: list[Disagreement]) -> list[str]:
    out = []
    for d in disagreements:
        ref = f"{untrusted(d.repository)}:{untrusted(d.tag)}"
        if d.where == "api":
            out.append(
                f"{ref} was pushed while the storage was read (in flight): its image, if the "
                "storage held it, is kept as tagged"
            )
        else:
            out.append(f"{ref} was deleted while the storage was read (in flight)")
    return out
