"""A whole-exchange deadline for HTTP clients that only have per-operation timeouts.

httpx, urllib3 and requests time out each connect, send and receive separately: an answer
trickled a byte at a time never trips them, and holds the sending thread as long as the
system likes. :mod:`.wire` checks its deadline before every receive; for the other clients
(an injected ``httpx.Client``, the SOAP transport's urllib3 pool for proxies and custom CAs)
a :class:`Watchdog` shuts the exchange's sockets down when the deadline passes, which ends
any receive or send blocked on them (the client then raises its own connection error, which
the caller reports as a timeout since :attr:`Watchdog.fired`). The body is read through
:func:`read_capped`: no more than :data:`.wire.MAX_BODY`, and not after the deadline.
"""

from __future__ import annotations

import contextlib
import socket
import threading
from collections.abc import Iterable
from time import monotonic
from types import TracebackType

from adapters.http_out.wire import MAX_BODY


class Watchdog:
    """``with Watchdog(timeout) as watchdog:`` — sockets passed to :meth:`watch` are shut
    down ``timeout`` seconds after the ``with`` began, unless it ended first."""

    def __init__(self, timeout: float) -> None:
        self.timeout = timeout
        self.deadline = monotonic() + timeout
        self.fired = False
        self._sockets: list[socket.socket] = []
        self._lock = threading.Lock()
        self._timer = threading.Timer(timeout, self._fire)
        self._timer.daemon = True

    def __enter__(self) -> Watchdog:
        self._timer.start()
        return self

    def __exit__(
        self,
        kind: type[BaseException] | None,
        error: BaseException | None,
        trace: TracebackType | None,
    ) -> None:
        self._timer.cancel()

    def watch(self, sock: socket.socket | None) -> None:
        """End ``sock``'s part in the exchange at the deadline (at once if it has passed)."""
        if sock is None:
            return
        with self._lock:
            if not self.fired:
                self._sockets.append(sock)
                return
        _shut(sock)

    def _fire(self) -> None:
        with self._lock:
            self.fired = True
            sockets, self._sockets = self._sockets, []
        for sock in sockets:
            _shut(sock)

    def check(self) -> None:
        """TimeoutError once the deadline has passed."""
        if self.fired or monotonic() >= self.deadline:
            self.fired = True
            raise TimeoutError("the exchange did not end within the timeout")


def _shut(sock: socket.socket) -> None:
    """Shut ``sock`` down for both directions; the plain socket's call also for a TLS
    socket (``SSLSocket.shutdown`` would drop its TLS object under a thread reading it)."""
    with contextlib.suppress(OSError):  # already closed
        socket.socket.shutdown(sock, socket.SHUT_RDWR)


def read_capped(chunks: Iterable[bytes], watchdog: Watchdog) -> bytes | None:
    """The body from ``chunks``, or None once it is longer than ``MAX_BODY`` (the rest is
    not read). TimeoutError when the deadline passes while reading."""
    parts: list[bytes] = []
    total = 0
    for chunk in chunks:
        watchdog.check()
        total += len(chunk)
        if total > MAX_BODY:
            return None
        parts.append(chunk)
    watchdog.check()
    return b"".join(parts)
