"""Reads a distribution registry's filesystem storage, read-only, into an `Inventory`.

The layout (distribution 2.x and 3.x, `storage.filesystem.rootdirectory`), under
`docker/registry/v2/`: `repositories/<name>/_manifests/{tags,revisions}` (retention/storage/
repository.py) and `blobs/sha256/<hex[:2]>/<hex>/data` (blobs.py). Each link file holds one
digest. Nothing here writes, renames or locks, and no symbolic link is followed (files.py).
Rooms: `files` (read-only primitives, `StorageError`), `blobs`, `repository` (one repository),
`read` (the whole storage, in worker processes) and `compare` (is it the URL's registry?).
Deletion never happens here.
"""

from retention.storage.compare import (
    IN_FLIGHT_SECONDS,
    Disagreement,
    compare_with_api,
    in_flight_warnings,
    with_in_flight,
)
from retention.storage.files import StorageError, open_storage
from retention.storage.read import take_storage_inventory

__all__ = [
    "IN_FLIGHT_SECONDS",
    "Disagreement",
    "StorageError",
    "compare_with_api",
    "in_flight_warnings",
    "open_storage",
    "take_storage_inventory",
    "with_in_flight",
]
