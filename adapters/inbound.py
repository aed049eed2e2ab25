"""What the SOAP and REST inbound adapters share: a bounded body, who is calling, the one
pipeline run off the event loop, and whose fault a refusal is.

Neither adapter validates or routes by itself: both hand bytes to the hub's one pipeline,
in one of three lanes. The body is first screened with the Validate stage's own secure parse
(on the event loop when small; a large one in a thread, once the process's parse budget has
room for its tree, else RK-API017: bus/validation/parse_budget.py). A notification (anything
but an inquiry) that passes goes to the batch lane (:meth:`bus.hub.Hub.submit`): one thread
runs the messages queued meanwhile together and stores them in one transaction. An inquiry
waits for its provider, so it runs the pipeline in a thread of its own, at most
``RENKEI_INGEST_THREADS`` at once. A body the screening refuses, or whose root cannot be a
message, takes the pipeline in a thread of the default pool instead, so a hostile request
never queues behind valid ones — or on the event loop itself when nothing in that run can
wait (a caller known by certificate or address); Authenticate still decides first and Audit
records the refusal (after the answer: :mod:`bus.store.rejection_audit`).

A refusal an adapter makes before the pipeline (the media type, the Content-Encoding, the body
limit, the charset, WS-Security…, answered there because the pipeline would answer an
unidentified caller RK-AUT001 instead) is audited too: :func:`audited_refusal` gives its
answer a task that runs once the answer is sent and hands the record to the rejection audit
without waiting (:meth:`bus.store.rejection_audit.RejectionAuditWriter.offer`).
"""

from __future__ import annotations

import asyncio
import logging
import ssl
import time
import uuid
import weakref
from collections.abc import Iterable
from dataclasses import dataclass

import anyio
from starlette.background import BackgroundTask
from starlette.requests import ClientDisconnect, Request
from starlette.responses import Response
from starlette.types import Scope

from bus.config.loader import is_inquiry, request_services
from bus.errors import make_finding
from bus.hub import Hub
from bus.pipeline import Finding, Identity, Message, Severity, UsernameToken
from bus.settings import Settings
from bus.store.rejection_audit import edge_rejection_entry
from bus.store.write_health import is_storage_full, is_store_unavailable, write_health
from bus.validation.http_body import decode_body, unsupported_coding
from bus.validation.parse_budget import MIB, ParseBudget, Reservation, tree_cost
from bus.validation.secure_parse import ParseLimits, ParseResult, refuse_early, secure_parse
from bus.validation.validator import MESSAGE_ROOT_NAMES, is_message_root

log = logging.getLogger(__name__)

#: The largest body read: the pipeline's own document limit (checked again there).
MAX_BODY_BYTES = ParseLimits().max_bytes

#: Bodies up to this size are screened on the event loop (a 3 KB message: ~0.05 ms); a
#: larger one in a thread of the default pool, which ingest's limited threads never hold.
LOOP_PARSE_BYTES = 64 * 1024

#: How long a large body waits for room in the parse budget before it is refused RK-API017.
PARSE_WAIT_SECONDS = 2.0

#: How much of a platform-XML body is read before its head is checked (enough for the
#: prolog and the root's start tag of any message; a socket read usually brings more).
HEAD_BYTES = 4 * 1024

#: Refusals that are the hub's (or its provider's) doing, not the caller's: SOAP Server
#: faults, HTTP 5xx. Everything else is the caller's input (Client faults, HTTP 4xx).
SERVER_SIDE_CODES = frozenset(
    {
        "RK-RTE002",
        "RK-RPL001",
        "RK-RPL002",
        "RK-RPL003",
        "RK-RPL004",
        "RK-API003",
        "RK-STO007",
        "RK-STO008",
        "RK-AUT014",
        "RK-API017",
    }
)

#: Refusals of a hub that cannot take the message *now* (its store is full or cannot be
#: reached, it cannot verify credentials; an inquiry's provider asked for time, RK-RPL004):
#: answered 503 (REST) or a Server fault, with ``Retry-After`` of this many seconds (the
#: provider's own for RK-RPL004), so the sender resends later (the Idempotent Receiver
#: makes a resend safe).
RETRY_LATER_CODES = frozenset({"RK-STO007", "RK-STO008", "RK-AUT014", "RK-RPL004", "RK-API017"})
RETRY_LATER_SECONDS = 30

