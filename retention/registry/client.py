"""The registry client: the endpoints (ping, catalog, tags, manifests, blobs, referrers, DELETE)
over one `Transport` and one `Authenticator`; it implements `registry.api.RegistryPort`.

It returns `oci` values and raises only `RegistryError` subclasses; it never prints and never
logs a secret, a header or a query string. HTTP itself is `registry.transport`'s.
"""

from __future__ import annotations

import email.utils
import logging
import os
import random
import secrets
import time
from collections.abc import Callable, Iterator, Mapping
from datetime import UTC
from urllib.parse import urljoin

from retention import oci
from retention.closing import Closing
from retention.errors import AuthError, DeleteDisabledError, ProtocolError, RegistryError
from retention.policy.model import RegistryConfig
from retention.registry.api import FetchedManifest, ManifestRef, Ping, RetryPolicy, RunDeadline
from retention.registry.auth import CATALOG_SCOPE, Authenticator, repository_scope
from retention.registry.credentials import Credentials, resolve_credentials
from retention.registry.listing import PAGE_SIZE, pages
from retention.registry.transport import (
    CONFIG_MAX_BYTES,
    ERROR_MAX_BYTES,
    LIST_MAX_BYTES,
    MANIFEST_MAX_BYTES,
    USER_AGENT,
    Response,
    Transport,
    error,
    raise_for,
)
from retention.text import untrusted
from retention.urls import normalise_url, origin, shown_url, with_query

log = logging.getLogger(__name__)

__all__ = [
    "USER_AGENT",
    "FetchedManifest",
    "ManifestRef",
    "Ping",
    "RegistryClient",
    "RetryPolicy",
    "RunDeadline",
]

_DELETE_DISABLED = (
    "deletion is disabled on this registry: set storage.delete.enabled: true "
    "(or the registry is in read-only mode, or is a pull-through cache)"
)


def _media_type(header: str | None) -> str:
    return (header or "").split(";")[0].strip().lower()


