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

from collections import deque
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from datetime import datetime
from functools import partial
from pathlib import Path

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey
from sqlalchemy import func, select
from sqlalchemy.orm import Session

from bus.store.audit import audited_tenants, utc, verify_range
from bus.store.checkpoints import (
    AnchorEntry,
    Statement,
    anchor_chains,
    read_anchor_chain,
    record_hash_at,
    signature_valid,
)
from bus.store.models import AuditCheckpoint, AuditHead, AuditRecord


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


#: Told (chain, seq reached, the chain's head seq) as a long walk goes on.
VerifyProgress = Callable[[str, int, int], None]


def verify_audit(
    session: Session,
    *,
    chains: list[str] | None = None,
    start: datetime | None = None,
    end: datetime | None = None,
    key: Ed25519PublicKey | None = None,
    anchor: Path | None = None,
    progress: VerifyProgress | None = None,
) -> list[ChainVerdict]:
    """Verify ``chains`` (default: every chain in the database or the anchor) over [start,
    end]. Without ``key`` the signatures are not checked (the hashes still are); the anchor
    needs a key (the caller refuses ``anchor`` without one).

    Each chain is read as a stream, whatever its length: its records once, its checkpoints
    (with the record each names, in one joined query) once, its anchor files one at a time,
    merged by seq with the checkpoints — a signature the database row and the anchor file
    share is verified once. Memory stays flat from a thousand records to millions.
    ``progress``: told the seq reached every :data:`bus.store.audit.PROGRESS_EVERY` records."""
    anchored = anchor_chains(anchor) if anchor is not None else []
    names = chains or sorted(set(audited_tenants(session)) | set(anchored))
    verdicts = []
    for chain in names:
        verdict = ChainVerdict(chain)
        told = None
        if progress is not None:
            head = session.scalar(select(AuditHead.seq).where(AuditHead.tenant == chain)) or 0
            told = partial(_tell, progress, chain, head)
        report = verify_range(session, chain, start, end, told)
        verdict.records = report.records
        if not report.ok and report.first_bad_seq is not None:
            verdict.breaks.append(Break(report.first_bad_seq, "RK-AUD001", report.reason or ""))
        files: Iterator[AnchorEntry] = iter(())
        if anchor is not None and key is not None and chain in anchored:
            files = (e for e in read_anchor_chain(anchor, chain) if _anchored_in(e, start, end))
        _check_signed(session, verdict, start, end, key, files)
        verdicts.append(verdict)
    return verdicts


def _tell(progress: VerifyProgress, chain: str, head: int, seq: int) -> None:
    progress(chain, seq, head)


def _in_range(at: datetime, start: datetime | None, end: datetime | None) -> bool:
    at = utc(at)
    return (start is None or at >= start) and (end is None or at <= end)


def _anchored_in(entry: AnchorEntry, start: datetime | None, end: datetime | None) -> bool:
    """Whether an anchor file is in the period checked, as its database row would be: after a
    signing key is replaced, each key verifies its own period (``--key old --to``, ``--key new
    --from``); an unreadable file is always checked."""
    if entry.statement is None:
        return True
    return _in_range(entry.statement.at, start, end)


@dataclass(frozen=True, slots=True)
class _Signed:
    """A checkpoint row, the hash the chain holds at its seq, whether its signature held."""

    statement: Statement
    signature: str
    held: str | None
    valid: bool | None  # None: not checked (no key)


