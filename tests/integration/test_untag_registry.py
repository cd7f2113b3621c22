"""The untag phase of apply against real registries (retention/apply/untag.py): the throw-away
method on 2.8 and 3.x, the delete-tag method on 3.x and crane's registry; shared digests, a
dangling tag, a tag re-pushed since the plan, a crash mid-untag then a resume, concurrent runs,
the policy check.

Plans get their untags by hand here (tests/support/plans.py's way); the evaluation that plans
them is tested on its own."""

from __future__ import annotations

import dataclasses
import threading
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from retention import oci
from retention.apply import UntagOutcome, apply_plan
from retention.apply.untag import THROW_AWAY, throw_away_manifest
from retention.cli import main
from retention.errors import TransportError
from retention.journal import Journal, read_journal
from retention.plan import Plan, Untag
from retention.policy.model import Policy
from retention.registry.api import RegistryPort
from tests.harness.probes import Capabilities
from tests.harness.registry import CraneRegistry, RegistryProcess
from tests.harness.seed import Pushed, Pusher, list_tags, pull_complete, resolve
from tests.integration.test_apply_faults import _dangle
from tests.support.applykit import client_for, load, make_plan, manifest_exists, write_policy


def _plan(policy: Policy, prefix: str, untags: list[Untag], method: str) -> Plan:
    plan = make_plan(policy, prefix)
    repos = sorted({u.repository for u in untags})
    return dataclasses.replace(
        plan, untags=tuple(untags), untag_methods=tuple((r, method) for r in repos)
    )


def _run(
    policy: Policy,
    plan: Plan,
    journal: Path,
    *,
    nonce: str = "nonce-1",
    wrap: Callable[[RegistryPort], RegistryPort] | None = None,
    **kwargs: Any,
) -> tuple[tuple[UntagOutcome, ...], Exception | None]:
    with (
        client_for(policy) as client,
        Journal(journal, registry=policy.registry.url).open(
            plan_sha256="test", policy_path=policy.path
        ) as j,
    ):
        port: RegistryPort = client if wrap is None else wrap(client)
        report = apply_plan(plan, port, j, nonce=nonce, concurrency=4, **kwargs)
    assert report.outcomes == ()  # these plans delete nothing: the untags are the run
    return report.untags, report.error


def _shared(pusher: Pusher, repo: str) -> Pushed:
    """One image under a doomed tag and a kept one, plus an image of its own under `latest`."""
    pusher.push_image(repo, "latest")
    return pusher.push_image(repo, ["build-7", "stable"], layers=2)


def _assert_untagged(url: str, image: Pushed, repo: str, nonce: str = "nonce-1") -> None:
    assert list_tags(url, repo) == ["latest", "stable"]
    assert resolve(url, repo, "stable") == image.digest
    assert pull_complete(url, repo, "stable")  # every blob downloads
    throwaway = oci.sha256_digest(throw_away_manifest(repo, "build-7", nonce))
    assert not manifest_exists(url, repo, throwaway)


@pytest.mark.parametrize("method", ["throw-away", "delete-tag"])
def test_a_shared_digest_loses_the_doomed_tag_alone(
    registry: RegistryProcess,
    pusher: Pusher,
    capabilities: Capabilities,
    repo_prefix: str,
    tmp_path: Path,
    method: str,
) -> None:
    repo = f"{repo_prefix}/app"
    image = _shared(pusher, repo)
    policy = load(write_policy(tmp_path / "p.yaml", registry.url, repo_prefix, last=5))
    untag = Untag(repo, "build-7", image.digest, "keep-recent", "shares its image with stable")
    plan = _plan(policy, repo_prefix, [untag], method)

    (outcome,), error = _run(policy, plan, tmp_path / "j.jsonl")

    if method == "delete-tag" and not capabilities.tag_delete:  # 2.8: the registry refuses
        assert (outcome.kind, error) == ("failed", None)
        assert "HTTP 400" in str(outcome.reason)
        assert resolve(registry.url, repo, "build-7") == image.digest
        return
    assert (outcome.kind, outcome.method, error) == ("untagged", method, None)
    _assert_untagged(registry.url, image, repo)
    state = read_journal(tmp_path / "j.jsonl")
    intent = state.untag_intents()[(repo, "build-7")]
    assert (intent.digest, intent.raw, intent.method) == (image.digest, image.manifest, method)
    assert state.untag_outcomes()[(repo, "build-7")].kind == "done"


