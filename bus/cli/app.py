"""The ``renkei`` typer application that every command module registers on.

Called as the ``renkei`` console script, the app imports only the module of the command it
runs: every module together pulls in SQLAlchemy, alembic, openpyxl, httpx and the hub, ~1.3 s
before the first line of work, which ``renkei validate`` or ``renkei catalog`` never needs.
``renkei --help`` (or no command, or an unknown one) loads none: it lists the commands from
SUMMARY_OF_COMMAND, each one's summary as its module gives it (tests/test_cli_loading.py).
"""

from __future__ import annotations

import importlib
import pkgutil
import sys
from pathlib import Path
from typing import Any, TypeVar

import typer
from typer.core import TyperGroup

# every command module: the package's other files (so a new one is loaded by ``--help`` and
# tests/test_cli_loading.py finds its commands missing from MODULE_OF_COMMAND)
MODULES = tuple(
    sorted(m.name for m in pkgutil.iter_modules([str(Path(__file__).parent)]) if m.name != "app")
)
MODULE_OF_COMMAND = {
    "audit": "audit",
    "catalog": "validate",
    "config": "config",
    "demo": "demo",
    "destinations": "dispatch",
    "dlq": "dispatch",
    "folders": "folders",
    "import": "imports",
    "keys": "identities",
    "mapping": "mapping",
    "messages": "trail",  # imports bus.cli.store (list/show/replay) and adds `trail`
    "purge": "store",
    "samples": "validate",
    "serve": "serve",
    "store": "store_transfer",
    "tenants": "offboard",  # imports bus.cli.identities (add/list/…) and adds export/purge
    "users": "identities",
    "validate": "validate",
    "worker": "dispatch",
}

#: Every command's summary (the first paragraph of its help), in the order ``renkei --help``
#: lists them, which lists them from here and so imports no command module (~1.2 s of imports).
SUMMARY_OF_COMMAND = {
    "purge": "Delete messages past their retention whose deliveries are all resolved.",
    "demo": "Send sample traffic to a running hub (`renkei serve`) and print each message's trace\n"
    "from the Message Store: received → routed → delivered per destination.",
    "worker": "Run dispatch workers (PostgreSQL only; start as many processes as needed).",
    "serve": "Run the hub. The embedded default needs nothing else: a SQLite file under\n"
    "RENKEI_DATA_DIR, in-process workers (RENKEI_DISPATCH_WORKERS, default 2) and the sample\n"
    "configuration, whose sample connected systems start too (``--no-samples`` to skip;\n"
    "``--samples`` with another configuration).",
    "catalog": "List the catalogue: 72 standard + 42 extension items (データ項目一覧).",
    "validate": "Validate messages. Exit 0 valid (warnings allowed), 1 invalid, 2 unreadable file.",
    "messages": "Stored messages (メッセージ): list, show, replay.",
    "audit": "The tamper-evident audit trail (監査記録).",
    "config": "The hub's configuration (設定): check, export, apply, show.",
    "dlq": "The Dead Letter Channel: list, redeliver, discard.",
    "destinations": "Destination systems: list their state, pause (planned downtime, an outage), "
    "resume.",
    "folders": "File linkage hot folders (ファイル連携).",
    "keys": "接続システムの資格情報 credentials of connected systems.",
    "tenants": "団体 tenants: onboard, list, disable, export, purge.",
    "users": "操作者 operator accounts.",
    "import": "Batch imports (一括取込み).",
    "mapping": "Mapping files (変換定義): check, test, apply, coverage.",
    "store": "The message store as a whole (ストア): copy it to PostgreSQL.",
    "samples": "Sample messages for integrators and tests.",
}


#: ``ctx.meta`` key: the command line asks for a command's help (no settings needed)
_ASKS_HELP = "renkei.asks_help"
#: the modules whose commands work on files alone and never read ``RENKEI_*``
_READ_NO_SETTINGS = frozenset({"validate", "mapping"})

#: The exit status of a command the store could not serve now (as of a store not opened).
EXIT_STORE_UNAVAILABLE = 2

_App = TypeVar("_App", bound=typer.Typer)


