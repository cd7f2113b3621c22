"""A manifest graph built to exhaust the walk, pushed to the real registry: indexes nested deep,
each listing the next many times. The walk must visit each digest once, fetch each once, finish
in bounded time and memory, and refuse a repository past the caps with a clear error (DESIGN §6
invariant 7; docs/decisions.md, "Bounded manifest graphs")."""

from __future__ import annotations

import json
import threading
from datetime import UTC, datetime
from pathlib import Path

import pytest

from retention import cli, inventory
from retention.inventory import take_inventory
from retention.model import Inventory
from retention.oci import OCI_INDEX
from tests.harness.faultproxy import FaultProxy
from tests.harness.registry import RegistryProcess
from tests.harness.seed import Pusher, sha256_digest
from tests.support.applykit import client_for, load, write_policy


def _index(pusher: Pusher, repo: str, tag: str | None, child: tuple[str, str, int], n: int) -> str:
    """An OCI index listing `child` (media type, digest, size) `n` times."""
    media_type, digest, size = child
    entry = {"mediaType": media_type, "digest": digest, "size": size}
    body = json.dumps({"schemaVersion": 2, "mediaType": OCI_INDEX, "manifests": [entry] * n})
    raw = body.encode()
    pusher.push_manifest(repo, tag or sha256_digest(raw), raw, OCI_INDEX)
    return sha256_digest(raw)


def _tower(pusher: Pusher, repo: str, *, levels: int, fanout: int) -> list[str]:
    """`levels` distinct indexes, each listing the next `fanout` times, the last one listing an
    image `fanout` times; the top one tagged `top`. Returns the digests, image first."""
    image = pusher.push_image(repo, None, kind="oci")
    digests = [image.digest]
    child = (image.media_type, image.digest, len(image.manifest))
    for level in range(levels):
        tag = "top" if level == levels - 1 else None
        digest = _index(pusher, repo, tag, child, fanout)
        size = len(pusher.get_manifest(repo, digest)[0])
        child = (OCI_INDEX, digest, size)
        digests.append(digest)
    return digests


def _walk_within(seconds: float, walk: object) -> Inventory:
    """Run the walk on a thread and fail (rather than hang the suite) if it does not finish."""
    result: list[Inventory | BaseException] = []

    def run() -> None:
        try:
            result.append(walk())  # type: ignore[operator]
        except BaseException as exc:  # handed to the test thread
            result.append(exc)

    thread = threading.Thread(target=run, daemon=True)
    thread.start()
    thread.join(seconds)
    assert result, f"the walk did not finish within {seconds}s"
    if isinstance(result[0], BaseException):
        raise result[0]
    return result[0]


def test_indexes_nested_six_deep_listing_the_next_thirty_times_are_walked_once(
    registry: RegistryProcess, pusher: Pusher, repo_prefix: str, tmp_path: Path
) -> None:
    """Seven distinct indexes, each listing the next 30 times: 30^6 paths to the image. Before
    the fix the walk recursed once per path (2.8 GB RSS and still running after 90 s)."""
    repo = f"{repo_prefix}/tower"
    digests = _tower(pusher, repo, levels=7, fanout=30)
    try:
        with FaultProxy(registry.url) as proxy:
            policy = load(write_policy(tmp_path / "p.yaml", proxy.url, repo_prefix))
            with client_for(policy) as client:
                found = _walk_within(
                    60,
                    lambda: take_inventory(
                        client, now=datetime.now(UTC), select=lambda name: name == repo, cache=None
                    ),
                )
            manifest_gets = [
                r.path for r in proxy.requests if r.method == "GET" and "/manifests/" in r.path
            ]
    finally:
        # the registry is shared by the session: a tagged tower would make every later check
        # that pulls every kept image walk 30^6 paths
        pusher.delete_manifest(repo, digests[-1])
    (walked,) = found.repositories
    assert sorted(i.digest for i in walked.images) == sorted(digests)
    # one GET by tag for `top`, then one by digest for every other manifest: none twice
    by_digest = sorted(p.rsplit("/", 1)[1] for p in manifest_gets if "sha256:" in p)
    assert by_digest == sorted(digests[:-1])
    assert len(manifest_gets) == len(digests)
    # an index listing one child 30 times holds it once: its size counts it once
    images = {i.digest: i for i in walked.images}
    indexes = sum(images[d].manifest_size for d in digests[1:])
    assert images[digests[-1]].size == indexes + images[digests[0]].size


def test_indexes_nested_deeper_than_the_cap_are_refused_clearly(
    registry: RegistryProcess,
    pusher: Pusher,
    repo_prefix: str,
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
) -> None:
    repo = f"{repo_prefix}/deep"
    digests = _tower(pusher, repo, levels=inventory._MAX_INDEX_DEPTH + 1, fanout=1)
    policy = write_policy(tmp_path / "p.yaml", registry.url, repo_prefix)

    try:
        code = cli.main(["plan", "-p", str(policy), "-o", str(tmp_path / "plan.json")])
    finally:
        # the registry is shared by the session: a tower left tagged would stop every later plan
        pusher.delete_manifest(repo, digests[-1])

    err = capsys.readouterr().err
    assert code == 1
    assert f"nests indexes more than {inventory._MAX_INDEX_DEPTH} levels deep" in err
    assert "Traceback" not in err
    assert not (tmp_path / "plan.json").exists()


def test_a_repository_past_the_manifest_cap_is_refused_clearly(
    registry: RegistryProcess,
    pusher: Pusher,
    repo_prefix: str,
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """The cap counts distinct manifests, tagged and untagged: 4 under the cap plan, 6 do not."""
    monkeypatch.setattr(inventory, "MAX_MANIFESTS_PER_REPOSITORY", 5)
    small, big = f"{repo_prefix}/small", f"{repo_prefix}/big"
    _tower(pusher, small, levels=3, fanout=2)  # 4 manifests
    _tower(pusher, big, levels=3, fanout=2)
    pusher.push_image(big, "a", kind="oci")
    pusher.push_image(big, "b", kind="oci")  # 6 manifests
    policy = write_policy(tmp_path / "p.yaml", registry.url, repo_prefix)

    assert cli.main(["plan", "-p", str(policy), "--repository", small, "-q"]) == 0
    capsys.readouterr()
    code = cli.main(["plan", "-p", str(policy), "--repository", big])

    err = capsys.readouterr().err
    assert code == 1
    assert f"{big}: the registry lists more than 5 distinct manifests" in err
    assert "Traceback" not in err