_BEARER = "bearer "

#: Callers named by an API key for the audit of edge refusals at once (each a database read,
#: perhaps a scrypt, in a thread); past it a refusal is recorded without the system's name.
EDGE_LOOKUPS = 4
_edge_lookups = 0
_NAMING_METHODS = frozenset({"certificate", "api_key"})


def peer_certificate(scope: Scope) -> bytes | None:
    """The TLS client certificate (DER) from the ASGI TLS extension's ``client_cert_chain``
    (``renkei serve --tls-client-ca`` fills it; docs/security.md)."""
    tls = scope.get("extensions", {}).get("tls") or {}
    chain = tls.get("client_cert_chain") or ()
    if not chain:
        return None
    try:
        return ssl.PEM_cert_to_DER_cert(chain[0])
    except ValueError:
        return None


@dataclass(frozen=True, slots=True)
class Caller:
    """What the transport says about the caller (bus/identity.py decides who it is): a TLS
    client certificate, a Bearer API key, the source address. A present but non-Bearer
    Authorization header is an (invalid) empty key, so it is refused rather than silently
    retried by address."""

    source_address: str | None
    api_key: str | None
    client_certificate: bytes | None = None

    @classmethod
    def of(cls, request: Request) -> Caller:
        authorization = request.headers.get("authorization")
        api_key: str | None = None
        if authorization is not None:
            bearer = authorization[: len(_BEARER)].lower() == _BEARER
            api_key = authorization[len(_BEARER) :].strip() if bearer else ""
        address = request.client.host if request.client else None
        return cls(address, api_key, peer_certificate(request.scope))


def identify(hub: Hub, caller: Caller, adapter: str) -> Identity | None:
    """Who is reading (message status, feeds): the ingest pipeline's own Authenticate stage."""
    probe = Message(
        raw=b"",
        adapter=adapter,
        source_address=caller.source_address,
        api_key=caller.api_key,
        client_certificate=caller.client_certificate,
    )
    return hub.authenticator()(probe).identity


def known_service(service: str) -> bool:
    return service in request_services()


def unknown_service(service: str) -> Finding:
    return make_finding("RK-API002", path="/", actual=service[:64])


@dataclass(frozen=True, slots=True)
class RefusedHead:
    """A platform-XML body refused from its first bytes, before the rest was read: ``head``
    is what was read, ``screened`` the refusal :func:`screen` would give the whole body."""

    head: bytes
    screened: ParseResult


async def read_body(request: Request, limit: int = MAX_BODY_BYTES) -> bytes | Finding:
    """The body, or RK-SEC002 as soon as it is known to exceed ``limit`` (from the declared
    length, else while streaming) so an oversize body is never held in memory whole."""
    body = await _read(request, limit, platform_xml=False)
    assert not isinstance(body, RefusedHead)  # only a platform-XML body is judged by its head
    return body


async def read_message_body(request: Request) -> bytes | Finding | RefusedHead:
    """:func:`read_body` for a body that must be a platform message (SOAP, REST in XML): once
    :data:`HEAD_BYTES` have arrived and more are coming, the byte checks
    :func:`refuse_early` makes (foreign encoding, NUL, DOCTYPE, a foreign root) run on that
    head. A head they refuse is answered at once (:class:`RefusedHead`) and the rest is not
    read into memory (the server discards it). The checks give the whole body the same
    refusal, except a body with a NUL byte only further on, which the whole-body check would
    report first (RK-SEC006)."""
    return await _read(request, MAX_BODY_BYTES, platform_xml=True)


