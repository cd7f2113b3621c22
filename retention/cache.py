"""Digest-addressed on-disk store for manifests and config blobs fetched by digest.

Entries live in pack files, not a file each: a run appends what it fetches to one new pack (one
write per entry) and publishes it with an atomic rename when it closes the cache; a file per
digest cost a create, a write and a rename per entry, most of a cold walk's extra CPU. Readers
index every published pack on first use and verify each entry's digest when they read it, so a
crashed or concurrent run (even on a shared network volume: no locks, only renames) never leaves
a half-written pack in view, and a damaged entry is fetched again. When more than `MAX_PACKS`
packs have piled up, the run closing the cache merges them into one, leaving out what it did not
use and no recent pack holds (images deleted since), so the cache does not grow without bound.
No HTTP here.
"""

from __future__ import annotations

import contextlib
import logging
import os
import secrets
import tempfile
import threading
import time
from collections.abc import Iterable
from pathlib import Path
from typing import BinaryIO

from retention.closing import Closing
from retention.errors import CacheError
from retention.oci import digest_matches, is_digest

log = logging.getLogger(__name__)

MAGIC = b"retention-pack 1\n"
MAX_PACKS = 16
# a merge drops what the merging run did not use and no pack younger than this holds
KEEP_UNUSED_SECONDS = 7 * 24 * 3600
# a run's unpublished pack: older than this, its run is long dead (crash, SIGKILL)
STALE_SECONDS = 24 * 3600
_MAX_HEADER = 200  # "sha512:<128 hex> <length>\n" fits with room to spare
_HINT = "set XDG_CACHE_HOME to a writable directory with room, or pass --no-cache"

# digest -> (file descriptor, offset, length) of its bytes in a pack
_Index = dict[str, tuple[int, int, int]]


class _PackWriter:
    """An unpublished pack, `.tmp-*.pack` in the cache folder until `publish`."""

    def __init__(self, root: Path) -> None:
        root.mkdir(parents=True, exist_ok=True)
        # O_RDWR: this run reads back what it wrote through the same descriptor
        self.fd, name = tempfile.mkstemp(prefix=".tmp-", suffix=".pack", dir=root)
        self.path = Path(name)
        self.end = 0
        try:
            self._write(MAGIC)
        except BaseException:
            self.discard()  # a full disk: neither the descriptor nor the empty file stays
            raise

    def _write(self, data: bytes) -> None:
        # at `end`, not at the file position: a write that failed midway (disk full) moved the
        # position past `end`, and what came after would be indexed at the wrong offset
        view = memoryview(data)
        try:
            while view:
                view = view[os.pwrite(self.fd, view, self.end + len(data) - len(view)) :]
        except BaseException:
            with contextlib.suppress(OSError):  # no torn record for a reader's scan to stop at
                os.ftruncate(self.fd, self.end)
            raise
        self.end += len(data)

    def add(self, digest: str, data: bytes) -> tuple[int, int, int]:
        header = b"%s %d\n" % (digest.encode("ascii"), len(data))
        start = self.end
        self._write(header + data)
        return self.fd, start + len(header), len(data)

    def publish(self) -> Path:
        final = self.path.with_name(f"pack-{time.time_ns()}-{secrets.token_hex(4)}.pack")
        os.replace(self.path, final)
        self.path = final
        return final

    def discard(self) -> None:
        os.close(self.fd)
        with contextlib.suppress(OSError):  # left for `_remove_stale`
            self.path.unlink(missing_ok=True)


