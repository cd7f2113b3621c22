"""A loopback HTTP(S) proxy in front of a real registry that injects faults on a script.

Each `Fault` matches requests by method and a path regex and acts on the next `times` of them:
answer a status (429 with Retry-After, 503 bursts), reset the connection, answer slowly,
truncate the body, override a response header (a wrong `Docker-Content-Digest`), redirect, or
let a handler rewrite the real answer (pagination pages), or drip the answer (headers or body)
one byte per interval. Everything else is forwarded as is. Every request is recorded. With
`tls=` it serves https (a TLS front for certificate tests); `host="127.0.0.2"` binds it to the
"other host".
Never imports `retention`.
"""

from __future__ import annotations

import http.client
import re
import socket
import ssl
import struct
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler
from typing import Literal
from urllib.parse import urlsplit

from tests.harness.certs import CertPair
from tests.harness.loopback import LoopbackServer, QuietHandler, QuietServer, Recorder

__all__ = [
    "Exchange",
    "Fault",
    "FaultProxy",
    "RecordedRequest",
    "Upstream",
]

Action = Literal[
    "status", "reset", "drop_response", "delay", "truncate", "header", "respond", "drip"
]
_HOP_BY_HOP = {"connection", "keep-alive", "transfer-encoding", "te", "trailer", "upgrade"}


@dataclass(frozen=True, slots=True)
class RecordedRequest:
    method: str
    path: str  # path and query, as sent
    headers: tuple[tuple[str, str], ...]
    fault: str | None  # the action applied, if any

    def header(self, name: str) -> str | None:
        for key, value in self.headers:
            if key.lower() == name.lower():
                return value
        return None


@dataclass(frozen=True, slots=True)
class Exchange:
    """A response: status, headers (in order) and body."""

    status: int
    headers: tuple[tuple[str, str], ...] = ()
    body: bytes = b""

    def header(self, name: str) -> str | None:
        for key, value in self.headers:
            if key.lower() == name.lower():
                return value
        return None

    def with_header(self, name: str, value: str | None) -> Exchange:
        """A copy with header `name` replaced (or removed when `value` is None)."""
        kept = tuple((k, v) for k, v in self.headers if k.lower() != name.lower())
        return Exchange(
            self.status, kept + (((name, value),) if value is not None else ()), self.body
        )


Upstream = Callable[..., Exchange]
"""`upstream(method=None, path=None, body=None)`: forward (a variant of) the request for real."""


@dataclass
class Fault:
    """What to do with the next `times` requests matching `method` and `path` (re.search on the
    path and query). `times=None` applies forever."""

    action: Action
    path: str = ".*"
    method: str | None = None
    times: int | None = 1
    status: int = 503
    headers: Mapping[str, str] = field(default_factory=dict)
    body: bytes = b""
    delay: float = 0.0  # for "delay": seconds before answering
    keep: int = 0  # for "truncate": bytes of the body sent before closing
    header_name: str = ""  # for "header"
    header_value: str | None = None  # for "header"; None removes the header
    handler: Callable[[RecordedRequest, Upstream], Exchange] | None = None  # for "respond"/"drip"
    drip: Literal["headers", "body"] = "body"  # for "drip": what is sent one byte at a time
    interval: float = 1.0  # for "drip": seconds between two bytes
    hits: int = 0

    def matches(self, method: str, path: str) -> bool:
        if self.times is not None and self.hits >= self.times:
            return False
        if self.method is not None and self.method != method:
            return False
        return re.search(self.path, path) is not None


class FaultProxy(LoopbackServer):
    """A proxy on 127.0.0.1 forwarding to `upstream` (an http:// base URL).

    Use as a context manager. `url` is the base URL clients use; `add()` scripts faults;
    `requests` lists what came in.
    """

    name = "faultproxy"
    server_class = QuietServer

    def __init__(
        self, upstream: str, *, tls: CertPair | None = None, host: str = "127.0.0.1"
    ) -> None:
        parts = urlsplit(upstream)
        if parts.scheme != "http" or not parts.hostname or parts.port is None:
            raise ValueError(f"upstream must be http://host:port, not {upstream!r}")
        if host not in ("127.0.0.1", "127.0.0.2"):
            raise ValueError("the fault proxy binds to 127.0.0.1 or 127.0.0.2 only")
        super().__init__(host=host, tls=tls)
        self.upstream_host = parts.hostname
        self.upstream_port = parts.port
        self._faults: list[Fault] = []
        self._records: Recorder[RecordedRequest] = Recorder()
        self._lock = self._records.lock

    def _handler(self) -> type[BaseHTTPRequestHandler]:
        return _handler_for(self)

    # -- script and record ----------------------------------------------------------------------

    def add(self, fault: Fault) -> Fault:
        with self._lock:
            self._faults.append(fault)
        return fault

    def clear(self) -> None:
        with self._lock:
            self._faults.clear()
        self._records.clear()

    @property
    def requests(self) -> list[RecordedRequest]:
        return self._records.items()

    def count(self, method: str, path: str) -> int:
        """How many requests matched `method` and the regex `path`."""
        return sum(1 for r in self.requests if r.method == method and re.search(path, r.path))

    def _take(self, method: str, path: str) -> Fault | None:
        with self._lock:
            for fault in self._faults:
                if fault.matches(method, path):
                    fault.hits += 1
                    return fault
            return None

    def _record(self, record: RecordedRequest) -> None:
        self._records.append(record)

    # -- forwarding -----------------------------------------------------------------------------

    def forward(
        self, method: str, path: str, headers: Mapping[str, str], body: bytes | None
    ) -> Exchange:
        conn = http.client.HTTPConnection(self.upstream_host, self.upstream_port, timeout=60)
        try:
            conn.request(method, path, body=body, headers=dict(headers))
            resp = conn.getresponse()
            data = resp.read()
            return Exchange(resp.status, tuple(resp.getheaders()), data)
        finally:
            conn.close()


