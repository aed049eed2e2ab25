"""Write-behind for the audit records of refusals (DESIGN §1 stage 10).

A refused message stores nothing: the sender still holds its data and is told why. The
record of the refusal is evidence, not data, so it need not be committed before the answer.
Committing it first made every refusal wait for the process's SQLite write turn behind the
grouped ingest commits — tens of milliseconds for an 8-byte hostile body while the hub is
busy (issue 7: refusals under load in < 10 ms p99; docs/benchmarks.md). Here the Audit stage
hands the record to one writer thread and returns; the thread appends whatever has queued
to the tenants' chains in one transaction, in the order the refusals happened (stamped, like
every record, with the moment it is written: normally milliseconds after the refusal).

Nothing is dropped: when ``max_pending`` records wait, the refusing thread waits for room
(back-pressure, as a flood of refusals should meet); a failed transaction is retried with
the same records; :meth:`close` writes everything still pending (unless the store is full
then: those are counted in one RK-OPS007 error line, not retried). What a refusal gives up is
only the interval between the answer and the writer's commit (normally one write turn): a
process killed in it loses those records of refusals, while the ``message.rejected`` log line
written with the answer still shows them.

Refusals an HTTP edge makes before the pipeline (a media type, a Content-Encoding, the body
limit, a charset, WS-Security: :func:`edge_rejection_entry`) are handed over with
:meth:`RejectionAuditWriter.offer`, from the event loop after the answer, which never waits:
when the queue is full, such a refusal is counted instead, and the writer appends one
aggregated record per kind (codes, adapter, service, caller) with the count, after what was
queued. A flood of them therefore adds records no faster than the writer commits them — as a
flood of pipeline refusals, which wait for room — and none is lost from the count.
"""

from __future__ import annotations

import ipaddress
import json
import logging
import threading
import time
from collections import deque
from collections.abc import Sequence
from typing import Any

from sqlalchemy.orm import Session, sessionmaker

from bus.store.audit import (
    _SERVICE,
    _SYSTEM,
    UNATTRIBUTED_TENANT,
    AuditEntry,
    _safe,
    append_audits,
)
from bus.store.write_health import is_storage_full, write_health
from bus.store.writers import write_transaction

log = logging.getLogger(__name__)

#: Records written per transaction at most (one multi-row insert).
MAX_BATCH = 500
#: Seconds between attempts while the database refuses the records.
RETRY_SECONDS = 1.0
#: What an aggregated record leaves out of the refusals it counts (it varies per request).
PER_REQUEST = frozenset({"raw_bytes", "source_address"})
#: The count of refusals an aggregated record stands for.
REFUSALS = "refusals"