class RegistryClient(Closing):
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
        env = os.environ if env is None else env
        self._page_size = max(1, min(page_size, PAGE_SIZE))
        policy_auth = (config.auth.username, config.auth.password) if config.auth else None
        self._credentials: Credentials | None = resolve_credentials(self.url, policy_auth, env)
        self._transport = Transport(
            self.url,
            config.tls,
            concurrency=concurrency,
            timeout=timeout,
            env=env,
            retry=retry or RetryPolicy(),
            sleep=sleep,
            rand=rand,
            request_timeout=request_timeout,
            deadline=deadline,
        )
        self._auth = Authenticator(self.url, self._credentials, self._transport, clock)
        self.credential_source = self._auth.credential_source

    def __repr__(self) -> str:
        return f"RegistryClient(url={self.url!r}, credential_source={self.credential_source!r})"

    def close(self) -> None:
        self._transport.close()

    # --- public API ----------------------------------------------------------------------

    def ping(self) -> Ping:
        """`GET /v2/`: reachability, API version, the server's clock, and the auth scheme."""
        resp = self._send("GET", "/v2/", scope=None)
        if resp.status == 404:
            raise RegistryError(
                "no registry API at this URL (GET /v2/ answered 404)",
                url=shown_url(resp.url),
                status=404,
            )
        if resp.status != 200:
            raise_for(resp, "ping")
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
            auth_scheme=self._auth.scheme,
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
                        url=shown_url(self.url + "/v2/_catalog"),
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
                        url=shown_url(self.url + path),
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
            raise_for(resp, f"manifest {repo}@{reference}")
        media_type = _media_type(resp.header("Content-Type"))
        self._refuse_schema1(media_type, repo, reference, resp)
        header = (resp.header("Docker-Content-Digest") or "").strip()
        length = resp.header("Content-Length")
        if header and not oci.is_digest(header):
            raise ProtocolError(
                f"manifest {repo}@{reference}: malformed Docker-Content-Digest",
                url=shown_url(resp.url),
            )
        if oci.is_digest(reference) and header and header != reference:
            raise ProtocolError(
                f"manifest {repo}@{reference}: the registry answered for {header}",
                url=shown_url(resp.url),
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
            raise_for(resp, where)
        if resp.header("Link"):
            raise ProtocolError(
                f"{where}: the list is paged, which retention does not read",
                url=shown_url(resp.url),
            )
        try:
            index = oci.parse_manifest(resp.body, oci.OCI_INDEX, oci.sha256_digest(resp.body))
        except ProtocolError as exc:
            raise ProtocolError(f"{where}: {exc}", url=shown_url(resp.url)) from exc
        if not index.is_index:
            raise ProtocolError(f"{where}: not an image index", url=shown_url(resp.url))
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
            raise_for(resp, f"manifest {repo}@{reference}")
        raw = resp.body
        content_type = _media_type(resp.header("Content-Type"))
        self._refuse_schema1(content_type, repo, reference, resp)
        digest = oci.sha256_digest(raw)
        where = f"manifest {repo}@{reference}"
        header = (resp.header("Docker-Content-Digest") or "").strip()
        if header:
            if not oci.is_digest(header):
                raise ProtocolError(
                    f"{where}: malformed Docker-Content-Digest", url=shown_url(resp.url)
                )
            if not oci.digest_matches(raw, header):
                raise ProtocolError(
                    f"{where}: Docker-Content-Digest {header} does not match the body "
                    f"received ({digest})",
                    url=shown_url(resp.url),
                )
        if oci.is_digest(reference) and not oci.digest_matches(raw, reference):
            raise ProtocolError(
                f"{where}: the body received hashes to {digest}", url=shown_url(resp.url)
            )
        manifest = oci.parse_manifest(raw, content_type or None, digest)
        known = oci.MANIFEST_TYPES | oci.SCHEMA1_TYPES
        if content_type in known and manifest.media_type != content_type:
            # OCI spec.md: a client SHOULD reject a mediaType that disagrees with Content-Type.
            raise ProtocolError(
                f"{where}: Content-Type {content_type} disagrees with the body's mediaType "
                f"{untrusted(manifest.media_type)}",
                url=shown_url(resp.url),
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
            raise_for(resp, f"blob {repo}@{digest}")
        if not oci.digest_matches(resp.body, digest):
            raise ProtocolError(
                f"blob {repo}@{digest}: the body received does not hash to its digest",
                url=shown_url(resp.url),
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
        raise_for(resp, f"blob {repo}@{digest}")

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
        if oci.is_digest(reference) and not oci.digest_matches(raw, reference):
            raise RegistryError(f"manifest bytes do not hash to {reference}; not uploaded")
        if len(raw) > MANIFEST_MAX_BYTES:
            raise RegistryError(f"manifest of {len(raw)} bytes is larger than the 4 MiB limit")
        resp = self._send(
            "PUT",
            f"/v2/{repo}/manifests/{reference}",
            scope=self._push(repo),
            body=raw,
            content_type=media_type,
        )
        if resp.status in (200, 201, 202):
            header = (resp.header("Docker-Content-Digest") or "").strip()
            if header and header != digest:
                raise ProtocolError(
                    f"manifest {repo}:{reference}: the registry stored {header}, we sent {digest}",
                    url=shown_url(resp.url),
                )
            return digest
        if resp.status == 403:
            raise error(AuthError, resp, f"missing push permission on repository {repo}")
        if resp.status == 405:
            raise error(
                RegistryError,
                resp,
                f"the registry refuses manifest uploads to {repo}",
                hint="the registry may be in read-only mode",
            )
        raise_for(resp, f"upload of manifest {repo}:{reference}")

    def upload_blob(self, repo: str, data: bytes) -> str:
        """Make sure `repo` holds the blob `data`: HEAD first, else a monolithic upload (POST,
        then PUT with the digest; OCI distribution-spec "Pushing a blob monolithically").
        Returns its sha256 digest."""
        self._check_repo(repo)
        digest = oci.sha256_digest(data)
        if self.blob_exists(repo, digest):
            return digest
        location = self._start_upload(repo)
        resp = self._send(
            "PUT",
            with_query(location, digest=digest),
            scope=self._push(repo),
            body=data,
            content_type="application/octet-stream",
        )
        if resp.status not in (201, 204) and not (
            resp.status == 404 and self.blob_exists(repo, digest)  # a retried PUT: it is there
        ):
            self._refuse_push(resp, repo)
            raise_for(resp, f"upload of blob {repo}@{digest}")
        header = (resp.header("Docker-Content-Digest") or "").strip()
        if header and header != digest:
            raise ProtocolError(
                f"blob {repo}@{digest}: the registry stored {untrusted(header[:100])}",
                url=shown_url(resp.url),
            )
        return digest

    def probe_push(self, repo: str) -> bool:
        """Whether the credentials may push to `repo`: start a blob upload and cancel it; nothing
        is pushed. False when the registry or its token server refuses the push action."""
        self._check_repo(repo)
        try:
            location = self._start_upload(repo)
        except AuthError:
            return False
        # distribution maps a DELETE, uploads included, to the `delete` action (handlers/app.go)
        try:
            resp = self._send("DELETE", location, scope=repository_scope(repo, ("pull", "delete")))
        except AuthError as exc:
            log.debug("cancelling the probe's upload in %s: %s", repo, exc.message)
        else:
            if resp.status not in (200, 202, 204):
                # crane's registry answers 400: an upload left open expires unused
                log.debug("cancelling the probe's upload in %s answered %d", repo, resp.status)
        return True

    def _start_upload(self, repo: str) -> str:
        """POST a new upload session; its Location, which must stay on the registry's origin
        (the credentials go with the PUT)."""
        resp = self._send("POST", f"/v2/{repo}/blobs/uploads/", scope=self._push(repo), body=b"")
        if resp.status != 202:
            self._refuse_push(resp, repo)
            raise_for(resp, f"blob upload to {repo}")
        location = urljoin(resp.url, (resp.header("Location") or "").strip())
        if not resp.header("Location") or origin(location) != origin(self.url):
            raise ProtocolError(
                f"blob upload to {repo}: the registry named an upload URL "
                "on another origin (or none); nothing was sent there",
                url=shown_url(location),
            )
        return location

    def _refuse_push(self, resp: Response, repo: str) -> None:
        if resp.status in (401, 403):
            raise error(
                AuthError,
                resp,
                f"missing push permission on repository {repo}",
                hint="untag needs the 'push' action on the repositories it untags in",
            )
        if resp.status == 405:
            raise error(
                RegistryError,
                resp,
                f"the registry refuses uploads to {repo}",
                hint="the registry may be in read-only mode",
            )

    # --- DELETE ----------------------------------------------------------------------------

    def delete_tag(self, repo: str, tag: str) -> bool:
        """DELETE a tag alone (`/manifests/<tag>`, OCI distribution-spec "Deleting tags"): True
        on 202, False on 404 (no such tag). A registry that deletes only digests answers 400
        (distribution 2.8): a RegistryError, never a fallback to the digest."""
        self._check_repo(repo)
        if not oci.is_tag(tag):
            raise RegistryError(f"invalid tag {tag[:200]!r}")
        return self._delete(repo, tag)

    def probe_tag_delete(self, repo: str) -> bool:
        """Whether the registry deletes tags, asked with a DELETE of a random tag no repository
        holds: 404 (or 202) → True, 400 → False. Never touches a real tag; 405 (deletion
        disabled) raises DeleteDisabledError."""
        self._check_repo(repo)
        try:
            self._delete(repo, f"retention-probe-{secrets.token_hex(16)}")
        except RegistryError as exc:
            if exc.status == 400:
                return False
            raise
        return True

    def _delete(self, repo: str, reference: str) -> bool:
        resp = self._send(
            "DELETE",
            f"/v2/{repo}/manifests/{reference}",
            scope=repository_scope(repo, ("pull", "delete")),
        )
        if resp.status in (200, 202):
            return True
        if resp.status == 404:
            return False
        if resp.status == 405:
            raise error(DeleteDisabledError, resp, _DELETE_DISABLED)
        if resp.status == 403:
            raise error(
                AuthError,
                resp,
                f"missing delete permission on repository {repo}",
                hint="the credentials need the 'delete' action on the repository",
            )
        raise_for(resp, f"DELETE of manifest {repo}@{reference}")

    # --- requests ----------------------------------------------------------------------------

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
    ) -> Response:
        """One logical request: a path on the registry (or a URL), through auth and retries."""
        url = path_or_url if "://" in path_or_url else self.url + path_or_url
        headers: dict[str, str] = {}
        if accept:
            headers["Accept"] = accept
        if content_type:
            headers["Content-Type"] = content_type
        return self._auth.send(
            method,
            url,
            headers,
            body,
            scope=scope,
            max_bytes=max_bytes,
            follow_redirects=follow_redirects,
        )

    def _pages(
        self, path: str, key: str, scope: str, what: str, *, name: str | None = None
    ) -> Iterator[list[str]]:
        def get(url: str) -> Response:
            return self._send(
                "GET", url, scope=scope, accept="application/json", max_bytes=LIST_MAX_BYTES
            )

        return pages(get, self.url, path, key, what, page_size=self._page_size, name=name)

    # --- checks ------------------------------------------------------------------------------

    def _refuse_schema1(self, media_type: str, repo: str, ref: str, resp: Response) -> None:
        if media_type in oci.SCHEMA1_TYPES:
            raise ProtocolError(
                f"manifest {repo}@{ref} is Docker schema 1, which retention does not support",
                url=shown_url(resp.url),
                hint="re-push the image with a current client (schema 2 or OCI)",
            )

    @staticmethod
    def _pull(repo: str) -> str:
        return repository_scope(repo, ("pull",))

    @staticmethod
    def _push(repo: str) -> str:
        return repository_scope(repo, ("pull", "push"))

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
