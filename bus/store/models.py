"""The Message Store's tables (SQLAlchemy 2). Alembic migrations in ``bus/migrations`` follow
these models; there is exactly one migration head.

The database is the queue (DESIGN §6): a delivery is a row, claimed by a worker with a lease;
a broker only carries wake-ups.
"""

from __future__ import annotations

from datetime import datetime
from enum import StrEnum
from typing import Any, ClassVar

from sqlalchemy import (
    JSON,
    BigInteger,
    Boolean,
    DateTime,
    ForeignKey,
    Index,
    Integer,
    LargeBinary,
    MetaData,
    String,
    Text,
    UniqueConstraint,
    text,
)
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column, relationship

NAMING = {
    "ix": "ix_%(column_0_label)s",
    "uq": "uq_%(table_name)s_%(column_0_name)s",
    "ck": "ck_%(table_name)s_%(constraint_name)s",
    "fk": "fk_%(table_name)s_%(column_0_name)s_%(referred_table_name)s",
    "pk": "pk_%(table_name)s",
}

# Integer primary keys that autoincrement on SQLite (INTEGER) and PostgreSQL (BIGINT).
Id = BigInteger().with_variant(Integer(), "sqlite")


class Base(DeclarativeBase):
    metadata = MetaData(naming_convention=NAMING)
    type_annotation_map: ClassVar[dict[Any, Any]] = {
        datetime: DateTime(timezone=True),
        dict[str, Any]: JSON,
    }


class MessageKind(StrEnum):
    NOTIFICATION = "notification"  # 通知: fans out to subscribers
    INQUIRY = "inquiry"  # 照会: request-reply with one provider
    REPLY = "reply"  # the provider's answer (its own messageId; correlationId = request's)


class DeliveryState(StrEnum):
    PENDING = "pending"  # waiting (possibly leased by a worker, see lease_expires_at)
    DELIVERED = "delivered"
    DEAD = "dead"  # in the Dead Letter Channel: holds its subject until redelivered/discarded
    DISCARDED = "discarded"  # an operator gave up on it (with a reason)


class StoredMessage(Base):
    """A message accepted by the pipeline; its body is the canonical PlatformMessage."""

    __tablename__ = "messages"
    __table_args__ = (
        # The messageId first (migration 0007): the same index finds a message by its id and
        # tenant, without the sending system (the API, the console, ``renkei messages``).
        UniqueConstraint("message_id", "tenant", "system"),
        # PULL feeds read one (tenant, service) stream in primary-key order (bus/feeds/).
        Index("ix_messages_feed", "tenant", "service", "id"),
        # A resident's messages (search by subject, ``renkei messages trail``; migration 0011).
        Index("ix_messages_subject", "tenant", "subject"),
        Index(
            "ix_messages_relates_to",
            "relates_to",
            sqlite_where=text("relates_to IS NOT NULL"),
            postgresql_where=text("relates_to IS NOT NULL"),
        ),
        # A purged key is never handed out again (a feed cursor would skip the new message):
        # AUTOINCREMENT on SQLite (migration 0005); PostgreSQL's sequence never reuses one.
        {"sqlite_autoincrement": True},
    )

    id: Mapped[int] = mapped_column(Id, primary_key=True, autoincrement=True)
    message_id: Mapped[str] = mapped_column(String(36))
    # Not indexed alone: searches on the tenant use ix_messages_feed, which starts with it.
    tenant: Mapped[str] = mapped_column(String(6))
    system: Mapped[str] = mapped_column(String(40))
    service: Mapped[str] = mapped_column(String(64), index=True)
    kind: Mapped[str] = mapped_column(String(16))
    subject: Mapped[str | None] = mapped_column(String(64))
    correlation_id: Mapped[str | None] = mapped_column(String(36), index=True)
    relates_to: Mapped[str | None] = mapped_column(String(36))
    body: Mapped[bytes] = mapped_column(LargeBinary)
    body_digest: Mapped[str] = mapped_column(String(64))
    received_at: Mapped[datetime] = mapped_column(index=True)
    expires_at: Mapped[datetime | None] = mapped_column(index=True)

    deliveries: Mapped[list[Delivery]] = relationship(back_populates="message")


