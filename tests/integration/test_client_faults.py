"""The registry client under injected faults: a loopback proxy in front of the real registry.

The client must retry what is safe (connection errors, timeouts, truncated bodies, 429/502/503/
504, honouring Retry-After within a budget), fail clearly and at once on the rest, and never
return a digest that is not the sha256 of the bytes it received. Sleeps are injected: no test
waits for a backoff.
"""

from __future__ import annotations

import email.utils
import json
from bisect import bisect_right
from collections.abc import Callable, Iterator
from datetime import UTC, datetime, timedelta
from typing import Literal
from urllib.parse import parse_qsl, urlsplit

import pytest

from retention import oci
from retention.errors import (
    AuthError,
    DeleteDisabledError,
    ProtocolError,
    RegistryError,
    TransportError,
)
from retention.policy.model import RegistryConfig
from retention.registry import RegistryClient, RetryPolicy
from tests.harness.faultproxy import Exchange, Fault, FaultProxy, RecordedRequest, Upstream
from tests.harness.registry import RegistryProcess
from tests.harness.seed import Pushed, Pusher

PushImage = Callable[..., Pushed]
RETRY = RetryPolicy(attempts=4, base=0.01, cap=0.08, budget=300.0)


@pytest.fixture
def proxy(registry: RegistryProcess) -> Iterator[FaultProxy]:
    with FaultProxy(registry.url) as running:
        yield running


@pytest.fixture
def sleeps() -> list[float]:
    """The waits the client asked for, in order (the injected `sleep` records, never sleeps)."""
    return []


@pytest.fixture
def client(proxy: FaultProxy, sleeps: list[float]) -> Iterator[RegistryClient]:
    with RegistryClient(
        RegistryConfig(proxy.url),
        env={},
        retry=RETRY,
        sleep=sleeps.append,
        rand=lambda: 0.5,
        timeout=(5.0, 10.0),
    ) as bound:
        yield bound


@pytest.fixture
def v1(push_image: PushImage, unique_repo: str) -> Pushed:
    """An image pushed to the test's repository as `v1`."""
    return push_image(unique_repo, "v1")


def _manifest_path(repo: str, ref: str) -> str:
    return rf"^/v2/{repo}/manifests/{ref}$"


# --- 429 and Retry-After -------------------------------------------------------------------------


def test_429_with_retry_after_seconds_waits_that_long(
    client: RegistryClient, proxy: FaultProxy, sleeps: list[float], v1: Pushed, unique_repo: str
) -> None:
    path = _manifest_path(unique_repo, "v1")
    proxy.add(Fault("status", path, "HEAD", status=429, headers={"Retry-After": "3"}))
    ref = client.head_manifest(unique_repo, "v1")
    assert ref is not None and ref.digest == v1.digest
    assert sleeps == [3.0]
    assert proxy.count("HEAD", path) == 2


def test_429_with_retry_after_http_date(
    client: RegistryClient, proxy: FaultProxy, sleeps: list[float], v1: Pushed, unique_repo: str
) -> None:
    when = email.utils.format_datetime(datetime.now(UTC) + timedelta(seconds=120), usegmt=True)
    proxy.add(Fault("status", r"/tags/list", "GET", status=429, headers={"Retry-After": when}))
    assert client.list_tags(unique_repo) == ["v1"]
    (waited,) = sleeps
    assert 100.0 < waited <= 120.0  # the date, read as seconds from now (not a timing check)


def test_retry_after_beyond_the_budget_fails_at_once(
    client: RegistryClient, proxy: FaultProxy, sleeps: list[float], unique_repo: str
) -> None:
    proxy.add(
        Fault(
            "status",
            r"/tags/list",
            "GET",
            status=429,
            times=None,
            headers={"Retry-After": "86400"},
            body=b"Too Many Requests",
        )
    )
    with pytest.raises(TransportError, match="rate limited") as caught:
        client.list_tags(unique_repo)
    assert caught.value.status == 429
    assert sleeps == []
    assert proxy.count("GET", r"/tags/list") == 1


# --- 5xx ---------------------------------------------------------------------------------------


