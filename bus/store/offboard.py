"""A town leaving the shared hub (共同利用からの脱退): its data handed over, then removed.

``export_tenant`` writes everything the hub holds of one tenant into a new directory, nothing
of any other tenant: its messages (the stored bodies, in full: the town's own data going back
to it), their deliveries with each attempt, its audit chain from the first record with the
hashes (so the town can verify it alone), the admin chain's records naming it, and
``manifest.json`` (counts, the SHA-256 of every file, the chain's head when exported).

``purge_tenant`` then removes the tenant's personal data from the hub — messages, deliveries,
attempts, per-subject sequences (their keys are 宛名番号), its rows of the resident index and
its import work files — only when the tenant is disabled, none of its deliveries is pending
or dead-lettered, and the export given is intact and still matches the hub (the tenant's
chain has not moved since). Its audit chain stays: it holds no personal data, signed
checkpoints and the anchor directory refer to it, and ``renkei audit verify`` keeps passing;
the chain gains ``purged`` records (counts) and the admin chain a ``tenant.purge`` record.
As after ``renkei purge``, its idempotency keys (ids and digests) stay pointing at nothing
and its feeds' purge marks are raised: a town that joins again is never delivered an old
message twice, and a feed reader is told what it missed. Messages go in batches of short
transactions, as ``renkei purge`` does (bus/store/retention.py), so the hub keeps serving
the other towns meanwhile; a purge cut short is finished by running it again with the same
export.
"""

from __future__ import annotations

import hashlib
import json
import os
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import IO, Any

from sqlalchemy import delete, func, select, text
from sqlalchemy.orm import Session, sessionmaker

from bus.errors import make_finding
from bus.pipeline import Finding
from bus.store.admin_audit import ADMIN_CHAIN, record_admin_action
from bus.store.audit import append_audit, hash_of, utc
from bus.store.db import read_snapshot
from bus.store.models import (
    AuditHead,
    AuditRecord,
    Delivery,
    DeliveryAttempt,
    DeliveryState,
    StoredMessage,
    SubjectSequence,
)
from bus.store.retention import PURGE_BATCH, _let_the_log_restart, remove_messages

FORMAT = "renkei.tenant-export/1"
MANIFEST = "manifest.json"
FILES = ("messages.jsonl", "deliveries.jsonl", "audit.jsonl", "admin.jsonl")
#: the actor of the tenant chain's ``purged`` records an offboarding writes
ACTOR = "offboard"
_READ_BATCH = 500


class OffboardRefused(Exception):
    """Nothing was written or removed; ``finding`` says why (RK-TEN014…017)."""

    def __init__(self, finding: Finding) -> None:
        self.finding = finding
        super().__init__(f"{finding.code} {finding.message_en}")


def _refused(code: str, **params: Any) -> OffboardRefused:
    return OffboardRefused(make_finding(code, path="/tenant", **params))


@dataclass(frozen=True, slots=True)
class PurgeReport:
    messages: int
    deliveries: int
    sequences: int
    resident_rows: int
    import_files: int


def _iso(moment: datetime | None) -> str | None:
    # the form the chain hashes ``at`` in (bus.store.audit.record_hash)
    return None if moment is None else utc(moment).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def unresolved(session: Session, tenant: str) -> dict[str, int]:
    """The tenant's pending and dead-lettered deliveries: ``{"pending": n, "dead": m}``."""
    rows = session.execute(
        select(Delivery.state, func.count())
        .where(
            Delivery.tenant == tenant,
            Delivery.state.in_((DeliveryState.PENDING.value, DeliveryState.DEAD.value)),
        )
        .group_by(Delivery.state)
    ).all()
    counts = {str(state): int(count) for state, count in rows}
    return {"pending": counts.get("pending", 0), "dead": counts.get("dead", 0)}


def _head(session: Session, tenant: str) -> dict[str, Any]:
    head = session.get(AuditHead, tenant)
    return {"seq": head.seq, "hash": head.hash} if head else {"seq": 0, "hash": None}


class _Writer:
    """One JSON Lines file of the export, its SHA-256 and line count kept as it is written."""

    def __init__(self, path: Path) -> None:
        self.name = path.name
        self._file: IO[bytes] = open(path, "xb")  # noqa: SIM115 - closed by close()
        self._digest = hashlib.sha256()
        self.lines = 0
        self.bytes = 0

    def write(self, row: dict[str, Any]) -> None:
        data = (json.dumps(row, ensure_ascii=False, sort_keys=True) + "\n").encode("utf-8")
        self._file.write(data)
        self._digest.update(data)
        self.lines += 1
        self.bytes += len(data)

    def close(self) -> dict[str, Any]:
        self._file.flush()
        os.fsync(self._file.fileno())
        self._file.close()
        return {"sha256": self._digest.hexdigest(), "bytes": self.bytes, "lines": self.lines}


