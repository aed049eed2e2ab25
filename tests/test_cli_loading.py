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

shapes = {}
for name in sys.argv[1:]:  # the commands of one module: each loads that module alone
    group = typer.main.get_command(load_commands(name))
    shapes[name] = _shape(group.commands[name])
print(json.dumps(shapes))
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
    # one interpreter per module (not per command): loading any of a module's commands
    # imports that module and no other, so its commands are checked in the same process
    by_module: dict[str, list[str]] = {}
    for command, module in MODULE_OF_COMMAND.items():
        by_module.setdefault(module, []).append(command)
    runs = {
        module: subprocess.Popen(
            [sys.executable, "-c", SHAPE, *commands],
            stdout=subprocess.PIPE,
            text=True,
            cwd=ROOT,
        )
        for module, commands in by_module.items()
    }
    outputs = {module: run.communicate(timeout=120)[0] for module, run in runs.items()}
    for module, run in runs.items():
        assert run.returncode == 0, module
        expected = {command: full[command] for command in by_module[module]}
        assert json.loads(outputs[module]) == expected, module


def test_a_command_that_needs_no_store_starts_without_it() -> None:
    run = subprocess.run(
        [sys.executable, "-c", LIGHT], capture_output=True, text=True, timeout=60, check=True
    )
    assert json.loads(run.stdout)[0]["id"]  # the catalogue, as JSON
    assert run.stderr.strip() == "[]"
