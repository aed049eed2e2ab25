"""The console session: a signed cookie (itsdangerous; HttpOnly, SameSite=Strict) holding the
operator's username and a CSRF token that every POST form sends back.

The signing key is derived from the hub's secrets key (``RENKEI_SECRETS_KEY`` or
``<data_dir>/secrets.key``), so every hub process of a deployment accepts the same cookies.
The operator is read from the database on every request: a disabled account or a changed
role takes effect at once.
"""

from __future__ import annotations

import hashlib
import hmac
import secrets
from dataclasses import dataclass, field
from functools import cache
from urllib.parse import parse_qs

from itsdangerous import BadSignature, URLSafeTimedSerializer
from sqlalchemy.orm import Session, sessionmaker
from starlette.requests import Request

from bus import reasons
from bus.errors import make_finding
from bus.hub import Hub
from bus.pipeline import Finding
from bus.security.operators import Operator, Role
from bus.security.secret_box import load_key
from bus.settings import Settings
from bus.store.models import OperatorAccount

COOKIE = "renkei_console"
LANG_COOKIE = "renkei_lang"
MAX_AGE_SECONDS = 8 * 3600  # one working day
MAX_FORM_BYTES = 64 * 1024
_SALT = "renkei.console.session"


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

    def sign_in(self, username: str) -> None:
        """A fresh CSRF token at login (no token from before the login stays valid)."""
        self.username, self.csrf, self.changed = username, secrets.token_urlsafe(32), True

    def sign_out(self) -> None:
        self.username, self.csrf, self.changed = None, secrets.token_urlsafe(32), True


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
            username = data.get("u")
            return ConsoleSession(username if isinstance(username, str) else None, data["c"])
    return ConsoleSession(None, secrets.token_urlsafe(32), changed=True)


def cookie_value(request: Request, state: ConsoleSession) -> str:
    return serializer(hub_of(request).settings).dumps({"u": state.username, "c": state.csrf})


def load_operator(sessions: sessionmaker[Session], username: str) -> Operator | None:
    with sessions() as session:
        row = session.get(OperatorAccount, username)
        if row is None or not row.enabled:
            return None
        return Operator(row.username, Role(row.role), frozenset(row.tenants), row.enabled)


def console_state(request: Request) -> ConsoleSession:
    state = request.state.console
    assert isinstance(state, ConsoleSession)
    return state


def signed_in(request: Request) -> Operator:
    """The operator of this request; :class:`LoginRequired` without one."""
    state = console_state(request)
    if state.operator is None and state.username:
        state.operator = load_operator(hub_of(request).store.sessions, state.username)
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
    """The url-encoded form of a POST, its CSRF token checked (RK-CON001 otherwise)."""
    body = await request.body()
    if len(body) > MAX_FORM_BYTES:
        raise ConsoleRefusal(413, make_finding("RK-CON001", path="/"))
    try:
        values = parse_qs(body.decode("utf-8"), keep_blank_values=True, max_num_fields=2000)
    except (UnicodeDecodeError, ValueError) as error:
        raise ConsoleRefusal(400, make_finding("RK-CON001", path="/")) from error
    form = Form(values)
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
