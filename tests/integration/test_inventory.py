"""The registry walk against a real registry: every kind of manifest, the created-date rules,
sizes, and the digest cache that makes a second walk skip configs and platform manifests."""

from __future__ import annotations

import time
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path

from retention.cache import DigestCache
from retention.inventory import take_inventory
from retention.model import Inventory, Kind, Repository
from retention.policy.model import RegistryConfig
from retention.registry.client import RegistryClient
from tests.harness.registry import AccessLogEntry, RegistryProcess
from tests.harness.seed import Pushed, Pusher, make_layer

NOW = datetime(2026, 11, 27, 12, 0, tzinfo=UTC)


def _walk(registry: RegistryProcess, prefix: str, cache: DigestCache | None = None) -> Inventory:
    with RegistryClient(RegistryConfig(url=registry.url), env={}) as client:
        return take_inventory(
            client,
            now=NOW,
            select=lambda name: name.startswith(prefix + "/"),
            complete=False,
            cache=cache,
        )


def _repo(inventory: Inventory, name: str) -> Repository:
    (repo,) = [r for r in inventory.repositories if r.name == name]
    return repo


def test_every_kind_is_walked_with_dates_sizes_and_links(
    registry: RegistryProcess, push_image: Callable[..., Pushed], pusher: Pusher, repo_prefix: str
) -> None:
    repo = f"{repo_prefix}/app"
    shared = make_layer("shared " * 50)
    docker = push_image(repo, ["a", "b"], created=NOW - timedelta(days=3), layers=[shared, "x"])
    oci = push_image(repo, "oci", kind="oci", created=NOW - timedelta(days=5))
    index = push_image(
        repo,
        "multi",
        kind="oci-index",
        platform_created={"linux/amd64": NOW - timedelta(days=9), "linux/arm64": NOW},
    )
    dlist = push_image(repo, "dlist", kind="docker-list", created=NOW - timedelta(days=1))
    epoch = push_image(repo, "epoch", created="1970-01-01T00:00:00Z")
    missing = push_image(repo, "nodate", created=None)
    labelled = push_image(repo, "labelled", created=None, created_label=NOW - timedelta(days=2))
    sig = pusher.push_cosign_signature(repo, docker)

    inv = _walk(registry, repo_prefix)
    r = _repo(inv, repo)
    tags = {t.name: t.digest for t in r.tags}
    assert tags["a"] == tags["b"] == docker.digest
    assert set(tags) == {
        "a",
        "b",
        "oci",
        "multi",
        "dlist",
        "epoch",
        "nodate",
        "labelled",
        *sig.tags,
    }

    img = r.image(docker.digest)
    assert img is not None and img.kind is Kind.IMAGE
    assert img.created == NOW - timedelta(days=3)
    assert img.size == docker.size
    assert {b.digest for b in img.blobs} == {docker.config_digest, *docker.layer_digests}

    assert r.image(oci.digest) is not None
    idx = r.image(index.digest)
    assert idx is not None and idx.kind is Kind.INDEX
    assert idx.created == NOW  # the newest platform image
    assert set(idx.children) == {c.digest for c in index.children}
    assert idx.size == index.size
    for child in index.children:
        c = r.image(child.digest)
        assert c is not None and c.platform in ("linux/amd64", "linux/arm64")
    dl = r.image(dlist.digest)
    assert dl is not None and dl.kind is Kind.INDEX and len(dl.children) == 2

    e = r.image(epoch.digest)
    assert e is not None and e.created is None and e.created_raw == "1970-01-01T00:00:00Z"
    m = r.image(missing.digest)
    assert m is not None and m.created is None and m.created_raw is None
    lab = r.image(labelled.digest)
    assert lab is not None and lab.created == NOW - timedelta(days=2)

    s = r.image(sig.digest)
    assert s is not None and s.kind is Kind.ARTIFACT
    assert inv.complete is False and inv.registry == registry.url


def _requests_of(
    registry: RegistryProcess, mark: int, repo: str, expected: int
) -> list[AccessLogEntry]:
    """The access-log entries naming `repo` since `mark`, once `expected` are there (the log
    trails the client by a few milliseconds) or after 5 s."""
    deadline = time.monotonic() + 5.0
    while True:
        entries = [e for e in registry.access_log(mark) if repo in e.path]
        if len(entries) >= expected or time.monotonic() > deadline:
            return entries
        time.sleep(0.01)


def test_second_walk_takes_configs_and_children_from_the_cache(
    registry: RegistryProcess, push_image: Callable[..., Pushed], repo_prefix: str, tmp_path: Path
) -> None:
    repo = f"{repo_prefix}/cached"
    push_image(repo, "one")
    push_image(repo, "two", kind="oci-index")
    # two runs: the second reads the pack the first published when it closed the cache
    mark = registry.log_mark()
    with DigestCache(tmp_path / "cache") as cache:
        first = _walk(registry, repo_prefix, cache)
    cold = _requests_of(registry, mark, repo, 9)

    mark = registry.log_mark()
    with DigestCache(tmp_path / "cache") as cache:
        second = _walk(registry, repo_prefix, cache)
    warm = _requests_of(registry, mark, repo, 4)

    assert first.to_document()["repositories"] == second.to_document()["repositories"]
    # cold: tags/list + 2 tag GETs + 2 child GETs + 3 config GETs; warm: tags/list + 2 tag GETs
    # each walk also probes the referrers API once (404 on distribution)
    assert len(cold) == 9, [e.path for e in cold]
    assert len(warm) == 4, [e.path for e in warm]
    assert sum("/referrers/" in e.path for e in warm) == 1
    assert not any("/blobs/" in e.path for e in warm)
