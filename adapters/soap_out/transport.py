"""Sends platform messages to a connected system's SOAP service with zeep.

The system's WSDL is read from ``<endpoint url>?wsdl`` once per sending thread, with zeep's
``Settings(forbid_external=True, forbid_dtd=True)`` and the endpoint's timeout; calls go to the
configured endpoint URL (never the WSDL's own address, which spyne fixes from the first
caller's Host). The operation is the one named like the service (:mod:`.binding`).

zeep builds the envelope; the call itself is not posted through zeep's ``requests`` session (a
``requests`` call re-reads the proxy and CA-bundle environment every time, which cost a third
of an inquiry's outbound CPU). The environment is read once per system, with ``requests``' own
rules, when the WSDL is loaded: when it names a proxy for the system, or certificate checks
other than the default ones for an ``https`` system, calls go through urllib3, which implements
those; otherwise over the HTTP transport's own kept-alive connections (:mod:`adapters.http_out.
exchange`: a third of urllib3's CPU per call). The WSDL is fetched the same way. Either way
the endpoint's timeout is for the whole exchange (urllib3's sockets are shut at the deadline
by a :class:`~adapters.http_out.deadline.Watchdog`), an answer is read up to ``MAX_BODY``,
redirects are not followed (like the HTTP transport) and a gzip or deflate answer is decoded.

Before anything is sent, the Body zeep built is validated with lxml against the WSDL's schemas
(:mod:`.wsdl_schema`), since zeep ignores patterns and enumerations. The messageId travels
outside the payload twice: in the SOAP header block and as ``Renkei-Message-Id``.

Outcomes: a SOAP Fault whose code is ``Client…`` is permanent (the system refuses this
message); any other Fault retries. Without a Fault, HTTP statuses are classified like the HTTP
transport's (408/429 retry honouring ``Retry-After``, other 4xx permanent, 5xx retry), except
that a 2xx whose body is not a SOAP envelope (an HTML page) or is too long to read retries;
timeouts and connection errors retry; a message the system's contract cannot carry is
permanent. Errors carry codes and names only — a fault string may quote personal data.

zeep is used synchronously: its ``AsyncClient.create_service`` returns a sync proxy
(library-notes §2), and dispatch workers are threads anyway.
"""

from __future__ import annotations

import io
import socket
import threading
import zlib
from dataclasses import dataclass
from functools import cache
from typing import Any

import requests
import urllib3
import urllib3.connection
from lxml import etree

from adapters.http_out.connections import ThreadConnections
from adapters.http_out.deadline import Watchdog, read_capped
from adapters.http_out.exchange import exchange
from adapters.http_out.transport import OVERSIZED, classify_status, retry_after_seconds
from adapters.outbound_headers import renkei_headers
from adapters.soap_out.binding import (
    BindingError,
    Fields,
    Value,
    element_value,
    platform_reply,
    request_parts,
)
from adapters.soap_out.wsdl_schema import WsdlSchema
from bus.catalogue import NS_SERVICE
from bus.config.models import Endpoint
from bus.dispatch.transport import OutboundMessage, Outcome, SendResult
from bus.samplegen.content_model import ContentModel

SOAP_ENV = "http://schemas.xmlsoap.org/soap/envelope/"
MAX_DECODED = 64 * 1024 * 1024  # a compressed answer decoded to more is refused (a bomb)
_READ = 64 * 1024  # bytes per read of an answer through urllib3
_zeep: Any = __import__("zeep")
_zeep_transports: Any = __import__("zeep.transports", fromlist=["Transport"])
_zeep_loader: Any = __import__("zeep.loader", fromlist=["parse_xml"])
_zeep_exceptions: Any = __import__("zeep.exceptions", fromlist=["Error"])
_zeep_wsdl_utils: Any = __import__("zeep.wsdl.utils", fromlist=["etree_to_string"])


def _settings() -> Any:
    return _zeep.Settings(strict=True, forbid_external=True, forbid_dtd=True, forbid_entities=True)


@dataclass
class _Contract:
    """A system's WSDL as zeep and lxml read it, for one sending thread."""

    client: Any
    schema: WsdlSchema
    session: requests.Session  # the WSDL's
    pool: urllib3.PoolManager | None  # the calls', when the environment needs urllib3

    def close(self) -> None:
        self.session.close()
        if self.pool is not None:
            self.pool.clear()


