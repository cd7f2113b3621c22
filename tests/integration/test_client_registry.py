"""The registry client against the real registry (distribution 2.8): manifests of every kind,
blobs, pagination, DELETE and its refusals, restore by PUT, htpasswd Basic auth with every
credential source, TLS verification, and what the client logs."""

from __future__ import annotations

import base64
import json
import logging
import re
import stat
from collections.abc import Callable, Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from retention import oci
from retention.errors import (
    AuthError,
    DeleteDisabledError,
    ProtocolError,
    RegistryError,
    TransportError,
)
from retention.policy.model import Auth, RegistryConfig, Tls
from retention.registry import RegistryClient
from tests.harness.certs import self_signed
from tests.harness.faultproxy import Fault, FaultProxy
from tests.harness.registry import AuthRegistry, RegistryProcess
from tests.harness.seed import Kind, Pushed, Pusher

PushImage = Callable[..., Pushed]
MEDIA_TYPES: dict[Kind, str] = {
    "docker": oci.DOCKER_MANIFEST,
    "oci": oci.OCI_MANIFEST,
    "oci-index": oci.OCI_INDEX,
    "docker-list": oci.DOCKER_LIST,
}


def _no_sleep(seconds: float) -> None:
    raise AssertionError(f"unexpected retry (wait {seconds}s)")


@pytest.fixture
def client(registry: RegistryProcess) -> Iterator[RegistryClient]:
    with RegistryClient(RegistryConfig(registry.url), env={}, sleep=_no_sleep) as bound:
        yield bound


# --- ping, manifests, blobs ------------------------------------------------------------------


def test_ping(client: RegistryClient, registry: RegistryProcess) -> None:
    ping = client.ping()
    assert (ping.status, ping.api_version, ping.auth_scheme) == (200, "registry/2.0", None)
    assert ping.server_date is not None
    assert abs(ping.server_date - datetime.now(UTC)) < timedelta(minutes=5)
    assert client.url == registry.url
    assert client.credential_source == "anonymous"


def test_ping_of_something_that_is_not_a_registry(registry: RegistryProcess) -> None:
    with (
        FaultProxy(registry.url) as proxy,
        RegistryClient(RegistryConfig(proxy.url + "/"), env={}, sleep=_no_sleep) as client,
    ):
        proxy.add(Fault("status", r"^/v2/$", "GET", status=404, body=b"404 page not found"))
        with pytest.raises(RegistryError, match="no registry API"):
            client.ping()


@pytest.mark.parametrize("kind", list(MEDIA_TYPES))
def test_manifest_of_every_kind_by_tag_and_by_digest(
    kind: Kind, client: RegistryClient, push_image: PushImage, unique_repo: str
) -> None:
    pushed = push_image(unique_repo, "v1", kind=kind)
    for ref in ("v1", pushed.digest):
        head = client.head_manifest(unique_repo, ref)
        assert head is not None
        assert (head.digest, head.media_type, head.size) == (
            pushed.digest,
            MEDIA_TYPES[kind],
            len(pushed.manifest),
        )
        fetched = client.get_manifest(unique_repo, ref)
        assert fetched is not None
        assert fetched.raw == pushed.manifest
        assert fetched.digest == fetched.manifest.digest == pushed.digest
        assert fetched.media_type == MEDIA_TYPES[kind]
    fetched = client.get_manifest(unique_repo, "v1")
    assert fetched is not None
    if kind in ("oci-index", "docker-list"):
        assert {c.digest for c in fetched.manifest.children} == {c.digest for c in pushed.children}
        for child in pushed.children:  # untagged platform manifests, by digest
            got = client.get_manifest(unique_repo, child.digest)
            assert got is not None and got.digest == child.digest
    else:
        assert fetched.manifest.config is not None
        assert fetched.manifest.config.digest == pushed.config_digest
        assert [layer.digest for layer in fetched.manifest.layers] == list(pushed.layer_digests)


def test_missing_manifests_are_none(
    client: RegistryClient, push_image: PushImage, unique_repo: str
) -> None:
    push_image(unique_repo, "v1")
    assert client.head_manifest(unique_repo, "nope") is None
    assert client.get_manifest(unique_repo, "nope") is None
    assert client.head_manifest(unique_repo, oci.ZERO_DIGEST) is None
    assert client.head_manifest(unique_repo + "-absent", "v1") is None


