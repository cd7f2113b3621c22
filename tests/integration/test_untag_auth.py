"""The token-scope audit of untag, behind the token server (tests/harness/tokenserver.py):
`push` is asked for only in repositories with untags, and only where a throw-away manifest is
pushed; a refused push fails those untags with a clear error while the rest of the run (other
repositories' untags, the deletions) goes on; doctor says whether the credentials may push."""

from __future__ import annotations

import dataclasses
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from retention.apply import apply_plan
from retention.doctor import run_checks
from retention.journal import Journal
from retention.plan import Untag
from retention.policy.model import Policy
from tests.harness.registry import RegistryProcess
from tests.harness.seed import Pusher, list_tags, pull_complete, resolve
from tests.harness.tokenserver import MintingAuth, TokenServer
from tests.support.applykit import client_for, load, make_plan, write_policy

NOW = datetime.now(UTC)
PASSWORD = "cleaner-pw-never-logged"
PREFIX = "audit"
ALLOWED, REFUSED, DELETES_ONLY = f"{PREFIX}/allowed", f"{PREFIX}/refused", f"{PREFIX}/deletes"
ENV = {"REGISTRY_USER": "cleaner", "REGISTRY_PASSWORD": PASSWORD}


@pytest.fixture
def token_registry(
    registry_binary: str, tmp_path: Path
) -> Iterator[tuple[TokenServer, RegistryProcess, Pusher]]:
    with (
        TokenServer(
            {"cleaner": PASSWORD},
            # push in one repository only: the other one's untags must fail, alone
            acl={"cleaner": {"pull", "delete", "catalog", f"push:{ALLOWED}"}},
            folder=tmp_path / "signer",
        ) as server,
        RegistryProcess(
            registry_binary, root=tmp_path / "registry", extra_config=server.registry_config()
        ) as process,
        Pusher(process.url, auth=MintingAuth(server)) as pusher,
    ):
        yield server, process, pusher


def _policy(tmp_path: Path, url: str) -> Policy:
    return load(write_policy(tmp_path / "p.yaml", url, PREFIX, auth=True), env=ENV)


def test_push_is_asked_only_where_untags_push_and_a_refusal_fails_only_those(
    token_registry: tuple[TokenServer, RegistryProcess, Pusher], tmp_path: Path
) -> None:
    server, process, pusher = token_registry
    shared = {repo: pusher.push_image(repo, ["build-7", "stable"]) for repo in (ALLOWED, REFUSED)}
    old = pusher.push_image(DELETES_ONLY, "v1", created=NOW - timedelta(days=9))
    new = pusher.push_image(DELETES_ONLY, "v2", created=NOW - timedelta(days=1))
    policy = _policy(tmp_path, process.url)
    plan = make_plan(policy, PREFIX, env=ENV)
    assert [(e.repository, e.digest) for e in plan.deletions] == [(DELETES_ONLY, old.digest)]
    plan = dataclasses.replace(
        plan,
        untags=tuple(
            Untag(repo, "build-7", shared[repo].digest, "keep-recent", "shares its image")
            for repo in (ALLOWED, REFUSED)
        ),
        untag_methods=((ALLOWED, "throw-away"), (REFUSED, "throw-away")),
    )
    server.clear()
    with (
        client_for(policy, ENV) as client,
        Journal(tmp_path / "j.jsonl", registry=process.url).open(
            plan_sha256="audit", policy_path=policy.path
        ) as journal,
    ):
        report = apply_plan(plan, client, journal, concurrency=2)

    assert report.error is None and not report.complete  # exit 3: partial
    assert [o.kind for o in report.outcomes] == ["deleted"]
    by_repo = {o.untag.repository: o for o in report.untags}
    assert by_repo[ALLOWED].kind == "untagged"
    assert by_repo[REFUSED].kind == "failed"
    assert f"missing push permission on repository {REFUSED}" in str(by_repo[REFUSED].reason)
    assert list_tags(process.url, ALLOWED, auth=MintingAuth(server)) == ["stable"]
    assert resolve(process.url, REFUSED, "build-7", auth=MintingAuth(server)) == (
        shared[REFUSED].digest
    )
    for repo in (ALLOWED, REFUSED):
        assert pull_complete(process.url, repo, "stable", auth=MintingAuth(server))
    assert resolve(process.url, DELETES_ONLY, old.digest, auth=MintingAuth(server)) is None
    assert resolve(process.url, DELETES_ONLY, "v2", auth=MintingAuth(server)) == new.digest
    journal_text = (tmp_path / "j.jsonl").read_text()
    assert PASSWORD not in journal_text and '"record":"untag"' in journal_text
    assert not any(token in journal_text for token in server.issued)
    pushes = {s for scopes in server.scopes_asked() for s in scopes if "push" in s}
    assert pushes == {f"repository:{ALLOWED}:pull,push", f"repository:{REFUSED}:pull,push"}


def test_doctor_says_whether_the_credentials_may_push(
    token_registry: tuple[TokenServer, RegistryProcess, Pusher], tmp_path: Path
) -> None:
    _server, process, pusher = token_registry
    for repo in (ALLOWED, REFUSED):
        pusher.push_image(repo, "v1")
    policy = _policy(tmp_path, process.url)
    with client_for(policy, ENV) as client:
        allowed = run_checks(client, now=NOW, repository=ALLOWED, push=True)
        refused = run_checks(client, now=NOW, repository=REFUSED, push=True)
        without = run_checks(client, now=NOW, repository=REFUSED)
    assert {c.name: c.status for c in allowed}["push"] == "ok"
    (check,) = [c for c in refused if c.name == "push"]
    assert (check.status, check.message) == ("fail", f"refused in {REFUSED}")
    assert check.hint is not None and "grant push" in check.hint
    assert "push" not in {c.name for c in without}
    assert list_tags(process.url, ALLOWED, auth=MintingAuth(_server)) == ["v1"]  # pushed nothing
