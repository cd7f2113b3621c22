"""The digest cache: packs published on close, verified on read, merged when they pile up."""

from __future__ import annotations

import hashlib
import logging
import os
import threading
import time
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from retention.cache import KEEP_UNUSED_SECONDS, MAX_PACKS, STALE_SECONDS, DigestCache
from retention.errors import CacheError


def entry(n: int) -> tuple[str, bytes]:
    data = b'{"created": "2026-01-01T00:00:00Z", "n": %d}' % n
    return "sha256:" + hashlib.sha256(data).hexdigest(), data


DIGEST, DATA = entry(0)


def packs(root: Path) -> list[Path]:
    return sorted(root.glob("pack-*.pack"))


def fill(root: Path, numbers: range) -> None:
    with DigestCache(root) as cache:
        for n in numbers:
            cache.put(*entry(n))


def test_round_trip_within_a_run_and_across_runs(tmp_path: Path) -> None:
    with DigestCache(tmp_path) as cache:
        assert cache.get(DIGEST) is None
        cache.put(DIGEST, DATA)
        assert cache.get(DIGEST) == DATA  # read back before it is published
        assert packs(tmp_path) == []
    assert len(packs(tmp_path)) == 1
    assert not list(tmp_path.glob(".tmp-*"))
    with DigestCache(tmp_path) as cache:
        assert cache.get(DIGEST) == DATA


def test_one_pack_per_run_whatever_the_number_of_entries(tmp_path: Path) -> None:
    fill(tmp_path, range(500))
    assert len(packs(tmp_path)) == 1
    with DigestCache(tmp_path) as cache:
        assert all(cache.get(d) == data for d, data in map(entry, range(500)))


def test_a_run_that_stores_nothing_writes_nothing(tmp_path: Path) -> None:
    fill(tmp_path, range(3))
    with DigestCache(tmp_path) as cache:
        cache.put(*entry(1))  # already there
        assert cache.get(entry(2)[0]) == entry(2)[1]
    assert len(packs(tmp_path)) == 1


def test_published_even_when_the_run_fails(tmp_path: Path) -> None:
    with pytest.raises(RuntimeError), DigestCache(tmp_path) as cache:
        cache.put(DIGEST, DATA)
        raise RuntimeError("the walk failed")
    with DigestCache(tmp_path) as cache:
        assert cache.get(DIGEST) == DATA


def test_an_unpublished_pack_is_not_read(tmp_path: Path) -> None:
    writing = DigestCache(tmp_path)
    writing.put(DIGEST, DATA)
    with DigestCache(tmp_path) as reader:
        assert reader.get(DIGEST) is None
    writing.close()
    with DigestCache(tmp_path) as reader:
        assert reader.get(DIGEST) == DATA


