"""Dispatch commands: ``renkei worker``, ``renkei dlq list/redeliver/discard`` and
``renkei destinations pause/resume``. Each opens the store from the environment
(``RENKEI_DATABASE_URL``, ``RENKEI_DATA_DIR``) and audits what it changes."""

from __future__ import annotations

import getpass
import os
import signal
import threading
import time
from dataclasses import dataclass
from datetime import datetime, timedelta
from enum import StrEnum
from typing import TYPE_CHECKING, Annotated, Any

import typer

from bus.cli import options, output
from bus.cli.app import app
from bus.cli.config import configured_store
from bus.dispatch import operations
from bus.dispatch.claims import paused_destinations
from bus.errors import make_finding
from bus.pipeline import Finding
from bus.settings import Settings
from bus.store.clock import database_now
from bus.store.db import Store, open_store

if TYPE_CHECKING:
    from bus.dispatch.worker import WorkerPool

dlq_app = typer.Typer(
    help="The Dead Letter Channel: list, redeliver, discard.", no_args_is_help=True
)
destinations_app = typer.Typer(
    help="Destination systems: list their state, pause (planned downtime, an outage), resume.",
    no_args_is_help=True,
)
app.add_typer(dlq_app, name="dlq")
app.add_typer(destinations_app, name="destinations")

EXIT_REFUSED = 1
ReasonOption = Annotated[
    str, typer.Option(help="Why (recorded in the audit trail).", callback=options.reason)
]
FromFilter = Annotated[
    str | None,
    typer.Option(
        "--from",
        help="Only those that died at or after this time (ISO, or a 和暦 day; JST when no zone).",
    ),
]
ToFilter = Annotated[
    str | None,
    typer.Option(
        "--to", help="Only those that died at or before this time (a day alone: the whole day)."
    ),
]
PerSecondOption = Annotated[
    float | None,
    typer.Option(
        "--per-second",
        min=0.01,
        max=10_000,
        help="Paced: make them due at this many a second, the oldest first (the destination "
        "is not flooded, other destinations' new messages are not queued behind the backlog).",
    ),
]
SQLITE_REFUSAL = (
    "renkei worker needs PostgreSQL (RENKEI_DATABASE_URL=postgresql+psycopg://…): separate "
    "worker processes cannot share a SQLite file safely. On SQLite, `renkei serve` runs the "
    "workers itself (in-process, or in dispatch processes it starts: --dispatch-processes)."
)


def _actor() -> str:
    try:
        return f"cli:{getpass.getuser()}"[:64]
    except (KeyError, OSError):
        return "cli"


def _open() -> Store:
    return open_store(Settings())


def _report(finding: Finding) -> None:
    typer.echo(f"{finding.code} {finding.message_ja} / {finding.message_en}", err=True)


def _refuse(finding: Finding) -> typer.Exit:
    _report(finding)
    return typer.Exit(EXIT_REFUSED)


def _system_tenants(store: Store, system: str, *, resuming: bool = False) -> list[str] | None:
    """The tenants ``system`` serves in the configuration in force. A system that is not
    configured is refused (RK-TEN005; the console answers 404), except to resume one still
    paused after it left the configuration: None (audited to its deliveries' tenants)."""
    from bus.config.snapshots import load_snapshot

    index = load_snapshot(store.sessions).index
    if index.system(system) is not None:
        return [t.code for t in index.config.tenants if index.serves(system, t.code)]
    if resuming:
        with store.sessions() as session:
            if system in paused_destinations(session):
                return None
    raise _refuse(make_finding("RK-TEN005", path="/system", actual=system[:40]))


