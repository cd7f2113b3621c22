"""Read-only access to a registry's storage root: folders, files and link files, never a link.

Files are opened O_RDONLY|O_NOFOLLOW; folders are listed with their entries' own types, and a
symbolic link anywhere below the root is an error, never followed (docs/decisions.md, "Storage
inventory"). Nothing here writes, renames or locks.
"""

from __future__ import annotations

import errno
import os
import stat
from operator import attrgetter

from retention.errors import InventoryError
from retention.oci import is_digest

V2 = "docker/registry/v2"
LINK_MAX = 256  # a link file holds "sha256:<64 hex>"; anything longer is not a link
# NONBLOCK: a FIFO planted where a file belongs must not hang the read. NOATIME: reading must
# not even touch the files' access times (dropped for the run when the files are not ours).
_FLAGS = os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC
_NOATIME = getattr(os, "O_NOATIME", 0)

HINT_ROOT = (
    "set registry.storage.filesystem to the registry's storage.filesystem.rootdirectory "
    "(the folder that holds docker/registry/v2), or use --inventory-source api"
)
HINT_READ = (
    "run retention on the registry host as a user that may read the storage, or in a pod that "
    "mounts the registry's volume read-only (docs/registries.md)"
)
HINT_GARBAGE = (
    "a file of the registry's storage is half-written or damaged; nothing was planned. If a "
    "push was running, plan again; otherwise check the registry (docs/troubleshooting.md)"
)


class StorageError(InventoryError):
    """The storage cannot be read as a registry's: missing, unreadable, not a root, damaged."""


def garbage(path: str, what: str) -> StorageError:
    return StorageError(f"{path}: {what}", hint=HINT_GARBAGE)


def os_error(path: str, exc: OSError) -> StorageError:
    if exc.errno == errno.ELOOP:
        return is_a_link(path)
    if isinstance(exc, PermissionError):
        return StorageError(f"cannot read {path}: permission denied", hint=HINT_READ)
    return StorageError(f"cannot read {path}: {exc.strerror or exc}", hint=HINT_READ)


def is_a_link(path: str) -> StorageError:
    return StorageError(
        f"{path} is a symbolic link: retention never follows links in the registry's storage",
        hint="distribution never writes links there; replace it with the file or folder",
    )


def not_a_folder(path: str) -> StorageError:
    return garbage(path, "a file where the registry keeps a folder")


_name = attrgetter("name")


