"""One POST and its answer over the sending thread's kept-alive connection, for every outbound
transport that speaks plain HTTP/1.1 (the HTTP transport, and the SOAP transport's calls).

A kept-alive connection the server closed while it was idle is detected before use
(:mod:`.connections`); if the server closes it just as the request goes out (nothing of an
answer received), the request is sent once more on a new connection — at-least-once, as
everywhere in dispatch: receivers deduplicate by ``Renkei-Message-Id``. A failure is a
:class:`SendResult` with a body-free reason.
"""

from __future__ import annotations

import re
from time import monotonic

from adapters.http_out.connections import ThreadConnections, target
from adapters.http_out.wire import Connection, ProtocolError, RemoteDisconnected, Response
from bus.dispatch.transport import Outcome, SendResult

_LINE_BREAK = re.compile(r"[\r\n]")


def exchange(
    connections: ThreadConnections,
    url: str,
    headers: dict[str, str],
    body: bytes,
    timeout: float,
    method: str = "POST",
) -> Response | SendResult:
    """The answer to ``POST url`` (``headers`` must hold ``Content-Length``; or ``GET url``
    with ``method`` GET and no body), whole within
    ``timeout`` seconds (connect, request and answer together; a resend on a new connection
    shares them), or why there is none: permanent for a URL that is not http(s) or a header
    value that would split the request, else a retry — ``reached`` False when no connection
    could be made (refused, DNS, no route, connect timeout, TLS handshake)."""
    try:
        where = target(url)
    except ValueError:
        return SendResult(Outcome.PERMANENT, error="endpoint url is not http(s)")
    if _LINE_BREAK.search("".join(headers.values())):
        return SendResult(Outcome.PERMANENT, error="a header value holds a line break")
    deadline = monotonic() + timeout
    for _ in range(2):  # a second time only after a dead kept-alive connection
        connection = connections.get(where.origin)
        reused = connection.is_open
        if not reused and (unconnected := _connect(connection, deadline)) is not None:
            return unconnected
        phase = "Write"
        try:
            connection.send_request(where.path, headers, body, deadline, timeout, method)
            phase = "Read"
            return connection.read_response(deadline)
        except (BrokenPipeError, ConnectionResetError, RemoteDisconnected) as error:
            connection.close()
            if reused and not connections.interrupted:
                continue  # a kept-alive connection the server had closed: send again once
            return _sent(f"connection: {type(error).__name__}")
        except TimeoutError:
            connection.close()
            return _sent(f"timeout: {phase}Timeout")
        except ProtocolError:
            connection.close()
            return _sent("connection: RemoteProtocolError")
        except OSError as error:
            connection.close()
            return _sent(f"connection: {type(error).__name__}")
    return _sent("connection: RemoteDisconnected")


def _sent(error: str) -> SendResult:
    """A retry after the connection was made: the request may have reached the system."""
    return SendResult(Outcome.RETRY, error=error, reached=True)


def _connect(connection: Connection, deadline: float) -> SendResult | None:
    """Open ``connection`` (TCP, and TLS for https) by ``deadline``: None, or the failure
    with ``reached`` False — nothing of the request went out."""
    try:
        connection.connect(max(deadline - monotonic(), 0.001))
    except TimeoutError:
        connection.close()
        return SendResult(Outcome.RETRY, error="timeout: ConnectTimeout", reached=False)
    except OSError as error:  # refused, unreachable, unresolvable, TLS (short names)
        connection.close()
        return SendResult(Outcome.RETRY, error=f"connection: {type(error).__name__}", reached=False)
    return None
