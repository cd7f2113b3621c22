"""`--shard K/N`: the partition of repositories between N workers (docs/sharding.md)."""

from __future__ import annotations

import hashlib

import pytest
from hypothesis import given
from hypothesis import strategies as st

from retention.errors import InventoryError
from retention.inventory import Shard, in_shard

# repository names as the registry allows them, plus arbitrary text: the partition must hold
# for any string
_NAMES = st.one_of(
    st.from_regex(r"[a-z0-9]+([._-][a-z0-9]+)*(/[a-z0-9]+([._-][a-z0-9]+)*){0,3}", fullmatch=True),
    st.text(max_size=60),
)


@given(names=st.lists(_NAMES, max_size=50, unique=True), count=st.integers(1, 16))
def test_every_repository_is_in_exactly_one_shard(names: list[str], count: int) -> None:
    shards = [[n for n in names if in_shard(n, k, count)] for k in range(count)]
    for name in names:
        assert sum(name in shard for shard in shards) == 1, name
    assert sorted(n for shard in shards for n in shard) == sorted(names)


@given(name=_NAMES, count=st.integers(1, 16))
def test_the_shard_is_the_sha256_of_the_name_modulo_n(name: str, count: int) -> None:
    expected = int(hashlib.sha256(name.encode()).hexdigest(), 16) % count
    assert [k for k in range(count) if name in Shard(k, count)] == [expected]


@pytest.mark.parametrize(
    ("name", "count", "index"),
    [
        # pinned: changing the function would move repositories between running workers
        pytest.param("apps/web", 4, 0, id="apps/web-of-4"),
        pytest.param("team-00/svc-00", 16, 13, id="team-00/svc-00-of-16"),
        pytest.param("library/alpine", 7, 1, id="library/alpine-of-7"),
        pytest.param("a", 4, 3, id="a-of-4"),
    ],
)
def test_shards_are_stable(name: str, count: int, index: int) -> None:
    assert in_shard(name, index, count)


def test_one_shard_is_everything() -> None:
    assert all(name in Shard(0, 1) for name in ("a", "apps/web", ""))


@pytest.mark.parametrize(
    ("index", "count"),
    [
        pytest.param(0, 0, id="zero-workers"),
        pytest.param(4, 4, id="index-equals-count"),
        pytest.param(-1, 4, id="negative-index"),
    ],
)
def test_a_shard_that_does_not_exist_is_an_error(index: int, count: int) -> None:
    with pytest.raises(InventoryError, match=f"shard {index}/{count} does not exist"):
        Shard(index, count)


def test_shard_reads_as_k_of_n() -> None:
    assert str(Shard(2, 8)) == "2/8"
