"""Retention per service and ``renkei purge``.

A message is purged once its ``expires_at`` has passed and none of its deliveries is still
pending or dead-lettered (those wait until they are delivered, redelivered or discarded).
Its idempotency key stays, pointing at nothing, so a late resend is still recognised and
answered with the original acknowledgement; the audit chain is never touched (it only gains
one ``purged`` record per tenant, with counts), so it still verifies.
"""

from __future__ import annotations

import time
from collections import Counter
from dataclasses import dataclass
from datetime import UTC, datetime

from sqlalchemy import Engine, delete, exists, func, select, text, update
from sqlalchemy.orm import Session, sessionmaker

from bus.store.audit import append_audit, utc
from bus.store.feed_marks import advance_marks
from bus.store.models import (
    Delivery,
    DeliveryAttempt,
    DeliveryState,
    IdempotencyKey,
    StoredMessage,
)

UNRESOLVED = (DeliveryState.PENDING.value, DeliveryState.DEAD.value)
PURGE_BATCH = 500
#: Seconds a purge on SQLite pauses between its batches (:func:`_let_the_log_restart`).
SQLITE_PAUSE = 0.05


@dataclass(frozen=True, slots=True)
class PurgeReport:
    messages: int = 0
    deliveries: int = 0


def _expired_batch(session: Session, now: datetime, limit: int) -> list[tuple[int, str]]:
    unresolved = exists().where(
        Delivery.message_pk == StoredMessage.id, Delivery.state.in_(UNRESOLVED)
    )
    query = (
        select(StoredMessage.id, StoredMessage.tenant)
        .where(StoredMessage.expires_at < now, ~unresolved)
        .order_by(StoredMessage.expires_at, StoredMessage.id)  # by its index, oldest first
        .limit(limit)
        # PostgreSQL: held until the batch commits, passed by another purge running at the
        # same time — both used to delete the same batch and each audited it as its own
        # (`purged` counts doubled); SQLite's write lock already makes them take turns
        .with_for_update(skip_locked=True)
    )
    return [(int(pk), str(tenant)) for pk, tenant in session.execute(query)]


def _purge_batch(session: Session, now: datetime, limit: int) -> tuple[PurgeReport, bool]:
    """Purge up to ``limit`` messages; the flag says whether there may be more."""
    batch = _expired_batch(session, now, limit)
    if not batch:
        return PurgeReport(), False
    pks = [pk for pk, _ in batch]
    per_tenant_deliveries = remove_messages(session, pks)
    per_tenant_messages = Counter(tenant for _, tenant in batch)
    for tenant in sorted(per_tenant_messages):
        append_audit(
            session,
            tenant=tenant,
            event="purged",
            detail={
                "messages": per_tenant_messages[tenant],
                "deliveries": per_tenant_deliveries[tenant],
                "before": utc(now).isoformat(),
            },
            actor="purge",
        )
    report = PurgeReport(len(pks), sum(per_tenant_deliveries.values()))
    return report, len(batch) == limit


def remove_messages(session: Session, pks: list[int]) -> Counter[str]:
    """Delete the messages ``pks`` with their deliveries and attempts in the caller's
    transaction (their feeds' purge marks raised, their idempotency keys kept pointing at
    nothing); the deliveries deleted per tenant. Audit records are the caller's
    (``renkei purge``, a town's offboarding: bus/store/offboard.py)."""
    advance_marks(session, pks)
    per_tenant_deliveries = Counter[str](
        {
            str(tenant): int(count)
            for tenant, count in session.execute(
                select(StoredMessage.tenant, func.count(Delivery.id))
                .join(Delivery, Delivery.message_pk == StoredMessage.id)
                .where(StoredMessage.id.in_(pks))
                .group_by(StoredMessage.tenant)
            )
        }
    )
    delivery_ids = select(Delivery.id).where(Delivery.message_pk.in_(pks))
    session.execute(delete(DeliveryAttempt).where(DeliveryAttempt.delivery_id.in_(delivery_ids)))
    session.execute(delete(Delivery).where(Delivery.message_pk.in_(pks)))
    session.execute(
        update(IdempotencyKey).where(IdempotencyKey.message_pk.in_(pks)).values(message_pk=None)
    )
    session.execute(delete(StoredMessage).where(StoredMessage.id.in_(pks)))
    return per_tenant_deliveries


def purge(
    sessions: sessionmaker[Session], now: datetime | None = None, *, batch: int = PURGE_BATCH
) -> PurgeReport:
    """Delete expired, resolved messages in short transactions of ``batch`` messages (a long
    purge never holds the SQLite write lock for long). On PostgreSQL its transactions wait for
    their locks without the hub's ``lock_timeout``."""
    moment = utc(now or datetime.now(UTC))
    engine = sessions.kw["bind"]
    messages = deliveries = 0
    more = True
    while more:
        with sessions.begin() as session:
            if engine.dialect.name == "postgresql":
                # an operator's job, no sender waiting: it waits for a lock held elsewhere
                # (as a migration does) instead of failing past RENKEI_DATABASE_LOCK_TIMEOUT
                session.execute(text("SET LOCAL lock_timeout = 0"))
            report, more = _purge_batch(session, moment, batch)
        messages += report.messages
        deliveries += report.deliveries
        if more and engine.dialect.name == "sqlite":
            _let_the_log_restart(engine)
    return PurgeReport(messages, deliveries)


def _let_the_log_restart(engine: Engine) -> None:
    """Let SQLite's write-ahead log start again from its beginning before the next batch.

    Batches written back to back beside a hub that is reading never find the log free of
    readers: each one was appended to it, and a purge of 50,000 messages beside a hub taking
    messages grew the log to 437 MB (a 250 MB store) — room a full disk does not have. A short
    pause lets the readers of the older snapshots finish, and a passive checkpoint (it waits
    for nobody) then copies the whole log back, so the next batch starts it again (21 MB)."""
    time.sleep(SQLITE_PAUSE)
    connection = engine.raw_connection()
    try:
        connection.driver_connection.execute("PRAGMA wal_checkpoint(PASSIVE)")  # type: ignore[union-attr]
    finally:
        connection.close()