@dlq_app.command("list")
def dlq_list(
    tenant: Annotated[str | None, typer.Option(help="Only this tenant (団体コード).")] = None,
    destination: Annotated[str | None, typer.Option(help="Only this destination.")] = None,
    as_json: Annotated[bool, typer.Option("--json", help="JSON on stdout.")] = False,
    limit: Annotated[int, typer.Option(min=1, help="At most this many.")] = 1000,
    start: FromFilter = None,
    end: ToFilter = None,
) -> None:
    """Dead letters with why (permanent: refused by the destination; attempts / age: the
    retry policy ran out) and their last error (``--json``: with the whole attempt history)."""
    since, until = options.moment(start, "--from"), options.moment(end, "--to", end=True)
    store = _open()
    try:
        with store.sessions() as session:
            dead = operations.list_dead(
                session,
                tenant=tenant,
                destination=destination,
                limit=limit + 1,
                dead_since=since,
                dead_by=until,
            )
    finally:
        store.close()
    if len(dead) > limit:  # said on stderr, so --json output stays one document
        dead = dead[:limit]
        shown = f"最初の {limit} 件のみ表示しています / the first {limit} only (--limit)"
        typer.echo(shown, err=True)
    if as_json:
        output.print_json([_as_json(d) for d in dead])
        return
    table = output.table(
        "id",
        "tenant",
        "destination",
        "service",
        "messageId",
        "attempts",
        "why",
        "last error",
        ids=("id", "destination", "messageId"),
        right=("id", "attempts"),
    )
    for d in dead:
        table.add_row(
            str(d.id),
            d.tenant,
            d.destination,
            d.service,
            d.message_id,
            str(d.attempts),
            d.reason or "",
            d.last_error or "",
        )
    output.print_tables(table)


def _as_json(dead: operations.DeadLetter) -> dict[str, Any]:
    return {
        "id": dead.id,
        "message_id": dead.message_id,
        "service": dead.service,
        "tenant": dead.tenant,
        "destination": dead.destination,
        "sequence": dead.sequence,
        "attempts": dead.attempts,
        "reason": dead.reason,  # permanent | attempts | age
        "last_error": dead.last_error,
        "finished_at": dead.finished_at,  # output.print_json: ISO 8601 with the offset
        "history": [
            {"attempt": h.attempt, "at": h.at, "outcome": h.outcome, "error": h.error}
            for h in dead.history
        ],
    }


def _act(action: str, ids: list[int], reason: str, spacing: timedelta | None = None) -> None:
    store = _open()
    try:
        with store.sessions.begin() as session:
            if action == "redeliver":
                changed = operations.redeliver(
                    session, ids, reason=reason, actor=_actor(), spacing=spacing
                )
            else:
                changed = operations.discard(session, ids, reason=reason, actor=_actor())
        if action == "redeliver" and changed:
            _wake_dispatch()
        skipped = sorted(set(ids) - set(changed))
        if skipped:
            with store.sessions() as session:
                found = operations.deliveries_at(session, skipped)
    finally:
        store.close()
    verb = "redelivered" if action == "redeliver" else "discarded"
    typer.echo(f"{verb}: {', '.join(map(str, changed)) or 'none'}")
    if skipped:
        for delivery in skipped:
            _report(make_finding("RK-STO006", path="/", actual=delivery))
            typer.echo(f"  {_where(delivery, found.get(delivery))}", err=True)
        raise typer.Exit(EXIT_REFUSED)


def _wake_dispatch() -> None:
    from bus.dispatch.wakeup import Wakeups

    wakeups = Wakeups.for_settings(Settings())
    wakeups.notify(())
    wakeups.close()


class DeadReason(StrEnum):
    """Why a letter is dead, as ``renkei dlq list`` shows it."""

    permanent = "permanent"
    attempts = "attempts"
    age = "age"


@dataclass(frozen=True, slots=True)
class Selection:
    """``--all`` and the filters that narrow it."""

    every: bool
    tenant: str | None
    destination: str | None
    why: DeadReason | None
    since: datetime | None = None  # dead at or after (--from)
    until: datetime | None = None  # dead at or before (--to)
    per_second: float | None = None  # paced redelivery (--per-second)

    def narrowed(self) -> bool:
        return any((self.tenant, self.destination, self.why, self.since, self.until))


ALL_PAGE = 500  # dead letters per transaction with --all: the write lock is held briefly


