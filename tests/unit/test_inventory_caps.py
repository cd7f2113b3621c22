"""The walk's cap on distinct manifests per repository (docs/decisions.md, "Bounded manifest
graphs"): counted per repository, each digest once, refused one past the cap."""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor
from typing import Any, cast

import pytest

from retention import inventory
from retention.errors import InventoryError
from retention.inventory import _no_progress, _Walker


def _walker(cap: int) -> _Walker:
    # `count` touches neither the client nor the pool
    with ThreadPoolExecutor(max_workers=1) as pool:
        walker = _Walker(cast(Any, None), None, pool, 1, _no_progress)
    walker.max_manifests = cap
    return walker


def _digests(n: int, seed: str = "a") -> list[str]:
    return [f"sha256:{seed}{i:063x}"[:71] for i in range(n)]


@pytest.mark.parametrize(
    ("counted", "refused"),
    [
        pytest.param([3], False, id="under-the-cap"),
        pytest.param([5], False, id="at-the-cap"),
        pytest.param([6], True, id="one-past-the-cap"),
        pytest.param([3, 3], True, id="past-the-cap-over-two-calls"),
    ],
)
def test_the_cap_counts_distinct_manifests(counted: list[int], refused: bool) -> None:
    walker = _walker(5)
    digests = _digests(sum(counted))

    def run() -> None:
        start = 0
        for n in counted:
            walker.count("apps/web", digests[start : start + n])
            start += n

    if refused:
        with pytest.raises(InventoryError) as caught:
            run()
        text = caught.value.diagnostics()
        assert text.startswith("apps/web: the registry lists more than 5 distinct manifests")
        assert "--repository REGEX" in text
    else:
        run()


def test_the_same_digest_counts_once_and_repositories_apart() -> None:
    walker = _walker(5)
    digests = _digests(5)
    for _ in range(10):
        walker.count("apps/web", digests)  # met again through another index: still 5
    walker.count("apps/api", _digests(5, "b"))  # another repository has a cap of its own
    assert {r: len(s) for r, s in walker.seen.items()} == {"apps/web": 5, "apps/api": 5}


def test_the_cap_is_generous() -> None:
    """Ten times the 10,000-tag benchmark registry, in a single repository."""
    assert inventory.MAX_MANIFESTS_PER_REPOSITORY == 100_000
    assert _Walker(cast(Any, None), None, cast(Any, None), 1, _no_progress).max_manifests == (
        100_000
    )
