"""The Reply stage (DESIGN §1 stage 9): Request-Reply for inquiries.

An accepted inquiry goes synchronously to its provider with the endpoint's timeout. It is
never retried and never dead-lettered: the caller is waiting and gets a coded error instead
(RK-RPL001 no answer in time, RK-RPL003 refused, RK-RPL002 an invalid reply). The reply is
validated like any inbound message; it has its own messageId and its correlationId must be
the request's (Correlation Identifier).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, field

from lxml import etree

from bus.config.models import System
from bus.dispatch.transport import (
    OutboundMessage,
    Outcome,
    Transport,
    UnknownTransport,
    transport_for,
)
from bus.errors import make_finding
from bus.pipeline import Finding, Message, StageName
from bus.store.models import MessageKind
from bus.validation.validator import ValidationReport

REPLY_SUFFIX = "Reply"
PATH = "/PlatformMessage"


@dataclass(slots=True)
class ReplyStage:
    provider_for: Callable[[str, str], System | None]  # (service, tenant) → provider
    validate: Callable[[bytes], ValidationReport]
    store_reply: Callable[[Message], None] | None = None
    transports: Mapping[str, Transport] | None = None
    name: StageName = field(default=StageName.REPLY, init=False)

    def __call__(self, message: Message) -> Message:
        envelope = message.envelope
        if message.kind != MessageKind.INQUIRY.value or envelope is None or message.rejected:
            return message
        tenant = envelope.client.tenant
        provider = self.provider_for(envelope.service, tenant)
        if provider is None or provider.endpoint is None:
            message.add_findings(
                [make_finding("RK-RTE002", path=PATH, actual=envelope.service, expected=tenant)]
            )
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
        outbound = OutboundMessage(
            message_id=envelope.message_id,
            correlation_id=envelope.correlation_id,
            service=envelope.service,
            tenant=tenant,
            destination=provider.id,
            body=message.raw if message.document is None else _body(message),
        )
        result = transport.send(outbound, provider.endpoint)
        if result.outcome is Outcome.PERMANENT:
            message.add_findings([_finding("RK-RPL003", provider, result.error)])
            return message
        if result.outcome is Outcome.RETRY:
            message.add_findings([_finding("RK-RPL001", provider, result.error)])
            return message
        reply, problem = self._reply(message, result.reply or b"")
        if reply is None:
            message.add_findings([_finding("RK-RPL002", provider, problem)])
            return message
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


def _body(message: Message) -> bytes:
    """The canonical PlatformMessage (a SOAP-bound inquiry is sent unwrapped)."""
    assert message.document is not None
    return etree.tostring(message.document, encoding="UTF-8", xml_declaration=True)


def _finding(code: str, provider: System, detail: str | None) -> Finding:
    return make_finding(code, path=PATH, actual=provider.id, detail=detail)