@pytest.mark.parametrize("status", [502, 503, 504])
def test_5xx_bursts_are_retried_with_bounded_backoff(
    status: int,
    client: RegistryClient,
    proxy: FaultProxy,
    sleeps: list[float],
    v1: Pushed,
    unique_repo: str,
) -> None:
    path = _manifest_path(unique_repo, "v1")
    proxy.add(Fault("status", path, "GET", status=status, times=3))
    fetched = client.get_manifest(unique_repo, "v1")
    assert fetched is not None and fetched.digest == v1.digest
    assert proxy.count("GET", path) == 4
    # rand() is 0.5: retry n waits 0.75 * min(cap, base * 2**n)
    assert sleeps == pytest.approx([0.0075, 0.015, 0.03])


def test_persistent_503_gives_up_after_the_attempts(
    client: RegistryClient, proxy: FaultProxy, sleeps: list[float], v1: Pushed, unique_repo: str
) -> None:
    path = _manifest_path(unique_repo, "v1")
    proxy.add(
        Fault(
            "status",
            path,
            "GET",
            status=503,
            times=None,
            body=b'{"errors":[{"code":"UNAVAILABLE","message":"service unavailable"}]}',
        )
    )
    with pytest.raises(TransportError, match="after 4 attempt") as caught:
        client.get_manifest(unique_repo, "v1")
    assert (caught.value.status, caught.value.code) == (503, "UNAVAILABLE")
    assert proxy.count("GET", path) == RETRY.attempts
    assert len(sleeps) == RETRY.attempts - 1


@pytest.mark.parametrize(
    ("status", "error"),
    [
        pytest.param(400, RegistryError, id="400"),
        pytest.param(403, AuthError, id="403"),
        pytest.param(405, RegistryError, id="405"),
        pytest.param(500, TransportError, id="500"),
    ],
)
def test_no_retry_on_client_errors_or_500(
    status: int,
    error: type[RegistryError],
    client: RegistryClient,
    proxy: FaultProxy,
    sleeps: list[float],
    v1: Pushed,
    unique_repo: str,
) -> None:
    path = _manifest_path(unique_repo, "v1")
    proxy.add(Fault("status", path, "GET", status=status, times=None))
    with pytest.raises(error) as caught:
        client.get_manifest(unique_repo, "v1")
    assert caught.value.status == status
    assert proxy.count("GET", path) == 1
    assert sleeps == []


def test_404_is_none_without_retry(
    client: RegistryClient, proxy: FaultProxy, sleeps: list[float], unique_repo: str
) -> None:
    assert client.head_manifest(unique_repo, "missing") is None
    assert client.get_manifest(unique_repo, "missing") is None
    assert proxy.count("HEAD", r"/manifests/missing") == 1
    assert proxy.count("GET", r"/manifests/missing") == 1
    assert sleeps == []


# --- connection faults ---------------------------------------------------------------------------


def test_connection_reset_is_retried(
    client: RegistryClient, proxy: FaultProxy, sleeps: list[float], v1: Pushed, unique_repo: str
) -> None:
    path = _manifest_path(unique_repo, "v1")
    proxy.add(Fault("reset", path, "GET", times=2))
    fetched = client.get_manifest(unique_repo, "v1")
    assert fetched is not None and fetched.digest == v1.digest
    assert proxy.count("GET", path) == 3
    assert len(sleeps) == 2


def test_connection_resets_forever_end_in_a_transport_error(
    client: RegistryClient, proxy: FaultProxy, unique_repo: str
) -> None:
    proxy.add(Fault("reset", r"/tags/list", "GET", times=None))
    with pytest.raises(TransportError, match="connection error") as caught:
        client.list_tags(unique_repo)
    assert caught.value.url is not None and "?" not in caught.value.url
    assert proxy.count("GET", r"/tags/list") == RETRY.attempts


def test_slow_answer_beyond_the_read_timeout_is_retried(
    proxy: FaultProxy, sleeps: list[float], push_image: PushImage, unique_repo: str
) -> None:
    push_image(unique_repo, ["a", "b"])
    proxy.add(Fault("delay", r"/tags/list", "GET", delay=4.0))
    with RegistryClient(
        RegistryConfig(proxy.url), env={}, retry=RETRY, sleep=sleeps.append, timeout=(5.0, 1.0)
    ) as client:
        assert client.list_tags(unique_repo) == ["a", "b"]
    assert proxy.count("GET", r"/tags/list") == 2
    assert len(sleeps) == 1


def test_truncated_manifest_is_retried_never_returned(
    client: RegistryClient, proxy: FaultProxy, push_image: PushImage, unique_repo: str
) -> None:
    pushed = push_image(unique_repo, "v1", kind="oci")
    path = _manifest_path(unique_repo, "v1")
    proxy.add(Fault("truncate", path, "GET", keep=40))
    fetched = client.get_manifest(unique_repo, "v1")
    assert fetched is not None
    assert fetched.raw == pushed.manifest
    assert fetched.digest == pushed.digest == oci.sha256_digest(fetched.raw)
    assert proxy.count("GET", path) == 2