class Delivery(Base):
    """One destination's copy of a message (Guaranteed Delivery, ordered per subject)."""

    __tablename__ = "deliveries"
    __table_args__ = (
        UniqueConstraint("tenant", "destination", "subject_key", "sequence"),
        Index("ix_deliveries_claim", "state", "next_attempt_at"),
    )

    id: Mapped[int] = mapped_column(Id, primary_key=True, autoincrement=True)
    # Indexed: a message's deliveries are read by it (status, console, purge, the cascade).
    message_pk: Mapped[int] = mapped_column(
        ForeignKey("messages.id", ondelete="CASCADE"), index=True
    )
    destination: Mapped[str] = mapped_column(String(40))
    tenant: Mapped[str] = mapped_column(String(6))
    # The ordering key: the Header's subject, or "" when a message has none.
    subject_key: Mapped[str] = mapped_column(String(64))
    sequence: Mapped[int] = mapped_column(BigInteger)
    # A 訂正 keyed on its own new subject (migration 0010): its original's delivery to this
    # destination, which must be neither pending nor dead before this one is sent. Null for
    # every other delivery. No foreign key: the original is purged only once resolved, and a
    # missing row blocks nothing (ids are never reused while this row exists).
    waits_for: Mapped[int | None] = mapped_column(BigInteger)
    state: Mapped[str] = mapped_column(String(16), default=DeliveryState.PENDING)
    attempts: Mapped[int] = mapped_column(Integer, default=0)
    next_attempt_at: Mapped[datetime]
    first_attempt_at: Mapped[datetime | None]
    lease_owner: Mapped[str | None] = mapped_column(String(64))
    lease_expires_at: Mapped[datetime | None]
    last_error: Mapped[str | None] = mapped_column(Text)
    created_at: Mapped[datetime]
    finished_at: Mapped[datetime | None]

    message: Mapped[StoredMessage] = relationship(back_populates="deliveries")
    attempts_log: Mapped[list[DeliveryAttempt]] = relationship(
        back_populates="delivery", cascade="all, delete-orphan"
    )


class DeliveryAttempt(Base):
    """The error history a dead letter carries."""

    __tablename__ = "delivery_attempts"

    id: Mapped[int] = mapped_column(Id, primary_key=True, autoincrement=True)
    delivery_id: Mapped[int] = mapped_column(
        ForeignKey("deliveries.id", ondelete="CASCADE"), index=True
    )
    attempt: Mapped[int] = mapped_column(Integer)
    at: Mapped[datetime]
    outcome: Mapped[str] = mapped_column(String(16))  # delivered | retry | permanent
    error: Mapped[str | None] = mapped_column(Text)

    delivery: Mapped[Delivery] = relationship(back_populates="attempts_log")


class SubjectSequence(Base):
    """The last sequence number given out per (tenant, destination, subject)."""

    __tablename__ = "subject_sequences"

    tenant: Mapped[str] = mapped_column(String(6), primary_key=True)
    destination: Mapped[str] = mapped_column(String(40), primary_key=True)
    subject_key: Mapped[str] = mapped_column(String(64), primary_key=True)
    last_sequence: Mapped[int] = mapped_column(BigInteger)


class IdempotencyKey(Base):
    """Idempotent Receiver: (tenant, sending system, messageId) → the content seen first."""

    __tablename__ = "idempotency_keys"

    tenant: Mapped[str] = mapped_column(String(6), primary_key=True)
    system: Mapped[str] = mapped_column(String(40), primary_key=True)
    message_id: Mapped[str] = mapped_column(String(36), primary_key=True)
    content_digest: Mapped[str] = mapped_column(String(64))
    message_pk: Mapped[int] = mapped_column(
        ForeignKey("messages.id", ondelete="SET NULL"), nullable=True, index=True
    )
    created_at: Mapped[datetime]


class AuditRecord(Base):
    """One link of a tenant's tamper-evident chain: ``hash`` covers ``prev_hash`` and the
    record's fields. Holds digests and ids, never bodies or personal data."""

    __tablename__ = "audit_records"
    __table_args__ = (UniqueConstraint("tenant", "seq"),)

    id: Mapped[int] = mapped_column(Id, primary_key=True, autoincrement=True)
    tenant: Mapped[str] = mapped_column(String(6))
    seq: Mapped[int] = mapped_column(BigInteger)
    at: Mapped[datetime]
    event: Mapped[str] = mapped_column(String(32))
    message_id: Mapped[str | None] = mapped_column(String(36), index=True)
    actor: Mapped[str | None] = mapped_column(String(64))
    detail: Mapped[dict[str, Any]] = mapped_column(default=dict)
    prev_hash: Mapped[str] = mapped_column(String(64))
    hash: Mapped[str] = mapped_column(String(64))


class AuditHead(Base):
    """The latest link per tenant, locked while appending so chains never fork."""

    __tablename__ = "audit_heads"

    tenant: Mapped[str] = mapped_column(String(6), primary_key=True)
    seq: Mapped[int] = mapped_column(BigInteger)
    hash: Mapped[str] = mapped_column(String(64))


class AuditCheckpoint(Base):
    """A signed statement "chain ``chain`` had reached ``seq`` with ``hash`` at ``at``"
    (Ed25519, bus.store.checkpoints); the same statement is also a file in the anchor
    directory outside the database."""

    __tablename__ = "audit_checkpoints"
    __table_args__ = (UniqueConstraint("chain", "seq"),)

    id: Mapped[int] = mapped_column(Id, primary_key=True, autoincrement=True)
    chain: Mapped[str] = mapped_column(String(6))
    seq: Mapped[int] = mapped_column(BigInteger)
    hash: Mapped[str] = mapped_column(String(64))
    at: Mapped[datetime]
    key_id: Mapped[str] = mapped_column(String(16))
    signature: Mapped[str] = mapped_column(String(128))


