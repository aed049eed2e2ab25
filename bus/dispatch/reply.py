"""The Reply stage (DESIGN §1 stage 9): Request-Reply for inquiries.

An accepted inquiry goes synchronously to its provider with the endpoint's timeout. It is
never retried and never dead-lettered: the caller is waiting and gets a coded error instead
(RK-RPL001 no answer in time, RK-RPL003 refused, RK-RPL002 an invalid reply). A provider that
answers "not now" with ``Retry-After`` (HTTP 429 or 503) gets what it asked for: its callers
are answered RK-RPL004 with its ``Retry-After`` (503 / a Server fault), and until that time
(at most :data:`MAX_HOLD_SECONDS`) the process's inquiries to it are answered so without
calling it, as dispatch holds its deliveries (``destination_states.held_until``). The reply is
validated like any inbound message; it has its own messageId and its correlationId must be
the request's (Correlation Identifier). The caller gets the reply as its 項目制限 and
支援措置 allow (:mod:`bus.protection.replies`), and that is what is stored. An inquiry sent
again with the same messageId (a duplicate: the caller's retry after a lost answer) gets the
reply stored for it, instead of asking the provider once more and storing another copy of
the resident's data; without a stored reply (the first attempt failed) the provider is asked.

A provider with a mapping file (e.g. 滞納管理, ``mappings/tainou.yaml``) gets the request in its
own dialect (the service's outbound section, the Header kept) and answers in it: the reply's
body is translated by the ``…Reply`` inbound section before it is validated.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field

from lxml import etree

from bus.catalogue import NS_SERVICE
from bus.config.models import System
from bus.dispatch.transport import (
    OutboundMessage,
    Outcome,
    Transport,
    UnknownTransport,
    transport_for,
)
from bus.errors import make_finding
from bus.identity import RETRY_AFTER
from bus.mapping.envelope import header_and_body
from bus.mapping.stage import OutboundTranslationError, inbound_document, outbound_body
from bus.pipeline import Finding, Message, Severity, StageName
from bus.protection.replies import protect_reply
from bus.store.models import MessageKind
from bus.validation.secure_parse import secure_parse
from bus.validation.validator import ValidationReport

REPLY_SUFFIX = "Reply"
PATH = "/PlatformMessage"
#: The longest a provider's ``Retry-After`` keeps its inquiries from being sent: past it, the
#: next inquiry asks the provider again (a mistaken "Retry-After: 86400" locks no one out)
MAX_HOLD_SECONDS = 600.0


@dataclass(slots=True)
class ReplyStage:
    provider_for: Callable[[str, str], System | None]  # (service, tenant) → provider
    validate: Callable[[bytes], ValidationReport]
    store_reply: Callable[[Message], None] | None = None
    # (tenant, request messageId) → the body of the reply stored for it, if any
    stored_reply: Callable[[str, str], bytes | None] | None = None
    transports: Mapping[str, Transport] | None = None
    # system id → System: whose 項目制限 the reply is limited to (None: entitled to nothing)
    caller_for: Callable[[str], System | None] = lambda _system: None
    name: StageName = field(default=StageName.REPLY, init=False)
    # provider id → time.monotonic() until which it asked not to be called (Retry-After)
    _held: dict[str, float] = field(default_factory=dict, init=False)

    def __call__(self, message: Message) -> Message:
        envelope = message.envelope
        if message.kind != MessageKind.INQUIRY.value or envelope is None or message.rejected:
            return message
        tenant = envelope.client.tenant
        if message.ack is not None and message.ack.duplicate and self.stored_reply is not None:
            stored = self.stored_reply(tenant, envelope.message_id)
            earlier = self._reply(message, stored)[0] if stored is not None else None
            if earlier is not None:
                message.reply = earlier
                return message
        provider = self.provider_for(envelope.service, tenant)
        if provider is None or provider.endpoint is None:
            message.add_findings(
                [make_finding("RK-RTE002", path=PATH, actual=envelope.service, expected=tenant)]
            )
            return message
        held = self._held.get(provider.id, 0.0) - time.monotonic()
        if held > 0:
            message.add_findings([_busy(provider, held)])
            return message
        try:
            transport = (
                self.transports[provider.endpoint.transport]
                if self.transports is not None
                else transport_for(provider.endpoint)
            )
        except (KeyError, UnknownTransport):
            message.add_findings([_finding("RK-RPL001", provider, "unknown transport")])
            return message
        body = message.raw if message.document is None else _body(message)
        try:  # the provider's 項目制限, then its dialect (unchanged when it has neither)
            body = outbound_body(provider, envelope.service, body)
        except OutboundTranslationError as error:
            message.add_findings(error.findings)
            return message
        outbound = OutboundMessage(
            message_id=envelope.message_id,
            correlation_id=envelope.correlation_id,
            service=envelope.service,
            tenant=tenant,
            destination=provider.id,
            body=body,
        )
        result = transport.send(outbound, provider.endpoint)
        if result.outcome is Outcome.PERMANENT:
            message.add_findings([_finding("RK-RPL003", provider, result.error)])
            return message
        wait = result.retry_after_seconds
        if result.outcome is Outcome.RETRY and wait is not None and wait > 0:
            wait = min(wait, MAX_HOLD_SECONDS)
            self._held[provider.id] = time.monotonic() + wait
            message.add_findings([_busy(provider, wait)])
            return message
        if result.outcome is Outcome.RETRY:
            message.add_findings([_finding("RK-RPL001", provider, result.error)])
            return message
        if result.reply is None and result.error:  # accepted, but the answer was not read
            message.add_findings([_finding("RK-RPL002", provider, result.error)])
            return message
        data, problem = _standard_reply(provider, envelope.service, result.reply or b"")
        reply, problem = self._reply(message, data) if problem is None else (None, problem)
        if reply is None:
            message.add_findings([_finding("RK-RPL002", provider, problem)])
            return message
        protect_reply(reply, self.caller_for(envelope.client.system), provider)
        message.reply = reply
        if self.store_reply is not None:
            self.store_reply(reply)
        return message

    def _reply(self, request: Message, data: bytes) -> tuple[Message | None, str | None]:
        """The validated reply, or why it is not acceptable (codes and ids only)."""
        assert request.envelope is not None
        if not data:
            return None, "empty reply"
        report = self.validate(data)
        if not report.valid or report.envelope is None:
            codes = sorted({f.code for f in report.findings if f.severity.value == "error"})
            return None, "invalid reply: " + (", ".join(codes) or "no header")
        expected_service = request.envelope.service + REPLY_SUFFIX
        if report.service != expected_service:
            return None, f"reply element {report.service}, expected {expected_service}"
        if report.envelope.correlation_id != request.envelope.message_id:
            return None, "correlationId is not the request's messageId"
        if report.envelope.message_id == request.envelope.message_id:
            return None, "a reply needs its own messageId"
        asked_for, answered_for = request.envelope.client.tenant, report.envelope.client.tenant
        if answered_for != asked_for:  # another town's record: never passed on, never stored
            return None, f"reply for tenant {answered_for}, asked for {asked_for}"
        reply = Message(
            raw=data,
            adapter=f"reply:{request.adapter}",
            document=report.document,
            envelope=report.envelope,
            service=report.service,
            identity=None,
            kind=MessageKind.REPLY.value,
        )
        reply.add_findings(report.findings)  # warnings only (it is valid)
        return reply, None


def _standard_reply(provider: System, service: str, data: bytes) -> tuple[bytes, str | None]:
    """The reply with the provider's own document translated to the standard one (unchanged
    when the provider has no mapping or already answered in the standard), or why not."""
    if provider.mapping is None or not data:
        return data, None
    parsed = secure_parse(data)
    if parsed.root is None:
        return data, None  # validation reports why
    header, body = header_and_body(parsed.root)
    if header is None or body is None or etree.QName(body).namespace == NS_SERVICE:
        return data, None
    translated, findings = inbound_document(provider, service + REPLY_SUFFIX, header, body)
    if translated is None:
        codes = sorted({f.code for f in findings if f.severity is Severity.ERROR})
        return data, "untranslatable reply: " + ", ".join(codes)
    return translated, None


def _body(message: Message) -> bytes:
    """The canonical PlatformMessage (a SOAP-bound inquiry is sent unwrapped)."""
    assert message.document is not None
    return etree.tostring(message.document, encoding="UTF-8", xml_declaration=True)


def _finding(code: str, provider: System, detail: str | None) -> Finding:
    return make_finding(code, path=PATH, actual=provider.id, detail=detail)


def _busy(provider: System, seconds: float) -> Finding:
    """RK-RPL004: ``detail`` carries the whole seconds to wait for ``Retry-After``."""
    whole = max(1, math.ceil(seconds))
    return make_finding(
        "RK-RPL004",
        path=PATH,
        actual=provider.id,
        expected=str(whole),
        detail=f"{RETRY_AFTER}{whole}",
    )
