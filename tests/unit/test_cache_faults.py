"""The digest cache when the disk fails it: full (a file-size limit), read-only, unreadable.

Each fault is real, in a child process: `RLIMIT_FSIZE` makes writes past a size fail with EFBIG
as a full disk fails them with ENOSPC (a short write, then an error); a folder made read-only by
an unprivileged child (as root the child drops to `nobody`, which root's own writes would ignore).
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import shutil
import subprocess
import sys
import tempfile
import textwrap
from pathlib import Path

import pytest

from retention.cache import MAGIC, DigestCache

NOBODY = 65534


def entry(n: int, size: int = 0) -> tuple[str, bytes]:
    data = b'{"n": %d, "pad": "%s"}' % (n, b"x" * size)
    return "sha256:" + hashlib.sha256(data).hexdigest(), data


def record(n: int, size: int = 0) -> int:
    """Bytes one entry takes in a pack: its header line and its data."""
    digest, data = entry(n, size)
    return len(b"%s %d\n" % (digest.encode(), len(data))) + len(data)


# imported before any privilege is dropped: the interpreter's own files may be unreadable then
PRELUDE = """
import json, os, resource, signal, sys
from pathlib import Path
from retention.cache import DigestCache
from retention.errors import CacheError
from tests.unit.test_cache_faults import NOBODY, entry

def fds():
    return len(os.listdir("/proc/self/fd"))

def limit_file_size(size):
    signal.signal(signal.SIGXFSZ, signal.SIG_IGN)  # EFBIG instead of a signal
    resource.setrlimit(resource.RLIMIT_FSIZE, (size, size))

def unprivileged():
    if os.geteuid() == 0:
        os.setgid(NOBODY)
        os.setuid(NOBODY)

def put(cache, *args):
    try:
        cache.put(*entry(*args))
        return "ok"
    except CacheError as exc:
        return "CacheError: " + exc.message
"""


def run_child(script: str, cwd: Path) -> dict[str, object]:
    """Run `script` (after PRELUDE) in a child whose working directory is `cwd`; it prints one
    JSON object on its last line (stdout is a pipe: a file-size limit does not cut it)."""
    root = Path(__file__).resolve().parents[2]
    done = subprocess.run(
        [sys.executable, "-c", PRELUDE + textwrap.dedent(script)],
        cwd=cwd,
        env={**os.environ, "PYTHONPATH": str(root)},
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert done.returncode == 0, done.stderr
    result: dict[str, object] = json.loads(done.stdout.splitlines()[-1])
    result["stderr"] = done.stderr
    return result


def test_a_pack_that_cannot_be_started_leaves_no_descriptor_or_file(tmp_path: Path) -> None:
    # the disk is full before the pack's first bytes: every put fails, and must not leak
    result = run_child(
        f"""
        limit_file_size({len(MAGIC) - 1})
        before = fds()
        cache = DigestCache(Path("."))
        outcomes = [put(cache, n) for n in range(3)]
        cache.close()
        print(json.dumps({{"outcomes": outcomes, "leaked": fds() - before}}))
        """,
        tmp_path,
    )
    outcomes = result["outcomes"]
    assert isinstance(outcomes, list)
    assert len(outcomes) == 3
    assert outcomes == ["ok"] * 3  # a warning, not an error: the walk goes on uncached
    assert str(result["stderr"]).count("cannot write the digest cache") == 1
    assert result["leaked"] == 0
    assert sorted(p.name for p in tmp_path.iterdir()) == []


def test_a_torn_write_leaves_a_clean_pack_and_later_entries_in_place(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    # room for the magic, entry 1 and entry 2, but not for the big entry 3 between them:
    # entry 3 is written in part, then fails, as on a full disk
    room = len(MAGIC) + record(1) + record(2) + 8
    result = run_child(
        f"""
        limit_file_size({room})
        cache = DigestCache(Path("."))
        outcomes = [put(cache, 1), put(cache, 3, 4000), put(cache, 2)]
        served = cache.get(entry(2)[0]) == entry(2)[1]
        cache.close()
        print(json.dumps({{"outcomes": outcomes, "served": served}}))
        """,
        tmp_path,
    )
    first, big, second = result["outcomes"]  # type: ignore[misc]
    assert first == "ok"
    assert big == "ok"  # not stored: a warning, not an error
    assert "cannot write the digest cache" in str(result["stderr"])
    assert second == "ok"  # it fits where the torn record was
    assert result["served"] is True
    with caplog.at_level(logging.WARNING), DigestCache(tmp_path) as cache:
        assert cache.get(entry(1)[0]) == entry(1)[1]
        assert cache.get(entry(2)[0]) == entry(2)[1]
        assert cache.get(entry(3, 4000)[0]) is None
    assert caplog.text == ""  # no damaged pack, no corrupt entry


def test_a_folder_turned_read_only_loses_the_cache_not_the_plan() -> None:
    # not under tmp_path: as root the child runs as nobody, who cannot pass pytest's 0700 folders
    outer = Path(tempfile.mkdtemp(prefix="retention-cache-"))
    outer.chmod(0o755)
    folder = outer / "digests"
    folder.mkdir()
    if os.geteuid() == 0:
        os.chown(folder, NOBODY, NOBODY)
    try:
        result = run_child(
            """
            unprivileged()
            before = fds()
            cache = DigestCache(Path("."))
            outcome = put(cache, 1)
            os.chmod(".", 0o555)  # remounted read-only, or chmod'ed, while the walk ran
            try:
                cache.close()
                closed = "closed"
            except BaseException as exc:
                closed = repr(exc)
            print(json.dumps({"put": outcome, "closed": closed, "leaked": fds() - before}))
            """,
            folder,
        )
    finally:
        folder.chmod(0o755)
        shutil.rmtree(outer)
    assert result["put"] == "ok"
    assert result["closed"] == "closed"  # a warning, not an exception that discards the plan
    assert "could not save the digest cache" in str(result["stderr"])
    assert result["leaked"] == 0


def test_a_pack_that_cannot_be_read_is_skipped_not_raised(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    # reading /proc/self/mem at offset 0 fails with EIO: a pack on a failing disk, or on NFS
    # one that another machine merged away between our open and our read (ESTALE)
    with DigestCache(tmp_path) as cache:
        cache.put(*entry(1))
    (tmp_path / "pack-0-unreadable.pack").symlink_to("/proc/self/mem")
    with caplog.at_level(logging.WARNING), DigestCache(tmp_path) as cache:
        assert cache.get(entry(1)[0]) == entry(1)[1]
        assert cache.get(entry(2)[0]) is None
    assert "pack-0-unreadable.pack" in caplog.text
