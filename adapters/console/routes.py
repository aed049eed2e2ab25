"""The console's one router (entry point ``renkei.routers``: ``console``)."""

from __future__ import annotations

from fastapi import APIRouter

from adapters.console import auth, dead_letters, messages, operations

router = APIRouter(include_in_schema=False)
router.include_router(auth.router)
router.include_router(messages.router)
router.include_router(dead_letters.router)
router.include_router(operations.router)