class _Commands(TyperGroup):
    """Every command: a store that cannot be reached now (the database down or its
    connections lost, a lock held elsewhere past ``RENKEI_DATABASE_LOCK_TIMEOUT``) is one
    coded line, RK-OPS001 with the reason (RK-OPS013: another process holds the SQLite
    store's lock; RK-OPS015: the store has no room), and exit status 2, not a traceback. What a
    command committed before stays; its current transaction was rolled back."""

    def parse_args(self, ctx: Any, args: list[str]) -> list[str]:
        # the command line as given: the group's callback runs before a command's --help
        ctx.meta[_ASKS_HELP] = any(arg in ctx.help_option_names for arg in args)
        return super().parse_args(ctx, args)

    def invoke(self, ctx: Any) -> Any:  # typer's own click Context (a private module)
        try:
            return super().invoke(ctx)
        except Exception as error:
            if "sqlalchemy" not in sys.modules:  # no store was used: not a store's error
                raise
            from bus.store.db import unreachable_finding
            from bus.store.storage_full import is_storage_full
            from bus.store.write_health import describe, is_store_unavailable

            if not (is_store_unavailable(error) or is_storage_full(error)):
                raise
            finding = unreachable_finding(error, describe(error))
            typer.echo(f"{finding.code} {finding.message_ja} / {finding.message_en}", err=True)
            raise typer.Exit(EXIT_STORE_UNAVAILABLE) from None


class _Renkei(typer.Typer):
    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        from bus.protection.file_modes import keep_files_private

        keep_files_private()  # before any command creates a file (docs/data-protection.md)
        command = sys.argv[1] if len(sys.argv) > 1 else None
        if command not in MODULE_OF_COMMAND:  # the list of commands, or a usage error
            return listing()(*args, **kwargs)
        load_commands(command)
        return super().__call__(*args, **kwargs)


def _renkei(kind: type[_App]) -> _App:
    """The app, or its :func:`listing`: the same name, help and behaviour."""
    return kind(
        name="renkei",
        help="renkei (連携): data-integration hub for municipalities sharing core systems.",
        no_args_is_help=True,
        add_completion=False,
        cls=_Commands,
    )


app = _renkei(_Renkei)


#: Commands whose standard error is the hub's JSON log lines (one object a line): no plain
#: notice among them
_LOGS_JSON = frozenset({"serve", "worker"})


@app.callback()
def _group(ctx: typer.Context) -> None:
    """Keeps ``renkei COMMAND`` a command group when the app holds a single command, as it
    does when only that command's module is loaded; and reads the ``RENKEI_*`` settings
    before any command that uses them starts (its ``--help`` aside), so a value that cannot be used
    stops it with RK-OPS010 (exit 2) rather than a traceback from wherever it is first read.
    ``renkei serve``'s HTTP and dispatch processes inherit the values checked here."""
    offline = MODULE_OF_COMMAND.get(ctx.invoked_subcommand or "") in _READ_NO_SETTINGS
    if ctx.resilient_parsing or ctx.meta.get(_ASKS_HELP) or offline:
        return
    check_settings()
    if ctx.invoked_subcommand in _LOGS_JSON:  # their store.migrated log line says it
        return
    from bus.cli.migration_notice import announce_migrations

    announce_migrations()  # a store this command upgrades is named on the terminal


def check_settings() -> None:
    """Every refused ``RENKEI_*`` value on its own line (RK-OPS010), then exit 2."""
    from pydantic import ValidationError

    from bus.settings import Settings, settings_refusals

    try:
        Settings()
    except ValidationError as error:
        for finding in settings_refusals(error):
            typer.echo(f"{finding.code} {finding.message_ja} / {finding.message_en}", err=True)
        raise typer.Exit(2) from None


def listing() -> typer.Typer:
    """The app as ``renkei --help`` shows it, with no command module: each command by its
    name and summary (SUMMARY_OF_COMMAND). It runs no command: a command's name on the
    command line goes to :data:`app` with that command's module."""
    commands = _renkei(typer.Typer)
    commands.callback()(_group)
    for name, summary in SUMMARY_OF_COMMAND.items():
        commands.command(name, help=summary)(_listed)
    return commands


def _listed() -> None:  # pragma: no cover - only listed, never run
    """A command as listed by :func:`listing`."""


def load_commands(command: str | None = None) -> typer.Typer:
    """The app with ``command``'s module registered; every module when ``command`` is None
    or not a command's name."""
    module = MODULE_OF_COMMAND.get(command or "")
    for name in (module,) if module else MODULES:
        importlib.import_module(f"bus.cli.{name}")
    return app
