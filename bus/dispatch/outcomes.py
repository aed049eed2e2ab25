"""Recording a batch's send outcomes in the caller's transaction (DESIGN §1 stage 8).

Each delivery's new state, its ``delivery_attempts`` row and its audit entry are written in
the same transaction. Only deliveries still leased to the recording worker (and pending) are
recorded: their rows are locked first, and an outcome for a delivery whose lease another
worker has taken over is dropped.

Delivered deliveries — nearly all of them — are recorded with two statements for the whole
batch (``UPDATE … WHERE id IN (…)`` and ``INSERT … SELECT`` of their attempt rows); the rare
retries and dead letters, whose columns differ per delivery, one multi-row statement each.
The audit entries are returned for the caller to append last (the tenants' audit heads are
then locked only until the commit).

A failure the destination is to blame for (unreachable: :func:`bus.dispatch.transport.
destination_wide`) is recorded like any other — its attempt row, ``attempts`` raised, so the
trace shows it — but with the outcome ``unreachable``, and those rows are what
``max_attempts`` does not count: when a delivery reaches ``max_attempts`` (rare), its
``unreachable`` rows are counted (one statement) and subtracted. No column is needed for it.
"""

from __future__ import annotations

from collections.abc import Callable, Collection, Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any, cast

from sqlalchemy import (
    BindParameter,
    Connection,
    DateTime,
    Table,
    bindparam,
    func,
    insert,
    literal,
    or_,
    select,
    update,
)
from sqlalchemy.dialects import postgresql, sqlite

from bus.dispatch.claims import RETRY_AFTER_HOLD, Job
from bus.dispatch.transport import UNREACHABLE, Outcome, SendResult
from bus.observability.logs import get_logger
from bus.store.audit import AuditEntry
from bus.store.models import Delivery, DeliveryAttempt, DeliveryState, DestinationState

log = get_logger(__name__)

_DELIVERIES = cast(Table, Delivery.__table__)
_ATTEMPTS = cast(Table, DeliveryAttempt.__table__)
_NOW = bindparam("now", type_=DateTime(timezone=True))
_IDS: BindParameter[Any] = bindparam("ids", expanding=True)

_OWNED = (
    select(_DELIVERIES.c.id, _DELIVERIES.c.attempts, _DELIVERIES.c.first_attempt_at)
    .where(
        _DELIVERIES.c.id.in_(_IDS),
        _DELIVERIES.c.lease_owner == bindparam("owner"),
        _DELIVERIES.c.state == DeliveryState.PENDING.value,
    )
    .order_by(_DELIVERIES.c.id)
    .with_for_update()
)
_DELIVERED = (
    update(_DELIVERIES)
    .where(_DELIVERIES.c.id.in_(_IDS))
    .values(
        state=DeliveryState.DELIVERED.value,
        attempts=_DELIVERIES.c.attempts + 1,
        first_attempt_at=func.coalesce(_DELIVERIES.c.first_attempt_at, _NOW),
        finished_at=_NOW,
        last_error=None,
        lease_owner=None,
        lease_expires_at=None,
    )
)
_DELIVERED_ATTEMPTS = insert(_ATTEMPTS).from_select(
    ["delivery_id", "attempt", "at", "outcome", "error"],
    select(
        _DELIVERIES.c.id,
        _DELIVERIES.c.attempts,  # already raised by _DELIVERED
        _NOW,
        literal(Outcome.DELIVERED.value),
        literal(None),
    ).where(_DELIVERIES.c.id.in_(_IDS)),
)
_FAILED = (
    update(_DELIVERIES)
    .where(_DELIVERIES.c.id == bindparam("b_id"))
    .values(
        state=bindparam("b_state"),
        attempts=bindparam("b_attempts"),
        first_attempt_at=bindparam("b_first"),
        next_attempt_at=func.coalesce(
            bindparam("b_next", type_=DateTime(timezone=True)), _DELIVERIES.c.next_attempt_at
        ),
        finished_at=bindparam("b_finished"),
        last_error=bindparam("b_error"),
        lease_owner=None,
        lease_expires_at=None,
    )
)
_INSERT_ATTEMPT = insert(_ATTEMPTS)
_STATES = cast(Table, DestinationState.__table__)
_HOLD = (
    update(_STATES)
    .where(
        _STATES.c.system == bindparam("h_system"),
        ~_STATES.c.paused,  # an operator's pause stands as it is
        or_(
            _STATES.c.held_until.is_(None),
            _STATES.c.held_until < bindparam("h_until", type_=DateTime(timezone=True)),
        ),
    )
    .values(
        held_until=bindparam("h_until", type_=DateTime(timezone=True)),
        held_reason=bindparam("h_reason"),
    )
)


_UNREACHABLE_ROWS = (
    select(func.count())
    .select_from(_ATTEMPTS)
    .where(_ATTEMPTS.c.delivery_id == bindparam("d_id"), _ATTEMPTS.c.outcome == UNREACHABLE)
)
_LAST_HOLDS = select(_STATES.c.system, _STATES.c.held_until, _STATES.c.held_reason).where(
    _STATES.c.system.in_(bindparam("systems", expanding=True))
)

#: ``changed_by`` of a ``destination_states`` row that dispatch created to hold a destination
#: it could not reach (the circuit breaker); no operator has paused or resumed it yet.
UNREACHABLE_HOLD = "dispatch:unreachable"