def test_truncated_blob_is_retried(
    client: RegistryClient, proxy: FaultProxy, v1: Pushed, unique_repo: str
) -> None:
    assert v1.config_digest is not None
    path = rf"/blobs/{v1.config_digest}$"
    proxy.add(Fault("truncate", path, "GET", keep=5))
    blob = client.get_blob(unique_repo, v1.config_digest)
    assert oci.sha256_digest(blob) == v1.config_digest
    assert proxy.count("GET", path) == 2


# --- digests -------------------------------------------------------------------------------------

OTHER_DIGEST = "sha256:" + "ab" * 32


def _digest_header(method: str | None, value: str | None) -> Fault:
    """Every manifest answer to `method` (None: any) with its Docker-Content-Digest set to
    `value` (None: removed)."""
    return Fault(
        "header",
        r"/manifests/",
        method,
        times=None,
        header_name="Docker-Content-Digest",
        header_value=value,
    )


@pytest.mark.parametrize("by", ["tag", "digest"])
def test_wrong_docker_content_digest_is_a_protocol_error(
    by: str, client: RegistryClient, proxy: FaultProxy, v1: Pushed, unique_repo: str
) -> None:
    ref = "v1" if by == "tag" else v1.digest
    proxy.add(_digest_header("GET", OTHER_DIGEST))
    with pytest.raises(ProtocolError, match="does not match the body"):
        client.get_manifest(unique_repo, ref)


def test_head_by_digest_answered_for_another_digest_is_a_protocol_error(
    client: RegistryClient, proxy: FaultProxy, v1: Pushed, unique_repo: str
) -> None:
    proxy.add(_digest_header("HEAD", OTHER_DIGEST))
    with pytest.raises(ProtocolError, match="answered for"):
        client.head_manifest(unique_repo, v1.digest)


def test_missing_docker_content_digest_trusts_the_computed_digest(
    client: RegistryClient, proxy: FaultProxy, push_image: PushImage, unique_repo: str
) -> None:
    pushed = push_image(unique_repo, "v1", kind="oci-index")
    proxy.add(_digest_header(None, None))
    ref = client.head_manifest(unique_repo, "v1")
    assert ref is not None
    assert (ref.digest, ref.media_type, ref.size) == (
        pushed.digest,
        oci.OCI_INDEX,
        len(pushed.manifest),
    )
    # without the header, HEAD cannot name the digest: the client fetched and hashed the bytes
    assert proxy.count("GET", _manifest_path(unique_repo, "v1")) == 1
    fetched = client.get_manifest(unique_repo, "v1")
    assert fetched is not None and fetched.digest == pushed.digest


def test_body_that_does_not_hash_to_the_digest_asked_for(
    client: RegistryClient, proxy: FaultProxy, push_image: PushImage, unique_repo: str
) -> None:
    wanted = push_image(unique_repo, "v1")
    other = push_image(unique_repo, "v2")

    def swap(request: RecordedRequest, upstream: Upstream) -> Exchange:
        real = upstream(path=f"/v2/{unique_repo}/manifests/v2")
        return real.with_header("Docker-Content-Digest", None)

    proxy.add(Fault("respond", _manifest_path(unique_repo, wanted.digest), "GET", handler=swap))
    with pytest.raises(ProtocolError, match=f"hashes to {other.digest}"):
        client.get_manifest(unique_repo, wanted.digest)


def test_content_type_disagreeing_with_the_body_is_a_protocol_error(
    client: RegistryClient, proxy: FaultProxy, push_image: PushImage, unique_repo: str
) -> None:
    push_image(unique_repo, "v1", kind="docker")
    proxy.add(
        Fault(
            "header",
            r"/manifests/v1$",
            "GET",
            header_name="Content-Type",
            header_value=oci.OCI_MANIFEST,
        )
    )
    with pytest.raises(ProtocolError, match="disagrees with the body's mediaType"):
        client.get_manifest(unique_repo, "v1")


SCHEMA1 = json.dumps(
    {
        "schemaVersion": 1,
        "name": "x/y",
        "tag": "v1",
        "architecture": "amd64",
        "fsLayers": [],
        "history": [],
        "signatures": [],
    }
).encode()


