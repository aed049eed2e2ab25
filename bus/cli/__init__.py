"""The ``renkei`` command line (typer + rich); each module adds its commands to one app.

``renkei`` (:func:`main`) imports only the module of the command it runs: every module
together pulls in SQLAlchemy, alembic, openpyxl, httpx and the hub, ~1.3 s before the first
line of work, which ``renkei validate`` or ``renkei catalog`` never needs. ``renkei --help``
(or an unknown command) loads them all, in the order the help lists them.
"""

from __future__ import annotations

import importlib
import sys

import typer

from bus.cli.app import app

MODULES = (
    "audit",
    "config",
    "demo",
    "dispatch",
    "folders",
    "identities",
    "imports",
    "mapping",
    "serve",
    "store",
    "validate",
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


def load_commands(command: str | None = None) -> typer.Typer:
    """The app with ``command``'s module registered; every module when ``command`` is None
    or not a command's name."""
    module = MODULE_OF_COMMAND.get(command or "")
    for name in (module,) if module else MODULES:
        importlib.import_module(f"bus.cli.{name}")
    return app


def main() -> None:
    """The ``renkei`` console script."""
    load_commands(sys.argv[1] if len(sys.argv) > 1 else None)()


__all__ = ["app", "load_commands", "main"]
