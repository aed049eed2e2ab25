"""The 配信不能 pages: every dead letter reachable a page at a time (keyset on the delivery
id), filtered by destination and tenant; redeliver or discard those selected, or every one
matching the filters — after a confirmation, as paged work that shows its progress, and only
those dead when the operator looked, and those dead in a window of days; a redelivery paced at
N a second (bus/dispatch/operations.py does the work and audits it, as for
``renkei dlq redeliver --all --from/--to --per-second``)."""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, replace
from datetime import datetime
from urllib.parse import urlencode

from fastapi import APIRouter
from sqlalchemy import func, select
from sqlalchemy.orm import Session
from starlette.concurrency import run_in_threadpool
from starlette.requests import Request
from starlette.responses import RedirectResponse, Response

from adapters.console.access import (
    actor,
    config_index,
    require_operate,
    tenant_scope,
    visible_tenants,
)
from adapters.console.dates import DateRefused, parse_day
from adapters.console.inputs import duration, refused_per_second
from adapters.console.inputs import per_second as read_per_second
from adapters.console.rendering import ConsoleRoute, render
from adapters.console.session import (
    ConsoleRefusal,
    Form,
    hub_of,
    posted_form,
    signed_in,
    stated_reason,
)
from bus.dispatch import operations
from bus.errors import make_finding
from bus.pipeline import Finding
from bus.security.operators import Operator
from bus.store.clock import database_now
from bus.store.models import Delivery, DeliveryState
from bus.wareki import JST

router = APIRouter(route_class=ConsoleRoute, include_in_schema=False)

#: The most dead letters one page shows (the page says how many there are in all).
DEAD_SHOWN = 1000
#: Dead letters per transaction when acting on all of them (as ``renkei dlq … --all``).
ALL_PAGE = 500
#: One request of that work stops after this long or this many pages, whichever comes first,
#: and answers with its progress (no request runs long, however many there are).
STEP_SECONDS = 2.0
STEP_PAGES = 4
WHYS = ("permanent", "attempts", "age")
ACTIONS = ("redeliver", "discard")
DONE_KEYS = frozenset(ACTIONS)
_MAX_KEY = 2**63 - 1  # the largest key a database holds (a larger one overflows the query)


@dataclass(frozen=True, slots=True)
class Filters:
    """What the operator narrowed the dead letters to ("" = any)."""

    destination: str = ""
    tenant: str = ""
    why: str = ""

    def query(self) -> dict[str, str]:
        return {name: value for name, value in self.pairs() if value}

    def pairs(self) -> tuple[tuple[str, str], ...]:
        return (("destination", self.destination), ("tenant", self.tenant), ("why", self.why))


def _key(value: str, path: str) -> int:
    """A delivery id from a link or form (RK-CON001: it was altered)."""
    if not value:
        return 0
    if not (value.isascii() and value.isdigit()) or int(value) > _MAX_KEY:
        raise ConsoleRefusal(400, make_finding("RK-CON001", path=path))
    return int(value)


def _done(request: Request) -> tuple[str, int] | None:
    key, count = request.query_params.get("done", ""), request.query_params.get("n", "0")
    return (key, int(count)) if key in DONE_KEYS and count.isdigit() else None


def _dead_counts(session: Session, scope: frozenset[str] | None) -> dict[tuple[str, str], int]:
    """The operator's dead letters per (destination, tenant)."""
    query = select(Delivery.destination, Delivery.tenant, func.count()).where(
        Delivery.state == DeliveryState.DEAD.value
    )
    if scope is not None:
        query = query.where(Delivery.tenant.in_(sorted(scope)))
    rows = session.execute(query.group_by(Delivery.destination, Delivery.tenant))
    return {(destination, tenant): int(count) for destination, tenant, count in rows}


@dataclass(frozen=True, slots=True)
class Choices:
    destinations: list[tuple[str, int]]  # (system, its dead letters)
    tenants: list[tuple[str, int]]