class _Unavailable(Exception):
    """The WSDL could not be read now (connection, timeout, HTTP status): try again later."""

    def __init__(self, result: SendResult) -> None:
        super().__init__(result.error)
        self.result = result


def _load(url: str, timeout: float, connections: ThreadConnections) -> _Contract:
    """The system's WSDL from ``<url>?wsdl``, fetched like the calls go (the environment's
    proxy and certificate checks through urllib3, else this thread's own connections):
    within the timeout as a whole, no more than ``MAX_BODY``, redirects not followed."""
    session = requests.Session()
    transport = _zeep_transports.Transport(
        session=session, timeout=timeout, operation_timeout=timeout
    )
    pool = _pool(session, url, timeout)
    location = f"{url}?wsdl"
    headers = {"Accept": "*/*", "Accept-Encoding": "gzip, deflate", "User-Agent": "renkei"}
    if pool is not None:
        answer = _through_urllib3(pool, "GET", location, headers, None, timeout)
    else:
        answer = _over_own(connections, "GET", location, headers, b"", timeout)
    via = _via_proxy(pool)
    if isinstance(answer, SendResult):  # "connection: WSDL …", "timeout: WSDL …"
        kind, _, detail = (answer.error or "").partition(": ")
        error = f"{kind}: WSDL {detail}" if detail else f"WSDL {kind}"
        raise _Unavailable(SendResult(Outcome.RETRY, error=error + via, reached=answer.reached))
    if answer.status != 200:
        result = classify_status(answer.status, answer.retry_after, b"")
        raise _Unavailable(SendResult(Outcome.RETRY, error=f"WSDL {result.error}{via}"))
    try:
        client = _zeep.Client(io.BytesIO(answer.data), transport=transport, settings=_settings())
        schema = WsdlSchema(answer.data)
    except (etree.LxmlError, _zeep_exceptions.Error, ValueError, IndexError) as error:
        # a broken WSDL is the system's to fix; its deliveries wait (and age out)
        raise _Unavailable(
            SendResult(Outcome.RETRY, error=f"WSDL unreadable: {type(error).__name__}")
        ) from None
    return _Contract(client, schema, session, pool)


# The exchange under way on this thread through a urllib3 pool: its connections' sockets are
# shut down at its deadline (urllib3's own timeouts are per connect and per receive).
_exchange = threading.local()


def _watch(sock: socket.socket | None) -> None:
    watchdog: Watchdog | None = getattr(_exchange, "watchdog", None)
    if watchdog is not None:
        watchdog.watch(sock)


class _WatchedHTTPConnection(urllib3.connection.HTTPConnection):
    """Tells the exchange's :class:`Watchdog` its socket: when connected, and when reused."""

    def connect(self) -> None:
        super().connect()
        _watch(self.sock)

    def request(self, *args: Any, **kwargs: Any) -> None:
        _watch(self.sock)
        super().request(*args, **kwargs)


class _WatchedHTTPSConnection(_WatchedHTTPConnection, urllib3.connection.HTTPSConnection):
    """The same for TLS: the methods above come first in the order, their ``super()`` calls
    then reach HTTPSConnection's."""


class _HTTPPool(urllib3.HTTPConnectionPool):
    ConnectionCls = _WatchedHTTPConnection


class _HTTPSPool(urllib3.HTTPSConnectionPool):
    ConnectionCls = _WatchedHTTPSConnection


def _pool(session: requests.Session, url: str, timeout: float) -> urllib3.PoolManager | None:
    """Connections to ``url`` kept between calls, with the proxy and certificate checks
    ``requests`` would apply to it (its environment rules, read once) and no retries; None
    when those are what the HTTP transport's own connections do (no proxy; for ``https``,
    certifi's bundle)."""
    settings = session.merge_environment_settings(url, {}, None, None, None)
    verify = settings["verify"]
    proxy = requests.utils.select_proxy(url, settings["proxies"])
    default_checks = verify is True or verify == requests.utils.DEFAULT_CA_BUNDLE_PATH
    if not proxy and (default_checks or not url.lower().startswith("https:")):
        return None
    options: dict[str, Any] = {
        "timeout": urllib3.Timeout(connect=timeout, read=timeout),
        "retries": False,
        "cert_reqs": "CERT_REQUIRED" if verify else "CERT_NONE",
        "ca_certs": verify if isinstance(verify, str) else requests.utils.DEFAULT_CA_BUNDLE_PATH,
    }
    manager = urllib3.ProxyManager(proxy, **options) if proxy else urllib3.PoolManager(**options)
    manager.pool_classes_by_scheme = {"http": _HTTPPool, "https": _HTTPSPool}
    return manager


