"""The registry client's untag endpoints against real registries: blob upload (HEAD first,
then a monolithic POST + PUT), DELETE by tag, the tag-deletion probe (which never deletes a real
tag), and the push probe (an upload started and cancelled) behind the token server."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from retention import oci
from retention.errors import AuthError, ProtocolError, RegistryError
from retention.policy.model import Auth, RegistryConfig
from retention.registry import RegistryClient, RetryPolicy
from tests.harness.faultproxy import Fault, FaultProxy
from tests.harness.probes import Capabilities
from tests.harness.registry import CraneRegistry, RegistryProcess
from tests.harness.seed import Pusher, list_tags, pull_complete, resolve
from tests.harness.tokenserver import MintingAuth, TokenServer

RETRY = RetryPolicy(attempts=2, base=0.01, cap=0.05, budget=5.0)


def _client(url: str, auth: Auth | None = None) -> RegistryClient:
    return RegistryClient(RegistryConfig(url, auth=auth), env={}, retry=RETRY)


def test_upload_blob_asks_head_first_and_uploads_once(
    registry: RegistryProcess, unique_repo: str, pusher: Pusher
) -> None:
    pusher.push_image(unique_repo, "v1")
    data = b'{"retention":"a blob of its own ' + unique_repo.encode() + b'"}'
    digest = oci.sha256_digest(data)
    mark = registry.log_mark()
    with _client(registry.url) as client:
        assert client.upload_blob(unique_repo, data) == digest
        assert client.blob_exists(unique_repo, digest)
        assert client.upload_blob(unique_repo, data) == digest  # there now: HEAD only
        assert client.get_blob(unique_repo, digest) == data
    methods = [(e.method, e.status) for e in registry.wait_for_requests(mark, 7)]
    assert methods[:5] == [("HEAD", 404), ("POST", 202), ("PUT", 201), ("HEAD", 200), ("HEAD", 200)]
    assert ("POST", 202) not in methods[3:]


def test_delete_tag_removes_the_tag_alone_on_crane(
    tag_registry: CraneRegistry, repo_prefix: str
) -> None:
    repo = f"{repo_prefix}/app"
    with Pusher(tag_registry.url) as pusher:
        image = pusher.push_image(repo, ["doomed", "kept"])
    with _client(tag_registry.url) as client:
        assert client.probe_tag_delete(repo) is True
        assert list_tags(tag_registry.url, repo) == ["doomed", "kept"]  # the probe took none
        assert client.delete_tag(repo, "doomed") is True
        assert client.delete_tag(repo, "doomed") is False  # gone already
    assert list_tags(tag_registry.url, repo) == ["kept"]
    assert resolve(tag_registry.url, repo, "kept") == image.digest
    assert pull_complete(tag_registry.url, repo, "kept")


def test_tag_delete_probe_follows_the_registry(
    registry: RegistryProcess, pusher: Pusher, unique_repo: str, capabilities: Capabilities
) -> None:
    image = pusher.push_image(unique_repo, ["a", "b"])
    with _client(registry.url) as client:
        assert client.probe_tag_delete(unique_repo) is capabilities.tag_delete
        if not capabilities.tag_delete:  # 2.8: a tag is not a digest
            with pytest.raises(RegistryError) as caught:
                client.delete_tag(unique_repo, "a")
            assert caught.value.status == 400
    assert list_tags(registry.url, unique_repo) == ["a", "b"]
    assert resolve(registry.url, unique_repo, "a") == image.digest


@pytest.fixture(scope="module")
def token_registry(
    registry_binary: str, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[tuple[TokenServer, RegistryProcess, Pusher]]:
    folder = tmp_path_factory.mktemp("untag-token")
    with (
        TokenServer(
            {"alice": "alice-pw-never-logged", "cleaner": "cleaner-pw-never-logged"},
            acl={"cleaner": {"pull", "delete"}},
            folder=folder / "signer",
        ) as server,
        RegistryProcess(
            registry_binary, root=folder / "registry", extra_config=server.registry_config()
        ) as process,
        Pusher(process.url, auth=MintingAuth(server)) as pusher,
    ):
        yield server, process, pusher


def test_push_probe_pushes_nothing_and_sees_a_refusal(
    token_registry: tuple[TokenServer, RegistryProcess, Pusher], unique_repo: str
) -> None:
    server, process, pusher = token_registry
    pusher.push_image(unique_repo, "v1")
    before = sorted((process.storage_dir / "docker/registry/v2/blobs").rglob("data"))
    server.clear()
    mark = process.log_mark()
    with _client(process.url, Auth("alice", "alice-pw-never-logged")) as client:
        assert client.probe_push(unique_repo) is True
    assert server.scopes_asked() == [
        (f"repository:{unique_repo}:pull,push",),
        (f"repository:{unique_repo}:pull,delete",),  # the cancel is a DELETE
    ]
    with _client(process.url, Auth("cleaner", "cleaner-pw-never-logged")) as client:
        assert client.probe_push(unique_repo) is False
        with pytest.raises(AuthError, match="missing push permission"):
            client.upload_blob(unique_repo, b"{}")
    after = sorted((process.storage_dir / "docker/registry/v2/blobs").rglob("data"))
    assert after == before
    answered = [(e.method, e.status) for e in process.access_log(mark) if e.status != 401]
    assert answered[:2] == [("POST", 202), ("DELETE", 204)]  # started, then cancelled


def test_an_upload_location_on_another_origin_is_refused_before_any_put(
    registry: RegistryProcess, pusher: Pusher, unique_repo: str
) -> None:
    """A hostile answer to the upload POST names another host: the blob (and the credentials
    the PUT would carry) never go there."""
    pusher.push_image(unique_repo, "v1")
    with FaultProxy(registry.url) as proxy:
        proxy.add(
            Fault(
                "header",
                path=r"/blobs/uploads/$",
                method="POST",
                header_name="Location",
                header_value="http://127.0.0.2:9/v2/stolen/blobs/uploads/1",
            )
        )
        with _client(proxy.url) as client, pytest.raises(ProtocolError, match="another origin"):
            client.upload_blob(unique_repo, b'{"never": "uploaded"}')
        methods = [r.method for r in proxy.requests]
    assert methods == ["HEAD", "POST"]
