"""The one loopback HTTP(S) server the harness fronts are built on: bind, serve, stop.

`LoopbackServer` owns a `ThreadingHTTPServer` on a 127.0.0.x address (port 0: the kernel picks a
free one), optionally wrapped in TLS, served from a daemon thread, usable as a context manager
(`Started`: `start()`, then `close()`; `Closing`, for what runs from birth: only `close()`).
`QuietHandler` is the request handler base (HTTP/1.1, no log lines); `QuietServer` does not log
a client that hangs up; `Recorder` is the lock-guarded list of requests every front keeps.
Never imports `retention`.
"""

from __future__ import annotations

import ssl
import sys
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any, Generic, Self, TypeVar

from retention.closing import Closing
from tests.harness.certs import CertPair

__all__ = ["Closing", "LoopbackServer", "QuietHandler", "QuietServer", "Recorder", "Started"]

T = TypeVar("T")


class QuietHandler(BaseHTTPRequestHandler):
    """A request handler that speaks HTTP/1.1 (keep-alive) and logs nothing."""

    protocol_version = "HTTP/1.1"

    def log_message(self, format: str, *args: Any) -> None:  # quiet
        pass


class Recorder(Generic[T]):
    """What a server saw, appended from its handler threads and read from the test's."""

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self._items: list[T] = []

    def append(self, item: T) -> None:
        with self.lock:
            self._items.append(item)

    def items(self) -> list[T]:
        """A copy, in arrival order."""
        with self.lock:
            return list(self._items)

    def clear(self) -> None:
        with self.lock:
            self._items.clear()


class QuietServer(ThreadingHTTPServer):
    """A client that hangs up mid-answer (a deadline, a body over its cap) is not an error."""

    def handle_error(self, request: Any, client_address: Any) -> None:
        if isinstance(sys.exc_info()[1], ConnectionError | ssl.SSLError | TimeoutError):
            return
        super().handle_error(request, client_address)


class Started(Closing):
    """`with x:` means `x.start()` then, however the block ends, `x.close()`."""

    def start(self) -> None:
        raise NotImplementedError

    def __enter__(self) -> Self:
        self.start()
        return self


class LoopbackServer(Started):
    """A threading HTTP server on `host` (a loopback address), started by `start()` (or `with`)
    and stopped by `close()`. Subclasses give the handler class (`_handler`); `server_class`
    says how the server treats handler errors; `name` names the thread and the messages."""

    server_class: type[ThreadingHTTPServer] = ThreadingHTTPServer
    name = "loopback server"

    def __init__(self, *, host: str = "127.0.0.1", tls: CertPair | None = None) -> None:
        self.host = host
        self.tls = tls
        self._server: ThreadingHTTPServer | None = None
        self._thread: threading.Thread | None = None

    def _handler(self) -> type[BaseHTTPRequestHandler]:
        raise NotImplementedError

    # -- lifecycle ------------------------------------------------------------------------------

    def start(self) -> None:
        server = self.server_class((self.host, 0), self._handler())
        server.daemon_threads = True
        if self.tls is not None:
            context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
            context.load_cert_chain(self.tls.cert_path, self.tls.key_path)
            server.socket = context.wrap_socket(server.socket, server_side=True)
        self._server = server
        self._thread = threading.Thread(
            target=server.serve_forever, kwargs={"poll_interval": 0.05}, name=self.name
        )
        self._thread.daemon = True
        self._thread.start()

    def close(self) -> None:
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()
            self._server = None
        if self._thread is not None:
            self._thread.join(timeout=10)
            self._thread = None

    # -- addresses ------------------------------------------------------------------------------

    @property
    def port(self) -> int:
        assert self._server is not None, f"start() the {self.name} first"
        return int(self._server.server_address[1])

    @property
    def url(self) -> str:
        """The base URL clients use: http(s)://host:port."""
        scheme = "https" if self.tls is not None else "http"
        return f"{scheme}://{self.host}:{self.port}"
