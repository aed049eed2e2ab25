"""The audit trail: one tamper-evident hash chain per tenant (DESIGN §1 stage 10).

Each record's ``hash`` is ``sha256(prev_hash + canonical JSON of its fields)``; the first
record of a tenant chains to 64 zeros. Appending locks the tenant's ``audit_heads`` row
(``SELECT … FOR UPDATE`` on PostgreSQL; SQLite serialises writers with ``BEGIN IMMEDIATE``),
so concurrent writers never fork a chain. Records are written in the transaction of what they
record (ingest, a delivery's outcome), so the chain holds exactly what was committed.

``detail`` holds ids, codes, digests and counts only — never bodies or personal data.
"""

from __future__ import annotations

import hashlib
import json
import re
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from functools import cache
from typing import Any, Protocol, cast

from sqlalchemy import Connection, Select, Table, bindparam, func, select
from sqlalchemy.orm import Session, sessionmaker

from bus.pipeline import Message, StageName
from bus.store.bulk import BulkInsert, query
from bus.store.models import AuditHead, AuditRecord
from bus.store.sequences import upsert_insert
from bus.store.writers import write_transaction

GENESIS = "0" * 64
UNATTRIBUTED_TENANT = "000000"  # rejections whose Header tenant cannot be read
_TENANT = re.compile(r"[0-9]{6}")
_SYSTEM = re.compile(r"[a-z][a-z0-9_\-]{1,39}")
_MESSAGE_ID = re.compile(r"[0-9A-Za-z\-]{1,36}")
_SERVICE = re.compile(r"[A-Z][A-Za-z0-9]{1,63}")


def utc(moment: datetime) -> datetime:
    """An aware UTC datetime (SQLite hands back naive UTC values)."""
    if moment.tzinfo is None:
        return moment.replace(tzinfo=UTC)
    return moment.astimezone(UTC)


def _iso(moment: datetime) -> str:
    return utc(moment).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


# One encoder for every record (``json.dumps`` with options builds a new one per call).
_CANONICAL = json.JSONEncoder(sort_keys=True, separators=(",", ":"), ensure_ascii=False)


def record_hash(
    prev_hash: str,
    *,
    tenant: str,
    seq: int,
    at: datetime,
    event: str,
    message_id: str | None,
    actor: str | None,
    detail: dict[str, Any],
) -> str:
    return _hash(prev_hash, tenant, seq, _iso(at), event, message_id, actor, detail)


def hash_of(record: AuditRecord, prev_hash: str) -> str:
    """The hash ``record`` must have when it follows ``prev_hash``."""
    return record_hash(
        prev_hash,
        tenant=record.tenant,
        seq=record.seq,
        at=record.at,
        event=record.event,
        message_id=record.message_id,
        actor=record.actor,
        detail=record.detail,
    )


def _hash(
    prev_hash: str,
    tenant: str,
    seq: int,
    at_iso: str,
    event: str,
    message_id: str | None,
    actor: str | None,
    detail: dict[str, Any],
) -> str:
    """sha256(prev_hash + canonical JSON of the fields): sorted keys, no spaces, UTF-8."""
    fields = {
        "tenant": tenant,
        "seq": seq,
        "at": at_iso,
        "event": event,
        "message_id": message_id,
        "actor": actor,
        "detail": detail,
    }
    canonical = _CANONICAL.encode(fields)
    return hashlib.sha256((prev_hash + canonical).encode("utf-8")).hexdigest()


_HEADS = cast(Table, AuditHead.__table__)
_RECORDS = cast(Table, AuditRecord.__table__)
_RECORD_COLUMNS = (
    "tenant",
    "seq",
    "at",
    "event",
    "message_id",
    "actor",
    "detail",
    "prev_hash",
    "hash",
)
_INSERT_RECORDS = BulkInsert(_RECORDS, _RECORD_COLUMNS)
_INSERT_RECORD_RETURNING = BulkInsert(_RECORDS, _RECORD_COLUMNS, returning=("id",))
_UPDATE_HEAD = "UPDATE audit_heads SET seq = ?, hash = ? WHERE tenant = ?"


@cache
def _select_heads(count: int, dialect: str) -> str:
    """The heads of ``count`` tenants, locked in tenant order on PostgreSQL (two batches
    never deadlock; SQLite's write transaction is exclusive already)."""
    lock = " FOR UPDATE" if dialect == "postgresql" else ""
    tenants = ", ".join(["?"] * count)
    return (
        f"SELECT tenant, seq, hash FROM audit_heads WHERE tenant IN ({tenants})"
        f" ORDER BY tenant{lock}"
    )


