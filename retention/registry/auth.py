"""Registry authentication: WWW-Authenticate parsing, token requests and responses, the token
cache (pure), and the `Authenticator` that learns the scheme from a 401 and answers it.

Parsing and request building do no I/O; the Authenticator sends through `registry.transport`.
Secrets never reach a repr, a log line or an error message.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import urlencode, urlsplit

from retention.errors import AuthError, RedirectRefused
from retention.oci import load_json
from retention.registry.credentials import Credentials
from retention.registry.transport import (
    RETRY_METHODS,
    TOKEN_MAX_BYTES,
    Response,
    Transport,
    error,
    error_details,
)
from retention.text import untrusted
from retention.urls import origin, redact_url, shown_url

CATALOG_SCOPE = "registry:catalog:*"

# Token lifetime rules from distribution docs/spec/auth/token.md: `expires_in` defaults to 60 s
# and a client should never assume less.
DEFAULT_TOKEN_TTL = 60.0
MIN_TOKEN_TTL = 60.0
# Refresh a little before the server's expiry so a request never races it.
TOKEN_EXPIRY_MARGIN = 10.0


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
    a host that harvests them (docs/decisions.md, "Token realm checks"; go-containerregistry#2193).
    """
    if challenge.scheme != "bearer":
        raise AuthError(f"not a Bearer challenge: {untrusted(challenge.scheme)}")
    realm = challenge.param("realm")
    if not realm:
        raise AuthError("the registry's Bearer challenge has no realm")
    parts = urlsplit(realm)
    shown = untrusted(redact_url(realm))  # the server's text (retention/text.py)
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise AuthError(f"token realm is not an absolute http(s) URL: {shown}")
    if parts.username or parts.password:
        raise AuthError("token realm carries credentials in its URL; refused")
    reg_scheme, reg_host, _ = origin(registry_url)
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


# --- the Authenticator -----------------------------------------------------------------------

_NO_CREDENTIALS = (
    "the registry requires authentication; no credentials found "
    "(policy registry.auth, docker config.json)"
)


