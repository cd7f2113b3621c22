"""The registry HTTP client: one Session, timeouts, retries, auth, pagination, manifests, blobs.

The only module (with `registry.auth`) that speaks HTTP. It returns `oci` values and raises only
`RegistryError` subclasses; it never prints and never logs a secret, a header or a query string.
"""

from __future__ import annotations

import contextlib
import email.utils
import logging
import os
import random
import socket
import threading
import time
import warnings
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from types import TracebackType
from typing import Any, Final, NoReturn
from urllib.parse import parse_qsl, urlencode, urljoin, urlsplit, urlunsplit

import requests
import urllib3
import urllib3.connection
import urllib3.connectionpool
from requests.adapters import HTTPAdapter
from requests.structures import CaseInsensitiveDict

from retention import __version__, oci
from retention.errors import (
    AuthError,
    DeleteDisabledError,
    ProtocolError,
    RedirectRefused,
    RegistryError,
    TransportError,
)
from retention.policy.model import RegistryConfig
from retention.registry.auth import (
    CATALOG_SCOPE,
    Challenge,
    Credentials,
    Token,
    TokenCache,
    TokenRequest,
    build_token_request,
    parse_challenges,
    parse_token_response,
    redact_url,
    repository_scope,
    resolve_credentials,
)
from retention.text import untrusted

logger = logging.getLogger(__name__)

USER_AGENT: Final = f"retention/{__version__}"

# Response size limits: the spec asks registries to accept manifests of at least 4 MiB; nothing
# legitimate is larger. Configs are small JSON. Bodies are streamed and cut at the cap.
MANIFEST_MAX_BYTES: Final = 4 * 1024 * 1024
CONFIG_MAX_BYTES: Final = 8 * 1024 * 1024
LIST_MAX_BYTES: Final = 16 * 1024 * 1024
TOKEN_MAX_BYTES: Final = 1024 * 1024
ERROR_MAX_BYTES: Final = 64 * 1024

PAGE_SIZE: Final = 1000  # distribution's catalog.maxentries and tags.maxtags default
MAX_PAGES: Final = 10_000
MAX_REDIRECTS: Final = 5

RETRY_STATUSES: Final = frozenset({429, 502, 503, 504})
# GET and HEAD are safe; a DELETE that is repeated answers 404, which means done; a manifest PUT
# is idempotent by content (same bytes, same digest). Nothing else is sent.
RETRY_METHODS: Final = frozenset({"GET", "HEAD", "DELETE", "PUT"})

_DELETE_DISABLED = (
    "deletion is disabled on this registry: set storage.delete.enabled: true "
    "(or the registry is in read-only mode, or is a pull-through cache)"
)


# --- values ----------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class RetryPolicy:
    """How often and how long to retry what is safe to retry.

    `attempts` counts every try (the first included); the wait before retry n (0-based) is
    `min(cap, base * 2**n)` scaled by a jitter factor in [0.5, 1.0], or the server's Retry-After;
    `budget` bounds the total seconds spent waiting per request — a Retry-After beyond what is
    left of it fails at once rather than sleeping.
    """

    attempts: int = 5
    base: float = 0.5
    cap: float = 30.0
    budget: float = 120.0

    def __post_init__(self) -> None:
        if self.attempts < 1 or self.base < 0 or self.cap < 0 or self.budget < 0:
            raise ValueError("RetryPolicy needs attempts >= 1 and non-negative times")


@dataclass(frozen=True, slots=True)
class Ping:
    """The answer of `GET /v2/`."""

    status: int
    api_version: str | None
    server_date: datetime | None
    auth_scheme: str | None = None  # "basic", "bearer" or None (anonymous access)


@dataclass(frozen=True, slots=True)
class ManifestRef:
    """What a manifest HEAD tells: the digest (sha256 of the manifest bytes), type and size."""

    digest: str
    media_type: str
    size: int


@dataclass(frozen=True, slots=True)
class FetchedManifest:
    """A manifest as received: the parsed value, the exact bytes, and the media type served."""

    manifest: oci.Manifest
    raw: bytes
    media_type: str

    @property
    def digest(self) -> str:
        return self.manifest.digest


# --- pure helpers (unit-tested) --------------------------------------------------------------


def backoff_delay(policy: RetryPolicy, retry: int, rand: Callable[[], float]) -> float:
    """Capped exponential backoff with jitter: in [d/2, d] where d = min(cap, base * 2**retry)."""
    ceiling = min(policy.cap, policy.base * (2 ** min(retry, 62)))
    return float(ceiling * (0.5 + 0.5 * rand()))


def parse_retry_after(value: str | None, now: datetime) -> float | None:
    """Retry-After as seconds from `now`: delta-seconds or an HTTP-date (RFC 9110 §10.2.3).

    None when absent or unreadable; a date in the past gives 0.
    """
    if value is None:
        return None
    text = value.strip()
    if text.isdigit():
        return float(int(text))
    if not text:
        return None
    try:
        when = email.utils.parsedate_to_datetime(text)
    except (TypeError, ValueError, IndexError, OverflowError):
        return None
    if when.tzinfo is None:  # "-0000" dates parse naive; HTTP dates are UTC
        when = when.replace(tzinfo=UTC)
    return max(0.0, (when - now).total_seconds())


def parse_link_next(header: str | None) -> str | None:
    """The `rel="next"` target of an RFC 8288 Link header, as written (maybe relative)."""
    if not header:
        return None
    for part in _split_links(header):
        target, _, rest = part.partition(">")
        target = target.strip()
        if not target.startswith("<"):
            continue
        params = [p.strip() for p in rest.split(";") if p.strip()]
        for param in params:
            name, _, value = param.partition("=")
            if name.strip().lower() == "rel" and "next" in value.strip().strip('"').split():
                return target[1:]
    return None


def _split_links(header: str) -> list[str]:
    parts: list[str] = []
    depth, quoted, start = 0, False, 0
    for i, ch in enumerate(header):
        if ch == '"':
            quoted = not quoted
        elif not quoted and ch == "<":
            depth += 1
        elif not quoted and ch == ">":
            depth = max(0, depth - 1)
        elif not quoted and depth == 0 and ch == ",":
            parts.append(header[start:i])
            start = i + 1
    parts.append(header[start:])
    return parts


