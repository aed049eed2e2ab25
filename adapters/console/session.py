"""The console session: a signed cookie (itsdangerous; HttpOnly, SameSite=Strict) holding the
operator's username and a CSRF token that every POST form sends back.

The signing key is derived from the hub's secrets key (``RENKEI_SECRETS_KEY`` or
``<data_dir>/secrets.key``), so every hub process of a deployment accepts the same cookies.
The operator is read from the database on every request: a disabled account or a changed
role takes effect at once.

Each login opens a session with an id of its own, its login time, its last-seen time and the
account's ``password_changed_at`` in the cookie. Logging out records the id as ended (in the
database, so every hub process refuses the cookie from then on, until it would have expired
anyway), and a new password ends every session opened under the one before (the stamp no
longer matches): a copied cookie does not outlive either.

A session ends 8 hours after its login and after ``RENKEI_CONSOLE_IDLE_SECONDS`` (default 30
minutes) without a request: the last-seen time is refreshed in the cookie (at most once a
minute, no database write), and the login page then says why. Both times are read from the
store's clock (bus/store/clock.py), the one every hub process shares; the password is
compared by its stamp, never by time, so no host's clock decides it (docs/console.md).

An operator acts only for its towns that are enabled (``enabled: false`` stops a town): the
operator of a request is narrowed to them, so every page and action sees a disabled town as
it sees another town's (404). A session whose towns are all disabled ends like an idle one
(notice ``towns``); hub staff (``*``) keep every town, disabled ones too.

Logins, logouts and the end of a session are recorded on the admin chain
(bus/security/login_audit.py), each session's end once.
"""

from __future__ import annotations

import hashlib
import hmac
import secrets
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
from bus.security import login_audit
from bus.security.operators import Operator, Role
from bus.security.secret_box import load_key
from bus.settings import Settings
from bus.store.audit import utc
from bus.store.clock import database_now
from bus.store.models import OperatorAccount, UsedNonce

COOKIE = "renkei_console"
LANG_COOKIE = "renkei_lang"
MAX_AGE_SECONDS = 8 * 3600  # one working day
#: The last-seen time in the cookie is refreshed at most this often (a tenth of a shorter
#: idle timeout): the idle timeout is kept to within this, without a write per request.
SEEN_REFRESH_SECONDS = 60.0
#: Why a session ended, shown once on the login page (i18n ``session_<notice>``); TOWNS:
#: every town of the account was disabled.
IDLE, EXPIRED, TOWNS = "idle", "expired", "towns"
NOTICES = (IDLE, EXPIRED, TOWNS)
#: How long an ended session's id is kept: its cookie is last signed by its 8th hour and
#: refused 8 hours after that, so no copy of it outlives the record.
ENDED_KEPT_SECONDS = 2 * MAX_AGE_SECONDS
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
    started: float | None = None  # its login time (epoch seconds, the store's clock)
    seen: float | None = None  # its last request, to within SEEN_REFRESH_SECONDS (same)
    password: str | None = None  # the account's password_changed_at at login (ISO 8601)
    notice: str | None = None  # signed out: why the last session ended (IDLE, EXPIRED)

    def sign_in(self, username: str, now: float, password: str) -> None:
        """A new session at login (``now`` on the store's clock, ``password`` the account's
        stamp read before its password was checked): its own id and a fresh CSRF token
        (nothing from before the login stays valid)."""
        self.username, self.csrf, self.changed = username, secrets.token_urlsafe(32), True
        self.session_id, self.started, self.seen = secrets.token_urlsafe(24), now, now
        self.password, self.notice = password, None

    def sign_out(self, notice: str | None = None) -> None:
        self.username, self.csrf, self.changed = None, secrets.token_urlsafe(32), True
        self.session_id, self.started, self.seen, self.operator = None, None, None, None
        self.password, self.notice = None, notice


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
            return _session_of(data)
    return ConsoleSession(None, secrets.token_urlsafe(32), changed=True)


def _session_of(data: dict[str, object]) -> ConsoleSession:
    csrf, username, session_id = str(data["c"]), data.get("u"), data.get("s")
    started, seen, password = data.get("t"), data.get("a"), data.get("p")
    if not (
        isinstance(username, str)
        and isinstance(session_id, str)
        and isinstance(started, int | float)
        and isinstance(seen, int | float)
        and isinstance(password, str)
    ):  # signed out (or from before idle timeouts)
        notice = data.get("n")
        return ConsoleSession(None, csrf, notice=notice if notice in NOTICES else None)
    return ConsoleSession(
        username, csrf, session_id=session_id, started=started, seen=seen, password=password
    )


def cookie_value(request: Request, state: ConsoleSession) -> str:
    data: dict[str, object] = {"u": state.username, "c": state.csrf}
    if state.username is not None:
        data |= {"s": state.session_id, "t": state.started, "a": state.seen}
        data["p"] = state.password
    elif state.notice is not None:
        data["n"] = state.notice
    return serializer(hub_of(request).settings).dumps(data)


def secure_cookies(request: Request) -> bool:
    """Whether the console's cookies are ``Secure``: served over HTTPS, by the hub itself
    or (``X-Forwarded-Proto``) by a proxy uvicorn trusts (``FORWARDED_ALLOW_IPS``)."""
    return request.url.scheme == "https"


