"""A message as the console shows it: the store's detail (masked) plus every delivery
attempt, the findings recorded for it, the route decision, and — for an operator who states
a reason — the body unmasked, which is itself audited (閲覧ログ)."""

from __future__ import annotations

from dataclasses import dataclass
from functools import cache
from typing import Any

from lxml import etree
from sqlalchemy import select
from sqlalchemy.orm import Session

from bus.config.index import ConfigIndex
from bus.config.models import Route, Tenant
from bus.errors import ErrorCode, UnknownErrorCode, lookup
from bus.pipeline import Finding
from bus.protection.suppression import withhold_suppressed_addresses
from bus.store.admin_audit import record_admin_action
from bus.store.audit import append_audit
from bus.store.models import Delivery, DeliveryAttempt, DeliveryState, StoredMessage
from bus.store.queries import MessageDetail, find_message, show_message
from bus.validation.stage import apply_atena_setting
from bus.validation.validator import Validator

UNMASK_EVENT = "unmasked"  # the tenant chain's 閲覧ログ entry
_PARSER = etree.XMLParser(resolve_entities=False, no_network=True, load_dtd=False)


@dataclass(frozen=True, slots=True)
class AttemptLine:
    destination: str
    sequence: int
    attempt: int
    at: Any
    outcome: str  # as the transport answered: delivered | retry | permanent
    error: str | None
    dead_lettered: bool = False  # this attempt sent its delivery to the Dead Letter Channel

    @property
    def label(self) -> str:
        """What the attempt led to (i18n STATES): the one that dead-lettered its delivery is
        not a "retry" even though the destination asked for one — no retry followed."""
        if not self.dead_lettered:
            return self.outcome
        return "dead_permanent" if self.outcome == "permanent" else "dead_retries"


@dataclass(frozen=True, slots=True)
class ConsoleMessage:
    detail: MessageDetail
    attempts: list[AttemptLine]
    findings: list[Finding]  # the stored body validated again (warnings it was accepted with)
    recorded: list[ErrorCode]  # codes the audit trail holds for this id (e.g. a refused resend)
    routed_to: list[str]  # destinations decided when it was stored
    route: Route | None  # the route in the configuration in force
    unmasked_body: str | None = None


def message_tenants(session: Session, message_id: str) -> set[str]:
    """The tenants holding a message with this id (to check before showing any of it)."""
    query = select(StoredMessage.tenant).where(StoredMessage.message_id == message_id)
    return set(session.scalars(query))


_ENDED_DEAD = frozenset({DeliveryState.DEAD.value, DeliveryState.DISCARDED.value})


def _attempts(session: Session, message_pk: int) -> list[AttemptLine]:
    """Every attempt, each marked when it dead-lettered its delivery: a permanent refusal;
    a failure after which the delivery's attempts restart at 1 (an operator redelivered the
    dead letter); or the last failure of a delivery that is dead (or was discarded, which
    only a dead letter can be)."""
    rows = list(
        session.execute(
            select(DeliveryAttempt, Delivery.destination, Delivery.sequence, Delivery.state)
            .join(Delivery, Delivery.id == DeliveryAttempt.delivery_id)
            .where(Delivery.message_pk == message_pk)
            .order_by(DeliveryAttempt.at, DeliveryAttempt.id)
        )
    )
    following: dict[int, int] = {}  # row index -> the index of its delivery's next attempt
    last: dict[int, int] = {}  # delivery id -> the index of its latest attempt
    for index, (attempt, *_) in enumerate(rows):
        if attempt.delivery_id in last:
            following[last[attempt.delivery_id]] = index
        last[attempt.delivery_id] = index
    lines = []
    for index, (a, destination, sequence, state) in enumerate(rows):
        after = following.get(index)
        dead = a.outcome == "permanent" or (
            a.outcome != "delivered"
            and (rows[after][0].attempt == 1 if after is not None else state in _ENDED_DEAD)
        )
        lines.append(AttemptLine(destination, sequence, a.attempt, a.at, a.outcome, a.error, dead))
    return lines


@cache
def _validator() -> Validator:
    return Validator()


def _findings(body: bytes, tenant: Tenant | None) -> list[Finding]:
    findings = _validator().validate(body).findings
    return apply_atena_setting(findings, tenant.atena_check) if tenant else findings


def _recorded(detail: MessageDetail) -> list[ErrorCode]:
    found: list[ErrorCode] = []
    for record in detail.audit:
        for code in record.detail.get("codes", []):
            try:
                found.append(lookup(str(code)))
            except UnknownErrorCode:
                continue
    return found


def _routed_to(detail: MessageDetail) -> list[str]:
    for record in detail.audit:
        if record.event == "stored":
            return [str(d) for d in record.detail.get("destinations", [])]
    return []


def console_message(
    session: Session, message_id: str, tenant: str, index: ConfigIndex
) -> ConsoleMessage:
    detail = show_message(session, message_id, tenant)
    row = find_message(session, message_id, tenant)
    return ConsoleMessage(
        detail=detail,
        attempts=_attempts(session, row.id),
        findings=_findings(row.body, index.tenant(tenant)),
        recorded=_recorded(detail),
        routed_to=_routed_to(detail),
        route=index.route(detail.summary.service, tenant),
    )


def clear_body(body: bytes) -> str:
    """The stored body in clear, indented, except the addresses of residents under 支援措置
    (抑止フラグ set), which no one sees in the console."""
    root = etree.fromstring(body, _PARSER)
    withhold_suppressed_addresses(root)
    etree.indent(root)
    return etree.tostring(root, encoding="unicode")


def unmask(session: Session, message_id: str, tenant: str, *, actor: str, reason: str) -> str:
    """The clear body, audited in the caller's transaction: ``unmasked`` on the tenant's
    chain (with the reason: the 閲覧ログ) and ``message.unmask`` on the admin chain."""
    row = find_message(session, message_id, tenant)
    append_audit(
        session,
        tenant=tenant,
        event=UNMASK_EVENT,
        message_id=message_id,
        actor=actor,
        detail={"reason": reason},
    )
    record_admin_action(
        session, actor, "message.unmask", {"tenant": tenant, "message_id": message_id}
    )
    return clear_body(row.body)