def test_config_blob_is_verified_and_exists(
    client: RegistryClient, push_image: PushImage, unique_repo: str
) -> None:
    pushed = push_image(unique_repo, "v1", kind="oci", created="2024-05-01T10:00:00Z")
    assert pushed.config_digest is not None
    blob = client.get_blob(unique_repo, pushed.config_digest)
    assert oci.sha256_digest(blob) == pushed.config_digest
    assert oci.parse_config(blob, pushed.config_digest).created == "2024-05-01T10:00:00Z"
    assert client.blob_exists(unique_repo, pushed.config_digest)
    assert not client.blob_exists(unique_repo, "sha256:" + "1" * 64)
    with pytest.raises(RegistryError) as caught:
        client.get_blob(unique_repo, "sha256:" + "1" * 64)
    assert caught.value.status == 404


# --- listing ---------------------------------------------------------------------------------


def test_tags_are_all_sorted_although_2_8_ignores_n_and_does_not_sort(
    registry: RegistryProcess, push_image: PushImage, unique_repo: str
) -> None:
    tags = ["zeta", "alpha", "1.0", "beta", "0.9", "Alpha", "alpha-rc1"]
    push_image(unique_repo, tags)
    with RegistryClient(
        RegistryConfig(registry.url), env={}, sleep=_no_sleep, page_size=2
    ) as client:
        assert client.list_tags(unique_repo) == sorted(tags)


def test_tags_null_after_the_last_delete_is_an_empty_list(
    client: RegistryClient, push_image: PushImage, unique_repo: str
) -> None:
    pushed = push_image(unique_repo, ["a", "b"])
    assert client.delete_manifest(unique_repo, pushed.digest) is True
    assert client.list_tags(unique_repo) == []
    assert client.list_tags(unique_repo + "-never-pushed") == []


def test_catalog_follows_the_registrys_relative_links(
    fresh_registry: RegistryProcess, fresh_pusher: Pusher
) -> None:
    names = sorted(f"team{i}/app" for i in range(5))
    for name in names:
        fresh_pusher.push_image(name, "v1")
    mark = fresh_registry.log_mark()
    with RegistryClient(
        RegistryConfig(fresh_registry.url), env={}, sleep=_no_sleep, page_size=2
    ) as client:
        assert list(client.catalog()) == names
    pages = [e.path for e in fresh_registry.wait_for_requests(mark, 3) if "_catalog" in e.path]
    assert pages[0] == "/v2/_catalog?n=2"
    assert len(pages) == 3
    assert all("last=" in page for page in pages[1:])


def test_catalog_asks_again_with_a_smaller_n_when_refused(
    registry_binary: str, tmp_path: Path
) -> None:
    with (
        RegistryProcess(
            registry_binary, root=tmp_path, extra_config={"catalog": {"maxentries": 3}}
        ) as registry,
        Pusher(registry.url) as pusher,
    ):
        names = sorted(f"r{i}/app" for i in range(7))
        for name in names:
            pusher.push_image(name, "v1")
        mark = registry.log_mark()
        with RegistryClient(RegistryConfig(registry.url), env={}, sleep=_no_sleep) as client:
            assert list(client.catalog()) == names
        entries = [e for e in registry.wait_for_requests(mark, 4) if "_catalog" in e.path]
    assert entries[0].status == 400  # n=1000 > maxentries: PAGINATION_NUMBER_INVALID
    assert entries[0].path == "/v2/_catalog?n=1000"
    assert all(e.status == 200 for e in entries[-3:])
    assert all(int(re.search(r"n=(\d+)", e.path)[1]) <= 3 for e in entries[-3:])  # type: ignore[index]


# --- DELETE, probe, PUT ----------------------------------------------------------------------


def test_delete_by_digest_removes_every_tag_and_then_answers_already_gone(
    client: RegistryClient, pusher: Pusher, push_image: PushImage, unique_repo: str
) -> None:
    gone = push_image(unique_repo, ["a", "b"])
    kept = push_image(unique_repo, "c")
    assert client.delete_manifest(unique_repo, gone.digest) is True
    assert client.delete_manifest(unique_repo, gone.digest) is False
    assert client.list_tags(unique_repo) == ["c"]
    assert pusher.pull_complete(unique_repo, kept.tag)


def test_probe_delete_on_an_enabled_registry(client: RegistryClient, unique_repo: str) -> None:
    assert client.probe_delete(unique_repo) is True


