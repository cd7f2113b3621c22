"""A small token server (distribution's token auth, docs/spec/auth/token.md) for tests.

A threading HTTP server on 127.0.0.1 that issues ES256 JWTs signed with a key generated at test
time; the token header carries `x5c` (the self-signed certificate), which distribution 2.8
verifies against its `auth.token.rootcertbundle` (registry/auth/token/token.go,
`parseAndVerifyCertChain`). Basic-auth protected (plus an optional anonymous grant), per-user
actions, OAuth2 refresh-token POSTs, and a record of every scope asked for. Never imports
`retention`, so the client is checked against an independent implementation.
"""

from __future__ import annotations

import base64
import binascii
import json
import re
import secrets
import tempfile
import threading
import time
from collections.abc import Collection, Mapping
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler
from pathlib import Path
from typing import Any
from urllib.parse import parse_qsl, urlsplit

import jwt
import requests
from requests.auth import AuthBase

from tests.harness.certs import CertPair, self_signed
from tests.harness.loopback import LoopbackServer, QuietHandler, Recorder

__all__ = ["MintingAuth", "TokenRequestRecord", "TokenServer"]

ANONYMOUS = ""
"""The `acl` key that grants actions to requests without credentials."""


@dataclass(frozen=True, slots=True)
class TokenRequestRecord:
    """One request the token server answered."""

    method: str  # GET (Basic/anonymous) or POST (OAuth2 form)
    grant: str  # "basic", "anonymous", "refresh_token" or "password"
    user: str | None  # who authenticated; None when refused or anonymous
    service: str | None
    scopes: tuple[str, ...]  # as asked for, in order
    status: int
    had_authorization: bool


def _split_scope(scope: str) -> tuple[str, str, tuple[str, ...]] | None:
    """`type:name:actions` where the name may hold a host:port colon (scope.md)."""
    kind, sep, rest = scope.partition(":")
    name, sep2, actions = rest.rpartition(":")
    if not sep or not sep2 or not kind or not name:
        return None
    return kind, name, tuple(a for a in actions.split(",") if a)


