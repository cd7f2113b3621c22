"""The storage inventory: every repository below the root, read by worker processes.

The read is Python work on small files under the GIL, so threads add no CPU; up to one forked
worker process per usable CPU reads a share of the repositories and sends back only the values
(`Read`), pickled compactly (docs/decisions.md, "Storage inventory: speed").
"""

from __future__ import annotations

import io
import logging
import multiprocessing
import os
import pickle
import signal
import threading
import time
from collections.abc import Callable
from concurrent.futures import FIRST_COMPLETED, Future, ProcessPoolExecutor, wait
from concurrent.futures.process import BrokenProcessPool
from dataclasses import fields
from datetime import datetime
from operator import attrgetter
from typing import Any

from retention.inventory import Progress
from retention.model import Blob, Image, Inventory, Repository, Tag, TagEvent
from retention.oci import is_repository
from retention.storage.blobs import Blobs
from retention.storage.files import Files, StorageError, garbage, open_storage
from retention.storage.repository import Read, read_repository

log = logging.getLogger(__name__)

_CHUNK = 16  # repositories per task at most: small enough to share the work out evenly
_ORPHAN_CHECK_SECONDS = 0.5


def repositories(files: Files) -> list[str]:
    """Every repository name: a folder under repositories/ holding `_manifests` (names nest;
    folders starting with `_` are distribution's own)."""
    found: list[str] = []

    def walk(path: str, parts: tuple[str, ...], listed: bool) -> None:
        entries = files.listing(path, listed=listed)
        if parts and any(e.name == "_manifests" and e.is_dir() for e in entries):
            name = "/".join(parts)
            if not is_repository(name):
                raise garbage(path, f"a repository folder with an invalid name {name!r}")
            found.append(name)
        for e in entries:
            if not e.name.startswith("_") and e.is_dir(follow_symlinks=False):
                walk(e.path, (*parts, e.name), True)

    walk(f"{files.v2}/repositories", (), False)
    return sorted(found)


