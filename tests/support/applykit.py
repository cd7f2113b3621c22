"""Helpers for apply/restore tests against the real registry: write a policy, make a real plan
(inventory + evaluate), apply it, and check what the registry holds afterwards."""

from __future__ import annotations

import json
from collections.abc import Callable, Iterable, Mapping
from dataclasses import replace
from datetime import UTC, datetime
from pathlib import Path

import requests

from retention.apply import ApplyReport, OnOutcome, apply_plan, check_plan
from retention.evaluate import evaluate
from retention.inventory import take_inventory
from retention.journal import Journal
from retention.plan import Plan
from retention.policy.load import load_policy
from retention.policy.model import Policy
from retention.registry.client import RegistryClient, RetryPolicy
from tests.harness.seed import MANIFEST_ACCEPT, Pushed, pull_complete

# Small waits: a registry killed on purpose should fail requests fast, not after minutes.
FAST_RETRY = RetryPolicy(attempts=3, base=0.01, cap=0.05, budget=2.0)


def write_policy(
    path: Path,
    url: str,
    prefix: str,
    *,
    last: int = 1,
    max_deletions: int | str = 500,
    protect: Iterable[str] = ("latest",),
    auth: bool = False,
    concurrency: int = 4,
) -> Path:
    """A policy that keeps the `last` most recent images of every repository under `prefix`."""
    auth_text = (
        "  auth:\n    username: ${REGISTRY_USER}\n    password: ${REGISTRY_PASSWORD}\n"
        if auth
        else ""
    )
    protect_list = ", ".join(f"'{p}'" for p in protect)
    limit = f"'{max_deletions}'" if isinstance(max_deletions, str) else str(max_deletions)
    path.write_text(
        f"version: 1\n"
        f"registry:\n  url: {url}\n{auth_text}"
        f"settings:\n  concurrency: {concurrency}\n  max_deletions: {limit}\n"
        f"protect:\n  tags: [{protect_list}]\n"
        f"rules:\n"
        f"  - name: keep-recent\n"
        f"    match:\n      repositories: ['{prefix}/.*']\n"
        f"    keep:\n      last: {last}\n"
    )
    return path


def load(path: Path, env: Mapping[str, str] | None = None) -> Policy:
    policy, _ = load_policy(str(path), env=env or {}, require_env=True)
    return policy


def client_for(
    policy: Policy, env: Mapping[str, str] | None = None, url: str | None = None
) -> RegistryClient:
    config = policy.registry if url is None else replace(policy.registry, url=url)
    return RegistryClient(config, env=env or {}, retry=FAST_RETRY, concurrency=4)


def make_plan(
    policy: Policy,
    prefix: str,
    *,
    now: datetime | None = None,
    env: Mapping[str, str] | None = None,
) -> Plan:
    when = now or datetime.now(UTC).replace(microsecond=0)
    with client_for(policy, env) as client:
        inventory = take_inventory(
            client,
            now=when,
            select=lambda name: name.startswith(prefix + "/"),
            complete=False,
            concurrency=4,
        )
    return evaluate(policy, inventory, when)


def run_apply(
    policy: Policy,
    plan: Plan,
    journal: Path,
    *,
    progress: OnOutcome | None = None,
    env: Mapping[str, str] | None = None,
    url: str | None = None,
    concurrency: int = 4,
) -> ApplyReport:
    check_plan(plan, registry_url=policy.registry.url, now=datetime.now(UTC), policy=policy)
    with (
        client_for(policy, env, url) as client,
        Journal(journal, registry=policy.registry.url).open(
            plan_sha256="test", policy_path=policy.path
        ) as j,
    ):
        return apply_plan(plan, client, j, concurrency=concurrency, progress=progress)


def manifest_exists(url: str, repo: str, digest: str, auth: tuple[str, str] | None = None) -> bool:
    resp = requests.head(
        f"{url}/v2/{repo}/manifests/{digest}",
        headers={"Accept": MANIFEST_ACCEPT},
        auth=auth,
        timeout=10,
    )
    if resp.status_code not in (200, 404):
        raise AssertionError(f"HEAD {repo}@{digest} answered {resp.status_code}")
    return resp.status_code == 200


def tags_of(url: str, repo: str, auth: tuple[str, str] | None = None) -> dict[str, str | None]:
    """Every listed tag and what it resolves to (None: a dangling tag)."""
    resp = requests.get(f"{url}/v2/{repo}/tags/list", auth=auth, timeout=10)
    if resp.status_code == 404:
        return {}
    resp.raise_for_status()
    out: dict[str, str | None] = {}
    for tag in json.loads(resp.content)["tags"] or []:
        head = requests.head(
            f"{url}/v2/{repo}/manifests/{tag}",
            headers={"Accept": MANIFEST_ACCEPT},
            auth=auth,
            timeout=10,
        )
        out[tag] = head.headers.get("Docker-Content-Digest") if head.status_code == 200 else None
    return out


def assert_plan_applied_exactly(url: str, plan: Plan, report: ApplyReport | None = None) -> None:
    """Invariant 1 and 2: every planned deletion is gone; every kept manifest is there, its tags
    point at it, and every kept tagged image pulls completely (configs, layers, children)."""
    for e in plan.deletions:
        assert not manifest_exists(url, e.repository, e.digest), f"{e.repository}@{e.digest}"
    _assert_kept(url, plan.kept)
    if report is not None:
        assert report.complete, [(o.kind, o.reason) for o in report.outcomes if o.kind != "deleted"]


def _assert_kept(url: str, kept: Iterable[object]) -> None:
    by_repo: dict[str, dict[str, str | None]] = {}
    for e in kept:
        repo, digest, tags = e.repository, e.digest, e.tags  # type: ignore[attr-defined]
        assert manifest_exists(url, repo, digest), f"kept {repo}@{digest} was deleted"
        listed = by_repo.setdefault(repo, tags_of(url, repo))
        for tag in tags:
            assert listed.get(tag) == digest, f"kept tag {repo}:{tag} -> {listed.get(tag)}"
            assert pull_complete(url, repo, tag), f"kept {repo}:{tag} does not pull completely"


def assert_untouched(url: str, images: Iterable[Pushed]) -> None:
    for image in images:
        for tag in image.tags:
            assert pull_complete(url, image.repo, tag), f"{image.repo}:{tag} was damaged"


def count_requests(entries: Iterable[object], predicate: Callable[[str, str], bool]) -> int:
    return sum(1 for e in entries if predicate(e.method, e.path))  # type: ignore[attr-defined]
