"""Pure tests of registry auth: challenge parsing, token requests, tokens, credential sources."""

from __future__ import annotations

import base64
import json
import stat
from pathlib import Path
from urllib.parse import parse_qsl, urlsplit

import pytest
from hypothesis import given
from hypothesis import strategies as st

from retention.errors import AuthError
from retention.registry.auth import (
    CATALOG_SCOPE,
    Challenge,
    Token,
    TokenCache,
    build_token_request,
    parse_challenges,
    parse_token_response,
    repository_scope,
)
from retention.registry.credentials import (
    AuthEntry,
    Credentials,
    docker_config_path,
    normalise_host_key,
    parse_docker_config,
    registry_host_key,
    resolve_credentials,
)

SECRET = "correct-horse-battery-staple"

# --- WWW-Authenticate ------------------------------------------------------------------------

CHALLENGES = [
    pytest.param(
        'Bearer realm="https://auth.example.com/token",service="registry.example.com",'
        'scope="repository:apps/web:pull,push"',
        [
            (
                "bearer",
                {
                    "realm": "https://auth.example.com/token",
                    "service": "registry.example.com",
                    "scope": "repository:apps/web:pull,push",
                },
            )
        ],
        id="bearer-quoted-scope-with-comma",
    ),
    pytest.param(
        'Basic realm="Registry Realm"',
        [("basic", {"realm": "Registry Realm"})],
        id="basic",
    ),
    pytest.param(
        'Basic realm="a", Bearer realm="https://t/x",service=reg',
        [("basic", {"realm": "a"}), ("bearer", {"realm": "https://t/x", "service": "reg"})],
        id="two-challenges-one-header",
    ),
    pytest.param(
        'BEARER Realm="r" , Service = "s"',
        [("bearer", {"realm": "r", "service": "s"})],
        id="case-and-whitespace",
    ),
    pytest.param(
        r'Bearer realm="say \"hi\", then go",error="insufficient_scope"',
        [("bearer", {"realm": 'say "hi", then go', "error": "insufficient_scope"})],
        id="escaped-quotes-and-comma",
    ),
    pytest.param(
        'Bearer realm="r",scope="repository:a:pull repository:b:pull"',
        [("bearer", {"realm": "r", "scope": "repository:a:pull repository:b:pull"})],
        id="space-separated-scopes",
    ),
    pytest.param(
        "Negotiate abc+/==, Basic realm=x",
        [("negotiate", {"token68": "abc+/=="}), ("basic", {"realm": "x"})],
        id="token68-then-basic",
    ),
    pytest.param("Bearer", [("bearer", {})], id="scheme-only"),
    pytest.param(
        ", Bearer realm=x,, service=y ,",
        [("bearer", {"realm": "x", "service": "y"})],
        id="empty-list-elements",
    ),
    pytest.param('Bearer realm=""', [("bearer", {"realm": ""})], id="empty-quoted-value"),
    pytest.param("", [], id="empty-header"),
]


@pytest.mark.parametrize(("header", "expected"), CHALLENGES)
def test_parse_challenges(header: str, expected: list[tuple[str, dict[str, str]]]) -> None:
    got = [(c.scheme, dict(c.params)) for c in parse_challenges(header)]
    assert got == expected


@pytest.mark.parametrize(
    "header",
    [
        pytest.param('Bearer realm="unterminated', id="unterminated-quote"),
        pytest.param("=value", id="starts-with-equals"),
        pytest.param('"quoted"', id="starts-with-quote"),
        pytest.param("Bearer realm=x junk", id="junk-after-param"),
        pytest.param("Bearer realm=x, =y", id="param-without-name"),
        pytest.param("Bearer realm=@", id="bad-token-char"),
    ],
)
def test_parse_challenges_rejects_malformed(header: str) -> None:
    with pytest.raises(AuthError, match="malformed WWW-Authenticate"):
        parse_challenges(header)


_NAMES = st.text(alphabet="abcdefghijklmnopqrstuvwxyz_-", min_size=1, max_size=8)
_VALUES = st.text(alphabet=st.characters(min_codepoint=0x20, max_codepoint=0x7E), max_size=40)


