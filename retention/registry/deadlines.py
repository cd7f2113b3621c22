"""Deadlines on every HTTP attempt: a watchdog thread that shuts the socket of an attempt whose
deadline has passed, and the urllib3 connection classes that hand it their socket.

Used by `registry.transport` only; no requests are sent here.
"""

from __future__ import annotations

import contextlib
import socket
import threading
import time
from collections.abc import Callable
from typing import Any, Final

import urllib3
import urllib3.connection
import urllib3.connectionpool
from requests.adapters import HTTPAdapter

# requests only has socket timeouts: a server that sends one byte per second never trips a 60 s
# read timeout. Each attempt therefore registers a `Watch` with the client's watchdog thread; the
# connection used for it (our urllib3 connection classes, below) attaches itself to the watch of
# the thread that sends, and when the deadline passes the watchdog shuts the socket down, which
# ends the blocked read at once. (docs/decisions.md, "What is trusted")

sending = threading.local()  # .watch: the Watch of the attempt this thread is sending


class Watch:
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


class Watchdog:
    """One thread per client that ends the attempts whose deadline has passed."""

    TICK: Final = 0.1

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._active: set[Watch] = set()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def watch(self, deadline: float) -> Watch:
        w = Watch(deadline)
        with self._lock:
            self._active.add(w)
            if self._thread is None and not self._stop.is_set():
                self._thread = threading.Thread(
                    target=self._loop, name="retention-deadlines", daemon=True
                )
                self._thread.start()
        return w

    def done(self, w: Watch) -> None:
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
    w = getattr(sending, "watch", None)
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


class WatchedAdapter(HTTPAdapter):
    """An adapter whose connections (direct or through a proxy) can be ended by a deadline."""

    def init_poolmanager(self, *args: Any, **kwargs: Any) -> None:
        super().init_poolmanager(*args, **kwargs)
        self.poolmanager.pool_classes_by_scheme = dict(_WATCHED_POOLS)

    def proxy_manager_for(self, proxy: str, **proxy_kwargs: Any) -> Any:
        manager = super().proxy_manager_for(proxy, **proxy_kwargs)
        manager.pool_classes_by_scheme = dict(_WATCHED_POOLS)
        return manager
