"""Header edits the tests make to sample messages (bus.samplegen builds them)."""

from __future__ import annotations

from lxml import etree

from bus.catalogue import NS_ENVELOPE


def set_relates_to(header: etree._Element, message_id: str) -> None:
    """Make the message a 取消/訂正 of ``message_id``: Header ``relatesTo``, placed before
    ``service`` as the envelope schema orders it."""
    relates = etree.Element(f"{{{NS_ENVELOPE}}}relatesTo")
    relates.text = message_id
    service = header.find(f"{{{NS_ENVELOPE}}}service")
    assert service is not None
    service.addprevious(relates)
