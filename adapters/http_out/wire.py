"""A minimal HTTP/1.1 client connection: one POST at a time, keep-alive.

The outbound transport only ever POSTs a body and reads the answer, so it needs little of a
general client: the request is written with one ``sendall``; the answer's status line and
headers are parsed directly; the body is framed by ``Content-Length``, chunked encoding or
the end of the connection. Interim 1xx answers are skipped. The whole exchange — connect,
request, every byte of the answer — must end by a deadline (the endpoint's timeout), so a
system that trickles an answer byte by byte, or never ends it, cannot hold a sending thread;
a body longer than :data:`MAX_BODY` is not read (the connection is closed). This costs
~25 µs of CPU per request here, against ~100 µs for :mod:`http.client` and ~570 µs for
httpx — it matters when the hub's sends share one GIL with everything else
(docs/benchmarks.md).
"""

from __future__ import annotations

import contextlib
import select
import socket
import ssl
from collections.abc import Callable
from dataclasses import dataclass
from time import monotonic

MAX_HEAD = 64 * 1024  # status line and headers
# An answer's body: a reply is a platform message (inbound ones are refused above 10 MiB),
# a notification's acknowledgement much less. Anything longer is not read into memory.
MAX_BODY = 16 * 1024 * 1024
_CHUNK = 64 * 1024


class ProtocolError(Exception):
    """The server's answer is not HTTP/1.x as we can read it."""


class RemoteDisconnected(ConnectionError):
    """The server closed the connection before answering."""


@dataclass(frozen=True, slots=True)
class Response:
    status: int
    reason: str
    headers: dict[str, str]  # names lower-cased; a repeated header keeps its last value
    body: bytes  # empty when ``oversized``
    reusable: bool  # the connection may carry the next request
    oversized: bool = False  # the body is longer than MAX_BODY: not read


class _Oversized(Exception):
    """The body announced or received so far is longer than :data:`MAX_BODY`."""


def _left(deadline: float) -> float:
    """Seconds until ``deadline`` (``time.monotonic``); TimeoutError once it has passed."""
    left = deadline - monotonic()
    if left <= 0:
        raise TimeoutError("the exchange did not end within the timeout")
    return left


class Connection:
    """A socket to one origin; a request and its answer raise ``TimeoutError`` (the deadline
    passed at any step: connect, send, receive), ``OSError`` (refused, reset…),
    :class:`RemoteDisconnected` or :class:`ProtocolError`. After an exception the connection
    must be closed."""

    def __init__(
        self, scheme: str, host: str, port: int, context: ssl.SSLContext | None = None
    ) -> None:
        self.scheme, self.host, self.port = scheme, host, port
        self._context = context
        self._sock: socket.socket | None = None
        self._host_header = host if port == (443 if scheme == "https" else 80) else f"{host}:{port}"
        self.requests = 0  # answered on this socket
        self._wait = 0.0  # the socket's own timeout, as last set
        self._slack = 0.0  # how late an operation may end after the deadline

    @property
    def is_open(self) -> bool:
        return self._sock is not None

    def connect(self, timeout: float) -> None:
        sock = socket.create_connection((self.host, self.port), timeout=timeout)
        try:
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            if self.scheme == "https":
                assert self._context is not None
                sock = self._context.wrap_socket(sock, server_hostname=self.host)
        except BaseException:
            sock.close()
            raise
        self._sock = sock
        self._wait = timeout
        self.requests = 0

    def is_stale(self) -> bool:
        """An idle keep-alive socket that is readable was closed (or written to) by the
        server: it cannot carry a request."""
        if self._sock is None:
            return False
        if isinstance(self._sock, ssl.SSLSocket) and self._sock.pending():
            return True
        try:
            readable, _, _ = select.select([self._sock], [], [], 0)
        except (OSError, ValueError):
            return True
        return bool(readable)

    def shut_down(self) -> None:
        """End the exchange under way from another thread (its receive returns)."""
        sock = self._sock
        if sock is not None:
            with contextlib.suppress(OSError):  # closed meanwhile
                socket.socket.shutdown(sock, socket.SHUT_RDWR)  # also under TLS (deadline.py)

    def close(self) -> None:
        if self._sock is not None:
            try:
                self._sock.close()
            finally:
                self._sock = None

    def send_request(
        self,
        path: str,
        headers: dict[str, str],
        body: bytes,
        deadline: float,
        timeout: float,
        method: str = "POST",
    ) -> None:
        """Write the request (``method``: POST, or GET without a body), connecting first if
        needed. It and its answer must be done by
        ``deadline`` (``time.monotonic``, ``timeout`` seconds after the exchange began)."""
        if self._sock is None:
            self.connect(_left(deadline))
        assert self._sock is not None
        if self._wait != timeout:  # the first request, or one after a slow answer
            self._sock.settimeout(timeout)
            self._wait = timeout
        self._slack = timeout / 10
        self.bound(deadline)  # sendall: for the whole request
        lines = [f"{method} {path} HTTP/1.1", f"Host: {self._host_header}"]
        lines += [f"{name}: {value}" for name, value in headers.items()]
        head = ("\r\n".join(lines) + "\r\n\r\n").encode("latin-1")
        self._sock.sendall(head + body)

    def bound(self, deadline: float) -> None:
        """Let the socket's next operation end by ``deadline``, give or take a tenth of the
        timeout: ``settimeout`` is a system call (2 µs here, against ~25 µs for a whole
        request), made only once the time left is that much shorter than the socket's
        timeout — never for an answer that comes quickly. TimeoutError once it has passed."""
        left = _left(deadline)
        if left < self._wait - self._slack:
            assert self._sock is not None
            self._sock.settimeout(left)
            self._wait = left

    def read_response(self, deadline: float) -> Response:
        """The answer, read whole by ``deadline``; a body over :data:`MAX_BODY` is not read
        (``oversized``; the connection is closed)."""
        assert self._sock is not None
        reader = _Reader(self._sock, lambda: self.bound(deadline))
        while True:
            version, status, reason, headers = _head(reader, first=self.requests == 0)
            if 100 <= status < 200:
                continue  # interim (100 Continue, 103 Early Hints): the answer follows
            break
        try:
            body, delimited = _body(reader, status, headers)
        except _Oversized:
            self.close()
            return Response(status, reason, headers, b"", reusable=False, oversized=True)
        connection = headers.get("connection", "").lower()
        reusable = (
            delimited
            and not reader.leftover  # nothing may follow an answer we did not ask for
            and (connection == "keep-alive" if version == "HTTP/1.0" else connection != "close")
        )
        self.requests += 1
        if not reusable:
            self.close()
        return Response(status, reason, headers, body, reusable)


