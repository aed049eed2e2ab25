"""The admin chain: one tamper-evident chain for what operators do (管理操作の監査記録).

Configuration applied, dead letters redelivered or discarded, destinations paused or resumed,
operator accounts and API keys changed: each is appended to the chain ``admin`` (a name no
tenant code can take: tenant codes are six digits) in the transaction that makes the change,
next to the tenant chains' own records of it. ``detail`` holds ids, versions and digests —
never a secret, a body or personal data. Console logins, logouts and session ends are on it
too (``console.*``, bus/security/login_audit.py); ``renkei audit admin`` lists the chain.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from datetime import datetime
from typing import Any

from sqlalchemy import select
from sqlalchemy.orm import Session

from bus.store.audit import append_audit
from bus.store.models import AuditRecord

ADMIN_CHAIN = "admin"
_ACTION = re.compile(r"[a-z][a-z_]*(\.[a-z_]+)+")
_ACTION_CAP = 32  # audit_records.event
_ACTOR_CAP = 64  # audit_records.actor


def record_admin_action(
    session: Session, actor: str | None, action: str, detail: Mapping[str, Any] | None = None
) -> AuditRecord:
    """Append ``action`` (``area.verb``, e.g. ``config.apply``, ``user.add``, ``key.revoke``)
    by ``actor`` (``cli:<login>``, ``console:<user>``…) to the admin chain inside the caller's
    transaction; call it after the change's own writes (the chain's head stays locked until
    the commit). Raises ValueError for a malformed action name."""
    if len(action) > _ACTION_CAP or not _ACTION.fullmatch(action):
        raise ValueError(f"admin action {action!r} must look like 'area.verb' (≤ 32 chars)")
    return append_audit(
        session,
        tenant=ADMIN_CHAIN,
        event=action,
        actor=actor[:_ACTOR_CAP] if actor else None,
        detail=dict(detail or {}),
    )


def admin_records(
    session: Session,
    *,
    since: datetime | None = None,
    until: datetime | None = None,
    action: str | None = None,
    limit: int = 100,
    resident: tuple[str, str] | None = None,
) -> list[AuditRecord]:
    """The admin chain's latest ``limit`` records (oldest of them first), stamped within
    ``since``/``until``; ``action``: an action (``user.add``) or an area (``console``);
    ``resident``: (tenant, ``resident_key``) — only the look-ups of that resident
    (``message.trail`` recorded under that key, ``message.search`` with it for that town)."""
    query = select(AuditRecord).where(AuditRecord.tenant == ADMIN_CHAIN)
    if resident is not None:
        tenant, key = resident
        query = query.where(
            (AuditRecord.detail["resident_key"].as_string() == key)
            | (AuditRecord.detail[("resident_keys", tenant)].as_string() == key)
        )
    if since is not None:
        query = query.where(AuditRecord.at >= since)
    if until is not None:
        query = query.where(AuditRecord.at <= until)
    if action:
        area = action.rstrip(".")
        query = query.where(
            (AuditRecord.event == area) | AuditRecord.event.startswith(f"{area}.", autoescape=True)
        )
    rows = session.scalars(query.order_by(AuditRecord.seq.desc()).limit(limit)).all()
    return list(reversed(rows))
