"""Each transport says whether a failed send may have reached its destination
(``SendResult.reached``), and the circuit breaker (``destination_wide``) goes by that rather
than by the error's text: a refused port, a folder that cannot be written, a broker that is
not there hold the destination; a failure once the request went out counts against the
message. Real sockets on 127.0.0.1, a real folder, a real unused broker port."""

from __future__ import annotations

import socket
import threading
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from adapters.file_out.transport import FileTransport
from adapters.http_out.transport import HttpTransport
from adapters.queue_out.transport import QueueTransport
from adapters.soap_out.transport import SoapTransport
from bus.config.models import Endpoint
from bus.dispatch.transport import OutboundMessage, Outcome, SendResult, destination_wide
from bus.settings import Settings
from tests.support.receivers import free_port

ROOT = Path(__file__).resolve().parents[1]
MESSAGE = OutboundMessage("m-1", None, "ResidentChangeNotice", "414247", "kokuho", b"<x/>")


def _unconnected(result: SendResult) -> None:
    assert result.outcome is Outcome.RETRY and result.reached is False, result
    assert destination_wide(result)


@pytest.fixture
def silent_server() -> Iterator[int]:
    """A port that accepts connections and never answers (a system that hangs)."""
    server = socket.create_server(("127.0.0.1", 0))
    accepted: list[socket.socket] = []
    stop = threading.Event()

    def accept() -> None:
        server.settimeout(0.05)
        while not stop.is_set():
            try:
                accepted.append(server.accept()[0])
            except TimeoutError:
                continue

    thread = threading.Thread(target=accept, daemon=True)
    thread.start()
    yield int(server.getsockname()[1])
    stop.set()
    thread.join()
    for connection in accepted:
        connection.close()
    server.close()


def test_http_refused_is_not_reached() -> None:
    endpoint = Endpoint(transport="http", url=f"http://127.0.0.1:{free_port()}/kokuho")
    _unconnected(HttpTransport().send(MESSAGE, endpoint))
    with httpx.Client() as client:  # an injected client: httpx's ConnectError
        _unconnected(HttpTransport(client).send(MESSAGE, endpoint))


def test_http_read_timeout_was_reached_and_counts(silent_server: int) -> None:
    endpoint = Endpoint(
        transport="http", url=f"http://127.0.0.1:{silent_server}/kokuho", timeout_seconds=0.3
    )
    for transport in (HttpTransport(), HttpTransport(httpx.Client())):
        result = transport.send(MESSAGE, endpoint)
        assert (result.error, result.reached) == ("timeout: ReadTimeout", True)
        assert not destination_wide(result)
        transport.close()


def test_soap_wsdl_refused_is_not_reached() -> None:
    """``connection: WSDL ConnectionRefusedError`` was never in the error-text list: the
    WSDL of a system that is down counted against each message, up to ``max_attempts``."""
    endpoint = Endpoint(transport="soap", url=f"http://127.0.0.1:{free_port()}/kokuho")
    sample = ROOT / "samples" / "messages" / "ResidentChangeNotice" / "valid-full.xml"
    message = OutboundMessage(
        "m-1", None, "ResidentChangeNotice", "414247", "kokuho", sample.read_bytes()
    )
    result = SoapTransport().send(message, endpoint)
    assert result.error == "connection: WSDL ConnectionRefusedError"
    _unconnected(result)


def test_file_folder_not_writable_is_not_reached(tmp_path: Path) -> None:
    blocker = tmp_path / "share"
    blocker.write_text("not a folder", encoding="utf-8")  # a mount point left as a file
    endpoint = Endpoint(transport="file", url=str(blocker / "out"))
    _unconnected(FileTransport(Settings(data_dir=tmp_path / "data")).send(MESSAGE, endpoint))


@pytest.mark.slow  # kombu waits 2 s before its one retry; the flag itself: the test below
def test_queue_broker_not_there_is_not_reached() -> None:
    endpoint = Endpoint(
        transport="queue",
        url=f"amqp://guest:guest@127.0.0.1:{free_port()}//?queue=kokuho-reached",
        timeout_seconds=0.3,
    )
    transport = QueueTransport()
    try:
        _unconnected(transport.send(MESSAGE, endpoint))
    finally:
        transport.close()


def test_the_flag_decides_not_the_text() -> None:
    """An exception type no list names is held when the transport says nothing was sent;
    a listed text is counted when the transport says the request went out."""
    assert destination_wide(SendResult(Outcome.RETRY, error="connection: Xyz", reached=False))
    listed = "connection: ConnectionRefusedError"
    assert not destination_wide(SendResult(Outcome.RETRY, error=listed, reached=True))
    assert not destination_wide(SendResult(Outcome.PERMANENT, error=listed, reached=False))
    assert destination_wide(
        SendResult(Outcome.RETRY, error=listed)
    )  # a transport that does not say
