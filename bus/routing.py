"""The Route stage (DESIGN §1 stage 6): a Content-Based Router and Recipient List.

The route table decides the destinations once, at ingest: every subscriber of a notification
whose conditions hold, the one provider of an inquiry. Conditions name catalogue fields and are
evaluated on elements by namespace + local name, never by prefix, so the same message written
with other prefixes (or default namespaces) routes identically.

A message that ``relatesTo`` an earlier one (取消/訂正) goes to that message's destinations, so
it follows it in subject order (its deliveries get later sequence numbers on the same keys).
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from dataclasses import dataclass, field

from lxml import etree
from sqlalchemy import select
from sqlalchemy.orm import Session, sessionmaker

from bus.catalogue import NS_EXTENSION, NS_SERVICE, NS_STANDARD, load_catalogue
from bus.config.models import Condition, Route
from bus.errors import make_finding
from bus.pipeline import Delivery, Message, StageName
from bus.store.models import Delivery as DeliveryRow
from bus.store.models import MessageKind, StoredMessage

INQUIRIES = frozenset({"AddresseeInquiry", "TaxAssessmentInquiry", "DelinquencyInquiry"})
REPLY_SUFFIX = "Reply"

RouteLookup = Callable[[str, str], Route | None]
"""(service, tenant) → the route that applies, or None."""
RelatedDestinations = Callable[[str, str], tuple[str, ...] | None]
"""(tenant, messageId) → the destinations of that stored message, or None when unknown."""


def message_kind(service_element: str) -> MessageKind:
    """Notification, inquiry or reply, from the service element's local name."""
    if service_element.endswith(REPLY_SUFFIX):
        return MessageKind.REPLY
    if service_element in INQUIRIES:
        return MessageKind.INQUIRY
    return MessageKind.NOTIFICATION


def field_tags(field_id: str) -> tuple[str, ...]:
    """The element tag(s) a catalogue field id names (Clark notation: namespace + local)."""
    item = load_catalogue().by_id.get(field_id)
    if item is not None:
        return (item.tag,)
    # An id the catalogue does not know (the loader rejects these): match either namespace.
    return (f"{{{NS_STANDARD}}}{field_id}", f"{{{NS_EXTENSION}}}{field_id}")


def _values(service_element: etree._Element, field_id: str) -> list[str]:
    return [(element.text or "").strip() for element in service_element.iter(*field_tags(field_id))]


def condition_holds(condition: Condition, service_element: etree._Element) -> bool:
    """``equals`` / ``in``: some occurrence of the field has that value; ``exists``: the
    field occurs (true) or does not (false). Every test given in one condition must hold."""
    values = _values(service_element, condition.field)
    if condition.exists is not None and condition.exists != bool(values):
        return False
    if condition.equals is not None and condition.equals not in values:
        return False
    return condition.in_ is None or any(value in condition.in_ for value in values)


def conditions_hold(conditions: Iterable[Condition], service_element: etree._Element) -> bool:
    return all(condition_holds(condition, service_element) for condition in conditions)


def service_element_of(document: etree._Element) -> etree._Element | None:
    return next(document.iterchildren(f"{{{NS_SERVICE}}}*"), None)


def _never(system: str) -> bool:
    return False


@dataclass(slots=True)
class RouteStage:
    """``feed_consumer``: systems that PULL their messages (``delivery: feed``); they count as
    routed destinations but get no push delivery (bus/feeds/ serves them)."""

    routes: RouteLookup
    relates: RelatedDestinations
    name: StageName = field(default=StageName.ROUTE, init=False)
    feed_consumer: Callable[[str], bool] = _never

    def __call__(self, message: Message) -> Message:
        envelope, document = message.envelope, message.document
        if envelope is None or document is None or message.service is None:
            return message
        kind = message_kind(message.service)
        message.kind = kind.value
        tenant = envelope.client.tenant
        if kind is MessageKind.REPLY:
            return message  # a reply is stored with its request, never routed on
        route = self.routes(envelope.service, tenant)
        if kind is MessageKind.INQUIRY:
            if route is None or route.provider is None:
                message.add_findings(
                    [
                        make_finding(
                            "RK-RTE002",
                            path="/PlatformMessage",
                            actual=envelope.service,
                            expected=tenant,
                        )
                    ]
                )
            return message
        destinations = self._destinations(message, route, document)
        message.deliveries = [
            Delivery(envelope.message_id, destination, tenant, envelope.subject)
            for destination in destinations
            if not self.feed_consumer(destination)
        ]
        if not destinations:
            message.add_findings(
                [
                    make_finding(
                        "RK-RTE001",
                        path="/PlatformMessage",
                        actual=envelope.service,
                        expected=tenant,
                    )
                ]
            )
        return message

    def _destinations(
        self, message: Message, route: Route | None, document: etree._Element
    ) -> tuple[str, ...]:
        envelope = message.envelope
        assert envelope is not None
        if envelope.relates_to:
            related = self.relates(envelope.client.tenant, envelope.relates_to)
            if related:  # an earlier message read only through feeds has none: route anew
                return tuple(dict.fromkeys(related))
        service_element = service_element_of(document)
        if route is None or service_element is None:
            return ()
        chosen = (
            subscriber.system
            for subscriber in route.subscribers
            if conditions_hold(subscriber.when, service_element)
        )
        return tuple(dict.fromkeys(chosen))


def stored_destinations(sessions: sessionmaker[Session]) -> RelatedDestinations:
    """The ``relates`` lookup over the Message Store: the destinations of an earlier message
    of the tenant, in the order they were routed, or None when no such message is stored."""

    def lookup(tenant: str, message_id: str) -> tuple[str, ...] | None:
        with sessions() as session:
            found = session.execute(
                select(StoredMessage.id, DeliveryRow.destination)
                .outerjoin(DeliveryRow, DeliveryRow.message_pk == StoredMessage.id)
                .where(StoredMessage.tenant == tenant, StoredMessage.message_id == message_id)
                .order_by(StoredMessage.id, DeliveryRow.id)
            ).all()
        if not found:
            return None
        return tuple(dict.fromkeys(destination for _, destination in found if destination))

    return lookup