@dataclass(frozen=True, slots=True)
class Seen:
    """The systems and tenants the operator sees in the configuration in force."""

    systems: frozenset[str]
    tenants: frozenset[str]


def _seen(request: Request, operator: Operator) -> Seen:
    """Read before opening a store session: the configuration may poll the store, and every
    SQLite transaction takes the write lock (a session held open here would wait on itself)."""
    index = config_index(request)
    tenants = frozenset(visible_tenants(operator, index))
    systems = frozenset(s.id for s in index.config.systems if index.served_tenants(s.id) & tenants)
    return Seen(systems, tenants)


def _choices(seen: Seen, counts: dict[tuple[str, str], int]) -> Choices:
    per_destination: dict[str, int] = {}
    per_tenant: dict[str, int] = {}
    for (destination, tenant), count in counts.items():
        per_destination[destination] = per_destination.get(destination, 0) + count
        per_tenant[tenant] = per_tenant.get(tenant, 0) + count
    return Choices(
        [(d, per_destination.get(d, 0)) for d in sorted(seen.systems | per_destination.keys())],
        [(t, per_tenant.get(t, 0)) for t in sorted(seen.tenants | per_tenant.keys())],
    )


def _refused_filter(filters: Filters, choices: Choices) -> Finding | None:
    """RK-CON007 for a destination, tenant or why that is none of the choices."""
    allowed = {
        "destination": [d for d, _ in choices.destinations],
        "tenant": [t for t, _ in choices.tenants],
        "why": list(WHYS),
    }
    for name, value in filters.pairs():
        if value and value not in allowed[name]:
            expected = ", ".join(allowed[name])
            return make_finding("RK-CON007", path=f"/{name}", actual=value[:40], expected=expected)
    return None


def _narrowed(scope: frozenset[str] | None, filters: Filters) -> frozenset[str] | None:
    return frozenset({filters.tenant}) if filters.tenant else scope


@router.get("/console/dead-letters")
def dead_letters_page(
    request: Request, destination: str = "", tenant: str = "", after: str = ""
) -> Response:
    """``DEAD_SHOWN`` at a time, oldest first, with how many there are in all and which of
    them are shown; "next" continues after the last one shown (keyset), so every dead letter
    can be reached however many there are."""
    operator = signed_in(request)
    given = request.query_params.multi_items()
    if any(not value for _, value in given):  # the filter form sends "any" as blank
        kept = urlencode([(name, value) for name, value in given if value])
        return RedirectResponse(f"/console/dead-letters{'?' if kept else ''}{kept}", 303)
    scope = tenant_scope(operator)
    filters = Filters(destination, tenant)
    start = _key(after, "/after")
    seen = _seen(request, operator)
    with hub_of(request).store.sessions() as session:
        counts = _dead_counts(session, scope)
        choices = _choices(seen, counts)
        finding = _refused_filter(filters, choices)
        dead: list[operations.DeadLetter] = []
        total = before = 0
        if finding is None:
            tenants = _narrowed(scope, filters)
            dead = operations.list_dead(
                session,
                destination=destination or None,
                tenants=tenants,
                limit=DEAD_SHOWN,
                after=start,
            )
            total = sum(
                n
                for (d, t), n in counts.items()
                if (not destination or d == destination) and (not tenant or t == tenant)
            )
            remaining = operations.count_dead(
                session, tenants=tenants, destination=destination or None, after=start
            )
            before = total - remaining
    return render(
        request,
        "dead_letters.html",
        status=400 if finding else 200,
        finding=finding,
        dead=dead,
        total=total,
        first=before + 1,
        last=before + len(dead),
        next_after=dead[-1].id if dead and before + len(dead) < total else None,
        filters=filters if finding is None else Filters(),
        query=urlencode(filters.query()) if finding is None else "",
        choices=choices,
        done=_done(request),
    )