def _checkpoint_rows(
    session: Session,
    verdict: ChainVerdict,
    start: datetime | None,
    end: datetime | None,
    key: Ed25519PublicKey | None,
) -> Iterator[_Signed]:
    """The chain's checkpoints in seq order, each checked (RK-AUD002) as it is read: one
    statement for all of them and the records they name."""
    rows = session.execute(
        select(
            AuditCheckpoint.seq,
            AuditCheckpoint.hash,
            AuditCheckpoint.at,
            AuditCheckpoint.signature,
            AuditRecord.hash,
        )
        .outerjoin(
            AuditRecord,
            (AuditRecord.tenant == AuditCheckpoint.chain)
            & (AuditRecord.seq == AuditCheckpoint.seq),
        )
        .where(AuditCheckpoint.chain == verdict.chain)
        .order_by(AuditCheckpoint.seq)
        .execution_options(yield_per=1000)
    )
    for seq, signed_hash, at, signature, joined in rows:
        held: str | None = joined  # None: no record at that seq (outer join)
        if (start or end) and not _in_range(at, start, end):
            continue
        verdict.checkpoints += 1
        statement = Statement(verdict.chain, seq, signed_hash, utc(at))
        valid = None if key is None else signature_valid(key, statement, signature)
        if valid is False:
            verdict.breaks.append(
                Break(seq, "RK-AUD002", "the checkpoint's signature does not verify")
            )
        elif held is None:
            reason = f"the record at the checkpoint's seq {seq} is missing (truncated or deleted)"
            verdict.breaks.append(Break(seq, "RK-AUD002", reason))
        elif held != signed_hash:
            verdict.breaks.append(
                Break(seq, "RK-AUD002", "the record differs from the signed hash")
            )
        yield _Signed(statement, signature, held, valid)


def _check_signed(
    session: Session,
    verdict: ChainVerdict,
    start: datetime | None,
    end: datetime | None,
    key: Ed25519PublicKey | None,
    files: Iterator[AnchorEntry],
) -> None:
    """Check the checkpoint rows and, merged with them by seq, the anchor files."""
    rows = _checkpoint_rows(session, verdict, start, end, key)
    pending: _Signed | None = next(rows, None)
    last: int | None = None
    for entry in files:
        verdict.anchored += 1
        statement = entry.statement
        if statement is None or statement.chain != verdict.chain:
            verdict.breaks.append(Break(0, "RK-AUD003", f"unreadable anchor file {entry.path}"))
            continue
        while pending is not None and pending.statement.seq < statement.seq:
            pending = next(rows, None)  # a row without its file: accepted (docs/audit.md)
        row = pending if pending is not None and pending.statement.seq == statement.seq else None
        verified = (  # the same statement and signature as the row, already verified
            row is not None
            and row.valid is True
            and row.signature == entry.signature
            and row.statement == statement
        )
        if not verified and (key is None or not signature_valid(key, statement, entry.signature)):
            reason = f"the signature of {entry.path.name} does not verify"
            verdict.breaks.append(Break(statement.seq, "RK-AUD003", reason))
            continue
        held: str | None
        stored: str | None
        if row is not None:
            held, stored = row.held, row.statement.hash
        else:  # no row at that seq (deleted?), or a file out of order: asked on its own
            held = record_hash_at(session, verdict.chain, statement.seq)
            stored = session.scalar(
                select(AuditCheckpoint.hash).where(
                    AuditCheckpoint.chain == verdict.chain, AuditCheckpoint.seq == statement.seq
                )
            )
        if held is None:
            if last is None:
                last = session.scalar(
                    select(func.max(AuditRecord.seq)).where(AuditRecord.tenant == verdict.chain)
                )
            if (last or 0) < statement.seq:
                reason = (
                    f"truncated: the anchor holds seq {statement.seq}, "
                    f"the chain ends at {last or 0}"
                )
                verdict.breaks.append(Break((last or 0) + 1, "RK-AUD003", reason))
                continue
        if held != statement.hash:
            reason = f"the record at seq {statement.seq} differs from the anchored hash"
            verdict.breaks.append(Break(statement.seq, "RK-AUD003", reason))
        elif stored != statement.hash:
            reason = f"the checkpoint at seq {statement.seq} is missing from the database"
            verdict.breaks.append(Break(statement.seq, "RK-AUD003", reason))
    deque(rows, maxlen=0)  # the rows after the last file are checked too
