"""The ``renkei`` command line (typer + rich); each module adds its commands to one app,
and the app imports only the module of the command it runs (bus/cli/app.py)."""

from bus.cli.app import app, load_commands

__all__ = ["app", "load_commands"]
