"""The benchmark's own machinery (benchmarks/), checked on a small scenario: storage written
straight to disk is served by the real registry, the minimal client makes exactly the minimum
requests and sees every tag, and the access-log counting classifies them; the peer
(registry-cli) gets a dry-run command line, and a peer run that writes to the registry or does
not walk it fails the benchmark (checked with stand-in scripts: registry-cli's own code is not
part of this repository). No timing here."""

from __future__ import annotations

import argparse
import re
import sys
from collections import Counter
from collections.abc import Iterator
from pathlib import Path

import pytest

from benchmarks import scenario
from benchmarks.bench_plan import (
    PEER_KEEP_LAST,
    PEER_KEEP_TAGS_LIKE,
    PLAN_RULES,
    PeerWroteError,
    apply_expectation,
    classify,
    peer_command,
    peer_ratios,
    run_peer,
    write_policy,
)
from benchmarks.minimal_client import Walk
from retention.policy.load import load_policy
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


# -- the peer (registry-cli's registry.py) -----------------------------------------------------


def peer_args(peer: Path, python: str = "/opt/peer-venv/bin/python") -> argparse.Namespace:
    return argparse.Namespace(peer=peer, peer_python=Path(python), peer_repeat=1)


def option_values(command: list[str], option: str) -> list[str]:
    """The values after `option` up to the next option (the peer's options take nargs='+')."""
    start = command.index(option) + 1
    end = next((i for i in range(start, len(command)) if command[i].startswith("-")), None)
    return command[start:end]


def test_the_peer_command_is_a_dry_run_of_keep_the_newest_by_date() -> None:
    repos = ["team-00/svc-00", "team-00/svc-01", "team-01/svc-00"]
    command = peer_command(peer_args(Path("/x/registry.py")), "http://127.0.0.1:5000", repos)
    assert command[:2] == ["/opt/peer-venv/bin/python", "/x/registry.py"]
    assert option_values(command, "-r") == ["http://127.0.0.1:5000"]
    # every repository named: its own catalog request (n=10000) is refused by 2.8
    assert option_values(command, "-i") == repos
    # decides what to delete, deletes nothing
    assert "--delete" in command
    assert "--dry-run" in command
    assert "--delete-all" not in command
    assert "--delete-by-hours" not in command
    # newest by image creation date, as many as the policy's largest keep-last
    assert "--order-by-date" in command
    assert option_values(command, "--num") == [str(PEER_KEEP_LAST)] == ["10"]
    assert option_values(command, "--digest-method") == ["HEAD"]
    assert option_values(command, "--keep-tags-like") == list(PEER_KEEP_TAGS_LIKE)
    assert command[-len(PEER_KEEP_TAGS_LIKE) :] == list(PEER_KEEP_TAGS_LIKE)


@pytest.mark.parametrize(
    "tag",
    [
        "latest",
        "pr-latest",
        "latest-1",
        "v1.2.0",
        "v10.20.300",
        "v1.2.0-rc1",
        "xv1.2.0",
        "v1.2",
        "main-0a1b2c3",
        "sha256-abc.sig",
    ],
)
def test_the_peer_protects_exactly_what_the_benchmark_policy_protects(
    tag: str, tmp_path: Path
) -> None:
    policy_file = tmp_path / "policy.yaml"
    write_policy(policy_file, "http://127.0.0.1:5000", PLAN_RULES)
    policy, _ = load_policy(str(policy_file), env={}, require_env=True)
    # registry-cli applies --keep-tags-like with re.search
    peer_keeps = any(re.search(pattern, tag) for pattern in PEER_KEEP_TAGS_LIKE)
    assert peer_keeps == policy.is_protected(tag)