def _handler_for(proxy: FaultProxy) -> type[BaseHTTPRequestHandler]:
    class Handler(QuietHandler):
        def _send(self, exchange: Exchange, *, head: bool, keep: int | None = None) -> None:
            self.send_response(exchange.status)
            has_length = False
            for key, value in exchange.headers:
                if key.lower() in _HOP_BY_HOP:
                    continue
                if key.lower() == "content-length":
                    if head:
                        has_length = True
                        self.send_header(key, value)
                    continue
                self.send_header(key, value)
            if not head:
                self.send_header("Content-Length", str(len(exchange.body)))
            elif not has_length:
                self.send_header("Content-Length", "0")
            if keep is not None:
                self.send_header("Connection", "close")
                self.close_connection = True
            self.end_headers()
            if not head:
                self.wfile.write(exchange.body if keep is None else exchange.body[:keep])
            self.wfile.flush()

        def _drip(self, exchange: Exchange, *, head: bool, part: str, interval: float) -> None:
            """Send `exchange` with its headers (or its body) one byte per `interval` seconds;
            stops when the client hangs up."""
            reason = self.responses.get(exchange.status, ("",))[0]
            lines = [f"HTTP/1.1 {exchange.status} {reason}"]
            for key, value in exchange.headers:
                if key.lower() in _HOP_BY_HOP or key.lower() == "content-length":
                    continue
                lines.append(f"{key}: {value}")
            lines.append(f"Content-Length: {len(exchange.body)}")
            lines.append("Connection: close")
            header = ("\r\n".join(lines) + "\r\n\r\n").encode("latin-1")
            body = b"" if head else exchange.body
            self.close_connection = True
            if part == "headers":
                slow, fast = header, body
            else:
                self.wfile.write(header)
                self.wfile.flush()
                slow, fast = body, b""
            for i in range(len(slow)):
                self.wfile.write(slow[i : i + 1])
                self.wfile.flush()
                time.sleep(interval)
            self.wfile.write(fast)
            self.wfile.flush()

        def _reset(self) -> None:
            # RST instead of FIN: SO_LINGER with a zero timeout, then close.
            self.connection.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
            self.close_connection = True
            self.connection.close()

        def _handle(self) -> None:
            length = int(self.headers.get("Content-Length") or 0)
            body = self.rfile.read(length) if length else None
            method = self.command
            headers = {k: v for k, v in self.headers.items() if k.lower() not in _HOP_BY_HOP}
            fault = proxy._take(method, self.path)
            record = RecordedRequest(
                method=method,
                path=self.path,
                headers=tuple(self.headers.items()),
                fault=fault.action if fault else None,
            )
            proxy._record(record)
            head = method == "HEAD"

            def upstream(
                method: str | None = None, path: str | None = None, body: bytes | None = body
            ) -> Exchange:
                return proxy.forward(method or self.command, path or self.path, headers, body)

            try:
                if fault is None:
                    self._send(upstream(), head=head)
                elif fault.action == "status":
                    self._send(
                        Exchange(fault.status, tuple(fault.headers.items()), fault.body),
                        head=head,
                    )
                elif fault.action == "reset":
                    self._reset()
                elif fault.action == "drop_response":
                    upstream()  # the registry acts on it; the client never hears back
                    self._reset()
                elif fault.action == "delay":
                    time.sleep(fault.delay)
                    self._send(upstream(), head=head)
                elif fault.action == "truncate":
                    self._send(upstream(), head=head, keep=fault.keep)
                elif fault.action == "header":
                    answer = upstream().with_header(fault.header_name, fault.header_value)
                    self._send(answer, head=head)
                elif fault.action == "respond":
                    assert fault.handler is not None
                    self._send(fault.handler(record, upstream), head=head)
                elif fault.action == "drip":
                    answer = fault.handler(record, upstream) if fault.handler else upstream()
                    self._drip(answer, head=head, part=fault.drip, interval=fault.interval)
                else:  # pragma: no cover - Literal exhausts it
                    raise AssertionError(fault.action)
            except (BrokenPipeError, ConnectionResetError, ssl.SSLError, OSError):
                # the client gave up (read timeout) or the socket was reset on purpose
                self.close_connection = True

        do_GET = _handle
        do_HEAD = _handle
        do_PUT = _handle
        do_POST = _handle
        do_DELETE = _handle
        do_PATCH = _handle

    return Handler
