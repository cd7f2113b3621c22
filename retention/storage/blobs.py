"""The storage's blob store (`blobs/sha256/<hex[:2]>/<hex>/data`), read-only: manifest and config
bytes checked against their digest, blob sizes, each looked up once per digest per process.

A blob folder and its two-letter prefix folder are checked once (never a link), not once per
image that lists the blob: base layers are shared by every image built on them.
"""

from __future__ import annotations

import os
import stat

from retention.errors import ProtocolError
from retention.model import Blob
from retention.oci import (
    IMAGE_CONFIG_TYPES,
    Descriptor,
    ImageConfig,
    Manifest,
    parse_config,
    parse_manifest,
    sha256_digest,
)
from retention.storage.files import Files, garbage, is_a_link, os_error

MANIFEST_MAX = 4 * 1024 * 1024  # distribution's own limit on a manifest
CONFIG_MAX = 8 * 1024 * 1024
_MISSING = -1


class Blobs:
    """The blob store below `files`' root; one per process (not shared between threads)."""

    def __init__(self, files: Files) -> None:
        self.files = files
        self.base = f"{files.v2}/blobs"
        self._prefixes: set[str] = set()  # "<algorithm>/<hex[:2]>" folders checked
        self._sizes: dict[str, int] = {}  # digest -> size on disk, _MISSING when absent
        self._configs: dict[str, ImageConfig | None] = {}
        self.missing: set[str] = set()  # referenced blobs the storage lacks
        self.shared: dict[Blob, Blob] = {}  # one value per (digest, size), however many use it
        self.warnings: list[str] = []  # where a missing config is noted (set per repository)

    def _folder(self, digest: str) -> str | None:
        """The blob's folder, checked (not a link); None when it does not exist."""
        algorithm, _, hexpart = digest.partition(":")
        prefix = f"{algorithm}/{hexpart[:2]}"
        if prefix not in self._prefixes:
            if not self._prefixes:  # the first blob: blobs/ and blobs/<algorithm> as well
                self.files.check_folder(self.base)
            self.files.check_folder(f"{self.base}/{algorithm}")
            self.files.check_folder(f"{self.base}/{prefix}")
            self._prefixes.add(prefix)
        folder = f"{self.base}/{prefix}/{hexpart}"
        return folder if self.files.check_folder(folder) else None

    def read(self, digest: str, limit: int) -> tuple[bytes, str] | None:
        """A blob's bytes, checked against its digest, and its path; None when it is missing."""
        folder = self._folder(digest)
        if folder is None:
            return None
        path = f"{folder}/data"
        got = self.files.read(path, limit)
        if got is None:
            return None
        raw = got[0]
        if digest.startswith("sha256:") and sha256_digest(raw) != digest:
            raise garbage(path, f"its bytes do not hash to {digest} (half-written or damaged)")
        self._sizes[digest] = len(raw)
        return raw, path

    def size(self, desc: Descriptor) -> int:
        """The blob's size on disk; 0 when it is not there (garbage collection cannot free
        what is not there), and the digest is noted in `missing`."""
        digest = desc.digest
        size = self._sizes.get(digest)
        if size is None:
            size = self._stat(digest)
            self._sizes[digest] = size
        if size == _MISSING:
            self.missing.add(digest)
            return 0
        return size

    def _stat(self, digest: str) -> int:
        folder = self._folder(digest)
        if folder is None:
            return _MISSING
        path = f"{folder}/data"
        try:
            st = os.lstat(path)
        except FileNotFoundError:
            return _MISSING
        except OSError as exc:
            raise os_error(path, exc) from exc
        if stat.S_ISLNK(st.st_mode):
            raise is_a_link(path)
        if not stat.S_ISREG(st.st_mode):
            raise garbage(path, "not a regular file")
        return st.st_size

    def config(self, manifest: Manifest) -> ImageConfig | None:
        """The parsed config of an image manifest (None: not an image config, or missing)."""
        cfg = manifest.config
        if cfg is None or cfg.media_type not in IMAGE_CONFIG_TYPES:
            return None
        digest = cfg.digest
        if digest in self._configs:
            return self._configs[digest]
        got = self.read(digest, CONFIG_MAX)
        if got is None:
            self.warnings.append(
                f"{manifest.digest}: its config blob {digest} is missing from the storage, "
                "so its created date is unknown"
            )
            parsed = None
        else:
            parsed = parse_config(got[0], digest)
        self._configs[digest] = parsed
        return parsed

    def manifest(self, repo: str, digest: str) -> Manifest | None:
        """The parsed manifest; None when its data is missing."""
        got = self.read(digest, MANIFEST_MAX)
        if got is None:
            return None
        raw, path = got
        try:
            return parse_manifest(raw, None, digest)
        except ProtocolError as exc:
            raise garbage(path, f"{repo}@{digest}: {exc.message}") from exc
