"""The ``renkei`` command line (typer + rich); each module adds its commands to one app."""

from bus.cli import (  # noqa: F401  (registers the commands)
    audit,
    config,
    demo,
    dispatch,
    folders,
    identities,
    imports,
    mapping,
    serve,
    store,
    validate,
)
from bus.cli.app import app

__all__ = ["app"]