def _error_details(body: bytes) -> tuple[str | None, str | None]:
    """(code, message) of the first entry of a registry JSON error body, if it is one.

    Both are escaped here (retention/text.py): every RegistryError message that quotes the
    server is safe to print as it is built (docs/decisions.md, "Escaping registry strings").
    """
    try:
        doc = oci.load_json(body)
    except (ValueError, UnicodeDecodeError):
        return None, None
    if not isinstance(doc, dict):
        return None, None
    errors = doc.get("errors")
    if not isinstance(errors, list) or not errors or not isinstance(errors[0], dict):
        return None, None
    code, message = errors[0].get("code"), errors[0].get("message")
    return (
        untrusted(code[:100]) if isinstance(code, str) else None,
        untrusted(message[:200]) if isinstance(message, str) else None,
    )


def _media_type(header: str | None) -> str:
    return (header or "").split(";")[0].strip().lower()


def normalise_url(url: str) -> str:
    """The registry base URL: http(s), no credentials, query or fragment, no trailing slash."""
    parts = urlsplit(url.strip())
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise RegistryError(f"registry url must be an absolute http(s) URL: {redact_url(url)}")
    if parts.username is not None or parts.password is not None:
        raise RegistryError(
            "credentials in the registry url are not supported",
            hint="use registry.auth in the policy, or docker login",
        )
    if parts.query or parts.fragment:
        raise RegistryError(f"registry url must not have a query or fragment: {redact_url(url)}")
    path = parts.path.rstrip("/")
    if path.endswith("/v2"):
        path = path[: -len("/v2")]
    return urlunsplit((parts.scheme, parts.netloc.lower(), path, "", ""))


# --- the client ------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class _Response:
    status: int
    headers: CaseInsensitiveDict[str]
    body: bytes
    url: str  # the final URL, after redirects

    def header(self, name: str) -> str | None:
        return self.headers.get(name)


class _RetryableStatus(Exception):
    """Internal: a status worth retrying; never leaves this module."""

    def __init__(self, response: _Response) -> None:
        super().__init__(response.status)
        self.response = response


class _Truncated(Exception):
    """Internal: a body that ended before its Content-Length; retried like a connection error."""


_TRANSPORT_ERRORS = (
    requests.exceptions.ConnectionError,
    requests.exceptions.Timeout,
    requests.exceptions.ChunkedEncodingError,
    requests.exceptions.ContentDecodingError,
    _Truncated,
)


# --- deadlines ---------------------------------------------------------------------------------
#
# requests only has socket timeouts: a server that sends one byte per second never trips a 60 s
# read timeout. Each attempt therefore registers a `_Watch` with the client's watchdog thread; the
# connection used for it (our urllib3 connection classes, below) attaches itself to the watch of
# the thread that sends, and when the deadline passes the watchdog shuts the socket down, which
# ends the blocked read at once. (docs/decisions.md, "What is trusted")


@dataclass(frozen=True, slots=True)
class RunDeadline:
    """When a whole command must end (`settings.timeouts.run`): a `time.monotonic()` instant,
    and the configured length for messages."""

    at: float
    seconds: float

    @classmethod
    def after(cls, seconds: float, clock: Callable[[], float] = time.monotonic) -> RunDeadline:
        return cls(at=clock() + seconds, seconds=seconds)


_current = threading.local()  # .watch: the _Watch of the attempt this thread is sending


class _Watch:
    __slots__ = ("_conn", "_lock", "deadline", "expired")

    def __init__(self, deadline: float) -> None:
        self.deadline = deadline
        self.expired = False
        self._conn: Any = None
        self._lock = threading.Lock()

    def attach(self, conn: Any) -> None:
        with self._lock:
            self._conn = conn
            expired = self.expired
        if expired:
            _shut(conn)

    def expire(self) -> None:
        with self._lock:
            self.expired = True
            conn = self._conn
        if conn is not None:
            _shut(conn)


def _shut(conn: Any) -> None:
    sock = getattr(conn, "sock", None)
    if sock is None:
        return
    with contextlib.suppress(OSError):  # already closed
        sock.shutdown(socket.SHUT_RDWR)


class _Watchdog:
    """One thread per client that ends the attempts whose deadline has passed."""

    TICK: Final = 0.1

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._active: set[_Watch] = set()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def watch(self, deadline: float) -> _Watch:
        w = _Watch(deadline)
        with self._lock:
            self._active.add(w)
            if self._thread is None and not self._stop.is_set():
                self._thread = threading.Thread(
                    target=self._loop, name="retention-deadlines", daemon=True
                )
                self._thread.start()
        return w

    def done(self, w: _Watch) -> None:
        with self._lock:
            self._active.discard(w)

    def _loop(self) -> None:
        while not self._stop.wait(self.TICK):
            now = time.monotonic()
            with self._lock:
                due = [w for w in self._active if w.deadline <= now]
            for w in due:
                w.expire()

    def close(self) -> None:
        self._stop.set()
        with self._lock:
            thread, self._thread = self._thread, None
        if thread is not None:
            thread.join(timeout=5)


def _request_watched(conn: Any, send: Callable[[], None]) -> None:
    """Send on `conn`, then hand its socket to this thread's watch. The socket, not the
    connection: http.client drops `conn.sock` once a `Connection: close` answer has begun, while
    the response goes on reading from it."""
    w = getattr(_current, "watch", None)
    if w is not None:
        w.attach(conn)  # a deadline during connect or send shuts what exists by then
    send()
    if w is not None and conn.sock is not None:
        w.attach(_SocketHolder(conn.sock))


class _SocketHolder:
    __slots__ = ("sock",)

    def __init__(self, sock: Any) -> None:
        self.sock = sock


class _WatchedHTTPConnection(urllib3.connection.HTTPConnection):
    def request(self, *args: Any, **kwargs: Any) -> None:
        _request_watched(self, lambda: super(_WatchedHTTPConnection, self).request(*args, **kwargs))


class _WatchedHTTPSConnection(urllib3.connection.HTTPSConnection):
    def request(self, *args: Any, **kwargs: Any) -> None:
        _request_watched(
            self, lambda: super(_WatchedHTTPSConnection, self).request(*args, **kwargs)
        )


class _WatchedHTTPPool(urllib3.connectionpool.HTTPConnectionPool):
    ConnectionCls = _WatchedHTTPConnection


class _WatchedHTTPSPool(urllib3.connectionpool.HTTPSConnectionPool):
    ConnectionCls = _WatchedHTTPSConnection


_WATCHED_POOLS: Final = {"http": _WatchedHTTPPool, "https": _WatchedHTTPSPool}