class ConfigSnapshot(Base):
    """A versioned copy of the configuration directory; processes reload on a new version."""

    __tablename__ = "config_snapshots"

    version: Mapped[int] = mapped_column(Integer, primary_key=True)
    applied_at: Mapped[datetime]
    applied_by: Mapped[str | None] = mapped_column(String(64))
    digest: Mapped[str] = mapped_column(String(64))
    files: Mapped[dict[str, Any]] = mapped_column()  # {relative path: YAML text}


class DestinationState(Base):
    """Operational state of a destination system: paused by an operator (planned downtime;
    ``reason``, ``changed_at`` and ``changed_by`` are the operator's), or held by dispatch
    until the time it asked for with ``Retry-After`` (``held_until``, ``held_reason``)."""

    __tablename__ = "destination_states"

    system: Mapped[str] = mapped_column(String(40), primary_key=True)
    paused: Mapped[bool] = mapped_column(Boolean, default=False)
    reason: Mapped[str | None] = mapped_column(Text)
    changed_at: Mapped[datetime]
    changed_by: Mapped[str | None] = mapped_column(String(64))
    held_until: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
    held_reason: Mapped[str | None] = mapped_column(Text)


class FeedMark(Base):
    """How far retention has purged a (tenant, service) feed: the highest primary key of a
    purged message. A cursor before it has lost messages (RK-FED003, HTTP 410)."""

    __tablename__ = "feed_marks"

    tenant: Mapped[str] = mapped_column(String(6), primary_key=True)
    service: Mapped[str] = mapped_column(String(64), primary_key=True)
    purged_through: Mapped[int] = mapped_column(BigInteger)


# --- identities (bus/security/): operational state shared by every hub process ------------------


class ApiKey(Base):
    """An API key issued to a connected system (``renkei keys new``): only its scrypt hash is
    kept. ``expires_at`` bounds a rotated-out key's overlap; ``revoked_at`` ends it now."""

    __tablename__ = "api_keys"

    key_id: Mapped[str] = mapped_column(String(16), primary_key=True)  # public, in the key
    system: Mapped[str] = mapped_column(String(40), index=True)
    key_hash: Mapped[str] = mapped_column(String(160))
    created_at: Mapped[datetime]
    created_by: Mapped[str | None] = mapped_column(String(64))
    expires_at: Mapped[datetime | None]
    revoked_at: Mapped[datetime | None]


class OperatorAccount(Base):
    """A person operating the hub (CLI, web console): role and the tenants they act for
    (``["*"]``: every tenant). Passwords are scrypt hashes."""

    __tablename__ = "operator_accounts"

    username: Mapped[str] = mapped_column(String(64), primary_key=True)
    password_hash: Mapped[str] = mapped_column(String(160))
    role: Mapped[str] = mapped_column(String(16))
    tenants: Mapped[list[str]] = mapped_column(JSON)
    enabled: Mapped[bool] = mapped_column(Boolean, default=True)
    created_at: Mapped[datetime]
    password_changed_at: Mapped[datetime]


class SoapCredential(Base):
    """A system's WS-Security UsernameToken secret, encrypted (AES-256-GCM, the system id as
    associated data): a PasswordDigest check needs the secret itself, so it cannot be hashed.
    After ``renkei keys soap --overlap-hours N`` the previous secret, sealed the same way, is
    accepted too until ``previous_expires_at`` (migration 0008)."""

    __tablename__ = "soap_credentials"

    system: Mapped[str] = mapped_column(String(40), primary_key=True)
    username: Mapped[str] = mapped_column(String(64), unique=True)
    secret_encrypted: Mapped[bytes] = mapped_column(LargeBinary)
    changed_at: Mapped[datetime]
    previous_secret_encrypted: Mapped[bytes | None] = mapped_column(LargeBinary, nullable=True)
    previous_expires_at: Mapped[datetime | None] = mapped_column(nullable=True)


class UsedNonce(Base):
    """WS-Security nonces seen within the freshness window (replay cache for all workers)."""

    __tablename__ = "used_nonces"

    username: Mapped[str] = mapped_column(String(64), primary_key=True)
    nonce: Mapped[str] = mapped_column(String(128), primary_key=True)
    expires_at: Mapped[datetime] = mapped_column(index=True)


class RateWindow(Base):
    """Requests counted per system in one fixed window (``unit``: s or m), in the database so
    every hub process counts against the same limit."""

    __tablename__ = "rate_windows"

    system: Mapped[str] = mapped_column(String(40), primary_key=True)
    unit: Mapped[str] = mapped_column(String(1), primary_key=True)
    window_start: Mapped[int] = mapped_column(BigInteger, primary_key=True)
    count: Mapped[int] = mapped_column(Integer)
