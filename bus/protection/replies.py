"""An inquiry's reply as its caller may see it (DESIGN §1 stage 9).

The caller gets only the items its 項目制限 entitles it to (:mod:`bus.protection.limits`),
and, when it is not the provider itself, no address of a resident under 支援措置
(:mod:`bus.protection.suppression`). The reply is changed before it is stored, so what the
hub keeps (and ``GET /api/v1/messages/{id}`` shows the caller) is what the caller received.
"""

from __future__ import annotations

from lxml import etree

from bus.config.models import FieldLimits, System
from bus.pipeline import Message
from bus.protection.limits import limit_document
from bus.protection.suppression import withhold_suppressed_addresses

# An inquiry whose caller is not a configured system (cannot happen after Authorize) gets
# nothing it is not entitled to: no item at all.
UNKNOWN_CALLER = System(id="unknown-caller", name="unknown", fields=FieldLimits(allow=()))


def protect_reply(reply: Message, caller: System | None, provider: System) -> None:
    """Limit ``reply`` (validated, ``document`` set) for ``caller`` in place; ``raw`` is
    re-serialised only when something was removed."""
    if reply.document is None:
        return
    viewer = caller or UNKNOWN_CALLER
    removed = len(limit_document(reply.document, viewer))
    if viewer.id != provider.id:
        removed += withhold_suppressed_addresses(reply.document)
    if removed:
        reply.raw = etree.tostring(reply.document, encoding="UTF-8", xml_declaration=True)
