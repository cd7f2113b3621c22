"""Pagination of the registry's list endpoints (`_catalog`, `tags/list`): RFC 8288 Link headers,
page sizes, and the checks that make a listing complete or an error.

Sends through the callable it is given; builds no request and holds no connection itself.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterator
from typing import Any, Final
from urllib.parse import parse_qsl, urlencode, urljoin, urlsplit

from retention import oci
from retention.errors import ProtocolError
from retention.registry.transport import Response, error_details, raise_for
from retention.urls import shown_url, with_query

# The client's logger: `--verbose` lines keep the name they have always had.
logger = logging.getLogger("retention.registry.client")

PAGE_SIZE: Final = 1000  # distribution's catalog.maxentries and tags.maxtags default
MAX_PAGES: Final = 10_000


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


def pages(
    get: Callable[[str], Response],
    base_url: str,
    path: str,
    key: str,
    what: str,
    *,
    page_size: int,
    name: str | None = None,
) -> Iterator[list[str]]:
    """Follow `Link: <...>; rel="next"` (relative or absolute) until it stops; `get` sends one
    GET of a page URL (with auth and retries).

    Asks for n ≤ 1000; on 400 PAGINATION_NUMBER_INVALID asks again with a smaller n. A Link
    that repeats, a `last` that does not advance, a page of nothing new, a Link to another
    endpoint, too many pages, or any error mid-way raises: a listing is complete or an error.
    """
    n = page_size
    url: str | None = f"{base_url}{path}?{urlencode({'n': n})}"
    seen_urls: set[str] = set()
    seen_items: set[str] = set()
    last_marker: str | None = None
    count = 0
    while url is not None:
        if url in seen_urls:
            raise ProtocolError(f"{what}: pagination loops (a Link repeats)", url=shown_url(url))
        seen_urls.add(url)
        count += 1
        if count > MAX_PAGES:
            raise ProtocolError(
                f"{what}: more than {MAX_PAGES} pages; giving up", url=shown_url(url)
            )
        resp = get(url)
        if resp.status == 400 and n > 1:
            code, _ = error_details(resp.body)
            if code == "PAGINATION_NUMBER_INVALID":
                n = max(1, n // 2)
                seen_urls.discard(url)
                count -= 1
                url = with_query(url, n=str(n))
                logger.debug("%s: page size refused, asking for n=%d", what, n)
                continue
        if resp.status == 404 and name is not None and count == 1:
            code, _ = error_details(resp.body)
            if code == "NAME_UNKNOWN":
                return  # a repository that does not exist has no tags
        if resp.status != 200:
            raise_for(resp, f"listing {what} (page {count})")
        items = page_items(resp, key, what, name)
        if items and seen_items.issuperset(items):
            raise ProtocolError(
                f"{what}: pagination returned a page seen before", url=shown_url(resp.url)
            )
        seen_items.update(items)
        yield items
        url, last_marker = _next_page(resp, base_url, path, what, last_marker)


def _next_page(
    resp: Response, base_url: str, path: str, what: str, last_marker: str | None
) -> tuple[str | None, str | None]:
    """The next page's URL (None after the last page) and its `last` marker, checked: on the
    same endpoint, and advancing."""
    target = parse_link_next(resp.header("Link"))
    if target is None:
        return None, last_marker
    next_url = urljoin(resp.url, target)
    if not same_endpoint(base_url, next_url, path):
        raise ProtocolError(f"{what}: pagination Link points elsewhere", url=shown_url(next_url))
    marker = dict(parse_qsl(urlsplit(next_url).query)).get("last")
    if marker is not None:
        if last_marker is not None and marker <= last_marker:
            raise ProtocolError(
                f"{what}: pagination does not advance (last={marker[:100]!r})",
                url=shown_url(next_url),
            )
        last_marker = marker
    return next_url, last_marker


def page_items(resp: Response, key: str, what: str, name: str | None) -> list[str]:
    """The `key` list of one page (`repositories` or `tags`), checked to be strings only."""
    try:
        doc: Any = oci.load_json(resp.body)
    except (ValueError, UnicodeDecodeError) as exc:
        raise ProtocolError(f"{what}: the page is not valid JSON", url=shown_url(resp.url)) from exc
    if not isinstance(doc, dict) or key not in doc:
        raise ProtocolError(f"{what}: the page has no {key!r} list", url=shown_url(resp.url))
    if name is not None and doc.get("name") not in (None, name):
        raise ProtocolError(f"{what}: the page is for another repository", url=shown_url(resp.url))
    items = doc[key]
    if items is None:  # distribution 2.8 answers {"tags": null} after the last delete
        return []
    if not isinstance(items, list) or not all(isinstance(i, str) for i in items):
        raise ProtocolError(f"{what}: {key!r} is not a list of strings", url=shown_url(resp.url))
    return items


def same_endpoint(base_url: str, url: str, path: str) -> bool:
    """Whether `url` is `path` on the registry at `base_url` (scheme, host and port included)."""
    base = urlsplit(base_url)
    target = urlsplit(url)
    return (target.scheme, target.netloc.lower()) == (
        base.scheme,
        base.netloc,
    ) and target.path == base.path + path