def _via_proxy(pool: urllib3.PoolManager | None) -> str:
    """`` via proxy host:port (NO_PROXY)`` when the environment's proxy carried the exchange:
    a machine-wide HTTP_PROXY without NO_PROXY otherwise reads as the system's own refusal
    (a proxy's 403 page, its ProxyError). Host and port only: the URL may hold a password."""
    proxy = getattr(pool, "proxy", None)
    if proxy is None:
        return ""
    return f" via proxy {proxy.host}:{proxy.port} (NO_PROXY)"


def _fit(value: Value, element: Any) -> Any:
    """``value`` reduced to what the zeep element's type declares (recursively)."""
    elements = getattr(element.type, "elements", None)
    if not elements:
        return value if isinstance(value, str) else None
    if isinstance(value, list):
        return [_fit(v, element) for v in value]
    if not isinstance(value, dict):
        return None
    return _fit_fields(value, elements)


def _fit_fields(fields: Fields, elements: list[tuple[str, Any]]) -> dict[str, Any]:
    fitted: dict[str, Any] = {}
    for name, element in elements:
        if name in fields:
            value = _fit(fields[name], element)
            if value is not None:
                fitted[name] = value
    return fitted


def _header_kwargs(operation: Any, header: Fields) -> dict[str, Any]:
    """The platform Header as the operation's declared header block(s), by local name."""
    declared = getattr(operation.input, "header", None)
    if declared is None or not getattr(declared.type, "elements", None):
        return {}
    return {
        name: _fit_fields(header, element.type.elements) for name, element in declared.type.elements
    }


def _headers(message: OutboundMessage, action: str | None) -> dict[str, str]:
    return {
        "Accept": "*/*",
        "Accept-Encoding": "gzip, deflate",
        "Content-Type": "text/xml; charset=utf-8",
        "SOAPAction": f'"{action or ""}"',
        "User-Agent": "renkei",
        **renkei_headers(message),
    }


def _is_inquiry(service: str) -> bool:
    return f"{{{NS_SERVICE}}}{service}Reply" in _reply_elements()


@cache
def _reply_elements() -> frozenset[str]:
    return frozenset(tag for tag in ContentModel().elements if tag.endswith("Reply"))


@dataclass(frozen=True, slots=True)
class _Answer:
    """A system's HTTP answer, its body decoded, whichever client carried the call."""

    status: int
    retry_after: str | None
    data: bytes


def _decoded(body: bytes, coding: str) -> bytes | None:
    """The body under its ``Content-Encoding`` (gzip or deflate, as urllib3 decodes them;
    any other coding as it is); None when it does not decode, or would decode to more than
    ``MAX_DECODED`` bytes (a compression bomb)."""
    coding = coding.strip().lower()
    if coding in ("gzip", "x-gzip"):
        formats: tuple[int, ...] = (zlib.MAX_WBITS | 16,)
    elif coding == "deflate":  # zlib-wrapped, or raw as some servers send it
        formats = (zlib.MAX_WBITS, -zlib.MAX_WBITS)
    else:
        return body
    for window in formats:
        decompressor = zlib.decompressobj(window)
        try:
            data = decompressor.decompress(body, MAX_DECODED)
        except zlib.error:
            continue
        return None if decompressor.unconsumed_tail or not decompressor.eof else data
    return None