@given(
    challenges=st.lists(
        st.tuples(
            st.sampled_from(["Bearer", "Basic", "Digest"]),
            st.dictionaries(_NAMES, _VALUES, max_size=4),
        ),
        min_size=1,
        max_size=3,
    )
)
def test_quoted_challenges_round_trip(challenges: list[tuple[str, dict[str, str]]]) -> None:
    def quote(value: str) -> str:
        return '"' + value.replace("\\", "\\\\").replace('"', '\\"') + '"'

    header = ", ".join(
        f"{scheme} " + ",".join(f"{k}={quote(v)}" for k, v in params.items()) if params else scheme
        for scheme, params in challenges
    )
    parsed = parse_challenges(header)
    assert [(c.scheme, dict(c.params)) for c in parsed] == [
        (scheme.lower(), params) for scheme, params in challenges
    ]


def test_challenge_param_lookup() -> None:
    (challenge,) = parse_challenges('Bearer Realm="r",service="s"')
    assert challenge.param("realm") == "r"
    assert challenge.param("scope") is None


# --- token requests ----------------------------------------------------------------------------


def _bearer(realm: str, service: str | None = "reg") -> Challenge:
    params = [("realm", realm)] + ([("service", service)] if service else [])
    return Challenge("bearer", tuple(params))


def test_token_request_url_has_service_and_one_scope_parameter_per_scope() -> None:
    request = build_token_request(
        _bearer("https://auth.example.com/token"),
        (repository_scope("apps/web", ("pull",)), CATALOG_SCOPE),
        "https://registry.example.com",
    )
    parts = urlsplit(request.url())
    assert (parts.scheme, parts.netloc, parts.path) == ("https", "auth.example.com", "/token")
    assert parse_qsl(parts.query) == [
        ("service", "reg"),
        ("scope", "repository:apps/web:pull"),
        ("scope", "registry:catalog:*"),
    ]


def test_token_request_keeps_an_existing_realm_query_and_omits_missing_parts() -> None:
    request = build_token_request(
        _bearer("https://auth.example.com/token?account=x", service=None),
        (),
        "https://registry.example.com",
    )
    assert request.url() == "https://auth.example.com/token?account=x"
    scoped = build_token_request(
        _bearer("https://auth.example.com/token?account=x", service=None),
        ("repository:a:pull",),
        "https://registry.example.com",
    )
    assert scoped.url() == "https://auth.example.com/token?account=x&scope=repository%3Aa%3Apull"


def test_token_request_cache_key_distinguishes_scopes() -> None:
    pull = build_token_request(_bearer("https://a/t"), ("repository:x:pull",), "https://r")
    delete = build_token_request(_bearer("https://a/t"), ("repository:x:pull,delete",), "https://r")
    assert pull.key() != delete.key()
    assert pull.key() == ("https://a/t", "reg", ("repository:x:pull",))


def test_refresh_form_for_identity_tokens() -> None:
    request = build_token_request(_bearer("https://a/t"), ("repository:x:pull",), "https://r")
    assert request.refresh_form("rt") == {
        "grant_type": "refresh_token",
        "refresh_token": "rt",
        "client_id": "retention",
        "service": "reg",
        "scope": "repository:x:pull",
    }


@pytest.mark.parametrize(
    ("realm", "registry_url"),
    [
        pytest.param("https://auth.other.example/token", "https://reg.example", id="https-other"),
        pytest.param(
            "https://auth.other.example/token", "http://reg.example", id="https-from-http"
        ),
        pytest.param("http://127.0.0.1:5001/token", "http://127.0.0.1:5000", id="http-same-host"),
        pytest.param("https://reg.example:8443/token", "https://reg.example", id="https-same-host"),
    ],
)
def test_realm_accepted(realm: str, registry_url: str) -> None:
    assert build_token_request(_bearer(realm), (), registry_url).realm == realm


@pytest.mark.parametrize(
    ("realm", "registry_url", "message"),
    [
        pytest.param(
            "http://evil.example/token",
            "http://reg.example",
            "another host over plain http",
            id="http-other-host",
        ),
        pytest.param(
            "http://localhost:5001/token",
            "http://127.0.0.1:5000",
            "another host over plain http",
            id="http-localhost-is-another-host",
        ),
        pytest.param(
            "http://reg.example/token",
            "https://reg.example",
            "plain http for an https registry",
            id="downgrade",
        ),
        pytest.param("ftp://reg.example/token", "https://reg.example", "absolute http", id="ftp"),
        pytest.param("/token", "https://reg.example", "absolute http", id="relative"),
        pytest.param(
            "https://u:p@auth.example/token", "https://reg.example", "credentials", id="userinfo"
        ),
    ],
)
def test_realm_refused(realm: str, registry_url: str, message: str) -> None:
    with pytest.raises(AuthError, match=message):
        build_token_request(_bearer(realm), (), registry_url)


