"""The ``renkei`` typer application that every command module registers on."""

from __future__ import annotations

import typer

app = typer.Typer(
    name="renkei",
    help="renkei (連携): data-integration hub for municipalities sharing core systems.",
    no_args_is_help=True,
    add_completion=False,
)


@app.callback()
def _group() -> None:
    """Keeps ``renkei COMMAND`` a command group when the app holds a single command, as it
    does when only that command's module is loaded (bus.cli.main)."""
