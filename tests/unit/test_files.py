"""retention/files.py on real files: atomic replace and create, directory fsync, flock (and how
the journal and the schedule report a lock error)."""

from __future__ import annotations

import errno
import os
import stat
import subprocess
import sys
from pathlib import Path

import pytest

from retention.errors import JournalError, LockHeld, ScheduleError
from retention.files import atomic_create, atomic_write, fsync_dir, try_lock, unlock
from retention.journal import Journal
from retention.schedule import acquire_lock


@pytest.mark.parametrize(
    ("mode", "suffix", "expected_mode"),
    [(None, "", 0o600), (0o644, ".tmp", 0o644), (0o640, "", 0o640)],
    ids=["mkstemp-mode-kept", "world-readable", "group-readable"],
)
def test_atomic_write_replaces_with_the_mode_asked_and_leaves_no_temp(
    tmp_path: Path, mode: int | None, suffix: str, expected_mode: int
) -> None:
    target = tmp_path / "out.json"
    target.write_bytes(b"old")
    atomic_write(target, b"new\n", mode=mode, suffix=suffix)
    assert target.read_bytes() == b"new\n"
    assert stat.S_IMODE(target.stat().st_mode) == expected_mode
    assert os.listdir(tmp_path) == ["out.json"]


@pytest.mark.parametrize(
    ("make_parents", "raises"),
    [(True, None), (False, FileNotFoundError)],
    ids=["parents-made", "missing-parent-is-an-error"],
)
def test_atomic_write_parents(
    tmp_path: Path, make_parents: bool, raises: type[OSError] | None
) -> None:
    target = tmp_path / "a" / "b" / "m.prom"
    if raises is None:
        atomic_write(target, b"x", make_parents=make_parents)
        assert target.read_bytes() == b"x"
    else:
        with pytest.raises(raises):
            atomic_write(target, b"x", make_parents=make_parents)
        assert not (tmp_path / "a").exists()


def test_a_failed_rename_keeps_the_old_file_and_removes_the_temp(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    target = tmp_path / "m.prom"
    target.write_bytes(b"old")

    def full_disk(src: str, dst: str) -> None:
        raise OSError(28, "No space left on device")

    monkeypatch.setattr("retention.files.os.replace", full_disk)
    with pytest.raises(OSError, match="No space left"):
        atomic_write(target, b"new", suffix=".tmp")
    assert target.read_bytes() == b"old"
    assert os.listdir(tmp_path) == ["m.prom"]


@pytest.mark.parametrize(
    ("exists", "expected"),
    [(False, b"new"), (True, b"someone else's")],
    ids=["created", "existing-file-never-replaced"],
)
def test_atomic_create(tmp_path: Path, exists: bool, expected: bytes) -> None:
    target = tmp_path / "policy.yaml"
    if exists:
        target.write_bytes(b"someone else's")
        with pytest.raises(FileExistsError):
            atomic_create(target, b"new")
    else:
        atomic_create(target, b"new")
    assert target.read_bytes() == expected
    assert os.listdir(tmp_path) == ["policy.yaml"]


@pytest.mark.parametrize("kind", ["directory", "missing", "file"])
def test_fsync_dir_never_raises(tmp_path: Path, kind: str) -> None:
    target = {"directory": tmp_path, "missing": tmp_path / "nope", "file": tmp_path / "f"}[kind]
    if kind == "file":
        target.write_bytes(b"")
    fsync_dir(target)  # a directory is synced; a path that is not one is ignored
    assert tmp_path.is_dir()


_HOLDER = """
import fcntl, os, sys, time
fd = os.open(sys.argv[1], os.O_RDWR)
fcntl.flock(fd, fcntl.LOCK_EX)
print("locked", flush=True)
sys.stdin.readline()
"""


def test_try_lock_is_refused_while_another_process_holds_it(tmp_path: Path) -> None:
    path = tmp_path / "p.lock"
    path.write_bytes(b"")
    with subprocess.Popen(
        [sys.executable, "-c", _HOLDER, str(path)],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
    ) as holder:
        assert holder.stdin is not None and holder.stdout is not None
        try:
            assert holder.stdout.readline() == "locked\n"
            fd = os.open(path, os.O_RDWR)
            try:
                assert try_lock(fd) is False
            finally:
                os.close(fd)
        finally:
            holder.stdin.close()
            holder.wait(timeout=10)
    fd = os.open(path, os.O_RDWR)
    try:
        assert try_lock(fd) is True  # released when the holder exited
    finally:
        os.close(fd)


def test_flock_is_per_open_file_and_unlock_releases_it(tmp_path: Path) -> None:
    path = tmp_path / "p.lock"
    path.write_bytes(b"")
    first, second = os.open(path, os.O_RDWR), os.open(path, os.O_RDWR)
    try:
        assert try_lock(first) is True
        assert try_lock(second) is False  # same process, another open file
        unlock(first)
        assert try_lock(second) is True
    finally:
        os.close(first)
        os.close(second)


def test_try_lock_raises_what_is_not_a_held_lock(tmp_path: Path) -> None:
    fd = os.open(tmp_path, os.O_RDONLY)
    os.close(fd)
    with pytest.raises(OSError) as caught:
        try_lock(fd)  # EBADF: a real error, not "held"
    assert caught.value.errno == errno.EBADF


def _no_locks(fd: int) -> bool:
    raise OSError(errno.ENOLCK, "No locks available")


@pytest.mark.parametrize(
    ("module", "take", "expected"),
    [
        ("retention.journal", "journal", r"cannot lock journal .*No locks available"),
        ("retention.schedule", "schedule", r"cannot lock .*No locks available"),
    ],
    ids=["journal", "schedule-lock"],
)
def test_a_lock_error_that_is_not_a_held_lock_is_not_reported_as_one(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, module: str, take: str, expected: str
) -> None:
    monkeypatch.setattr(f"{module}.try_lock", _no_locks)
    with pytest.raises((JournalError, ScheduleError), match=expected) as caught:
        if take == "journal":
            Journal(tmp_path / "j.jsonl", registry="http://r").open(
                plan_sha256="ab", policy_path="p.yaml"
            )
        else:
            with acquire_lock(tmp_path / "p.lock"):
                pass
    assert not isinstance(caught.value, LockHeld)