def _message_row(row: StoredMessage) -> dict[str, Any]:
    return {
        "messageId": row.message_id,
        "system": row.system,
        "service": row.service,
        "kind": row.kind,
        "subject": row.subject,
        "correlationId": row.correlation_id,
        "relatesTo": row.relates_to,
        "receivedAt": _iso(row.received_at),
        "expiresAt": _iso(row.expires_at),
        "bodyDigest": row.body_digest,
        "body": row.body.decode("utf-8"),
    }


def _delivery_row(
    delivery: Delivery, message_id: str, history: list[DeliveryAttempt]
) -> dict[str, Any]:
    return {
        "delivery": delivery.id,
        "messageId": message_id,
        "destination": delivery.destination,
        "subjectKey": delivery.subject_key,
        "sequence": delivery.sequence,
        "state": delivery.state,
        "attempts": delivery.attempts,
        "createdAt": _iso(delivery.created_at),
        "firstAttemptAt": _iso(delivery.first_attempt_at),
        "finishedAt": _iso(delivery.finished_at),
        "lastError": delivery.last_error,
        "history": [
            {"attempt": a.attempt, "at": _iso(a.at), "outcome": a.outcome, "error": a.error}
            for a in history
        ],
    }


def _audit_row(record: AuditRecord) -> dict[str, Any]:
    # the fields the hash covers, as it covers them, then the links
    return {
        "tenant": record.tenant,
        "seq": record.seq,
        "at": _iso(record.at),
        "event": record.event,
        "message_id": record.message_id,
        "actor": record.actor,
        "detail": record.detail,
        "prev_hash": record.prev_hash,
        "hash": record.hash,
    }


def _messages(session: Session, tenant: str) -> Iterator[list[StoredMessage]]:
    last = 0
    while True:
        rows = list(
            session.scalars(
                select(StoredMessage)
                .where(StoredMessage.tenant == tenant, StoredMessage.id > last)
                .order_by(StoredMessage.id)
                .limit(_READ_BATCH)
            )
        )
        if not rows:
            return
        yield rows
        last = rows[-1].id
        session.expunge_all()  # memory stays flat however many messages the town sent


def _write_messages(session: Session, tenant: str, messages: _Writer, deliveries: _Writer) -> None:
    for batch in _messages(session, tenant):
        ids = {row.id: row.message_id for row in batch}
        for row in batch:
            messages.write(_message_row(row))
        found = list(
            session.scalars(
                select(Delivery).where(Delivery.message_pk.in_(ids)).order_by(Delivery.id)
            )
        )
        history: dict[int, list[DeliveryAttempt]] = {}
        if found:
            for attempt in session.scalars(
                select(DeliveryAttempt)
                .where(DeliveryAttempt.delivery_id.in_([d.id for d in found]))
                .order_by(DeliveryAttempt.delivery_id, DeliveryAttempt.attempt)
            ):
                history.setdefault(attempt.delivery_id, []).append(attempt)
        for delivery in found:
            deliveries.write(
                _delivery_row(delivery, ids[delivery.message_pk], history.get(delivery.id, []))
            )


def _chain(session: Session, tenant: str, through: int) -> Iterator[AuditRecord]:
    last = 0
    while last < through:
        rows = list(
            session.scalars(
                select(AuditRecord)
                .where(AuditRecord.tenant == tenant, AuditRecord.seq > last)
                .where(AuditRecord.seq <= through)
                .order_by(AuditRecord.seq)
                .limit(_READ_BATCH)
            )
        )
        if not rows:
            return
        yield from rows
        last = rows[-1].seq
        session.expunge_all()


def _write_chain(session: Session, tenant: str, through: int, out: _Writer) -> bool:
    """The tenant's chain up to seq ``through``; whether every link recomputed."""
    prev, intact = "0" * 64, True
    for expected_seq, record in enumerate(_chain(session, tenant, through), start=1):
        intact = intact and record.seq == expected_seq and hash_of(record, prev) == record.hash
        prev = record.hash
        out.write(_audit_row(record))
    return intact


