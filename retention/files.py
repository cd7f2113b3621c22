"""File primitives shared by the modules that keep state on disk: atomic writes, directory fsync
and non-blocking `flock`.

Standard library only; raises plain `OSError` (each caller wraps it in its own `RetentionError`).
"""

from __future__ import annotations

import contextlib
import errno
import fcntl
import os
import tempfile
from pathlib import Path

# errno values of a non-blocking flock that another open file already holds
_HELD = (errno.EWOULDBLOCK, errno.EAGAIN, errno.EACCES)


def atomic_write(
    target: Path,
    data: bytes,
    *,
    mode: int | None = None,
    suffix: str = "",
    make_parents: bool = False,
) -> None:
    """Replace `target` with `data` so that readers see the old file or the new one, never a mix.

    A temp file `.<name>.<random><suffix>` in the same directory is written, fsynced and renamed
    over `target`, then the directory is fsynced. `mode=None` keeps mkstemp's 0600; the temp file
    is removed on any failure. Raises OSError.
    """
    if make_parents:
        target.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{target.name}.", suffix=suffix, dir=_folder(target))
    try:
        with os.fdopen(fd, "wb") as fh:
            if mode is not None:
                os.fchmod(fh.fileno(), mode)
            fh.write(data)
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, target)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    fsync_dir(_folder(target))


def atomic_create(target: Path, data: bytes) -> None:
    """Write `data` to `target`, which must not exist yet, atomically: a fsynced temp file is
    hard-linked into place, so a file created meanwhile is never replaced (FileExistsError).

    The temp file is always removed. Raises OSError.
    """
    fd, tmp = tempfile.mkstemp(prefix=f".{target.name}.", dir=_folder(target))
    try:
        with os.fdopen(fd, "wb") as fh:
            fh.write(data)
            fh.flush()
            os.fsync(fh.fileno())
        os.link(tmp, target)
    finally:
        Path(tmp).unlink(missing_ok=True)
    fsync_dir(_folder(target))


def _folder(target: Path) -> Path:
    return target.parent or Path(".")


def fsync_dir(directory: Path) -> None:
    """Make a rename or create in `directory` durable; a filesystem that refuses is ignored."""
    with contextlib.suppress(OSError):
        fd = os.open(directory, os.O_RDONLY | os.O_DIRECTORY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)


def try_lock(fd: int) -> bool:
    """Take an exclusive `flock` on `fd` without waiting: False when another open file holds it.

    flock is per open file: two descriptors of one process also exclude each other, and the lock
    is released when the descriptor is closed (or the process dies). Other errors raise OSError.
    """
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except OSError as exc:
        if exc.errno in _HELD:
            return False
        raise
    return True


def unlock(fd: int) -> None:
    """Release the `flock` on `fd` (closing it does too); errors are ignored."""
    with contextlib.suppress(OSError):
        fcntl.flock(fd, fcntl.LOCK_UN)
