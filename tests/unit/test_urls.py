"""The one `redact_url` and `registry_key` (retention/urls.py): what they keep, what
they drop. Pure; no registry."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from retention.urls import origin, redact_url, registry_key, shown_url, with_query

REDACT = [
    pytest.param("http://127.0.0.1:5000/v2/", "http://127.0.0.1:5000/v2/", id="path-kept"),
    pytest.param("https://u:p@r.example.com/v2/x", "https://r.example.com/v2/x", id="userinfo"),
    pytest.param("https://r.example.com/t?token=abc&x=1", "https://r.example.com/t", id="query"),
    pytest.param("https://r.example.com/t#frag", "https://r.example.com/t", id="fragment"),
    pytest.param("HTTPS://Registry.Example.COM/V2/", "https://registry.example.com/V2/", id="case"),
    pytest.param("https://r.example.com:443/v2/", "https://r.example.com/v2/", id="https-443"),
    pytest.param("http://r.example.com:80/v2/", "http://r.example.com/v2/", id="http-80"),
    pytest.param("http://r.example.com:443/", "http://r.example.com:443/", id="http-443-kept"),
    pytest.param("https://[::1]:5000/v2/", "https://[::1]:5000/v2/", id="ipv6"),
    pytest.param("  http://h:1/p  ", "http://h:1/p", id="spaces"),
]


@pytest.mark.parametrize(("url", "expected"), REDACT)
def test_redact_url(url: str, expected: str) -> None:
    assert redact_url(url) == expected


# The journal's cases (tests/unit/test_journal.py): `registry_key` is that behaviour.
KEY = [
    pytest.param("http://127.0.0.1:5000/", "http://127.0.0.1:5000", id="slash"),
    pytest.param("https://u:p@r.example.com/", "https://r.example.com", id="userinfo"),
    pytest.param("https://r.example.com:443", "https://r.example.com", id="https-default-port"),
    pytest.param("http://r.example.com:80", "http://r.example.com", id="http-default-port"),
    pytest.param("https://[::1]:5000", "https://[::1]:5000", id="ipv6"),
    pytest.param(
        "https://alice:s3cret@Registry.Example.com:443/?token=x",
        "https://registry.example.com",
        id="everything",
    ),
    pytest.param("https://r.example.com/sub//", "https://r.example.com/sub", id="sub-path"),
]


@pytest.mark.parametrize(("url", "expected"), KEY)
def test_registry_key(url: str, expected: str) -> None:
    assert registry_key(url) == expected


def test_shown_url_escapes_what_the_server_wrote() -> None:
    assert (
        shown_url("https://r.example.com/a\x1b[31mb?sig=1") == "https://r.example.com/a\\x1b[31mb"
    )


def test_origin_fills_in_the_default_port() -> None:
    assert origin("https://R.example.com/x") == ("https", "r.example.com", 443)
    assert origin("http://r.example.com:8080") == ("http", "r.example.com", 8080)


def test_with_query_sets_one_parameter_and_keeps_the_others() -> None:
    assert with_query("http://h/v2/_catalog?n=1000&last=b#x", n="500") == (
        "http://h/v2/_catalog?n=500&last=b"
    )


# "sec" never occurs in the URL's host or path, so a secret found in the output leaked.
SECRET = st.text(alphabet="abcdefghijklmnopqrstuvwxyz0123456789", max_size=20).map(
    lambda s: "sec" + s
)


@given(user=SECRET, password=SECRET, token=SECRET)
def test_no_secret_survives_redaction(user: str, password: str, token: str) -> None:
    url = f"https://{user}:{password}@registry.example.com/v2/x?token={token}#{token}"
    for shown in (redact_url(url), registry_key(url)):
        assert password not in shown and token not in shown and user not in shown
