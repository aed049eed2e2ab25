"""支援措置 (DV・ストーカー行為等の被害者への支援措置): a protected resident's address is
withheld from every other system and from the console.

How the hub knows: the standard item 抑止フラグ (``suppressionFlag``, DESIGN §4), which the
住民記録 system sets on each record (a 宛名照会 ``Result``, a 住民異動通知) of a resident under
支援措置. The hub keeps no list of its own: the resident registry is the one source, so a
measure that ends is lifted by the next record that carries ``false``.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from lxml import etree

from bus.catalogue import NS_STANDARD
from bus.validation.secure_parse import secure_parse

SUPPRESSION_FLAG = f"{{{NS_STANDARD}}}suppressionFlag"
# The items that locate a resident (郵便番号, 住所コード, 住所, 方書, 転入前住所, 転出先住所)
ADDRESS_ITEMS = (
    "postalCode",
    "addressCode",
    "address",
    "addressSupplement",
    "previousAddress",
    "plannedDestinationAddress",
)
_ADDRESS_TAGS = frozenset(f"{{{NS_STANDARD}}}{item}" for item in ADDRESS_ITEMS)
_TRUE = frozenset({"true", "1"})
WITHHELD_JA = "（支援措置のため非表示）"


def flag_set(value: str | None) -> bool:
    """An ``xs:boolean`` 抑止フラグ value that is set (``true`` or ``1``)."""
    return value is not None and value.strip() in _TRUE


def withhold_suppressed_addresses(root: etree._Element) -> int:
    """Remove the address items of every record in ``root`` whose 抑止フラグ is set (a record:
    the element holding the flag); the number of records changed."""
    records = [
        flag.getparent()
        for flag in root.iter(SUPPRESSION_FLAG)
        if flag_set(flag.text) and flag.getparent() is not None
    ]
    for record in records:
        assert record is not None
        for item in [child for child in record if child.tag in _ADDRESS_TAGS]:
            record.remove(item)
    return len(records)


def withheld_body(body: bytes) -> bytes:
    """A stored message as the console may show it: the addresses of residents under 支援措置
    removed (the same bytes when there is none; an unreadable body is returned unchanged, as
    it holds no readable record either)."""
    if b"suppressionFlag" not in body:
        return body
    parsed = secure_parse(body)
    if parsed.root is None or not withhold_suppressed_addresses(parsed.root):
        return body
    return etree.tostring(parsed.root, encoding="UTF-8", xml_declaration=True)


def console_record(values: Mapping[str, Any]) -> dict[str, Any]:
    """A resident record (catalogue id → value) as the console shows it: the address items of
    a resident under 支援措置 replaced by a notice that they are withheld."""
    shown = dict(values)
    flag = values.get("suppressionFlag")
    if flag is True or (isinstance(flag, str) and flag_set(flag)):
        for item in ADDRESS_ITEMS:
            if item in shown:
                shown[item] = WITHHELD_JA
    return shown