class Files:
    """Folders and files below one storage root (resolved by `open_storage`), read-only.

    Paths are built by concatenation below the resolved root: it is absolute and every name
    in it comes from a listing or from distribution's fixed layout.
    """

    def __init__(self, root: str) -> None:
        self.root = root
        self.v2 = f"{root.rstrip('/')}/{V2}"
        self._flags = _FLAGS | _NOATIME

    def listing(self, path: str, *, listed: bool = False) -> list[os.DirEntry[str]]:
        """A folder's entries sorted by name, none of them a symbolic link; [] when it does
        not exist. `listed`: the folder came from its parent's listing as a folder (not a
        link), so it is not looked at again before it is opened."""
        if not listed and not self.check_folder(path):
            return []
        try:
            with os.scandir(path) as it:
                found = list(it)
        except FileNotFoundError:
            return []  # removed since: a delete in flight
        except NotADirectoryError as exc:
            raise not_a_folder(path) from exc
        except OSError as exc:
            raise os_error(path, exc) from exc
        for entry in found:
            if entry.is_symlink():
                raise is_a_link(entry.path)
        found.sort(key=_name)
        return found

    def folders(self, path: str, *, listed: bool = False) -> list[os.DirEntry[str]]:
        """The entries of a folder of distribution's that holds only folders (a file there is
        damage)."""
        found = self.listing(path, listed=listed)
        for entry in found:
            if not entry.is_dir(follow_symlinks=False):
                raise not_a_folder(entry.path)
        return found

    def read(self, path: str, limit: int) -> tuple[bytes, os.stat_result] | None:
        """A regular file's bytes (at most `limit`) and its stat; None when it does not exist."""
        try:
            fd = os.open(path, self._flags)
        except FileNotFoundError:
            return None
        except PermissionError as exc:
            if not self._flags & _NOATIME:
                raise os_error(path, exc) from exc
            # O_NOATIME needs ownership: the files are not ours, so drop it for the whole run
            # rather than trying every file twice
            self._flags &= ~_NOATIME
            return self.read(path, limit)
        except OSError as exc:
            raise os_error(path, exc) from exc
        try:
            st = os.fstat(fd)
            if not stat.S_ISREG(st.st_mode):
                raise garbage(path, "not a regular file")
            if st.st_size > limit:
                raise garbage(path, f"{st.st_size} bytes, more than the {limit} it may hold")
            raw = os.read(fd, st.st_size)
            while len(raw) < st.st_size:  # a short read (a network filesystem): the rest
                chunk = os.read(fd, st.st_size - len(raw))
                if not chunk:
                    break
                raw += chunk
            return raw, st
        finally:
            os.close(fd)

    def link(self, path: str, expect: str | None = None) -> tuple[str, float] | None:
        """A link file's digest and mtime (seconds); None when it does not exist."""
        got = self.read(path, LINK_MAX)
        if got is None:
            return None
        raw, st = got
        try:
            text = raw.decode("ascii")
        except UnicodeDecodeError:
            text = ""
        if not is_digest(text):
            shown = raw[:80].decode("ascii", "replace").encode("unicode_escape").decode()
            raise garbage(path, f"a link file that does not hold a digest: {shown!r}")
        if expect is not None and text != expect:
            raise garbage(path, f"names {text}, but the folder it is in names {expect}")
        return text, st.st_mtime

    def check_folder(self, path: str) -> bool:
        """Whether the folder exists; raises when it is a link or a file."""
        try:
            st = os.lstat(path)
        except FileNotFoundError:
            return False
        except OSError as exc:
            raise os_error(path, exc) from exc
        if stat.S_ISLNK(st.st_mode):
            raise is_a_link(path)
        if not stat.S_ISDIR(st.st_mode):
            raise not_a_folder(path)
        return True


def open_storage(root: str) -> str:
    """The storage root, resolved once (the configured path itself may be a link, as
    /var/lib/registry often is); raises StorageError when it is not a registry's root."""
    try:
        st = os.stat(root)
    except FileNotFoundError as exc:
        raise StorageError(
            f"registry.storage.filesystem {root!r} does not exist", hint=HINT_ROOT
        ) from exc
    except OSError as exc:
        raise os_error(root, exc) from exc
    if not stat.S_ISDIR(st.st_mode):
        raise StorageError(f"registry.storage.filesystem {root!r} is not a folder", hint=HINT_ROOT)
    real = os.path.realpath(root)
    if not os.access(real, os.R_OK | os.X_OK):
        raise StorageError(f"cannot read {root}: permission denied", hint=HINT_READ)
    v2_st = None
    for part in ("docker", "docker/registry", V2):  # none of them a link either
        path = f"{real.rstrip('/')}/{part}"
        try:
            v2_st = os.lstat(path)
        except (FileNotFoundError, NotADirectoryError):
            v2_st = None
            break
        except OSError as exc:
            raise os_error(path, exc) from exc
        if stat.S_ISLNK(v2_st.st_mode):
            raise is_a_link(path)
    if v2_st is None or not stat.S_ISDIR(v2_st.st_mode):
        near = ""
        if os.path.isdir(os.path.join(real, "repositories")) or os.path.isdir(
            os.path.join(real, "blobs")
        ):
            near = " (it looks like docker/registry/v2 itself: give the folder three levels up)"
        raise StorageError(
            f"registry.storage.filesystem {root!r} is not a registry's storage root: it has no "
            f"{V2} folder{near}",
            hint=HINT_ROOT,
        )
    return real