@pytest.mark.parametrize("mode", ["delete-disabled", "read-only"])
def test_deletion_disabled_is_a_clear_error(
    mode: str, registry_binary: str, tmp_path: Path
) -> None:
    with (
        RegistryProcess(registry_binary, root=tmp_path) as registry,
        Pusher(registry.url) as pusher,
    ):
        pushed = pusher.push_image("apps/web", "v1")
        registry.restart(delete_enabled=mode != "delete-disabled", readonly=mode == "read-only")
        with RegistryClient(RegistryConfig(registry.url), env={}, sleep=_no_sleep) as client:
            assert client.probe_delete("apps/web") is False
            with pytest.raises(DeleteDisabledError) as caught:
                client.delete_manifest("apps/web", pushed.digest)
            assert "set storage.delete.enabled: true" in caught.value.diagnostics()
            assert caught.value.status == 405
            if mode == "read-only":
                with pytest.raises(RegistryError, match="refuses manifest uploads"):
                    client.put_manifest("apps/web", "v2", pushed.manifest, pushed.media_type)
        assert pusher.resolve("apps/web", "v1") == pushed.digest


def test_put_manifest_restores_a_deleted_manifest_and_its_tag(
    client: RegistryClient, pusher: Pusher, push_image: PushImage, unique_repo: str
) -> None:
    pushed = push_image(unique_repo, "v1", kind="oci-index")
    fetched = client.get_manifest(unique_repo, "v1")
    assert fetched is not None
    assert client.delete_manifest(unique_repo, pushed.digest) is True
    assert pusher.resolve(unique_repo, "v1") is None
    digest = client.put_manifest(unique_repo, "v1", fetched.raw, fetched.media_type)
    assert digest == pushed.digest
    assert pusher.resolve(unique_repo, "v1") == pushed.digest
    assert pusher.pull_complete(unique_repo, "v1")


# --- what the client sends and logs -----------------------------------------------------------


def test_user_agent_and_one_debug_line_per_request(
    client: RegistryClient,
    registry: RegistryProcess,
    push_image: PushImage,
    unique_repo: str,
    caplog: pytest.LogCaptureFixture,
) -> None:
    push_image(unique_repo, "v1")
    mark = registry.log_mark()
    with caplog.at_level(logging.DEBUG, logger="retention"):
        assert client.list_tags(unique_repo) == ["v1"]
        assert client.head_manifest(unique_repo, "v1") is not None
    entries = registry.wait_for_requests(mark, 2)
    assert [e.user_agent for e in entries] == ["retention/0.1.0"] * 2
    lines = [r.getMessage() for r in caplog.records if r.name == "retention.registry.client"]
    assert len(lines) == 2
    assert re.fullmatch(rf"GET {registry.url}/v2/{unique_repo}/tags/list 200 \d+ms", lines[0])
    assert re.fullmatch(rf"HEAD {registry.url}/v2/{unique_repo}/manifests/v1 200 \d+ms", lines[1])


# --- htpasswd (Basic) auth ---------------------------------------------------------------------


@pytest.fixture
def seeded_auth(auth_registry: AuthRegistry, unique_repo: str) -> Pushed:
    with Pusher(auth_registry.url, auth=auth_registry.auth) as pusher:
        return pusher.push_image(unique_repo, "v1")


def _basic(user: str, password: str) -> str:
    return base64.b64encode(f"{user}:{password}".encode()).decode()


def test_basic_auth_with_policy_credentials(
    auth_registry: AuthRegistry,
    seeded_auth: Pushed,
    unique_repo: str,
    caplog: pytest.LogCaptureFixture,
) -> None:
    config = RegistryConfig(auth_registry.url, auth=Auth(*auth_registry.auth))
    with caplog.at_level(logging.DEBUG), RegistryClient(config, env={}) as client:
        assert client.credential_source == "policy"
        assert client.ping().auth_scheme == "basic"
        ref = client.head_manifest(unique_repo, "v1")
        assert ref is not None and ref.digest == seeded_auth.digest
        assert unique_repo in list(client.catalog())
        assert auth_registry.password not in repr(client)
    assert auth_registry.password not in caplog.text
    assert _basic(*auth_registry.auth) not in caplog.text


def test_basic_auth_without_credentials(auth_registry: AuthRegistry, unique_repo: str) -> None:
    with (
        RegistryClient(RegistryConfig(auth_registry.url), env={}) as client,
        pytest.raises(AuthError, match="requires authentication; no credentials") as caught,
    ):
        client.list_tags(unique_repo)
    assert caught.value.hint is not None and "registry.auth" in caught.value.hint


def test_basic_auth_with_a_wrong_password(auth_registry: AuthRegistry, unique_repo: str) -> None:
    wrong = "not-" + auth_registry.password
    config = RegistryConfig(auth_registry.url, auth=Auth(auth_registry.username, wrong))
    with (
        RegistryClient(config, env={}) as client,
        pytest.raises(AuthError, match="rejected the credentials from policy") as caught,
    ):
        client.list_tags(unique_repo)
    assert wrong not in caught.value.diagnostics()
    assert _basic(auth_registry.username, wrong) not in caught.value.diagnostics()


