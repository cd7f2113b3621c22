"""The registry client against the real registry behind token auth (`auth: token`).

The token server (tests/harness/tokenserver.py) records every scope asked for: reads ask
`pull`, deletes `pull,delete`, uploads `pull,push`, the catalog `registry:catalog:*`; tokens are
cached per scope, refreshed on expiry or on one 401, and never logged.
"""

from __future__ import annotations

import base64
import json
import logging
import stat
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import pytest
import requests

from retention import oci
from retention.errors import AuthError, RegistryError
from retention.policy.model import Auth, RegistryConfig
from retention.registry import RegistryClient, RetryPolicy
from tests.harness.faultproxy import Exchange, Fault, FaultProxy, RecordedRequest, Upstream
from tests.harness.registry import RegistryProcess
from tests.harness.seed import Pusher
from tests.harness.tokenserver import ANONYMOUS, MintingAuth, TokenServer

ALICE_PW = "alice-Pa55word-never-logged"
READER_PW = "reader-Pa55word-never-logged"
REFRESH = "refresh-token-never-logged"
RETRY = RetryPolicy(attempts=3, base=0.01, cap=0.05, budget=10.0)


@dataclass
class TokenSetup:
    server: TokenServer
    registry: RegistryProcess
    pusher: Pusher

    def client(self, auth: Auth | None = None, **kwargs: object) -> RegistryClient:
        return self.client_for(self.registry.url, auth, **kwargs)

    def client_for(self, url: str, auth: Auth | None = None, **kwargs: object) -> RegistryClient:
        env = kwargs.pop("env", {})
        return RegistryClient(
            RegistryConfig(url, auth=auth),
            env=env,  # type: ignore[arg-type]
            retry=RETRY,
            sleep=lambda _s: None,
            **kwargs,  # type: ignore[arg-type]
        )


