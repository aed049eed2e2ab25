"""bus/cli/app.py: `renkei COMMAND` imports only that command's module, and gets the
same command, with the same subcommands and options, as the app with every module."""

from __future__ import annotations

import json
import subprocess
import sys
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import typer
from typer.core import TyperGroup

from bus.cli.app import MODULE_OF_COMMAND, MODULES, load_commands

ROOT = Path(__file__).resolve().parents[1]

SHAPE = """
import json, sys
import typer
from bus.cli import load_commands
from tests.test_cli_loading import _shape

group = typer.main.get_command(load_commands(sys.argv[1]))
print(json.dumps({n: _shape(group.commands[n]) for n in sys.argv[2:]}))
"""

LIGHT = """
import sys
from bus.cli import app  # what the console script calls
sys.argv = ["renkei", "catalog", "--json"]
try:
    app()
except SystemExit as done:
    assert not done.code, done.code
heavy = [m for m in ("sqlalchemy", "alembic", "openpyxl", "httpx", "bus.hub") if m in sys.modules]
print(heavy, file=sys.stderr)
"""


def _shape(command: Any) -> dict[str, Any]:
    options = sorted(str(p.name) for p in command.params)
    if isinstance(command, TyperGroup):
        return {"options": options, "sub": {n: _shape(c) for n, c in command.commands.items()}}
    return {"options": options}


def _full() -> Mapping[str, Any]:
    group = typer.main.get_command(load_commands())
    assert isinstance(group, TyperGroup)
    return group.commands


def test_every_command_has_its_module_and_every_module_a_command() -> None:
    assert set(MODULE_OF_COMMAND) == set(_full())
    assert set(MODULE_OF_COMMAND.values()) <= set(MODULES)


def test_each_command_alone_is_the_command_of_the_whole_app() -> None:
    full = {name: _shape(command) for name, command in _full().items()}
    runs = {
        command: subprocess.Popen(
            [sys.executable, "-c", SHAPE, command, command],
            stdout=subprocess.PIPE,
            text=True,
            cwd=ROOT,
        )
        for command in MODULE_OF_COMMAND
    }
    outputs = {command: run.communicate(timeout=120)[0] for command, run in runs.items()}
    for command, run in runs.items():
        assert run.returncode == 0, command
        assert json.loads(outputs[command]) == {command: full[command]}, command


def test_a_command_that_needs_no_store_starts_without_it() -> None:
    run = subprocess.run(
        [sys.executable, "-c", LIGHT], capture_output=True, text=True, timeout=60, check=True
    )
    assert json.loads(run.stdout)[0]["id"]  # the catalogue, as JSON
    assert run.stderr.strip() == "[]"
