"""Signed checkpoints of the audit chains (署名付きチェックポイント) and their anchor directory.

A hash chain shows that records were edited, deleted, inserted or reordered — unless whoever
changed them also recomputed every later hash. A checkpoint closes that gap: the statement
``{chain, seq, hash, at}`` signed with an Ed25519 key kept outside the database
(``RENKEI_AUDIT_SIGNING_KEY``). It is stored twice: in ``audit_checkpoints`` and as a file
``<anchor>/<chain>/<seq>.json`` in an append-only directory outside the database
(``RENKEI_AUDIT_ANCHOR_DIR``; a WORM share, ``chattr +a``, or a different host), created
exclusively and never rewritten. A chain cut back past a checkpoint, with the checkpoint rows
deleted too, still contradicts the anchor files.
"""

from __future__ import annotations

import hashlib
import json
import os
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey
from sqlalchemy import func, select
from sqlalchemy.orm import Session

from bus.store.audit import utc
from bus.store.models import AuditCheckpoint, AuditHead, AuditRecord

_CANONICAL = json.JSONEncoder(sort_keys=True, separators=(",", ":"), ensure_ascii=True)
_RAW = serialization.PublicFormat.Raw
_RAW_ENCODING = serialization.Encoding.Raw


class CheckpointError(ValueError):
    """A key or anchor problem (the key cannot be read, an anchor file already exists…)."""


# --- keys -----------------------------------------------------------------------------------


def generate_key(path: Path) -> Path:
    """Write a new Ed25519 private key to ``path`` (PEM, mode 0600, never overwriting) and its
    public key next to it (``<path>.pub``); returns the public key's path."""
    key = Ed25519PrivateKey.generate()
    private = key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    )
    public_path = path.with_name(path.name + ".pub")
    path.parent.mkdir(parents=True, exist_ok=True)
    try:
        descriptor = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    except FileExistsError:
        raise CheckpointError(
            f"{path} already exists: a signing key is never overwritten"
        ) from None
    with os.fdopen(descriptor, "wb") as handle:
        handle.write(private)
    public_path.write_bytes(
        key.public_key().public_bytes(
            serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
        )
    )
    return public_path


def load_signing_key(path: Path) -> Ed25519PrivateKey:
    try:
        key = serialization.load_pem_private_key(path.read_bytes(), password=None)
    except (OSError, ValueError, TypeError) as error:
        raise CheckpointError(f"{path}: not a readable private key ({error})") from None
    if not isinstance(key, Ed25519PrivateKey):
        raise CheckpointError(f"{path}: not an Ed25519 key")
    return key


def load_verify_key(path: Path) -> Ed25519PublicKey:
    """The public key from ``path``: a public key PEM, or the private key itself."""
    data = _read(path)
    if b"PRIVATE KEY" in data:
        return load_signing_key(path).public_key()
    try:
        key = serialization.load_pem_public_key(data)
    except ValueError as error:
        raise CheckpointError(f"{path}: not a public key ({error})") from None
    if not isinstance(key, Ed25519PublicKey):
        raise CheckpointError(f"{path}: not an Ed25519 key")
    return key


def _read(path: Path) -> bytes:
    try:
        return path.read_bytes()
    except OSError as error:
        raise CheckpointError(f"{path}: {error.strerror}") from None


def key_id(key: Ed25519PublicKey) -> str:
    """The first 16 hex digits of the SHA-256 of the raw public key."""
    return hashlib.sha256(key.public_bytes(_RAW_ENCODING, _RAW)).hexdigest()[:16]


# --- statements -----------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Statement:
    """What a checkpoint asserts: chain ``chain`` had reached ``seq`` with ``hash`` at ``at``."""

    chain: str
    seq: int
    hash: str
    at: datetime

    def payload(self) -> bytes:
        at = utc(self.at).strftime("%Y-%m-%dT%H:%M:%S.%fZ")
        fields = {"chain": self.chain, "seq": self.seq, "hash": self.hash, "at": at}
        return _CANONICAL.encode(fields).encode("ascii")


def sign(key: Ed25519PrivateKey, statement: Statement) -> str:
    return key.sign(statement.payload()).hex()


def signature_valid(key: Ed25519PublicKey, statement: Statement, signature: str) -> bool:
    try:
        key.verify(bytes.fromhex(signature), statement.payload())
    except (InvalidSignature, ValueError):
        return False
    return True