def _misnamed(ids: list[int] | None, selection: Selection) -> str | None:
    """What is wrong with how the dead letters were named, or None."""
    if ids and selection.every:
        return "ids and --all"
    if ids and selection.narrowed():
        return "ids with filters"
    if not ids and not selection.every:
        return "filters without --all" if selection.narrowed() else "neither ids nor --all"
    return None


def _act_on(action: str, ids: list[int] | None, reason: str, selection: Selection) -> None:
    misnamed = _misnamed(ids, selection)
    if misnamed:
        finding = make_finding("RK-CON009", path="/ids", actual=misnamed)
        raise options.usage_error(finding, "--all")
    if ids:
        _act(action, ids, reason, operations.pace(selection.per_second))
    else:
        _act_on_all(action, reason, selection)


def _act_on_all(action: str, reason: str, selection: Selection) -> None:
    """Every dead letter matching the selection that is dead now (up to the newest id at the
    start, dead by then), in pages of ALL_PAGE, each in its own transaction (the console's
    bulk action does the same steps: :func:`operations.act_on_dead_page`)."""
    store = _open()
    changed = 0
    try:
        with store.sessions() as session:
            through = operations.last_dead_id(session)
            # the workers stamp a death with the store's clock: so is "dead by now"
            dead_by = now = database_now(session.connection())
        chosen = operations.DeadSelection(
            tenants={selection.tenant} if selection.tenant else None,
            destination=selection.destination,
            why=selection.why,
            through=through,
            dead_by=min(dead_by, selection.until) if selection.until else dead_by,
            dead_since=selection.since,
        )
        total = _count_selected(store, chosen)
        after, finished, seen = 0, through == 0, 0
        verb_ja = "再送" if action == "redeliver" else "破棄"
        started = time.monotonic()
        spacing = operations.pace(selection.per_second)
        while not finished:
            page = operations.act_on_dead_page(
                store.sessions,
                action,
                chosen,
                after=after,
                limit=ALL_PAGE,
                reason=reason,
                actor=_actor(),
                due=operations.paced_due(now, spacing, changed),
                spacing=spacing,
            )
            changed += page.changed
            seen += page.seen
            after, finished = page.after, page.finished
            if action == "redeliver" and page.changed:
                _wake_dispatch()  # the workers start on this page while the next is done
            if total > ALL_PAGE:  # progress on stderr: stdout keeps the one result line
                typer.echo(
                    f"{seen}/{total} 件を確認、{changed} 件を{verb_ja} "
                    f"({time.monotonic() - started:.1f} s) / {seen} of {total} looked at, "
                    f"{changed} acted on",
                    err=True,
                )
    finally:
        store.close()
    verb = "redelivered" if action == "redeliver" else "discarded"
    typer.echo(f"{verb}: {changed}（{changed} 件を{verb_ja}しました）")
    if spacing and changed:
        _say_paced(changed, selection.per_second or 0)


def _say_paced(count: int, per_second: float) -> None:
    """When a paced backlog will have been sent (at the earliest), on stderr."""
    seconds = count / per_second
    minutes = seconds >= 60
    ja = f"{seconds / 60:.0f} 分" if minutes else f"{seconds:.0f} 秒"
    en = f"{seconds / 60:.0f} min" if minutes else f"{seconds:.0f} s"
    typer.echo(
        f"毎秒 {per_second:g} 件ずつ、約 {ja}かけて送ります / paced at {per_second:g} a second: "
        f"about {en}",
        err=True,
    )


def _count_selected(store: Store, chosen: operations.DeadSelection) -> int:
    """How many dead letters the selection holds before narrowing by why (progress)."""
    with store.sessions() as session:
        return operations.count_dead(
            session,
            tenants=chosen.tenants,
            destination=chosen.destination,
            through=chosen.through,
            dead_by=chosen.dead_by,
            dead_since=chosen.dead_since,
        )


_STATES_JA = {
    "pending": "配信待ち（再試行中を含む）",
    "delivered": "配信済み",
    "discarded": "破棄済み",
}


