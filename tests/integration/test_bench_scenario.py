"""The benchmark's own machinery (benchmarks/), checked on a small scenario: storage written
straight to disk is served by the real registry, the minimal client makes exactly the minimum
requests and sees every tag, and the access-log counting classifies them. No timing here."""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterator
from pathlib import Path

import pytest

from benchmarks import scenario
from benchmarks.bench_plan import apply_expectation, classify
from benchmarks.minimal_client import Walk
from tests.harness.registry import AccessLogEntry, RegistryProcess

MIX = scenario.Mix(main=6, pr=3, pr_index=1, release=1, release_index=1)


@pytest.fixture
def seeded(
    registry_binary: str, tmp_path: Path
) -> Iterator[tuple[RegistryProcess, scenario.Scenario]]:
    registry = RegistryProcess(registry_binary, root=tmp_path / "registry")
    try:
        seeded = scenario.seed(registry.storage_dir, repositories=12, mix=MIX)
        registry.start()
        yield registry, seeded
    finally:
        registry.close()


def test_the_scenario_has_the_mix_it_promises(
    seeded: tuple[RegistryProcess, scenario.Scenario],
) -> None:
    _, sc = seeded
    per_repo = MIX.tags
    assert per_repo == 6 + 3 + 1 + 1 + 1 + 5 + 2
    assert sc.tags == 12 * per_repo
    kinds = Counter(r.kinds[d] for r in sc.repos for d in set(r.tags.values()))
    # tagged manifests: 6 main + 3 pr + 1 release images, 2 indexes, 2 signatures per repository
    assert kinds == {"image": 12 * 10, "index": 12 * 2, "sig": 12 * 2}
    assert sc.index_children == 12 * 2 * 2
    # one config per single-platform image, platform manifest and signature: none shared
    assert sc.configs == 12 * (10 + 4 + 2)
    shared = [t for r in sc.repos for t, d in r.tags.items() if list(r.tags.values()).count(d) > 1]
    assert len(shared) == 12 * 10  # 5 aliases, each sharing with one other tag


def test_the_registry_serves_what_was_written(
    seeded: tuple[RegistryProcess, scenario.Scenario],
) -> None:
    registry, sc = seeded
    # every kind of manifest pulled completely, digests and sizes checked, in 12 repositories
    assert scenario.verify_sample(registry.url, sc, samples=12) > 12 * 3


def test_the_minimal_client_makes_exactly_the_minimum_and_sees_every_tag(
    seeded: tuple[RegistryProcess, scenario.Scenario],
) -> None:
    registry, sc = seeded
    mark = registry.log_mark()
    walk = Walk(registry.url, concurrency=4, catalog_page=5)  # 12 repositories: 3 pages
    try:
        summary = walk.run()
    finally:
        walk.close()
    minimum = sc.minimum(catalog_page=5)
    assert minimum["catalog"] == 3
    assert summary["requests"] == minimum
    logged = Counter(classify(e) for e in registry.wait_for_requests(mark, sum(minimum.values())))
    assert logged == {f"GET {kind}": n for kind, n in minimum.items()}
    assert walk.tags == {(r.name, t): d for r in sc.repos for t, d in r.tags.items()}


@pytest.mark.parametrize(
    ("method", "path", "kind"),
    [
        pytest.param("GET", "/v2/", "GET ping", id="ping"),
        pytest.param("GET", "/v2/_catalog?n=1000", "GET catalog", id="catalog"),
        pytest.param("GET", "/v2/a/b/tags/list?n=1000", "GET tags_list", id="tags"),
        pytest.param("HEAD", "/v2/a/manifests/v1.0", "HEAD manifest_by_tag", id="head-tag"),
        pytest.param(
            "DELETE", f"/v2/a/manifests/sha256:{'0' * 64}", "DELETE manifest_by_digest", id="del"
        ),
        pytest.param("GET", f"/v2/a/blobs/sha256:{'1' * 64}", "GET blob", id="blob"),
        pytest.param("GET", "/debug/vars", "GET other", id="other"),
    ],
)
def test_access_log_lines_are_classified(method: str, path: str, kind: str) -> None:
    entry = AccessLogEntry(method=method, path=path, status=200, size=0, user=None, user_agent="")
    assert classify(entry) == kind


def test_the_apply_expectation_follows_the_seed(
    seeded: tuple[RegistryProcess, scenario.Scenario],
) -> None:
    _, sc = seeded
    # team-00 is 10 of the 12 repositories; in each: 4 pr images (one an index with 2
    # children) + the signature of one of them; tags: 4 pr + pr-latest + 1 signature tag
    assert apply_expectation(sc, "team-00/.*") == {
        "manifests": 10 * (4 + 2 + 1),
        "tags": 10 * (4 + 1 + 1),
        "untagged": 10 * 2,
        "kept_tags_in_touched_repositories": 10 * (MIX.tags - 6),
    }
