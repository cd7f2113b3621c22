"""The walk makes the minimum of requests (issue 7): a config shared by many images is fetched
once even when they are walked concurrently, and a platform manifest that is also tagged is not
fetched a second time by digest. Counted from the real registry's access log."""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable
from datetime import UTC, datetime

from retention.inventory import take_inventory
from retention.policy.model import RegistryConfig
from retention.registry.client import RegistryClient
from tests.harness.registry import RegistryProcess
from tests.harness.seed import Pushed, Pusher, make_layer

NOW = datetime(2026, 11, 27, 12, 0, tzinfo=UTC)


def _kinds(registry: RegistryProcess, mark: int, repo: str, expected: int) -> Counter[str]:
    entries = [e for e in registry.wait_for_requests(mark, expected) if f"/{repo}/" in e.path]
    kinds: Counter[str] = Counter()
    for e in entries:
        if "/blobs/" in e.path:
            kinds[f"{e.method} blob"] += 1
        elif "/manifests/sha256:" in e.path:
            kinds[f"{e.method} manifest by digest"] += 1
        elif "/manifests/" in e.path:
            kinds[f"{e.method} manifest by tag"] += 1
        else:
            kinds[f"{e.method} {e.path.split('?')[0].rsplit('/', 2)[-2:]}"] += 1
    return kinds


def repo_digests(images: list[Pushed], index: Pushed) -> list[str]:
    """Every manifest digest the walk holds: the referrers probe asks for the smallest."""
    return [i.digest for i in images] + [index.digest, *(c.digest for c in index.children)]


def test_shared_config_and_tagged_child_cost_no_extra_request(
    registry: RegistryProcess, push_image: Callable[..., Pushed], pusher: Pusher, unique_repo: str
) -> None:
    layer = make_layer("same layer, same created: same config")
    # eight images (distinct manifests through their annotations) sharing one config blob
    images = [
        push_image(
            unique_repo,
            f"shared-{i}",
            kind="oci",
            created=NOW,
            layers=[layer],
            annotations={"n": str(i)},
        )
        for i in range(8)
    ]
    assert len({i.digest for i in images}) == 8
    assert len({i.config_digest for i in images}) == 1
    # an index whose amd64 platform manifest is also tagged on its own
    index = push_image(unique_repo, "multi", kind="oci-index")
    amd64 = index.child("linux/amd64")
    raw, media_type = pusher.get_manifest(unique_repo, amd64.digest)
    pusher.push_manifest(unique_repo, "multi-amd64", raw, media_type)

    mark = registry.log_mark()
    with RegistryClient(RegistryConfig(url=registry.url), concurrency=8, env={}) as client:
        inventory = take_inventory(
            client,
            now=NOW,
            select=lambda name: name == unique_repo,
            complete=False,
            concurrency=8,
            cache=None,
        )
    # tags/list, 10 tag GETs, 1 GET for the untagged arm64 child, 1 shared config, 2 platform
    # configs, 1 probe of the referrers API (404 on distribution): 16
    kinds = _kinds(registry, mark, unique_repo, 16)
    assert kinds == {
        "GET ['tags', 'list']": 1,
        "GET ['referrers', '" + min(repo_digests(images, index)) + "']": 1,
        "GET manifest by tag": 10,
        "GET manifest by digest": 1,
        "GET blob": 3,
    }, kinds
    (repo,) = inventory.repositories
    multi = repo.image(index.digest)
    assert multi is not None and amd64.digest in multi.children
    assert repo.image(amd64.digest) is not None
    assert {t.name for t in repo.tags if t.digest == amd64.digest} == {"multi-amd64"}