def test_challenge_without_realm_or_not_bearer_is_refused() -> None:
    with pytest.raises(AuthError, match="no realm"):
        build_token_request(Challenge("bearer", (("service", "s"),)), (), "https://r")
    with pytest.raises(AuthError, match="not a Bearer"):
        build_token_request(Challenge("basic", (("realm", "x"),)), (), "https://r")


# --- token responses and the cache -------------------------------------------------------------


@pytest.mark.parametrize(
    ("body", "value", "ttl"),
    [
        pytest.param({"token": "t1", "expires_in": 300}, "t1", 300, id="token"),
        pytest.param({"access_token": "t2", "expires_in": 120}, "t2", 120, id="access-token"),
        pytest.param({"token": "t3"}, "t3", 60, id="default-60s"),
        pytest.param({"token": "t4", "expires_in": 5}, "t4", 60, id="never-less-than-60s"),
        pytest.param({"token": "t5", "expires_in": "300"}, "t5", 60, id="string-ttl-ignored"),
        pytest.param({"token": "", "access_token": "t6"}, "t6", 60, id="empty-token-falls-back"),
    ],
)
def test_parse_token_response(body: dict[str, object], value: str, ttl: int) -> None:
    token = parse_token_response(json.dumps(body).encode(), now=1000.0)
    assert token.value == value
    assert token.expires_at == pytest.approx(1000.0 + ttl - 10.0)


@pytest.mark.parametrize(
    "body",
    [
        pytest.param(b"not json", id="not-json"),
        pytest.param(b"[]", id="not-object"),
        pytest.param(b'{"expires_in": 60}', id="no-token"),
        pytest.param(b'{"token": 42}', id="token-not-string"),
    ],
)
def test_parse_token_response_rejects(body: bytes) -> None:
    with pytest.raises(AuthError, match="token"):
        parse_token_response(body, now=0.0)


def test_token_cache_expires_and_invalidates_only_the_stale_value() -> None:
    now = [100.0]
    cache = TokenCache(clock=lambda: now[0])
    key = ("https://a/t", "reg", ("repository:x:pull",))
    cache.put(key, Token("one", expires_at=150.0))
    assert cache.get(key) == Token("one", expires_at=150.0)
    cache.invalidate(key, "another-value")  # a concurrent refresh already replaced it
    assert cache.get(key) is not None
    now[0] = 150.0
    assert cache.get(key) is None  # expired
    cache.put(key, Token("two", expires_at=500.0))
    cache.invalidate(key, "two")
    assert cache.get(key) is None


# --- docker config.json --------------------------------------------------------------------------


def _b64(text: str) -> str:
    return base64.b64encode(text.encode()).decode()


@pytest.mark.parametrize(
    ("key", "expected"),
    [
        pytest.param("registry.example.com", "registry.example.com", id="host"),
        pytest.param("Registry.Example.com:5000", "registry.example.com:5000", id="host-port"),
        pytest.param("https://registry.example.com/v1/", "registry.example.com", id="url"),
        pytest.param("https://index.docker.io/v1/", "index.docker.io", id="hub-url"),
        pytest.param("docker.io", "index.docker.io", id="hub-short"),
        pytest.param("registry-1.docker.io", "index.docker.io", id="hub-api-host"),
        pytest.param("registry.example.com:443", "registry.example.com", id="default-port"),
    ],
)
def test_normalise_host_key(key: str, expected: str) -> None:
    assert normalise_host_key(key) == expected


@pytest.mark.parametrize(
    ("url", "expected"),
    [
        ("https://registry.example.com", "registry.example.com"),
        ("http://127.0.0.1:5000", "127.0.0.1:5000"),
        ("https://registry-1.docker.io", "index.docker.io"),
        ("http://[::1]:5000", "[::1]:5000"),
    ],
)
def test_registry_host_key(url: str, expected: str) -> None:
    assert registry_host_key(url) == expected


