"""The garbage-collection step: run the policy's `gc.command` after a run that deleted something.

Imports errors and the model values only; runs the command with subprocess (never a shell) and
measures the storage with os.walk. It does not make the registry read-only: the command must.
"""

from __future__ import annotations

import contextlib
import logging
import os
import signal
import stat
import subprocess
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

from retention.errors import ScheduleError
from retention.model import Inventory, Kind

log = logging.getLogger(__name__)

DEFAULT_TIMEOUT_SECONDS = 3600.0

# The tail of the collector's output kept for the run record: it names every blob it marks.
OUTPUT_LIMIT = 16 * 1024

# Short flags of `registry garbage-collect` (distribution 2.8 and 3.x), which may be clustered.
_GC_SHORT_FLAGS = frozenset("mdqh")


@dataclass(frozen=True, slots=True)
class GcResult:
    """What the collector did: exit code, output tail, and the storage size before and after."""

    command: tuple[str, ...]
    exit_code: int | None  # None: it never ran, or was killed at the timeout
    output: str
    bytes_before: int | None = None
    bytes_after: int | None = None
    error: str | None = None

    @property
    def ok(self) -> bool:
        return self.exit_code == 0 and self.error is None

    @property
    def bytes_freed(self) -> int | None:
        if self.bytes_before is None or self.bytes_after is None:
            return None
        return self.bytes_before - self.bytes_after


def storage_bytes(path: str) -> int:
    """The bytes in the regular files under `path` (not following symlinks).

    Files that vanish during the walk are skipped (the registry may be sweeping); a missing or
    unreadable root is a ScheduleError.
    """
    if not os.path.isdir(path):
        raise ScheduleError(f"gc.storage_path {path!r} is not a directory")
    errors: list[OSError] = []
    total = 0
    for root, _dirs, files in os.walk(path, onerror=errors.append):
        for name in files:
            with contextlib.suppress(FileNotFoundError):
                st = os.lstat(os.path.join(root, name))
                if stat.S_ISREG(st.st_mode):
                    total += st.st_size
    if errors:
        first = errors[0]
        raise ScheduleError(f"cannot measure {path!r}: {first.filename}: {first.strerror}")
    return total


def _tail(text: str, limit: int = OUTPUT_LIMIT) -> str:
    if len(text) <= limit:
        return text
    return f"[... {len(text) - limit} characters cut ...]\n{text[-limit:]}"


def run_gc(
    command: Sequence[str],
    *,
    storage_path: str | None = None,
    timeout: float = DEFAULT_TIMEOUT_SECONDS,
    env: Mapping[str, str] | None = None,
) -> GcResult:
    """Run the policy's `gc.command` (argv, no shell) with a timeout, stdout and stderr together.

    With `storage_path` (the policy's `gc.storage_path`) the storage is walked before and after.

    Never raises for a failure of the step: a command that cannot start, exits non-zero or times
    out gives a result with `ok` False and the reason, so the run record keeps what was deleted.
    The command runs in its own session so that Ctrl-C at a terminal does not interrupt it, and
    so that at the timeout its whole process group (a wrapper script's children too) is killed.
    """
    argv = tuple(command)
    if not argv:
        return GcResult(argv, None, "", error="gc.command is empty")
    before: int | None = None
    if storage_path is not None:
        try:
            before = storage_bytes(storage_path)
        except ScheduleError as exc:
            return GcResult(argv, None, "", error=f"{exc.message}; garbage collection not run")
    log.info("running garbage collection: %s", " ".join(argv))
    try:
        proc = subprocess.Popen(
            argv,
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            env=None if env is None else dict(env),
            start_new_session=True,
        )
    except OSError as exc:
        return GcResult(argv, None, "", before, error=f"cannot run {argv[0]!r}: {exc}")
    error = None
    try:
        raw, _ = proc.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGKILL)
        try:
            raw, _ = proc.communicate(timeout=30)
        except subprocess.TimeoutExpired:  # a grandchild left the group and holds the pipe
            proc.kill()
            raw = b""
            if proc.stdout is not None:
                proc.stdout.close()
            proc.wait()
        error = f"timed out after {timeout:g} s and was killed"
    output = _tail(raw.decode("utf-8", "replace"))
    exit_code = None if error else proc.returncode
    after: int | None = None
    if storage_path is not None:
        try:
            after = storage_bytes(storage_path)
        except ScheduleError as exc:
            error = error or exc.message
    if exit_code not in (0, None):
        log.error("garbage collection exited %s: %s", exit_code, output.strip()[-500:])
    return GcResult(argv, exit_code, output, before, after, error)


def deletes_untagged(command: Sequence[str]) -> bool:
    """Whether `command` asks `registry garbage-collect` for `--delete-untagged` (`-m`).

    Looks at every whitespace-separated word, so `sh -c "registry garbage-collect -m ..."` counts.
    """
    for arg in command:
        for word in arg.split():
            name, _, value = word.partition("=")
            if value.lower() in ("false", "0", "f"):
                continue
            if name == "--delete-untagged":
                return True
            cluster = name[1:]
            if (
                name.startswith("-")
                and not name.startswith("--")
                and "m" in cluster
                and set(cluster) <= _GC_SHORT_FLAGS
            ):
                return True
    return False


def untagged_warnings(command: Sequence[str], inventory: Inventory) -> list[str]:
    """Warnings for a `--delete-untagged` collector given what the registry holds (§1.9).

    On distribution 2.x `-m` deletes the platform manifests of tagged multi-platform indexes, and
    on every version the untagged OCI referrers (signatures, SBOMs) of kept images.
    """
    if not deletes_untagged(command):
        return []
    indexes = [
        f"{repo.name}@{image.digest}"
        for repo in inventory
        for image in repo.images
        if image.kind is Kind.INDEX
    ]
    referrers = []
    for repo in inventory:
        tagged = {t.digest for t in repo.tags}
        referrers += [
            f"{repo.name}@{image.digest}"
            for image in repo.images
            if image.subject is not None and image.digest not in tagged
        ]
    warnings = []
    if indexes:
        warnings.append(
            f"gc.command uses --delete-untagged (-m) and the registry holds {len(indexes)} "
            f"multi-platform index(es), e.g. {indexes[0]}: on distribution 2.x that deletes the "
            "platform manifests of tagged indexes and breaks them (distribution issue #3178); "
            "drop -m: retention already deletes the platform manifests of the indexes it deletes"
        )
    if referrers:
        warnings.append(
            f"gc.command uses --delete-untagged (-m) and the registry holds {len(referrers)} "
            f"untagged OCI referrer(s), e.g. {referrers[0]}: distribution deletes them even "
            "when their subject is kept; drop -m"
        )
    return warnings