def test_crane_deletes_the_tag_alone(
    tag_registry: CraneRegistry, repo_prefix: str, tmp_path: Path
) -> None:
    repo = f"{repo_prefix}/app"
    with Pusher(tag_registry.url) as pusher:
        image = _shared(pusher, repo)
    policy = load(write_policy(tmp_path / "p.yaml", tag_registry.url, repo_prefix, last=5))
    untag = Untag(repo, "build-7", image.digest, "keep-recent", "shares its image with stable")
    mark = tag_registry.log_path.stat().st_size

    (outcome,), error = _run(
        policy, _plan(policy, repo_prefix, [untag], "delete-tag"), tmp_path / "j.jsonl"
    )

    assert (outcome.kind, outcome.method, error) == ("untagged", "delete-tag", None)
    _assert_untagged(tag_registry.url, image, repo)
    requests_made = tag_registry.log_path.read_bytes()[mark:].decode()
    assert f"DELETE /v2/{repo}/manifests/build-7" in requests_made
    assert "PUT " not in requests_made  # nothing pushed on a registry that deletes tags


def test_a_tag_repushed_since_the_plan_is_stale_and_untouched(
    registry: RegistryProcess, pusher: Pusher, repo_prefix: str, tmp_path: Path
) -> None:
    repo = f"{repo_prefix}/app"
    image = _shared(pusher, repo)
    policy = load(write_policy(tmp_path / "p.yaml", registry.url, repo_prefix, last=5))
    untag = Untag(repo, "build-7", image.digest, "keep-recent", "shares its image with stable")
    plan = _plan(policy, repo_prefix, [untag], THROW_AWAY)
    moved = pusher.push_image(repo, "build-7")  # a new build since the plan
    mark = registry.log_mark()

    (outcome,), error = _run(policy, plan, tmp_path / "j.jsonl")

    assert (outcome.kind, error) == ("stale", None)
    assert moved.digest in str(outcome.reason)
    assert resolve(registry.url, repo, "build-7") == moved.digest
    assert pull_complete(registry.url, repo, "build-7")
    writes = [e for e in registry.access_log(mark) if e.method in ("PUT", "POST", "DELETE")]
    assert writes == []  # never pushed to, never deleted


def test_a_dangling_tag_is_cleared(
    fresh_registry: RegistryProcess, fresh_pusher: Pusher, tmp_path: Path
) -> None:
    """A tag left listed without its manifest (a registry killed inside a DELETE, as
    test_apply_faults.py makes it) is removed: the throw-away push re-points it first."""
    repo = "team/app"
    doomed = fresh_pusher.push_image(repo, ["old"])
    kept = fresh_pusher.push_image(repo, ["latest", "stable"])
    _dangle(fresh_registry, repo, doomed.digest, ["old"], "revision")
    assert resolve(fresh_registry.url, repo, "old") is None
    assert "old" in list_tags(fresh_registry.url, repo)
    policy = load(write_policy(tmp_path / "p.yaml", fresh_registry.url, "team", last=5))
    plan = _plan(policy, "team", [Untag(repo, "old", None, None, "dangling tag")], THROW_AWAY)

    (outcome,), error = _run(policy, plan, tmp_path / "j.jsonl")

    assert (outcome.kind, error) == ("untagged", None)
    assert list_tags(fresh_registry.url, repo) == ["latest", "stable"]
    assert pull_complete(fresh_registry.url, repo, "stable")
    intent = read_journal(tmp_path / "j.jsonl").untag_intents()[(repo, "old")]
    assert (intent.digest, intent.raw) == (None, None)
    assert resolve(fresh_registry.url, repo, "latest") == kept.digest