def test_parse_docker_config_reads_every_entry_kind() -> None:
    text = json.dumps(
        {
            "auths": {
                "https://index.docker.io/v1/": {"auth": _b64(f"hubuser:{SECRET}")},
                "reg.example:5000": {"username": "u2", "password": "p2"},
                "idp.example": {"identitytoken": "refresh-me"},
                "empty.example": {},
                "desktop.example": {"auth": ""},
            },
            "credsStore": "desktop",
            "credHelpers": {"gcr.io": "gcloud", "bad.example": 7},
        }
    )
    config = parse_docker_config(text, "/cfg/config.json")
    assert config.auth_for("index.docker.io") == AuthEntry("hubuser", SECRET)
    assert config.auth_for("reg.example:5000") == AuthEntry("u2", "p2")
    assert config.auth_for("idp.example") == AuthEntry(None, None, "refresh-me")
    assert config.auth_for("empty.example") is None
    assert config.auth_for("desktop.example") is None
    assert config.creds_store == "desktop"
    assert config.helper_for("gcr.io") == "gcloud"
    assert config.helper_for("bad.example") is None
    assert SECRET not in repr(config)


@pytest.mark.parametrize(
    ("text", "message"),
    [
        pytest.param("{not json", "not valid JSON", id="not-json"),
        pytest.param("[]", "not a JSON object", id="not-object"),
        pytest.param('{"auths": []}', "'auths' is not an object", id="auths-list"),
        pytest.param(
            json.dumps({"auths": {"r": {"auth": "!!" + SECRET}}}), "not valid base64", id="bad-b64"
        ),
        pytest.param(
            json.dumps({"auths": {"r": {"auth": _b64(SECRET)}}}), "user:password", id="no-colon"
        ),
        pytest.param('{"credHelpers": "x"}', "'credHelpers' is not an object", id="helpers-str"),
    ],
)
def test_parse_docker_config_errors_never_quote_a_secret(text: str, message: str) -> None:
    with pytest.raises(AuthError, match=message) as caught:
        parse_docker_config(text, "/cfg/config.json")
    assert SECRET not in str(caught.value)
    assert SECRET not in caught.value.diagnostics()
    assert "/cfg/config.json" in str(caught.value)


def test_docker_config_path_prefers_docker_config_over_home() -> None:
    assert docker_config_path({"DOCKER_CONFIG": "/d", "HOME": "/h"}) == Path("/d/config.json")
    assert docker_config_path({"HOME": "/h"}) == Path("/h/.docker/config.json")
    assert docker_config_path({}) is None


def _write_config(folder: Path, doc: dict[str, object]) -> dict[str, str]:
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "config.json").write_text(json.dumps(doc))
    return {"DOCKER_CONFIG": str(folder), "PATH": f"{folder / 'bin'}:/usr/bin:/bin"}


def _write_helper(env: dict[str, str], name: str, script: str) -> Path:
    """A fake `docker-credential-<name>` on the test's own PATH."""
    bindir = Path(env["PATH"].split(":")[0])
    bindir.mkdir(parents=True, exist_ok=True)
    path = bindir / f"docker-credential-{name}"
    path.write_text("#!/bin/sh\n" + script)
    path.chmod(path.stat().st_mode | stat.S_IXUSR)
    return path


REGISTRY = "http://127.0.0.1:5000"


def test_policy_credentials_win_over_docker_config(tmp_path: Path) -> None:
    env = _write_config(tmp_path, {"auths": {"127.0.0.1:5000": {"auth": _b64("cfg:cfgpw")}}})
    creds = resolve_credentials(REGISTRY, ("alice", SECRET), env)
    assert creds == Credentials("alice", SECRET, "policy")


def test_auths_entry_from_docker_config_env(tmp_path: Path) -> None:
    env = _write_config(tmp_path, {"auths": {"127.0.0.1:5000": {"auth": _b64(f"bob:{SECRET}")}}})
    assert resolve_credentials(REGISTRY, None, env) == Credentials("bob", SECRET, "docker-config")


def test_auths_entry_from_home(tmp_path: Path) -> None:
    _write_config(tmp_path / ".docker", {"auths": {"127.0.0.1:5000": {"auth": _b64("h:pw")}}})
    creds = resolve_credentials(REGISTRY, None, {"HOME": str(tmp_path)})
    assert creds == Credentials("h", "pw", "docker-config")


def test_identity_token_entry(tmp_path: Path) -> None:
    env = _write_config(tmp_path, {"auths": {"127.0.0.1:5000": {"identitytoken": SECRET}}})
    creds = resolve_credentials(REGISTRY, None, env)
    assert creds == Credentials("<token>", SECRET, "docker-config", identity_token=True)