def _heads(connection: Connection, tenants: list[str]) -> dict[str, tuple[int, str]]:
    statement = _select_heads(len(tenants), connection.dialect.name)
    return {
        tenant: (int(seq), str(hash_))
        for tenant, seq, hash_ in query(connection, statement, tenants)
    }


@cache
def _create_head(dialect_insert: Any) -> Any:
    return (
        dialect_insert(_HEADS)
        .values(tenant=bindparam("tenant"), seq=0, hash=GENESIS)
        .on_conflict_do_nothing(index_elements=[_HEADS.c.tenant])
    )


def _locked_heads(connection: Connection, tenants: list[str]) -> dict[str, tuple[int, str]]:
    """The heads (seq, hash) of ``tenants`` (sorted), locked for this transaction in tenant
    order; a missing head is created race-safely (concurrent creators collide on the primary
    key and the loser does nothing)."""
    heads = _heads(connection, tenants)
    missing = [tenant for tenant in tenants if tenant not in heads]
    if missing:
        connection.execute(
            _create_head(upsert_insert(connection)), [{"tenant": t} for t in missing]
        )
        heads.update(_heads(connection, missing))
    return heads


@dataclass(frozen=True, slots=True)
class AuditEntry:
    """One record to append: ``detail`` must be JSON (ids, codes, digests, counts)."""

    tenant: str
    event: str
    message_id: str | None = None
    detail: Mapping[str, Any] | None = None
    actor: str | None = None
    at: datetime | None = None


def append_audits(session: Session, entries: Sequence[AuditEntry]) -> list[dict[str, Any]]:
    """:func:`append_audits_on` in the session's transaction."""
    if not entries:
        return []
    return append_audits_on(session.connection(), entries)


def append_audits_on(connection: Connection, entries: Sequence[AuditEntry]) -> list[dict[str, Any]]:
    """Append ``entries`` to their tenants' chains inside the connection's transaction, in the
    given order per tenant: each tenant's head is locked once (all of them in tenant order,
    so concurrent batches never wait on each other in a cycle), the records are written with
    one multi-row insert and each head is updated once. Call it as the last write before the
    commit: the heads stay locked until then. Returns the values written, in entry order."""
    if not entries:
        return []
    tenants = sorted({entry.tenant for entry in entries})
    heads = _locked_heads(connection, tenants)
    now = datetime.now(UTC)
    if entries[0].at is not None:  # callers stamp a whole batch with one moment
        now = utc(entries[0].at)
    now_iso = _iso(now)
    written: list[dict[str, Any]] = []
    for entry in entries:
        prev_seq, prev_hash = heads[entry.tenant]
        values = _record_values(entry, prev_seq + 1, prev_hash, now, now_iso)
        heads[entry.tenant] = (values["seq"], values["hash"])
        written.append(values)
    rows = [tuple(values[name] for name in _RECORD_COLUMNS) for values in written]
    if len(written) == 1:
        ((written[0]["id"],),) = _INSERT_RECORD_RETURNING.execute(connection, rows)
    else:
        _INSERT_RECORDS.execute(connection, rows)
    for tenant in tenants:
        query(connection, _UPDATE_HEAD, [*heads[tenant], tenant])
    return written


def _record_values(
    entry: AuditEntry, seq: int, prev_hash: str, now: datetime, now_iso: str
) -> dict[str, Any]:
    detail = dict(entry.detail or {})
    moment = utc(entry.at) if entry.at is not None else now
    at_iso = now_iso if moment == now else _iso(moment)
    digest = _hash(
        prev_hash, entry.tenant, seq, at_iso, entry.event, entry.message_id, entry.actor, detail
    )
    return {
        "tenant": entry.tenant,
        "seq": seq,
        "at": moment,
        "event": entry.event,
        "message_id": entry.message_id,
        "actor": entry.actor,
        "detail": detail,
        "prev_hash": prev_hash,
        "hash": digest,
    }


def append_audit(
    session: Session,
    *,
    tenant: str,
    event: str,
    message_id: str | None = None,
    detail: dict[str, Any] | None = None,
    actor: str | None = None,
    at: datetime | None = None,
) -> AuditRecord:
    """Append one record to ``tenant``'s chain inside the caller's transaction (see
    :func:`append_audits` for several). The returned object is a transient copy of what was
    written."""
    entry = AuditEntry(tenant, event, message_id, detail, actor, at)
    (values,) = append_audits(session, [entry])
    return AuditRecord(**values)


