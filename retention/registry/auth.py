"""Registry authentication: challenge parsing, token-request building, credential sources, tokens.

Parsing and request building are pure functions (no network); the only I/O here is reading the
docker `config.json` and running `docker-credential-<name> get`. Secrets never reach a repr, a log
line or an error message. HTTP itself is done by `registry.client`.
"""

from __future__ import annotations

import base64
import binascii
import json
import logging
import os
import shutil
import subprocess
import threading
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import urlencode, urlsplit

from retention.errors import AuthError
from retention.oci import load_json
from retention.text import untrusted

logger = logging.getLogger(__name__)

CATALOG_SCOPE = "registry:catalog:*"

# Token lifetime rules from distribution docs/spec/auth/token.md: `expires_in` defaults to 60 s
# and a client should never assume less.
DEFAULT_TOKEN_TTL = 60.0
MIN_TOKEN_TTL = 60.0
# Refresh a little before the server's expiry so a request never races it.
TOKEN_EXPIRY_MARGIN = 10.0

HELPER_TIMEOUT = 30.0
DOCKER_HUB_KEY = "https://index.docker.io/v1/"
_DOCKER_HUB_HOSTS = frozenset({"docker.io", "index.docker.io", "registry-1.docker.io"})


def repository_scope(repository: str, actions: Sequence[str]) -> str:
    """`repository:<name>:<actions>`; the name may hold a host:port, so it is never split."""
    return f"repository:{repository}:{','.join(actions)}"


# --- WWW-Authenticate parsing (RFC 9110 §11.6.1) ---------------------------------------------


@dataclass(frozen=True, slots=True)
class Challenge:
    """One challenge of a WWW-Authenticate header; scheme and parameter names are lowercased."""

    scheme: str
    params: tuple[tuple[str, str], ...] = ()

    def param(self, name: str) -> str | None:
        for key, value in self.params:
            if key == name:
                return value
        return None


_TCHARS = frozenset("!#$%&'*+-.^_`|~0123456789abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ")
_TOKEN68 = frozenset("-._~+/0123456789abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ")


class _Scanner:
    def __init__(self, text: str) -> None:
        self.text = text
        self.pos = 0

    def skip_ws(self) -> None:
        while self.pos < len(self.text) and self.text[self.pos] in " \t":
            self.pos += 1

    def peek(self) -> str:
        return self.text[self.pos] if self.pos < len(self.text) else ""

    def run(self, chars: frozenset[str]) -> str:
        start = self.pos
        while self.pos < len(self.text) and self.text[self.pos] in chars:
            self.pos += 1
        return self.text[start : self.pos]

    def at_element_end(self) -> bool:
        self.skip_ws()
        return self.peek() in (",", "")

    def fail(self, why: str) -> AuthError:
        return AuthError(f"malformed WWW-Authenticate header: {why} at offset {self.pos}")

    def quoted(self) -> str:
        self.pos += 1  # the opening quote
        out: list[str] = []
        while self.pos < len(self.text):
            ch = self.text[self.pos]
            if ch == "\\" and self.pos + 1 < len(self.text):
                out.append(self.text[self.pos + 1])
                self.pos += 2
                continue
            self.pos += 1
            if ch == '"':
                return "".join(out)
            out.append(ch)
        raise self.fail("unterminated quoted string")

    def param(self) -> tuple[str, str] | None:
        """`token BWS "=" BWS (token / quoted-string)`, or None (position unchanged) if absent."""
        start = self.pos
        name = self.run(_TCHARS)
        self.skip_ws()
        if not name or self.peek() != "=":
            self.pos = start
            return None
        self.pos += 1
        self.skip_ws()
        value = self.quoted() if self.peek() == '"' else self.run(_TCHARS)
        if not value and self.text[self.pos - 1 : self.pos] != '"':
            raise self.fail(f"empty value for {name!r}")
        if not self.at_element_end():
            raise self.fail("junk after a parameter")
        return name.lower(), value