class _WatchedAdapter(HTTPAdapter):
    """An adapter whose connections (direct or through a proxy) can be ended by a deadline."""

    def init_poolmanager(self, *args: Any, **kwargs: Any) -> None:
        super().init_poolmanager(*args, **kwargs)
        self.poolmanager.pool_classes_by_scheme = dict(_WATCHED_POOLS)

    def proxy_manager_for(self, proxy: str, **proxy_kwargs: Any) -> Any:
        manager = super().proxy_manager_for(proxy, **proxy_kwargs)
        manager.pool_classes_by_scheme = dict(_WATCHED_POOLS)
        return manager


class RegistryClient:
    """A thread-safe client for one registry (Docker Registry HTTP API v2 / OCI distribution).

    Everything it raises is a `RegistryError`. Use as a context manager, or call `close()`.
    """

    def __init__(
        self,
        config: RegistryConfig,
        *,
        concurrency: int = 8,
        timeout: tuple[float, float] = (5.0, 60.0),
        env: Mapping[str, str] | None = None,
        retry: RetryPolicy | None = None,
        sleep: Callable[[float], None] = time.sleep,
        clock: Callable[[], float] = time.monotonic,
        rand: Callable[[], float] = random.random,
        page_size: int = PAGE_SIZE,
        request_timeout: float | None = 120.0,
        deadline: RunDeadline | None = None,
    ) -> None:
        self.url = normalise_url(config.url)
        self._request_timeout = request_timeout
        self._deadline = deadline
        self._watchdog = _Watchdog()
        self._env: Mapping[str, str] = os.environ if env is None else env
        # per (scheme, host): read once, not parsed from the environment on every request
        self._proxy_cache: dict[tuple[str, str], dict[str, str]] = {}
        self._timeout = timeout
        self._retry = retry or RetryPolicy()
        self._sleep = sleep
        self._rand = rand
        self._page_size = max(1, min(page_size, PAGE_SIZE))
        self._tokens = TokenCache(clock)
        policy_auth = (config.auth.username, config.auth.password) if config.auth else None
        self._credentials: Credentials | None = resolve_credentials(
            self.url, policy_auth, self._env
        )
        self.credential_source = (
            self._credentials.source if self._credentials is not None else "anonymous"
        )
        self._lock = threading.Lock()
        self._token_lock = threading.Lock()
        # Learnt from the first 401: "basic", or "bearer" with the validated challenge.
        self._scheme: str | None = None
        self._bearer: Challenge | None = None

        session = requests.Session()
        session.trust_env = False  # no hidden inputs: no ~/.netrc, no REQUESTS_CA_BUNDLE
        session.headers["User-Agent"] = USER_AGENT
        adapter = _WatchedAdapter(
            pool_connections=4, pool_maxsize=max(1, concurrency), max_retries=0
        )
        session.mount("http://", adapter)
        session.mount("https://", adapter)
        tls = config.tls
        if not tls.verify:
            # Explicitly asked for; said loudly on every construction (registry-facts §6).
            logger.warning(
                "TLS certificate verification is DISABLED for %s (tls.verify: false)", self.url
            )
            warnings.filterwarnings("ignore", category=urllib3.exceptions.InsecureRequestWarning)
            session.verify = False
        elif tls.ca_file:
            if not os.path.isfile(tls.ca_file):
                session.close()
                raise RegistryError(f"tls.ca_file {tls.ca_file} does not exist")
            session.verify = tls.ca_file
        else:
            session.verify = True
        self._session = session

    def __repr__(self) -> str:
        return f"RegistryClient(url={self.url!r}, credential_source={self.credential_source!r})"

    def close(self) -> None:
        self._session.close()
        self._watchdog.close()

    def __enter__(self) -> RegistryClient:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()

    # --- public API ----------------------------------------------------------------------

    def ping(self) -> Ping:
        """`GET /v2/`: reachability, API version, the server's clock, and the auth scheme."""
        resp = self._send("GET", "/v2/", scope=None)
        if resp.status == 404:
            raise RegistryError(
                "no registry API at this URL (GET /v2/ answered 404)",
                url=self._redact(resp.url),
                status=404,
            )
        if resp.status != 200:
            self._raise(resp, "ping")
        date = resp.header("Date")
        server_date = None
        if date:
            try:
                server_date = email.utils.parsedate_to_datetime(date)
            except (TypeError, ValueError, IndexError):
                server_date = None
            if server_date is not None and server_date.tzinfo is None:
                # `-0000` (RFC 5322 "no zone information") parses naive; HTTP dates are GMT
                server_date = server_date.replace(tzinfo=UTC)
        return Ping(
            status=resp.status,
            api_version=resp.header("Docker-Distribution-API-Version"),
            server_date=server_date,
            auth_scheme=self._scheme,
        )

    def catalog(self, on_invalid: Callable[[str], None] | None = None) -> Iterator[str]:
        """Every repository name, following Link pagination; raises if the listing breaks off.

        A name outside the distribution grammar is a ProtocolError, or, with `on_invalid`, is
        passed to it once (raw: the caller escapes it) and left out.
        """
        invalid: set[str] = set()
        for page in self._pages("/v2/_catalog", "repositories", CATALOG_SCOPE, "catalog"):
            for name in page:
                if oci.is_repository(name):
                    yield name
                elif on_invalid is not None:
                    if name not in invalid:
                        invalid.add(name)
                        on_invalid(name)
                else:
                    raise ProtocolError(
                        f'catalog lists an invalid repository name "{untrusted(name[:100])}"',
                        url=self._redact(self.url + "/v2/_catalog"),
                    )

    def list_tags(self, repo: str, on_invalid: Callable[[str], None] | None = None) -> list[str]:
        """All tags of `repo`, sorted and de-duplicated; [] for `{"tags": null}`.

        A tag outside the distribution grammar is a ProtocolError, or, with `on_invalid`, is
        passed to it once (raw: the caller escapes it) and left out.
        """
        self._check_repo(repo)
        path = f"/v2/{repo}/tags/list"
        tags: set[str] = set()
        invalid: set[str] = set()
        for page in self._pages(path, "tags", self._pull(repo), f"tags of {repo}", name=repo):
            for tag in page:
                if oci.is_tag(tag):
                    tags.add(tag)
                elif on_invalid is None:
                    raise ProtocolError(
                        f'tags/list of {repo} holds an invalid tag "{untrusted(tag[:140])}" '
                        "(outside the distribution grammar: what it points at cannot be checked)",
                        url=self._redact(self.url + path),
                    )
                elif tag not in invalid:
                    invalid.add(tag)
                    on_invalid(tag)
        return sorted(tags)

    def head_manifest(self, repo: str, reference: str) -> ManifestRef | None:
        """Resolve a tag or digest with the full Accept set; None on 404.

        The digest is `Docker-Content-Digest` when it is a sha256 digest (checked against a digest
        reference); otherwise the manifest is fetched and hashed.
        """
        self._check_repo(repo)
        self._check_reference(reference)
        resp = self._send(
            "HEAD",
            f"/v2/{repo}/manifests/{reference}",
            scope=self._pull(repo),
            accept=oci.MANIFEST_ACCEPT,
        )
        if resp.status == 404:
            return None
        if resp.status != 200:
            self._raise(resp, f"manifest {repo}@{reference}")
        media_type = _media_type(resp.header("Content-Type"))
        self._refuse_schema1(media_type, repo, reference, resp)
        header = (resp.header("Docker-Content-Digest") or "").strip()
        length = resp.header("Content-Length")
        if header and not oci.is_digest(header):
            raise ProtocolError(
                f"manifest {repo}@{reference}: malformed Docker-Content-Digest",
                url=self._redact(resp.url),
            )
        if oci.is_digest(reference) and header and header != reference:
            raise ProtocolError(
                f"manifest {repo}@{reference}: the registry answered for {header}",
                url=self._redact(resp.url),
            )
        if (
            header.startswith("sha256:")
            and length is not None
            and length.isdigit()
            and media_type in oci.MANIFEST_TYPES
        ):
            return ManifestRef(digest=header, media_type=media_type, size=int(length))
        # No usable header: fetch the bytes and compute (the header is a SHOULD, OCI spec.md).
        fetched = self.get_manifest(repo, reference)
        if fetched is None:
            return None
        return ManifestRef(
            digest=fetched.digest, media_type=fetched.media_type, size=len(fetched.raw)
        )

    def referrers(self, repo: str, digest: str) -> list[str] | None:
        """The digests the OCI 1.1 referrers API lists for `digest` (GET /v2/<repo>/referrers/
        <digest>, OCI distribution-spec "Listing Referrers"); None where the registry does not
        serve the API (404, 400 or 405: distribution, for one). A paged answer (a Link header)
        is refused rather than read in part: a referrer missed would be left behind."""
        self._check_repo(repo)
        self._check_digest(digest)
        where = f"referrers of {repo}@{digest}"
        resp = self._send(
            "GET",
            f"/v2/{repo}/referrers/{digest}",
            scope=self._pull(repo),
            accept=oci.OCI_INDEX,
            max_bytes=MANIFEST_MAX_BYTES,
        )
        if resp.status in (400, 404, 405):
            return None
        if resp.status != 200:
            self._raise(resp, where)
        if resp.header("Link"):
            raise ProtocolError(
                f"{where}: the list is paged, which retention does not read",
                url=self._redact(resp.url),
            )
        try:
            index = oci.parse_manifest(resp.body, oci.OCI_INDEX, oci.sha256_digest(resp.body))
        except ProtocolError as exc:
            raise ProtocolError(f"{where}: {exc}", url=self._redact(resp.url)) from exc
        if not index.is_index:
            raise ProtocolError(f"{where}: not an image index", url=self._redact(resp.url))
        return sorted({d.digest for d in index.children})

    def get_manifest(self, repo: str, reference: str) -> FetchedManifest | None:
        """Fetch and parse a manifest; None on 404.

        The digest is the sha256 of the bytes received; a `Docker-Content-Digest` that disagrees,
        or a body that does not hash to a digest reference, is a ProtocolError.
        """
        self._check_repo(repo)
        self._check_reference(reference)
        resp = self._send(
            "GET",
            f"/v2/{repo}/manifests/{reference}",
            scope=self._pull(repo),
            accept=oci.MANIFEST_ACCEPT,
            max_bytes=MANIFEST_MAX_BYTES,
        )
        if resp.status == 404:
            return None
        if resp.status != 200:
            self._raise(resp, f"manifest {repo}@{reference}")
        raw = resp.body
        content_type = _media_type(resp.header("Content-Type"))
        self._refuse_schema1(content_type, repo, reference, resp)
        digest = oci.sha256_digest(raw)
        where = f"manifest {repo}@{reference}"
        header = (resp.header("Docker-Content-Digest") or "").strip()
        if header:
            if not oci.is_digest(header):
                raise ProtocolError(
                    f"{where}: malformed Docker-Content-Digest", url=self._redact(resp.url)
                )
            if oci.digest_of(raw, header.split(":", 1)[0]) != header:
                raise ProtocolError(
                    f"{where}: Docker-Content-Digest {header} does not match the body "
                    f"received ({digest})",
                    url=self._redact(resp.url),
                )
        if oci.is_digest(reference) and oci.digest_of(raw, reference.split(":", 1)[0]) != reference:
            raise ProtocolError(
                f"{where}: the body received hashes to {digest}", url=self._redact(resp.url)
            )
        manifest = oci.parse_manifest(raw, content_type or None, digest)
        known = oci.MANIFEST_TYPES | oci.SCHEMA1_TYPES
        if content_type in known and manifest.media_type != content_type:
            # OCI spec.md: a client SHOULD reject a mediaType that disagrees with Content-Type.
            raise ProtocolError(
                f"{where}: Content-Type {content_type} disagrees with the body's mediaType "
                f"{untrusted(manifest.media_type)}",
                url=self._redact(resp.url),
            )
        return FetchedManifest(manifest=manifest, raw=raw, media_type=manifest.media_type)

    def get_blob(self, repo: str, digest: str, *, max_bytes: int = CONFIG_MAX_BYTES) -> bytes:
        """A (config) blob's bytes, verified against `digest`; redirects are followed without
        forwarding credentials to another origin."""
        self._check_repo(repo)
        self._check_digest(digest)
        resp = self._send(
            "GET",
            f"/v2/{repo}/blobs/{digest}",
            scope=self._pull(repo),
            accept="*/*",
            max_bytes=max_bytes,
            follow_redirects=True,
        )
        if resp.status != 200:
            self._raise(resp, f"blob {repo}@{digest}")
        if oci.digest_of(resp.body, digest.split(":", 1)[0]) != digest:
            raise ProtocolError(
                f"blob {repo}@{digest}: the body received does not hash to its digest",
                url=self._redact(resp.url),
            )
        return resp.body

    def blob_exists(self, repo: str, digest: str) -> bool:
        """HEAD on a blob: True on 200, False on 404."""
        self._check_repo(repo)
        self._check_digest(digest)
        resp = self._send(
            "HEAD",
            f"/v2/{repo}/blobs/{digest}",
            scope=self._pull(repo),
            accept="*/*",
            follow_redirects=True,
        )
        if resp.status == 200:
            return True
        if resp.status == 404:
            return False
        self._raise(resp, f"blob {repo}@{digest}")

    def delete_manifest(self, repo: str, digest: str) -> bool:
        """DELETE a manifest by digest: True on 202, False on 404 (already gone).

        Refuses, before any request, anything but a well-formed digest: distribution 3 treats a
        malformed digest as a tag name, and 2.8 unlinks a layer given a layer digest.
        """
        self._check_repo(repo)
        self._check_digest(digest)
        return self._delete(repo, digest)

    def probe_delete(self, repo: str) -> bool:
        """Whether digest deletion is enabled, by deleting the all-zero digest: 404 → True,
        405 → False. Never touches a real manifest."""
        self._check_repo(repo)
        try:
            self._delete(repo, oci.ZERO_DIGEST)
        except DeleteDisabledError:
            return False
        return True

    def put_manifest(self, repo: str, reference: str, raw: bytes, media_type: str) -> str:
        """Upload manifest bytes under a tag or digest; returns their sha256 digest."""
        self._check_repo(repo)
        self._check_reference(reference)
        digest = oci.sha256_digest(raw)
        if oci.is_digest(reference) and oci.digest_of(raw, reference.split(":", 1)[0]) != reference:
            raise RegistryError(f"manifest bytes do not hash to {reference}; not uploaded")
        if len(raw) > MANIFEST_MAX_BYTES:
            raise RegistryError(f"manifest of {len(raw)} bytes is larger than the 4 MiB limit")
        resp = self._send(
            "PUT",
            f"/v2/{repo}/manifests/{reference}",
            scope=repository_scope(repo, ("pull", "push")),
            body=raw,
            content_type=media_type,
        )
        if resp.status in (200, 201, 202):
            header = (resp.header("Docker-Content-Digest") or "").strip()
            if header and header != digest:
                raise ProtocolError(
                    f"manifest {repo}:{reference}: the registry stored {header}, we sent {digest}",
                    url=self._redact(resp.url),
                )
            return digest
        if resp.status == 403:
            raise self._error(AuthError, resp, f"missing push permission on repository {repo}")
        if resp.status == 405:
            raise self._error(
                RegistryError,
                resp,
                f"the registry refuses manifest uploads to {repo}",
                hint="the registry may be in read-only mode",
            )
        self._raise(resp, f"upload of manifest {repo}:{reference}")

    # --- DELETE ----------------------------------------------------------------------------

    def _delete(self, repo: str, digest: str) -> bool:
        resp = self._send(
            "DELETE",
            f"/v2/{repo}/manifests/{digest}",
            scope=repository_scope(repo, ("pull", "delete")),
        )
        if resp.status in (200, 202):
            return True
        if resp.status == 404:
            return False
        if resp.status == 405:
            raise self._error(DeleteDisabledError, resp, _DELETE_DISABLED)
        if resp.status == 403:
            raise self._error(
                AuthError,
                resp,
                f"missing delete permission on repository {repo}",
                hint="the credentials need the 'delete' action on the repository",
            )
        self._raise(resp, f"DELETE of manifest {repo}@{digest}")

    # --- pagination --------------------------------------------------------------------------

    def _pages(
        self, path: str, key: str, scope: str, what: str, *, name: str | None = None
    ) -> Iterator[list[str]]:
        """Follow `Link: <...>; rel="next"` (relative or absolute) until it stops.

        Asks for n ≤ 1000; on 400 PAGINATION_NUMBER_INVALID asks again with a smaller n. A Link
        that repeats, a `last` that does not advance, a page of nothing new, a Link to another
        endpoint, too many pages, or any error mid-way raises: a listing is complete or an error.
        """
        n = self._page_size
        url: str | None = f"{self.url}{path}?{urlencode({'n': n})}"
        seen_urls: set[str] = set()
        seen_items: set[str] = set()
        last_marker: str | None = None
        pages = 0
        while url is not None:
            if url in seen_urls:
                raise ProtocolError(
                    f"{what}: pagination loops (a Link repeats)", url=self._redact(url)
                )
            seen_urls.add(url)
            pages += 1
            if pages > MAX_PAGES:
                raise ProtocolError(
                    f"{what}: more than {MAX_PAGES} pages; giving up", url=self._redact(url)
                )
            resp = self._send(
                "GET", url, scope=scope, accept="application/json", max_bytes=LIST_MAX_BYTES
            )
            if resp.status == 400 and n > 1:
                code, _ = _error_details(resp.body)
                if code == "PAGINATION_NUMBER_INVALID":
                    n = max(1, n // 2)
                    seen_urls.discard(url)
                    pages -= 1
                    url = _with_query(url, n=str(n))
                    logger.debug("%s: page size refused, asking for n=%d", what, n)
                    continue
            if resp.status == 404 and name is not None and pages == 1:
                code, _ = _error_details(resp.body)
                if code == "NAME_UNKNOWN":
                    return  # a repository that does not exist has no tags
            if resp.status != 200:
                self._raise(resp, f"listing {what} (page {pages})")
            items = self._page_items(resp, key, what, name)
            if items and seen_items.issuperset(items):
                raise ProtocolError(
                    f"{what}: pagination returned a page seen before", url=self._redact(resp.url)
                )
            seen_items.update(items)
            yield items
            target = parse_link_next(resp.header("Link"))
            if target is None:
                return
            next_url = urljoin(resp.url, target)
            if not self._same_endpoint(next_url, path):
                raise ProtocolError(
                    f"{what}: pagination Link points elsewhere", url=self._redact(next_url)
                )
            marker = dict(parse_qsl(urlsplit(next_url).query)).get("last")
            if marker is not None:
                if last_marker is not None and marker <= last_marker:
                    raise ProtocolError(
                        f"{what}: pagination does not advance (last={marker[:100]!r})",
                        url=self._redact(next_url),
                    )
                last_marker = marker
            url = next_url

    def _page_items(self, resp: _Response, key: str, what: str, name: str | None) -> list[str]:
        try:
            doc: Any = oci.load_json(resp.body)
        except (ValueError, UnicodeDecodeError) as exc:
            raise ProtocolError(
                f"{what}: the page is not valid JSON", url=self._redact(resp.url)
            ) from exc
        if not isinstance(doc, dict) or key not in doc:
            raise ProtocolError(f"{what}: the page has no {key!r} list", url=self._redact(resp.url))
        if name is not None and doc.get("name") not in (None, name):
            raise ProtocolError(
                f"{what}: the page is for another repository", url=self._redact(resp.url)
            )
        items = doc[key]
        if items is None:  # distribution 2.8 answers {"tags": null} after the last delete
            return []
        if not isinstance(items, list) or not all(isinstance(i, str) for i in items):
            raise ProtocolError(
                f"{what}: {key!r} is not a list of strings", url=self._redact(resp.url)
            )
        return items

    def _same_endpoint(self, url: str, path: str) -> bool:
        base = urlsplit(self.url)
        target = urlsplit(url)
        return (target.scheme, target.netloc.lower()) == (
            base.scheme,
            base.netloc,
        ) and target.path == base.path + path

    # --- the request engine --------------------------------------------------------------

    def _send(
        self,
        method: str,
        path_or_url: str,
        *,
        scope: str | None,
        accept: str | None = None,
        body: bytes | None = None,
        content_type: str | None = None,
        max_bytes: int = ERROR_MAX_BYTES,
        follow_redirects: bool = False,
    ) -> _Response:
        """One logical request: auth (one initial challenge, one refresh on 401), retries."""
        url = path_or_url if "://" in path_or_url else self.url + path_or_url
        headers: dict[str, str] = {}
        if accept:
            headers["Accept"] = accept
        if content_type:
            headers["Content-Type"] = content_type
        answered_challenge = False
        refreshed = False
        while True:
            authorization = self._authorization(scope)
            if authorization is not None:
                headers["Authorization"] = authorization
            else:
                headers.pop("Authorization", None)
            resp = self._with_retries(
                method, url, headers, body, max_bytes=max_bytes, follow_redirects=follow_redirects
            )
            if resp.status != 401:
                return resp
            if _origin(resp.url) != _origin(self.url):
                # A 401 from a redirect target (object storage, or a host the registry points
                # at) is not the registry's challenge: answering it would send the registry's
                # credentials, or a token, to a realm that host chose.
                raise RedirectRefused(
                    f"the redirect target {self._redact(resp.url)} refused the request "
                    "(HTTP 401); its challenge is not the registry's, so nothing was sent to it",
                    url=self._redact(url),
                    status=401,
                    hint="a registry that redirects to storage must give it a signed URL",
                )
            challenges = self._challenges(resp)
            bearer = next((c for c in challenges if c.scheme == "bearer"), None)
            if authorization is None and not answered_challenge:
                answered_challenge = True
                self._learn(challenges, resp)
                continue
            if authorization is not None and authorization.startswith("Basic "):
                raise self._error(
                    AuthError,
                    resp,
                    f"the registry rejected the credentials from {self.credential_source}",
                    hint="check the username and password",
                )
            if bearer is not None and bearer.param("error") == "insufficient_scope":
                raise self._error(
                    AuthError,
                    resp,
                    f"missing {_missing_permission(scope)}",
                    hint=f"the token server did not grant {scope or 'access'} to "
                    f"{self.credential_source} credentials",
                )
            if authorization is not None and not refreshed:
                refreshed = True
                self._forget_token(scope, authorization)
                if bearer is not None:
                    self._learn([bearer], resp)
                continue
            raise self._error(
                AuthError,
                resp,
                "the registry still answers 401 after authenticating"
                if authorization is not None
                else "the registry requires authentication; no credentials found "
                "(policy registry.auth, docker config.json)",
                hint=None if authorization is not None else "set registry.auth or docker login",
            )

    def _challenges(self, resp: _Response) -> list[Challenge]:
        header = resp.header("WWW-Authenticate")
        if not header:
            raise self._error(AuthError, resp, "401 without a WWW-Authenticate challenge")
        return parse_challenges(header)

    def _learn(self, challenges: list[Challenge], resp: _Response) -> None:
        """Remember how this registry authenticates, from a 401's challenges."""
        bearer = next((c for c in challenges if c.scheme == "bearer"), None)
        basic = next((c for c in challenges if c.scheme == "basic"), None)
        with self._lock:
            if bearer is not None:
                # validate now (realm host and scheme) so a bad realm fails before any token call
                build_token_request(bearer, (), self.url)
                self._scheme, self._bearer = "bearer", bearer
            elif basic is not None:
                if self._credentials is None:
                    raise self._error(
                        AuthError,
                        resp,
                        "the registry requires authentication; no credentials found "
                        "(policy registry.auth, docker config.json)",
                        hint="set registry.auth in the policy, or docker login",
                    )
                if self._credentials.identity_token:
                    raise self._error(
                        AuthError, resp, "an identity token cannot be used for Basic auth"
                    )
                self._scheme, self._bearer = "basic", None
            else:
                schemes = ", ".join(sorted({untrusted(c.scheme) for c in challenges})) or "none"
                raise self._error(
                    AuthError, resp, f"unsupported authentication scheme(s): {schemes}"
                )

    def _authorization(self, scope: str | None) -> str | None:
        with self._lock:
            scheme, bearer = self._scheme, self._bearer
        if scheme == "basic" and self._credentials is not None:
            return self._credentials.basic_header()
        if scheme == "bearer" and bearer is not None:
            return "Bearer " + self._token(bearer, scope)
        return None

    def _token_request(self, bearer: Challenge, scope: str | None) -> TokenRequest:
        return build_token_request(bearer, (scope,) if scope else (), self.url)

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
            resp = self._with_retries(
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
            resp = self._with_retries(
                "GET", realm_url, headers, None, max_bytes=TOKEN_MAX_BYTES, follow_redirects=False
            )
        where = self._redact(request.realm)
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
            code, _ = _error_details(resp.body)
            raise AuthError(
                f"the token server answered {resp.status}", url=where, status=resp.status, code=code
            )
        return parse_token_response(resp.body, self._tokens.now())

    def _with_retries(
        self,
        method: str,
        url: str,
        headers: Mapping[str, str],
        body: bytes | None,
        *,
        max_bytes: int,
        follow_redirects: bool,
        retry_methods: frozenset[str] = RETRY_METHODS,
    ) -> _Response:
        """Send, retrying connection errors, timeouts, truncated bodies and 429/502/503/504 for
        the methods that are safe to repeat, with backoff, jitter, Retry-After and a budget."""
        policy = self._retry
        retryable = method in retry_methods
        waited = 0.0
        attempt = 0
        while True:
            attempt += 1
            failure: str
            retry_after: float | None = None
            try:
                resp = self._attempt(method, url, headers, body, max_bytes, follow_redirects)
            except requests.exceptions.SSLError as exc:
                # certificate problems do not heal by retrying
                raise TransportError(
                    "TLS error: " + _tls_reason(exc),
                    url=self._redact(url),
                    hint="set tls.ca_file to the CA that signed the registry's certificate",
                ) from exc
            except _TRANSPORT_ERRORS as exc:
                failure = _describe(exc)
                last_exc: BaseException | None = exc
                last_resp: _Response | None = None
            else:
                if resp.status not in RETRY_STATUSES:
                    return resp
                failure = f"HTTP {resp.status}"
                last_exc, last_resp = None, resp
                retry_after = parse_retry_after(resp.header("Retry-After"), datetime.now(UTC))
            if not retryable or attempt >= policy.attempts:
                break
            delay = (
                retry_after
                if retry_after is not None
                else backoff_delay(policy, attempt - 1, self._rand)
            )
            if self._deadline is not None and time.monotonic() + delay >= self._deadline.at:
                logger.debug(
                    "%s %s: not waiting %.1fs (the run's deadline comes first)",
                    method,
                    self._redact(url),
                    delay,
                )
                break
            if waited + delay > policy.budget:
                logger.debug(
                    "%s %s: not waiting %.1fs (retry budget %.0fs)",
                    method,
                    self._redact(url),
                    delay,
                    policy.budget,
                )
                break
            logger.debug(
                "%s %s: %s; retry %d/%d in %.2fs",
                method,
                self._redact(url),
                failure,
                attempt,
                policy.attempts - 1,
                delay,
            )
            self._sleep(delay)
            waited += delay
        where = self._redact(url)
        if last_resp is not None:
            if not retryable:
                return last_resp
            code, message = _error_details(last_resp.body)
            text = f"{method} failed after {attempt} attempt(s): HTTP {last_resp.status}"
            if last_resp.status == 429:
                text = f"rate limited: {text}"
            if message:
                text += f" ({message})"
            raise TransportError(text, url=where, status=last_resp.status, code=code)
        assert last_exc is not None
        raise TransportError(
            f"{method} failed after {attempt} attempt(s): {failure}",
            url=where,
            hint=f"is the registry running and reachable at {self.url}? "
            "`retention doctor -p POLICY` checks the connection, credentials and deletes",
        ) from last_exc

    def _attempt(
        self,
        method: str,
        url: str,
        headers: Mapping[str, str],
        body: bytes | None,
        max_bytes: int,
        follow_redirects: bool,
    ) -> _Response:
        """One HTTP exchange within its deadline: `settings.timeouts.request` from now, or the
        run's deadline when that comes first. A deadline that passes is a TransportError, not
        retried: the next attempt would meet the same server."""
        now = time.monotonic()
        limits: list[tuple[float, str]] = []
        if self._request_timeout is not None:
            limits.append(
                (
                    now + self._request_timeout,
                    f"no complete answer within {self._request_timeout:g}s "
                    "(settings.timeouts.request)",
                )
            )
        if self._deadline is not None:
            limits.append(
                (
                    self._deadline.at,
                    f"the command's deadline passed ({self._deadline.seconds:g}s, "
                    "settings.timeouts.run)",
                )
            )
        if not limits:
            return self._exchange(method, url, headers, body, max_bytes, follow_redirects)
        at, why = min(limits)
        hint = (
            "the registry, or something in front of it, answers too slowly; raise "
            "settings.timeouts in the policy if it is only slow"
        )
        if at <= now:
            raise TransportError(f"{method} not sent: {why}", url=self._redact(url), hint=hint)
        watch = self._watchdog.watch(at)
        _current.watch = watch
        try:
            return self._exchange(method, url, headers, body, max_bytes, follow_redirects)
        except Exception as exc:
            if watch.expired:
                raise TransportError(
                    f"{method} failed: {why}", url=self._redact(url), hint=hint
                ) from exc
            raise
        finally:
            _current.watch = None
            self._watchdog.done(watch)

    def _exchange(
        self,
        method: str,
        url: str,
        headers: Mapping[str, str],
        body: bytes | None,
        max_bytes: int,
        follow_redirects: bool,
    ) -> _Response:
        """One HTTP exchange (plus redirect hops for GET/HEAD), body read within `max_bytes`."""
        current = url
        hop_headers = dict(headers)
        for _hop in range(MAX_REDIRECTS + 1):
            started = time.monotonic()
            answered: list[requests.Response] = []  # closed if requests fails after the answer
            try:
                raw = self._session.request(
                    method,
                    current,
                    headers=hop_headers,
                    data=body,
                    timeout=self._timeout,
                    allow_redirects=False,
                    proxies=self._proxies(current),
                    stream=True,
                    hooks={"response": lambda r, *_a, _to=answered, **_kw: _to.append(r)},
                )
            except requests.RequestException:
                raise
            except ValueError as exc:  # UnicodeDecodeError among them
                for unread in answered:
                    unread.close()
                # requests reads a redirect's Location (UTF-8, then a URL) even when it does not
                # follow it: a Location that is neither raised from inside requests
                raise ProtocolError(
                    f"{method} answer holds a Location header that is not a UTF-8 URL",
                    url=self._redact(current),
                ) from exc
            try:
                location = raw.headers.get("Location")
                if location is not None and not location.isascii():
                    # http.client reads headers as latin-1; requests (RFC 3986 IRIs) as UTF-8
                    location = location.encode("latin-1").decode("utf-8")
                if (
                    follow_redirects
                    and method in ("GET", "HEAD")
                    and raw.status_code in (301, 302, 303, 307, 308)
                    and location
                ):
                    self._log(method, current, raw.status_code, started)
                    target = urljoin(current, location)
                    if urlsplit(target).scheme not in ("http", "https"):
                        raise ProtocolError("redirect to a non-http URL", url=self._redact(target))
                    if urlsplit(current).scheme == "https" and urlsplit(target).scheme == "http":
                        raise ProtocolError(
                            "redirect from https to plain http refused", url=self._redact(target)
                        )
                    if _origin(target) != _origin(current):
                        # never forward credentials to another origin (object storage)
                        hop_headers.pop("Authorization", None)
                    current = target
                    continue
                payload = self._read(raw, method, max_bytes, current)
                self._log(method, current, raw.status_code, started)
                return _Response(raw.status_code, raw.headers, payload, current)
            finally:
                raw.close()
        raise ProtocolError(f"more than {MAX_REDIRECTS} redirects", url=self._redact(url))

    def _read(self, raw: requests.Response, method: str, max_bytes: int, url: str) -> bytes:
        if method == "HEAD" or raw.status_code in (204, 304):
            return b""
        ok = 200 <= raw.status_code < 300
        cap = max_bytes if ok else ERROR_MAX_BYTES
        length = raw.headers.get("Content-Length")
        if ok and length is not None and length.isdigit() and int(length) > cap:
            raise ProtocolError(
                f"response of {int(length)} bytes is larger than the {cap}-byte limit",
                url=self._redact(url),
            )
        chunks: list[bytes] = []
        total = 0
        for chunk in raw.iter_content(chunk_size=65536):
            total += len(chunk)
            if total > cap:
                if not ok:
                    chunks.append(chunk[: cap - (total - len(chunk))])
                    break
                raise ProtocolError(
                    f"response larger than the {cap}-byte limit", url=self._redact(url)
                )
            chunks.append(chunk)
        data = b"".join(chunks)
        encoding = raw.headers.get("Content-Encoding", "identity").lower()
        if (
            ok
            and length is not None
            and length.isdigit()
            and encoding in ("", "identity")
            and len(data) != int(length)
        ):
            raise _Truncated(f"body ended after {len(data)} of {length} bytes")
        return data

    def _proxies(self, url: str) -> dict[str, str]:
        parts = urlsplit(url)
        key = (parts.scheme, (parts.hostname or "").lower())
        proxies = self._proxy_cache.get(key)
        if proxies is None:
            proxies = self._proxy_cache[key] = _proxies_for(url, self._env)
        return dict(proxies)  # a copy: requests may add to the mapping it is given

    def _log(self, method: str, url: str, status: int, started: float) -> None:
        if not logger.isEnabledFor(logging.DEBUG):
            return  # redacting the URL for a line nobody reads is most of this call's cost
        # path only: never a query string (it may hold a signature) nor any header
        elapsed = (time.monotonic() - started) * 1000
        logger.debug("%s %s %d %.0fms", method, self._redact(url), status, elapsed)

    # --- errors and checks -------------------------------------------------------------------

    def _redact(self, url: str) -> str:
        """The URL for an error: secrets redacted, and escaped, since a redirect's `Location`
        (or a token realm) is the server's text."""
        return untrusted(redact_url(url))

    def _error(
        self,
        cls: type[RegistryError],
        resp: _Response,
        message: str,
        *,
        hint: str | None = None,
    ) -> RegistryError:
        code, _ = _error_details(resp.body)
        return cls(message, url=self._redact(resp.url), status=resp.status, code=code, hint=hint)

    def _raise(self, resp: _Response, what: str) -> NoReturn:
        """Raise the error a final non-success status means for `what`."""
        _code, message = _error_details(resp.body)
        detail = f": {message}" if message else ""
        if resp.status == 401:
            raise self._error(AuthError, resp, f"{what}: authentication failed{detail}")
        if resp.status == 403:
            raise self._error(AuthError, resp, f"{what}: access denied{detail}")
        if resp.status in RETRY_STATUSES or resp.status >= 500:
            raise self._error(TransportError, resp, f"{what}: the registry failed{detail}")
        raise self._error(RegistryError, resp, f"{what}: HTTP {resp.status}{detail}")

    def _refuse_schema1(self, media_type: str, repo: str, ref: str, resp: _Response) -> None:
        if media_type in oci.SCHEMA1_TYPES:
            raise ProtocolError(
                f"manifest {repo}@{ref} is Docker schema 1, which retention does not support",
                url=self._redact(resp.url),
                hint="re-push the image with a current client (schema 2 or OCI)",
            )

    @staticmethod
    def _pull(repo: str) -> str:
        return repository_scope(repo, ("pull",))

    @staticmethod
    def _check_repo(repo: str) -> None:
        if not oci.is_repository(repo):
            raise RegistryError(f"invalid repository name {repo[:300]!r}")

    @staticmethod
    def _check_reference(reference: str) -> None:
        if not (oci.is_digest(reference) or oci.is_tag(reference)):
            raise RegistryError(f"invalid tag or digest {reference[:200]!r}")

    @staticmethod
    def _check_digest(digest: str) -> None:
        if not oci.is_digest(digest):
            raise RegistryError(
                f"refusing a malformed digest {digest[:200]!r}: only sha256:<64 hex> "
                "(or sha512:<128 hex>) is accepted"
            )


def _origin(url: str) -> tuple[str, str, int | None]:
    parts = urlsplit(url)
    port = parts.port or {"http": 80, "https": 443}.get(parts.scheme)
    return parts.scheme, (parts.hostname or "").lower(), port


def _with_query(url: str, **params: str) -> str:
    parts = urlsplit(url)
    query = dict(parse_qsl(parts.query, keep_blank_values=True))
    query.update(params)
    return urlunsplit((parts.scheme, parts.netloc, parts.path, urlencode(query), ""))


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


def _tls_reason(exc: BaseException) -> str:
    text = str(exc)
    if "CERTIFICATE_VERIFY_FAILED" in text or "certificate verify failed" in text:
        return "certificate verify failed"
    if "hostname" in text.lower() and "match" in text.lower():
        return "certificate does not match the host name"
    return "handshake failed"


def _proxies_for(url: str, env: Mapping[str, str]) -> dict[str, str]:
    """HTTPS_PROXY / HTTP_PROXY / NO_PROXY from the injected environment (requests' own
    environment lookup is off: `trust_env = False`)."""

    def get(name: str) -> str | None:
        return env.get(name) or env.get(name.lower()) or None

    parts = urlsplit(url)
    host = (parts.hostname or "").lower()
    for entry in (get("NO_PROXY") or "").split(","):
        entry = entry.strip().lower()
        if not entry:
            continue
        if entry == "*":
            return {}
        entry_host = entry.rsplit(":", 1)[0] if entry.count(":") == 1 else entry
        entry_host = entry_host.lstrip(".")
        if host == entry_host or host.endswith("." + entry_host):
            return {}
    proxy = get("HTTPS_PROXY") if parts.scheme == "https" else get("HTTP_PROXY")
    return {parts.scheme: proxy} if proxy else {}


def _describe(exc: BaseException) -> str:
    if isinstance(exc, requests.exceptions.ConnectTimeout):
        return "connect timeout"
    if isinstance(exc, requests.exceptions.ReadTimeout):
        return "read timeout"
    if isinstance(exc, requests.exceptions.ConnectionError):
        return "connection error"
    if isinstance(exc, _Truncated | requests.exceptions.ChunkedEncodingError):
        return "truncated response"
    return exc.__class__.__name__
