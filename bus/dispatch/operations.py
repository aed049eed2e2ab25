"""Operator actions on the Dead Letter Channel and on destinations, each audited in the
transaction that makes it.

- redeliver: a dead delivery goes back to pending with its attempts reset (its history stays);
- discard: an operator gives up on a dead delivery, which releases its subject;
- pause/resume: planned downtime, or an outage under way (a pause after it started); a paused
  destination's deliveries wait without burning attempts (the claim skips them), and resume
  makes them due at once with the paused time not counted against their age.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Collection, Iterable, Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any, cast

from sqlalchemy import Select, Table, bindparam, func, or_, select, update
from sqlalchemy.orm import Session, sessionmaker

from bus.store.admin_audit import record_admin_action
from bus.store.audit import append_audit, utc
from bus.store.clock import database_now
from bus.store.models import (
    AuditRecord,
    Delivery,
    DeliveryAttempt,
    DeliveryState,
    DestinationState,
    StoredMessage,
)


@dataclass(frozen=True, slots=True)
class AttemptRecord:
    attempt: int
    at: datetime
    outcome: str
    error: str | None


@dataclass(frozen=True, slots=True)
class DeadLetter:
    id: int
    message_id: str
    service: str
    tenant: str
    destination: str
    sequence: int
    attempts: int
    last_error: str | None
    finished_at: datetime | None
    history: tuple[AttemptRecord, ...]
    # why it is dead, as its ``dead`` audit record says: "permanent" (the destination refused
    # it), "attempts" or "age" (the retry policy ran out while it kept failing)
    reason: str | None = None


def _dead_page(
    columns: tuple[Any, ...],
    tenant: str | None,
    destination: str | None,
    limit: int | None,
    after: int = 0,
    tenants: Collection[str] | None = None,
    dead_by: datetime | None = None,
    dead_since: datetime | None = None,
) -> Select[Any]:
    """The dead letters after delivery id ``after``, oldest first (a keyset page); ``tenants``
    narrows to any of several tenants (an operator's), ``dead_by`` to those dead by then,
    ``dead_since`` to those dead at or after then (an outage's window)."""
    statement = (
        select(*columns)
        .join(StoredMessage, StoredMessage.id == Delivery.message_pk)
        .where(Delivery.state == DeliveryState.DEAD.value, Delivery.id > after)
        .order_by(Delivery.id)
        .limit(limit)
    )
    if tenant:
        statement = statement.where(Delivery.tenant == tenant)
    if tenants is not None:
        statement = statement.where(Delivery.tenant.in_(sorted(tenants)))
    if destination:
        statement = statement.where(Delivery.destination == destination)
    if dead_by is not None:
        # a dead letter without its time of death (none the worker writes) counts as older
        statement = statement.where(
            or_(Delivery.finished_at.is_(None), Delivery.finished_at <= dead_by)
        )
    if dead_since is not None:
        statement = statement.where(Delivery.finished_at >= dead_since)
    return statement


def list_dead(
    session: Session,
    *,
    tenant: str | None = None,
    destination: str | None = None,
    limit: int = 1000,
    after: int = 0,
    tenants: Collection[str] | None = None,
    dead_by: datetime | None = None,
    dead_since: datetime | None = None,
) -> list[DeadLetter]:
    """A keyset page of dead letters (ids above ``after``), with their attempts and why;
    ``dead_since`` / ``dead_by``: only those dead in that window."""
    columns = (Delivery, StoredMessage.message_id, StoredMessage.service)
    statement = _dead_page(columns, tenant, destination, limit, after, tenants, dead_by, dead_since)
    rows = session.execute(statement).all()
    history: dict[int, list[AttemptRecord]] = {}
    ids = [row[0].id for row in rows]
    if ids:
        attempts = session.scalars(
            select(DeliveryAttempt)
            .where(DeliveryAttempt.delivery_id.in_(ids))
            .order_by(DeliveryAttempt.id)
        )
        for a in attempts:
            history.setdefault(a.delivery_id, []).append(
                AttemptRecord(a.attempt, a.at, a.outcome, a.error)
            )
    reasons = _dead_reasons(session, {message_id for _, message_id, _ in rows})
    return [
        DeadLetter(
            id=delivery.id,
            message_id=message_id,
            service=service,
            tenant=delivery.tenant,
            destination=delivery.destination,
            sequence=delivery.sequence,
            attempts=delivery.attempts,
            last_error=delivery.last_error,
            finished_at=delivery.finished_at,
            history=tuple(history.get(delivery.id, ())),
            reason=reasons.get(delivery.id),
        )
        for delivery, message_id, service in rows
    ]


def dead_reasons_page(
    session: Session,
    *,
    tenant: str | None,
    destination: str | None,
    limit: int,
    after: int,
    tenants: Collection[str] | None = None,
    dead_by: datetime | None = None,
    dead_since: datetime | None = None,
) -> list[tuple[int, str | None]]:
    """(delivery id, why) of a keyset page of dead letters: what acting on all of them
    needs, without the attempt history :func:`list_dead` reads."""
    columns = (Delivery.id, StoredMessage.message_id)
    statement = _dead_page(columns, tenant, destination, limit, after, tenants, dead_by, dead_since)
    rows = session.execute(statement).all()
    reasons = _dead_reasons(session, {message_id for _, message_id in rows})
    return [(delivery, reasons.get(delivery)) for delivery, _ in rows]


def count_dead(
    session: Session,
    *,
    tenants: Collection[str] | None,
    destination: str | None,
    after: int = 0,
    through: int | None = None,
    dead_by: datetime | None = None,
    dead_since: datetime | None = None,
) -> int:
    """How many dead letters match, with ids above ``after`` (and at most ``through``, dead
    by ``dead_by``, at or after ``dead_since``)."""
    page = _dead_page((Delivery.id,), None, destination, None, after, tenants, dead_by, dead_since)
    if through is not None:
        page = page.where(Delivery.id <= through)
    return int(session.scalar(select(func.count()).select_from(page.subquery())) or 0)


@dataclass(frozen=True, slots=True)
class DeadSelection:
    """The dead letters an operator acts on all at once: narrowed by tenants, destination and
    why, and only those dead when the operator looked (``dead_by``; ``through`` is the newest
    dead letter's id then), so letters that die meanwhile are left for the operator to see.
    ``dead_since`` (and a ``dead_by`` earlier than the look): only those dead in a window,
    an outage's, say."""

    tenants: Collection[str] | None
    destination: str | None
    why: str | None
    through: int
    dead_by: datetime
    dead_since: datetime | None = None

    def window(self) -> dict[str, str]:
        """The time window acted on, for the admin record: dead since (when narrowed) and
        dead by (the operator's look, or an earlier end)."""
        window = {"dead_by": utc(self.dead_by).isoformat()}
        if self.dead_since is not None:
            window["dead_since"] = utc(self.dead_since).isoformat()
        return window

    def page(self, session: Session, after: int, limit: int) -> list[tuple[int, str | None]]:
        """(delivery id, why) of the next keyset page (ids above ``after``), up to
        ``through``."""
        rows = dead_reasons_page(
            session,
            tenant=None,
            destination=self.destination,
            limit=limit,
            after=after,
            tenants=self.tenants,
            dead_by=self.dead_by,
            dead_since=self.dead_since,
        )
        return [(delivery, why) for delivery, why in rows if delivery <= self.through]


def dead_whys(
    sessions: sessionmaker[Session], selection: DeadSelection, page: int = 500
) -> dict[str, int]:
    """How many of the selection are dead for each why (``permanent``, ``attempts``, ``age``;
    ``""`` when unknown), read page by page, each in a session of its own."""
    counts: dict[str, int] = {}
    after = 0
    while after < selection.through:
        with sessions() as session:
            rows = selection.page(session, after, page)
        if not rows:
            break
        after = rows[-1][0]
        for _delivery, why in rows:
            counts[why or ""] = counts.get(why or "", 0) + 1
    return counts


@dataclass(frozen=True, slots=True)
class PageActed:
    changed: int
    after: int  # where the next page starts
    finished: bool
    seen: int = 0  # dead letters of the selection looked at on this page (progress)


def act_on_dead_page(
    sessions: sessionmaker[Session],
    action: str,
    selection: DeadSelection,
    *,
    after: int,
    limit: int,
    reason: str,
    actor: str | None,
    due: datetime | None = None,
    spacing: timedelta | None = None,
) -> PageActed:
    """Redeliver or discard the next page of the selection (ids above ``after``) in one
    transaction: the paged work of acting on every dead letter, one step at a time.
    ``due``/``spacing``: a paced redelivery (:func:`redeliver`), this page's first due then."""
    with sessions() as session:
        page = selection.page(session, after, limit)
    chosen = [delivery for delivery, why in page if selection.why is None or why == selection.why]
    changed = 0
    if chosen:
        with sessions.begin() as session:
            window = selection.window()
            if action == "redeliver":
                done = redeliver(
                    session,
                    chosen,
                    reason=reason,
                    actor=actor,
                    now=due,
                    spacing=spacing,
                    window=window,
                )
            else:
                done = discard(session, chosen, reason=reason, actor=actor, window=window)
            changed = len(done)
    last = page[-1][0] if page else selection.through
    finished = len(page) < limit or last >= selection.through
    return PageActed(changed, last, finished, seen=len(page))


def pace(per_second: float | None) -> timedelta | None:
    """The spacing of a paced redelivery at ``per_second`` a second (None: not paced)."""
    return timedelta(seconds=1 / per_second) if per_second else None


def paced_due(start: datetime, spacing: timedelta | None, paced: int) -> datetime | None:
    """The first due time of the next page of a paced redelivery of every dead letter
    (:func:`act_on_dead_page`'s ``due``): ``paced`` were given a time already, one
    ``spacing`` apart from ``start``, so the pages continue the one sequence (None: not
    paced, due now). ``renkei dlq redeliver --all`` and the console's bulk action both
    call it."""
    return start + spacing * paced if spacing else None


def last_dead_id(session: Session) -> int:
    """The newest dead letter's id (0 when there is none): where acting on every matching
    dead letter stops, so letters that die meanwhile are left for the operator to see."""
    newest = session.scalar(
        select(func.max(Delivery.id)).where(Delivery.state == DeliveryState.DEAD.value)
    )
    return int(newest or 0)


def _dead_reasons(session: Session, message_ids: set[str]) -> dict[int, str]:
    """Delivery id → the reason of its latest ``dead`` audit record (the worker's)."""
    if not message_ids:
        return {}
    records = session.scalars(
        select(AuditRecord.detail)
        .where(AuditRecord.message_id.in_(sorted(message_ids)), AuditRecord.event == "dead")
        .order_by(AuditRecord.id)
    )
    return {
        detail["delivery"]: detail["reason"]
        for detail in records
        if isinstance(detail.get("delivery"), int) and isinstance(detail.get("reason"), str)
    }


@dataclass(frozen=True, slots=True)
class DeliveryAt:
    """Where a delivery is: its state, message and destination."""

    id: int
    state: str
    message_id: str
    tenant: str
    destination: str


def deliveries_at(session: Session, ids: Sequence[int]) -> dict[int, DeliveryAt]:
    """The deliveries among ``ids`` that exist (to tell an operator why one was not acted
    on: unknown, or not dead)."""
    rows = session.execute(
        select(
            Delivery.id,
            Delivery.state,
            StoredMessage.message_id,
            Delivery.tenant,
            Delivery.destination,
        )
        .join(StoredMessage, StoredMessage.id == Delivery.message_pk)
        .where(Delivery.id.in_(list(ids)))
    )
    return {row.id: DeliveryAt(*row) for row in rows}


def _dead(session: Session, ids: Sequence[int]) -> list[tuple[Delivery, str]]:
    statement = (
        select(Delivery, StoredMessage.message_id)
        .join(StoredMessage, StoredMessage.id == Delivery.message_pk)
        .where(Delivery.id.in_(list(ids)), Delivery.state == DeliveryState.DEAD.value)
        .order_by(Delivery.id)
        .with_for_update(of=Delivery)
    )
    return [(row[0], row[1]) for row in session.execute(statement).all()]


def _transition_dead(
    session: Session,
    ids: Sequence[int],
    *,
    event: str,
    reason: str,
    actor: str | None,
    change: Callable[[Delivery], dict[str, Any]],
    how: Mapping[str, Any] | None = None,
) -> list[int]:
    """Apply ``change`` to each dead delivery among ``ids`` and audit it with the details it
    returns; ``how`` (a pace, a window) goes into the admin record. Returns the ids changed
    (only dead ones)."""
    changed = []
    for delivery, message_id in _dead(session, ids):
        detail = change(delivery)
        append_audit(
            session,
            tenant=delivery.tenant,
            event=event,
            message_id=message_id,
            actor=actor,
            detail={"delivery": delivery.id, "destination": delivery.destination}
            | detail
            | {"reason": reason},
        )
        changed.append(delivery.id)
    if changed:
        detail = {"deliveries": changed, "reason": reason} | dict(how or {})
        record_admin_action(session, actor, f"dlq.{event}", detail)
    return changed


def redeliver(
    session: Session,
    ids: Sequence[int],
    *,
    reason: str,
    actor: str | None = None,
    now: datetime | None = None,
    spacing: timedelta | None = None,
    window: Mapping[str, str] | None = None,
) -> list[int]:
    """Dead → pending, attempts reset, due now by the store's clock (its history stays).
    ``spacing``: paced, the k-th (by id, the oldest first) due ``k`` spacings after ``now``
    (an outage's backlog sent at a rate the destination takes, not all at once); the pace
    (``per_second``) and the ``window`` acted on are in the admin record."""
    due = now or database_now(session.connection())
    paced = 0

    def back_to_pending(delivery: Delivery) -> dict[str, Any]:
        nonlocal paced
        previous = delivery.attempts
        delivery.state = DeliveryState.PENDING.value
        delivery.attempts = 0
        delivery.first_attempt_at = None
        delivery.next_attempt_at = due + spacing * paced if spacing else due
        paced += 1
        delivery.lease_owner = delivery.lease_expires_at = None
        delivery.finished_at = None
        return {"previous_attempts": previous}

    how: dict[str, Any] = dict(window or {})
    if spacing:
        how["per_second"] = round(1 / spacing.total_seconds(), 3)
    return _transition_dead(
        session,
        ids,
        event="redelivered",
        reason=reason,
        actor=actor,
        change=back_to_pending,
        how=how,
    )


def discard(
    session: Session,
    ids: Sequence[int],
    *,
    reason: str,
    actor: str | None = None,
    now: datetime | None = None,
    window: Mapping[str, str] | None = None,
) -> list[int]:
    """Dead → discarded: the operator gives up; later deliveries of its subject flow on.
    The ``window`` acted on is in the admin record."""
    finished = now or database_now(session.connection())

    def give_up(delivery: Delivery) -> dict[str, Any]:
        delivery.state = DeliveryState.DISCARDED.value
        delivery.finished_at = finished
        return {}

    return _transition_dead(
        session, ids, event="discarded", reason=reason, actor=actor, change=give_up, how=window
    )


def _destination_tenants(session: Session, system: str) -> list[str]:
    return sorted(
        set(session.scalars(select(Delivery.tenant).where(Delivery.destination == system)))
    )


def pause(
    session: Session,
    system: str,
    *,
    reason: str,
    actor: str | None = None,
    tenants: Iterable[str] | None = None,
    now: datetime | None = None,
) -> None:
    """Pause ``system``. The audit record goes to each tenant's chain: ``tenants`` (the
    system's tenants from the configuration) or else every tenant with deliveries to it."""
    _set_paused(session, system, True, reason, actor, tenants, now)


def resume(
    session: Session,
    system: str,
    *,
    reason: str | None = None,
    actor: str | None = None,
    tenants: Iterable[str] | None = None,
    now: datetime | None = None,
    spacing: timedelta | None = None,
) -> int:
    """Resume ``system`` (also one not paused: the operator's word that it is back). Its
    pending deliveries are due at once — a retry backed off up to ``max_delay`` would
    otherwise leave a recovered system idle that long — and, after a pause, the time paused
    does not count against their age: a delivery that failed before a five-day pause is not
    dead by age on its first failure after it. ``spacing``: paced instead, the k-th oldest
    due ``k`` spacings from now (a week's backlog at a rate the system takes, other
    destinations' new messages not queued behind all of it). Returns how many were made
    due (paced: how many were given a due time)."""
    return _set_paused(session, system, False, reason, actor, tenants, now, spacing)


def _set_paused(
    session: Session,
    system: str,
    paused: bool,
    reason: str | None,
    actor: str | None,
    tenants: Iterable[str] | None,
    now: datetime | None,
    spacing: timedelta | None = None,
) -> int:
    now = now or database_now(session.connection())
    state = session.get(DestinationState, system, with_for_update=True)
    paused_since = utc(state.changed_at) if state is not None and state.paused else None
    due = 0 if paused else _due_again(session, system, now, paused_since, spacing)
    if state is None:
        state = DestinationState(system=system, paused=paused, changed_at=now)
        session.add(state)
    state.paused, state.reason, state.changed_at, state.changed_by = paused, reason, now, actor
    state.held_until = state.held_reason = None  # an operator's word ends a Retry-After hold
    event = "paused" if paused else "resumed"
    detail: dict[str, Any] = {"destination": system, "reason": reason}
    if not paused:
        detail["due_now"] = due
        if spacing:
            detail["per_second"] = round(1 / spacing.total_seconds(), 3)
    for tenant in (
        sorted(set(tenants)) if tenants is not None else _destination_tenants(session, system)
    ):
        append_audit(
            session,
            tenant=tenant,
            event=event,
            actor=actor,
            detail=detail,
        )
    record_admin_action(session, actor, f"destination.{event}", detail)
    return due


_DELIVERIES = cast(Table, Delivery.__table__)
_DUE_AGAIN = (
    update(_DELIVERIES)
    .where(_DELIVERIES.c.id == bindparam("d_id"))
    .values(
        first_attempt_at=bindparam("d_first"),
        next_attempt_at=bindparam("d_next"),
    )
)


def _due_again(
    session: Session,
    system: str,
    now: datetime,
    paused_since: datetime | None,
    spacing: timedelta | None = None,
) -> int:
    """Make ``system``'s pending deliveries due at ``now`` (``spacing``: the k-th oldest at
    ``now`` + k spacings — in the order they were created, so a resident's later delivery
    gets a later time than the one it waits for, and no slot goes to one that cannot be
    sent yet), and move the first attempt of those tried before a pause
    that began at ``paused_since`` on by the time paused (the age limit counts the time the
    hub was trying, not the time an operator held them back). Unpaced, a delivery due later
    that was never tried keeps its time: only a paced redelivery (:func:`redeliver` resets
    the attempts) gives one that, and the runbook's order — redeliver paced while paused,
    then resume — used to lose the pace to a resume without one (a retry backing off has
    attempts, and is due now)."""
    paused_for = now - paused_since if paused_since is not None else timedelta(0)
    rows = session.execute(
        select(Delivery.id, Delivery.first_attempt_at, Delivery.next_attempt_at, Delivery.attempts)
        .where(Delivery.destination == system, Delivery.state == DeliveryState.PENDING.value)
        .order_by(Delivery.id)  # paced: the oldest first, a subject's later ones after it
    ).all()
    changes = []
    for place, (delivery, first, due, attempts) in enumerate(rows):
        first_at = utc(first) if first is not None else None
        moved = min(first_at + paused_for, now) if first_at is not None else None
        if spacing:
            due_at = now + spacing * place
        else:
            due_at = utc(due) if attempts == 0 else min(utc(due), now)
        if moved != first_at or due_at != utc(due):
            changes.append({"d_id": delivery, "d_first": moved, "d_next": due_at})
    if changes:
        session.connection().execute(_DUE_AGAIN, changes)
    if spacing:
        return len(rows)
    return sum(1 for change in changes if change["d_next"] == now)


def sending_to(session: Session, system: str, now: datetime | None = None) -> int:
    """How many deliveries to ``system`` a worker holds under a live lease: claimed before a
    pause was committed, they may still be sent."""
    held = (
        select(Delivery.id)
        .where(
            Delivery.state == DeliveryState.PENDING.value,
            Delivery.destination == system,
            Delivery.lease_expires_at > (now or database_now(session.connection())),
        )
        .limit(1000)
        .subquery()
    )
    return int(session.scalar(select(func.count()).select_from(held)) or 0)


def wait_for_sends(
    sessions: sessionmaker[Session], system: str, timeout: float, poll: float = 0.05
) -> int:
    """Wait until no worker holds a delivery to ``system`` (what a round claimed before the
    pause is sent, or released unsent, and recorded), at most ``timeout`` seconds. Returns
    how many are still held then (0: nothing more reaches the system). A pause returns only
    after this, so that nothing is delivered to a paused system once the pause has returned
    (a worker's round claimed before the pause used to keep sending to it)."""
    deadline = time.monotonic() + timeout
    while True:
        with sessions() as session:
            held = sending_to(session, system)
        if held == 0 or time.monotonic() >= deadline:
            return held
        time.sleep(poll)


@dataclass(frozen=True, slots=True)
class DestinationOverview:
    """What an operator asks of a destination during an outage: is it sent to (paused, held
    by its ``Retry-After``), how much waits, how much is being retried, how much is dead."""

    system: str
    paused: bool
    reason: str | None  # the operator's, when paused
    held_until: datetime | None  # its Retry-After hold, when still ahead
    waiting: int  # pending, retries included
    retrying: int  # pending after at least one failed attempt
    dead: int
    oldest_waiting: datetime | None  # when the oldest pending delivery was created
    next_retry: datetime | None  # the earliest due time of a retry still ahead
    # when the oldest dead letter's delivery was created (a backlog's age after an outage:
    # dead letters are not pending, so oldest_waiting does not show them)
    oldest_dead: datetime | None = None


def destination_overview(
    session: Session, now: datetime | None = None
) -> list[DestinationOverview]:
    """Every destination with deliveries waiting or dead, or a ``destination_states`` row
    (paused, held), by name: one grouped read of the pending and dead deliveries."""
    now = now or database_now(session.connection())
    retried = Delivery.attempts > 0
    rows = session.execute(
        select(
            Delivery.destination,
            Delivery.state,
            retried,
            func.count(),
            func.min(Delivery.created_at),
        )
        .where(Delivery.state.in_((DeliveryState.PENDING.value, DeliveryState.DEAD.value)))
        .group_by(Delivery.destination, Delivery.state, retried)
    ).all()
    counts: dict[str, dict[str, Any]] = {}
    for system, delivery_state, was_tried, count, created in rows:
        entry = counts.setdefault(system, {"waiting": 0, "retrying": 0, "dead": 0, "oldest": None})
        if delivery_state == DeliveryState.DEAD.value:
            entry["dead"] += count
            first = utc(created) if created is not None else None
            if first is not None and (
                entry.get("oldest_dead") is None or first < entry["oldest_dead"]
            ):
                entry["oldest_dead"] = first
            continue
        entry["waiting"] += count
        oldest = utc(created) if created is not None else None
        if oldest is not None and (entry["oldest"] is None or oldest < entry["oldest"]):
            entry["oldest"] = oldest
        if was_tried:
            entry["retrying"] += count
    ahead = dict(
        session.execute(
            select(Delivery.destination, func.min(Delivery.next_attempt_at))
            .where(
                Delivery.state == DeliveryState.PENDING.value,
                Delivery.attempts > 0,
                Delivery.next_attempt_at > now,
            )
            .group_by(Delivery.destination)
        ).all()
    )
    states = {row.system: row for row in session.scalars(select(DestinationState))}
    overview = []
    for system in sorted(set(counts) | set(states)):
        entry = counts.get(system, {"waiting": 0, "retrying": 0, "dead": 0, "oldest": None})
        state = states.get(system)
        held = utc(state.held_until) if state is not None and state.held_until else None
        next_retry = ahead.get(system)
        overview.append(
            DestinationOverview(
                system=system,
                paused=bool(state is not None and state.paused),
                reason=state.reason if state is not None and state.paused else None,
                held_until=held if held is not None and held > now else None,
                waiting=entry["waiting"],
                retrying=entry["retrying"],
                dead=entry["dead"],
                oldest_waiting=entry["oldest"],
                next_retry=utc(next_retry) if next_retry is not None else None,
                oldest_dead=entry.get("oldest_dead"),
            )
        )
    return overview
