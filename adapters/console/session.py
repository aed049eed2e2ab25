"""The console session: a signed cookie (itsdangerous; HttpOnly, SameSite=Strict) holding the
operator's username and a CSRF token that every POST form sends back.

The signing key is derived from the hub's secrets key (``RENKEI_SECRETS_KEY`` or
``<data_dir>/secrets.key``), so every hub process of a deployment accepts the same cookies.
The operator is read from the database on every request: a disabled account or a changed
role takes effect at once.

Each login opens a session with an id of its own and its start time in the cookie. Logging
out records the id as ended (in the database, so every hub process refuses the cookie from
then on, until it would have expired anyway), and a new password ends every session opened
before it (``password_changed_at``): a copied cookie does not outlive either.
"""

from __future__ import annotations

import hashlib
import hmac
import secrets
import time
from dataclasses import dataclass, field
from datetime import UTC, datetime
from functools import cache
from urllib.parse import parse_qs

from itsdangerous import BadSignature, URLSafeTimedSerializer
from sqlalchemy import delete
from sqlalchemy.orm import Session, sessionmaker
from starlette.requests import Request

from adapters.console.inputs import refused_field
from adapters.inbound import read_body
from bus import reasons
from bus.errors import make_finding
from bus.hub import Hub
from bus.pipeline import Finding
from bus.security.operators import Operator, Role
from bus.security.secret_box import load_key
from bus.settings import Settings
from bus.store.audit import utc
from bus.store.models import OperatorAccount, UsedNonce

COOKIE = "renkei_console"
LANG_COOKIE = "renkei_lang"
MAX_AGE_SECONDS = 8 * 3600  # one working day
MAX_FORM_BYTES = 64 * 1024
_SALT = "renkei.console.session"
#: The ``used_nonces`` rows of ended console sessions have this as their username (it cannot
#: be a WS-Security username's nonce: a session id is not Base64 of 16–64 bytes).
ENDED_SESSIONS = "renkei:console-session"


class ConsoleRefusal(Exception):
    """A request the console answers with an error page (``status``, coded ``finding``)."""

    def __init__(self, status: int, finding: Finding | None = None) -> None:
        super().__init__(finding.message_en if finding else str(status))
        self.status = status
        self.finding = finding


class LoginRequired(Exception):
    """No (valid) session: the console redirects to the login page."""


@dataclass(slots=True)
class ConsoleSession:
    username: str | None
    csrf: str
    changed: bool = False
    operator: Operator | None = field(default=None)
    session_id: str | None = None  # a signed-in session's own id (ended at logout)
    started: float | None = None  # its login time (epoch seconds)

    def sign_in(self, username: str) -> None:
        """A new session at login: its own id and a fresh CSRF token (nothing from before
        the login stays valid)."""
        self.username, self.csrf, self.changed = username, secrets.token_urlsafe(32), True
        self.session_id, self.started = secrets.token_urlsafe(24), time.time()

    def sign_out(self) -> None:
        self.username, self.csrf, self.changed = None, secrets.token_urlsafe(32), True
        self.session_id, self.started, self.operator = None, None, None


@cache
def _serializer(key: bytes) -> URLSafeTimedSerializer:
    secret = hmac.new(key, b"renkei console session v1", hashlib.sha256).hexdigest()
    return URLSafeTimedSerializer(secret, salt=_SALT)


def serializer(settings: Settings) -> URLSafeTimedSerializer:
    return _serializer(load_key(settings))


def hub_of(request: Request) -> Hub:
    hub = request.app.state.hub
    assert isinstance(hub, Hub)
    return hub


def read_session(request: Request) -> ConsoleSession:
    raw = request.cookies.get(COOKIE)
    if raw:
        try:
            data = serializer(hub_of(request).settings).loads(raw, max_age=MAX_AGE_SECONDS)
        except BadSignature:
            data = None
        if isinstance(data, dict) and isinstance(data.get("c"), str):
            username, session_id, started = data.get("u"), data.get("s"), data.get("t")
            if not (
                isinstance(username, str)
                and isinstance(session_id, str)
                and isinstance(started, int | float)
            ):
                return ConsoleSession(None, data["c"])  # signed out (or from before sessions)
            return ConsoleSession(username, data["c"], session_id=session_id, started=started)
    return ConsoleSession(None, secrets.token_urlsafe(32), changed=True)