def opening(sessions: sessionmaker[Session], username: str) -> tuple[float, str | None]:
    """At login, before the password is checked: the store's time and the account's
    password stamp (``None`` without such an account). A password changed meanwhile then
    leaves the new session with the old stamp, refused."""
    with sessions() as session:
        now = database_now(session.connection()).timestamp()
        row = session.get(OperatorAccount, username[:64])
        return now, None if row is None else utc(row.password_changed_at).isoformat()


def lapsed(state: ConsoleSession, now: float, idle_seconds: float) -> str | None:
    """Why a signed-in session is over at ``now`` (EXPIRED, IDLE), ``None`` while it lasts."""
    assert state.started is not None and state.seen is not None
    if now - state.started > MAX_AGE_SECONDS:
        return EXPIRED
    if now - state.seen > idle_seconds:
        return IDLE
    return None


def resume(
    sessions: sessionmaker[Session],
    state: ConsoleSession,
    idle_seconds: float,
    address: str = "",
) -> Operator | None:
    """The signed-in session's operator, its last-seen time refreshed when due; ``None``
    when the session lapsed (signed out with the notice why, its end recorded), the account
    is gone or disabled, its password changed since the login, or the session ended."""
    assert state.username is not None and state.session_id is not None
    operator: Operator | None = None
    with sessions() as session:
        now = database_now(session.connection()).timestamp()
        ended = lapsed(state, now, idle_seconds)
        if ended is None:
            row = session.get(OperatorAccount, state.username)
            if row is None or not row.enabled:
                return None
            if utc(row.password_changed_at).isoformat() != state.password:
                return None
            if session.get(UsedNonce, (ENDED_SESSIONS, state.session_id[:128])) is not None:
                return None
            operator = Operator(row.username, Role(row.role), frozenset(row.tenants), row.enabled)
    if ended is not None:  # after the read: SQLite takes its write lock per transaction
        close_session(sessions, state, ended, address)
        return None
    assert state.seen is not None and operator is not None
    if now - state.seen >= min(SEEN_REFRESH_SECONDS, idle_seconds / 10):
        state.seen, state.changed = now, True
    return operator


def _ended(session: Session, state: ConsoleSession) -> bool:
    """Mark the session ended, until no copy of its cookie is accepted (every hub process
    refuses it from now on); ended sessions past that are deleted. Whether it was marked now
    (not already ended: its end is recorded once, however often a copy comes back)."""
    assert state.session_id is not None and state.started is not None
    expires = datetime.fromtimestamp(state.started + ENDED_KEPT_SECONDS, UTC)
    now = database_now(session.connection())  # the clock ``started`` was read on
    session.execute(
        delete(UsedNonce).where(UsedNonce.username == ENDED_SESSIONS, UsedNonce.expires_at < now)
    )
    if expires <= now or session.get(UsedNonce, (ENDED_SESSIONS, state.session_id)) is not None:
        return False
    session.add(UsedNonce(username=ENDED_SESSIONS, nonce=state.session_id, expires_at=expires))
    return True


def end_session(sessions: sessionmaker[Session], state: ConsoleSession, address: str = "") -> None:
    """Logout: the session ended, and ``console.logout`` recorded (once)."""
    if state.username is None or state.session_id is None or state.started is None:
        return
    with sessions.begin() as session:
        if _ended(session, state):
            login_audit.signed(
                session, login_audit.LOGOUT, state.username, address, state.session_id
            )


def close_session(
    sessions: sessionmaker[Session], state: ConsoleSession, why: str, address: str = ""
) -> None:
    """A session over for ``why`` (IDLE, EXPIRED, TOWNS): ended, ``console.session_end``
    recorded (once), and signed out with the notice why."""
    assert state.username is not None and state.session_id is not None
    with sessions.begin() as session:
        if _ended(session, state):
            login_audit.signed(
                session,
                login_audit.SESSION_END,
                state.username,
                address,
                state.session_id,
                why=why,
            )
    state.sign_out(why)


def console_state(request: Request) -> ConsoleSession:
    state = request.state.console
    assert isinstance(state, ConsoleSession)
    return state


def client_address(request: Request) -> str:
    """The client's address as uvicorn saw it (behind a trusted proxy: its
    ``X-Forwarded-For``, ``FORWARDED_ALLOW_IPS``)."""
    return request.client.host if request.client else ""


def enabled_tenants(hub: Hub) -> frozenset[str]:
    """The towns enabled in the configuration in force."""
    return frozenset(t.code for t in hub.config.current().config.tenants if t.enabled)


def signed_in(request: Request) -> Operator:
    """The operator of this request, narrowed to its enabled towns; :class:`LoginRequired`
    without one (a session whose towns are all disabled ends here, notice TOWNS)."""
    state = console_state(request)
    if state.operator is None and state.username and state.session_id:
        hub = hub_of(request)
        sessions, address = hub.store.sessions, client_address(request)
        operator = resume(sessions, state, hub.settings.console_idle_seconds, address)
        if operator is not None:
            operator = operator.acting_for(enabled_tenants(hub))
            if not operator.tenants:
                close_session(sessions, state, TOWNS, address)
                operator = None
        state.operator = operator
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
