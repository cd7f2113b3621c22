"""Our own deliberately hostile registry: one switchable behaviour per scenario.

`HostileRegistry` is a `FaultProxy` on 127.0.0.1 in front of the real registry, plus (for the
scenarios that need one) "another host" on 127.0.0.2: an https server that answers every request
with `401` and a Bearer challenge whose realm is on 127.0.0.2, hands out a token at that realm,
and records every request and whether it carried an `Authorization` header. Switch a scenario on
with `enable(name, ...)`; `SCENARIOS` lists them. Never imports `retention`.
"""

from __future__ import annotations

import json
import re
from collections.abc import Callable
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler
from pathlib import Path
from typing import Any, Literal

from tests.harness.certs import CertPair, self_signed
from tests.harness.faultproxy import Exchange, Fault, FaultProxy, RecordedRequest, Upstream
from tests.harness.loopback import LoopbackServer, QuietHandler, Recorder, Started
from tests.harness.seed import (
    OCI_CONFIG,
    Pusher,
    descriptor,
    image_manifest,
    sha256_digest,
)

__all__ = [
    "SCENARIOS",
    "HostileRegistry",
    "OtherHost",
    "OtherHostRequest",
    "deep_json",
    "push_deep_config_image",
]

OTHER_HOST = "127.0.0.2"
STOLEN_TOKEN = "token-from-the-other-host"


def deep_json(depth: int = 20_000) -> bytes:
    """`[[[...]]]` nested `depth` deep: valid JSON that a recursive parser cannot read. The
    default, 40 kB, fits under the client's 64 KiB cap on error bodies, so it is parsed."""
    return b"[" * depth + b"]" * depth


def deep_json_object(key: str, depth: int) -> bytes:
    """`{"key": [[[...]]]}`: an object whose one member is nested `depth` deep."""
    return b'{"' + key.encode() + b'": ' + deep_json(depth) + b"}"


# --- another host ---------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class OtherHostRequest:
    method: str
    path: str
    authorization: str | None


class OtherHost(LoopbackServer):
    """An https server on 127.0.0.2 (its certificate in `cert`): `/token` issues a token (and
    records who asked), every other path answers 401 with `Bearer realm=<own /token>`."""

    name = "other host"

    def __init__(self, folder: Path) -> None:
        self.cert: CertPair = self_signed(folder, "other-host", hosts=(OTHER_HOST,))
        super().__init__(host=OTHER_HOST, tls=self.cert)
        self._records: Recorder[OtherHostRequest] = Recorder()

    def _handler(self) -> type[BaseHTTPRequestHandler]:
        return _other_handler(self)

    @property
    def realm(self) -> str:
        return f"{self.url}/token"

    @property
    def requests(self) -> list[OtherHostRequest]:
        return self._records.items()

    def authorizations(self) -> list[str]:
        """Every Authorization header the other host received."""
        return [r.authorization for r in self.requests if r.authorization is not None]

    def token_requests(self) -> list[OtherHostRequest]:
        return [r for r in self.requests if r.path.startswith("/token")]

    def _record(self, record: OtherHostRequest) -> None:
        self._records.append(record)


def _other_handler(host: OtherHost) -> type[BaseHTTPRequestHandler]:
    class Handler(QuietHandler):
        def _handle(self) -> None:
            length = int(self.headers.get("Content-Length") or 0)
            if length:
                self.rfile.read(length)
            host._record(
                OtherHostRequest(self.command, self.path, self.headers.get("Authorization"))
            )
            if self.path.startswith("/token"):
                status, body = 200, json.dumps({"token": STOLEN_TOKEN, "expires_in": 300})
                extra: dict[str, str] = {"Content-Type": "application/json"}
            else:
                status, body = 401, '{"errors":[{"code":"UNAUTHORIZED","message":"no"}]}'
                extra = {
                    "Content-Type": "application/json",
                    "WWW-Authenticate": f'Bearer realm="{host.realm}",service="other"',
                }
            data = body.encode()
            self.send_response(status)
            for key, value in extra.items():
                self.send_header(key, value)
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            if self.command != "HEAD":
                self.wfile.write(data)

        do_GET = _handle
        do_HEAD = _handle
        do_POST = _handle
        do_DELETE = _handle
        do_PUT = _handle

    return Handler