def parse_challenges(header: str) -> list[Challenge]:
    """Parse a WWW-Authenticate value into its challenges (RFC 9110 §11.6.1).

    Several challenges may share one header (requests joins repeated headers with ", "); quoted
    values may hold commas (`scope="repository:a:pull,push"`) and escaped quotes; a challenge may
    carry a token68 (`Negotiate abc==`) instead of parameters. Raises AuthError on a header that
    does not follow the grammar.
    """
    s = _Scanner(header)
    challenges: list[Challenge] = []
    scheme: str | None = None
    params: list[tuple[str, str]] = []
    while True:
        s.skip_ws()
        if not s.peek():
            break
        if s.peek() == ",":  # empty list elements are allowed
            s.pos += 1
            continue
        if scheme is not None:
            found = s.param()
            if found is not None:
                params.append(found)
                continue
        name = s.run(_TCHARS)
        if not name:
            raise s.fail("expected an auth scheme")
        if s.peek() == "=":
            raise s.fail("parameter before any auth scheme")
        if scheme is not None:
            challenges.append(Challenge(scheme.lower(), tuple(params)))
        scheme, params = name, []
        if s.at_element_end():
            continue
        # After `scheme SP`: a token68, or the first auth-param.
        start = s.pos
        t68 = s.run(_TOKEN68)
        t68 += s.run(frozenset("="))
        if t68 and s.at_element_end():
            params.append(("token68", t68))
            continue
        s.pos = start
        found = s.param()
        if found is None:
            raise s.fail("expected a parameter or token68")
        params.append(found)
    if scheme is not None:
        challenges.append(Challenge(scheme.lower(), tuple(params)))
    return challenges


# --- token requests and responses ----------------------------------------------------------


def _origin(url: str) -> tuple[str, str, int | None]:
    parts = urlsplit(url)
    port = parts.port
    if port is None:
        port = {"http": 80, "https": 443}.get(parts.scheme)
    return parts.scheme, (parts.hostname or "").lower(), port


@dataclass(frozen=True, slots=True)
class TokenRequest:
    """A validated request to a token realm for a set of scopes."""

    realm: str
    service: str | None
    scopes: tuple[str, ...]

    def query(self) -> str:
        pairs: list[tuple[str, str]] = []
        if self.service:
            pairs.append(("service", self.service))
        pairs.extend(("scope", scope) for scope in self.scopes)
        return urlencode(pairs)

    def url(self) -> str:
        """The GET URL: the realm with `service` and one `scope` parameter per scope."""
        query = self.query()
        if not query:
            return self.realm
        sep = "&" if urlsplit(self.realm).query else "?"
        return f"{self.realm}{sep}{query}"

    def refresh_form(self, refresh_token: str) -> dict[str, str]:
        """The OAuth2 POST form for an identity (refresh) token (token spec, oauth.md)."""
        form = {
            "grant_type": "refresh_token",
            "refresh_token": refresh_token,
            "client_id": "retention",
        }
        if self.service:
            form["service"] = self.service
        if self.scopes:
            form["scope"] = " ".join(self.scopes)
        return form

    def key(self) -> tuple[str, str, tuple[str, ...]]:
        return (self.realm, self.service or "", self.scopes)


def build_token_request(
    challenge: Challenge, scopes: Sequence[str], registry_url: str
) -> TokenRequest:
    """Validate a Bearer challenge's realm and build the token request for `scopes`.

    The realm must be an absolute http(s) URL. A realm on another host than the registry is only
    accepted over https, and a realm never downgrades an https registry to http: credentials are
    sent to the realm, and a hostile registry (or a MITM on plain http) could otherwise point it at
    a host that harvests them (registry-facts §3.1, go-containerregistry#2193).
    """
    if challenge.scheme != "bearer":
        raise AuthError(f"not a Bearer challenge: {untrusted(challenge.scheme)}")
    realm = challenge.param("realm")
    if not realm:
        raise AuthError("the registry's Bearer challenge has no realm")
    parts = urlsplit(realm)
    shown = untrusted(_redact_url(realm))  # the server's text (retention/text.py)
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise AuthError(f"token realm is not an absolute http(s) URL: {shown}")
    if parts.username or parts.password:
        raise AuthError("token realm carries credentials in its URL; refused")
    reg_scheme, reg_host, _ = _origin(registry_url)
    if parts.scheme == "http":
        if reg_scheme == "https":
            raise AuthError(
                f"token realm {shown} is plain http for an https registry; refused",
                hint="the registry's auth.token.realm must be an https URL",
            )
        if parts.hostname.lower() != reg_host:
            raise AuthError(
                f"token realm {shown} is on another host over plain http; refused "
                "so that credentials are never sent in clear to a host you did not name",
                hint="serve the token realm over https",
            )
    service = challenge.param("service")
    return TokenRequest(realm=realm, service=service or None, scopes=tuple(scopes))