async def read_request_body(
    request: Request, *, platform_xml: bool, limit: int = MAX_BODY_BYTES
) -> bytes | Finding | RefusedHead:
    """The body with its ``Content-Encoding`` undone (bus/validation/http_body.py), or the
    refusal: RK-API009 (an unsupported coding, before the body is read), RK-SEC002 (too
    large, compressed or decoded), RK-API010 (not valid gzip), RK-API014 (the connection
    closed before the body was complete). ``platform_xml``: a body that
    must be a platform message, whose head is judged while it arrives
    (:func:`read_message_body`) when it is not encoded. Only a request with a
    ``Content-Encoding`` header pays for any of this. ``limit``: the document limit, for a
    caller with its own (``POST /api/v1/validate``'s validator); a platform-XML body is read
    with the pipeline's."""
    coding = request.headers.get("content-encoding")
    if coding is None:
        return await (read_message_body(request) if platform_xml else read_body(request, limit))
    refusal = unsupported_coding(coding)
    if refusal is not None:
        return refusal
    body = await read_body(request, limit)  # encoded bytes: their head says nothing of the XML
    if isinstance(body, Finding) or "gzip" not in coding.lower():  # identity: as sent
        return body
    # off the event loop: a few compressed KiB may decode to the whole document limit
    return await anyio.to_thread.run_sync(decode_body, body, coding, limit)


async def _read(
    request: Request, limit: int, *, platform_xml: bool
) -> bytes | Finding | RefusedHead:
    declared = request.headers.get("content-length", "")
    if declared.isdigit() and int(declared) > limit:
        return make_finding("RK-SEC002", path="/", limit=limit, actual=declared)
    body = bytearray()
    head_checked = not platform_xml
    try:
        async for chunk in request.stream():
            body.extend(chunk)
            if len(body) > limit:
                return make_finding("RK-SEC002", path="/", limit=limit, actual=f">{limit}")
            if not head_checked and len(body) >= HEAD_BYTES:
                head_checked = True
                refused = _refused_head(bytes(body))
                if refused is not None:
                    return refused
    except ClientDisconnect:  # the sender gave up mid-body: a refusal (audited), no traceback
        return make_finding("RK-API014", path="/", actual=len(body))
    return bytes(body)


def _refused_head(head: bytes) -> RefusedHead | None:
    """The head's byte-check refusal, when the whole body is sure to get the same one (see
    :func:`read_message_body`); an all-blank head says nothing about the rest."""
    refusal = refuse_early(head, roots=MESSAGE_ROOT_NAMES)
    if refusal is None or any(f.code == "RK-SEC008" for f in refusal.findings):
        return None
    return RefusedHead(head, refusal)


def internal_error(error: BaseException) -> Finding:
    """RK-API003 with a reference that is also in the log (with the traceback): the caller
    never sees a traceback, the operator can find it."""
    reference = uuid.uuid4().hex[:12]
    log.error("inbound request failed (reference %s)", reference, exc_info=error)
    return make_finding("RK-API003", path="/", actual=reference)


async def screen(raw: bytes) -> ParseResult:
    """The secure parse the Validate stage would do (same limits, a foreign root refused
    before parsing), done before ingest. A large body's tree is admitted by the process's
    :func:`parse_budget` first and holds its share while the result lives (its tree goes
    through the pipeline with it); one that finds no room within :data:`PARSE_WAIT_SECONDS`
    is not parsed: RK-API017, answered 503 with ``Retry-After`` once Authenticate has
    passed (an unidentified caller still gets RK-AUT001)."""
    if len(raw) <= LOOP_PARSE_BYTES:
        return secure_parse(raw, roots=MESSAGE_ROOT_NAMES)
    # a large body refused by the byte checks (a foreign root, a DOCTYPE…) needs no thread
    refusal = refuse_early(raw, roots=MESSAGE_ROOT_NAMES)
    if refusal is not None:
        return refusal
    reservation = await reserve_tree(raw)
    if isinstance(reservation, Finding):
        return ParseResult(None, (reservation,))
    try:
        result = await anyio.to_thread.run_sync(
            secure_parse, raw, ParseLimits(), MESSAGE_ROOT_NAMES
        )
    except BaseException:
        reservation.release()
        raise
    if result.root is None:  # refused: libxml2 freed what it built
        reservation.release()
    else:
        key = id(result)
        _admitted[key] = weakref.finalize(result, _give_back, key, reservation)
    return result


_parse_budget: ParseBudget | None = None

#: Admitted trees by the id of their screening result: :func:`ingest` gives the share back
#: when its pipeline run is over; the result's end does if it never reaches ingest (a SOAP
#: header refused by the adapter, a client gone). Each entry leaves when either happens.
_admitted: dict[int, weakref.finalize[..., ParseResult]] = {}


