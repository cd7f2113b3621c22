"""The digest cache verifies what it reads and refuses what does not hash to its name."""

from __future__ import annotations

import hashlib
from pathlib import Path

import pytest

from retention.cache import DigestCache
from retention.errors import CacheError

DATA = b'{"created": "2026-01-01T00:00:00Z"}'
DIGEST = "sha256:" + hashlib.sha256(DATA).hexdigest()


def test_round_trip(tmp_path: Path) -> None:
    cache = DigestCache(tmp_path)
    assert cache.get(DIGEST) is None
    cache.put(DIGEST, DATA)
    assert cache.get(DIGEST) == DATA
    assert not list(tmp_path.rglob(".tmp-*"))


def test_corrupt_entry_is_dropped(tmp_path: Path) -> None:
    cache = DigestCache(tmp_path)
    cache.put(DIGEST, DATA)
    path = tmp_path / "sha256" / DIGEST[7:9] / DIGEST[7:]
    path.write_bytes(b"tampered")
    assert cache.get(DIGEST) is None
    assert not path.exists()


@pytest.mark.parametrize(
    ("digest", "data"),
    [("sha256:" + "0" * 64, DATA), ("sha256:nothex", DATA), ("../../etc/passwd", DATA)],
    ids=["wrong-digest", "malformed", "path-traversal"],
)
def test_refuses_bad_names(tmp_path: Path, digest: str, data: bytes) -> None:
    with pytest.raises(CacheError):
        DigestCache(tmp_path).put(digest, data)


def test_unwritable_root_is_a_clear_error(tmp_path: Path) -> None:
    blocker = tmp_path / "file"
    blocker.write_text("not a directory")
    with pytest.raises(CacheError, match="cannot write the cache"):
        DigestCache(blocker).put(DIGEST, DATA)