def _where(delivery: int, found: operations.DeliveryAt | None) -> str:
    """What an operator needs to know about a delivery that is not dead: it does not exist,
    it is still being tried, or — delivered or discarded — how to send its message again."""
    if found is None:
        return f"配信 {delivery} はありません / there is no delivery {delivery} (renkei dlq list)"
    line = (
        f"配信 {delivery} は{_STATES_JA.get(found.state, found.state)}です / "
        f"delivery {delivery} is {found.state}"
    )
    if found.state == "pending":
        return line
    return (
        f"{line}; 再送 / to send it again: renkei messages replay {found.message_id} "
        f"--tenant {found.tenant} --to {found.destination} --reason …"
    )


IdsArgument = Annotated[
    list[int] | None,
    typer.Argument(
        help="Delivery ids (see `renkei dlq list`); or --all with filters.", show_default=False
    ),
]
AllOption = Annotated[
    bool,
    typer.Option(
        "--all",
        help="Every dead letter matching --tenant/--destination/--why (after an outage).",
    ),
]
TenantFilter = Annotated[str | None, typer.Option(help="With --all: only this tenant.")]
DestinationFilter = Annotated[str | None, typer.Option(help="With --all: only this destination.")]
WhyFilter = Annotated[
    DeadReason | None,
    typer.Option(help="With --all: only those dead for this reason.", case_sensitive=False),
]


@dlq_app.command("redeliver")
def dlq_redeliver(
    reason: ReasonOption,
    ids: IdsArgument = None,
    every: AllOption = False,
    tenant: TenantFilter = None,
    destination: DestinationFilter = None,
    why: WhyFilter = None,
    start: FromFilter = None,
    end: ToFilter = None,
    per_second: PerSecondOption = None,
) -> None:
    """Back to pending with attempts reset; the subject's later deliveries follow it."""
    since, until = options.moment(start, "--from"), options.moment(end, "--to", end=True)
    chosen = Selection(every, tenant, destination, why, since, until, per_second)
    _act_on("redeliver", ids, reason, chosen)


@dlq_app.command("discard")
def dlq_discard(
    reason: ReasonOption,
    ids: IdsArgument = None,
    every: AllOption = False,
    tenant: TenantFilter = None,
    destination: DestinationFilter = None,
    why: WhyFilter = None,
    start: FromFilter = None,
    end: ToFilter = None,
) -> None:
    """Give up on dead letters: their subjects' later deliveries flow on."""
    since, until = options.moment(start, "--from"), options.moment(end, "--to", end=True)
    _act_on("discard", ids, reason, Selection(every, tenant, destination, why, since, until))


def _since(moment: datetime | None, now: datetime) -> str:
    """How long ago (or, ahead, in how long) ``moment`` is, as an operator reads it."""
    if moment is None:
        return ""
    seconds = int((now - moment).total_seconds())
    span = abs(seconds)
    text = f"{span // 86400}日{span % 86400 // 3600}時間" if span >= 86400 else ""
    text = text or (
        f"{span // 3600}時間{span % 3600 // 60}分" if span >= 3600 else f"{span // 60}分"
    )
    return f"{text}前" if seconds >= 0 else f"{text}後"


@destinations_app.command("list")
def destinations_list(
    as_json: Annotated[bool, typer.Option("--json", help="JSON on stdout.")] = False,
) -> None:
    """Each destination's state (稼働中, paused, held by its Retry-After) and what waits for it:
    pending, of which retrying, and dead — what an outage looks like from the hub — with its
    ``max_in_flight`` (同時送信数の上限) when the configuration in force gives it one."""
    store = _open()
    try:
        with store.sessions() as session:
            now = database_now(session.connection())
            overview = operations.destination_overview(session, now)
        limits = _in_flight_limits(store)
    finally:
        store.close()
    if as_json:
        output.print_json([_overview_json(o, limits.get(o.system)) for o in overview])
        return
    table = output.table(
        "destination",
        "state",
        "waiting",
        "retrying",
        "dead",
        "oldest waiting",
        "oldest dead",
        "next retry",
        "max in flight",
        ids=("destination",),
        right=("waiting", "retrying", "dead", "max in flight"),
    )
    for o in overview:
        limit = limits.get(o.system)
        table.add_row(
            o.system,
            _state_ja(o),
            str(o.waiting),
            str(o.retrying),
            str(o.dead),
            _since(o.oldest_waiting, now),
            _since(o.oldest_dead, now),
            _since(o.next_retry, now),
            "" if limit is None else str(limit),
        )
    output.print_tables(table)


