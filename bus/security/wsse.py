"""WS-Security UsernameToken with PasswordDigest (OASIS UsernameToken Profile 1.1) for SOAP
callers: ``digest = Base64(SHA-1(nonce + created + password))``.

A token is fresh only when its ``Created`` is within :data:`MAX_SKEW` of the hub's clock and
its nonce has not been seen for that user within the window; the nonce cache is a database
table (``used_nonces``), so a token replayed to another hub worker is refused too. The
password is stored encrypted (:mod:`bus.security.secret_box`): the digest needs it in clear.
After ``renkei keys soap --overlap-hours N`` the previous password, sealed the same way, is
accepted too until its expiry; the nonce cache is keyed by the stored username, so a token
replayed is refused whichever password it used.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import logging
import secrets
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

from sqlalchemy import delete, select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session, sessionmaker

from bus.errors import make_finding
from bus.pipeline import Finding, UsernameToken
from bus.security.secret_box import SecretBox, SecretKeyError
from bus.store.admin_audit import record_admin_action
from bus.store.audit import utc
from bus.store.models import SoapCredential, UsedNonce

PASSWORD_DIGEST = (
    "http://docs.oasis-open.org/wss/2004/01/oasis-200401-wss-username-token-profile-1.0"
    "#PasswordDigest"
)
MAX_SKEW = timedelta(minutes=5)
_NONCE_BYTES = (16, 64)  # accepted decoded nonce lengths
_PURGE_EVERY = 64  # delete expired nonces once per this many accepted tokens (per process)
TOKEN_PATH = "/Envelope/Header/Security/UsernameToken"

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class SoapCredentialInfo:
    """A system's UsernameToken credential as ``renkei keys list`` shows it (never a secret):
    ``previous_until`` is when its previous password stops working (None: there is none)."""

    system: str
    username: str
    changed_at: datetime
    previous_until: datetime | None

    def previous_valid_at(self, now: datetime) -> bool:
        return self.previous_until is not None and self.previous_until > now


def previous_secret(row: SoapCredential, now: datetime) -> bytes | None:
    """The row's previous sealed secret while its overlap lasts (None: none, or expired)."""
    until, sealed = row.previous_expires_at, row.previous_secret_encrypted
    if sealed is None or until is None or utc(until) <= now:
        return None
    return bytes(sealed)


def set_soap_secret(
    sessions: sessionmaker[Session],
    box: SecretBox,
    system: str,
    username: str | None = None,
    *,
    actor: str | None = None,
    overlap: timedelta = timedelta(0),
) -> tuple[str, str]:
    """Give ``system`` a fresh random UsernameToken password (``key.soap`` on the admin chain,
    without the password); returns (username, password) — the password is shown once, stored
    only encrypted. With an ``overlap`` the password replaced stays valid until now + overlap
    (any older one is dropped); without one (the default) it stops working at once. A
    replaced password that the key in force cannot open (a key lost for good) is dropped
    too: it could never be checked."""
    username = username or system
    password = secrets.token_urlsafe(24)
    now = datetime.now(UTC)
    detail: dict[str, str] = {"system": system, "username": username}
    with sessions.begin() as session:
        row = session.get(SoapCredential, system)
        sealed = box.seal(password, system)
        if row is None:
            session.add(
                SoapCredential(
                    system=system, username=username, secret_encrypted=sealed, changed_at=now
                )
            )
        else:
            previous = bytes(row.secret_encrypted)
            keep = overlap > timedelta(0) and _opens(box, previous, system)
            row.previous_secret_encrypted = previous if keep else None
            row.previous_expires_at = now + overlap if keep else None
            if keep:
                detail["previous_until"] = (now + overlap).isoformat(timespec="seconds")
            row.username, row.secret_encrypted = username, sealed
            row.changed_at = now
        record_admin_action(session, actor, "key.soap", detail)
    return username, password


def _opens(box: SecretBox, sealed: bytes, system: str) -> bool:
    try:
        box.open(sealed, system)
    except SecretKeyError:
        return False
    return True


def list_soap_credentials(
    sessions: sessionmaker[Session], system: str | None = None
) -> list[SoapCredentialInfo]:
    query = select(SoapCredential).order_by(SoapCredential.system)
    if system is not None:
        query = query.where(SoapCredential.system == system)
    with sessions() as session:
        return [
            SoapCredentialInfo(
                row.system,
                row.username,
                utc(row.changed_at),
                None if row.previous_expires_at is None else utc(row.previous_expires_at),
            )
            for row in session.scalars(query)
        ]