def _delivery_ids(values: Sequence[str]) -> list[int]:
    ids = sorted({n for v in values if v.isascii() and v.isdigit() and (n := int(v)) <= _MAX_KEY})
    if not ids:
        raise ConsoleRefusal(400, make_finding("RK-CON003", path="/delivery"))
    return ids


def _act_on_dead(
    request: Request, operator: Operator, action: str, ids: list[int], reason: str
) -> int:
    act: Callable[..., list[int]] = (
        operations.redeliver if action == "redeliver" else operations.discard
    )
    hub = hub_of(request)
    with hub.store.sessions.begin() as session:
        for tenant in set(session.scalars(select(Delivery.tenant).where(Delivery.id.in_(ids)))):
            require_operate(operator, tenant)
        changed = act(session, ids, reason=reason, actor=actor(operator))
    if changed and action == "redeliver":
        hub.wakeups.notify(())
    return len(changed)


def _action(form: Form) -> str:
    action = form.one("action")
    if action not in ACTIONS:
        raise ConsoleRefusal(400, make_finding("RK-CON003", path="/action"))
    return action


def _back_to_list(filters: Filters, action: str, count: int) -> RedirectResponse:
    query = urlencode({**filters.query(), "done": action, "n": count})
    return RedirectResponse(f"/console/dead-letters?{query}", status_code=303)


@router.post("/console/dead-letters")
async def dead_letters_action(request: Request) -> Response:
    form = await posted_form(request)
    operator = await run_in_threadpool(signed_in, request)
    action = _action(form)
    ids = _delivery_ids(form.all("delivery"))
    reason = stated_reason(form)
    count = await run_in_threadpool(_act_on_dead, request, operator, action, ids, reason)
    filters = Filters(form.one("destination"), form.one("tenant"))
    return _back_to_list(filters, action, count)


# --- every dead letter matching the filters ---------------------------------------------------


def _moment(value: str, path: str = "/looked") -> datetime:
    """A time the console wrote into a form — when the confirmation page was shown, when a
    paced redelivery started — read back (RK-CON001: altered)."""
    try:
        moment = datetime.fromisoformat(value)
    except ValueError:
        moment = None
    if moment is None or moment.tzinfo is None:
        raise ConsoleRefusal(400, make_finding("RK-CON001", path=path))
    return moment


@dataclass(frozen=True, slots=True)
class Pacing:
    """The window and the pace as the operator typed them on the confirmation page ("" =
    none): only those dead from ``dead_from`` to ``dead_to`` (days, 和暦 or 西暦, JST; the
    whole of the last day), and redelivered at ``per_second`` a second, the oldest first
    (``renkei dlq redeliver --all --from/--to --per-second``)."""

    dead_from: str = ""
    dead_to: str = ""
    per_second: str = ""

    def pairs(self) -> tuple[tuple[str, str], ...]:
        return (
            ("dead_from", self.dead_from),
            ("dead_to", self.dead_to),
            ("per_second", self.per_second),
        )

    def query(self) -> dict[str, str]:
        return {name: value for name, value in self.pairs() if value}


@dataclass(frozen=True, slots=True)
class Paced:
    """:class:`Pacing` read: the window's first and last instants, and the pace."""

    since: datetime | None
    until: datetime | None
    per_second: float | None


def _refused_pacing(pacing: Pacing) -> Finding | None:
    """An unreadable day (RK-CON004, as the console's other date fields), a first day after
    the last (RK-CON006), a pace that is no number the CLI takes (RK-CON007)."""
    days = {}
    for name, text in pacing.pairs()[:2]:  # the finding names the field (the form marks it)
        try:
            days[name] = parse_day(text)
        except DateRefused as refused:
            return replace(refused.finding, path=f"/{name}")
    first, last = days["dead_from"], days["dead_to"]
    if first and last and first > last:
        typed = pacing.dead_from.strip()[:40], pacing.dead_to.strip()[:40]
        return make_finding("RK-CON006", path="/dead_from", actual=typed[0], expected=typed[1])
    return refused_per_second(pacing.per_second)