def _answer(service: str, response: _Answer, settings: Any) -> SendResult:
    """Classify a system's HTTP answer; an inquiry's reply becomes a PlatformMessage."""
    retry_after = response.retry_after
    envelope = None
    if response.data:
        try:
            envelope = _zeep_loader.parse_xml(response.data, None, settings=settings)
        except (etree.LxmlError, _zeep_exceptions.Error):
            envelope = None
    body = envelope.find(f"{{{SOAP_ENV}}}Body") if envelope is not None else None
    fault = body.find(f"{{{SOAP_ENV}}}Fault") if body is not None else None
    if fault is not None:
        code = (fault.findtext("faultcode") or "").strip()
        kind = code.rpartition(":")[2]
        error = f"SOAP Fault {kind or 'without code'} (HTTP {response.status})"
        if kind.startswith("Client"):
            return SendResult(Outcome.PERMANENT, error=error)
        return SendResult(
            Outcome.RETRY, error=error, retry_after_seconds=retry_after_seconds(retry_after)
        )
    if not 200 <= response.status < 300:
        return classify_status(response.status, retry_after, b"")
    if body is None and response.data.strip():
        # accepted by something that is not the SOAP service (a proxy's login or maintenance
        # page, a web server's index): the message did not reach the system
        return SendResult(
            Outcome.RETRY, error=f"HTTP {response.status} answer is not a SOAP envelope"
        )
    if not _is_inquiry(service):
        return SendResult(Outcome.DELIVERED)
    if body is None or len(body) == 0:
        return SendResult(Outcome.DELIVERED, reply=None)
    block = envelope.find(f"{{{SOAP_ENV}}}Header") if envelope is not None else None
    header = element_value(block[0]) if block is not None and len(block) else {}
    answer = element_value(body[0])
    reply = platform_reply(
        service,
        header if isinstance(header, dict) else {},
        answer if isinstance(answer, dict) else {},
    )
    return SendResult(Outcome.DELIVERED, reply=reply)


class SoapTransport:
    """Thread-safe: each sending thread keeps its own zeep client per system (zeep and
    requests sessions are not meant to be shared between threads)."""

    def __init__(self) -> None:
        self._local = threading.local()
        self._all: list[_Contract] = []
        self._lock = threading.Lock()
        self._connections = ThreadConnections()  # the calls' (no proxy), per thread

    def _contract(self, url: str, timeout: float) -> _Contract:
        contracts: dict[tuple[str, float], _Contract] = self._local.__dict__.setdefault(
            "contracts", {}
        )
        contract = contracts.get((url, timeout))
        if contract is None:
            contract = contracts[(url, timeout)] = _load(url, timeout, self._connections)
            with self._lock:
                self._all.append(contract)
        return contract

    def _forget(self, url: str, timeout: float) -> None:
        """Drop this thread's contract for ``url``: the next send loads the WSDL again."""
        contract = self._local.__dict__.get("contracts", {}).pop((url, timeout), None)
        if contract is None:
            return
        with self._lock:
            self._all.remove(contract)
        contract.close()

    def send(self, message: OutboundMessage, endpoint: Endpoint) -> SendResult:
        if not endpoint.url:
            return SendResult(Outcome.PERMANENT, error="endpoint has no url")
        try:
            request = request_parts(message.body)
        except BindingError as error:
            return SendResult(Outcome.PERMANENT, error=f"binding: {error}")
        try:
            contract = self._contract(endpoint.url, endpoint.timeout_seconds)
        except _Unavailable as unavailable:
            return unavailable.result
        client = contract.client
        try:
            operation = client.service._binding.get(request.service)
        except ValueError:
            return SendResult(
                Outcome.PERMANENT, error=f"the system's WSDL has no operation {request.service}"
            )
        body_element = operation.input.body if operation.input is not None else None
        if body_element is None:
            # The WSDL as read declares the operation without a body part (seen once, on the
            # first delivery to a sample system after a fresh start; the next load was whole).
            # Not kept: the next attempt reads the WSDL again.
            self._forget(endpoint.url, endpoint.timeout_seconds)
            return SendResult(
                Outcome.RETRY, error=f"WSDL: operation {request.service} has no body part"
            )
        fields = _fit_fields(request.fields, body_element.type.elements)
        try:
            envelope = client.create_message(
                client.service,
                request.service,
                **fields,
                _soapheaders=_header_kwargs(operation, request.header) or None,
            )
        except (_zeep_exceptions.Error, TypeError) as error:
            return SendResult(
                Outcome.PERMANENT, error=f"not expressible in the system's WSDL: {error}"
            )
        body = envelope.find(f"{{{SOAP_ENV}}}Body")
        problems = contract.schema.problems(body[0]) if body is not None and len(body) else []
        if problems:
            return SendResult(
                Outcome.PERMANENT, error="invalid for the system's WSDL: " + "; ".join(problems)
            )
        data = _zeep_wsdl_utils.etree_to_string(envelope)  # what zeep's post_xml sends
        headers = _headers(message, operation.soapaction)
        timeout = endpoint.timeout_seconds
        if contract.pool is not None:
            answer = _through_urllib3(contract.pool, "POST", endpoint.url, headers, data, timeout)
        else:
            headers["Content-Length"] = str(len(data))
            answer = _over_own(self._connections, "POST", endpoint.url, headers, data, timeout)
        if isinstance(answer, SendResult):
            return answer
        return _answer(request.service, answer, client.settings)

    def interrupt(self) -> None:
        """End the calls under way over this transport's own connections (the hub stopping;
        a call through a proxy's pool ends at its timeout)."""
        self._connections.interrupt()

    def close(self) -> None:
        with self._lock:
            made, self._all = self._all, []
        for contract in made:
            contract.close()
        self._connections.close()