STAND_IN = """
import json, sys, urllib.error, urllib.request
MODE = {mode!r}
DIGEST = {digest!r}
argv = sys.argv[1:]
url = argv[argv.index("-r") + 1]
repos = []
for arg in argv[argv.index("-i") + 1 :]:
    if arg.startswith("-"):
        break
    repos.append(arg)
if MODE == "catalog-refused":
    # what registry-cli does without -i: n=10000 is refused (400) and it walks nothing
    try:
        urllib.request.urlopen(url + "/v2/_catalog?n=10000")
    except urllib.error.HTTPError as exc:
        print("catalog answered", exc.code)
    sys.exit(0)
for repo in repos:
    with urllib.request.urlopen(url + "/v2/" + repo + "/tags/list") as resp:
        print(repo, json.load(resp)["tags"])
if MODE == "deletes":
    request = urllib.request.Request(
        url + "/v2/" + repos[0] + "/manifests/" + DIGEST, method="DELETE"
    )
    with urllib.request.urlopen(request) as resp:
        print("deleted", resp.status)
"""


def stand_in(tmp_path: Path, mode: str, digest: str = "") -> Path:
    script = tmp_path / f"stand-in-{mode}.py"
    script.write_text(STAND_IN.format(mode=mode, digest=digest))
    return script


def test_a_peer_that_only_reads_every_repository_passes_and_is_counted(
    seeded: tuple[RegistryProcess, scenario.Scenario], tmp_path: Path
) -> None:
    registry, sc = seeded
    repos = [r.name for r in sc.repos]
    run = run_peer(peer_args(stand_in(tmp_path, "reads"), sys.executable), registry, repos)
    assert run.requests == {"GET tags_list": 12}
    assert run.statuses == {"200": 12}
    assert "team-00/svc-00 [" in run.stdout


def test_a_peer_that_deletes_fails_the_benchmark(
    seeded: tuple[RegistryProcess, scenario.Scenario], tmp_path: Path
) -> None:
    registry, sc = seeded
    repo = sc.repos[0]
    digest = repo.tags["pr-latest"]
    repos = [r.name for r in sc.repos]
    script = stand_in(tmp_path, "deletes", digest)
    with pytest.raises(PeerWroteError, match=r"DELETE manifest_by_digest': 1"):
        run_peer(peer_args(script, sys.executable), registry, repos)
    # the DELETE really happened (delete is enabled, as for every run): the check saw a real one
    deleted = [e for e in registry.access_log() if e.method == "DELETE"]
    assert [(e.path, e.status) for e in deleted] == [(f"/v2/{repo.name}/manifests/{digest}", 202)]


def test_a_peer_that_walks_nothing_fails_the_benchmark(
    seeded: tuple[RegistryProcess, scenario.Scenario], tmp_path: Path
) -> None:
    registry, sc = seeded
    repos = [r.name for r in sc.repos]
    script = stand_in(tmp_path, "catalog-refused")
    with pytest.raises(PeerWroteError, match="listed the tags of 0 of 12 repositories"):
        run_peer(peer_args(script, sys.executable), registry, repos)


def test_the_peer_is_compared_with_the_runs_of_its_own_rounds() -> None:
    def run(round_: int, seconds: float, total: int) -> dict[str, object]:
        return {
            "round": round_,
            "seconds": seconds,
            "cpu_seconds": seconds / 2,
            "max_rss_mb": 50.0,
            "requests": {"GET manifest_by_tag": total},
            "total": total,
            "statuses": {"200": total},
        }

    report = {
        "scenario": {"tags": 100},
        "minimum": {"total": 200},
        "runs": {
            "minimal": [run(1, 1.0, 200), run(2, 9.0, 200), run(3, 2.0, 200)],
            "cold": [run(1, 2.0, 200), run(2, 90.0, 200), run(3, 4.0, 200)],
            # --peer-repeat 2 with 3 rounds: rounds 1 and 3 only
            "peer": [run(1, 6.0, 500), run(3, 8.0, 500)],
        },
    }
    ratios = peer_ratios(report)
    assert ratios["rounds"] == [1, 3]
    # round 2 (cold 90 s) is not a round the peer ran in: it is left out
    assert ratios["time_over_cold"] == round(7.0 / 3.0, 3)
    assert ratios["time_over_cold_by_round"] == [3.0, 2.0]
    assert ratios["time_over_minimal"] == round(7.0 / 1.5, 3)
    assert ratios["requests_over_minimum"] == 2.5
    assert ratios["requests_per_tag"] == 5.0
    assert ratios["writes"] == 0
