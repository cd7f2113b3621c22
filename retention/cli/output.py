"""Where results go: stdout, or a file written atomically (retention/files.py) only once the
result exists; an output path that cannot work is refused before any registry is contacted."""

from __future__ import annotations

import sys
from pathlib import Path

from retention.errors import RetentionError, UsageError
from retention.files import atomic_create, atomic_write


def write_output(path: str | None, text: str) -> None:
    """Write `text` to stdout, or atomically to `path` (a temp file renamed into place)."""
    if path is None or path == "-":
        sys.stdout.write(text)
        return
    atomic_write(Path(path), text.encode("utf-8"))


def write(path: str | None, text: str) -> None:
    """`write_output`, with a file system error reported as an error, not a traceback."""
    try:
        write_output(path, text)
    except OSError as exc:
        raise RetentionError(f"cannot write {path}: {exc.strerror or exc}") from exc


def check_output(path: str | None, flag: str = "-o") -> None:
    """Fail before the registry walk, not after it, when `-o` cannot be written."""
    if path is None or path == "-":
        return
    folder = Path(path).parent
    if not folder.is_dir():
        raise UsageError(
            f"{flag} {path}: the folder {folder} does not exist", hint="create it, or pick another"
        )


def refuse_existing(path: str | None, force: bool) -> None:
    """Refuse to replace an existing output file unless `--force`."""
    if path not in (None, "-") and not force and Path(path).exists():
        raise UsageError(
            f"{path} already exists; not overwriting it",
            hint="pass --force to replace it, or choose another file with -o",
        )


def write_new(path: str, text: str) -> None:
    """Write `text` to a file that must not exist yet, atomically: a temp file hard-linked into
    place, so a file created meanwhile is never replaced."""
    try:
        atomic_create(Path(path), text.encode("utf-8"))
    except FileExistsError:
        refuse_existing(path, force=False)
        raise