def _give_back(key: int, reservation: Reservation) -> None:
    _admitted.pop(key, None)
    reservation.release()


def _release_tree(screened: ParseResult) -> None:
    """The budget share of ``screened``'s tree, given back (the pipeline is done with it)."""
    finalizer = _admitted.pop(id(screened), None)
    if finalizer is not None:
        finalizer()


def parse_budget() -> ParseBudget:
    """The process's budget for large bodies' trees (``RENKEI_PARSE_MEMORY_MIB``), made on
    first use: memory is the process's, whichever application or event loop parses."""
    global _parse_budget
    if _parse_budget is None:
        _parse_budget = ParseBudget(Settings().parse_memory_mib * MIB)
    return _parse_budget


async def reserve_tree(raw: bytes) -> Reservation | Finding:
    """Room in the process's :func:`parse_budget` for ``raw``'s tree, waiting up to
    :data:`PARSE_WAIT_SECONDS`; RK-API017 (503, ``Retry-After``) when none came."""
    budget = parse_budget()
    reservation = await _reserve(budget, tree_cost(raw))
    if reservation is None:
        return make_finding("RK-API017", path="/", limit=budget.total // MIB)
    return reservation


async def _reserve(budget: ParseBudget, cost: int) -> Reservation | None:
    """A reservation of ``cost``, waiting up to :data:`PARSE_WAIT_SECONDS` for room (polled:
    only large bodies wait, and a parse they wait for takes tenths of a second)."""
    reservation = budget.try_reserve(cost)
    deadline = time.monotonic() + PARSE_WAIT_SECONDS
    pause = 0.005
    while reservation is None:
        left = deadline - time.monotonic()
        if left <= 0:
            return None
        await anyio.sleep(min(pause, left))
        pause = min(pause * 2, 0.05)
        reservation = budget.try_reserve(cost)
    return reservation


def ingest_limiter(request: Request) -> anyio.CapacityLimiter:
    """The application's ingest lane: ``ingest_threads`` tokens, made on first use (on the
    event loop, so never twice)."""
    state = request.app.state
    limiter: anyio.CapacityLimiter | None = getattr(state, "ingest_limiter", None)
    if limiter is None:
        hub: Hub = state.hub
        limiter = anyio.CapacityLimiter(hub.settings.ingest_threads)
        state.ingest_limiter = limiter
    return limiter


async def ingest(
    request: Request,
    raw: bytes,
    *,
    adapter: str,
    service: str,
    username_token: UsernameToken | None = None,
    screened: ParseResult | None = None,
) -> Message:
    """Run ``raw`` through the hub's pipeline in a worker thread (it blocks on the store and,
    for an inquiry, on the provider): in the ingest lane, or, when the screening parse
    (``screened``, else done here) refuses it, in the default pool. Validate reuses that parse.
    An unexpected exception becomes RK-API003."""
    hub: Hub = request.app.state.hub
    caller = Caller.of(request)
    screened = screened or await screen(raw)
    refused = screened.root is None or not is_message_root(screened.root)
    message = Message(
        raw=raw,
        adapter=adapter,
        source_address=caller.source_address,
        api_key=caller.api_key,
        username_token=username_token,
        client_certificate=caller.client_certificate,
        endpoint_service=service,
        parsed=screened,
    )
    try:
        if refused and _refusal_needs_no_io(hub, caller, username_token):
            return hub.run(message)  # on the event loop: no thread hand-over (docs/benchmarks.md)
        if not refused and not is_inquiry(service):
            return await asyncio.wrap_future(hub.submit(message))
        return await anyio.to_thread.run_sync(
            hub.run, message, limiter=None if refused else ingest_limiter(request)
        )
    except Exception as error:  # the adapter boundary: never a generic 500
        failed = Message(raw=raw, adapter=adapter)
        failed.add_findings([_refusal_for(hub, error)])
        return failed
    finally:
        _release_tree(screened)


def _refusal_for(hub: Hub, error: Exception) -> Finding:
    """RK-STO007 when a stage's write found the store full (a rate-limit counter, a nonce:
    the Store stage answers its own); RK-STO008 when the store could not be reached now (the
    database down or its connections lost, a lock not granted within
    ``RENKEI_DATABASE_LOCK_TIMEOUT``): each logged once per episode, without a traceback
    (bus/store/write_health.py); else RK-API003 with the traceback in the log."""
    if is_storage_full(error):
        write_health(hub.store.engine).failed(error)
        return make_finding("RK-STO007", path="/")
    if is_store_unavailable(error):
        write_health(hub.store.engine).unavailable(error)
        return make_finding("RK-STO008", path="/")
    return internal_error(error)


def _refusal_needs_no_io(hub: Hub, caller: Caller, token: UsernameToken | None) -> bool:
    """Whether the pipeline can refuse a screened-out body without waiting on anything: the
    caller is told by its certificate or address (no API key or token to look up in the
    database), the configuration needs no poll, the audit writer has room. Then the refusal
    runs on the event loop; under load each hand-over to a thread and back waits for the GIL
    behind the ingest threads."""
    return (
        caller.api_key is None
        and token is None
        and hub.config.fresh()
        and hub.rejections.has_room()
    )


def audited_refusal(
    request: Request,
    answer: Response,
    refusal: Finding,
    *,
    adapter: str,
    service: str | None,
    raw: bytes | None = None,
) -> Response:
    """``answer`` (unchanged) to a refusal made before the pipeline, with the refusal's audit
    record written once it is sent (bus/store/rejection_audit.py, ``edge_rejection_entry``):
    ``service`` the endpoint's (``None`` when unknown), ``raw`` the bytes read when the body
    was judged (recorded by size only)."""
    size = None if raw is None else len(raw)
    answer.background = BackgroundTask(
        _audit_refusal, request, refusal.code, adapter, service, size
    )
    return answer


async def _audit_refusal(
    request: Request, code: str, adapter: str, service: str | None, size: int | None
) -> None:
    """After the answer: who the credentials name (config only on the event loop; an API key
    in a thread, at most :data:`EDGE_LOOKUPS` at once), then the record, offered without
    waiting. Never raises: the answer is sent already and the log says what failed."""
    global _edge_lookups
    try:
        hub: Hub = request.app.state.hub
        caller = Caller.of(request)
        credential = (
            "certificate"
            if caller.client_certificate is not None
            else "api_key"
            if caller.api_key is not None
            else None
        )
        identity: Identity | None = None
        if credential is not None:
            if caller.api_key is None and hub.config.fresh():
                identity = _credential_identity(hub, caller, adapter)
            elif _edge_lookups < EDGE_LOOKUPS:
                _edge_lookups += 1
                try:
                    identity = await anyio.to_thread.run_sync(
                        _credential_identity, hub, caller, adapter
                    )
                finally:
                    _edge_lookups -= 1
        system = None
        if identity is not None and len(identity.systems) == 1:
            (system,) = identity.systems
            credential = identity.method
        entry = edge_rejection_entry(
            code,
            adapter=adapter,
            service=service,
            source_address=caller.source_address,
            credential=credential,
            system=system,
            raw_bytes=size,
        )
        hub.rejections.offer(entry)
    except Exception:
        log.exception("a refusal made before the pipeline was not audited (%s)", code)


def _credential_identity(hub: Hub, caller: Caller, adapter: str) -> Identity | None:
    """The system a certificate or API key names (never the source address: it is recorded
    as it is)."""
    credentials = Caller(None, caller.api_key, caller.client_certificate)
    identity = identify(hub, credentials, adapter)
    return identity if identity is not None and identity.method in _NAMING_METHODS else None


def errors(findings: Iterable[Finding]) -> list[Finding]:
    return [f for f in findings if f.severity is Severity.ERROR]


def retry_later(findings: Iterable[Finding]) -> int | None:
    """``Retry-After`` seconds when the first error is one of :data:`RETRY_LATER_CODES`."""
    first = next(iter(errors(findings)), None)
    return RETRY_LATER_SECONDS if first is not None and first.code in RETRY_LATER_CODES else None


def is_server_side(findings: Iterable[Finding]) -> bool:
    """Whether the first error is ours (the pipeline stops at the first refusing stage)."""
    first = next(iter(errors(findings)), None)
    return first is not None and first.code in SERVER_SIDE_CODES
