"""API keys issued into the database (``renkei keys new/rotate/revoke``).

A key reads ``rk_<system>_<key id>.<secret>``: the key id is public and finds the one row to
check, so a request costs one primary-key read and (once per key and process) one scrypt.
The row is read on every request, so a revocation or an expiry holds at once in every worker.
Expiry is the store's clock (bus/store/clock.py), as everywhere else: on PostgreSQL the same
SELECT that reads the row reads ``clock_timestamp()`` (no extra round trip), so a hub host
whose clock is off neither accepts an expired key nor refuses a valid one; issuing and
rotating stamp ``created_at`` / ``expires_at`` on that clock too.
Rotation issues a new key and gives the old ones an expiry (the overlap), so a system can
switch without a window in which neither key works. Issuing, rotating and revoking are
recorded on the admin chain in the same transaction (key ids, never a key).
"""

from __future__ import annotations

import hashlib
import re
import secrets
import threading
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

from sqlalchemy import func, select, text
from sqlalchemy.orm import Session, sessionmaker

from bus.kdf import hash_secret, verify_secret
from bus.store.admin_audit import record_admin_action
from bus.store.audit import utc
from bus.store.clock import database_now
from bus.store.models import ApiKey

_KEY = re.compile(
    r"^rk_(?P<system>[a-z][a-z0-9_\-]{1,39})_(?P<key_id>[0-9a-f]{16})\.[A-Za-z0-9_\-]{43}$"
)
_VERIFIED_LIMIT = 4096  # remembered verified keys per process; bounded against floods


@dataclass(frozen=True, slots=True)
class IssuedKey:
    """A new key: ``key`` is shown once and never stored."""

    key: str
    key_id: str
    system: str
    expires_at: datetime | None


@dataclass(frozen=True, slots=True)
class KeyInfo:
    key_id: str
    system: str
    created_at: datetime
    created_by: str | None
    expires_at: datetime | None
    revoked_at: datetime | None

    def valid_at(self, now: datetime) -> bool:
        return self.revoked_at is None and (self.expires_at is None or self.expires_at > now)


def is_issued_key(key: str) -> bool:
    """Whether ``key`` has the shape of a database-issued key (else: a configured one)."""
    return _KEY.fullmatch(key) is not None


def _aware(moment: datetime | None) -> datetime | None:
    """SQLite returns naive datetimes for timezone-aware columns; they were stored as UTC."""
    if moment is None or moment.tzinfo is not None:
        return moment
    return moment.replace(tzinfo=UTC)


def _info(row: ApiKey) -> KeyInfo:
    created = _aware(row.created_at)
    assert created is not None
    return KeyInfo(
        row.key_id,
        row.system,
        created,
        row.created_by,
        _aware(row.expires_at),
        _aware(row.revoked_at),
    )


def _add_key(
    session: Session,
    system: str,
    actor: str | None,
    now: datetime,
    valid_for: timedelta | None,
) -> IssuedKey:
    key_id = secrets.token_hex(8)
    key = f"rk_{system}_{key_id}.{secrets.token_urlsafe(32)}"
    expires_at = now + valid_for if valid_for is not None else None
    session.add(
        ApiKey(
            key_id=key_id,
            system=system,
            key_hash=hash_secret(key),
            created_at=now,
            created_by=actor[:64] if actor else None,
            expires_at=expires_at,
            revoked_at=None,
        )
    )
    return IssuedKey(key, key_id, system, expires_at)


def _iso(moment: datetime | None) -> str | None:
    return moment.isoformat() if moment is not None else None


def issue_key(
    sessions: sessionmaker[Session],
    system: str,
    *,
    actor: str | None = None,
    valid_for: timedelta | None = None,
    now: datetime | None = None,
) -> IssuedKey:
    """A fresh key for ``system`` (its hash stored; ``key.issue`` on the admin chain, with
    the key id, never the key); ``valid_for`` bounds its life."""
    with sessions.begin() as session:
        now = now or database_now(session.connection())
        issued = _add_key(session, system, actor, now, valid_for)
        detail = {"system": system, "key_id": issued.key_id, "expires_at": _iso(issued.expires_at)}
        record_admin_action(session, actor, "key.issue", detail)
    return issued