@dataclass(frozen=True, slots=True)
class Token:
    """A bearer token and the monotonic time after which it must not be used."""

    value: str = field(repr=False)
    expires_at: float
    refresh_token: str | None = field(default=None, repr=False)

    def __repr__(self) -> str:
        return f"Token(value='***', expires_at={self.expires_at!r})"

    def valid(self, now: float) -> bool:
        return now < self.expires_at


def parse_token_response(body: bytes, now: float) -> Token:
    """Read `token`/`access_token` and `expires_in` (default 60 s, never less) from a realm
    answer."""
    try:
        doc: Any = load_json(body)
    except (ValueError, UnicodeDecodeError) as exc:
        raise AuthError("the token server answered something that is not JSON") from exc
    if not isinstance(doc, dict):
        raise AuthError("the token server answered something that is not a JSON object")
    value = doc.get("token") or doc.get("access_token")
    if not isinstance(value, str) or not value:
        raise AuthError("the token server's answer holds no token")
    ttl = doc.get("expires_in")
    if not isinstance(ttl, int | float) or isinstance(ttl, bool) or ttl <= 0:
        ttl = DEFAULT_TOKEN_TTL
    ttl = max(float(ttl), MIN_TOKEN_TTL)
    refresh = doc.get("refresh_token")
    return Token(
        value=value,
        expires_at=now + ttl - TOKEN_EXPIRY_MARGIN,
        refresh_token=refresh if isinstance(refresh, str) and refresh else None,
    )


class TokenCache:
    """Tokens per (realm, service, scopes); thread-safe; expired tokens are never returned."""

    def __init__(self, clock: Callable[[], float] = time.monotonic) -> None:
        self._clock = clock
        self._lock = threading.Lock()
        self._tokens: dict[tuple[str, str, tuple[str, ...]], Token] = {}

    def __repr__(self) -> str:
        return f"TokenCache(entries={len(self._tokens)})"

    def now(self) -> float:
        return self._clock()

    def get(self, key: tuple[str, str, tuple[str, ...]]) -> Token | None:
        with self._lock:
            token = self._tokens.get(key)
            if token is None or not token.valid(self._clock()):
                return None
            return token

    def put(self, key: tuple[str, str, tuple[str, ...]], token: Token) -> None:
        with self._lock:
            self._tokens[key] = token

    def invalidate(self, key: tuple[str, str, tuple[str, ...]], value: str | None = None) -> None:
        """Forget the token for `key` (only if it is still `value`, when given)."""
        with self._lock:
            token = self._tokens.get(key)
            if token is not None and (value is None or token.value == value):
                del self._tokens[key]


# --- credentials -----------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Credentials:
    """A username and secret, and where they came from; the secret never appears in a repr.

    `identity_token` marks a secret that is an OAuth2 refresh token (docker `identitytoken`, or a
    helper answering username `<token>`); it is only ever sent to the token realm.
    """

    username: str
    secret: str = field(repr=False)
    source: str
    identity_token: bool = False

    def __repr__(self) -> str:
        return (
            f"Credentials(username={self.username!r}, secret='***', source={self.source!r}, "
            f"identity_token={self.identity_token!r})"
        )

    def basic_header(self) -> str:
        raw = f"{self.username}:{self.secret}".encode()
        return "Basic " + base64.b64encode(raw).decode("ascii")


@dataclass(frozen=True, slots=True)
class AuthEntry:
    """One `auths` entry of a docker config.json."""

    username: str | None = None
    password: str | None = field(default=None, repr=False)
    identity_token: str | None = field(default=None, repr=False)

    def __repr__(self) -> str:
        return f"AuthEntry(username={self.username!r}, password='***', identity_token='***')"