def _in_flight_limits(store: Store) -> dict[str, int]:
    """Each system's ``max_in_flight`` in the configuration in force (none stored: none)."""
    from bus.config.snapshots import NoConfiguration, load_snapshot
    from bus.dispatch.worker import in_flight_limits

    try:
        return in_flight_limits(load_snapshot(store.sessions).config)
    except NoConfiguration:
        return {}


def _state_ja(overview: operations.DestinationOverview) -> str:
    if overview.paused:
        return f"一時停止中 / paused ({overview.reason or ''})"
    if overview.held_until is not None:
        return f"送信を控え中 / held until {overview.held_until.isoformat(timespec='seconds')}"
    if overview.retrying and overview.dead:
        return "再試行中・配信不能あり / retrying, dead letters"
    if overview.dead:
        return "配信不能あり / dead letters"
    if overview.retrying:
        return "再試行中 / retrying"
    return "稼働中 / active"


def _overview_json(
    overview: operations.DestinationOverview, max_in_flight: int | None = None
) -> dict[str, Any]:
    return {
        "destination": overview.system,
        "paused": overview.paused,
        "reason": overview.reason,
        "held_until": overview.held_until,
        "waiting": overview.waiting,
        "retrying": overview.retrying,
        "dead": overview.dead,
        "oldest_waiting": overview.oldest_waiting,
        "oldest_dead": overview.oldest_dead,
        "next_retry": overview.next_retry,
        "max_in_flight": max_in_flight,
    }


@destinations_app.command("pause")
def destinations_pause(
    system: Annotated[str, typer.Argument(help="The destination system id.")],
    reason: ReasonOption,
) -> None:
    """Hold deliveries to SYSTEM (planned downtime) without burning attempts."""
    store = configured_store()
    try:
        tenants = _system_tenants(store, system)
        with store.sessions.begin() as session:
            operations.pause(session, system, reason=reason, actor=_actor(), tenants=tenants)
        lease = Settings().dispatch_lease_seconds
        sending = operations.wait_for_sends(store.sessions, system, timeout=lease)
    finally:
        store.close()
    typer.echo(f"paused: {system}")
    if sending:
        _report(make_finding("RK-OPS011", path="/", actual=system, expected=sending))


@destinations_app.command("resume")
def destinations_resume(
    system: Annotated[str, typer.Argument(help="The destination system id.")],
    reason: Annotated[
        str | None, typer.Option(help="Recorded in the audit trail.", callback=options.reason)
    ] = None,
    per_second: PerSecondOption = None,
) -> None:
    """Resume deliveries to SYSTEM: its waiting deliveries are due at once (also when it
    was not paused: after an outage, say the system is back instead of waiting out the
    back-off). Time paused does not count against their age."""
    store = configured_store()
    try:
        tenants = _system_tenants(store, system, resuming=True)
        with store.sessions.begin() as session:
            due = operations.resume(
                session,
                system,
                reason=reason,
                actor=_actor(),
                tenants=tenants,
                spacing=operations.pace(per_second),
            )
        from bus.dispatch.wakeup import Wakeups

        wakeups = Wakeups.for_settings(Settings())
        wakeups.notify([system])
        wakeups.close()
    finally:
        store.close()
    typer.echo(f"resumed: {system}")
    if due and per_second:
        _say_paced(due, per_second)
    elif due:
        typer.echo(
            f"再試行待ちの {due} 件を今すぐ配信対象にしました / {due} waiting retries due now",
            err=True,
        )