class Authenticator:
    """Sends a request with the credentials (or a token for its scope) the registry asks for.

    The first request goes out anonymously; the scheme its 401 names ("basic", or "bearer" with
    the validated challenge) is remembered, so later requests authenticate from the start
    (docs/decisions.md, "Registry client"). Thread-safe; one token fetch at a time.
    """

    def __init__(
        self,
        url: str,
        credentials: Credentials | None,
        transport: Transport,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._url = url
        self._credentials = credentials
        self.credential_source = credentials.source if credentials is not None else "anonymous"
        self._transport = transport
        self._tokens = TokenCache(clock)
        self._lock = threading.Lock()
        self._token_lock = threading.Lock()
        # Learnt from the first 401: "basic", or "bearer" with the validated challenge.
        self._scheme: str | None = None
        self._bearer: Challenge | None = None

    @property
    def scheme(self) -> str | None:
        """ "basic", "bearer", or None while no 401 has been answered (anonymous access)."""
        return self._scheme

    def send(
        self,
        method: str,
        url: str,
        headers: dict[str, str],
        body: bytes | None,
        *,
        scope: str | None,
        max_bytes: int,
        follow_redirects: bool,
    ) -> Response:
        """One logical request: auth (one initial challenge, one refresh on 401), retries."""
        answered_challenge = False
        refreshed = False
        while True:
            authorization = self._authorization(scope)
            if authorization is not None:
                headers["Authorization"] = authorization
            else:
                headers.pop("Authorization", None)
            resp = self._transport.with_retries(
                method, url, headers, body, max_bytes=max_bytes, follow_redirects=follow_redirects
            )
            if resp.status != 401:
                return resp
            self._refuse_foreign_challenge(resp, url)
            challenges = self._challenges(resp)
            bearer = next((c for c in challenges if c.scheme == "bearer"), None)
            if authorization is None and not answered_challenge:
                answered_challenge = True
                self._learn(challenges, resp)
                continue
            self._refuse_rejected(resp, authorization, bearer, scope)
            if authorization is not None and not refreshed:
                refreshed = True
                self._forget_token(scope, authorization)
                if bearer is not None:
                    self._learn([bearer], resp)
                continue
            raise error(
                AuthError,
                resp,
                "the registry still answers 401 after authenticating"
                if authorization is not None
                else _NO_CREDENTIALS,
                hint=None if authorization is not None else "set registry.auth or docker login",
            )

    def _refuse_foreign_challenge(self, resp: Response, url: str) -> None:
        if origin(resp.url) != origin(self._url):
            # A 401 from a redirect target (object storage, or a host the registry points
            # at) is not the registry's challenge: answering it would send the registry's
            # credentials, or a token, to a realm that host chose.
            raise RedirectRefused(
                f"the redirect target {shown_url(resp.url)} refused the request "
                "(HTTP 401); its challenge is not the registry's, so nothing was sent to it",
                url=shown_url(url),
                status=401,
                hint="a registry that redirects to storage must give it a signed URL",
            )

    def _refuse_rejected(
        self,
        resp: Response,
        authorization: str | None,
        bearer: Challenge | None,
        scope: str | None,
    ) -> None:
        """Raise for a 401 that another try cannot fix: Basic credentials rejected, or a token
        that lacks the scope."""
        if authorization is not None and authorization.startswith("Basic "):
            raise error(
                AuthError,
                resp,
                f"the registry rejected the credentials from {self.credential_source}",
                hint="check the username and password",
            )
        if bearer is not None and bearer.param("error") == "insufficient_scope":
            raise error(
                AuthError,
                resp,
                f"missing {_missing_permission(scope)}",
                hint=f"the token server did not grant {scope or 'access'} to "
                f"{self.credential_source} credentials",
            )

    def _challenges(self, resp: Response) -> list[Challenge]:
        header = resp.header("WWW-Authenticate")
        if not header:
            raise error(AuthError, resp, "401 without a WWW-Authenticate challenge")
        return parse_challenges(header)

    def _learn(self, challenges: list[Challenge], resp: Response) -> None:
        """Remember how this registry authenticates, from a 401's challenges."""
        bearer = next((c for c in challenges if c.scheme == "bearer"), None)
        basic = next((c for c in challenges if c.scheme == "basic"), None)
        with self._lock:
            if bearer is not None:
                # validate now (realm host and scheme) so a bad realm fails before any token call
                build_token_request(bearer, (), self._url)
                self._scheme, self._bearer = "bearer", bearer
            elif basic is not None:
                if self._credentials is None:
                    raise error(
                        AuthError,
                        resp,
                        _NO_CREDENTIALS,
                        hint="set registry.auth in the policy, or docker login",
                    )
                if self._credentials.identity_token:
                    raise error(AuthError, resp, "an identity token cannot be used for Basic auth")
                self._scheme, self._bearer = "basic", None
            else:
                schemes = ", ".join(sorted({untrusted(c.scheme) for c in challenges})) or "none"
                raise error(AuthError, resp, f"unsupported authentication scheme(s): {schemes}")

    def _authorization(self, scope: str | None) -> str | None:
        with self._lock:
            scheme, bearer = self._scheme, self._bearer
        if scheme == "basic" and self._credentials is not None:
            return self._credentials.basic_header()
        if scheme == "bearer" and bearer is not None:
            return "Bearer " + self._token(bearer, scope)
        return None

    def _token_request(self, bearer: Challenge, scope: str | None) -> TokenRequest:
        return build_token_request(bearer, (scope,) if scope else (), self._url)

    def _forget_token(self, scope: str | None, authorization: str) -> None:
        with self._lock:
            bearer = self._bearer
        if bearer is not None and authorization.startswith("Bearer "):
            request = self._token_request(bearer, scope)
            self._tokens.invalidate(request.key(), authorization[len("Bearer ") :])

    def _token(self, bearer: Challenge, scope: str | None) -> str:
        request = self._token_request(bearer, scope)
        key = request.key()
        cached = self._tokens.get(key)
        if cached is not None:
            return cached.value
        with self._token_lock:  # one fetch at a time: concurrent callers share its result
            cached = self._tokens.get(key)
            if cached is not None:
                return cached.value
            token = self._fetch_token(request)
            self._tokens.put(key, token)
            return token.value

    def _fetch_token(self, request: TokenRequest) -> Token:
        creds = self._credentials
        headers: dict[str, str] = {"Accept": "application/json"}
        realm_url = request.url()
        if creds is not None and creds.identity_token:
            # OAuth2 refresh-token grant; the identity token goes only to the realm (scope.md)
            resp = self._transport.with_retries(
                "POST",
                request.realm,
                {**headers, "Content-Type": "application/x-www-form-urlencoded"},
                urlencode(request.refresh_form(creds.secret)).encode(),
                max_bytes=TOKEN_MAX_BYTES,
                follow_redirects=False,
                retry_methods=RETRY_METHODS | {"POST"},
            )
        else:
            if creds is not None:
                headers["Authorization"] = creds.basic_header()
            resp = self._transport.with_retries(
                "GET", realm_url, headers, None, max_bytes=TOKEN_MAX_BYTES, follow_redirects=False
            )
        where = shown_url(request.realm)
        if resp.status in (401, 403):
            who = f"user {creds.username!r}" if creds is not None else "anonymous access"
            raise AuthError(
                f"the token server refused {who} for {', '.join(request.scopes) or 'the registry'}",
                url=where,
                status=resp.status,
                hint="check the credentials"
                if creds is not None
                else "set registry.auth in the policy, or docker login",
            )
        if resp.status != 200:
            code, _ = error_details(resp.body)
            raise AuthError(
                f"the token server answered {resp.status}", url=where, status=resp.status, code=code
            )
        return parse_token_response(resp.body, self._tokens.now())


def _missing_permission(scope: str | None) -> str:
    """What an insufficient_scope refusal means, in words: the action beyond `pull` if any."""
    if not scope:
        return "registry access"
    if scope == CATALOG_SCOPE:
        return "catalog access (registry:catalog:*)"
    kind, _, rest = scope.partition(":")
    name, _, actions = rest.rpartition(":")
    wanted = [a for a in actions.split(",") if a != "pull"] or ["pull"]
    return f"{' and '.join(wanted)} permission on {kind} {name}"
