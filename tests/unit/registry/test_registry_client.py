"""Pure tests of the registry client: Retry-After, backoff, Link headers, URLs, local refusals.

Nothing here reaches a registry: the client tests that need one are in tests/integration.
"""

from __future__ import annotations

import logging
from datetime import UTC, datetime

import pytest
from hypothesis import given
from hypothesis import strategies as st

from retention.errors import RegistryError
from retention.policy.model import Auth, RegistryConfig, Tls
from retention.registry import RegistryClient, RetryPolicy
from retention.registry.client import USER_AGENT
from retention.registry.listing import parse_link_next
from retention.registry.transport import _proxies_for, backoff_delay, parse_retry_after
from retention.registry.transport import error_details as _error_details
from retention.urls import normalise_url

NOW = datetime(2026, 3, 1, 12, 0, 0, tzinfo=UTC)


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        pytest.param("7", 7.0, id="seconds"),
        pytest.param(" 120 ", 120.0, id="seconds-padded"),
        pytest.param("0", 0.0, id="zero"),
        pytest.param("Sun, 01 Mar 2026 12:00:30 GMT", 30.0, id="http-date"),
        pytest.param("Sunday, 01-Mar-26 12:01:00 GMT", 60.0, id="rfc850-date"),
        pytest.param("Sun, 01 Mar 2026 11:00:00 GMT", 0.0, id="date-in-the-past"),
        pytest.param("-5", None, id="negative"),
        pytest.param("1.5", None, id="fraction"),
        pytest.param("soon", None, id="garbage"),
        pytest.param("", None, id="empty"),
        pytest.param(None, None, id="absent"),
    ],
)
def test_parse_retry_after(value: str | None, expected: float | None) -> None:
    assert parse_retry_after(value, NOW) == expected


def test_backoff_schedule_doubles_up_to_the_cap() -> None:
    policy = RetryPolicy(attempts=10, base=0.5, cap=4.0, budget=100.0)
    full = [backoff_delay(policy, n, lambda: 1.0) for n in range(6)]
    half = [backoff_delay(policy, n, lambda: 0.0) for n in range(6)]
    assert full == [0.5, 1.0, 2.0, 4.0, 4.0, 4.0]
    assert half == [0.25, 0.5, 1.0, 2.0, 2.0, 2.0]


@given(
    retry=st.integers(min_value=0, max_value=10_000),
    base=st.floats(min_value=0.0, max_value=10.0),
    cap=st.floats(min_value=0.0, max_value=600.0),
    jitter=st.floats(min_value=0.0, max_value=1.0, exclude_max=True),
)
def test_backoff_with_jitter_stays_within_bounds(
    retry: int, base: float, cap: float, jitter: float
) -> None:
    policy = RetryPolicy(attempts=3, base=base, cap=cap, budget=1.0)
    delay = backoff_delay(policy, retry, lambda: jitter)
    ceiling = min(cap, base * 2 ** min(retry, 62))
    assert ceiling / 2 - 1e-9 <= delay <= ceiling + 1e-9
    assert delay <= cap + 1e-9


@pytest.mark.parametrize(
    "kwargs",
    [{"attempts": 0}, {"base": -1.0}, {"cap": -1.0}, {"budget": -0.1}],
    ids=["no-attempts", "negative-base", "negative-cap", "negative-budget"],
)
def test_retry_policy_rejects_nonsense(kwargs: dict[str, float]) -> None:
    with pytest.raises(ValueError, match="RetryPolicy"):
        RetryPolicy(**kwargs)  # type: ignore[arg-type]