def _admin_records(session: Session, tenant: str) -> Iterable[AuditRecord]:
    return session.scalars(
        select(AuditRecord)
        .where(AuditRecord.tenant == ADMIN_CHAIN)
        .where(AuditRecord.detail["tenant"].as_string() == tenant)
        .order_by(AuditRecord.seq)
    )


def export_tenant(
    sessions: sessionmaker[Session],
    tenant: str,
    directory: Path,
    *,
    name: str | None,
    enabled: bool | None,
    actor: str | None,
    now: datetime | None = None,
) -> dict[str, Any]:
    """Write the tenant's export into ``directory`` (new or empty; RK-TEN017 otherwise);
    the manifest is returned. ``name``/``enabled``: the tenant as configured (None when no
    longer in the configuration). The export is recorded on the admin chain
    (``tenant.export``: counts and the manifest's digest)."""
    if directory.exists() and (not directory.is_dir() or any(directory.iterdir())):
        raise _refused("RK-TEN017", actual=str(directory))
    directory.mkdir(mode=0o700, parents=True, exist_ok=True)
    moment = utc(now or datetime.now(UTC))
    writers = {file: _Writer(directory / file) for file in FILES}
    with read_snapshot(sessions) as session:  # one moment, the hub serving meanwhile
        head = _head(session, tenant)  # first: whatever happens later moves it (purge checks)
        waiting = unresolved(session, tenant)
        _write_messages(session, tenant, writers["messages.jsonl"], writers["deliveries.jsonl"])
        intact = _write_chain(session, tenant, head["seq"], writers["audit.jsonl"])
        for record in _admin_records(session, tenant):
            writers["admin.jsonl"].write(_audit_row(record))
    files = {file: writer.close() for file, writer in writers.items()}
    counts = {
        "messages": files["messages.jsonl"]["lines"],
        "deliveries": files["deliveries.jsonl"]["lines"],
        "auditRecords": files["audit.jsonl"]["lines"],
        "adminRecords": files["admin.jsonl"]["lines"],
    }
    manifest: dict[str, Any] = {
        "format": FORMAT,
        "tenant": tenant,
        "name": name,
        "enabled": enabled,
        "exportedAt": _iso(moment),
        "exportedBy": actor,
        "auditHead": head,
        "chainVerified": intact,
        "unresolved": waiting,
        "counts": counts,
        "files": files,
    }
    data = (json.dumps(manifest, ensure_ascii=False, indent=2, sort_keys=True) + "\n").encode()
    with open(directory / MANIFEST, "xb") as out:
        out.write(data)
        out.flush()
        os.fsync(out.fileno())
    with sessions.begin() as session:
        detail = {
            "tenant": tenant,
            "manifest": hashlib.sha256(data).hexdigest(),
            "audit_seq": head["seq"],
            **counts,
        }
        record_admin_action(session, actor, "tenant.export", detail)
    return manifest


def check_export(directory: Path, tenant: str) -> tuple[dict[str, Any], str]:
    """The export's manifest and its SHA-256, once every file is as the manifest says and the
    export is the tenant's (RK-TEN016 otherwise)."""
    try:
        data = (directory / MANIFEST).read_bytes()
        manifest = json.loads(data)
    except (OSError, ValueError):
        raise _refused("RK-TEN016", actual=str(directory), expected=MANIFEST) from None
    if not isinstance(manifest, dict) or manifest.get("format") != FORMAT:
        raise _refused("RK-TEN016", actual=str(directory), expected=f"format {FORMAT}")
    if manifest.get("tenant") != tenant:
        raise _refused(
            "RK-TEN016", actual=str(directory), expected=f"tenant {manifest.get('tenant')}"
        )
    for file in FILES:
        digest = hashlib.sha256()
        try:
            with open(directory / file, "rb") as handle:
                for chunk in iter(lambda: handle.read(1 << 20), b""):
                    digest.update(chunk)
        except OSError:
            raise _refused("RK-TEN016", actual=str(directory), expected=f"{file} missing") from None
        if digest.hexdigest() != manifest["files"][file]["sha256"]:
            raise _refused("RK-TEN016", actual=str(directory), expected=f"{file} sha256")
    return manifest, hashlib.sha256(data).hexdigest()


