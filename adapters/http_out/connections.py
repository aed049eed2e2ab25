"""Keep-alive connections for the outbound transport, one set per thread.

A dispatch worker sends from a fixed pool of threads, so each thread keeps its own open
connection per (scheme, host, port): no pool lock to contend on, no connection handed between
threads. A connection is checked before reuse (a readable idle socket means the server closed
it) and dropped after any error.
"""

from __future__ import annotations

import ssl
import threading
import weakref
from dataclasses import dataclass
from functools import cache
from urllib.parse import quote, urlsplit

from adapters.http_out.wire import Connection

Origin = tuple[str, str, int]  # scheme, host, port
_SAFE = "/?:@!$&'()*+,;=%[]"  # RFC 3986 reserved characters and '%' stay as they are


@dataclass(frozen=True, slots=True)
class Target:
    origin: Origin
    path: str  # path and query, as sent on the request line

    @classmethod
    def parse(cls, url: str) -> Target:
        parts = urlsplit(url)
        scheme = parts.scheme.lower()
        if scheme not in ("http", "https") or not parts.hostname:
            raise ValueError(f"not an http(s) URL: {url!r}")
        port = parts.port or (443 if scheme == "https" else 80)
        path = (parts.path or "/") + (f"?{parts.query}" if parts.query else "")
        # percent-encode what may not appear on a request line (spaces, non-ASCII), as
        # httpx does; escapes already present are kept
        return cls((scheme, parts.hostname, port), quote(path, safe=_SAFE))


@cache
def target(url: str) -> Target:
    return Target.parse(url)


@cache
def _tls_context() -> ssl.SSLContext:
    """Certificates verified against certifi's bundle when present (as httpx does), else the
    system store."""
    try:
        import certifi
    except ImportError:  # pragma: no cover - httpx depends on certifi
        return ssl.create_default_context()
    return ssl.create_default_context(cafile=certifi.where())


class ThreadConnections:
    """Open connections per thread and origin. A thread's connections are closed when the
    thread is gone (its finalizer) or by :meth:`close`."""

    def __init__(self) -> None:
        self._local = threading.local()
        self._lock = threading.Lock()
        self._threads: dict[int, dict[Origin, Connection]] = {}
        self.interrupted = False  # by :meth:`interrupt`, until :meth:`close`: no resends

    def _mine(self) -> dict[Origin, Connection]:
        connections: dict[Origin, Connection] | None = getattr(self._local, "connections", None)
        if connections is None:
            connections = self._local.connections = {}
            key = id(connections)
            with self._lock:
                self._threads[key] = connections
            weakref.finalize(threading.current_thread(), self._forget, key)
        return connections

    def _forget(self, key: int) -> None:
        with self._lock:
            connections = self._threads.pop(key, {})
        for connection in connections.values():
            connection.close()

    def get(self, origin: Origin) -> Connection:
        """The thread's connection to ``origin`` (opened by its first request; one found
        closed by the server while idle is closed here and reopens)."""
        mine = self._mine()
        connection = mine.get(origin)
        if connection is None:
            scheme, host, port = origin
            context = _tls_context() if scheme == "https" else None
            connection = mine[origin] = Connection(scheme, host, port, context)
        elif connection.is_stale():
            connection.close()
        return connection

    def interrupt(self) -> None:
        """End every exchange under way, on any thread (a hub stopping gives up on a system
        still answering): each socket is shut down, which ends a receive blocked on it; its
        thread then closes it as after any failure."""
        self.interrupted = True
        with self._lock:
            connections = [c for mine in self._threads.values() for c in list(mine.values())]
        for connection in connections:
            connection.shut_down()

    def close(self) -> None:
        """Close every thread's connections (at shutdown; a thread's next request reopens)."""
        self.interrupted = False
        with self._lock:
            connections = [c for mine in self._threads.values() for c in list(mine.values())]
        for connection in connections:
            connection.close()