def password_digest(nonce: bytes, created: str, password: str) -> str:
    raw = hashlib.sha1(nonce + created.encode("utf-8") + password.encode("utf-8")).digest()
    return base64.b64encode(raw).decode("ascii")


def _parse_created(text: str) -> datetime | None:
    try:
        moment = datetime.fromisoformat(text.strip().replace("Z", "+00:00"))
    except ValueError:
        return None
    return moment if moment.tzinfo is not None else None  # a zone is required


class UsernameTokenVerifier:
    """Checks tokens against the stored secrets and the shared nonce cache."""

    def __init__(self, sessions: sessionmaker[Session], box: Callable[[], SecretBox]) -> None:
        self._sessions = sessions
        self._box = box  # opened on first use: no key file is made for a hub without tokens
        self._accepted = 0
        self._key_failing = False  # logged once until a secret opens again

    def verify(self, token: UsernameToken, now: datetime | None = None) -> str | Finding:
        """The system the token authenticates, or the refusal."""
        now = now or datetime.now(UTC)
        try:
            nonce = base64.b64decode(token.nonce, validate=True)
        except (binascii.Error, ValueError):
            nonce = b""
        created = _parse_created(token.created)
        if token.password_type != PASSWORD_DIGEST or created is None:
            return make_finding("RK-AUT006", path=TOKEN_PATH)
        if not _NONCE_BYTES[0] <= len(nonce) <= _NONCE_BYTES[1]:
            return make_finding("RK-AUT006", path=f"{TOKEN_PATH}/Nonce")
        if abs(now - created) > MAX_SKEW:
            return make_finding(
                "RK-AUT008", path=f"{TOKEN_PATH}/Created", actual=token.created[:40]
            )
        try:
            checked = self._check_digest(token, nonce, now)
        except SecretKeyError as error:
            return self._key_refusal(error)
        self._key_failing = False
        if checked is None:
            return make_finding("RK-AUT007", path=TOKEN_PATH)
        system, username = checked
        # the nonce's bytes, not its text: Base64 has several spellings of the same bytes
        # (unused bits of the last digit), each giving the same digest
        seen = base64.b64encode(nonce).decode("ascii")
        if not self._first_use(username, seen, created + 2 * MAX_SKEW, now):
            return make_finding("RK-AUT009", path=f"{TOKEN_PATH}/Nonce")
        return system

    def _key_refusal(self, error: SecretKeyError) -> Finding:
        """RK-AUT014 (the hub's fault: 503, a Server fault) for a stored secret that the
        running hub's key does not open; the cause, RK-OPS005, goes to the log once, never to
        the caller."""
        if not self._key_failing:
            self._key_failing = True
            log.warning(
                "RK-OPS005 the stored WS-Security secrets cannot be decrypted (%s): "
                "UsernameToken callers are refused with RK-AUT014 (503); restore secrets.key "
                "from the backup or set RENKEI_SECRETS_KEY, then restart",
                error,
            )
        return make_finding("RK-AUT014", path=TOKEN_PATH)

    def _check_digest(
        self, token: UsernameToken, nonce: bytes, now: datetime
    ) -> tuple[str, str] | None:
        """The system and its stored username when the digest is right for the current
        password, or for the previous one while its overlap lasts (the stored name keys the
        nonce cache, whichever password was used, so an over-long username cannot make a
        nonce look new and a token replayed is refused for either password)."""
        if len(token.username) > 64:
            return None
        with self._sessions() as session:
            row = session.scalars(
                select(SoapCredential).where(SoapCredential.username == token.username)
            ).first()
            if row is None:
                return None
            system, username, sealed = row.system, row.username, bytes(row.secret_encrypted)
            previous = previous_secret(row, now)
        given = token.password_digest.strip().encode("ascii", "replace")
        for secret in (sealed, previous):
            if secret is None:
                continue
            expected = password_digest(nonce, token.created, self._box().open(secret, system))
            if hmac.compare_digest(expected.encode("ascii"), given):
                return system, username
        return None

    def _first_use(self, username: str, nonce: str, expires_at: datetime, now: datetime) -> bool:
        """Record the nonce; false when it is already recorded (a replay)."""
        try:
            with self._sessions.begin() as session:
                session.add(UsedNonce(username=username, nonce=nonce[:128], expires_at=expires_at))
        except IntegrityError:
            return False
        self._accepted += 1
        if self._accepted % _PURGE_EVERY == 0:
            with self._sessions.begin() as session:
                session.execute(delete(UsedNonce).where(UsedNonce.expires_at < now))
        return True
