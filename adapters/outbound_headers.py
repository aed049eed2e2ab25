"""The ``Renkei-*`` headers every outbound transport sends beside the payload, so receivers can
deduplicate (Idempotent Receiver) and route without parsing the body."""

from __future__ import annotations

from bus.dispatch.transport import OutboundMessage


def renkei_headers(message: OutboundMessage) -> dict[str, str]:
    headers = {
        "Renkei-Message-Id": message.message_id,
        "Renkei-Service": message.service,
        "Renkei-Tenant": message.tenant,
    }
    if message.correlation_id:
        headers["Renkei-Correlation-Id"] = message.correlation_id
    return headers
