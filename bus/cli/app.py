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
    "messages": "store",
    "purge": "store",
    "samples": "validate",
    "serve": "serve",
    "tenants": "identities",
    "users": "identities",
    "validate": "validate",
    "worker": "dispatch",
}


class _Renkei(typer.Typer):
    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        load_commands(sys.argv[1] if len(sys.argv) > 1 else None)
        return super().__call__(*args, **kwargs)


app = _Renkei(
    name="renkei",
    help="renkei (連携): data-integration hub for municipalities sharing core systems.",
    no_args_is_help=True,
    add_completion=False,
)


@app.callback()
def _group() -> None:
    """Keeps ``renkei COMMAND`` a command group when the app holds a single command, as it
    does when only that command's module is loaded."""


def load_commands(command: str | None = None) -> typer.Typer:
    """The app with ``command``'s module registered; every module when ``command`` is None
    or not a command's name."""
    module = MODULE_OF_COMMAND.get(command or "")
    for name in (module,) if module else MODULES:
        importlib.import_module(f"bus.cli.{name}")
    return app