@pytest.fixture(scope="module")
def token(registry_binary: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[TokenSetup]:
    folder = tmp_path_factory.mktemp("token")
    with (
        TokenServer(
            {"alice": ALICE_PW, "reader": READER_PW},
            acl={"reader": {"pull"}, ANONYMOUS: {"pull"}},
            refresh_tokens={REFRESH: "alice"},
            folder=folder / "signer",
        ) as server,
        RegistryProcess(
            registry_binary, root=folder / "registry", extra_config=server.registry_config()
        ) as registry,
        Pusher(registry.url, auth=MintingAuth(server)) as pusher,
    ):
        yield TokenSetup(server, registry, pusher)


@pytest.fixture
def setup(token: TokenSetup) -> TokenSetup:
    token.server.clear()
    return token


ALICE = Auth("alice", ALICE_PW)


def test_each_operation_asks_its_own_least_scope(setup: TokenSetup, unique_repo: str) -> None:
    pushed = setup.pusher.push_image(unique_repo, ["v1", "v2"])
    assert pushed.config_digest is not None
    with setup.client(ALICE) as client:
        assert client.ping().auth_scheme == "bearer"
        assert unique_repo in list(client.catalog())
        assert client.list_tags(unique_repo) == ["v1", "v2"]
        assert client.head_manifest(unique_repo, "v1") is not None
        assert client.get_manifest(unique_repo, "v2") is not None
        assert client.get_blob(unique_repo, pushed.config_digest)
        assert client.blob_exists(unique_repo, pushed.config_digest)
        assert client.put_manifest(unique_repo, "v3", pushed.manifest, pushed.media_type)
        assert client.probe_delete(unique_repo) is True
        assert client.delete_manifest(unique_repo, pushed.digest) is True
    assert setup.server.scopes_asked() == [
        (),  # GET /v2/
        ("registry:catalog:*",),
        (f"repository:{unique_repo}:pull",),
        (f"repository:{unique_repo}:pull,push",),
        (f"repository:{unique_repo}:pull,delete",),
    ]
    assert {r.user for r in setup.server.requests} == {"alice"}
    assert {r.service for r in setup.server.requests} == {setup.server.service}


def test_tokens_are_cached_per_scope(setup: TokenSetup, repo_prefix: str) -> None:
    one, two = f"{repo_prefix}/one", f"{repo_prefix}/two"
    setup.pusher.push_image(one, "v1")
    setup.pusher.push_image(two, "v1")
    with setup.client(ALICE) as client:
        for _ in range(3):
            assert client.head_manifest(one, "v1") is not None
            assert client.head_manifest(two, "v1") is not None
    assert setup.server.scopes_asked() == [
        (f"repository:{one}:pull",),
        (f"repository:{two}:pull",),
    ]


def test_an_expired_token_is_fetched_again(setup: TokenSetup, unique_repo: str) -> None:
    setup.pusher.push_image(unique_repo, "v1")
    now = [1000.0]
    with setup.client(ALICE, clock=lambda: now[0]) as client:
        assert client.list_tags(unique_repo) == ["v1"]
        now[0] += setup.server.expires_in - 11  # still valid (10 s margin)
        assert client.list_tags(unique_repo) == ["v1"]
        now[0] += 2  # inside the refresh margin
        assert client.list_tags(unique_repo) == ["v1"]
    assert setup.server.scopes_asked() == [(f"repository:{unique_repo}:pull",)] * 2


def test_one_reauthentication_on_401(setup: TokenSetup, unique_repo: str) -> None:
    pushed = setup.pusher.push_image(unique_repo, "v1")
    with setup.client(ALICE) as client:
        client.ping()
        setup.server.clear()
        setup.server.expire_next(1)  # the registry will refuse the first token with 401
        ref = client.head_manifest(unique_repo, "v1")
    assert ref is not None and ref.digest == pushed.digest
    assert setup.server.scopes_asked() == [(f"repository:{unique_repo}:pull",)] * 2


def test_a_second_401_is_an_error_not_a_loop(setup: TokenSetup, unique_repo: str) -> None:
    setup.pusher.push_image(unique_repo, "v1")
    with setup.client(ALICE) as client:
        client.ping()
        setup.server.clear()
        setup.server.expire_next(10)
        with pytest.raises(AuthError, match="still answers 401") as caught:
            client.head_manifest(unique_repo, "v1")
    assert caught.value.status == 401
    assert len(setup.server.requests) == 2
    setup.server.expire_next(-8)  # leave nothing pending for the next test


def test_missing_delete_permission_is_a_clear_auth_error(
    setup: TokenSetup, unique_repo: str
) -> None:
    pushed = setup.pusher.push_image(unique_repo, "v1")
    with setup.client(Auth("reader", READER_PW)) as client:
        assert client.head_manifest(unique_repo, "v1") is not None  # pull is granted
        with pytest.raises(
            AuthError, match=f"missing delete permission on repository {unique_repo}"
        ):
            client.delete_manifest(unique_repo, pushed.digest)
        with pytest.raises(AuthError, match="delete"):
            client.probe_delete(unique_repo)
        with pytest.raises(AuthError, match=r"missing catalog access \(registry:catalog:\*\)"):
            list(client.catalog())
    assert setup.pusher.resolve(unique_repo, "v1") == pushed.digest


def test_wrong_password_is_refused_by_the_token_server(setup: TokenSetup, unique_repo: str) -> None:
    with (
        setup.client(Auth("alice", "wrong-" + ALICE_PW)) as client,
        pytest.raises(AuthError, match="token server refused user 'alice'") as caught,
    ):
        client.list_tags(unique_repo)
    assert ALICE_PW not in caught.value.diagnostics()
    assert [r.status for r in setup.server.requests] == [401]


def test_anonymous_pull_token(setup: TokenSetup, unique_repo: str) -> None:
    pushed = setup.pusher.push_image(unique_repo, "v1")
    with setup.client() as client:
        assert client.credential_source == "anonymous"
        ref = client.head_manifest(unique_repo, "v1")
        assert ref is not None and ref.digest == pushed.digest
        with pytest.raises(AuthError, match="catalog"):
            list(client.catalog())
    assert all(not r.had_authorization for r in setup.server.requests)


def _docker_config(folder: Path, doc: dict[str, object]) -> dict[str, str]:
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "config.json").write_text(json.dumps(doc))
    return {"DOCKER_CONFIG": str(folder), "PATH": f"{folder / 'bin'}:/usr/bin:/bin"}


def test_identity_token_from_docker_config_uses_the_refresh_grant(
    setup: TokenSetup, unique_repo: str, tmp_path: Path
) -> None:
    setup.pusher.push_image(unique_repo, "v1")
    env = _docker_config(tmp_path, {"auths": {setup.registry.host: {"identitytoken": REFRESH}}})
    with setup.client(env=env) as client:
        assert client.credential_source == "docker-config"
        assert client.list_tags(unique_repo) == ["v1"]
    (record,) = setup.server.requests
    assert (record.method, record.grant, record.user) == ("POST", "refresh_token", "alice")
    assert not record.had_authorization  # the refresh token travels in the form only


def test_credential_helper_against_the_token_server(
    setup: TokenSetup, unique_repo: str, tmp_path: Path
) -> None:
    setup.pusher.push_image(unique_repo, "v1")
    env = _docker_config(tmp_path, {"credHelpers": {setup.registry.host: "test"}})
    helper = tmp_path / "bin" / "docker-credential-test"
    helper.parent.mkdir()
    helper.write_text(f'#!/bin/sh\nprintf \'{{"Username":"alice","Secret":"{ALICE_PW}"}}\'\n')
    helper.chmod(helper.stat().st_mode | stat.S_IXUSR)
    with setup.client(env=env) as client:
        assert client.credential_source == "credential-helper:test"
        assert client.list_tags(unique_repo) == ["v1"]
    assert [r.user for r in setup.server.requests] == ["alice"]


