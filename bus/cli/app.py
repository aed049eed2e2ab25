"""The ``renkei`` typer application that every command module registers on.

Called as the ``renkei`` console script, the app imports only the module of the command it
runs: every module together pulls in SQLAlchemy, alembic, openpyxl, httpx and the hub, ~1.3 s
before the first line of work, which ``renkei validate`` or ``renkei catalog`` never needs.
``renkei --help`` (or an unknown command) loads them all, in the order the help lists them.
"""

from __future__ import annotations

import importlib
import pkgutil
import sys
from pathlib import Path
from typing import Any

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


#: ``ctx.meta`` key: the command line asks for a command's help (no settings needed)
_ASKS_HELP = "renkei.asks_help"
#: the modules whose commands work on files alone and never read ``RENKEI_*``
_READ_NO_SETTINGS = frozenset({"validate", "mapping"})

#: The exit status of a command the store could not serve now (as of a store not opened).
EXIT_STORE_UNAVAILABLE = 2


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
        load_commands(sys.argv[1] if len(sys.argv) > 1 else None)
        return super().__call__(*args, **kwargs)


app = _Renkei(
    name="renkei",
    help="renkei (連携): data-integration hub for municipalities sharing core systems.",
    no_args_is_help=True,
    add_completion=False,
    cls=_Commands,
)


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


def load_commands(command: str | None = None) -> typer.Typer:
    """The app with ``command``'s module registered; every module when ``command`` is None
    or not a command's name."""
    module = MODULE_OF_COMMAND.get(command or "")
    for name in (module,) if module else MODULES:
        importlib.import_module(f"bus.cli.{name}")
    return app
