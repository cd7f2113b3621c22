"""The HTTP transport to one registry: the Session (TLS, proxies, User-Agent), a deadline on
every attempt, retries with backoff for what is safe to repeat, redirects, and bodies read within
a cap. Knows nothing of auth or endpoints; never logs a header or a query string.
"""

from __future__ import annotations

import email.utils
import logging
import os
import time
import warnings
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Final, NoReturn
from urllib.parse import urljoin, urlsplit

import requests
import urllib3
from requests.structures import CaseInsensitiveDict

from retention import __version__, oci
from retention.errors import AuthError, ProtocolError, RegistryError, TransportError
from retention.policy.model import Tls
from retention.registry.api import RetryPolicy, RunDeadline
from retention.registry.deadlines import Watchdog, WatchedAdapter, sending
from retention.text import untrusted
from retention.urls import origin, shown_url

# The client's logger: `--verbose` lines keep the name they have always had.
logger = logging.getLogger("retention.registry.client")

USER_AGENT: Final = f"retention/{__version__}"

# Response size limits: the spec asks registries to accept manifests of at least 4 MiB; nothing
# legitimate is larger. Configs are small JSON. Bodies are streamed and cut at the cap.
MANIFEST_MAX_BYTES: Final = 4 * 1024 * 1024
CONFIG_MAX_BYTES: Final = 8 * 1024 * 1024
LIST_MAX_BYTES: Final = 16 * 1024 * 1024
TOKEN_MAX_BYTES: Final = 1024 * 1024
ERROR_MAX_BYTES: Final = 64 * 1024

MAX_REDIRECTS: Final = 5

RETRY_STATUSES: Final = frozenset({429, 502, 503, 504})
# GET and HEAD are safe; a DELETE that is repeated answers 404, which means done; a manifest PUT
# is idempotent by content (same bytes, same digest). Nothing else is sent.
RETRY_METHODS: Final = frozenset({"GET", "HEAD", "DELETE", "PUT"})


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


def error_details(body: bytes) -> tuple[str | None, str | None]:
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


@dataclass(frozen=True, slots=True)
class Response:
    """One answer, body read in full (within its cap)."""

    status: int
    headers: CaseInsensitiveDict[str]
    body: bytes
    url: str  # the final URL, after redirects

    def header(self, name: str) -> str | None:
        return self.headers.get(name)


class _Truncated(Exception):
    """Internal: a body that ended before its Content-Length; retried like a connection error."""


_TRANSPORT_ERRORS = (
    requests.exceptions.ConnectionError,
    requests.exceptions.Timeout,
    requests.exceptions.ChunkedEncodingError,
    requests.exceptions.ContentDecodingError,
    _Truncated,
)


