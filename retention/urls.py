"""URLs as the registry code shows, compares and builds them: the one `redact_url`, origins,
the registry base URL. Pure: no HTTP, no environment.
"""

from __future__ import annotations

from urllib.parse import parse_qsl, urlencode, urlsplit, urlunsplit

from retention.errors import RegistryError
from retention.text import untrusted

_DEFAULT_PORTS = (("http", 80), ("https", 443))


def redact_url(url: str) -> str:
    """`scheme://host[:port]/path`: no userinfo, query or fragment (they may hold a password, a
    signature or a token); scheme and host in lower case, an IPv6 host in brackets, a default
    port left out. The path is kept as written: it is what was asked for."""
    parts = urlsplit(url.strip())
    scheme = parts.scheme.lower()
    host = (parts.hostname or "").lower()
    if ":" in host:  # IPv6 literal
        host = f"[{host}]"
    port = parts.port
    if (scheme, port) in _DEFAULT_PORTS:
        port = None
    netloc = f"{host}:{port}" if port else host
    return urlunsplit((scheme, netloc, parts.path, "", ""))


def registry_key(url: str) -> str:
    """`redact_url` without a trailing slash: the one spelling of a registry URL, for comparing
    and storing (the journal's `registry`, a plan's registry against the policy's)."""
    redacted = urlsplit(redact_url(url))
    return urlunsplit(redacted._replace(path=redacted.path.rstrip("/")))


def shown_url(url: str) -> str:
    """The URL for an error: secrets redacted, and escaped, since a redirect's `Location` (or a
    token realm) is the server's text (retention/text.py)."""
    return untrusted(redact_url(url))


def origin(url: str) -> tuple[str, str, int | None]:
    """(scheme, host, port) with the default port filled in: what "the same origin" compares."""
    parts = urlsplit(url)
    port = parts.port or {"http": 80, "https": 443}.get(parts.scheme)
    return parts.scheme, (parts.hostname or "").lower(), port


def with_query(url: str, **params: str) -> str:
    """`url` with `params` set in its query string (others kept), without a fragment."""
    parts = urlsplit(url)
    query = dict(parse_qsl(parts.query, keep_blank_values=True))
    query.update(params)
    return urlunsplit((parts.scheme, parts.netloc, parts.path, urlencode(query), ""))


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