def _unread(status: int, retry_after: str | None) -> SendResult:
    """An answer whose body, over ``MAX_BODY``, was not read: neither a Fault nor a reply
    (nor a WSDL) can be told from it."""
    if 200 <= status < 300:
        return SendResult(Outcome.RETRY, error=f"HTTP {status} {OVERSIZED}")
    return classify_status(status, retry_after, b"")


def _over_own(
    connections: ThreadConnections,
    method: str,
    url: str,
    headers: dict[str, str],
    data: bytes,
    timeout: float,
) -> _Answer | SendResult:
    """The exchange over this thread's kept-alive connection to the system (the usual case:
    no proxy, default certificate checks), its answer decoded."""
    got = exchange(connections, url, headers, data, timeout, method)
    if isinstance(got, SendResult):
        return got
    if got.oversized:
        return _unread(got.status, got.headers.get("retry-after"))
    body = _decoded(got.body, got.headers.get("content-encoding", ""))
    if body is None:
        return SendResult(Outcome.RETRY, error="connection: DecodeError")
    return _Answer(got.status, got.headers.get("retry-after"), body)


#: urllib3's errors for a connection that could not be made (TCP, DNS, the TLS handshake).
_UNCONNECTED = (
    urllib3.exceptions.NewConnectionError,  # NameResolutionError too
    urllib3.exceptions.ConnectTimeoutError,
    urllib3.exceptions.SSLError,
)


def _unconnected(error: Exception) -> bool:
    """Whether urllib3's ``error`` means nothing of the request went out."""
    if isinstance(error, urllib3.exceptions.MaxRetryError):
        return isinstance(error.reason, _UNCONNECTED)
    return isinstance(error, _UNCONNECTED)


def _through_urllib3(
    pool: urllib3.PoolManager,
    method: str,
    url: str,
    headers: dict[str, str],
    data: bytes | None,
    timeout: float,
) -> _Answer | SendResult:
    """The exchange through the proxy (or with the certificate checks) the environment
    names, within ``timeout`` as a whole (a :class:`Watchdog` on the connection's socket),
    the body read up to ``MAX_BODY`` and decoded like :func:`_over_own`'s."""
    with Watchdog(timeout) as watchdog:
        _exchange.watchdog = watchdog
        try:
            response = pool.request(
                method,
                url,
                body=data,
                headers=headers,
                preload_content=False,
                decode_content=False,
                redirect=False,
            )
            try:
                raw = read_capped(response.stream(_READ, decode_content=False), watchdog)
            except BaseException:
                response.close()  # neither the rest is read, nor the connection used again
                raise
            if raw is None:
                response.close()
                return _unread(response.status, response.headers.get("Retry-After"))
            response.release_conn()
        except TimeoutError:  # the deadline, seen between two reads
            return SendResult(Outcome.RETRY, error="timeout: ReadTimeout", reached=True)
        except urllib3.exceptions.TimeoutError as error:
            kind = f"timeout: {type(error).__name__}"
            return SendResult(Outcome.RETRY, error=kind, reached=not _unconnected(error))
        except urllib3.exceptions.HTTPError as error:
            if watchdog.fired:  # its socket was shut at the deadline
                return SendResult(Outcome.RETRY, error="timeout: ReadTimeout", reached=True)
            kind = f"connection: {type(error).__name__}"
            return SendResult(Outcome.RETRY, error=kind, reached=not _unconnected(error))
        finally:
            _exchange.watchdog = None
    body = _decoded(raw, response.headers.get("Content-Encoding", ""))
    if body is None:
        return SendResult(Outcome.RETRY, error="connection: DecodeError")
    return _Answer(response.status, response.headers.get("Retry-After"), body)