def test_schema1_is_an_explicit_unsupported_error(
    client: RegistryClient, proxy: FaultProxy, unique_repo: str
) -> None:
    headers = (("Content-Type", oci.DOCKER_SCHEMA1_SIGNED),)
    proxy.add(
        Fault(
            "respond",
            r"/manifests/old$",
            None,
            times=None,
            handler=lambda _r, _u: Exchange(200, headers, SCHEMA1),
        )
    )
    with pytest.raises(ProtocolError, match="schema 1"):
        client.get_manifest(unique_repo, "old")
    with pytest.raises(ProtocolError, match="schema 1"):
        client.head_manifest(unique_repo, "old")


def test_oversized_manifest_is_refused(
    client: RegistryClient, proxy: FaultProxy, unique_repo: str
) -> None:
    huge = b'{"schemaVersion": 2, "padding": "' + b"x" * (5 * 1024 * 1024) + b'"}'
    headers = (("Content-Type", oci.OCI_MANIFEST),)
    proxy.add(
        Fault(
            "respond",
            r"/manifests/huge$",
            "GET",
            handler=lambda _r, _u: Exchange(200, headers, huge),
        )
    )
    with pytest.raises(ProtocolError, match="limit"):
        client.get_manifest(unique_repo, "huge")


# --- DELETE and PUT ------------------------------------------------------------------------------


def test_delete_whose_answer_was_lost_is_done_when_the_retry_answers_404(
    client: RegistryClient, proxy: FaultProxy, pusher: Pusher, v1: Pushed, unique_repo: str
) -> None:
    path = _manifest_path(unique_repo, v1.digest)
    proxy.add(Fault("drop_response", path, "DELETE"))
    assert client.delete_manifest(unique_repo, v1.digest) is False  # 404: already gone
    assert proxy.count("DELETE", path) == 2
    assert pusher.resolve(unique_repo, "v1") is None


def test_delete_retried_on_503(
    client: RegistryClient, proxy: FaultProxy, pusher: Pusher, v1: Pushed, unique_repo: str
) -> None:
    proxy.add(Fault("status", r"/manifests/sha256:", "DELETE", status=503))
    assert client.delete_manifest(unique_repo, v1.digest) is True
    assert pusher.resolve(unique_repo, "v1") is None


@pytest.mark.parametrize(
    ("status", "body", "error", "message"),
    [
        pytest.param(
            405,
            b"Method not allowed\n",
            DeleteDisabledError,
            "storage.delete.enabled: true",
            id="bare-405",
        ),
        pytest.param(
            403,
            b'{"errors":[{"code":"DENIED","message":"denied"}]}',
            AuthError,
            "missing delete permission",
            id="403-denied",
        ),
        pytest.param(
            400,
            b'{"errors":[{"code":"DIGEST_INVALID","message":"bad"}]}',
            RegistryError,
            "HTTP 400",
            id="400",
        ),
    ],
)
def test_delete_errors_are_mapped_and_never_retried(
    status: int,
    body: bytes,
    error: type[RegistryError],
    message: str,
    client: RegistryClient,
    proxy: FaultProxy,
    sleeps: list[float],
    v1: Pushed,
    unique_repo: str,
) -> None:
    proxy.add(
        Fault("status", r"/manifests/sha256:", "DELETE", status=status, body=body, times=None)
    )
    with pytest.raises(error, match=message) as caught:
        client.delete_manifest(unique_repo, v1.digest)
    assert type(caught.value) is error
    assert proxy.count("DELETE", r"/manifests/") == 1
    assert sleeps == []


def test_put_manifest_is_retried_on_503(
    client: RegistryClient, proxy: FaultProxy, pusher: Pusher, v1: Pushed, unique_repo: str
) -> None:
    proxy.add(Fault("status", r"/manifests/v2$", "PUT", status=503, times=2))
    digest = client.put_manifest(unique_repo, "v2", v1.manifest, v1.media_type)
    assert digest == v1.digest
    assert pusher.resolve(unique_repo, "v2") == v1.digest
    assert proxy.count("PUT", r"/manifests/v2$") == 3


# --- pagination, rewritten by the proxy ----------------------------------------------------------

Mode = Literal["relative", "absolute", "loop", "stuck", "fail-page-3", "404-page-2", "foreign"]