def cookie_value(request: Request, state: ConsoleSession) -> str:
    data: dict[str, object] = {"u": state.username, "c": state.csrf}
    if state.username is not None:
        data |= {"s": state.session_id, "t": state.started}
    return serializer(hub_of(request).settings).dumps(data)


def load_operator(
    sessions: sessionmaker[Session], username: str, session_id: str, started: float
) -> Operator | None:
    """The session's operator: ``None`` when the account is gone or disabled, the session
    ended (logout) or older than the account's password."""
    with sessions() as session:
        row = session.get(OperatorAccount, username)
        if row is None or not row.enabled or started < utc(row.password_changed_at).timestamp():
            return None
        if session.get(UsedNonce, (ENDED_SESSIONS, session_id[:128])) is not None:
            return None
        return Operator(row.username, Role(row.role), frozenset(row.tenants), row.enabled)


def end_session(sessions: sessionmaker[Session], state: ConsoleSession) -> None:
    """Record the session as ended, until its cookie would have expired (every hub process
    refuses it from now on); ended sessions past that are deleted."""
    if state.session_id is None or state.started is None:
        return
    now = datetime.now(UTC)
    expires = datetime.fromtimestamp(state.started + MAX_AGE_SECONDS, UTC)
    with sessions.begin() as session:
        session.execute(
            delete(UsedNonce).where(
                UsedNonce.username == ENDED_SESSIONS, UsedNonce.expires_at < now
            )
        )
        if expires > now and session.get(UsedNonce, (ENDED_SESSIONS, state.session_id)) is None:
            session.add(
                UsedNonce(username=ENDED_SESSIONS, nonce=state.session_id, expires_at=expires)
            )


def console_state(request: Request) -> ConsoleSession:
    state = request.state.console
    assert isinstance(state, ConsoleSession)
    return state


def signed_in(request: Request) -> Operator:
    """The operator of this request; :class:`LoginRequired` without one."""
    state = console_state(request)
    if state.operator is None and state.username and state.session_id and state.started:
        sessions = hub_of(request).store.sessions
        state.operator = load_operator(sessions, state.username, state.session_id, state.started)
    if state.operator is None:
        raise LoginRequired()
    return state.operator


def language(request: Request) -> str:
    return "en" if request.cookies.get(LANG_COOKIE) == "en" else "ja"


@dataclass(frozen=True, slots=True)
class Form:
    values: dict[str, list[str]]

    def one(self, name: str) -> str:
        found = self.values.get(name)
        return found[0] if found else ""

    def all(self, name: str) -> list[str]:
        return list(self.values.get(name, []))


async def posted_form(request: Request) -> Form:
    """The url-encoded form of a POST, its CSRF token checked (RK-CON001 otherwise). A body
    over ``MAX_FORM_BYTES`` is refused (RK-SEC002) as soon as that is known, from its declared
    length or while it arrives, never held whole: no login is needed to post one."""
    body = await read_body(request, MAX_FORM_BYTES)
    if isinstance(body, Finding):
        raise ConsoleRefusal(413 if body.code == "RK-SEC002" else 400, body)
    try:
        values = parse_qs(body.decode("utf-8"), keep_blank_values=True, max_num_fields=2000)
    except (UnicodeDecodeError, ValueError) as error:
        raise ConsoleRefusal(400, make_finding("RK-CON001", path="/")) from error
    form = Form(values)
    refused = refused_field((name, value) for name, found in values.items() for value in found)
    if refused is not None:
        raise ConsoleRefusal(400, refused)
    expected = console_state(request).csrf
    if not hmac.compare_digest(form.one("csrf").encode(), expected.encode()):
        raise ConsoleRefusal(403, make_finding("RK-CON001", path="/csrf"))
    return form


def stated_reason(form: Form) -> str:
    """The required reason of an action (RK-CON002 when blank or too long: bus/reasons.py)."""
    try:
        return reasons.stated_reason(form.one("reason"))
    except reasons.ReasonRefused as refused:
        raise ConsoleRefusal(400, refused.finding) from None