def take_storage_inventory(
    root: str,
    *,
    registry: str,
    now: datetime,
    select: Callable[[str], bool] = lambda name: True,
    complete: bool = True,
    concurrency: int = 8,
    progress: Progress = lambda phase, done, total: None,
    processes: int | None = None,
) -> Inventory:
    """Every manifest revision of every selected repository, tagged or not, from the storage.

    Raises StorageError (nothing half-read is returned) for a missing, unreadable or damaged
    storage. `registry` is the URL the plan names; `plan` checks it is the same registry
    (`compare_with_api`). `processes` is how many worker processes read it (default: one per
    usable CPU), never more than `concurrency`; 1 reads it in this process.
    """
    files = Files(open_storage(root))
    names = [n for n in repositories(files) if select(n)]
    size = max(1, min(_CHUNK, len(names) // (4 * _cpus())))
    chunks = [names[i : i + size] for i in range(0, len(names), size)]
    workers = min(processes or _cpus(), max(1, concurrency), len(chunks))
    if workers > 1 and _threads() == 1:
        reads, missing = _in_workers(files.root, chunks, workers, progress)
    else:
        # forking a process with other threads running can deadlock the child (a lock held
        # by a thread that does not exist there): read here instead
        reads, missing = _in_process(files, chunks, progress)
    warnings: list[str] = []
    for read in reads:
        warnings.extend(read.warnings)
    warnings = list(dict.fromkeys(warnings))  # a config missing in two workers: once
    for warning in warnings:
        log.warning("%s", warning)
    if missing:
        warnings.append(
            f"{len(missing)} blobs that manifests reference are not in the storage; "
            "they are counted as 0 bytes (garbage collection cannot free them)"
        )
    return Inventory(
        registry=registry,
        taken_at=now,
        repositories=tuple(r.repository for r in reads),
        complete=complete,
        warnings=tuple(warnings),
        source="storage",
    )


def _threads() -> int:
    """The threads of this process, the operating system's count (a library's own threads
    too, which `threading` does not see); `threading`'s where there is no /proc."""
    try:
        return len(os.listdir("/proc/self/task"))
    except OSError:
        return threading.active_count()


def _cpus() -> int:
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # not Linux
        return os.cpu_count() or 1


def _in_process(
    files: Files, chunks: list[list[str]], progress: Progress
) -> tuple[list[Read], set[str]]:
    blobs = Blobs(files)
    reads: list[Read] = []
    total = sum(len(c) for c in chunks)
    for chunk in chunks:
        reads.extend(read_repository(files, blobs, name) for name in chunk)
        progress("repositories", len(reads), total)
    return reads, blobs.missing


# --- the worker processes -----------------------------------------------------------------------

_reader: tuple[Files, Blobs] | None = None  # a worker's own, made by _start once per process


def _start(root: str) -> None:
    global _reader
    # Ctrl-C and SIGTERM (sent to the whole process group) are the parent's to handle: it
    # stops the pool, or lets the read finish; a worker whose parent is gone ends itself
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    signal.signal(signal.SIGTERM, signal.SIG_IGN)
    threading.Thread(target=_end_with, args=(os.getppid(),), daemon=True).start()
    files = Files(root)
    _reader = (files, Blobs(files))


def _end_with(parent: int) -> None:
    """End this worker once its parent is gone (killed): nothing else would, as the other
    workers hold the other ends of its pipes, so no read of them ever sees the end."""
    while os.getppid() == parent:
        time.sleep(_ORPHAN_CHECK_SECONDS)
    os._exit(1)


def _task(names: list[str]) -> bytes:
    """Read `names` in a worker: the pickled outcome (see _Wire), never an exception, so a
    StorageError reaches the parent whole (exceptions with keyword arguments do not pickle)."""
    assert _reader is not None
    files, blobs = _reader
    try:
        outcome: tuple[Any, ...] = ("ok", [read_repository(files, blobs, n) for n in names])
    except StorageError as exc:
        outcome = ("error", exc.message, exc.hint)
    outcome += (sorted(blobs.missing),)
    blobs.missing.clear()
    return _dumps(outcome)


# The values go back as their constructors' arguments: the dataclasses' own pickling (through
# __getstate__ in Python) took longer than reading the storage (docs/decisions.md).
_ARGUMENTS: dict[type, Callable[[Any], tuple[Any, ...]]] = {
    cls: attrgetter(*(f.name for f in fields(cls) if f.init))
    for cls in (Read, Repository, Image, Blob, Tag, TagEvent)
}


class _Wire(pickle.Pickler):
    def reducer_override(self, obj: Any) -> Any:
        arguments = _ARGUMENTS.get(type(obj))
        if arguments is None:
            return NotImplemented
        return type(obj), arguments(obj)


def _dumps(outcome: tuple[Any, ...]) -> bytes:
    out = io.BytesIO()
    _Wire(out, protocol=pickle.HIGHEST_PROTOCOL).dump(outcome)
    return out.getvalue()


def _in_workers(
    root: str, chunks: list[list[str]], workers: int, progress: Progress
) -> tuple[list[Read], set[str]]:
    """Each chunk read by one of `workers` forked processes; the first error stops the rest."""
    pool = ProcessPoolExecutor(
        workers,
        mp_context=multiprocessing.get_context("fork"),
        initializer=_start,
        initargs=(root,),
    )
    done_reads: dict[int, list[Read]] = {}
    missing: set[str] = set()
    total = sum(len(c) for c in chunks)
    finished = 0
    try:
        futures = {pool.submit(_task, chunk): i for i, chunk in enumerate(chunks)}
        pending: set[Future[bytes]] = set(futures)
        while pending:
            done, pending = wait(pending, return_when=FIRST_COMPLETED)
            for future in done:
                status, *rest = pickle.loads(_result(future))
                missing.update(rest[-1])
                if status == "error":
                    raise StorageError(rest[0], hint=rest[1])
                done_reads[futures[future]] = rest[0]
                finished += len(rest[0])
            progress("repositories", finished, total)
    finally:
        pool.shutdown(wait=True, cancel_futures=True)
    return [read for i in range(len(chunks)) for read in done_reads[i]], missing


def _result(future: Future[bytes]) -> bytes:
    try:
        return future.result()
    except BrokenProcessPool as exc:
        raise StorageError(
            "a worker process reading the storage ended unexpectedly (killed, or out of "
            "memory); nothing was planned",
            hint="plan again; with settings.concurrency: 1 the storage is read in one process",
        ) from exc