@pytest.mark.parametrize(
    ("header", "expected"),
    [
        pytest.param(
            '</v2/_catalog?last=b&n=2>; rel="next"', "/v2/_catalog?last=b&n=2", id="relative"
        ),
        pytest.param(
            "<https://r.example/v2/x/tags/list?last=v9&n=100>; rel=next",
            "https://r.example/v2/x/tags/list?last=v9&n=100",
            id="absolute-unquoted",
        ),
        pytest.param('</a>; rel="prev", </b>; rel="next"', "/b", id="second-link"),
        pytest.param('</a,b>; rel="next"', "/a,b", id="comma-inside-target"),
        pytest.param('</a>; title="x, y"; rel="next"', "/a", id="comma-inside-param"),
        pytest.param('</a>; rel="prev next"', "/a", id="multiple-rel-values"),
        pytest.param('</a>; REL="NEXT"', None, id="rel-value-is-case-sensitive-lowercase"),
        pytest.param('</a>; rel="prev"', None, id="no-next"),
        pytest.param('/a; rel="next"', None, id="no-angle-brackets"),
        pytest.param("", None, id="empty"),
        pytest.param(None, None, id="absent"),
    ],
)
def test_parse_link_next(header: str | None, expected: str | None) -> None:
    assert parse_link_next(header) == expected


@pytest.mark.parametrize(
    ("url", "expected"),
    [
        ("https://Registry.Example.com/", "https://registry.example.com"),
        ("http://127.0.0.1:5000", "http://127.0.0.1:5000"),
        ("https://r.example/v2/", "https://r.example"),
        ("https://r.example/prefix/", "https://r.example/prefix"),
    ],
)
def test_normalise_url(url: str, expected: str) -> None:
    assert normalise_url(url) == expected


@pytest.mark.parametrize(
    ("url", "message"),
    [
        pytest.param("ftp://r.example", "absolute http", id="scheme"),
        pytest.param("r.example:5000", "absolute http", id="no-scheme"),
        pytest.param("https://alice:hunter2@r.example", "credentials", id="userinfo"),
        pytest.param("https://r.example/?x=1", "query", id="query"),
    ],
)
def test_normalise_url_refuses(url: str, message: str) -> None:
    with pytest.raises(RegistryError, match=message) as caught:
        normalise_url(url)
    assert "hunter2" not in caught.value.diagnostics()


@pytest.mark.parametrize(
    ("body", "expected"),
    [
        pytest.param(
            b'{"errors":[{"code":"UNSUPPORTED","message":"The operation is unsupported."}]}',
            ("UNSUPPORTED", "The operation is unsupported."),
            id="registry-error",
        ),
        pytest.param(b"Method not allowed\n", (None, None), id="plain-text"),
        pytest.param(b'{"errors": []}', (None, None), id="empty-errors"),
        pytest.param(b'{"errors": [{"code": 5}]}', (None, None), id="code-not-string"),
        pytest.param(b"[1]", (None, None), id="json-list"),
    ],
)
def test_error_details(body: bytes, expected: tuple[str | None, str | None]) -> None:
    assert _error_details(body) == expected


@pytest.mark.parametrize(
    ("url", "env", "expected"),
    [
        pytest.param(
            "https://r.example/v2/",
            {"HTTPS_PROXY": "http://p:3128"},
            {"https": "http://p:3128"},
            id="https-proxy",
        ),
        pytest.param(
            "http://r.example/v2/",
            {"http_proxy": "http://p:3128"},
            {"http": "http://p:3128"},
            id="lowercase-http-proxy",
        ),
        pytest.param(
            "https://r.example/v2/", {"HTTP_PROXY": "http://p:3128"}, {}, id="wrong-scheme"
        ),
        pytest.param(
            "https://r.example/v2/",
            {"HTTPS_PROXY": "http://p:3128", "NO_PROXY": "other, .example"},
            {},
            id="no-proxy-suffix",
        ),
        pytest.param(
            "https://r.example:8443/v2/",
            {"HTTPS_PROXY": "http://p:3128", "NO_PROXY": "r.example:8443"},
            {},
            id="no-proxy-host-port",
        ),
        pytest.param(
            "https://notr.example/v2/",
            {"HTTPS_PROXY": "http://p:3128", "NO_PROXY": "r.example"},
            {"https": "http://p:3128"},
            id="no-proxy-is-not-a-substring-match",
        ),
        pytest.param(
            "https://r.example/", {"HTTPS_PROXY": "http://p", "no_proxy": "*"}, {}, id="star"
        ),
        pytest.param("https://r.example/", {}, {}, id="none"),
    ],
)
def test_proxies_from_the_injected_environment(
    url: str, env: dict[str, str], expected: dict[str, str]
) -> None:
    assert _proxies_for(url, env) == expected