def _registry_key(url: str) -> str:
    return url.removeprefix("http://")


def test_basic_auth_from_docker_config(
    auth_registry: AuthRegistry, seeded_auth: Pushed, unique_repo: str, tmp_path: Path
) -> None:
    key = _registry_key(auth_registry.url)
    (tmp_path / "config.json").write_text(
        json.dumps({"auths": {key: {"auth": _basic(*auth_registry.auth)}}})
    )
    with RegistryClient(
        RegistryConfig(auth_registry.url), env={"DOCKER_CONFIG": str(tmp_path)}
    ) as client:
        assert client.credential_source == "docker-config"
        assert client.list_tags(unique_repo) == ["v1"]


def test_basic_auth_from_a_credential_helper(
    auth_registry: AuthRegistry, seeded_auth: Pushed, unique_repo: str, tmp_path: Path
) -> None:
    key = _registry_key(auth_registry.url)
    (tmp_path / "config.json").write_text(json.dumps({"credHelpers": {key: "test"}}))
    helper = tmp_path / "bin" / "docker-credential-test"
    helper.parent.mkdir()
    user, password = auth_registry.auth
    helper.write_text(
        "#!/bin/sh\n"
        f'read server; [ "$server" = "{key}" ] || exit 1\n'
        f'printf \'{{"Username":"{user}","Secret":"{password}"}}\'\n'
    )
    helper.chmod(helper.stat().st_mode | stat.S_IXUSR)
    env = {"DOCKER_CONFIG": str(tmp_path), "PATH": f"{tmp_path / 'bin'}:/usr/bin:/bin"}
    with RegistryClient(RegistryConfig(auth_registry.url), env=env) as client:
        assert client.credential_source == "credential-helper:test"
        assert client.list_tags(unique_repo) == ["v1"]


# --- TLS -----------------------------------------------------------------------------------------


@pytest.fixture
def tls_front(registry: RegistryProcess, tmp_path: Path) -> Iterator[tuple[FaultProxy, Path]]:
    """The real registry behind an https front with a self-signed certificate for 127.0.0.1."""
    pair = self_signed(tmp_path, "server", hosts=("127.0.0.1",))
    with FaultProxy(registry.url, tls=pair) as front:
        yield front, pair.cert_path


def test_tls_is_verified_by_default(tls_front: tuple[FaultProxy, Path]) -> None:
    front, _ = tls_front
    sleeps: list[float] = []
    with (
        RegistryClient(RegistryConfig(front.url), env={}, sleep=sleeps.append) as client,
        pytest.raises(TransportError, match="certificate verify failed") as caught,
    ):
        client.ping()
    assert caught.value.hint is not None and "ca_file" in caught.value.hint
    assert sleeps == []  # a certificate problem is not retried


def test_tls_with_a_ca_file(
    tls_front: tuple[FaultProxy, Path], push_image: PushImage, unique_repo: str
) -> None:
    front, ca = tls_front
    pushed = push_image(unique_repo, "v1")
    config = RegistryConfig(front.url, tls=Tls(ca_file=str(ca)))
    with RegistryClient(config, env={}, sleep=_no_sleep) as client:
        assert client.ping().status == 200
        ref = client.head_manifest(unique_repo, "v1")
        assert ref is not None and ref.digest == pushed.digest


def test_tls_verify_false_works_and_warns(
    tls_front: tuple[FaultProxy, Path], caplog: pytest.LogCaptureFixture
) -> None:
    front, _ = tls_front
    config = RegistryConfig(front.url, tls=Tls(verify=False))
    with caplog.at_level(logging.WARNING), RegistryClient(config, env={}) as client:
        assert client.ping().status == 200
    assert any("verification is DISABLED" in r.getMessage() for r in caplog.records)


def test_redirect_from_https_to_plain_http_is_refused(
    tls_front: tuple[FaultProxy, Path],
    registry: RegistryProcess,
    push_image: PushImage,
    unique_repo: str,
) -> None:
    front, ca = tls_front
    pushed = push_image(unique_repo, "v1")
    assert pushed.config_digest is not None
    location = f"{registry.url}/v2/{unique_repo}/blobs/{pushed.config_digest}"
    front.add(Fault("status", r"/blobs/", "GET", status=307, headers={"Location": location}))
    config = RegistryConfig(front.url, tls=Tls(ca_file=str(ca)))
    with (
        RegistryClient(config, env={}, sleep=_no_sleep) as client,
        pytest.raises(ProtocolError, match="https to plain http refused"),
    ):
        client.get_blob(unique_repo, pushed.config_digest)
