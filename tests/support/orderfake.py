"""A tiny in-memory stand-in for the registry client, ONLY for apply's ordering and limit logic.

It models no HTTP at all (no status codes, Accept headers or retries): everything about how a
real registry answers is tested against the real `docker-registry` in tests/integration.
"""

from __future__ import annotations

import threading
from dataclasses import dataclass

from retention import oci
from retention.errors import DeleteDisabledError
from tests.support.plans import REGISTRY


@dataclass(frozen=True)
class Ref:
    digest: str


@dataclass(frozen=True)
class Fetched:
    manifest: oci.Manifest
    raw: bytes
    media_type: str


class OrderFake:
    url = REGISTRY

    def __init__(self) -> None:
        self.manifests: dict[str, dict[str, bytes]] = {}
        self.tags: dict[str, dict[str, str]] = {}
        self.calls: list[tuple[str, str, str]] = []
        self.deleted: list[tuple[str, str]] = []
        self.delete_disabled = False
        self.blobs: dict[str, set[str]] = {}  # layer and config digests, per repository
        self._lock = threading.Lock()

    def add(self, repo: str, raw: bytes, *tags: str) -> str:
        digest = oci.sha256_digest(raw)
        self.manifests.setdefault(repo, {})[digest] = raw
        for tag in tags:
            self.tags.setdefault(repo, {})[tag] = digest
        return digest

    def _resolve(self, repo: str, ref: str) -> str | None:
        digest = ref if oci.is_digest(ref) else self.tags.get(repo, {}).get(ref)
        if digest is None or digest not in self.manifests.get(repo, {}):
            return None
        return digest

    def list_tags(self, repo: str) -> list[str]:
        with self._lock:
            self.calls.append(("tags", repo, ""))
            return sorted(self.tags.get(repo, {}))

    def head_manifest(self, repo: str, reference: str) -> Ref | None:
        with self._lock:
            self.calls.append(("HEAD", repo, reference))
            digest = self._resolve(repo, reference)
            return None if digest is None else Ref(digest)

    def get_manifest(self, repo: str, reference: str) -> Fetched | None:
        with self._lock:
            self.calls.append(("GET", repo, reference))
            digest = self._resolve(repo, reference)
            if digest is None:
                return None
            raw = self.manifests[repo][digest]
            manifest = oci.parse_manifest(raw, None, digest)
            return Fetched(manifest, raw, manifest.media_type)

    def blob_exists(self, repo: str, digest: str) -> bool:
        # not recorded in `calls`: apply asks only after a 404 for a digest
        return digest in self.blobs.get(repo, set())

    def delete_manifest(self, repo: str, digest: str) -> bool:
        with self._lock:
            self.calls.append(("DELETE", repo, digest))
            if self.delete_disabled:
                raise DeleteDisabledError("deletion disabled", status=405, code="UNSUPPORTED")
            if self.manifests.get(repo, {}).pop(digest, None) is None:
                return False
            tags = self.tags.get(repo, {})
            for tag in [t for t, d in tags.items() if d == digest]:
                del tags[tag]
            self.deleted.append((repo, digest))
            return True

    def put_manifest(self, repo: str, reference: str, raw: bytes, media_type: str) -> str:
        with self._lock:
            self.calls.append(("PUT", repo, reference))
            return self.add(repo, raw, *([] if oci.is_digest(reference) else [reference]))

    def count(self, method: str) -> int:
        return sum(1 for c in self.calls if c[0] == method)
