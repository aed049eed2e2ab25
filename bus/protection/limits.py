"""項目制限 (personal-data limits): what a destination is entitled to receive.

A system's ``fields`` configuration (:class:`bus.config.models.FieldLimits`) names the
catalogue items it may receive: ``allow`` (only these) or ``deny`` (all but these). 個人番号
(every item with the ``my_number`` rule) is removed unless the system says ``my_number: true``
— a system runs a 番号法 利用事務 only when its configuration says so (default deny).

The limits are applied where data leaves the hub for a system: pushed deliveries and PULL
feeds (both through :func:`bus.mapping.stage.outbound_body`, before translation, so a mapping
never sees a withheld item) and inquiry replies (:mod:`bus.protection.replies`). Items are
removed, never blanked, so "not entitled" and "empty" stay distinguishable.
"""

from __future__ import annotations

from collections.abc import Iterator
from functools import cache

from lxml import etree

from bus.catalogue import NS_EXTENSION, NS_STANDARD, load_catalogue
from bus.config.models import FieldLimits, System
from bus.pipeline import Finding
from bus.validation.secure_parse import parse_stored

MY_NUMBER_RULE = "my_number"
_ITEM_NAMESPACES = (NS_STANDARD, NS_EXTENSION)


class UnreadableBody(ValueError):
    """A body to limit is not XML: it is refused rather than passed on unfiltered."""

    def __init__(self, findings: list[Finding]) -> None:
        super().__init__("; ".join(f"{f.code} {f.path}" for f in findings))
        self.findings = findings


@cache
def _items() -> dict[str, str]:
    """Catalogue id → element tag, for the items a message body can carry."""
    return {
        item.id: item.tag
        for item in load_catalogue().catalogue_items()
        if item.namespace in _ITEM_NAMESPACES
    }


@cache
def my_number_items() -> frozenset[str]:
    """The ids of the 個人番号 items (rule ``my_number``)."""
    return frozenset(
        item.id for item in load_catalogue().catalogue_items() if item.rule == MY_NUMBER_RULE
    )


def field_limit_problems(limits: FieldLimits) -> Iterator[tuple[tuple[str | int, ...], str]]:
    """Configuration problems as (path inside ``fields``, message): unknown catalogue ids and
    a 個人番号 item allowed without ``my_number: true``."""
    known = _items()
    for key, ids in (("allow", limits.allow or ()), ("deny", limits.deny)):
        for index, item_id in enumerate(ids):
            if item_id not in known:
                yield (key, index), f"unknown catalogue item {item_id!r}"
            elif key == "allow" and item_id in my_number_items() and not limits.my_number:
                yield (
                    (key, index),
                    (
                        f"{item_id!r} is 個人番号: allow it with my_number: true "
                        "(番号法 利用事務) instead"
                    ),
                )


@cache
def _withheld(limits: FieldLimits) -> tuple[frozenset[str], frozenset[str] | None]:
    """(tags removed, tags kept — None when every other item is kept) for ``limits``."""
    items = _items()
    denied = set(limits.deny)
    if not limits.my_number:
        denied |= my_number_items()
    kept = None
    if limits.allow is not None:
        allowed = set(limits.allow) - denied
        kept = frozenset(items[i] for i in allowed if i in items)
    return frozenset(items[i] for i in denied if i in items), kept


def unrestricted(system: System) -> bool:
    """True when ``system`` receives every item (nothing to remove)."""
    removed, kept = _withheld(system.fields)
    return not removed and kept is None


def limit_document(root: etree._Element, system: System) -> list[str]:
    """Remove from ``root`` (in place) every item ``system`` is not entitled to; the ids of
    the removed items, in document order (ids and counts only, safe to log)."""
    removed_tags, kept = _withheld(system.fields)
    if kept is None:  # a deny-list: let libxml2 find the few tags
        doomed = list(root.iter(*removed_tags)) if removed_tags else []
        return _remove(doomed)
    doomed = []
    for element in root.iter(tag=etree.Element):
        tag = element.tag
        if not isinstance(tag, str) or "}" not in tag:
            continue
        if tag in removed_tags or (
            tag[1:].split("}", 1)[0] in _ITEM_NAMESPACES and tag not in kept
        ):
            doomed.append(element)
    return _remove(doomed)


def _remove(doomed: list[etree._Element]) -> list[str]:
    removed: list[str] = []
    for element in doomed:
        parent = element.getparent()
        if parent is not None:
            parent.remove(element)
            removed.append(etree.QName(element).localname)
    return removed


def limited_body(system: System, body: bytes) -> bytes:
    """``body`` (a stored standard message) with what ``system`` may not receive removed;
    the same bytes when nothing is withheld. The filter for every egress path: PULL feeds
    call it through :func:`bus.mapping.stage.outbound_body` (or directly). Raises
    :class:`UnreadableBody` when something must be removed from a body that does not parse."""
    if unrestricted(system):
        return body
    removed_tags, kept = _withheld(system.fields)
    if kept is None and not any(_local(tag) in body for tag in removed_tags):
        return body  # none of the withheld items occurs: no parse
    parsed = parse_stored(body)
    if parsed.root is None:
        raise UnreadableBody(list(parsed.findings))
    if not limit_document(parsed.root, system):
        return body
    return etree.tostring(parsed.root, encoding="UTF-8", xml_declaration=True)


def _local(tag: str) -> bytes:
    return tag.rsplit("}", 1)[-1].encode("ascii")
