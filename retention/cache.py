"""Digest-addressed on-disk store for manifests and config blobs fetched by digest.

Content is verified on read (a corrupt entry is dropped and re-fetched) and written atomically,
so concurrent runs and crashes never leave a half-written entry. No HTTP here.
"""

from __future__ import annotations

import logging
import os
import tempfile
from pathlib import Path

from retention.errors import CacheError
from retention.oci import digest_of, is_digest

log = logging.getLogger(__name__)


class DigestCache:
    """`root/<algorithm>/<first two hex>/<hex>` holds the bytes whose digest is the name."""

    def __init__(self, root: Path) -> None:
        self.root = root

    def _path(self, digest: str) -> Path:
        if not is_digest(digest):
            raise CacheError(f"not a digest: {digest!r}")
        algorithm, hexpart = digest.split(":", 1)
        return self.root / algorithm / hexpart[:2] / hexpart

    def get(self, digest: str) -> bytes | None:
        path = self._path(digest)
        try:
            data = path.read_bytes()
        except FileNotFoundError:
            return None
        except OSError as exc:
            log.warning("cache entry %s unreadable (%s); fetching again", digest, exc)
            return None
        if digest_of(data, digest.split(":", 1)[0]) != digest:
            log.warning("cache entry %s is corrupt; dropping it", digest)
            path.unlink(missing_ok=True)
            return None
        return data

    def put(self, digest: str, data: bytes) -> None:
        """Store `data` under `digest`; refuses bytes that do not hash to it."""
        path = self._path(digest)
        if digest_of(data, digest.split(":", 1)[0]) != digest:
            raise CacheError(f"refusing to cache bytes under the wrong digest {digest}")
        try:
            path.parent.mkdir(parents=True, exist_ok=True)
            fd, tmp = tempfile.mkstemp(prefix=".tmp-", dir=path.parent)
            try:
                with os.fdopen(fd, "wb") as fh:
                    fh.write(data)
                os.replace(tmp, path)
            except BaseException:
                Path(tmp).unlink(missing_ok=True)
                raise
        except OSError as exc:
            raise CacheError(
                f"cannot write the cache at {self.root}: {exc}",
                hint="set XDG_CACHE_HOME to a writable directory, or pass --no-cache",
            ) from exc
