"""A raw HTTP/1.1 server on 127.0.0.1 that answers whatever a test scripts, byte by byte if
it likes: trickled, endless, too long, malformed — what a well-behaved server library will not
send. Each request is read (on a connection of its own) and recorded, then the answer's
chunks are written as they come and the connection is closed."""

from __future__ import annotations

import socket
import ssl
import threading
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field

# (method, request target) -> the answer's bytes, written as they come
Answer = Callable[[str, str], Iterable[bytes]]


@dataclass
class RawServer:
    """Reads each request (on a connection of its own), records it, then writes whatever
    ``answer`` yields and closes the connection."""

    answer: Answer
    tls: ssl.SSLContext | None = None  # https, with this server context
    sock: socket.socket = field(default_factory=socket.socket)
    sent: int = 0  # bytes written before the client went away
    requests: list[tuple[str, str]] = field(default_factory=list)

    def start(self) -> RawServer:
        self.sock.bind(("127.0.0.1", 0))
        self.sock.listen(8)
        threading.Thread(target=self._accept, daemon=True).start()
        return self

    @property
    def base(self) -> str:
        scheme = "https" if self.tls is not None else "http"
        return f"{scheme}://127.0.0.1:{self.sock.getsockname()[1]}"

    def _accept(self) -> None:
        while True:
            try:
                connection, _ = self.sock.accept()
            except OSError:
                return
            threading.Thread(target=self._serve, args=(connection,), daemon=True).start()

    def _serve(self, connection: socket.socket) -> None:
        if self.tls is not None:
            try:
                connection = self.tls.wrap_socket(connection, server_side=True)
            except OSError:
                return
        with connection:
            data = b""
            while b"\r\n\r\n" not in data:
                chunk = connection.recv(65536)
                if not chunk:
                    return
                data += chunk
            head, _, rest = data.partition(b"\r\n\r\n")
            request_line, *lines = head.decode("latin-1").split("\r\n")
            method, target, _ = request_line.split(" ", 2)
            length = next(
                (
                    int(line.split(":", 1)[1])
                    for line in lines
                    if line.lower().startswith("content-length:")
                ),
                0,
            )
            while len(rest) < length:
                rest += connection.recv(65536)
            self.requests.append((method, target))
            try:
                for chunk in self.answer(method, target):
                    connection.sendall(chunk)
                    self.sent += len(chunk)
            except OSError:  # the client gave up: what was sent is counted
                return

    def stop(self) -> None:
        self.sock.close()