class Transport:
    """Sends one request (with its retries) to the registry at `url` or to a URL it names (a
    redirect target, a token realm). Thread-safe."""

    def __init__(
        self,
        url: str,
        tls: Tls,
        *,
        concurrency: int,
        timeout: tuple[float, float],
        env: Mapping[str, str],
        retry: RetryPolicy,
        sleep: Callable[[float], None],
        rand: Callable[[], float],
        request_timeout: float | None,
        deadline: RunDeadline | None,
    ) -> None:
        self.url = url
        self._request_timeout = request_timeout
        self._deadline = deadline
        self._watchdog = Watchdog()
        self._env = env
        # per (scheme, host): read once, not parsed from the environment on every request
        self._proxy_cache: dict[tuple[str, str], dict[str, str]] = {}
        self._timeout = timeout
        self._retry = retry
        self._sleep = sleep
        self._rand = rand
        self._session = _session(url, tls, concurrency)

    def close(self) -> None:
        self._session.close()
        self._watchdog.close()

    def with_retries(
        self,
        method: str,
        url: str,
        headers: Mapping[str, str],
        body: bytes | None,
        *,
        max_bytes: int,
        follow_redirects: bool,
        retry_methods: frozenset[str] = RETRY_METHODS,
    ) -> Response:
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
                    url=shown_url(url),
                    hint="set tls.ca_file to the CA that signed the registry's certificate",
                ) from exc
            except _TRANSPORT_ERRORS as exc:
                failure = _describe(exc)
                last_exc: BaseException | None = exc
                last_resp: Response | None = None
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
            if not self._may_wait(method, url, delay, waited):
                break
            logger.debug(
                "%s %s: %s; retry %d/%d in %.2fs",
                method,
                shown_url(url),
                failure,
                attempt,
                policy.attempts - 1,
                delay,
            )
            self._sleep(delay)
            waited += delay
        if last_resp is not None and not retryable:
            return last_resp
        self._fail(method, url, attempt, failure, last_resp, last_exc)

    def _may_wait(self, method: str, url: str, delay: float, waited: float) -> bool:
        """Whether a retry `delay` seconds from now fits the run's deadline and the budget."""
        if self._deadline is not None and time.monotonic() + delay >= self._deadline.at:
            logger.debug(
                "%s %s: not waiting %.1fs (the run's deadline comes first)",
                method,
                shown_url(url),
                delay,
            )
            return False
        if waited + delay > self._retry.budget:
            logger.debug(
                "%s %s: not waiting %.1fs (retry budget %.0fs)",
                method,
                shown_url(url),
                delay,
                self._retry.budget,
            )
            return False
        return True

    def _fail(
        self,
        method: str,
        url: str,
        attempt: int,
        failure: str,
        last_resp: Response | None,
        last_exc: BaseException | None,
    ) -> NoReturn:
        """The TransportError of a request that failed on every attempt it was allowed."""
        where = shown_url(url)
        if last_resp is not None:
            code, message = error_details(last_resp.body)
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
    ) -> Response:
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
            raise TransportError(f"{method} not sent: {why}", url=shown_url(url), hint=hint)
        watch = self._watchdog.watch(at)
        sending.watch = watch
        try:
            return self._exchange(method, url, headers, body, max_bytes, follow_redirects)
        except Exception as exc:
            if watch.expired:
                raise TransportError(
                    f"{method} failed: {why}", url=shown_url(url), hint=hint
                ) from exc
            raise
        finally:
            sending.watch = None
            self._watchdog.done(watch)

    def _exchange(
        self,
        method: str,
        url: str,
        headers: Mapping[str, str],
        body: bytes | None,
        max_bytes: int,
        follow_redirects: bool,
    ) -> Response:
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
                    url=shown_url(current),
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
                        raise ProtocolError("redirect to a non-http URL", url=shown_url(target))
                    if urlsplit(current).scheme == "https" and urlsplit(target).scheme == "http":
                        raise ProtocolError(
                            "redirect from https to plain http refused", url=shown_url(target)
                        )
                    if origin(target) != origin(current):
                        # never forward credentials to another origin (object storage)
                        hop_headers.pop("Authorization", None)
                    current = target
                    continue
                payload = self._read(raw, method, max_bytes, current)
                self._log(method, current, raw.status_code, started)
                return Response(raw.status_code, raw.headers, payload, current)
            finally:
                raw.close()
        raise ProtocolError(f"more than {MAX_REDIRECTS} redirects", url=shown_url(url))

    def _read(self, raw: requests.Response, method: str, max_bytes: int, url: str) -> bytes:
        if method == "HEAD" or raw.status_code in (204, 304):
            return b""
        ok = 200 <= raw.status_code < 300
        cap = max_bytes if ok else ERROR_MAX_BYTES
        length = raw.headers.get("Content-Length")
        if ok and length is not None and length.isdigit() and int(length) > cap:
            raise ProtocolError(
                f"response of {int(length)} bytes is larger than the {cap}-byte limit",
                url=shown_url(url),
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
                    f"response larger than the {cap}-byte limit", url=shown_url(url)
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
        logger.debug("%s %s %d %.0fms", method, shown_url(url), status, elapsed)


# --- answers as errors -------------------------------------------------------------------------


def error(
    cls: type[RegistryError], resp: Response, message: str, *, hint: str | None = None
) -> RegistryError:
    """`cls` for an answer: its URL (redacted, escaped), status and registry error code."""
    code, _ = error_details(resp.body)
    return cls(message, url=shown_url(resp.url), status=resp.status, code=code, hint=hint)


def raise_for(resp: Response, what: str) -> NoReturn:
    """Raise the error a final non-success status means for `what`."""
    _code, message = error_details(resp.body)
    detail = f": {message}" if message else ""
    if resp.status == 401:
        raise error(AuthError, resp, f"{what}: authentication failed{detail}")
    if resp.status == 403:
        raise error(AuthError, resp, f"{what}: access denied{detail}")
    if resp.status in RETRY_STATUSES or resp.status >= 500:
        raise error(TransportError, resp, f"{what}: the registry failed{detail}")
    raise error(RegistryError, resp, f"{what}: HTTP {resp.status}{detail}")


def _session(url: str, tls: Tls, concurrency: int) -> requests.Session:
    """A Session with no hidden inputs, our User-Agent, watched connections and the policy's TLS."""
    session = requests.Session()
    session.trust_env = False  # no hidden inputs: no ~/.netrc, no REQUESTS_CA_BUNDLE
    session.headers["User-Agent"] = USER_AGENT
    adapter = WatchedAdapter(pool_connections=4, pool_maxsize=max(1, concurrency), max_retries=0)
    session.mount("http://", adapter)
    session.mount("https://", adapter)
    if not tls.verify:
        # Explicitly asked for; said loudly on every construction (docs/decisions.md, HTTP).
        logger.warning("TLS certificate verification is DISABLED for %s (tls.verify: false)", url)
        warnings.filterwarnings("ignore", category=urllib3.exceptions.InsecureRequestWarning)
        session.verify = False
    elif tls.ca_file:
        if not os.path.isfile(tls.ca_file):
            session.close()
            raise RegistryError(f"tls.ca_file {tls.ca_file} does not exist")
        session.verify = tls.ca_file
    else:
        session.verify = True
    return session


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