# --- the hostile registry -------------------------------------------------------------------


def _manifests(repo: str) -> str:
    return rf"^/v2/{re.escape(repo)}/manifests/[^/?]+$"


def _blobs(repo: str) -> str:
    return rf"^/v2/{re.escape(repo)}/blobs/[^/?]+$"


def _deep(status: int, content_type: str = "application/json") -> Exchange:
    return Exchange(status, (("Content-Type", content_type),), deep_json())


class HostileRegistry(Started):
    """A hostile front of the real registry at `upstream` (http://127.0.0.1:PORT).

    `url` is the registry the client is given; `other` the other host (started on first use).
    `enable(scenario, **params)` switches a behaviour on; see `SCENARIOS` for the names.
    """

    def __init__(self, upstream: str, folder: Path) -> None:
        self.proxy = FaultProxy(upstream)
        self.folder = folder
        self._other: OtherHost | None = None

    def start(self) -> None:
        self.proxy.start()

    def close(self) -> None:
        self.proxy.close()
        if self._other is not None:
            self._other.close()

    @property
    def url(self) -> str:
        return self.proxy.url

    @property
    def other(self) -> OtherHost:
        if self._other is None:
            self._other = OtherHost(self.folder)
            self._other.start()
        return self._other

    @property
    def requests(self) -> list[RecordedRequest]:
        return self.proxy.requests

    def enable(self, scenario: str, **params: Any) -> None:
        """Switch `scenario` on (it stays on for every matching request)."""
        try:
            build = SCENARIOS[scenario]
        except KeyError:
            raise ValueError(f"no hostile scenario {scenario!r}: {sorted(SCENARIOS)}") from None
        for fault in build(self, **params):
            self.proxy.add(fault)


def _redirect_blobs_to_other_host(h: HostileRegistry, repo: str, suffix: str = "") -> list[Fault]:
    """Blob GETs and HEADs answer 307 to the other host (the same path, plus `suffix`), which
    answers 401 with its own Bearer realm."""
    target = h.other.url

    def redirect(record: RecordedRequest, upstream: Upstream) -> Exchange:
        return Exchange(307, (("Location", f"{target}{record.path}{suffix}"),))

    return [Fault("respond", _blobs(repo), None, times=None, handler=redirect)]


def _drip(
    part: Literal["headers", "body"],
    path: str,
    method: str | None,
    interval: float,
    after: int,
    answer: Exchange | None,
) -> list[Fault]:
    faults = []
    if after:  # let the first `after` matching requests through untouched
        faults.append(Fault("delay", path, method, times=after, delay=0.0))
    handler = None if answer is None else (lambda _r, _u: answer)
    faults.append(
        Fault("drip", path, method, times=None, drip=part, interval=interval, handler=handler)
    )
    return faults


def _dripping(part: Literal["headers", "body"], doc: str) -> Callable[..., list[Fault]]:
    """The scenario builder that drips `part` (what `doc` says)."""

    def build(
        h: HostileRegistry,
        path: str = ".*",
        interval: float = 0.5,
        method: str | None = None,
        after: int = 0,
        answer: Exchange | None = None,
    ) -> list[Fault]:
        return _drip(part, path, method, interval, after, answer)

    build.__doc__ = doc
    return build


_drip_headers = _dripping(
    "headers",
    """The real answer (or `answer`, never forwarded), its status line and headers sent one byte
    per `interval`, to requests matching `method` and `path` after the first `after`.""",
)
_drip_body = _dripping(
    "body",
    """The real answer (or `answer`), headers at once and its body one byte per `interval`.""",
)


