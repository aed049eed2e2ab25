"""Console sign-ins on the admin chain (ログイン記録): who logged in or out, when, from which
address, and how a session ended — for the information-security officer (docs/audit.md).

Recorded: ``console.login`` (each granted login), ``console.logout``, ``console.session_end``
(idle, 8 hours, or every town of the account disabled; once per session, when the hub notices
it), ``console.login_failed`` (wrong credentials, or every town disabled) and
``console.login_throttled`` (refused by the login throttle, RK-CON005 / RK-CON008).

Never recorded: the password, nor a typed username that is no account (it may be a password
typed in the wrong field): ``user`` is then ``null``. A session is named by a digest of its
id, enough to pair a login with its end, useless as a credential.

A login flood cannot fill the disk: failures are bounded before they are written. The login
throttle already refuses a 21st failure per address and minute; a throttled address is
recorded once a minute (not once per refused request); and the hub records at most
``FAILURES_RECORDED`` failed or throttled logins a minute in all, then one
``console.login_capped`` for the rest of that minute. The bounds are counted in the rate
windows every hub process shares (bus/security/rate_limit.py).
"""

from __future__ import annotations

import hashlib
from typing import Any

from sqlalchemy.orm import Session, sessionmaker

from bus.config.models import RateLimit
from bus.security.rate_limit import RateLimiter
from bus.store.admin_audit import record_admin_action
from bus.store.models import OperatorAccount

LOGIN = "console.login"
LOGIN_FAILED = "console.login_failed"
LOGIN_THROTTLED = "console.login_throttled"
LOGIN_CAPPED = "console.login_capped"
LOGOUT = "console.logout"
SESSION_END = "console.session_end"
#: Failed and throttled logins recorded one by one per minute, hub-wide (then one
#: ``console.login_capped`` for the rest of the minute): at most 31 records a minute under a
#: sustained flood, about 45,000 a day.
FAILURES_RECORDED = RateLimit(per_minute=30)
_ONCE_A_MINUTE = RateLimit(per_minute=1)
#: Why a login failed (``reason`` of ``console.login_failed``).
CREDENTIALS, TOWNS_DISABLED = "credentials", "towns_disabled"


def session_digest(session_id: str) -> str:
    """How the records name a session: pairs a login with its end, opens nothing."""
    return hashlib.sha256(f"renkei console session\0{session_id}".encode()).hexdigest()[:16]


def _address_key(address: str) -> str:
    return hashlib.sha256(address.encode("utf-8")).hexdigest()[:32]


def signed(
    session: Session, event: str, username: str, address: str, session_id: str, **detail: Any
) -> None:
    """Record ``console.login`` / ``logout`` / ``session_end`` in the caller's transaction."""
    record_admin_action(
        session,
        f"console:{username}",
        event,
        {"user": username, "from": address, "session": session_digest(session_id), **detail},
    )


def record_login(
    sessions: sessionmaker[Session], username: str, address: str, session_id: str
) -> None:
    with sessions.begin() as session:
        signed(session, LOGIN, username, address, session_id)


def _known(session: Session, typed: str) -> str | None:
    """The typed username when it is an account (anything else may be a secret)."""
    return typed if typed and session.get(OperatorAccount, typed[:64]) is not None else None


def _admitted(limiter: RateLimiter, key: str, limit: RateLimit) -> bool:
    return limiter.admit(key, limit) is None


def record_failure(
    sessions: sessionmaker[Session],
    typed: str,
    address: str,
    *,
    reason: str | None = None,
    code: str | None = None,
) -> bool:
    """Record a refused login: ``reason`` (CREDENTIALS, TOWNS_DISABLED) for a failed one,
    ``code`` (RK-CON005, RK-CON008) for a throttled one — a throttled address once a minute.
    Within the hub-wide bound only; whether it was recorded."""
    limiter = RateLimiter(sessions)
    if code is not None and not _admitted(limiter, f"alog:{_address_key(address)}", _ONCE_A_MINUTE):
        return False  # ':' is in no system id
    if not _admitted(limiter, "alog:*", FAILURES_RECORDED):
        if _admitted(limiter, "alog:capped", _ONCE_A_MINUTE):
            with sessions.begin() as session:
                capped = {"limit": FAILURES_RECORDED.per_minute}
                record_admin_action(session, None, LOGIN_CAPPED, capped)
        return False
    with sessions.begin() as session:
        detail: dict[str, Any] = {"user": _known(session, typed), "from": address}
        if code is None:
            record_admin_action(session, None, LOGIN_FAILED, {**detail, "reason": reason})
        else:
            record_admin_action(session, None, LOGIN_THROTTLED, {**detail, "code": code})
    return True
