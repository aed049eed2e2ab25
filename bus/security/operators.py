"""Operator accounts (操作者): people using the CLI and the web console.

Each account has one role and the tenants it acts for (``*``: every tenant, for the hub's
own staff). Roles nest: a viewer reads, an operator also acts on messages (redeliver,
discard, replay, pause), an admin also manages accounts, tenants and configuration. The web
console calls :func:`authenticate` at login and :meth:`Operator.may` / :func:`require` for
every page and action, with the tenant of the data concerned. Every account change is
recorded on the admin chain (``user.*``) in its transaction — never the password.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, replace
from datetime import UTC, datetime
from enum import StrEnum
from functools import cache

from sqlalchemy import select
from sqlalchemy.orm import Session, sessionmaker

from bus.errors import make_finding
from bus.kdf import hash_secret, verify_secret
from bus.pipeline import Finding
from bus.security import SecurityRefusal
from bus.store.admin_audit import record_admin_action
from bus.store.models import OperatorAccount

ALL_TENANTS = "*"
MIN_PASSWORD = 12
USERNAME = re.compile(r"^[a-z0-9][a-z0-9._\-]{2,63}$")


@cache
def no_user_hash() -> str:
    """A hash to check against when the user does not exist, so timing does not tell. Made
    once (a scrypt, ~0.1 s), by the console as it loads (adapters/console/auth.py): not by
    every command that reads operators, nor by the first login for no account."""
    return hash_secret("renkei: no such operator")


class Role(StrEnum):
    VIEWER = "viewer"
    OPERATOR = "operator"
    ADMIN = "admin"


class Permission(StrEnum):
    VIEW = "view"  # messages, deliveries, dead letters, audit (masked)
    OPERATE = "operate"  # redeliver, discard, replay, pause/resume destinations
    ADMINISTER = "administer"  # accounts, tenants, keys, configuration

    @property
    def name_ja(self) -> str:
        """How RK-AUT011 names it to staff: 閲覧, 操作, 管理 (閲覧権限…)."""
        return _PERMISSIONS_JA[self]


_PERMISSIONS_JA = {
    Permission.VIEW: "閲覧",
    Permission.OPERATE: "操作",
    Permission.ADMINISTER: "管理",
}


_GRANTS = {
    Role.VIEWER: frozenset({Permission.VIEW}),
    Role.OPERATOR: frozenset({Permission.VIEW, Permission.OPERATE}),
    Role.ADMIN: frozenset(Permission),
}


class OperatorError(SecurityRefusal):
    """A refused account operation or login."""


@dataclass(frozen=True, slots=True)
class Operator:
    """An authenticated operator, as the console holds it for a session."""

    username: str
    role: Role
    tenants: frozenset[str]
    enabled: bool = True

    def may(self, permission: Permission, tenant: str) -> bool:
        """Whether this operator may do ``permission`` on ``tenant``'s data."""
        scoped = ALL_TENANTS in self.tenants or tenant in self.tenants
        return self.enabled and scoped and permission in _GRANTS[self.role]

    def visible_tenants(self, every: frozenset[str]) -> frozenset[str]:
        """The tenants of ``every`` this operator may view (filter listings with it)."""
        return every if ALL_TENANTS in self.tenants else every & self.tenants

    def acting_for(self, enabled: frozenset[str]) -> Operator:
        """This operator as it acts now: for its towns among the ``enabled`` ones only (a
        disabled town's data is no longer its to see or act on). Hub staff (``*``) keep
        every town, disabled ones too: they finish what a disabled town left (docs/console.md)."""
        if ALL_TENANTS in self.tenants:
            return self
        return replace(self, tenants=self.tenants & enabled)


def require(operator: Operator, permission: Permission, tenant: str) -> None:
    """Raise :class:`OperatorError` (RK-AUT011) unless ``operator.may(permission, tenant)``."""
    if not operator.may(permission, tenant):
        raise OperatorError(refused(operator, permission, tenant))


def refused(operator: Operator, permission: Permission, tenant: str) -> Finding:
    """RK-AUT011: ``operator`` lacks ``permission`` on ``tenant``'s data."""
    return make_finding(
        "RK-AUT011",
        path="/",
        actual=operator.username,
        tenant=tenant,
        permission_ja=permission.name_ja,
        permission_en=permission.value,
    )


def _operator(row: OperatorAccount) -> Operator:
    return Operator(row.username, Role(row.role), frozenset(row.tenants), row.enabled)


def _check_password(password: str) -> None:
    if len(password) < MIN_PASSWORD:
        raise OperatorError(make_finding("RK-TEN007", path="/password", expected=MIN_PASSWORD))


def add_operator(
    sessions: sessionmaker[Session],
    username: str,
    password: str,
    role: Role,
    tenants: frozenset[str],
    *,
    actor: str | None = None,
) -> Operator:
    if not USERNAME.fullmatch(username):
        raise OperatorError(make_finding("RK-TEN006", path="/username", actual=username[:64]))
    _check_password(password)
    now = datetime.now(UTC)
    with sessions.begin() as session:
        if session.get(OperatorAccount, username) is not None:
            raise OperatorError(make_finding("RK-TEN008", path="/username", actual=username))
        row = OperatorAccount(
            username=username,
            password_hash=hash_secret(password),
            role=role.value,
            tenants=sorted(tenants),
            enabled=True,
            created_at=now,
            password_changed_at=now,
        )
        session.add(row)
        detail = {"user": username, "role": role.value, "tenants": sorted(tenants)}
        record_admin_action(session, actor, "user.add", detail)
        return _operator(row)


def _existing(session: Session, username: str) -> OperatorAccount:
    row = session.get(OperatorAccount, username)
    if row is None:
        raise OperatorError(make_finding("RK-TEN009", path="/username", actual=username[:64]))
    return row


def set_password(
    sessions: sessionmaker[Session], username: str, password: str, *, actor: str | None = None
) -> None:
    _check_password(password)
    with sessions.begin() as session:
        row = _existing(session, username)
        row.password_hash = hash_secret(password)
        row.password_changed_at = datetime.now(UTC)
        record_admin_action(session, actor, "user.passwd", {"user": username})


def set_enabled(
    sessions: sessionmaker[Session], username: str, enabled: bool, *, actor: str | None = None
) -> Operator:
    with sessions.begin() as session:
        row = _existing(session, username)
        row.enabled = enabled
        action = "user.enable" if enabled else "user.disable"
        record_admin_action(session, actor, action, {"user": username})
        return _operator(row)


def list_operators(sessions: sessionmaker[Session]) -> list[Operator]:
    with sessions() as session:
        rows = session.scalars(select(OperatorAccount).order_by(OperatorAccount.username))
        return [_operator(row) for row in rows]


def authenticate(sessions: sessionmaker[Session], username: str, password: str) -> Operator:
    """The operator, when the password is right and the account enabled; else
    :class:`OperatorError` with RK-AUT012 (the same for every reason: no account oracle)."""
    with sessions() as session:
        row = session.get(OperatorAccount, username[:64])
        stored = row.password_hash if row is not None else no_user_hash()
        operator = _operator(row) if row is not None else None
    if not verify_secret(password, stored) or operator is None or not operator.enabled:
        raise OperatorError(make_finding("RK-AUT012", path="/"))
    return operator