def _paced(pacing: Pacing) -> Paced:
    """The window and pace read (ConsoleRefusal 400 with :func:`_refused_pacing`'s finding).
    A day is read as the CLI's ``--from`` / ``--to`` read one: from its first instant, to
    its last (JST)."""
    finding = _refused_pacing(pacing)
    if finding is not None:
        raise ConsoleRefusal(400, finding)
    first, last = parse_day(pacing.dead_from), parse_day(pacing.dead_to)
    return Paced(
        since=datetime.combine(first, datetime.min.time(), JST) if first else None,
        until=datetime.combine(last, datetime.max.time(), JST) if last else None,
        per_second=read_per_second(pacing.per_second) if pacing.per_second.strip() else None,
    )


def _pacing_of(values: Callable[[str], str]) -> Pacing:
    return Pacing(values("dead_from"), values("dead_to"), values("per_second"))


def _selection_of(
    request: Request,
    operator: Operator,
    filters: Filters,
    through: int,
    looked: datetime,
    paced: Paced | None = None,
) -> operations.DeadSelection:
    """The operator's selection, refused unless it may act on every tenant it covers (404 for
    a tenant it cannot see, 403 for one it only views; RK-CON007 for an unknown filter);
    ``paced``: only those dead in its window (as ``renkei dlq … --all --from/--to``)."""
    seen = _seen(request, operator)
    with hub_of(request).store.sessions() as session:
        counts = _dead_counts(session, tenant_scope(operator))
    finding = _refused_filter(filters, _choices(seen, counts))
    if finding is not None:
        raise ConsoleRefusal(400, finding)
    for tenant in [filters.tenant] if filters.tenant else sorted(seen.tenants):
        require_operate(operator, tenant)
    return operations.DeadSelection(
        tenants=_narrowed(tenant_scope(operator), filters),
        destination=filters.destination or None,
        why=filters.why or None,
        through=through,
        dead_by=min(looked, paced.until) if paced and paced.until else looked,
        dead_since=paced.since if paced else None,
    )


@router.get("/console/dead-letters/all")
def all_dead_page(request: Request, destination: str = "", tenant: str = "") -> Response:
    """The confirmation: how many match (by why), the window and the pace (a form that
    counts again), the reason, and a box to tick. The newest dead letter now is written into
    the form: the work stops there. A window or pace that cannot be read is shown again with
    its finding (400), and nothing can be acted on."""
    operator = signed_in(request)
    filters = Filters(destination, tenant)
    pacing = _pacing_of(lambda name: request.query_params.get(name, ""))
    finding = _refused_pacing(pacing)
    paced = _paced(pacing) if finding is None else None
    with hub_of(request).store.sessions() as session:
        through = operations.last_dead_id(session)
        # the workers stamp a death with the store's clock: so is "dead when looked"
        looked = database_now(session.connection())
    selection = _selection_of(request, operator, filters, through, looked, paced)
    sessions = hub_of(request).store.sessions
    whys = {} if finding else operations.dead_whys(sessions, selection, ALL_PAGE)
    total = sum(whys.values())
    per_second = paced.per_second if paced else None
    return render(
        request,
        "dead_letters_all.html",
        status=400 if finding else 200,
        finding=finding,
        filters=filters,
        pacing=pacing,
        query=urlencode(filters.query()),
        through=through,
        looked=looked.isoformat(),
        whys=[(why, whys.get(why, 0)) for why in (*WHYS, "") if whys.get(why) or why],
        total=total,
        per_second=f"{per_second:g}" if per_second else "",
        duration=duration(total, per_second) if per_second and total else None,
    )


@dataclass(frozen=True, slots=True)
class PacedRun:
    """A paced redelivery under way: when its first due time is (the store's time at its
    first step), how many a second, how many the earlier steps gave a time."""

    start: datetime
    per_second: float
    before: int


