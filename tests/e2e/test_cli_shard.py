"""`--shard K/N` on `inventory`, `plan` and `apply -p` (docs/sharding.md): N workers see
disjoint shares of the repositories that together are all of them; K can come from
$JOB_COMPLETION_INDEX (a Kubernetes Indexed Job); a sharded apply deletes in its shard only."""

from __future__ import annotations

import json
import os
from datetime import UTC, datetime, timedelta
from operator import itemgetter
from pathlib import Path
from typing import Any

import pytest

from retention.cli import main
from retention.inventory import in_shard
from retention.schedule import acquire_lock, lock_path_for
from tests.harness.registry import RegistryProcess
from tests.harness.seed import Pusher

POLICY = """\
version: 1
registry:
  url: {url}
settings:
  concurrency: 4
rules:
  - name: pull-requests
    match: {{repositories: ['{prefix}/.*'], tags: ['pr-.*']}}
    keep: {{last: 0}}
"""


def _names(prefix: str) -> list[str]:
    """Repositories `prefix/rN`, enough that every shard of 2 and of 3 holds two of them."""
    names: list[str] = []
    for i in range(1000):
        name = f"{prefix}/r{i}"
        full = [
            sum(in_shard(n, k, count) for n in names) >= 2 for count in (2, 3) for k in range(count)
        ]
        if all(full):
            break
        names.append(name)
    return names


@pytest.fixture
def scene(
    registry: RegistryProcess, pusher: Pusher, repo_prefix: str, tmp_path: Path
) -> tuple[Path, list[str]]:
    names = _names(repo_prefix)
    old = datetime.now(UTC) - timedelta(days=3)
    for name in names:
        pusher.push_image(name, "pr-1", created=old)
        pusher.push_image(name, "stable", created=old)
    policy = tmp_path / "policy.yaml"
    policy.write_text(POLICY.format(url=registry.url, prefix=repo_prefix))
    return policy, names


def _inventory(
    policy: Path, prefix: str, shard: str, capsys: pytest.CaptureFixture[str]
) -> dict[str, Any]:
    argv = ["inventory", "-p", str(policy), "--format", "json", "--repository", f"{prefix}/.*"]
    assert main([*argv, "--shard", shard]) == 0
    doc: dict[str, Any] = json.loads(capsys.readouterr().out)
    return doc


@pytest.mark.parametrize("count", [1, 2, 3])
def test_shards_partition_the_repositories(
    scene: tuple[Path, list[str]],
    repo_prefix: str,
    count: int,
    capsys: pytest.CaptureFixture[str],
) -> None:
    policy, names = scene
    seen: list[str] = []
    for k in range(count):
        doc = _inventory(policy, repo_prefix, f"{k}/{count}", capsys)
        repos = [r["name"] for r in doc["repositories"]]
        assert repos, f"shard {k}/{count} is empty"
        assert all(in_shard(name, k, count) for name in repos)
        assert doc["complete"] is False  # --repository narrows the walk whatever the shard
        seen.extend(repos)
    assert sorted(seen) == sorted(names)


