"""bus/cli/app.py: `renkei COMMAND` imports only that command's module, and gets the
same command, with the same subcommands and options, as the app with every module."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import typer
from typer.core import TyperGroup
from typer.testing import CliRunner

from bus.cli.app import MODULE_OF_COMMAND, MODULES, SUMMARY_OF_COMMAND, listing, load_commands

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

#: what ``renkei --help`` imported before it listed the commands from SUMMARY_OF_COMMAND
#: (~1.2 s on the town hall's PC): every command module and what they import
HEAVY = (
    "sqlalchemy",
    "alembic",
    "openpyxl",
    "httpx",
    "cryptography",
    "yaml",
    "pydantic_settings",
    "bus.hub",
    "bus.settings",
    "bus.store.db",
    "bus.security.operators",
    "bus.rules.charset",
)

LISTING = """
import json, sys
from bus.cli import app  # what the console script calls
sys.argv = ["renkei", *sys.argv[1:]]
try:
    app()
except SystemExit as done:
    code = done.code
modules = [m for m in sys.modules if m.startswith("bus.cli.") and m != "bus.cli.app"]
heavy = [m for m in json.loads(sys.stdin.read()) if m in sys.modules]
print(json.dumps([code, modules, heavy]), file=sys.stderr)
"""

#: a store command (``renkei messages list``'s module): made at first use, never at import,
#: the scrypt of a login for no account (the console's) and the validator's repertoire
STORE_COMMAND = """
import bus.cli.trail
from bus.rules.charset import suspect
from bus.security.operators import no_user_hash
print(suspect.cache_info().currsize, no_user_hash.cache_info().currsize)
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


def test_the_list_of_commands_imports_no_command_module() -> None:
    for args, code in (["--help"], 0), ([], 2), (["no-such-command"], 2):
        run = subprocess.run(
            [sys.executable, "-c", LISTING, *args],
            input=json.dumps(HEAVY),
            capture_output=True,
            text=True,
            timeout=60,
            check=True,
            env={**os.environ, "COLUMNS": "200"},
        )
        assert json.loads(run.stderr.splitlines()[-1]) == [code, [], []], args
        if code == 0:  # the list itself (else a usage error)
            assert all(f" {name} " in run.stdout for name in MODULE_OF_COMMAND)


def test_the_list_of_commands_is_the_whole_apps() -> None:
    assert list(SUMMARY_OF_COMMAND) == list(_full())  # every command, in the help's order
    runner = CliRunner()
    for args in ["--help"], [], ["no-such-command"]:
        whole = runner.invoke(load_commands(), args, terminal_width=200)
        listed = runner.invoke(listing(), args, terminal_width=200)
        assert (listed.exit_code, listed.output) == (whole.exit_code, whole.output), args


def test_a_store_command_makes_no_password_hash_nor_repertoire_at_import() -> None:
    run = subprocess.run(
        [sys.executable, "-c", STORE_COMMAND],
        capture_output=True,
        text=True,
        timeout=60,
        check=True,
        cwd=ROOT,
    )
    assert run.stdout.split() == ["0", "0"]
