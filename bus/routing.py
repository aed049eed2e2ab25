"""The Route stage (DESIGN §1 stage 6): a Content-Based Router and Recipient List.

The route table decides the destinations once, at ingest: every subscriber of a notification
whose conditions hold, the one provider of an inquiry. Conditions name catalogue fields and are
evaluated on elements by namespace + local name, never by prefix, so the same message written
with other prefixes (or default namespaces) routes identically.

A message that ``relatesTo`` an earlier one of the same sending system (取消/訂正) goes to that
message's destinations and waits while the original is pending or dead-lettered there. With
the original's subject (or none of its own) it is ordered on the original's keys (tenant,
destination, subject); with another subject (a 訂正 moving a record from 宛名番号 X to Y) it
is ordered on its own subject, so later messages of Y queue behind it, and waits for the
original's delivery there by its id (``waits_for``). A ``relatesTo`` the hub cannot follow is
said to the sender as a coded finding (docs/dispatch.md, 取消・訂正).

Tenant isolation: ``routes`` answers only subscribers that may receive the service for the
tenant now (bus/hub.py keeps those that serve it and hold a ``receive`` grant). A 取消/訂正
follows its original only to destinations that route still names: one that stopped
receiving for the tenant since (the town left a shared system, a grant was narrowed) is
skipped with RK-RTE006, never sent the town's data on the strength of an old delivery.
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
from bus.pipeline import Delivery, Finding, Message, StageName, SystemRef
from bus.store.models import Delivery as DeliveryRow
from bus.store.models import MessageKind, StoredMessage
from bus.store.sequences import NO_SUBJECT, subject_key

INQUIRIES = frozenset({"AddresseeInquiry", "TaxAssessmentInquiry", "DelinquencyInquiry"})
REPLY_SUFFIX = "Reply"

RouteLookup = Callable[[str, str], Route | None]
"""(service, tenant) → the route that applies, or None."""


@dataclass(frozen=True, slots=True)
class RelatedMessage:
    """An earlier stored message a 取消/訂正 names: its kind, and where it went — one
    (destination, subject key) per delivery, in the order it was routed; ``latest``: the id
    of its last delivery to each destination (what a 訂正 of another subject waits for)."""

    kind: str
    deliveries: tuple[tuple[str, str], ...] = ()
    latest: tuple[tuple[str, int], ...] = ()


RelatedLookup = Callable[[SystemRef, str], RelatedMessage | None]
"""(sender, messageId) → that sender's stored message with the id, or None when unknown."""


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
    relates: RelatedLookup
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
        related = self._related(message)
        if message.rejected:
            return message
        if related is not None:
            related = _still_receiving(message, related, route)
        destinations = self._destinations(related, route, document, envelope.subject)
        message.deliveries = [
            Delivery(envelope.message_id, destination, tenant, subject, waits_for=waits_for)
            for destination, subject, waits_for in destinations
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

    def _related(self, message: Message) -> RelatedMessage | None:
        """The stored message this one's ``relatesTo`` names, when it can be followed; a
        finding for the sender otherwise (the route table then decides)."""
        envelope = message.envelope
        assert envelope is not None
        if not envelope.relates_to:
            return None
        if envelope.relates_to == envelope.message_id:
            message.add_findings([_relates_finding("RK-RTE003", envelope.relates_to)])
            return None
        related = self.relates(envelope.client, envelope.relates_to)
        if related is None:
            message.add_findings([_relates_finding("RK-RTE004", envelope.relates_to)])
            return None
        if related.kind != MessageKind.NOTIFICATION.value:
            message.add_findings([_relates_finding("RK-RTE005", envelope.relates_to)])
            return None
        # an earlier message read only through feeds has no deliveries: route anew
        return related if related.deliveries else None

    def _destinations(
        self,
        related: RelatedMessage | None,
        route: Route | None,
        document: etree._Element,
        subject: str | None,
    ) -> tuple[tuple[str, str | None, int | None], ...]:
        """(destination, ordering subject, delivery waited for) triples: a related message's
        destinations (:func:`_following`), else every subscriber whose conditions hold, with
        this message's subject."""
        if related is not None:
            return _following(related, subject)
        service_element = service_element_of(document)
        if route is None or service_element is None:
            return ()
        chosen = (
            subscriber.system
            for subscriber in route.subscribers
            if conditions_hold(subscriber.when, service_element)
        )
        return tuple((system, subject, None) for system in dict.fromkeys(chosen))


def _following(
    related: RelatedMessage, subject: str | None
) -> tuple[tuple[str, str | None, int | None], ...]:
    """Where a 取消/訂正 goes and how it is ordered there, per destination of its original.

    Its own subject the original's there, or none of its own: on the original's key, later
    in sequence (it waits behind the original and everything before it; later messages of
    that subject wait behind it). Another subject (a 訂正 X → Y): on its own subject, so
    later messages of Y wait behind it, and waiting for the original's last delivery there
    by id — later messages of X then no longer wait behind it (the record left X)."""
    latest = dict(related.latest)
    first: dict[str, str] = {}
    for destination, key in related.deliveries:
        first.setdefault(destination, key)  # a replayed one kept its first key
    own = subject_key(subject)
    following: list[tuple[str, str | None, int | None]] = []
    for destination, key in first.items():
        waited = latest.get(destination)
        if own in (NO_SUBJECT, key) or waited is None:
            following.append((destination, key, None))
        else:
            following.append((destination, subject, waited))
    return tuple(following)


def _still_receiving(
    message: Message, related: RelatedMessage, route: Route | None
) -> RelatedMessage | None:
    """The original's deliveries to destinations the route in force still names for the
    tenant (whatever their conditions: a 取消/訂正 follows the original, not its own
    content); the others are skipped with RK-RTE006. None when none is left: the route table
    then decides, as for an original read only through feeds."""
    receiving = {subscriber.system for subscriber in route.subscribers} if route else set()
    kept = tuple(delivery for delivery in related.deliveries if delivery[0] in receiving)
    dropped = dict.fromkeys(d for d, _ in related.deliveries if d not in receiving)
    if dropped:
        envelope = message.envelope
        assert envelope is not None
        finding = make_finding(
            "RK-RTE006",
            path="/PlatformMessage/Header/relatesTo",
            actual=", ".join(dropped),
            expected=envelope.relates_to,
        )
        message.add_findings([finding])
    return RelatedMessage(related.kind, kept, related.latest) if kept else None


def _relates_finding(code: str, relates_to: str) -> Finding:
    return make_finding(code, path="/PlatformMessage/Header/relatesTo", actual=relates_to)


def stored_destinations(sessions: sessionmaker[Session]) -> RelatedLookup:
    """The ``relates`` lookup over the Message Store: the sender's earlier message with that
    id in its tenant (the Idempotent Receiver's key: another system's or another tenant's
    message is never followed, nor revealed), or None when no such message is stored."""

    def lookup(sender: SystemRef, message_id: str) -> RelatedMessage | None:
        with sessions() as session:
            found = session.execute(
                select(
                    StoredMessage.kind,
                    DeliveryRow.destination,
                    DeliveryRow.subject_key,
                    DeliveryRow.id,
                )
                .outerjoin(DeliveryRow, DeliveryRow.message_pk == StoredMessage.id)
                .where(
                    StoredMessage.message_id == message_id,
                    StoredMessage.tenant == sender.tenant,
                    StoredMessage.system == sender.system,
                )
                .order_by(DeliveryRow.id)
            ).all()
        if not found:
            return None
        deliveries = tuple((d, key) for _, d, key, _ in found if d is not None)
        latest = {d: pk for _, d, _, pk in found if d is not None}  # by id: the last wins
        return RelatedMessage(found[0][0], deliveries, tuple(latest.items()))

    return lookup