class _KillOnDelete:
    """The registry port, but the registry is SIGKILLed just before the throw-away manifest's
    DELETE: the crash that leaves a half-done untag."""

    def __init__(self, client: RegistryPort, registry: RegistryProcess) -> None:
        self._client = client
        self._registry = registry

    def delete_manifest(self, repo: str, digest: str) -> bool:
        self._registry.kill()
        return self._client.delete_manifest(repo, digest)

    def __getattr__(self, name: str) -> Any:
        return getattr(self._client, name)


def test_a_crash_mid_untag_then_a_resume_leaves_no_throw_away_manifest(
    fresh_registry: RegistryProcess, fresh_pusher: Pusher, tmp_path: Path
) -> None:
    repo = "team/app"
    image = _shared(fresh_pusher, repo)
    policy = load(write_policy(tmp_path / "p.yaml", fresh_registry.url, "team", last=5))
    untag = Untag(repo, "build-7", image.digest, "keep-recent", "shares its image with stable")
    plan = _plan(policy, "team", [untag], THROW_AWAY)
    journal = tmp_path / "j.jsonl"

    (first,), error = _run(
        policy,
        plan,
        journal,
        wrap=lambda c: _KillOnDelete(c, fresh_registry),  # type: ignore[arg-type,return-value]
    )
    assert first.kind == "failed" and isinstance(error, TransportError)
    fresh_registry.start()
    throwaway = oci.sha256_digest(throw_away_manifest(repo, "build-7", "nonce-1"))
    assert resolve(fresh_registry.url, repo, "build-7") == throwaway  # half done
    assert read_journal(journal).untag_outcomes()[(repo, "build-7")].kind == "failed"
    assert read_journal(journal).untag_intents()[(repo, "build-7")].throwaway == throwaway

    (second,), error = _run(policy, plan, journal, nonce="nonce-2")

    assert error is None
    assert second.kind == "gone"  # deleting the throw-away manifest took the tag with it
    _assert_untagged(fresh_registry.url, image, repo)
    assert not manifest_exists(fresh_registry.url, repo, throwaway)


