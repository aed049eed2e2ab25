"""``renkei messages list/show/replay`` and ``renkei purge`` (``renkei audit``: bus.cli.audit)."""

from __future__ import annotations

import getpass
import json
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Annotated, Any

import typer
from rich.syntax import Syntax

from bus import wareki
from bus.cli import options, output
from bus.cli.app import app
from bus.pipeline import Finding
from bus.settings import Settings
from bus.store.compact import space
from bus.store.db import Store, open_store
from bus.store.queries import (
    DEFAULT_LIMIT,
    MessageDetail,
    MessageStatus,
    MessageSummary,
    StoreQueryError,
    list_messages,
    replay,
    show_message,
)
from bus.store.retention import purge as purge_store

EXIT_OK, EXIT_FAILED = 0, 1

messages_app = typer.Typer(help="Stored messages (メッセージ): list, show, replay.")
audit_app = typer.Typer(help="The tamper-evident audit trail (監査記録).")
app.add_typer(messages_app, name="messages")
app.add_typer(audit_app, name="audit")

TenantOption = Annotated[
    str | None, typer.Option("--tenant", help="全国地方公共団体コード (6 digits).")
]
JsonOption = Annotated[bool, typer.Option("--json", help="Print only JSON on stdout.")]


@contextmanager
def _store() -> Iterator[Store]:
    """The migrated store with a configuration in it (DESIGN §6: any command, any database)."""
    from bus.config.snapshots import ensure_config

    settings = Settings()
    store = open_store(settings)
    try:
        ensure_config(store.sessions, settings)
        yield store
    finally:
        store.close()


def _actor() -> str:
    return f"cli:{getpass.getuser()}"[:64]


def _json(payload: Any) -> None:
    output.print_json(payload)


def _fail(finding: Finding) -> typer.Exit:
    typer.echo(f"{finding.code} {finding.message_ja} / {finding.message_en}", err=True)
    return typer.Exit(EXIT_FAILED)


@messages_app.command("list")
def list_command(
    tenant: TenantOption = None,
    service: Annotated[str | None, typer.Option(help="Service name.")] = None,
    status: Annotated[MessageStatus | None, typer.Option(help="Derived status.")] = None,
    since: Annotated[
        str | None, typer.Option(help="Received at or after (ISO, or a 和暦 day).")
    ] = None,
    limit: Annotated[
        int, typer.Option(min=1, max=10_000, help="At most this many (1–10,000).")
    ] = DEFAULT_LIMIT,
    as_json: JsonOption = False,
) -> None:
    """The newest stored messages (subjects masked)."""
    start = options.moment(since, "--since")
    with _store() as store, store.sessions() as session:
        rows = list_messages(
            session,
            tenant=tenant,
            service=service,
            status=status,
            since=start,
            limit=limit,
        )
    if as_json:
        _json([row.as_dict() for row in rows])
        return
    _print_summaries(rows)


def _print_summaries(rows: list[MessageSummary]) -> None:
    table = output.table(
        "received (JST)",
        "messageId",
        "tenant",
        "system",
        "service",
        "kind",
        "status",
        "deliveries",
        title=f"messages ({len(rows)})",
        ids=("messageId",),
        right=("deliveries",),
    )
    for row in rows:
        table.add_row(
            row.received_at.astimezone(wareki.JST).strftime("%Y-%m-%d %H:%M:%S"),
            row.message_id,
            row.tenant,
            row.system,
            row.service,
            row.kind,
            row.status.value,
            str(row.deliveries),
        )
    output.print_tables(table)


@messages_app.command("show")
def show(
    message_id: Annotated[str, typer.Argument(help="The Header messageId.")],
    tenant: TenantOption = None,
    as_json: JsonOption = False,
) -> None:
    """Header, deliveries, audit trail and the body with personal data masked."""
    with _store() as store, store.sessions() as session:
        try:
            detail = show_message(session, message_id, tenant)
        except StoreQueryError as error:
            raise _fail(error.finding) from None
    if as_json:
        _json(detail.as_dict())
        return
    _print_detail(detail)


def _print_detail(detail: MessageDetail) -> None:
    console = output.console()
    summary = detail.summary
    header = output.table(
        "name", "value", show_header=False, title=f"message {summary.message_id}", ids=("value",)
    )
    for name, value in (
        ("tenant", summary.tenant),
        ("system", summary.system),
        ("service", summary.service),
        ("kind", summary.kind),
        ("subject", summary.subject or ""),
        ("correlationId", detail.correlation_id or ""),
        ("relatesTo", detail.relates_to or ""),
        ("received", summary.received_at.isoformat()),
        ("expires", summary.expires_at.isoformat() if summary.expires_at else ""),
        ("status", summary.status.value),
        ("digest", detail.digest),
    ):
        header.add_row(name, value)
    deliveries = output.table(
        "destination",
        "seq",
        "state",
        "waiting for",
        "attempts",
        "next attempt",
        "last error",
        title="deliveries",
        ids=("destination", "waiting for"),
        right=("seq", "attempts"),
    )
    for d in detail.deliveries:
        deliveries.add_row(
            d.destination,
            str(d.sequence),
            d.state,
            d.waiting_for or "",
            str(d.attempts),
            d.next_attempt_at.isoformat(),
            d.last_error or "",
        )
    trail = output.table(
        "seq", "at", "event", "actor", "detail", title="audit", ids=("actor",), right=("seq",)
    )
    for a in detail.audit:
        trail.add_row(str(a.seq), a.at.isoformat(), a.event, a.actor or "", json.dumps(a.detail))
    output.print_tables(header, deliveries, trail, to=console)
    console.print(Syntax(detail.body, "xml", word_wrap=True))


@messages_app.command("replay")
def replay_command(
    message_id: Annotated[str, typer.Argument(help="The Header messageId.")],
    reason: Annotated[
        str,
        typer.Option(help="Why (kept as a digest in the audit trail).", callback=options.reason),
    ],
    tenant: TenantOption = None,
    to: Annotated[str | None, typer.Option("--to", help="Only this destination system.")] = None,
) -> None:
    """Send a stored message again: new deliveries at the end of each subject's order."""
    with _store() as store:
        try:
            report = replay(
                store.sessions,
                message_id,
                reason=reason,
                tenant=tenant,
                to=to,
                actor=_actor(),
            )
        except StoreQueryError as error:
            raise _fail(error.finding) from None
    for destination, sequence in report.deliveries:
        typer.echo(f"replayed {report.message_id} → {destination} (seq {sequence})")


@app.command()
def purge(as_json: JsonOption = False) -> None:
    """Delete messages past their retention whose deliveries are all resolved."""
    with _store() as store:
        report = purge_store(store.sessions)
        found = space(store.engine)
    if as_json:
        _json({"messages": report.messages, "deliveries": report.deliveries})
        return
    typer.echo(f"purged {report.messages} message(s), {report.deliveries} delivery(ies)")
    if found is not None and found.free_pages:  # SQLite: the file does not shrink by itself
        typer.echo(
            f"ストア内の空き free in the store: {found.reclaimable / 1024 / 1024:,.1f} MiB"
            f" ({found.free_pages:,} / {found.pages:,} pages); ディスクへ返すには to give it"
            " back to the disk: renkei store compact",
            err=True,
        )
