"""The HTTP transport's own HTTP/1.1 client (adapters/http_out/wire.py) against a scripted
socket server: framing (Content-Length, chunked, to end of connection), interim answers,
keep-alive reuse, servers closing kept-alive connections, malformed answers."""

from __future__ import annotations

import socket
import threading
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field

import pytest

from adapters.http_out import HttpTransport
from bus.config.models import Endpoint
from bus.dispatch.transport import OutboundMessage, Outcome, SendResult

# (connection number, request number on it, the request) -> (raw answer, close afterwards)
Script = Callable[[int, int, bytes], tuple[bytes, bool]]


@dataclass
class ScriptedServer:
    script: Script
    sock: socket.socket = field(default_factory=socket.socket)
    connections: int = 0
    requests: list[bytes] = field(default_factory=list)

    def start(self) -> ScriptedServer:
        self.sock.bind(("127.0.0.1", 0))
        self.sock.listen(16)
        threading.Thread(target=self._accept, daemon=True).start()
        return self

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.sock.getsockname()[1]}/zeimu"

    def _accept(self) -> None:
        while True:
            try:
                connection, _ = self.sock.accept()
            except OSError:
                return
            self.connections += 1
            number = self.connections
            threading.Thread(target=self._serve, args=(connection, number), daemon=True).start()

    def _serve(self, connection: socket.socket, number: int) -> None:
        with connection:
            buffer, index = b"", 0
            while True:
                while b"\r\n\r\n" not in buffer:
                    data = connection.recv(65536)
                    if not data:
                        return
                    buffer += data
                head, _, buffer = buffer.partition(b"\r\n\r\n")
                length = next(
                    int(line.split(b":", 1)[1])
                    for line in head.split(b"\r\n")
                    if line.lower().startswith(b"content-length:")
                )
                while len(buffer) < length:
                    buffer += connection.recv(65536)
                request, buffer = head + b"\r\n\r\n" + buffer[:length], buffer[length:]
                self.requests.append(request)
                index += 1
                answer, close = self.script(number, index, request)
                if answer:
                    connection.sendall(answer)
                if close:
                    return

    def stop(self) -> None:
        self.sock.close()


@pytest.fixture
def serve() -> Iterator[Callable[[Script], ScriptedServer]]:
    started: list[ScriptedServer] = []

    def make(script: Script) -> ScriptedServer:
        server = ScriptedServer(script).start()
        started.append(server)
        return server

    yield make
    for server in started:
        server.stop()


@pytest.fixture
def transport() -> Iterator[HttpTransport]:
    http = HttpTransport()
    yield http
    http.close()


def post(transport: HttpTransport, url: str, message_id: str = "m-1") -> SendResult:
    message = OutboundMessage(message_id, None, "ResidentChangeNotice", "414247", "zeimu", b"<x/>")
    return transport.send(message, Endpoint(transport="http", url=url, timeout_seconds=2))


Serve = Callable[[Script], ScriptedServer]
OK = b"HTTP/1.1 200 OK\r\nContent-Length: 0\r\n\r\n"


def test_keep_alive_carries_many_requests_on_one_connection(
    serve: Serve, transport: HttpTransport
) -> None:
    server = serve(lambda *_: (OK, False))
    for i in range(5):
        assert post(transport, server.url, f"m-{i}").outcome is Outcome.DELIVERED
    assert server.connections == 1 and len(server.requests) == 5
    head = server.requests[0].split(b"\r\n\r\n")[0].decode()
    assert head.startswith("POST /zeimu HTTP/1.1\r\n")
    assert "Content-Length: 4" in head and "Renkei-Message-Id: m-0" in head


def test_chunked_answer_and_interim_continue(serve: Serve, transport: HttpTransport) -> None:
    chunked = (
        b"HTTP/1.1 100 Continue\r\n\r\n"
        b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n"
        b"5;ext=1\r\n<repl\r\n3\r\ny/>\r\n0\r\nTrailer: x\r\n\r\n"
    )
    server = serve(lambda *_: (chunked, False))
    first = post(transport, server.url)
    assert first.outcome is Outcome.DELIVERED and first.reply == b"<reply/>"
    assert post(transport, server.url).reply == b"<reply/>"
    assert server.connections == 1  # the chunked body was read to its end: reusable


