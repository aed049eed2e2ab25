"""The ``renkei`` command line (typer + rich); each module adds its commands to one app."""

from bus.cli import config, dispatch, serve, store, validate  # noqa: F401  (registers the commands)
from bus.cli.app import app

__all__ = ["app"]