class DigestCache(Closing):
    """The bytes of manifests and configs by digest, in `root/pack-*.pack`.

    Thread-safe. Use as a context manager (or call `close`): what this run stored is published,
    for later runs to read, when the cache is closed.
    """

    def __init__(self, root: Path) -> None:
        self.root = root
        self._lock = threading.Lock()
        self._index: _Index | None = None
        self._files: list[BinaryIO] = []  # published packs, open for reading
        self._writer: _PackWriter | None = None
        self._used: set[str] = set()  # digests this run read or stored: a merge keeps them
        self._write_failed = False  # warned once per run

    def get(self, digest: str) -> bytes | None:
        _check_digest(digest)
        index = self._loaded()
        where = index.get(digest)
        if where is None:
            return None
        fd, offset, length = where
        try:
            data = os.pread(fd, length, offset)
        except OSError as exc:
            log.warning("cache entry %s unreadable (%s); fetching it again", digest, exc)
            index.pop(digest, None)
            return None
        if len(data) != length or not digest_matches(data, digest):
            log.warning("cache entry %s is corrupt; fetching it again", digest)
            index.pop(digest, None)
            return None
        self._used.add(digest)
        return data

    def put(self, digest: str, data: bytes) -> None:
        """Store `data` under `digest`; refuses bytes that do not hash to it."""
        _check_digest(digest)
        if not digest_matches(data, digest):
            raise CacheError(f"refusing to cache bytes under the wrong digest {digest}")
        index = self._loaded()
        with self._lock:
            self._used.add(digest)
            if digest in index:
                return
            try:
                if self._writer is None:
                    self._writer = _PackWriter(self.root)
                index[digest] = self._writer.add(digest, data)
            except OSError as exc:
                # the cache only saves requests: a full or read-only disk must not stop a plan,
                # least of all a scheduled one; later entries that fit are still stored
                if not self._write_failed:
                    log.warning(
                        "cannot write the digest cache at %s: %s; the walk goes on, and what "
                        "could not be stored is fetched again next time (%s)",
                        self.root,
                        exc,
                        _HINT,
                    )
                self._write_failed = True

    def close(self) -> None:
        """Publish what this run stored, merge the packs if they have piled up, release them.
        `with` calls it even when the walk failed: its entries are valid and make a retry warm."""
        # never raises OSError: the plan is made by now, and only the next run's head start is
        # at stake; the descriptors are released whatever happens
        with self._lock:
            writer, self._writer = self._writer, None
            files, self._files = self._files, []
            index, self._index = self._index, None
            try:
                sources = [(Path(fh.name), fh.fileno()) for fh in files]
                if writer is not None:
                    try:
                        sources.append((writer.publish(), writer.fd))
                    except OSError as exc:
                        log.warning("could not save the digest cache at %s: %s", self.root, exc)
                        with contextlib.suppress(OSError):  # else `_remove_stale`'s, in a day
                            writer.path.unlink(missing_ok=True)
                if len(sources) > MAX_PACKS and index is not None:
                    self._merge(index, sources)
            finally:
                if writer is not None:
                    os.close(writer.fd)
                for fh in files:
                    fh.close()
                self._used = set()
                self._write_failed = False

    def _loaded(self) -> _Index:
        index = self._index
        if index is None:
            with self._lock:
                if self._index is None:
                    self._index = self._read_packs()
                index = self._index
        return index

    def _read_packs(self) -> _Index:
        try:
            paths = _newest_first(self.root.glob("pack-*.pack"))
            _remove_stale(self.root)
        except OSError as exc:
            log.warning("cannot read the digest cache at %s: %s", self.root, exc)
            return {}
        index: _Index = {}
        # newest first: an entry in several packs is read from the youngest copy, whose age
        # decides whether a merge may drop it
        for path in paths:
            try:
                fh = path.open("rb")
            except OSError as exc:  # merged away by a concurrent run, or unreadable
                log.debug("skipping cache pack %s: %s", path, exc)
                continue
            try:
                entries = _scan(fh, path)
            except OSError as exc:  # EIO; on NFS, ESTALE: merged away by another machine
                log.warning("skipping unreadable cache pack %s: %s", path, exc)
                fh.close()
                continue
            self._files.append(fh)
            for digest, where in entries:
                index.setdefault(digest, where)
        return index

    def _merge(self, index: _Index, sources: list[tuple[Path, int]]) -> None:
        """Replace `sources` by their readable entries that this run used (one pack, dated now)
        or that a pack younger than `KEEP_UNUSED_SECONDS` holds (a second pack, dated as its
        oldest source, so that rewriting them does not make them young again: without that,
        shard workers merging in turn would keep every entry forever)."""
        cutoff = time.time() - KEEP_UNUSED_SECONDS
        try:
            mtimes = {fd: os.fstat(fd).st_mtime for _, fd in sources}
        except OSError as exc:
            log.warning("cannot merge the digest cache's packs at %s: %s", self.root, exc)
            return
        used: _PackWriter | None = None
        carried: _PackWriter | None = None
        carried_since = time.time()
        try:
            for digest, (fd, offset, length) in index.items():
                if digest in self._used:
                    used = used or _PackWriter(self.root)
                    target = used
                elif mtimes.get(fd, 0.0) >= cutoff:
                    carried = carried or _PackWriter(self.root)
                    carried_since = min(carried_since, mtimes[fd])
                    target = carried
                else:
                    continue
                data = os.pread(fd, length, offset)
                if digest_matches(data, digest):  # damaged entries end here
                    target.add(digest, data)
            if carried is not None:
                os.utime(carried.fd, (carried_since, carried_since))
                carried.publish()
            if used is not None:
                used.publish()
        except OSError as exc:
            log.warning("cannot merge the digest cache's packs at %s: %s", self.root, exc)
            for writer in (used, carried):
                if writer is not None:
                    writer.discard()  # the sources stay; what the merge wrote goes
            return
        for writer in (used, carried):
            if writer is not None:
                os.close(writer.fd)
        kept: list[OSError] = []
        for path, _ in sources:
            try:
                path.unlink(missing_ok=True)  # a concurrent run may have merged it already
            except OSError as exc:  # e.g. another user's pack in a sticky shared folder
                kept.append(exc)
        if kept:
            log.warning("%d merged cache packs could not be removed: %s", len(kept), kept[0])