@dataclass(frozen=True, slots=True)
class DockerConfig:
    """What retention reads of a docker config.json: auths, credsStore, credHelpers."""

    path: str
    auths: tuple[tuple[str, AuthEntry], ...] = ()  # keyed by normalised host
    creds_store: str | None = None
    cred_helpers: tuple[tuple[str, str], ...] = ()  # normalised host → helper name

    def auth_for(self, key: str) -> AuthEntry | None:
        return dict(self.auths).get(key)

    def helper_for(self, key: str) -> str | None:
        return dict(self.cred_helpers).get(key)


def normalise_host_key(key: str) -> str:
    """A docker config key (`host`, `host:port`, `https://host/v1/`) as a lowercase host[:port].

    Docker Hub's keys and hosts (`https://index.docker.io/v1/`, `docker.io`, `registry-1.docker.io`)
    all map to `index.docker.io`.
    """
    text = key.strip()
    if "://" in text:
        text = text.split("://", 1)[1]
    text = text.split("/", 1)[0].lower()
    if text.endswith(":443"):
        text = text[:-4]
    if text in _DOCKER_HUB_HOSTS:
        return "index.docker.io"
    return text


def registry_host_key(registry_url: str) -> str:
    """The config.json lookup key for a registry URL."""
    parts = urlsplit(registry_url)
    host = (parts.hostname or "").lower()
    if ":" in host:  # IPv6 literal
        host = f"[{host}]"
    if parts.port is not None:
        host = f"{host}:{parts.port}"
    return normalise_host_key(host)


def _decode_auth(value: str, path: str, key: str) -> tuple[str, str]:
    try:
        text = base64.b64decode(value, validate=True).decode("utf-8")
    except (binascii.Error, UnicodeDecodeError) as exc:
        raise AuthError(f"{path}: auths[{key!r}].auth is not valid base64") from exc
    user, sep, password = text.partition(":")
    if not sep or not user:
        raise AuthError(f"{path}: auths[{key!r}].auth is not base64 of 'user:password'")
    return user, password


def parse_docker_config(text: str, path: str) -> DockerConfig:
    """Parse a docker config.json (pure). Errors name the file and key, never a value."""
    try:
        doc: Any = json.loads(text)
    except ValueError as exc:
        raise AuthError(f"{path}: not valid JSON (line {getattr(exc, 'lineno', '?')})") from exc
    if not isinstance(doc, dict):
        raise AuthError(f"{path}: not a JSON object")
    auths: dict[str, AuthEntry] = {}
    raw_auths = doc.get("auths", {})
    if raw_auths is None:
        raw_auths = {}
    if not isinstance(raw_auths, dict):
        raise AuthError(f"{path}: 'auths' is not an object")
    for raw_key, entry in raw_auths.items():
        if not isinstance(entry, dict):
            continue
        key = normalise_host_key(str(raw_key))
        identity = entry.get("identitytoken")
        user: str | None = None
        password: str | None = None
        encoded = entry.get("auth")
        if isinstance(encoded, str) and encoded:
            user, password = _decode_auth(encoded, path, str(raw_key))
        elif isinstance(entry.get("username"), str) and isinstance(entry.get("password"), str):
            user, password = entry["username"], entry["password"]
        if user is None and not (isinstance(identity, str) and identity):
            continue  # docker desktop writes empty entries when a credsStore holds the secret
        auths[key] = AuthEntry(
            username=user,
            password=password,
            identity_token=identity if isinstance(identity, str) and identity else None,
        )
    store = doc.get("credsStore")
    helpers = doc.get("credHelpers", {})
    if helpers is None:
        helpers = {}
    if not isinstance(helpers, dict):
        raise AuthError(f"{path}: 'credHelpers' is not an object")
    return DockerConfig(
        path=path,
        auths=tuple(sorted(auths.items())),
        creds_store=store if isinstance(store, str) and store else None,
        cred_helpers=tuple(
            sorted(
                (normalise_host_key(str(k)), v)
                for k, v in helpers.items()
                if isinstance(v, str) and v
            )
        ),
    )


def docker_config_path(env: Mapping[str, str]) -> Path | None:
    """`$DOCKER_CONFIG/config.json`, else `$HOME/.docker/config.json`; None without either."""
    if env.get("DOCKER_CONFIG"):
        return Path(env["DOCKER_CONFIG"]) / "config.json"
    if env.get("HOME"):
        return Path(env["HOME"]) / ".docker" / "config.json"
    return None