def _dead_workers(pool: WorkerPool) -> list[str]:
    """The pool's workers whose thread has ended (an error no round catches): the process
    would idle on, dispatching less or nothing, and still exit 0 when stopped."""
    alive = {thread.name for thread in threading.enumerate()}
    return [w.worker_id for w in pool.workers if f"renkei-{w.worker_id}" not in alive]


@app.command()
def worker(
    concurrency: Annotated[int, typer.Option(help="Worker threads in this process.")] = 4,
    batch: Annotated[int, typer.Option(help="Deliveries claimed per round.")] = 50,
    lease_seconds: Annotated[float, typer.Option(help="Lease on a claimed delivery.")] = 30.0,
    poll_seconds: Annotated[float, typer.Option(help="Poll fallback when no wake-up.")] = 1.0,
    metrics_port: Annotated[
        int | None,
        typer.Option(help="Serve /metrics on this port (a worker host without the hub)."),
    ] = None,
    metrics_host: Annotated[str, typer.Option(help="Address for --metrics-port.")] = "127.0.0.1",
) -> None:
    """Run dispatch workers (PostgreSQL only; start as many processes as needed)."""
    from bus.dispatch.processes import serve_parent

    settings = Settings()
    parent = serve_parent()  # a dispatch process of `renkei serve` (bus/dispatch/processes.py)
    if settings.is_sqlite and parent is None:
        typer.echo(SQLITE_REFUSAL, err=True)
        raise typer.Exit(2)
    from bus.config.snapshots import ConfigProvider, ensure_config
    from bus.dispatch import heartbeat
    from bus.dispatch.wakeup import Wakeups
    from bus.dispatch.worker import WorkerPool
    from bus.observability.logs import configure_logging, get_logger
    from bus.observability.metrics import serve_metrics
    from bus.observability.store_gauges import StoreCollector

    configure_logging()
    log = get_logger(__name__)
    store = open_store(settings)
    ensure_config(store.sessions, settings)
    provider = ConfigProvider(store.sessions)
    wakeups = Wakeups.for_settings(settings)
    pool = WorkerPool(
        concurrency,
        store.sessions,
        lambda: provider.current().index,
        wakeups,
        batch=batch,
        lease_seconds=lease_seconds,
        poll_seconds=poll_seconds,
    )
    stop = threading.Event()
    for signum in (signal.SIGTERM, signal.SIGINT):
        signal.signal(signum, lambda *_: stop.set())
    if metrics_port is not None:
        gauges = StoreCollector(store.sessions, lambda: provider.current().version)
        serve_metrics(metrics_port, metrics_host, [gauges])
    pool.start()
    if parent is None:
        typer.echo(f"renkei worker: {concurrency} workers", err=True)
    else:  # serve's dispatch process: a JSON line among serve's own
        log.info("dispatch.process_ready", workers=concurrency, serve=parent)
    beats = heartbeat.beat_dir(settings.data_dir) if parent is not None else None
    beat_file = heartbeat.BeatFile(beats) if beats is not None else None
    dead: list[str] = []
    try:
        while not stop.wait(1.0):
            if parent is not None and os.getppid() != parent:
                log.warning("dispatch.serve_gone", serve=parent)
                break
            if dead := _dead_workers(pool):
                # exit non-zero: a process manager (systemd Restart=on-failure) restarts it
                log.error("dispatch.worker_died", workers=dead)
                break
            if beat_file is not None:  # serve's /readyz reads it (bus/dispatch/heartbeat.py)
                change = beat_file.write(pool.heartbeat)
                if change is not None and change[0] == "failed":
                    log.warning("dispatch.heartbeat_not_written", error=change[1])
                elif change is not None:
                    log.info("dispatch.heartbeat_written_again", had_failed=change[1])
    finally:
        if beats is not None:
            heartbeat.remove_beat(beats)
        pool.stop()
        wakeups.close()
        store.close()
    if dead:
        raise typer.Exit(1)