def _moved_since(session: Session, tenant: str, head: dict[str, Any]) -> str | None:
    """Why the tenant's data may differ from an export taken at chain head ``head``: None
    when the chain is where it was, or only refusals or an earlier run of this purge moved
    it."""
    seq = int(head["seq"])
    if seq:
        at = session.scalars(
            select(AuditRecord.hash).where(AuditRecord.tenant == tenant, AuditRecord.seq == seq)
        ).first()
        if at != head["hash"]:
            return f"audit seq {seq}"
    later = session.execute(
        select(AuditRecord.seq, AuditRecord.event, AuditRecord.actor)
        .where(AuditRecord.tenant == tenant, AuditRecord.seq > seq)
        .order_by(AuditRecord.seq)
    ).all()
    for later_seq, event, actor in later:
        # a refusal stores nothing (the town's old systems may still be sending: RK-AUT005);
        # ``purged`` by an earlier run of this purge: it is finished, not refused
        if event != "rejected" and (event, actor) != ("purged", ACTOR):
            return f"audit seq {seq} → {later_seq} ({event})"
    return None


def purge_tenant(
    sessions: sessionmaker[Session],
    tenant: str,
    directory: Path,
    *,
    enabled: bool | None,
    data_dir: Path,
    actor: str | None,
    batch: int = PURGE_BATCH,
) -> PurgeReport:
    """Remove the tenant's personal data after its export in ``directory`` was handed over
    (module docstring). Refused, with nothing removed: an export not intact or not the
    tenant's, or a chain moved since it (RK-TEN016); the tenant enabled (RK-TEN014);
    deliveries pending or dead-lettered (RK-TEN015)."""
    manifest, manifest_digest = check_export(directory, tenant)
    if enabled:
        raise _refused("RK-TEN014", actual=tenant)
    with sessions() as session:
        waiting = unresolved(session, tenant)
        moved = _moved_since(session, tenant, manifest["auditHead"])
    if waiting["pending"] or waiting["dead"]:
        actual = f"{tenant}: pending={waiting['pending']} dead={waiting['dead']}"
        raise _refused("RK-TEN015", actual=actual)
    if moved:
        raise _refused("RK-TEN016", actual=str(directory), expected=moved)
    engine = sessions.kw["bind"]
    messages = deliveries = 0
    while True:
        with sessions.begin() as session:
            if engine.dialect.name == "postgresql":
                session.execute(text("SET LOCAL lock_timeout = 0"))  # as renkei purge does
            pks = list(
                session.scalars(
                    select(StoredMessage.id)
                    .where(StoredMessage.tenant == tenant)
                    .order_by(StoredMessage.id)
                    .limit(batch)
                )
            )
            if not pks:
                break
            removed = remove_messages(session, pks)[tenant]
            counts = {"messages": len(pks), "deliveries": removed, "offboarded": True}
            append_audit(session, tenant=tenant, event="purged", detail=counts, actor=ACTOR)
        messages += len(pks)
        deliveries += removed
        if engine.dialect.name == "sqlite":
            _let_the_log_restart(engine)  # as renkei purge does between its batches
    resident_rows = _forget_residents(data_dir, tenant)
    import_files = _remove_import_files(data_dir, tenant)
    with sessions.begin() as session:
        sequences = session.execute(delete(SubjectSequence).where(SubjectSequence.tenant == tenant))
        report = PurgeReport(
            messages=messages,
            deliveries=deliveries,
            sequences=int(sequences.rowcount or 0),  # type: ignore[attr-defined]
            resident_rows=resident_rows,
            import_files=import_files,
        )
        detail: dict[str, Any] = {"tenant": tenant, "export": manifest_digest}
        detail |= vars_of(report)
        record_admin_action(session, actor, "tenant.purge", detail)
    return report


def vars_of(report: PurgeReport) -> dict[str, int]:
    return {field: getattr(report, field) for field in report.__dataclass_fields__}


def _forget_residents(data_dir: Path, tenant: str) -> int:
    """Drop the tenant's rows of the resident index (normalised names and addresses), if the
    hub has one; how many there were."""
    path = data_dir / "imports" / "residents.sqlite"
    if not path.is_file():
        return 0
    from bus.imports.residents import ResidentIndex

    index = ResidentIndex(path)
    try:
        count = index.count(tenant)
        if count:
            index.put(tenant, [], True)  # a rebuild with nobody: the tenant's rows go
        return count
    finally:
        index.close()


def _remove_import_files(data_dir: Path, tenant: str) -> int:
    """Remove the work files of the tenant's 登記済通知 imports (their rows and error lists)."""
    folder = data_dir / "imports"
    if not folder.is_dir():
        return 0
    removed = 0
    for path in sorted(folder.glob(f"*-{tenant}.sqlite*")):
        path.unlink(missing_ok=True)
        removed += path.suffix == ".sqlite"
    return removed