HelperRunner = Callable[[str, str, Mapping[str, str]], "subprocess.CompletedProcess[bytes]"]


def run_credential_helper(
    name: str, server: str, env: Mapping[str, str]
) -> subprocess.CompletedProcess[bytes]:
    """Run `docker-credential-<name> get` with the server on stdin: argument list, no shell."""
    program = f"docker-credential-{name}"
    found = shutil.which(program, path=env.get("PATH", os.defpath))
    if found is None:
        raise AuthError(
            f"credential helper {program} is not on PATH",
            hint="install it, or remove it from credsStore/credHelpers in the docker config",
        )
    try:
        return subprocess.run(  # fixed argv, no shell
            [found, "get"],
            input=server.encode(),
            capture_output=True,
            timeout=HELPER_TIMEOUT,
            env=dict(env),
            check=False,
        )
    except subprocess.TimeoutExpired as exc:
        raise AuthError(
            f"credential helper {program} did not answer in {HELPER_TIMEOUT:g}s"
        ) from exc
    except OSError as exc:
        raise AuthError(f"credential helper {program} could not be run: {exc.strerror}") from exc


def _from_helper(
    name: str, server: str, env: Mapping[str, str], run: HelperRunner
) -> Credentials | None:
    program = f"docker-credential-{name}"
    done = run(name, server, env)
    if done.returncode != 0:
        # The helper protocol says "credentials not found" on stdout; anything else is a failure.
        # Helper output is never quoted: it might hold a secret.
        if b"credentials not found" in done.stdout.lower():
            return None
        raise AuthError(f"credential helper {program} failed (exit {done.returncode})")
    try:
        doc: Any = json.loads(done.stdout)
    except (ValueError, UnicodeDecodeError) as exc:
        raise AuthError(f"credential helper {program} answered something that is not JSON") from exc
    if not isinstance(doc, dict):
        raise AuthError(f"credential helper {program} answered something that is not an object")
    user, secret = doc.get("Username"), doc.get("Secret")
    if not isinstance(user, str) or not isinstance(secret, str) or not secret:
        return None
    source = f"credential-helper:{name}"
    if user == "<token>":
        return Credentials(username=user, secret=secret, source=source, identity_token=True)
    return Credentials(username=user, secret=secret, source=source)


def resolve_credentials(
    registry_url: str,
    policy_auth: tuple[str, str] | None,
    env: Mapping[str, str],
    *,
    run: HelperRunner = run_credential_helper,
) -> Credentials | None:
    """Credentials for the registry, in order: the policy's `registry.auth` (username, password);
    the docker config's `credHelpers` entry for the host, else its `credsStore`, else its `auths`
    entry; else None (anonymous). A helper that has nothing for the host falls through to `auths`.
    """
    if policy_auth is not None:
        return Credentials(policy_auth[0], policy_auth[1], source="policy")
    path = docker_config_path(env)
    if path is None:
        return None
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        return None
    except (OSError, UnicodeDecodeError) as exc:
        raise AuthError(f"cannot read docker config {path}: {exc.__class__.__name__}") from exc
    docker = parse_docker_config(text, str(path))
    key = registry_host_key(registry_url)
    server = DOCKER_HUB_KEY if key == "index.docker.io" else key
    helper = docker.helper_for(key) or docker.creds_store
    if helper is not None:
        found = _from_helper(helper, server, env, run)
        if found is not None:
            logger.debug("credentials for %s from credential helper %s", key, helper)
            return found
    entry = docker.auth_for(key)
    if entry is None:
        return None
    logger.debug("credentials for %s from %s", key, path)
    if entry.username is not None and entry.password is not None:
        return Credentials(entry.username, entry.password, source="docker-config")
    assert entry.identity_token is not None
    return Credentials("<token>", entry.identity_token, "docker-config", identity_token=True)


def _redact_url(url: str) -> str:
    """scheme://host[:port]/path — no userinfo, no query (it may hold a signature or token)."""
    parts = urlsplit(url)
    host = parts.hostname or ""
    if parts.port is not None:
        host = f"{host}:{parts.port}"
    return f"{parts.scheme}://{host}{parts.path}"


redact_url = _redact_url