def test_no_config_or_no_entry_is_anonymous(tmp_path: Path) -> None:
    assert resolve_credentials(REGISTRY, None, {"DOCKER_CONFIG": str(tmp_path / "none")}) is None
    env = _write_config(tmp_path, {"auths": {"other.example": {"auth": _b64("a:b")}}})
    assert resolve_credentials(REGISTRY, None, env) is None
    assert resolve_credentials(REGISTRY, None, {}) is None


def test_cred_helper_for_the_host(tmp_path: Path) -> None:
    env = _write_config(
        tmp_path,
        {
            "auths": {"127.0.0.1:5000": {"auth": _b64("fromauths:x")}},
            "credsStore": "other",
            "credHelpers": {"127.0.0.1:5000": "test"},
        },
    )
    log = tmp_path / "helper-input"
    _write_helper(
        env,
        "test",
        f'[ "$1" = get ] || exit 3\ncat > {log}\n'
        f'printf \'{{"ServerURL":"127.0.0.1:5000","Username":"helped","Secret":"{SECRET}"}}\'\n',
    )
    creds = resolve_credentials(REGISTRY, None, env)
    assert creds == Credentials("helped", SECRET, "credential-helper:test")
    assert log.read_text() == "127.0.0.1:5000"  # the server goes on stdin, never argv


def test_creds_store_and_token_username(tmp_path: Path) -> None:
    env = _write_config(tmp_path, {"credsStore": "test"})
    _write_helper(env, "test", f'printf \'{{"Username":"<token>","Secret":"{SECRET}"}}\'\n')
    creds = resolve_credentials(REGISTRY, None, env)
    assert creds == Credentials("<token>", SECRET, "credential-helper:test", identity_token=True)


def test_helper_without_credentials_falls_through_to_auths(tmp_path: Path) -> None:
    env = _write_config(
        tmp_path,
        {"auths": {"127.0.0.1:5000": {"auth": _b64("fallback:pw")}}, "credsStore": "test"},
    )
    _write_helper(env, "test", "echo 'credentials not found in native keychain'\nexit 1\n")
    assert resolve_credentials(REGISTRY, None, env) == Credentials(
        "fallback", "pw", "docker-config"
    )


def test_failing_helper_is_an_error_without_its_output(tmp_path: Path) -> None:
    env = _write_config(tmp_path, {"credsStore": "test"})
    _write_helper(env, "test", f"echo 'leaked {SECRET}' >&2\necho '{SECRET}'\nexit 2\n")
    with pytest.raises(AuthError, match=r"docker-credential-test failed \(exit 2\)") as caught:
        resolve_credentials(REGISTRY, None, env)
    assert SECRET not in caught.value.diagnostics()


def test_helper_answering_garbage_is_an_error(tmp_path: Path) -> None:
    env = _write_config(tmp_path, {"credsStore": "test"})
    _write_helper(env, "test", f"echo 'Secret={SECRET}'\n")
    with pytest.raises(AuthError, match="not JSON") as caught:
        resolve_credentials(REGISTRY, None, env)
    assert SECRET not in caught.value.diagnostics()


def test_missing_helper_is_an_error_with_a_hint(tmp_path: Path) -> None:
    env = _write_config(tmp_path, {"credsStore": "absent"})
    with pytest.raises(AuthError, match="docker-credential-absent is not on PATH") as caught:
        resolve_credentials(REGISTRY, None, env)
    assert caught.value.hint is not None


def test_unreadable_config_is_an_error(tmp_path: Path) -> None:
    (tmp_path / "config.json").mkdir(parents=True)  # a folder where the file should be
    with pytest.raises(AuthError, match="cannot read docker config"):
        resolve_credentials(REGISTRY, None, {"DOCKER_CONFIG": str(tmp_path)})


# --- redaction --------------------------------------------------------------------------------


def test_reprs_never_show_secrets() -> None:
    creds = Credentials("alice", SECRET, "policy")
    token = Token(SECRET, expires_at=1.0, refresh_token=SECRET)
    entry = AuthEntry("alice", SECRET, SECRET)
    for obj in (creds, token, entry):
        assert SECRET not in repr(obj)
        assert SECRET not in str(obj)
    assert "alice" in repr(creds)
    assert creds.basic_header() == "Basic " + _b64(f"alice:{SECRET}")
