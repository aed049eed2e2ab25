"""``GET /api/v1/feeds/{Service}``: PULL feeds (差分) and ``…/export`` (全件), per system and
tenant.

The caller is recognised like every REST caller (API key, else source address); it reads only
what a pushed delivery would have brought it (bus/feeds/entitlement.py), translated by the
same outbound hook. Entries come in store order after the opaque ``since`` cursor, with the
cursor to continue from; reading again from an old cursor returns the same entries until
retention purges them (then 410, RK-FED003).

A store that cannot be reached now is answered 503 RK-STO008 with ``Retry-After`` (a poller
comes back later), logged once per outage, as the status GET does (``store_read_failure``).
"""

from __future__ import annotations

import base64
import json
from collections.abc import Iterable, Iterator
from itertools import chain, islice
from typing import Any

from fastapi import Request, Security
from fastapi.responses import JSONResponse, StreamingResponse
from pydantic import BaseModel
from starlette.concurrency import run_in_threadpool
from starlette.responses import Response

from adapters.inbound import Caller, identify, known_service, unknown_service
from adapters.rest.messages import API_KEY, KEY_OR_ADDRESS, store_read_failure
from adapters.rest.problem import ProblemRouter, problem, problem_responses
from bus.errors import make_finding
from bus.feeds import (
    Cursor,
    CursorError,
    Entitlement,
    FeedEntry,
    FeedGone,
    FeedRefused,
    entitlement,
    export_feed,
    read_feed,
)
from bus.hub import Hub
from bus.pipeline import Finding

PREFIX = "/api/v1/feeds"
NDJSON = "application/x-ndjson"
DEFAULT_LIMIT = 100
MAX_LIMIT = 1000
EXPORT_PAGE = 500  # messages read per short transaction of a 全件 export
_STATUS = {
    "RK-FED001": 400,
    "RK-FED002": 403,
    "RK-FED003": 410,
    "RK-FED004": 400,
    "RK-FED005": 400,
    "RK-FED006": 403,
}

# The store cannot be reached now (RK-STO008): the poller comes back later.
_RETRY_LATER: dict[int | str, dict[str, Any]] = {
    503: {
        **problem_responses(503)[503],
        "headers": {
            "Retry-After": {
                "description": "Seconds to wait before polling again",
                "schema": {"type": "integer"},
            }
        },
    }
}

# The API key is declared for the OpenAPI document only; _entitled identifies the caller.
router = ProblemRouter(prefix=PREFIX, tags=["feeds"], dependencies=[Security(API_KEY)])


class FeedItem(BaseModel):
    cursor: str
    message_id: str
    received_at: str
    relates_to: str | None
    body: str | None = None  # the message as this system takes it (text)
    body_base64: str | None = None  # when it is not UTF-8 text (e.g. CP932 fixed width)
    findings: list[Finding] = []


class FeedPageModel(BaseModel):
    service: str
    tenant: str
    system: str
    entries: list[FeedItem]
    next_cursor: str
    more: bool


def _item(entry: FeedEntry, tenant: str, service: str) -> dict[str, Any]:
    item: dict[str, Any] = {
        "cursor": Cursor(tenant, service, entry.position).encode(),
        "message_id": entry.message_id,
        "received_at": entry.received_at.isoformat(),
        "relates_to": entry.relates_to,
        "findings": [finding.as_dict() for finding in entry.findings],
    }
    if entry.body is not None:
        try:
            item["body"] = entry.body.decode("utf-8")
        except UnicodeDecodeError:
            item["body_base64"] = base64.b64encode(entry.body).decode("ascii")
    return item


def _entitled(
    hub: Hub, caller: Caller, service: str, tenant: str | None, system: str | None
) -> Entitlement:
    """Who is reading (the one system the caller is, or the one it names) and what it may
    read; raises :class:`_Refusal` or :class:`FeedRefused`."""
    if not tenant or len(tenant) != 6 or not tenant.isascii() or not tenant.isdigit():
        raise FeedRefused(
            make_finding("RK-FED005", path="/", actual="tenant", expected="団体コード（6桁）")
        )
    identity = identify(hub, caller, "feed")
    if identity is None:
        raise FeedRefused(make_finding("RK-AUT001", path="/"))
    if system is not None:
        if system not in identity.systems:
            raise FeedRefused(make_finding("RK-FED006", path="/", actual=system[:40]))
        chosen = system
    elif len(identity.systems) == 1:
        (chosen,) = identity.systems
    else:
        listed = ", ".join(sorted(identity.systems))
        raise FeedRefused(make_finding("RK-FED004", path="/", actual=listed))
    return entitlement(hub.config.current().index, chosen, tenant, service)


def _refusal(finding: Finding) -> Response:
    return problem([finding], _STATUS.get(finding.code))