class _Reader:
    """Buffered reads from a socket, each waiting no longer than the deadline allows."""

    def __init__(self, sock: socket.socket, bound: Callable[[], None]) -> None:
        self._sock = sock
        self._bound = bound  # raises TimeoutError once the deadline has passed
        self._buffer = bytearray()
        self.received = 0  # bytes read so far

    @property
    def leftover(self) -> bool:
        return bool(self._buffer)

    def _fill(self) -> bool:
        self._bound()
        data = self._sock.recv(_CHUNK)
        self.received += len(data)
        self._buffer += data
        return bool(data)

    def until(self, marker: bytes, limit: int) -> bytes:
        while (end := self._buffer.find(marker)) < 0:
            if len(self._buffer) > limit:
                raise ProtocolError("header section too long")
            if not self._fill():
                if self.received == 0:
                    raise RemoteDisconnected("closed without an answer")
                raise ProtocolError("connection closed in the header section")
        found = bytes(self._buffer[:end])
        del self._buffer[: end + len(marker)]
        return found

    def exactly(self, size: int) -> bytes:
        if size > MAX_BODY:
            raise _Oversized
        while len(self._buffer) < size:
            if not self._fill():
                raise ProtocolError("connection closed in the body")
        found = bytes(self._buffer[:size])
        del self._buffer[:size]
        return found

    def rest(self) -> bytes:
        while self._fill():
            if len(self._buffer) > MAX_BODY:
                raise _Oversized
        found = bytes(self._buffer)
        self._buffer.clear()
        return found


def _head(reader: _Reader, *, first: bool) -> tuple[str, int, str, dict[str, str]]:
    head = reader.until(b"\r\n\r\n", MAX_HEAD).decode("latin-1")
    status_line, *header_lines = head.split("\r\n")
    version, _, rest = status_line.partition(" ")
    code, _, reason = rest.partition(" ")
    if not version.startswith("HTTP/1.") or not code.isdigit() or len(code) != 3:
        raise ProtocolError(f"not an HTTP/1.x status line{' (first answer)' if first else ''}")
    headers: dict[str, str] = {}
    for line in header_lines:
        name, sep, value = line.partition(":")
        if not sep:
            raise ProtocolError("malformed header line")
        headers[name.strip().lower()] = value.strip()
    return version, int(code), reason.strip(), headers


def _body(reader: _Reader, status: int, headers: dict[str, str]) -> tuple[bytes, bool]:
    """The body and whether its end was delimited (else the connection carried it to EOF)."""
    if status in (204, 304):
        return b"", True
    if "chunked" in headers.get("transfer-encoding", "").lower():
        return _chunked(reader), True
    length = headers.get("content-length")
    if length is not None:
        if not length.isdigit():
            raise ProtocolError("bad Content-Length")
        return reader.exactly(int(length)), True
    return reader.rest(), False


def _chunked(reader: _Reader) -> bytes:
    parts: list[bytes] = []
    total = 0
    while True:
        size_line = reader.until(b"\r\n", MAX_HEAD).split(b";", 1)[0].strip()
        try:
            size = int(size_line, 16)
        except ValueError:
            raise ProtocolError("bad chunk size") from None
        if size == 0:
            while reader.until(b"\r\n", MAX_HEAD):  # trailer fields, up to an empty line
                pass
            return b"".join(parts)
        total += size
        if total > MAX_BODY:
            raise _Oversized
        parts.append(reader.exactly(size))
        if reader.exactly(2) != b"\r\n":
            raise ProtocolError("bad chunk end")
