"""Credentials never leave the registry's origin (docs/decisions.md, "What is trusted").

The scene (issue 13, item 1): a blob GET is redirected (307) to another host, 127.0.0.2, which
answers 401 with a Bearer challenge whose realm is on itself (https, with a certificate the
client trusts, so nothing but the origin rule stands between it and the credentials). Only a 401
from the registry's own origin is a challenge: this one fails the request, and the other host
receives no username, no password and no token: with Basic auth, anonymous, and Bearer with the
policy's credentials.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from retention.errors import ProtocolError, RedirectRefused
from retention.policy.model import Auth, RegistryConfig, Tls
from retention.registry import RegistryClient, RetryPolicy
from tests.harness.hostile import STOLEN_TOKEN, HostileRegistry
from tests.harness.registry import AuthRegistry, RegistryProcess
from tests.harness.seed import Pusher
from tests.harness.tokenserver import ANONYMOUS, MintingAuth, TokenServer

RETRY = RetryPolicy(attempts=2, base=0.01, cap=0.02, budget=5.0)
ALICE_PW = "alice-Pa55word-must-stay-home"


def _client(hostile: HostileRegistry, auth: Auth | None) -> RegistryClient:
    # The client trusts the other host's certificate: only the origin rule protects the secret.
    tls = Tls(ca_file=str(hostile.other.cert.cert_path))
    return RegistryClient(
        RegistryConfig(hostile.url, auth=auth, tls=tls), env={}, retry=RETRY, sleep=lambda _s: None
    )


def _assert_nothing_reached_the_other_host(hostile: HostileRegistry, secret: str | None) -> None:
    other = hostile.other
    assert other.requests, "the scene did not happen: the other host saw no request"
    assert other.token_requests() == []
    assert other.authorizations() == []
    # and its token never came back to the registry either
    for record in hostile.requests:
        assert STOLEN_TOKEN not in (record.header("Authorization") or "")
    if secret is not None:
        assert all(secret not in (r.authorization or "") for r in other.requests)


def _pushed_config(pusher: Pusher, repo: str) -> str:
    """Push `repo:v1`; the digest of its config blob (the blob the redirect tests ask for)."""
    pushed = pusher.push_image(repo, "v1")
    assert pushed.config_digest is not None
    return pushed.config_digest


@pytest.fixture
def open_front(registry: RegistryProcess, tmp_path: Path) -> Iterator[HostileRegistry]:
    with HostileRegistry(registry.url, tmp_path / "hostile") as hostile:
        yield hostile


@pytest.mark.parametrize(
    "auth", [None, Auth("alice", ALICE_PW)], ids=["anonymous", "policy-credentials-open-registry"]
)
def test_a_redirect_target_challenge_is_never_answered(
    open_front: HostileRegistry, pusher: Pusher, unique_repo: str, auth: Auth | None
) -> None:
    config = _pushed_config(pusher, unique_repo)
    open_front.enable("redirect-blob-to-challenger", repo=unique_repo)
    with _client(open_front, auth) as client, pytest.raises(RedirectRefused) as caught:
        client.get_blob(unique_repo, config)
    text = caught.value.diagnostics()
    assert "redirect target https://127.0.0.2:" in text and "refused" in text
    _assert_nothing_reached_the_other_host(open_front, ALICE_PW)


def test_basic_auth_registry_redirect_target_401_is_refused(
    auth_registry: AuthRegistry, tmp_path: Path, unique_repo: str
) -> None:
    creds = (auth_registry.username, auth_registry.password)
    with Pusher(auth_registry.registry.url, auth=creds) as pusher:
        config = _pushed_config(pusher, unique_repo)
    with HostileRegistry(auth_registry.registry.url, tmp_path / "hostile") as hostile:
        hostile.enable("redirect-blob-to-challenger", repo=unique_repo)
        with _client(hostile, Auth(*creds)) as client:
            assert client.ping().auth_scheme == "basic"
            with pytest.raises(RedirectRefused):
                client.get_blob(unique_repo, config)
            # the registry itself still works with the same credentials
            assert client.list_tags(unique_repo) == ["v1"]
        _assert_nothing_reached_the_other_host(hostile, auth_registry.password)


def test_bearer_registry_redirect_target_401_gets_no_credentials_nor_token(
    registry_binary: str, tmp_path: Path, unique_repo: str
) -> None:
    with (
        TokenServer(
            {"alice": ALICE_PW}, acl={ANONYMOUS: {"pull"}}, folder=tmp_path / "signer"
        ) as server,
        RegistryProcess(
            registry_binary, root=tmp_path / "registry", extra_config=server.registry_config()
        ) as registry,
        Pusher(registry.url, auth=MintingAuth(server)) as pusher,
        HostileRegistry(registry.url, tmp_path / "hostile") as hostile,
    ):
        config = _pushed_config(pusher, unique_repo)
        hostile.enable("redirect-blob-to-challenger", repo=unique_repo)
        with _client(hostile, Auth("alice", ALICE_PW)) as client:
            assert client.ping().auth_scheme == "bearer"
            with pytest.raises(RedirectRefused):
                client.get_blob(unique_repo, config)
            assert client.list_tags(unique_repo) == ["v1"]
        _assert_nothing_reached_the_other_host(hostile, ALICE_PW)
        issued = set(server.issued)
        assert issued, "the registry's own token server issued the tokens"
        assert all(
            not any(token in (r.authorization or "") for token in issued)
            for r in hostile.other.requests
        )


def test_blob_head_redirect_to_another_host_never_carries_authorization(
    open_front: HostileRegistry, pusher: Pusher, unique_repo: str
) -> None:
    config = _pushed_config(pusher, unique_repo)
    open_front.enable("redirect-blob-to-challenger", repo=unique_repo)
    with _client(open_front, Auth("alice", ALICE_PW)) as client, pytest.raises(RedirectRefused):
        client.blob_exists(unique_repo, config)
    _assert_nothing_reached_the_other_host(open_front, ALICE_PW)


def test_the_redirect_target_in_the_error_is_escaped(
    open_front: HostileRegistry, pusher: Pusher, unique_repo: str
) -> None:
    config = _pushed_config(pusher, unique_repo)
    # U+202E's UTF-8 bytes: http.client reads headers as latin-1, so they arrive as
    # "\xe2\x80\xae", a C1 control among them
    rlo = "\u202e".encode().decode("latin-1")
    open_front.enable("redirect-blob-to-challenger", repo=unique_repo, suffix=f"/\x1b[2J{rlo}")
    with _client(open_front, None) as client, pytest.raises(RedirectRefused) as caught:
        client.get_blob(unique_repo, config)
    text = caught.value.diagnostics()
    assert "\x1b" not in text and "\x80" not in text and "\u202e" not in text
    assert "/\\x1b[2J" in text and "\\u202e" in text, text
    _assert_nothing_reached_the_other_host(open_front, None)


def test_a_location_that_is_not_utf8_is_a_clear_error(
    open_front: HostileRegistry, pusher: Pusher, unique_repo: str
) -> None:
    config = _pushed_config(pusher, unique_repo)
    open_front.enable("redirect-blob-to-challenger", repo=unique_repo, suffix="/\x9b")
    with _client(open_front, None) as client, pytest.raises(ProtocolError, match="not a UTF-8 URL"):
        client.get_blob(unique_repo, config)
    assert open_front.other.requests == []