class TokenServer(LoopbackServer):
    """Issues registry tokens. Use as a context manager, or `start()` / `close()`.

    `users` maps user → password (Basic auth on GET, `grant_type=password` on POST). `acl` maps
    user (or `ANONYMOUS`) → the actions granted on every repository; the extra action `catalog`
    grants `registry:catalog:*`; an entry `action:repository` grants that action on that one
    repository only. A user without an acl entry gets every action.
    """

    name = "token server"

    def __init__(
        self,
        users: Mapping[str, str],
        *,
        acl: Mapping[str, Collection[str]] | None = None,
        service: str = "retention-test-registry",
        issuer: str = "retention-test-issuer",
        realm_host: str = "127.0.0.1",
        expires_in: int = 300,
        refresh_tokens: Mapping[str, str] | None = None,
        folder: Path | None = None,
    ) -> None:
        super().__init__()
        self.users = dict(users)
        self.acl = {k: frozenset(v) for k, v in (acl or {}).items()}
        self.service = service
        self.issuer = issuer
        self.realm_host = realm_host
        self.expires_in = expires_in
        self.refresh_tokens = dict(refresh_tokens or {})  # refresh token → user
        self._tmp = None if folder is not None else tempfile.TemporaryDirectory()
        self.folder = folder if folder is not None else Path(self._tmp.name)  # type: ignore[union-attr]
        self.signer: CertPair = self_signed(self.folder, "token-signer")
        self._records: Recorder[TokenRequestRecord] = Recorder()
        self._issued: Recorder[str] = Recorder()
        self._lock = threading.Lock()
        self._expire_next = 0

    # -- lifecycle ------------------------------------------------------------------------------

    def _handler(self) -> type[BaseHTTPRequestHandler]:
        return _handler_for(self)

    def close(self) -> None:
        super().close()
        if self._tmp is not None:
            self._tmp.cleanup()
            self._tmp = None

    # -- addresses and registry config ----------------------------------------------------------

    @property
    def realm(self) -> str:
        return f"http://{self.realm_host}:{self.port}/token"

    def registry_config(self) -> dict[str, Any]:
        """The `extra_config` that puts a RegistryProcess behind this server."""
        return {
            "auth": {
                "token": {
                    "realm": self.realm,
                    "service": self.service,
                    "issuer": self.issuer,
                    "rootcertbundle": str(self.signer.cert_path),
                }
            }
        }

    # -- observation and control ----------------------------------------------------------------

    @property
    def requests(self) -> list[TokenRequestRecord]:
        return self._records.items()

    def scopes_asked(self) -> list[tuple[str, ...]]:
        return [r.scopes for r in self.requests]

    @property
    def issued(self) -> list[str]:
        """Every token value handed out over HTTP (for leak checks)."""
        return self._issued.items()

    def clear(self) -> None:
        self._records.clear()

    def expire_next(self, count: int = 1) -> None:
        """The next `count` tokens are issued already expired (beyond distribution's 60 s
        leeway) while `expires_in` still promises a long life: the registry will answer 401."""
        with self._lock:
            self._expire_next += count

    # -- tokens ---------------------------------------------------------------------------------

    def mint(self, access: list[dict[str, Any]], *, subject: str = "harness") -> str:
        """A signed token granting `access` (bypasses HTTP and the record)."""
        return self._sign(access, subject, expired=False)

    def _sign(self, access: list[dict[str, Any]], subject: str, *, expired: bool) -> str:
        now = int(time.time())
        if expired:
            issued, expires = now - 3600, now - 600
        else:
            issued, expires = now - 5, now + self.expires_in
        claims = {
            "iss": self.issuer,
            "sub": subject,
            "aud": self.service,
            "exp": expires,
            "nbf": issued,
            "iat": issued,
            "jti": secrets.token_hex(8),
            "access": access,
        }
        x5c = [base64.b64encode(self.signer.cert_der).decode("ascii")]
        return jwt.encode(claims, self.signer.key, algorithm="ES256", headers={"x5c": x5c})

    def _grant(self, user: str | None, scopes: tuple[str, ...]) -> list[dict[str, Any]]:
        key = ANONYMOUS if user is None else user
        if key in self.acl:
            allowed: frozenset[str] | None = self.acl[key]
        elif user is None:
            allowed = frozenset()
        else:
            allowed = None  # everything
        access = []
        for scope in scopes:
            for part in scope.split(" "):
                parsed = _split_scope(part)
                if parsed is None:
                    continue
                kind, name, actions = parsed
                if kind == "registry" and name == "catalog":
                    ok = allowed is None or "catalog" in allowed
                    granted = list(actions) if ok else []
                else:
                    granted = [
                        a
                        for a in actions
                        if allowed is None or a in allowed or f"{a}:{name}" in allowed
                    ]
                if granted:
                    access.append({"type": kind, "name": name, "actions": granted})
        return access

    def _issue(self, user: str | None, scopes: tuple[str, ...]) -> dict[str, Any]:
        with self._lock:
            expired = self._expire_next > 0
            if expired:
                self._expire_next -= 1
        token = self._sign(self._grant(user, scopes), user or "anonymous", expired=expired)
        self._issued.append(token)
        return {
            "token": token,
            "access_token": token,
            "expires_in": self.expires_in,
            "issued_at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        }

    def _record(self, record: TokenRequestRecord) -> None:
        self._records.append(record)

    def _check_basic(self, header: str | None) -> tuple[bool, str | None]:
        """(authenticated-or-anonymous, user); (False, None) for bad credentials."""
        if not header:
            return True, None
        scheme, _, value = header.partition(" ")
        if scheme.lower() != "basic":
            return False, None
        try:
            user, sep, password = base64.b64decode(value).decode().partition(":")
        except (binascii.Error, UnicodeDecodeError):
            return False, None
        if sep and self.users.get(user) == password:
            return True, user
        return False, None


def _handler_for(server: TokenServer) -> type[BaseHTTPRequestHandler]:
    class Handler(QuietHandler):
        def _reply(self, status: int, doc: Mapping[str, Any]) -> None:
            body = json.dumps(doc).encode()
            self.send_response(status)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def do_GET(self) -> None:
            parts = urlsplit(self.path)
            if parts.path != "/token":
                self._reply(404, {"error": "not found"})
                return
            query = parse_qsl(parts.query)
            service = next((v for k, v in query if k == "service"), None)
            scopes = tuple(v for k, v in query if k == "scope")
            header = self.headers.get("Authorization")
            ok, user = server._check_basic(header)
            anonymous_allowed = ANONYMOUS in server.acl
            status = 200 if ok and (user is not None or anonymous_allowed) else 401
            server._record(
                TokenRequestRecord(
                    method="GET",
                    grant="basic" if header else "anonymous",
                    user=user if status == 200 else None,
                    service=service,
                    scopes=scopes,
                    status=status,
                    had_authorization=header is not None,
                )
            )
            if status != 200:
                self._reply(401, {"details": "invalid credentials"})
                return
            self._reply(200, server._issue(user, scopes))

        def do_POST(self) -> None:
            parts = urlsplit(self.path)
            length = int(self.headers.get("Content-Length") or 0)
            form = dict(parse_qsl(self.rfile.read(length).decode()))
            if parts.path != "/token":
                self._reply(404, {"error": "not found"})
                return
            grant = form.get("grant_type", "")
            user: str | None = None
            if grant == "refresh_token":
                user = server.refresh_tokens.get(form.get("refresh_token", ""))
            elif grant == "password":
                name = form.get("username", "")
                if server.users.get(name) == form.get("password"):
                    user = name
            scopes = tuple(s for s in form.get("scope", "").split(" ") if s)
            status = 200 if user is not None else 401
            server._record(
                TokenRequestRecord(
                    method="POST",
                    grant=grant,
                    user=user,
                    service=form.get("service"),
                    scopes=scopes,
                    status=status,
                    had_authorization=self.headers.get("Authorization") is not None,
                )
            )
            if user is None:
                self._reply(401, {"error": "invalid_grant"})
                return
            self._reply(200, server._issue(user, scopes))

    return Handler


_PATH = re.compile(r"^/v2/(?P<name>.+?)/(?:manifests|blobs|tags)/")


class MintingAuth(AuthBase):
    """`requests` auth for the seeding harness: a full-access token for each request's
    repository, minted directly (not through HTTP, so the server's record stays the client's)."""

    def __init__(self, server: TokenServer) -> None:
        self.server = server

    def __call__(self, r: requests.PreparedRequest) -> requests.PreparedRequest:
        path = urlsplit(r.url or "").path
        match = _PATH.match(path)
        if match:
            access = [
                {
                    "type": "repository",
                    "name": match["name"],
                    "actions": ["pull", "push", "delete"],
                }
            ]
        elif path.startswith("/v2/_catalog"):
            access = [{"type": "registry", "name": "catalog", "actions": ["*"]}]
        else:
            access = []
        r.headers["Authorization"] = "Bearer " + self.server.mint(access)
        return r