def _deep_manifest(h: HostileRegistry, repo: str) -> list[Fault]:
    """Manifest GETs answer a deeply nested body (HEADs are forwarded)."""

    def answer(record: RecordedRequest, upstream: Upstream) -> Exchange:
        return Exchange(
            200,
            (("Content-Type", "application/vnd.oci.image.manifest.v1+json"),),
            deep_json(),
        )

    return [Fault("respond", _manifests(repo), "GET", times=None, handler=answer)]


def _deep_status(path: str, method: str, status: int) -> Fault:
    """Requests matching `method` and `path` answer `status` with a deeply nested JSON body."""
    return Fault(
        "status",
        path,
        method,
        times=None,
        status=status,
        body=deep_json(),
        headers={"Content-Type": "application/json"},
    )


def _deep_tags(h: HostileRegistry, repo: str) -> list[Fault]:
    """tags/list answers a deeply nested body."""
    return [_deep_status(rf"^/v2/{re.escape(repo)}/tags/list", "GET", 200)]


def _deep_error(h: HostileRegistry, repo: str, status: int = 400) -> list[Fault]:
    """Manifest GETs and HEADs answer an error status with a deeply nested body."""
    return [_deep_status(_manifests(repo), "GET", status)]


def _deep_delete(h: HostileRegistry, repo: str, status: int = 400) -> list[Fault]:
    """DELETEs of manifests answer an error status with a deeply nested body."""
    return [_deep_status(_manifests(repo), "DELETE", status)]


def _deep_token(h: HostileRegistry) -> list[Fault]:
    """Every /v2/ request without a Bearer token answers 401 with a realm on this front;
    the realm answers a deeply nested body."""

    def gate(record: RecordedRequest, upstream: Upstream) -> Exchange:
        if (record.header("Authorization") or "").startswith("Bearer "):
            return upstream()
        realm = f"{h.url}/token"
        return Exchange(401, (("WWW-Authenticate", f'Bearer realm="{realm}",service="h"'),))

    return [
        _deep_status(r"^/token", "GET", 200),
        Fault("respond", r"^/v2/", None, times=None, handler=gate),
    ]


def _lying_delete(h: HostileRegistry, repo: str = ".+") -> list[Fault]:
    """DELETEs of manifests answer 202 Accepted and are never forwarded: nothing is deleted."""
    path = rf"^/v2/{repo}/manifests/[^/?]+$" if repo == ".+" else _manifests(repo)
    return [Fault("status", path, "DELETE", times=None, status=202)]


SCENARIOS: dict[str, Callable[..., list[Fault]]] = {
    "redirect-blob-to-challenger": _redirect_blobs_to_other_host,
    "drip-headers": _drip_headers,
    "drip-body": _drip_body,
    "deep-json-manifest": _deep_manifest,
    "deep-json-tags": _deep_tags,
    "deep-json-error": _deep_error,
    "deep-json-delete": _deep_delete,
    "deep-json-token": _deep_token,
    "lying-delete": _lying_delete,
}
"""Scenario name → builder of its faults. A deep config is real: see push_deep_config_image."""


def push_deep_config_image(pusher: Pusher, repo: str, tag: str, depth: int = 5000) -> str:
    """Push, for real, an image whose config blob is `{"created": [[[...]]]}` nested `depth`
    deep (distribution stores configs unread; Go's JSON reads up to 10000 levels)."""
    config = deep_json_object("rootfs", depth)
    config_digest = pusher.push_blob(repo, config)
    layer = b"hostile layer"
    layer_digest = pusher.push_blob(repo, layer)
    manifest = json.dumps(
        image_manifest(
            descriptor(OCI_CONFIG, config_digest, len(config)),
            [descriptor("application/vnd.oci.image.layer.v1.tar", layer_digest, len(layer))],
        )
    ).encode()
    digest = pusher.push_manifest(repo, tag, manifest, "application/vnd.oci.image.manifest.v1+json")
    assert digest == sha256_digest(manifest)
    return digest