class RejectionAuditWriter:
    """Appends queued refusal records to the audit chains from one background thread."""

    def __init__(self, sessions: sessionmaker[Session], max_pending: int = 10_000) -> None:
        self._sessions = sessions
        self._health = write_health(sessions)
        self._max_pending = max_pending
        self._pending: deque[AuditEntry] = deque()
        self._in_flight = 0  # taken off the queue, not yet committed
        # refusals offered while the queue was full: (record without PER_REQUEST, count)
        self._overflow: dict[str, tuple[AuditEntry, int]] = {}
        self._changed = threading.Condition()
        self._closing = False
        self._thread = threading.Thread(
            target=self._run, name="renkei-rejection-audit", daemon=True
        )
        self._thread.start()

    def submit(self, entry: AuditEntry) -> None:
        """Queue one record; wait while the queue is full. After :meth:`close`, the record is
        written at once in the caller's thread."""
        with self._changed:
            while len(self._pending) >= self._max_pending and not self._closing:
                self._changed.wait()
            if not self._closing:
                self._pending.append(entry)
                self._changed.notify_all()
                return
        self._write([entry])

    def offer(self, entry: AuditEntry) -> None:
        """Queue one record without ever waiting (the caller is an event loop): when the queue
        is full, count it into an aggregated record instead (see the module's docstring).
        After :meth:`close`, the record is written at once in the caller's thread."""
        with self._changed:
            if not self._closing:
                if len(self._pending) < self._max_pending:
                    self._pending.append(entry)
                else:
                    self._count_overflow(entry)
                self._changed.notify_all()
                return
        self._write([entry])

    def _count_overflow(self, entry: AuditEntry) -> None:
        detail = {k: v for k, v in (entry.detail or {}).items() if k not in PER_REQUEST}
        kind = AuditEntry(entry.tenant, entry.event, None, detail, entry.actor)
        key = json.dumps([kind.tenant, kind.event, kind.actor, detail], sort_keys=True)
        _, count = self._overflow.get(key, (kind, 0))
        self._overflow[key] = (kind, count + 1)

    def _take_overflow(self) -> list[AuditEntry]:
        """The aggregated records of what overflowed so far (the caller holds the lock)."""
        taken = [
            AuditEntry(
                kind.tenant, kind.event, None, {**(kind.detail or {}), REFUSALS: n}, kind.actor
            )
            for kind, n in self._overflow.values()
        ]
        self._overflow.clear()
        return taken

    def has_room(self) -> bool:
        """Whether :meth:`submit` would queue without waiting (at this moment)."""
        return len(self._pending) < self._max_pending and not self._closing

    @property
    def pending(self) -> int:
        """Records not yet committed."""
        with self._changed:
            return len(self._pending) + self._in_flight + len(self._overflow)

    def flush(self, timeout: float | None = None) -> bool:
        """Wait until every record submitted so far is committed; False on timeout."""
        with self._changed:
            return self._changed.wait_for(
                lambda: not self._pending and not self._in_flight and not self._overflow, timeout
            )

    def close(self, timeout: float = 30.0) -> None:
        """Write what is pending and stop the thread."""
        with self._changed:
            self._closing = True
            self._changed.notify_all()
        self._thread.join(timeout)
        if self._thread.is_alive():
            log.error("rejection audit writer did not finish: %d records pending", self.pending)

    def _run(self) -> None:
        while True:
            with self._changed:
                self._changed.wait_for(lambda: self._pending or self._overflow or self._closing)
                if not self._pending and not self._overflow:
                    return  # closing, nothing left
                batch = [self._pending.popleft() for _ in range(min(len(self._pending), MAX_BATCH))]
                batch += self._take_overflow()  # counted while the queue was full
                self._in_flight = len(batch)
                self._changed.notify_all()  # room for waiting submitters
            written = self._write_until_done(batch)
            with self._changed:
                self._in_flight = 0
                self._changed.notify_all()
            if not written:
                self._give_up(len(batch))
                return

    def _write_until_done(self, batch: Sequence[AuditEntry]) -> bool:
        """Retries until written; False once the writer is closing and the store is still
        full (waiting out :meth:`close`'s timeout would only delay the process's exit: a
        batch import, a hub stopping, each held 30 s by a disk that stays full)."""
        while True:
            try:
                self._write(batch)
            except Exception as error:
                if is_storage_full(error):  # logged once, as the Store stage's refusals are
                    self._health.failed(error)
                    if self._closing:
                        return False
                else:
                    log.exception("rejection audit records not written; retrying")
                time.sleep(RETRY_SECONDS)
            else:
                # not proof of room for a message (a record may fit a page's free space):
                # only a message or readiness's probe clears a full store
                return True

    def _give_up(self, batch: int) -> None:
        with self._changed:
            lost = batch + len(self._pending) + sum(n for _, n in self._overflow.values())
            self._pending.clear()
            self._overflow.clear()
            self._changed.notify_all()
        log.error(
            "RK-OPS007 %d audit records of refused messages not written: the message store "
            "is full at shutdown (their message.rejected log lines remain)",
            lost,
        )

    def _write(self, batch: Sequence[AuditEntry]) -> None:
        with write_transaction(self._sessions) as session:
            append_audits(session, batch)


def edge_rejection_entry(
    code: str,
    *,
    adapter: str,
    service: str | None,
    source_address: str | None,
    credential: str | None,
    system: str | None,
    raw_bytes: int | None,
) -> AuditEntry:
    """The ``rejected`` record of a refusal an HTTP edge made before the pipeline (so with no
    Header read): the pseudo-tenant's chain, the code, the adapter, the endpoint's service,
    the source address, which credential was presented (``api_key``, ``certificate``; never
    its value) and the system it names, if it does. ``raw_bytes``: the size of what was read
    when the refusal was about the body — a size, not a digest (docs/audit.md)."""
    detail: dict[str, Any] = {
        "codes": [code],
        "adapter": adapter,
        "before_pipeline": True,
        "credential": credential,
        "source_address": _address(source_address),
    }
    if (known := _safe(service, _SERVICE)) is not None:
        detail["service"] = known
    if raw_bytes is not None:
        detail["raw_bytes"] = raw_bytes
    return AuditEntry(
        tenant=UNATTRIBUTED_TENANT, event="rejected", detail=detail, actor=_safe(system, _SYSTEM)
    )


def _address(value: str | None) -> str | None:
    """An IP address as the transport gave it; anything else (a proxy's text) is left out."""
    if value is None:
        return None
    try:
        return str(ipaddress.ip_address(value))
    except ValueError:
        return None