@dataclass(frozen=True, slots=True)
class ChainReport:
    ok: bool
    records: int
    first_bad_seq: int | None = None
    reason: str | None = None


def _query(tenant: str, after_seq: int, up_to: int | None) -> Select[AuditRecord]:
    statement = select(AuditRecord).where(AuditRecord.tenant == tenant, AuditRecord.seq > after_seq)
    if up_to is not None:
        statement = statement.where(AuditRecord.seq <= up_to)
    return statement.order_by(AuditRecord.seq).execution_options(
        yield_per=1000  # a long chain is streamed, not loaded
    )


#: Called with the seq a walk has reached, every :data:`PROGRESS_EVERY` records.
WalkProgress = Callable[[int], None]
PROGRESS_EVERY = 10_000


def verify_chain(
    session: Session, tenant: str, progress: WalkProgress | None = None
) -> ChainReport:
    """Recompute ``tenant``'s chain; the first seq where it breaks is reported.

    Detects an edited record (hash mismatch), a deleted or reordered one (seq gap or
    ``prev_hash`` mismatch), a deleted tail (the head names a later record) and a record
    appended past the head. It works on a live hub: the head is read after the records, and
    when it has moved on meanwhile (appends committed while the chain was read — each
    statement sees the latest commits on PostgreSQL), the records up to it are read and
    checked too, rather than mistaken for a deleted tail. ``progress``: told the seq reached
    every :data:`PROGRESS_EVERY` records (a five-year chain takes minutes)."""
    with session.scalars(_query(tenant, 0, None)) as records:
        walk = _walk(_told(records, progress), _Walk())
    if walk.report is not None:
        return walk.report
    return _up_to_head(session, tenant, walk, progress)


def _up_to_head(
    session: Session, tenant: str, walk: _Walk, progress: WalkProgress | None = None
) -> ChainReport:
    """Finish a walk that read every record: the head must name its last one (records the
    head has moved on to meanwhile are read and checked first)."""
    head = session.execute(
        select(AuditHead.seq, AuditHead.hash).where(AuditHead.tenant == tenant)
    ).first()  # read now, not from the session's identity map
    if head is not None and head.seq > walk.last_seq:
        with session.scalars(_query(tenant, walk.last_seq, head.seq)) as records:
            walk = _walk(_told(records, progress), walk)
        if walk.report is not None:
            return walk.report
    if head is not None and (head.seq != walk.last_seq or head.hash != walk.last_hash):
        reason = f"the head is at seq {head.seq}, the records end at {walk.last_seq}"
        return ChainReport(False, walk.count, min(head.seq, walk.last_seq) + 1, reason)
    return ChainReport(True, walk.count)


def verify_range(
    session: Session,
    tenant: str,
    start: datetime | None,
    end: datetime | None,
    progress: WalkProgress | None = None,
) -> ChainReport:
    """Like :func:`verify_chain` for the records stamped within [start, end]: the walk starts
    at the first of them, trusting the ``prev_hash`` it names only when its predecessor is
    missing (before ``start`` nothing is checked), and the head is checked only when ``end``
    is open."""
    if start is None and end is None:
        return verify_chain(session, tenant, progress)
    condition = [AuditRecord.tenant == tenant]
    if start is not None:
        condition.append(AuditRecord.at >= start)
    first = session.scalar(select(func.min(AuditRecord.seq)).where(*condition))
    if first is None:
        return ChainReport(True, 0)
    before = session.scalar(
        select(AuditRecord.hash).where(AuditRecord.tenant == tenant, AuditRecord.seq == first - 1)
    )
    if before is None:
        before = session.scalar(
            select(AuditRecord.prev_hash).where(
                AuditRecord.tenant == tenant, AuditRecord.seq == first
            )
        )
    statement = _query(tenant, first - 1, None)
    if end is not None:
        statement = statement.where(AuditRecord.at <= end)
    with session.scalars(statement) as records:
        walk = _walk(_told(records, progress), _Walk(0, first - 1, before or GENESIS))
    if walk.report is not None or end is not None:
        return walk.report or ChainReport(True, walk.count)
    return _up_to_head(session, tenant, walk, progress)