def test_concurrent_readers_share_one_token(setup: TokenSetup, unique_repo: str) -> None:
    pushed = setup.pusher.push_image(unique_repo, [f"t{i}" for i in range(8)])
    with setup.client(ALICE, concurrency=8) as client, ThreadPoolExecutor(8) as pool:
        refs = list(pool.map(lambda i: client.head_manifest(unique_repo, f"t{i % 8}"), range(64)))
    assert {r.digest for r in refs if r is not None} == {pushed.digest}
    assert len(refs) == 64 and all(r is not None for r in refs)
    assert setup.server.scopes_asked() == [(f"repository:{unique_repo}:pull",)]


def test_secrets_never_reach_logs_or_errors(
    setup: TokenSetup, unique_repo: str, caplog: pytest.LogCaptureFixture
) -> None:
    pushed = setup.pusher.push_image(unique_repo, "v1")
    errors: list[str] = []
    with caplog.at_level(logging.DEBUG):
        with setup.client(ALICE) as client:
            client.ping()
            client.list_tags(unique_repo)
            client.get_manifest(unique_repo, "v1")
            client.delete_manifest(unique_repo, pushed.digest)
            setup.server.expire_next(2)
            try:
                client.list_tags(unique_repo + "-other")
            except RegistryError as exc:
                errors.append(exc.diagnostics())
                errors.append(repr(exc))
            errors.append(repr(client))
        with setup.client(Auth("reader", READER_PW)) as client:
            try:
                client.probe_delete(unique_repo)
            except RegistryError as exc:
                errors.append(exc.diagnostics())
    assert len(errors) == 4
    assert any(r.name.startswith("retention") for r in caplog.records)
    text = caplog.text + "\n".join(errors)
    secrets = [ALICE_PW, READER_PW, *setup.server.issued]
    secrets.append(base64.b64encode(f"alice:{ALICE_PW}".encode()).decode())
    assert len(secrets) > 4
    for secret in secrets:
        assert secret not in text
    ours = [r.getMessage() for r in caplog.records if r.name.startswith("retention")]
    assert any("/token" in m for m in ours)
    assert not any("?" in m for m in ours)  # never a query string (scopes, signatures)


def test_realm_on_another_host_over_http_is_refused_before_sending_credentials(
    registry_binary: str, tmp_path: Path
) -> None:
    with (
        TokenServer({"alice": ALICE_PW}, realm_host="localhost", folder=tmp_path / "s") as server,
        RegistryProcess(
            registry_binary, root=tmp_path / "r", extra_config=server.registry_config()
        ) as registry,
        RegistryClient(RegistryConfig(registry.url, auth=ALICE), env={}) as client,
    ):
        with pytest.raises(AuthError, match="another host over plain http") as caught:
            client.ping()
        assert ALICE_PW not in caught.value.diagnostics()
        assert server.requests == []


# --- redirects ---------------------------------------------------------------------------------


def test_blob_redirect_to_another_origin_gets_no_authorization(
    setup: TokenSetup, unique_repo: str, caplog: pytest.LogCaptureFixture
) -> None:
    pushed = setup.pusher.push_image(unique_repo, "v1")
    assert pushed.config_digest is not None
    blob_path = f"/v2/{unique_repo}/blobs/{pushed.config_digest}"

    def serve_blob(_request: RecordedRequest, _upstream: Upstream) -> Exchange:
        # "object storage": the real bytes, fetched with the harness's own credentials
        real = requests.get(
            setup.registry.url + blob_path, auth=MintingAuth(setup.server), timeout=10
        )
        return Exchange(200, (("Content-Type", "application/octet-stream"),), real.content)

    with (
        FaultProxy(setup.registry.url) as front,
        FaultProxy(setup.registry.url) as storage,
        caplog.at_level(logging.DEBUG),
    ):
        storage.add(Fault("respond", r"^/bucket/", "GET", handler=serve_blob))
        location = f"{storage.url}/bucket/blob?X-Amz-Signature=presigned-secret"
        front.add(Fault("status", r"/blobs/", "GET", status=307, headers={"Location": location}))
        with setup.client_for(front.url, ALICE) as client:
            assert client.ping().auth_scheme == "bearer"  # learns the scheme: sends tokens
            blob = client.get_blob(unique_repo, pushed.config_digest)
        front_hits = [r for r in front.requests if "/blobs/" in r.path]
        storage_hits = storage.requests
    assert oci.sha256_digest(blob) == pushed.config_digest
    (first,) = front_hits
    assert (first.header("Authorization") or "").startswith("Bearer ")
    (hop,) = storage_hits
    assert hop.path == "/bucket/blob?X-Amz-Signature=presigned-secret"
    assert hop.header("Authorization") is None
    ours = "\n".join(r.getMessage() for r in caplog.records if r.name.startswith("retention"))
    assert "/bucket/blob" in ours  # the hop itself is logged, without its query
    assert "presigned-secret" not in ours