@dataclass(frozen=True, slots=True)
class Progress:
    changed: int
    after: int
    finished: bool


def _work(
    request: Request,
    operator: Operator,
    action: str,
    selection: operations.DeadSelection,
    after: int,
    reason: str,
    paced: PacedRun | None = None,
) -> Progress:
    """Pages of the work, each in its own transaction, for at most ``STEP_SECONDS`` or
    ``STEP_PAGES`` (at least one). ``paced``: a paced redelivery, its due times continuing
    from step to step."""
    hub = hub_of(request)
    deadline = time.monotonic() + STEP_SECONDS
    changed = 0
    spacing = operations.pace(paced.per_second) if paced else None
    for _ in range(STEP_PAGES):
        page = operations.act_on_dead_page(
            hub.store.sessions,
            action,
            selection,
            after=after,
            limit=ALL_PAGE,
            reason=reason,
            actor=actor(operator),
            due=operations.paced_due(paced.start, spacing, paced.before + changed)
            if paced
            else None,
            spacing=spacing,
        )
        changed, after = changed + page.changed, page.after
        if page.finished or time.monotonic() >= deadline:
            break
    if changed and action == "redeliver":
        hub.wakeups.notify(())
    return Progress(changed, after, page.finished)


@router.post("/console/dead-letters/all")
async def all_dead_action(request: Request) -> Response:
    """One step of redelivering or discarding every dead letter of the selection: answers with
    the progress and a form that continues (console.js submits it), or, when done, back to
    the list saying how many were acted on. Paced, the due times run on from the first
    step's time (written into the progress form) across the steps."""
    form = await posted_form(request)
    operator = await run_in_threadpool(signed_in, request)
    action = _action(form)
    if form.one("confirm") != "yes":
        raise ConsoleRefusal(400, make_finding("RK-CON003", path="/confirm"))
    reason = stated_reason(form)
    filters = Filters(form.one("destination"), form.one("tenant"), form.one("why"))
    through = _key(form.one("through"), "/through")
    looked = _moment(form.one("looked"))
    after = _key(form.one("after"), "/after")
    done_before = _key(form.one("done"), "/done")
    pacing = _pacing_of(form.one)
    paced = _paced(pacing)
    selection = await run_in_threadpool(
        _selection_of, request, operator, filters, through, looked, paced
    )
    run: PacedRun | None = None
    if paced.per_second and action == "redeliver":  # a discard is not paced (nor the CLI's)
        given = form.one("paced_from")
        start = _moment(given, "/paced_from") if given else await run_in_threadpool(_now, request)
        run = PacedRun(start, paced.per_second, done_before)
    step = await run_in_threadpool(_work, request, operator, action, selection, after, reason, run)
    done = done_before + step.changed
    if step.finished:
        return _back_to_list(Filters(filters.destination, filters.tenant), action, done)
    left = await run_in_threadpool(_left, request, selection, step.after)
    return render(
        request,
        "dead_letters_progress.html",
        action=action,
        filters=filters,
        reason=reason,
        through=through,
        looked=looked.isoformat(),
        pacing=pacing,
        paced_from=run.start.isoformat() if run else "",
        after=step.after,
        done_count=done,
        left=left,
    )


def _now(request: Request) -> datetime:
    """The store's time (a paced redelivery's first due time, as the CLI's)."""
    with hub_of(request).store.sessions() as session:
        return database_now(session.connection())


def _left(request: Request, selection: operations.DeadSelection, after: int) -> int:
    """Dead letters of the selection still ahead of the work (an upper bound with a why)."""
    with hub_of(request).store.sessions() as session:
        return operations.count_dead(
            session,
            tenants=selection.tenants,
            destination=selection.destination,
            after=after,
            through=selection.through,
            dead_by=selection.dead_by,
            dead_since=selection.dead_since,
        )