@dataclass(frozen=True, slots=True)
class _Walk:
    """How far a walk along a chain got: records checked, the last seq and hash, the break."""

    count: int = 0
    last_seq: int = 0
    last_hash: str = GENESIS
    report: ChainReport | None = None


def _told(records: Iterable[AuditRecord], progress: WalkProgress | None) -> Iterable[AuditRecord]:
    """``records``, telling ``progress`` the seq reached every :data:`PROGRESS_EVERY`."""
    if progress is None:
        yield from records
        return
    for count, record in enumerate(records, 1):
        if count % PROGRESS_EVERY == 0:
            progress(record.seq)
        yield record


def _walk(records: Iterable[AuditRecord], start: _Walk) -> _Walk:
    """Continue ``start`` along ``records`` (in seq order) up to the first break."""
    count, last_seq, prev = start.count, start.last_seq, start.last_hash
    for record in records:
        count += 1
        if record.seq != last_seq + 1:
            report = ChainReport(False, count, last_seq + 1, "a record is missing")
            return _Walk(count, last_seq, prev, report)
        if record.prev_hash != prev:
            report = ChainReport(False, count, record.seq, "prev_hash does not match")
            return _Walk(count, last_seq, prev, report)
        if hash_of(record, prev) != record.hash:
            report = ChainReport(False, count, record.seq, "hash does not match the record")
            return _Walk(count, last_seq, prev, report)
        last_seq, prev = record.seq, record.hash
    return _Walk(count, last_seq, prev)


def audited_tenants(session: Session) -> list[str]:
    """Every tenant with a chain (the pseudo-tenant ``000000`` included)."""
    return list(session.scalars(select(AuditHead.tenant).order_by(AuditHead.tenant)))


# --- the Audit stage ------------------------------------------------------------------------


def _safe(value: str | None, pattern: re.Pattern[str]) -> str | None:
    """A Header value fit for the audit trail: it must look like what it claims to be (an
    unvalidated Header may hold anything, personal data included)."""
    return value if value is not None and pattern.fullmatch(value) else None


#: The refusal of a message the store had no room for (bus/store/ingest.py).
STORE_FULL = "RK-STO007"


class RejectionWriter(Protocol):
    """Writes rejection records after the answer (:mod:`bus.store.rejection_audit`)."""

    def submit(self, entry: AuditEntry) -> None: ...

    def offer(self, entry: AuditEntry) -> None: ...


@dataclass(frozen=True, slots=True)
class AuditStage:
    """Records rejections (codes only, no values). Accepted messages were audited by the Store
    stage inside its transaction, so this stage leaves them alone. With a ``writer`` (the
    hub's), the record is written after the answer (:mod:`bus.store.rejection_audit`);
    without one, in a transaction of its own before the stage returns."""

    sessions: sessionmaker[Session]
    writer: RejectionWriter | None = None
    name: StageName = StageName.AUDIT

    def __call__(self, message: Message) -> Message:
        if not message.rejected:
            return message
        entry = rejection_entry(message)
        if self.writer is not None:
            if any(f.code == STORE_FULL for f in message.findings):
                # the store is full: the writer cannot drain, so never wait for its room
                self.writer.offer(entry)
            else:
                self.writer.submit(entry)
            return message
        # in the process's write turn: in SQLite's busy handler a refusal slept up to
        # hundreds of ms behind the ingest and dispatch commits (docs/benchmarks.md)
        with write_transaction(self.sessions) as session:
            append_audits(session, [entry])
        return message


def rejection_entry(message: Message) -> AuditEntry:
    """The ``rejected`` record of ``message``: its codes, adapter and size, and the Header's
    tenant, system, messageId and service only where they look like what they claim to be."""
    envelope = message.envelope
    client = envelope.client if envelope is not None else None
    tenant = _safe(client.tenant if client else None, _TENANT) or UNATTRIBUTED_TENANT
    codes = sorted({finding.code for finding in message.findings})
    detail: dict[str, Any] = {
        "codes": codes,
        "adapter": message.adapter,
        # a size, not a digest: a tiny refused body (one 個人番号) would be enumerable
        "raw_bytes": len(message.raw),
    }
    service = _safe(message.service or (envelope.service if envelope else None), _SERVICE)
    if service:
        detail["service"] = service
    return AuditEntry(
        tenant=tenant,
        event="rejected",
        message_id=_safe(envelope.message_id if envelope else None, _MESSAGE_ID),
        detail=detail,
        actor=_safe(client.system if client else None, _SYSTEM),
    )