def test_the_index_can_come_from_the_indexed_job(
    scene: tuple[Path, list[str]],
    repo_prefix: str,
    capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    policy, _ = scene
    explicit = _inventory(policy, repo_prefix, "1/3", capsys)["repositories"]
    monkeypatch.setenv("JOB_COMPLETION_INDEX", "1")
    assert _inventory(policy, repo_prefix, "3", capsys)["repositories"] == explicit
    assert _inventory(policy, repo_prefix, "auto/3", capsys)["repositories"] == explicit


@pytest.mark.parametrize(
    ("shard", "env", "message"),
    [
        pytest.param("auto/3", None, "$JOB_COMPLETION_INDEX is not set", id="auto-without-env"),
        pytest.param("3", None, "$JOB_COMPLETION_INDEX is not set", id="n-without-env"),
        pytest.param("3", "3", "shard 3/3 does not exist", id="env-index-too-big"),
        pytest.param("3/3", None, "shard 3/3 does not exist", id="index-too-big"),
        pytest.param("0/0", None, "shard 0/0 does not exist", id="no-workers"),
        pytest.param("a/b", None, "not K/N, N or auto/N", id="not-numbers"),
        pytest.param("-1/3", None, "not K/N, N or auto/N", id="negative"),
    ],
)
def test_a_bad_shard_is_one_clear_error_before_any_request(
    registry: RegistryProcess,
    tmp_path: Path,
    shard: str,
    env: str | None,
    message: str,
    capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.delenv("JOB_COMPLETION_INDEX", raising=False)
    if env is not None:
        monkeypatch.setenv("JOB_COMPLETION_INDEX", env)
    policy = tmp_path / "policy.yaml"
    policy.write_text(POLICY.format(url=registry.url, prefix="nothing"))
    mark = registry.log_mark()
    for command in (["plan"], ["inventory"], ["apply", "--yes"]):
        assert main([*command, "-p", str(policy), f"--shard={shard}"]) == 1
        err = capsys.readouterr().err
        assert message in err and "Traceback" not in err, err
    assert registry.access_log(mark) == []


def test_the_shards_plans_together_are_the_whole_plan(
    scene: tuple[Path, list[str]],
    repo_prefix: str,
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
) -> None:
    policy, names = scene
    saved = tmp_path / "inventory.json"
    argv = ["inventory", "-p", str(policy), "--format", "json", "-o", str(saved)]
    assert main([*argv, "--repository", f"{repo_prefix}/.*"]) == 0
    plan = ["plan", "-p", str(policy), "--format", "json", "--from-inventory", str(saved)]
    assert main(plan) == 0
    whole = json.loads(capsys.readouterr().out)["deletions"]
    assert {e["repository"] for e in whole} == set(names)
    parts: list[dict[str, Any]] = []
    for k in range(3):
        assert main([*plan, "--shard", f"{k}/3"]) == 0
        doc = json.loads(capsys.readouterr().out)
        assert {e["repository"] for e in doc["deletions"]} == {
            n for n in names if in_shard(n, k, 3)
        }
        assert doc["summary"]["complete"] is False
        parts.extend(doc["deletions"])
    # a repository is decided on its own: splitting the registry changes no decision
    by_key = itemgetter("repository", "digest")
    assert sorted(parts, key=by_key) == sorted(whole, key=by_key)


def test_apply_in_one_step_deletes_in_its_shard_only(
    scene: tuple[Path, list[str]],
    pusher: Pusher,
    capsys: pytest.CaptureFixture[str],
) -> None:
    policy, names = scene
    assert main(["apply", "-p", str(policy), "--yes", "--shard", "0/2"]) == 0
    capsys.readouterr()
    for name in names:
        expected = ["stable"] if in_shard(name, 0, 2) else ["pr-1", "stable"]
        assert sorted(pusher.list_tags(name)) == expected, name


def test_a_saved_plan_is_not_sharded_again(
    scene: tuple[Path, list[str]], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    plan = tmp_path / "plan.json"
    plan.write_text("{}")
    assert main(["apply", str(plan), "--yes", "--shard", "0/2"]) == 1
    assert "--shard applies to planning" in capsys.readouterr().err


def test_each_shard_has_its_own_apply_lock(
    scene: tuple[Path, list[str]],
    pusher: Pusher,
    capsys: pytest.CaptureFixture[str],
) -> None:
    policy, names = scene
    base = lock_path_for(str(policy), os.environ)
    shard0 = base.with_name(f"{base.stem}-shard-0-of-2.lock")
    with acquire_lock(shard0, purpose="shard 0 elsewhere"):
        # the same shard twice never runs at once ...
        assert main(["apply", "-p", str(policy), "--yes", "--shard", "0/2"]) == 1
        assert "shard 0 elsewhere" in capsys.readouterr().err
        # ... while another shard of the same policy goes ahead (disjoint repositories)
        assert main(["apply", "-p", str(policy), "--yes", "--shard", "1/2"]) == 0
    capsys.readouterr()
    for name in names:
        expected = ["pr-1", "stable"] if in_shard(name, 0, 2) else ["stable"]
        assert sorted(pusher.list_tags(name)) == expected, name


def test_the_indexed_job_manifest_runs_one_shard_per_pod(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    import yaml

    from retention.cli.options import shard_of as _shard
    from retention.cli.parser import make_parser as _parser

    manifest = Path(__file__).resolve().parents[2] / "deploy" / "k8s-indexed-job.yaml"
    (cron,) = [d for d in yaml.safe_load_all(manifest.read_text()) if d and d["kind"] == "CronJob"]
    job = cron["spec"]["jobTemplate"]["spec"]
    assert job["completionMode"] == "Indexed"
    args = _parser().parse_args(job["template"]["spec"]["containers"][0]["args"])
    assert args.command == "apply" and args.yes and args.plan is None and args.policy
    workers = job["completions"]
    assert job["parallelism"] == workers
    for index in range(workers):
        monkeypatch.setenv("JOB_COMPLETION_INDEX", str(index))
        shard = _shard(args)
        assert shard is not None and (shard.index, shard.count) == (index, workers)
