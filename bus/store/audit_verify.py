"""``renkei audit verify``: every chain, its signed checkpoints and the anchor directory.

Three layers, each reporting the first seq where it breaks (the verdict keeps the lowest):

1. the hash chain (:func:`bus.store.audit.verify_range`): an edited, deleted, inserted or
   reordered record (RK-AUD001);
2. the checkpoints in the database: each signature must verify with the public key and name
   the hash the chain holds at that seq — a chain rewritten with recomputed hashes fails
   here (RK-AUD002);
3. the anchor directory (``--anchor``): each file must verify, have its row in the database
   and its record in the chain — a chain cut back past a checkpoint (rows deleted with it)
   fails here (RK-AUD003).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey
from sqlalchemy import func, select
from sqlalchemy.orm import Session

from bus.store.audit import audited_tenants, utc, verify_range
from bus.store.checkpoints import (
    AnchorEntry,
    read_anchor,
    record_hash_at,
    signature_valid,
    statement_of,
)
from bus.store.models import AuditCheckpoint, AuditRecord


@dataclass(frozen=True, slots=True, order=True)
class Break:
    seq: int
    code: str  # RK-AUD001 chain, RK-AUD002 checkpoint, RK-AUD003 anchor
    reason: str


@dataclass(slots=True)
class ChainVerdict:
    chain: str
    records: int = 0
    checkpoints: int = 0
    anchored: int = 0
    breaks: list[Break] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return not self.breaks

    @property
    def first_break(self) -> Break | None:
        return min(self.breaks) if self.breaks else None


def verify_audit(
    session: Session,
    *,
    chains: list[str] | None = None,
    start: datetime | None = None,
    end: datetime | None = None,
    key: Ed25519PublicKey | None = None,
    anchor: Path | None = None,
) -> list[ChainVerdict]:
    """Verify ``chains`` (default: every chain in the database or the anchor) over [start,
    end]. Without ``key`` the signatures are not checked (the hashes still are); the anchor
    needs a key (the caller refuses ``anchor`` without one)."""
    entries = list(read_anchor(anchor)) if anchor is not None else []
    names = chains or sorted(set(audited_tenants(session)) | {e.path.parent.name for e in entries})
    verdicts = []
    for chain in names:
        verdict = ChainVerdict(chain)
        report = verify_range(session, chain, start, end)
        verdict.records = report.records
        if not report.ok and report.first_bad_seq is not None:
            verdict.breaks.append(Break(report.first_bad_seq, "RK-AUD001", report.reason or ""))
        _check_checkpoints(session, verdict, start, end, key)
        mine = [e for e in entries if e.path.parent.name == chain]
        if key is not None:
            _check_anchor(session, verdict, [e for e in mine if _anchored_in(e, start, end)], key)
        verdicts.append(verdict)
    return verdicts


def _in_range(checkpoint: AuditCheckpoint, start: datetime | None, end: datetime | None) -> bool:
    at = utc(checkpoint.at)
    return (start is None or at >= start) and (end is None or at <= end)


def _anchored_in(entry: AnchorEntry, start: datetime | None, end: datetime | None) -> bool:
    """Whether an anchor file is in the period checked, as its database row would be: after a
    signing key is replaced, each key verifies its own period (``--key old --to``, ``--key new
    --from``); an unreadable file is always checked."""
    if entry.statement is None:
        return True
    at = utc(entry.statement.at)
    return (start is None or at >= start) and (end is None or at <= end)


def _check_checkpoints(
    session: Session,
    verdict: ChainVerdict,
    start: datetime | None,
    end: datetime | None,
    key: Ed25519PublicKey | None,
) -> None:
    checkpoints = session.scalars(
        select(AuditCheckpoint)
        .where(AuditCheckpoint.chain == verdict.chain)
        .order_by(AuditCheckpoint.seq)
    )
    for checkpoint in checkpoints:
        if (start or end) and not _in_range(checkpoint, start, end):
            continue
        verdict.checkpoints += 1
        statement = statement_of(checkpoint)
        if key is not None and not signature_valid(key, statement, checkpoint.signature):
            verdict.breaks.append(
                Break(checkpoint.seq, "RK-AUD002", "the checkpoint's signature does not verify")
            )
        elif record_hash_at(session, verdict.chain, checkpoint.seq) != checkpoint.hash:
            verdict.breaks.append(
                Break(checkpoint.seq, "RK-AUD002", "the record differs from the signed hash")
            )


def _check_anchor(
    session: Session, verdict: ChainVerdict, entries: list[AnchorEntry], key: Ed25519PublicKey
) -> None:
    last = session.scalar(
        select(func.max(AuditRecord.seq)).where(AuditRecord.tenant == verdict.chain)
    )
    for entry in entries:
        verdict.anchored += 1
        statement = entry.statement
        if statement is None or statement.chain != verdict.chain:
            verdict.breaks.append(Break(0, "RK-AUD003", f"unreadable anchor file {entry.path}"))
            continue
        if not signature_valid(key, statement, entry.signature):
            reason = f"the signature of {entry.path.name} does not verify"
            verdict.breaks.append(Break(statement.seq, "RK-AUD003", reason))
            continue
        stored = session.scalar(
            select(AuditCheckpoint.hash).where(
                AuditCheckpoint.chain == verdict.chain, AuditCheckpoint.seq == statement.seq
            )
        )
        held = record_hash_at(session, verdict.chain, statement.seq)
        if held is None and (last or 0) < statement.seq:
            reason = (
                f"truncated: the anchor holds seq {statement.seq}, the chain ends at {last or 0}"
            )
            verdict.breaks.append(Break((last or 0) + 1, "RK-AUD003", reason))
        elif held != statement.hash:
            reason = f"the record at seq {statement.seq} differs from the anchored hash"
            verdict.breaks.append(Break(statement.seq, "RK-AUD003", reason))
        elif stored != statement.hash:
            reason = f"the checkpoint at seq {statement.seq} is missing from the database"
            verdict.breaks.append(Break(statement.seq, "RK-AUD003", reason))