def test_concurrent_runs_of_one_plan_leave_the_tag_gone_and_the_image_whole(
    registry: RegistryProcess, pusher: Pusher, repo_prefix: str, tmp_path: Path
) -> None:
    repo = f"{repo_prefix}/app"
    image = _shared(pusher, repo)
    extra = [pusher.tag(repo, f"build-{i}", image.digest) for i in range(8)]
    assert len(extra) == 8
    policy = load(write_policy(tmp_path / "p.yaml", registry.url, repo_prefix, last=5))
    untags = [
        Untag(repo, t, image.digest, "keep-recent", "shares its image with stable")
        for t in ["build-7", *(f"build-{i}" for i in range(8))]
    ]
    plan = _plan(policy, repo_prefix, sorted(set(untags), key=lambda u: u.tag), THROW_AWAY)
    results: dict[int, tuple[tuple[UntagOutcome, ...], Exception | None]] = {}

    def go(n: int) -> None:
        results[n] = _run(policy, plan, tmp_path / f"j{n}.jsonl", nonce=f"run-{n}")

    threads = [threading.Thread(target=go, args=(n,)) for n in range(2)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()

    # 2.8 and 3.x can answer 500 to writes of two runs in one repository at once (a DELETE, a
    # manifest PUT that stored the manifest but not the tag): such an untag fails, and a re-run
    # of that run finishes it, its throw-away manifest included
    for outcomes, error in results.values():
        assert error is None
        assert {o.kind for o in outcomes} <= {"untagged", "gone", "stale", "failed"}
        assert pull_complete(registry.url, repo, "stable")
    for n in range(2):
        again, error = _run(policy, plan, tmp_path / f"j{n}.jsonl", nonce=f"run-{n}")
        assert error is None
        assert {o.kind for o in again} <= {"untagged", "gone", "resumed"}
    assert list_tags(registry.url, repo) == ["latest", "stable"]
    assert pull_complete(registry.url, repo, "stable")
    for n in range(2):
        for u in plan.untags:
            left = oci.sha256_digest(throw_away_manifest(repo, u.tag, f"run-{n}"))
            assert not manifest_exists(registry.url, repo, left), (u.tag, n)


def test_an_untag_the_policy_keeps_now_is_skipped(
    registry: RegistryProcess, pusher: Pusher, repo_prefix: str, tmp_path: Path
) -> None:
    repo = f"{repo_prefix}/app"
    image = _shared(pusher, repo)
    policy = load(write_policy(tmp_path / "p.yaml", registry.url, repo_prefix, last=5))
    untag = Untag(repo, "build-7", image.digest, "keep-recent", "added by hand")
    plan = _plan(policy, repo_prefix, [untag], THROW_AWAY)
    mark = registry.log_mark()

    (outcome,), error = _run(
        policy, plan, tmp_path / "j.jsonl", untag_keeps={(repo, "build-7"): "one of the last 5"}
    )

    assert (outcome.kind, outcome.reason, error) == (
        "kept",
        "the policy keeps it now: one of the last 5",
        None,
    )
    assert registry.access_log(mark) == []  # not even resolved
    assert resolve(registry.url, repo, "build-7") == image.digest


@pytest.mark.parametrize("half_done", [False, True], ids=["untagged", "half-done"])
def test_restore_points_untagged_tags_at_their_images_again(
    fresh_registry: RegistryProcess,
    fresh_pusher: Pusher,
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
    half_done: bool,
) -> None:
    """`retention restore JOURNAL` re-points each untagged tag by PUTting the journaled bytes;
    a tag a crash left on the throw-away manifest is re-pointed and the throw-away deleted."""
    repo = "team/app"
    image = _shared(fresh_pusher, repo)
    policy = load(write_policy(tmp_path / "p.yaml", fresh_registry.url, "team", last=5))
    untag = Untag(repo, "build-7", image.digest, "keep-recent", "shares its image with stable")
    journal = tmp_path / "j.jsonl"
    wrap = (lambda c: _KillOnDelete(c, fresh_registry)) if half_done else None
    _run(policy, _plan(policy, "team", [untag], THROW_AWAY), journal, wrap=wrap)  # type: ignore[arg-type]
    fresh_registry.start()  # a no-op unless it was killed
    throwaway = oci.sha256_digest(throw_away_manifest(repo, "build-7", "nonce-1"))
    assert resolve(fresh_registry.url, repo, "build-7") == (throwaway if half_done else None)

    assert main(["restore", str(journal), "--yes"]) == 0

    assert "1 untagged tag(s)" in capsys.readouterr().err
    assert resolve(fresh_registry.url, repo, "build-7") == image.digest
    assert pull_complete(fresh_registry.url, repo, "build-7")
    assert resolve(fresh_registry.url, repo, "stable") == image.digest
    assert not manifest_exists(fresh_registry.url, repo, throwaway)
    assert main(["restore", str(journal), "--yes", "--tag", "build-7"]) == 0  # idempotent


def test_untag_then_garbage_collection_breaks_no_kept_image(
    fresh_registry: RegistryProcess, fresh_pusher: Pusher, tmp_path: Path
) -> None:
    """The throw-away manifests and the empty config they leave as blobs are collected; every
    image a kept tag names still pulls completely, indexes with their platform images too."""
    repo = "team/app"
    single = _shared(fresh_pusher, repo)
    index = fresh_pusher.push_image(repo, ["build-8", "multi"], kind="oci-index")
    policy = load(write_policy(tmp_path / "p.yaml", fresh_registry.url, "team", last=5))
    untags = [
        Untag(repo, "build-7", single.digest, "keep-recent", "shares its image with stable"),
        Untag(repo, "build-8", index.digest, "keep-recent", "shares its image with multi"),
    ]
    outcomes, error = _run(policy, _plan(policy, "team", untags, THROW_AWAY), tmp_path / "j")
    assert [o.kind for o in outcomes] == ["untagged", "untagged"] and error is None

    fresh_registry.garbage_collect()

    assert list_tags(fresh_registry.url, repo) == ["latest", "multi", "stable"]
    for tag, image in (("stable", single), ("multi", index)):
        assert resolve(fresh_registry.url, repo, tag) == image.digest
        assert pull_complete(fresh_registry.url, repo, tag)
    assert pull_complete(fresh_registry.url, repo, "latest")
    for untag in untags:
        left = oci.sha256_digest(throw_away_manifest(repo, untag.tag, "nonce-1"))
        assert not manifest_exists(fresh_registry.url, repo, left)


@pytest.mark.parametrize("method", ["throw-away", "delete-tag"])
def test_the_request_budget_of_an_untag(
    registry: RegistryProcess,
    pusher: Pusher,
    capabilities: Capabilities,
    repo_prefix: str,
    tmp_path: Path,
    method: str,
) -> None:
    """docs/decisions.md, "Untag: registry side": per untag a GET of the tag, the method's
    writes, a HEAD of the tag and of the image; once per repository the empty config's upload
    (throw-away) and the tags/list that confirms."""
    if method == "delete-tag" and not capabilities.tag_delete:
        method = "throw-away"  # 2.8 deletes no tag: its budget is the throw-away one, again
    repo = f"{repo_prefix}/app"
    image = _shared(pusher, repo)
    pusher.tag(repo, "build-8", image)
    policy = load(write_policy(tmp_path / "p.yaml", registry.url, repo_prefix, last=5))
    untags = [Untag(repo, t, image.digest, "keep-recent", "test") for t in ("build-7", "build-8")]
    plan = _plan(policy, repo_prefix, untags, method)
    mark = registry.log_mark()

    outcomes, error = _run(policy, plan, tmp_path / "j.jsonl")

    assert [o.kind for o in outcomes] == ["untagged", "untagged"] and error is None
    seen = [
        (e.method, "uploads" if "/uploads/" in e.path else e.path.split("/")[-2], e.status)
        for e in registry.wait_for_requests(mark, 20, timeout=2.0)
        if e.user_agent.startswith("retention/")
    ]
    per_untag = [("GET", "manifests", 200), ("HEAD", "manifests", 404), ("HEAD", "manifests", 200)]
    if method == "delete-tag":
        per_untag.append(("DELETE", "manifests", 202))  # by tag
        once: list[tuple[str, str, int]] = []
    else:
        per_untag += [
            ("PUT", "manifests", 201),  # the throw-away, to the tag
            ("HEAD", "manifests", 200),  # the tag names it
            ("DELETE", "manifests", 202),  # by its digest
        ]
        # the empty config: missing in a new repository, uploaded once, then found
        once = [("HEAD", "blobs", 404), ("POST", "uploads", 202), ("PUT", "uploads", 201)]
        once += [("HEAD", "blobs", 200)]
    assert sorted(seen) == sorted(per_untag * 2 + once + [("GET", "tags", 200)])


def test_a_plan_without_methods_is_probed_by_apply(
    registry: RegistryProcess,
    pusher: Pusher,
    tag_registry: CraneRegistry,
    capabilities: Capabilities,
    repo_prefix: str,
    tmp_path: Path,
) -> None:
    """A plan made from a saved inventory (`plan --from-inventory` contacts no registry) has no
    `untag_methods`: apply probes each repository itself, once, before its untags."""
    repo = f"{repo_prefix}/app"
    matrix = "delete-tag" if capabilities.tag_delete else "throw-away"
    for n, (url, method) in enumerate(((registry.url, matrix), (tag_registry.url, "delete-tag"))):
        with Pusher(url) as seeder:
            image = _shared(seeder, repo)
        policy = load(write_policy(tmp_path / "p.yaml", url, repo_prefix, last=5))
        untag = Untag(repo, "build-7", image.digest, "keep-recent", "shares its image")
        plan = dataclasses.replace(_plan(policy, repo_prefix, [untag], method), untag_methods=())

        (outcome,), error = _run(policy, plan, tmp_path / f"j{n}.jsonl")

        assert (outcome.kind, outcome.method, error) == ("untagged", method, None)
        assert list_tags(url, repo) == ["latest", "stable"]
        assert pull_complete(url, repo, "stable")