# --- writing --------------------------------------------------------------------------------


def write_checkpoints(
    session: Session, key: Ed25519PrivateKey, *, now: datetime | None = None
) -> list[AuditCheckpoint]:
    """Sign the head of every chain that moved since its last checkpoint, inside the caller's
    transaction; the rows added (write them to the anchor after the commit)."""
    moment = now or datetime.now(UTC)
    latest = dict(
        session.execute(
            select(AuditCheckpoint.chain, func.max(AuditCheckpoint.seq)).group_by(
                AuditCheckpoint.chain
            )
        ).all()
    )
    identity = key_id(key.public_key())
    added = []
    for head in session.scalars(select(AuditHead).order_by(AuditHead.tenant)):
        if head.seq == 0 or latest.get(head.tenant, 0) >= head.seq:
            continue
        statement = Statement(head.tenant, head.seq, head.hash, moment)
        checkpoint = AuditCheckpoint(
            chain=head.tenant,
            seq=head.seq,
            hash=head.hash,
            at=moment,
            key_id=identity,
            signature=sign(key, statement),
        )
        session.add(checkpoint)
        added.append(checkpoint)
    session.flush()
    return added


def anchor_path(directory: Path, chain: str, seq: int) -> Path:
    return directory / chain / f"{seq:015d}.json"


def anchor_document(checkpoint: AuditCheckpoint) -> dict[str, Any]:
    statement = statement_of(checkpoint)
    return {
        **json.loads(statement.payload()),
        "key_id": checkpoint.key_id,
        "signature": checkpoint.signature,
    }


def write_anchor(directory: Path, document: dict[str, Any]) -> Path:
    """One new file per checkpoint (its :func:`anchor_document`), created exclusively, synced
    and made read-only; raises :class:`CheckpointError` when it exists (an anchor is never
    rewritten)."""
    path = anchor_path(directory, str(document["chain"]), int(document["seq"]))
    path.parent.mkdir(parents=True, exist_ok=True)
    data = json.dumps(document, sort_keys=True).encode("ascii") + b"\n"
    try:
        descriptor = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o444)
    except FileExistsError:
        raise CheckpointError(f"{path} exists: anchor files are never rewritten") from None
    with os.fdopen(descriptor, "wb") as handle:
        handle.write(data)
        handle.flush()
        os.fsync(handle.fileno())
    return path


def statement_of(checkpoint: AuditCheckpoint) -> Statement:
    return Statement(checkpoint.chain, checkpoint.seq, checkpoint.hash, checkpoint.at)


@dataclass(frozen=True, slots=True)
class AnchorEntry:
    path: Path
    statement: Statement | None  # None: the file is not a readable anchor document
    key_id: str
    signature: str


def read_anchor(directory: Path) -> Iterator[AnchorEntry]:
    """Every anchor file under ``directory`` (chains sorted, then seq)."""
    for chain in anchor_chains(directory):
        yield from read_anchor_chain(directory, chain)


def anchor_chains(directory: Path) -> list[str]:
    """The chains that have a folder of anchor files under ``directory``."""
    if not directory.is_dir():
        return []
    return sorted(path.name for path in directory.iterdir() if path.is_dir())


def read_anchor_chain(directory: Path, chain: str) -> Iterator[AnchorEntry]:
    """The anchor files of ``chain`` in file-name (so seq) order, each read when reached: five
    years of checkpoints every few minutes are hundreds of thousands of files, never all held
    at once."""
    folder = directory / chain
    for name in sorted(n for n in os.listdir(folder) if n.endswith(".json")):
        yield _anchor_entry(folder / name)


def _anchor_entry(path: Path) -> AnchorEntry:
    try:
        document = json.loads(path.read_text(encoding="ascii"))
        at = datetime.strptime(document["at"], "%Y-%m-%dT%H:%M:%S.%fZ").replace(tzinfo=UTC)
        statement = Statement(
            str(document["chain"]), int(document["seq"]), str(document["hash"]), at
        )
        return AnchorEntry(path, statement, str(document["key_id"]), str(document["signature"]))
    except (OSError, ValueError, KeyError, TypeError):
        return AnchorEntry(path, None, "", "")


def record_hash_at(session: Session, chain: str, seq: int) -> str | None:
    return session.scalar(
        select(AuditRecord.hash).where(AuditRecord.tenant == chain, AuditRecord.seq == seq)
    )