def _read(
    hub: Hub, caller: Caller, service: str, query: dict[str, str | None], limit: int
) -> dict[str, Any]:
    entitled = _entitled(hub, caller, service, query["tenant"], query["system"])
    since = query["since"]
    try:
        cursor = (
            Cursor.decode(since, tenant=entitled.tenant, service=service)
            if since
            else Cursor.start(entitled.tenant, service)
        )
    except CursorError:
        raise FeedRefused(
            make_finding("RK-FED001", path="/", expected=f"{service} ({entitled.tenant})")
        ) from None
    page = read_feed(hub.store.sessions, entitled, cursor, limit)
    return {
        "service": service,
        "tenant": entitled.tenant,
        "system": entitled.system.id,
        "entries": [_item(e, entitled.tenant, service) for e in page.entries],
        "next_cursor": page.next_cursor.encode(),
        "more": page.more,
    }


def _limit(value: str | None) -> int | Finding:
    if value is None:
        return DEFAULT_LIMIT
    if not value.isdigit() or not 1 <= int(value) <= MAX_LIMIT:
        return make_finding("RK-FED005", path="/", actual="limit", expected=f"1〜{MAX_LIMIT}")
    return int(value)


@router.get(
    "/{service}",
    summary="差分フィード: entitled messages after a cursor (PULL)",
    response_model=FeedPageModel,
    responses={**problem_responses(400, 401, 403, 404, 410, 422, 500), **_RETRY_LATER},
    openapi_extra=KEY_OR_ADDRESS,
)
async def get_feed(
    service: str,
    request: Request,
    tenant: str | None = None,
    since: str | None = None,
    limit: str | None = None,
    system: str | None = None,
) -> Response:
    if not known_service(service):
        return problem([unknown_service(service)])
    count = _limit(limit)
    if isinstance(count, Finding):
        return problem([count], 400)
    query = {"tenant": tenant, "since": since, "system": system}
    hub: Hub = request.app.state.hub
    try:
        page = await run_in_threadpool(_read, hub, Caller.of(request), service, query, count)
    except (FeedRefused, FeedGone) as refusal:
        return _refusal(refusal.finding)
    except Exception as error:  # the adapter boundary: never a generic 500
        return problem([store_read_failure(hub, error)])
    return JSONResponse(page)


def _begin_export(hub: Hub, entitled: Entitlement) -> Iterator[bytes]:
    """Reads the horizon and the first page before anything is sent, so a store that cannot
    be reached then is answered with a problem document rather than a cut stream."""
    final, entries = export_feed(hub.store.sessions, entitled, page_size=EXPORT_PAGE)
    first = list(islice(entries, 1))
    return _export_lines(hub, entitled, chain(first, entries), final)


def _export_lines(
    hub: Hub, entitled: Entitlement, entries: Iterable[FeedEntry], final: Cursor
) -> Iterator[bytes]:
    """The entries, then ``count`` and ``next_cursor``; when a later page cannot be read, the
    last line is ``{"error": finding}`` instead: no cursor, so the part sent is never taken
    for the whole."""
    count = 0
    try:
        for entry in entries:
            count += 1
            item = _item(entry, entitled.tenant, entitled.service)
            yield json.dumps(item, ensure_ascii=False).encode() + b"\n"
    except Exception as error:  # the stream's status is sent: the failure is its last line
        failure = {"error": store_read_failure(hub, error).as_dict()}
        yield json.dumps(failure, ensure_ascii=False).encode() + b"\n"
        return
    summary = {"count": count, "next_cursor": final.encode()}
    yield json.dumps(summary).encode() + b"\n"


@router.get(
    "/{service}/export",
    summary="全件出力: every retained entitled message, streamed as NDJSON",
    responses={**problem_responses(400, 401, 403, 404, 422, 500), **_RETRY_LATER},
    openapi_extra=KEY_OR_ADDRESS,
)
async def export(
    service: str, request: Request, tenant: str | None = None, system: str | None = None
) -> Response:
    """One JSON object per line (like a feed entry); the last line holds ``count`` and the
    ``next_cursor`` a 差分 reader continues from after reconciling (an export cut short ends
    with an ``error`` line instead)."""
    if not known_service(service):
        return problem([unknown_service(service)])
    hub: Hub = request.app.state.hub
    try:
        entitled = await run_in_threadpool(
            _entitled, hub, Caller.of(request), service, tenant, system
        )
        lines = await run_in_threadpool(_begin_export, hub, entitled)
    except FeedRefused as refusal:
        return _refusal(refusal.finding)
    except Exception as error:  # the adapter boundary: never a generic 500
        return problem([store_read_failure(hub, error)])
    return StreamingResponse(lines, media_type=NDJSON)


__all__ = ["router"]