def rotate_keys(
    sessions: sessionmaker[Session],
    system: str,
    *,
    overlap: timedelta,
    actor: str | None = None,
    now: datetime | None = None,
) -> tuple[IssuedKey, list[KeyInfo]]:
    """Issue a new key and let every key of ``system`` still valid now expire after
    ``overlap`` (earlier expiries are kept), in one transaction with its ``key.rotate``
    admin record; returns the new key and the old keys."""
    with sessions.begin() as session:
        _one_rotation_at_a_time(session, system)
        now = now or database_now(session.connection())
        deadline = now + overlap
        rows = session.scalars(
            select(ApiKey).where(ApiKey.system == system, ApiKey.revoked_at.is_(None))
        ).all()
        for row in rows:
            expires_at = _aware(row.expires_at)
            if expires_at is None or expires_at > deadline:
                row.expires_at = deadline
        old = [info for info in map(_info, rows) if info.valid_at(now)]
        issued = _add_key(session, system, actor, now, None)
        detail = {
            "system": system,
            "key_id": issued.key_id,
            "old_key_ids": [info.key_id for info in old],
            "old_expire_by": _iso(deadline),
        }
        record_admin_action(session, actor, "key.rotate", detail)
    return issued, old


def _one_rotation_at_a_time(session: Session, system: str) -> None:
    """PostgreSQL: rotations of one system take turns (a lock held until the commit). Two at
    once each read the keys before the other's new key was committed, so each left the
    other's new key valid for ever, missing from its ``key.rotate`` record. SQLite's write
    transaction already makes them take turns."""
    if session.get_bind().dialect.name == "postgresql":
        lock = text("SELECT pg_advisory_xact_lock(hashtext(:name))")
        session.execute(lock, {"name": f"renkei.keys.rotate:{system}"})


def revoke_key(
    sessions: sessionmaker[Session],
    key_id: str,
    *,
    actor: str | None = None,
    now: datetime | None = None,
) -> KeyInfo | None:
    """Revoke a key at once (``key.revoke`` on the admin chain; a key already revoked is
    left as it was, unrecorded); ``None`` when there is no such key."""
    with sessions.begin() as session:
        row = session.get(ApiKey, key_id)
        if row is None:
            return None
        if row.revoked_at is None:
            row.revoked_at = now or database_now(session.connection())
            detail = {"system": row.system, "key_id": row.key_id}
            record_admin_action(session, actor, "key.revoke", detail)
        return _info(row)


def list_keys(sessions: sessionmaker[Session], system: str | None = None) -> list[KeyInfo]:
    query = select(ApiKey).order_by(ApiKey.system, ApiKey.created_at)
    if system is not None:
        query = query.where(ApiKey.system == system)
    with sessions() as session:
        return [_info(row) for row in session.scalars(query)]


class ApiKeyRegistry:
    """The Authenticate stage's view of issued keys (shared by every request thread)."""

    def __init__(self, sessions: sessionmaker[Session]) -> None:
        self._sessions = sessions
        self._verified: set[str] = set()
        self._lock = threading.Lock()

    def system_for(self, key: str, now: datetime | None = None) -> str | None:
        """The system an issued, unexpired, unrevoked key belongs to, else ``None``."""
        match = _KEY.fullmatch(key)
        if match is None:
            return None
        with self._sessions() as session:
            row, clock = _row_and_clock(session, match["key_id"])
            info = _info(row) if row is not None else None
            stored = row.key_hash if row is not None else ""
        if info is None or clock is None or info.system != match["system"]:
            return None
        if not info.valid_at(now or clock):
            return None
        fingerprint = hashlib.sha256(f"{stored}\0{key}".encode()).hexdigest()
        if fingerprint not in self._verified:
            if not verify_secret(key, stored):
                return None
            with self._lock:
                if len(self._verified) < _VERIFIED_LIMIT:
                    self._verified.add(fingerprint)
        return info.system


def _row_and_clock(session: Session, key_id: str) -> tuple[ApiKey | None, datetime | None]:
    """The key's row and the store's time, in the one round trip a request already makes:
    PostgreSQL reads ``clock_timestamp()`` in the row's SELECT (:func:`database_now` would be
    a second statement); SQLite's clock is this machine's, read without the database."""
    if session.get_bind().dialect.name != "postgresql":
        return session.get(ApiKey, key_id), database_now(session.connection())
    found = session.execute(
        select(ApiKey, func.clock_timestamp()).where(ApiKey.key_id == key_id)
    ).first()
    return (None, None) if found is None else (found[0], utc(found[1]))
