"""The admin chain: one tamper-evident chain for what operators do (管理操作の監査記録).

Configuration applied, dead letters redelivered or discarded, destinations paused or resumed,
operator accounts and API keys changed: each is appended to the chain ``admin`` (a name no
tenant code can take: tenant codes are six digits) in the transaction that makes the change,
next to the tenant chains' own records of it. ``detail`` holds ids, versions and digests —
never a secret, a body or personal data.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from typing import Any

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