def test_connection_close_and_http10_bodies_to_the_end(
    serve: Serve, transport: HttpTransport
) -> None:
    answers = {
        1: (b"HTTP/1.1 200 OK\r\nConnection: close\r\nContent-Length: 2\r\n\r\nok", True),
        2: (b"HTTP/1.0 200 OK\r\n\r\n<body/>", True),  # no length: the body ends with the socket
        3: (OK, False),
    }
    server = serve(lambda number, _index, _request: answers[number])
    assert post(transport, server.url).reply == b"ok"
    assert post(transport, server.url).reply == b"<body/>"
    assert post(transport, server.url).outcome is Outcome.DELIVERED
    assert server.connections == 3


def test_an_idle_connection_closed_by_the_server_is_replaced(
    serve: Serve, transport: HttpTransport
) -> None:
    server = serve(lambda *_: (OK, True))  # keep-alive announced, but closed after each answer
    for i in range(3):
        assert post(transport, server.url, f"m-{i}").outcome is Outcome.DELIVERED
    assert server.connections == 3 and len(server.requests) == 3


def test_a_kept_alive_connection_dropped_without_answer_is_resent_once(
    serve: Serve, transport: HttpTransport
) -> None:
    # the second request on the first connection is dropped unanswered (the server closed the
    # connection as the request went out): it is sent again on a new connection
    def script(number: int, index: int, _request: bytes) -> tuple[bytes, bool]:
        return (b"", True) if (number, index) == (1, 2) else (OK, False)

    server = serve(script)
    assert post(transport, server.url, "m-1").outcome is Outcome.DELIVERED
    assert post(transport, server.url, "m-2").outcome is Outcome.DELIVERED
    assert server.connections == 2
    assert [b"m-2" in r for r in server.requests] == [False, True, True]  # at-least-once


def test_a_fresh_connection_dropped_without_answer_is_a_retry(
    serve: Serve, transport: HttpTransport
) -> None:
    server = serve(lambda *_: (b"", True))
    result = post(transport, server.url)
    assert result.outcome is Outcome.RETRY and result.error == "connection: RemoteDisconnected"
    assert len(server.requests) == 1  # not resent: the connection was not a kept-alive one


def test_malformed_answers_are_retried_and_the_connection_dropped(
    serve: Serve, transport: HttpTransport
) -> None:
    answers = {1: (b"SMTP ready\r\n\r\n", False), 2: (OK + b"garbage", False), 3: (OK, False)}
    server = serve(lambda number, _index, _request: answers[number])
    bad = post(transport, server.url)
    assert bad.outcome is Outcome.RETRY and bad.error == "connection: RemoteProtocolError"
    assert post(transport, server.url).outcome is Outcome.DELIVERED  # new connection …
    assert post(transport, server.url).outcome is Outcome.DELIVERED  # … and after the garbage
    assert server.connections == 3


def test_statuses_and_retry_after_through_the_wire(serve: Serve, transport: HttpTransport) -> None:
    answers = [
        b"HTTP/1.1 503 Service Unavailable\r\nRetry-After: 7\r\nContent-Length: 4\r\n\r\nbusy",
        b"HTTP/1.1 422 Unprocessable Entity\r\nContent-Length: 9\r\n\r\npersonal!",
    ]
    server = serve(lambda _number, index, _request: (answers[index - 1], False))
    busy = post(transport, server.url)
    assert busy.outcome is Outcome.RETRY and busy.retry_after_seconds == 7
    assert busy.error == "HTTP 503 Service Unavailable"
    refused = post(transport, server.url)
    assert refused.outcome is Outcome.PERMANENT and refused.error == "HTTP 422 Unprocessable Entity"


def test_a_header_value_with_a_line_break_is_never_sent(
    serve: Serve, transport: HttpTransport
) -> None:
    server = serve(lambda *_: (OK, False))
    result = post(transport, server.url, "m-1\r\nX-Injected: 1")
    assert result.outcome is Outcome.PERMANENT and server.requests == []