# --- local refusals: no request is ever sent ---------------------------------------------------

UNUSED = "http://127.0.0.1:9"  # discard port: nothing listens; any request would fail


def _no_sleep(seconds: float) -> None:
    raise AssertionError(f"the client tried to wait {seconds}s: it sent a request")


@pytest.mark.parametrize(
    "digest",
    [
        "sha256:xyz",
        "latest",
        "sha256:" + "A" * 64,
        "sha256:" + "a" * 63,
        "md5:" + "a" * 32,
        "sha256:" + "a" * 64 + "/../x",
        "",
    ],
    ids=["short", "tag", "uppercase", "63-hex", "md5", "path-tail", "empty"],
)
def test_delete_refuses_anything_but_a_digest_before_sending(digest: str) -> None:
    with RegistryClient(RegistryConfig(UNUSED), env={}, sleep=_no_sleep) as client:
        with pytest.raises(RegistryError, match="malformed digest") as caught:
            client.delete_manifest("apps/web", digest)
        assert type(caught.value) is RegistryError


@pytest.mark.parametrize(
    ("repo", "reference"),
    [("Apps/Web", "v1"), ("../etc", "v1"), ("apps/web", "../../x"), ("apps/web", "-bad")],
    ids=["uppercase-repo", "dotdot-repo", "dotdot-ref", "leading-dash-tag"],
)
def test_invalid_names_are_refused_before_sending(repo: str, reference: str) -> None:
    with (
        RegistryClient(RegistryConfig(UNUSED), env={}, sleep=_no_sleep) as client,
        pytest.raises(RegistryError, match="invalid"),
    ):
        client.head_manifest(repo, reference)


def test_put_refuses_bytes_that_do_not_match_a_digest_reference() -> None:
    with (
        RegistryClient(RegistryConfig(UNUSED), env={}, sleep=_no_sleep) as client,
        pytest.raises(RegistryError, match="do not hash"),
    ):
        client.put_manifest("apps/web", "sha256:" + "0" * 64, b"{}", "application/json")


def test_repr_names_the_source_never_the_password() -> None:
    config = RegistryConfig(UNUSED, auth=Auth("alice", "hunter2-secret"))
    with RegistryClient(config, env={}) as client:
        assert repr(client) == f"RegistryClient(url='{UNUSED}', credential_source='policy')"
        assert "hunter2" not in repr(client)
        assert "hunter2" not in repr(client._credentials)
        assert client.url == UNUSED
    assert USER_AGENT.startswith("retention/")


def test_anonymous_without_any_credentials() -> None:
    with RegistryClient(RegistryConfig(UNUSED), env={}) as client:
        assert client.credential_source == "anonymous"


def test_verify_false_warns_on_every_construction(caplog: pytest.LogCaptureFixture) -> None:
    config = RegistryConfig("https://r.example", tls=Tls(verify=False))
    with caplog.at_level(logging.WARNING, logger="retention.registry.client"):
        for _ in range(2):
            RegistryClient(config, env={}).close()
    warnings = [r for r in caplog.records if "verification is DISABLED" in r.getMessage()]
    assert len(warnings) == 2
    assert all(r.levelno == logging.WARNING for r in warnings)


def test_verify_true_does_not_warn(caplog: pytest.LogCaptureFixture) -> None:
    with caplog.at_level(logging.WARNING):
        RegistryClient(RegistryConfig("https://r.example"), env={}).close()
    assert not caplog.records


def test_missing_ca_file_is_an_error() -> None:
    config = RegistryConfig("https://r.example", tls=Tls(ca_file="/nonexistent/ca.pem"))
    with pytest.raises(RegistryError, match="ca_file"):
        RegistryClient(config, env={})