def _newest_first(paths: Iterable[Path]) -> list[Path]:
    """Packs by modification time, newest first; one that vanished meanwhile is left out."""
    dated: list[tuple[float, str, Path]] = []
    for path in paths:
        try:
            dated.append((path.stat().st_mtime, path.name, path))
        except FileNotFoundError:  # merged away by a concurrent run
            continue
    return [path for _, _, path in sorted(dated, reverse=True)]


def _check_digest(digest: str) -> None:
    if not is_digest(digest):
        raise CacheError(f"not a digest: {digest!r}")


def _scan(fh: BinaryIO, path: Path) -> list[tuple[str, tuple[int, int, int]]]:
    """The entries of one pack: `MAGIC`, then `<digest> <length>\\n<bytes>` per entry. A damaged
    record ends the scan (the entries before it still count)."""
    size = os.fstat(fh.fileno()).st_size
    if fh.read(len(MAGIC)) != MAGIC:
        log.warning("%s is not a retention cache pack; ignoring it", path)
        return []
    entries: list[tuple[str, tuple[int, int, int]]] = []
    position = len(MAGIC)
    while position < size:
        line = fh.readline(_MAX_HEADER)
        fields = line[:-1].split(b" ") if line.endswith(b"\n") else []
        if len(fields) != 2 or not fields[1].isdigit():
            break
        digest = fields[0].decode("ascii", "replace")
        start = position + len(line)
        end = start + int(fields[1])
        if not is_digest(digest) or end > size:
            break
        entries.append((digest, (fh.fileno(), start, end - start)))
        position = end
        fh.seek(position)
    if position < size:
        log.warning(
            "cache pack %s is damaged after %d entries; the rest is fetched again",
            path,
            len(entries),
        )
    return entries


def _remove_stale(root: Path) -> None:
    """Unpublished packs of runs that died long ago (a live run's is younger than a day)."""
    cutoff = time.time() - STALE_SECONDS
    for path in root.glob(".tmp-*.pack"):
        try:
            if path.stat().st_mtime < cutoff:
                path.unlink()
        except OSError:
            continue  # removed by another run meanwhile
