"""Is the storage the URL's registry? One tags/list per repository of a storage inventory,
compared with the storage's tags; tags pushed or deleted while the storage was read are told
apart from a storage that is another registry's (docs/decisions.md, "Storage inventory").
"""

from __future__ import annotations

import os
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, replace

from retention.errors import InventoryError, RegistryError
from retention.model import Inventory, Tag
from retention.oci import is_tag
from retention.registry.client import RegistryClient
from retention.storage.files import Files, StorageError, open_storage
from retention.text import untrusted

# A tag the API and the storage disagree about is a push (or delete) in flight when a second look
# at the storage agrees with the API and the tag's link changed less than this long ago.
IN_FLIGHT_SECONDS = 300


@dataclass(frozen=True, slots=True)
class Disagreement:
    """A tag the storage and the API's tags/list disagree about."""

    repository: str
    tag: str
    where: str  # "storage" (only on disk) or "api" (only in the API's list)
    in_flight: bool
    digest: str | None = None  # for a tag pushed in flight: what its link names now


def compare_with_api(
    client: RegistryClient,
    inventory: Inventory,
    root: str,
    *,
    concurrency: int = 8,
    clock: Callable[[], float] = time.time,
) -> list[Disagreement]:
    """One tags/list per repository of the storage inventory, compared with the storage's tags.

    Returns the tags in flight (the caller warns, and `with_in_flight` adds the pushed ones);
    raises StorageError when the two disagree otherwise: the storage is not the URL's registry.
    A second look at the storage decides (docs/decisions.md, "Storage inventory"): a tag the API
    lists and the inventory lacks is in flight when its link is on disk now, written less than
    IN_FLIGHT_SECONDS ago (a dangling tag, a folder without a link, agrees with the API); a tag
    only in the inventory is in flight when its folder is gone from the disk now.
    """
    files = Files(open_storage(root))
    names = [r.name for r in inventory.repositories]

    def listed(name: str) -> list[str] | None:
        try:
            return client.list_tags(name)
        except RegistryError as exc:
            if exc.status == 404:
                return None  # distribution answers 404 for a repository without tags
            raise

    try:
        with ThreadPoolExecutor(max_workers=max(1, concurrency)) as pool:
            answers = list(pool.map(listed, names))
    except RegistryError as exc:
        raise InventoryError(
            f"cannot compare the storage with the registry's API: {exc.diagnostics()}"
        ) from exc

    found: list[Disagreement] = []
    for repo, api_tags in zip(inventory.repositories, answers, strict=True):
        # a dangling tag is listed by both (its folder stays, its manifest is gone)
        stored = {t.name for t in repo.tags} | set(repo.dangling_tags)
        api = set(api_tags or ())
        for tag in sorted(stored ^ api):
            seen = _second_look(files, repo.name, tag, tag in api, clock())
            if seen is not None:
                found.append(seen)
    wrong = [d for d in found if not d.in_flight]
    if wrong:
        shown = ", ".join(
            f"{untrusted(d.repository)}:{untrusted(d.tag)} "
            f"({'only in the storage' if d.where == 'storage' else 'only in the API'})"
            for d in wrong[:5]
        )
        more = f" and {len(wrong) - 5} more" if len(wrong) > 5 else ""
        raise StorageError(
            f"the storage at {root} and the registry at {inventory.registry} disagree about "
            f"{len(wrong)} tag(s): {shown}{more}; they do not look like the same registry, and "
            "nothing was planned",
            hint="point registry.storage.filesystem at the rootdirectory of the registry that "
            "registry.url serves, or use --inventory-source api",
        )
    return found


def _second_look(
    files: Files, repo: str, tag: str, in_api: bool, now: float
) -> Disagreement | None:
    if not is_tag(tag):  # a name from the API that no tag folder can have (no path from it)
        return Disagreement(repo, tag, "api" if in_api else "storage", False)
    folder = f"{files.v2}/repositories/{repo}/_manifests/tags/{tag}"
    try:
        link = files.link(f"{folder}/current/link")
    except StorageError:
        link = None
    present = os.path.lexists(folder)
    if in_api:
        if present and link is None:
            return None  # a dangling tag: listed by both, left alone by the inventory
        fresh = link is not None and now - link[1] < IN_FLIGHT_SECONDS
        return Disagreement(repo, tag, "api", fresh, link[0] if link else None)
    return Disagreement(repo, tag, "storage", not present)


def with_in_flight(inventory: Inventory, disagreements: list[Disagreement]) -> Inventory:
    """The inventory with the tags pushed in flight added where their image is in it, so a
    manifest tagged while the storage was read is never planned as untagged."""
    added: dict[str, list[Tag]] = {}
    for d in disagreements:
        if d.in_flight and d.where == "api" and d.digest is not None:
            added.setdefault(d.repository, []).append(Tag(d.tag, d.digest))
    if not added:
        return inventory
    repos = []
    for repo in inventory.repositories:
        extra = [t for t in added.get(repo.name, ()) if repo.image(t.digest) is not None]
        if extra:
            tags = tuple(sorted((*repo.tags, *extra), key=lambda t: t.name))
            repo = replace(repo, tags=tags)
        repos.append(repo)
    return replace(inventory, repositories=tuple(repos))


def in_flight_warnings(disagreements: list[Disagreement]) -> list[str]:
    out = []
    for d in disagreements:
        ref = f"{untrusted(d.repository)}:{untrusted(d.tag)}"
        if d.where == "api":
            out.append(
                f"{ref} was pushed while the storage was read (in flight): its image, if the "
                "storage held it, is kept as tagged"
            )
        else:
            out.append(f"{ref} was deleted while the storage was read (in flight)")
    return out
