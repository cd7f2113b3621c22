"""Plan time: the untag method is probed once per repository with untags and recorded in the
plan (docs/decisions.md, "Untag: registry side"); the probe never removes a real tag."""

from __future__ import annotations

import dataclasses
from pathlib import Path

from retention.plan import Untag
from retention.workflow import with_untag_methods
from tests.harness.probes import Capabilities
from tests.harness.registry import CraneRegistry, RegistryProcess
from tests.harness.seed import Pusher, list_tags
from tests.support.applykit import load, make_plan, write_policy


def _untags(repo_prefix: str, pusher: Pusher) -> tuple[Untag, ...]:
    untags = []
    for name in ("one", "two"):
        image = pusher.push_image(f"{repo_prefix}/{name}", ["doomed", "kept"])
        untags.append(Untag(f"{repo_prefix}/{name}", "doomed", image.digest, "keep-recent", "test"))
    return tuple(untags)


def test_each_repository_with_untags_is_probed_once(
    tmp_path: Path,
    registry: RegistryProcess,
    tag_registry: CraneRegistry,
    capabilities: Capabilities,
    repo_prefix: str,
) -> None:
    matrix = "delete-tag" if capabilities.tag_delete else "throw-away"
    for url, method in ((registry.url, matrix), (tag_registry.url, "delete-tag")):
        with Pusher(url) as pusher:
            untags = _untags(repo_prefix, pusher)
        policy = load(write_policy(tmp_path / "policy.yaml", url, repo_prefix))
        plan = dataclasses.replace(make_plan(policy, repo_prefix), untags=untags)
        planned = with_untag_methods(policy, plan)
        assert planned.untag_methods == (
            (f"{repo_prefix}/one", method),
            (f"{repo_prefix}/two", method),
        )
        assert planned.warnings == plan.warnings
        for name in ("one", "two"):
            assert list_tags(url, f"{repo_prefix}/{name}") == ["doomed", "kept"]


def test_a_plan_without_untags_probes_nothing(
    tmp_path: Path, registry: RegistryProcess, pusher: Pusher, repo_prefix: str
) -> None:
    pusher.push_image(f"{repo_prefix}/app", ["v1"])
    policy = load(write_policy(tmp_path / "policy.yaml", registry.url, repo_prefix))
    plan = make_plan(policy, repo_prefix)
    mark = registry.log_mark()
    assert with_untag_methods(policy, plan) is plan
    assert registry.access_log(mark) == []


def test_a_refused_probe_plans_the_throw_away_method_and_says_why(
    tmp_path: Path, fresh_registry: RegistryProcess, fresh_pusher: Pusher, repo_prefix: str
) -> None:
    untags = _untags(repo_prefix, fresh_pusher)
    fresh_registry.restart(delete_enabled=False)
    policy = load(write_policy(tmp_path / "policy.yaml", fresh_registry.url, repo_prefix))
    plan = dataclasses.replace(make_plan(policy, repo_prefix), untags=untags[:1])
    planned = with_untag_methods(policy, plan)
    assert planned.untag_methods == ((f"{repo_prefix}/one", "throw-away"),)
    assert len(planned.warnings) == len(plan.warnings) + 1
    assert "could not be probed" in planned.warnings[-1]
    assert "deletion is disabled" in planned.warnings[-1]