def test_corrupt_entry_is_fetched_again_and_its_neighbours_still_serve(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    fill(tmp_path, range(3))
    (pack,) = packs(tmp_path)
    raw = pack.read_bytes()
    _, victim = entry(1)
    pack.write_bytes(raw.replace(victim, victim.replace(b"2026", b"1999")))
    with caplog.at_level(logging.WARNING), DigestCache(tmp_path) as cache:
        assert cache.get(entry(1)[0]) is None
        assert cache.get(entry(0)[0]) == entry(0)[1]
        assert cache.get(entry(2)[0]) == entry(2)[1]
    assert "is corrupt" in caplog.text


@pytest.mark.parametrize("cut", [1, 10, 60], ids=["in-last-entry", "in-header", "earlier"])
def test_truncated_pack_serves_the_entries_before_the_damage(
    tmp_path: Path, cut: int, caplog: pytest.LogCaptureFixture
) -> None:
    fill(tmp_path, range(3))
    (pack,) = packs(tmp_path)
    raw = pack.read_bytes()
    pack.write_bytes(raw[:-cut])
    digests = [entry(n) for n in range(3)]
    with caplog.at_level(logging.WARNING), DigestCache(tmp_path) as cache:
        served = [cache.get(d) == data for d, data in digests]
    assert served[0]
    assert not served[2]
    assert "is damaged after" in caplog.text


def test_a_file_that_is_not_a_pack_is_ignored(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    (tmp_path / "pack-0-garbage.pack").write_bytes(b"PK\x03\x04 not ours")
    with caplog.at_level(logging.WARNING), DigestCache(tmp_path) as cache:
        assert cache.get(DIGEST) is None
        cache.put(DIGEST, DATA)
    assert "not a retention cache pack" in caplog.text
    with DigestCache(tmp_path) as cache:
        assert cache.get(DIGEST) == DATA


@pytest.mark.parametrize(
    ("digest", "data"),
    [("sha256:" + "0" * 64, DATA), ("sha256:nothex", DATA), ("../../etc/passwd", DATA)],
    ids=["wrong-digest", "malformed", "path-traversal"],
)
def test_refuses_bad_names(tmp_path: Path, digest: str, data: bytes) -> None:
    with pytest.raises(CacheError), DigestCache(tmp_path) as cache:
        cache.put(digest, data)
    assert packs(tmp_path) == []


def test_get_refuses_a_malformed_digest(tmp_path: Path) -> None:
    with pytest.raises(CacheError, match="not a digest"), DigestCache(tmp_path) as cache:
        cache.get("latest")


def test_unwritable_root_is_a_warning_not_an_error(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    blocker = tmp_path / "file"
    blocker.write_text("not a directory")
    with caplog.at_level(logging.WARNING), DigestCache(blocker) as cache:
        cache.put(DIGEST, DATA)
        cache.put(*entry(1))
        assert cache.get(DIGEST) is None
    warnings = [r.getMessage() for r in caplog.records]
    assert len(warnings) == 1  # once per run, not once per entry
    assert "cannot write the digest cache" in warnings[0]
    assert "--no-cache" in warnings[0]


def test_packs_are_merged_when_they_pile_up(tmp_path: Path) -> None:
    for n in range(MAX_PACKS):
        fill(tmp_path, range(n, n + 2))  # overlapping: every entry but the ends is in two packs
    assert len(packs(tmp_path)) == MAX_PACKS
    fill(tmp_path, range(MAX_PACKS, MAX_PACKS + 2))  # one pack too many: this run merges
    merged = packs(tmp_path)
    assert len(merged) == 2  # what this run used, and the recent rest it carried
    assert sum(p.read_bytes().count(b"sha256:") for p in merged) == MAX_PACKS + 2  # each once
    with DigestCache(tmp_path) as cache:
        assert all(cache.get(d) == data for d, data in map(entry, range(MAX_PACKS + 2)))


def age(path: Path, days: float) -> None:
    then = time.time() - days * 86400
    os.utime(path, (then, then))


def test_a_merge_drops_old_entries_this_run_did_not_use(tmp_path: Path) -> None:
    for n in range(MAX_PACKS):
        fill(tmp_path, range(n, n + 1))
    old = packs(tmp_path)
    for path in old[:-2]:
        age(path, KEEP_UNUSED_SECONDS / 86400 + 1)  # entries 0..13: older than the window
    with DigestCache(tmp_path) as cache:
        assert cache.get(entry(0)[0]) == entry(0)[1]  # old, but used by this run: kept
        cache.put(*entry(100))  # stored by this run: kept
    merged = packs(tmp_path)
    with DigestCache(tmp_path) as cache:
        kept = {n for n in [*range(MAX_PACKS), 100] if cache.get(entry(n)[0]) is not None}
    # used (0), stored (100), and the two recent packs' entries (14, 15); 1..13 are gone
    assert kept == {0, 14, 15, 100}
    assert sum(p.read_bytes().count(b"sha256:") for p in merged) == 4


def test_a_merge_drops_damaged_entries(tmp_path: Path) -> None:
    for n in range(MAX_PACKS):
        fill(tmp_path, range(n, n + 1))
    first = packs(tmp_path)[0]
    first.write_bytes(first.read_bytes().replace(b"2026", b"1999"))
    with DigestCache(tmp_path) as cache:
        assert cache.get(entry(0)[0]) is None
        cache.put(*entry(100))
    assert all(b"1999" not in p.read_bytes() for p in packs(tmp_path))
    with DigestCache(tmp_path) as cache:
        assert cache.get(entry(1)[0]) == entry(1)[1]
        assert cache.get(entry(0)[0]) is None


def test_a_run_that_stores_nothing_does_not_merge(tmp_path: Path) -> None:
    for n in range(MAX_PACKS):
        fill(tmp_path, range(n, n + 1))
    with DigestCache(tmp_path) as cache:
        assert cache.get(entry(3)[0]) == entry(3)[1]
    assert len(packs(tmp_path)) == MAX_PACKS  # 16 packs are not too many; nothing rewritten


def test_entries_carried_by_a_merge_keep_their_age(tmp_path: Path) -> None:
    # shard workers sharing the folder: each merge carries the others' recent entries; they must
    # not become young again, or no entry would ever leave the cache
    window = KEEP_UNUSED_SECONDS / 86400
    for n in range(MAX_PACKS):
        fill(tmp_path, range(n, n + 1))
    for path in packs(tmp_path):
        age(path, window - 1)  # six days old: recent, so carried
    fill(tmp_path, range(100, 101))  # a worker that uses only its own entry merges
    merged = packs(tmp_path)
    assert len(merged) == 2  # what it used, and what it carried
    ages = sorted((time.time() - p.stat().st_mtime) / 86400 for p in merged)
    assert ages[0] < 0.1  # the used pack: dated now
    assert window - 1.1 < ages[1] < window - 0.9  # the carried pack: as old as its sources
    for path in merged:
        if path.stat().st_mtime < time.time() - 3600:
            age(path, window + 1)  # two days later, the carried entries are too old
    for n in range(MAX_PACKS - 2):
        fill(tmp_path, range(200 + n, 201 + n))
    assert len(packs(tmp_path)) == MAX_PACKS
    fill(tmp_path, range(300, 301))  # one pack too many: the next merge
    assert len(packs(tmp_path)) == 2
    with DigestCache(tmp_path) as cache:
        assert cache.get(entry(0)[0]) is None  # carried once, then dropped
        assert cache.get(entry(100)[0]) == entry(100)[1]  # in a recent pack: carried
        assert cache.get(entry(200)[0]) == entry(200)[1]
        assert cache.get(entry(300)[0]) == entry(300)[1]


def test_stale_unpublished_packs_are_removed_fresh_ones_kept(tmp_path: Path) -> None:
    stale = tmp_path / ".tmp-dead.pack"
    fresh = tmp_path / ".tmp-live.pack"
    stale.write_bytes(b"x")
    fresh.write_bytes(b"x")
    old = time.time() - STALE_SECONDS - 60
    os.utime(stale, (old, old))
    with DigestCache(tmp_path) as cache:
        assert cache.get(DIGEST) is None
    assert not stale.exists()
    assert fresh.exists()


def test_concurrent_puts_from_threads(tmp_path: Path) -> None:
    cache = DigestCache(tmp_path)

    def worker(start: int) -> None:
        for n in range(start, start + 100):
            cache.put(*entry(n))
            cache.put(*entry(n % 50))  # the same digest from many threads at once

    threads = [threading.Thread(target=worker, args=(k * 100,)) for k in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    cache.close()
    (pack,) = packs(tmp_path)
    assert pack.read_bytes().count(b"sha256:") == 800  # no duplicates, no torn records
    with DigestCache(tmp_path) as reader:
        assert all(reader.get(d) == data for d, data in map(entry, range(800)))


@settings(max_examples=30, deadline=None)
@given(st.lists(st.lists(st.integers(0, 40), max_size=12), min_size=1, max_size=MAX_PACKS + 4))
def test_every_entry_any_run_stored_is_served(runs: list[list[int]]) -> None:
    import tempfile

    with tempfile.TemporaryDirectory() as folder:
        root = Path(folder)
        stored: set[int] = set()
        for numbers in runs:
            with DigestCache(root) as cache:
                for n in stored:
                    assert cache.get(entry(n)[0]) == entry(n)[1]
                for n in numbers:
                    cache.put(*entry(n))
            stored.update(numbers)
        assert len(packs(root)) <= MAX_PACKS