def _tag_pages(repo: str, size: int, mode: Mode, base: str = "") -> Callable[..., Exchange]:
    """Serve the real tags of `repo` as sorted pages of `size`, linked as `mode` says."""

    def handler(request: RecordedRequest, upstream: Upstream) -> Exchange:
        real = upstream(path=f"/v2/{repo}/tags/list")
        tags = sorted(json.loads(real.body)["tags"])
        query = dict(parse_qsl(urlsplit(request.path).query))
        last = query.get("last")
        start = 0 if last is None else bisect_right(tags, last)
        if "cursor" in query:  # an opaque cursor, as some registries use instead of `last`
            start = int(query["cursor"])
        page_number = start // size + 1
        if mode == "fail-page-3" and page_number == 3:
            return Exchange(500, (), b'{"errors":[{"code":"UNKNOWN","message":"boom"}]}')
        if mode == "404-page-2" and page_number == 2:
            body = b'{"errors":[{"code":"NAME_UNKNOWN","message":"repository name not known"}]}'
            return Exchange(404, (("Content-Type", "application/json"),), body)
        page = tags[start : start + size]
        headers = [("Content-Type", "application/json")]
        if start + size < len(tags):
            target = f"/v2/{repo}/tags/list?n={size}&last={page[-1]}"
            if mode == "absolute":
                target = base + target
            elif mode == "loop":
                target = f"/v2/{repo}/tags/list?cursor={size}"  # always page 2 again
            elif mode == "stuck":
                target = f"/v2/{repo}/tags/list?n={size + page_number}&last={tags[0]}"
            elif mode == "foreign":
                target = f"http://localhost:1{target}"
            headers.append(("Link", f'<{target}>; rel="next"'))
        return Exchange(200, tuple(headers), json.dumps({"name": repo, "tags": page}).encode())

    return handler


TAGS = [f"t{i:02d}" for i in range(11)]


@pytest.mark.parametrize("mode", ["relative", "absolute"])
def test_tags_follow_link_pages(
    mode: Mode,
    client: RegistryClient,
    proxy: FaultProxy,
    push_image: PushImage,
    unique_repo: str,
) -> None:
    push_image(unique_repo, TAGS)
    proxy.add(
        Fault(
            "respond",
            r"/tags/list",
            "GET",
            times=None,
            handler=_tag_pages(unique_repo, 3, mode, proxy.url),
        )
    )
    assert client.list_tags(unique_repo) == TAGS
    pages = [r.path for r in proxy.requests if "/tags/list" in r.path]
    assert len(pages) == 4  # 3 + 3 + 3 + 2
    assert dict(parse_qsl(urlsplit(pages[0]).query)) == {"n": "1000"}


@pytest.mark.parametrize(
    ("mode", "error", "message"),
    [
        pytest.param("loop", ProtocolError, "loops", id="looping-link"),
        pytest.param("stuck", ProtocolError, "does not advance", id="last-does-not-advance"),
        pytest.param("fail-page-3", TransportError, "page 3", id="error-on-page-3"),
        pytest.param("404-page-2", RegistryError, "page 2", id="404-on-page-2"),
        pytest.param("foreign", ProtocolError, "points elsewhere", id="link-to-another-host"),
    ],
)
def test_broken_pagination_is_an_error_never_a_short_list(
    mode: Mode,
    error: type[RegistryError],
    message: str,
    client: RegistryClient,
    proxy: FaultProxy,
    push_image: PushImage,
    unique_repo: str,
) -> None:
    push_image(unique_repo, TAGS)
    proxy.add(
        Fault("respond", r"/tags/list", "GET", times=None, handler=_tag_pages(unique_repo, 3, mode))
    )
    with pytest.raises(error, match=message):
        client.list_tags(unique_repo)


def test_catalog_page_error_midway_raises_after_the_names_already_seen(
    fresh_registry: RegistryProcess, fresh_pusher: Pusher, sleeps: list[float]
) -> None:
    for name in ("a/one", "b/two", "c/three"):
        fresh_pusher.push_image(name, "v1")
    with (
        FaultProxy(fresh_registry.url) as proxy,
        RegistryClient(
            RegistryConfig(proxy.url), env={}, retry=RETRY, sleep=sleeps.append, page_size=1
        ) as client,
    ):
        proxy.add(Fault("status", r"/_catalog\?.*last=b", "GET", status=502, times=None))
        seen: list[str] = []
        with pytest.raises(TransportError, match="after 4 attempt"):
            seen.extend(client.catalog())
        assert seen == ["a/one", "b/two"]