@dataclass(frozen=True, slots=True)
class Failure:
    """What a failed attempt leads to: retry at ``next_attempt_at``, or dead (``reason``).
    ``counted``: false for a destination-wide failure (its attempt row says ``unreachable``
    and ``max_attempts`` does not count it)."""

    dead: bool
    next_attempt_at: datetime | None = None
    reason: str | None = None
    counted: bool = True


# (job, result, attempt number, first attempt, the attempts that count toward max_attempts
# — a statement, asked only when needed) -> what happens next
Decide = Callable[[Job, SendResult, int, datetime, Callable[[], int]], Failure]


def _utc(moment: datetime) -> datetime:
    """SQLite hands datetimes back naive; everything stored is UTC."""
    return moment if moment.tzinfo is not None else moment.replace(tzinfo=UTC)


def record_outcomes(
    connection: Connection,
    owner: str,
    done: Sequence[tuple[Job, SendResult]],
    now: datetime,
    decide: Decide,
) -> list[AuditEntry]:
    """Write the outcomes of ``done`` still leased to ``owner``; returns their audit
    entries (delivered and dead; a retry is not audited), in ``done`` order."""
    if not done:
        return []
    owned = {
        row.id: (row.attempts, row.first_attempt_at)
        for row in connection.execute(
            _OWNED, {"ids": [job.delivery_id for job, _ in done], "owner": owner}
        )
    }
    delivered: list[int] = []
    failed: list[dict[str, Any]] = []
    attempts: list[dict[str, Any]] = []
    audits: list[AuditEntry] = []
    for job, result in done:
        if job.delivery_id not in owned:
            log.warning("delivery.lease_lost", delivery=job.delivery_id)
            continue
        previous, first_at = owned[job.delivery_id]
        number = previous + 1
        if result.outcome is Outcome.DELIVERED:
            delivered.append(job.delivery_id)
            audits.append(_entry(job, owner, "delivered", attempts=number))
            continue
        first = _utc(first_at) if first_at else now

        def counted(delivery: int = job.delivery_id, number: int = number) -> int:
            return number - int(
                connection.execute(_UNREACHABLE_ROWS, {"d_id": delivery}).scalar_one()
            )

        failure = (
            Failure(dead=True, reason="permanent")
            if result.outcome is Outcome.PERMANENT
            else decide(job, result, number, first, counted)
        )
        failed.append(_failed_row(job, result, number, first, now, failure))
        attempts.append(
            {
                "delivery_id": job.delivery_id,
                "attempt": number,
                "at": now,
                "outcome": result.outcome.value if failure.counted else UNREACHABLE,
                "error": result.error,
            }
        )
        if failure.dead:
            audits.append(
                _entry(
                    job, owner, "dead", attempts=number, reason=failure.reason, error=result.error
                )
            )
    if delivered:
        connection.execute(_DELIVERED, {"ids": delivered, "now": now})
        connection.execute(_DELIVERED_ATTEMPTS, {"ids": delivered, "now": now})
    if failed:
        connection.execute(_FAILED, failed)
        connection.execute(_INSERT_ATTEMPT, attempts)
    return audits


def _failed_row(
    job: Job, result: SendResult, number: int, first: datetime, now: datetime, failure: Failure
) -> dict[str, Any]:
    """Retry later (back-off) or dead (the Dead Letter Channel: it holds its subject until
    redelivered or discarded)."""
    return {
        "b_id": job.delivery_id,
        "b_state": DeliveryState.DEAD.value if failure.dead else DeliveryState.PENDING.value,
        "b_attempts": number,
        "b_first": first,
        "b_next": None if failure.dead else failure.next_attempt_at,  # None: unchanged
        "b_finished": now if failure.dead else None,
        "b_error": result.error,
    }


def _entry(job: Job, owner: str, event: str, **detail: object) -> AuditEntry:
    return AuditEntry(
        tenant=job.tenant,
        event=event,
        message_id=job.message_id,
        actor=owner,
        detail={"delivery": job.delivery_id, "destination": job.destination, **detail},
    )


def last_holds(
    connection: Connection, systems: Collection[str]
) -> dict[str, tuple[datetime, str | None]]:
    """The hold each of ``systems`` has or had (``held_until``, ``held_reason``): the circuit
    breaker grows the next one from it. Read only in a round with an unreachable
    destination."""
    if not systems:
        return {}
    rows = connection.execute(_LAST_HOLDS, {"systems": sorted(systems)})
    return {
        row.system: (_utc(row.held_until), row.held_reason)
        for row in rows
        if row.held_until is not None
    }


def hold_destinations(
    connection: Connection,
    holds: Mapping[str, tuple[datetime, str]],
    unreachable: Collection[str] = (),
) -> None:
    """Hold each destination of ``holds`` — send it nothing — until the time it asked for
    (``Retry-After``) or the circuit breaker chose (``unreachable``), in the caller's
    transaction: ``held_until`` and ``held_reason`` of the ``destination_states`` row the
    pause uses (created, :data:`RETRY_AFTER_HOLD` or :data:`UNREACHABLE_HOLD`, when the
    destination has none). A paused destination stays paused; a later hold already recorded
    stays."""
    flavour = postgresql if connection.dialect.name == "postgresql" else sqlite
    for system in sorted(holds):  # rows locked in one order by every worker
        until, reason = holds[system]
        connection.execute(
            flavour.insert(_STATES)
            .values(
                system=system,
                paused=False,
                changed_at=datetime.now(UTC),
                changed_by=UNREACHABLE_HOLD if system in unreachable else RETRY_AFTER_HOLD,
            )
            .on_conflict_do_nothing(index_elements=["system"])
        )
        connection.execute(_HOLD, {"h_system": system, "h_until": until, "h_reason": reason})
