"""The documentation against the product: every ``renkei …`` command line in README.md and
docs/*.md names a real command, every ``--option`` it shows is one of that command's options,
and every ``RENKEI_…`` variable the docs mention is read somewhere in the code.

Placeholders are allowed (``ID``, ``FILE…``, ``[--tenant]``); alternatives are written
``a|b`` or ``a/b`` (``renkei dlq redeliver/discard``) and each must exist. Runs in well under a
second: the typer app is built, nothing is executed.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import pytest
import typer

from bus.cli.app import app, load_commands

ROOT = Path(__file__).resolve().parents[1]
DOCS = [
    ROOT / "README.md",
    *sorted(path for path in (ROOT / "docs").glob("*.md") if path.name != "benchmarks.md"),
]

# `renkei WORD…` as a command: not part of a path (`/etc/renkei`, `renkei.db`) but
# `.venv/bin/renkei` and `/opt/renkei/bin/renkei` are the command too
COMMAND = re.compile(r"(?:(?<![\w./-])|(?<=bin/))renkei[ \t]+([a-z][^\n`]*)")
OPTION = re.compile(r"(?<![\w-])(--[a-z][a-z0-9-]*)")
ENV_VAR = re.compile(r"\bRENKEI_[A-Z][A-Z0-9_]*\b")
# variables read by the test suite or CI rather than by the product
TEST_ONLY_VARS = {"RENKEI_REQUIRE_SERVICES", "RENKEI_SCREENSHOTS"}


def _command_lines() -> list[tuple[str, str]]:
    found = []
    for path in DOCS:
        in_block = False
        for number, line in enumerate(path.read_text(encoding="utf-8").splitlines(), 1):
            if line.lstrip().startswith("```"):
                in_block = not in_block
                continue
            # in prose only code spans are commands ("renkei validates the XML" is not)
            code = line if in_block else " ` ".join(re.findall(r"`([^`]+)`", line))
            for match in COMMAND.finditer(code):
                # a shell comment, a pipe or the end of an inline code span ends the command
                text = re.split(r"\s#|\s\|\s|;|&&|\s\(|\)|`", match.group(1))[0]
                found.append((f"{path.relative_to(ROOT)}:{number}", text.strip()))
    return found


def _root() -> Any:
    load_commands(None)
    return typer.main.get_command(app)


def _option_names(command: Any) -> set[str]:
    names = {"--help"}
    for param in command.params:
        names.update(getattr(param, "opts", []))
        names.update(getattr(param, "secondary_opts", []))
    return names


def _problems(root: Any, text: str) -> list[str]:
    tokens = text.split()
    commands = [root]
    index = 0
    problems = []
    # walk the subcommand words while the commands reached are groups
    while index < len(tokens) and all(hasattr(c, "commands") for c in commands):
        names = [n for n in re.split(r"[|/]", tokens[index]) if n]
        if not names or not all(re.fullmatch(r"[a-z][a-z-]*", n) for n in names):
            break
        reached = []
        for command in commands:
            for name in names:
                if name in command.commands:
                    reached.append(command.commands[name])
                else:
                    problems.append(f"no command {name!r} under {command.name!r}")
        if problems:
            return problems
        commands = reached
        index += 1
    if any(hasattr(c, "commands") for c in commands) and index < len(tokens):
        # `renkei dlq …` or prose after a group: only a group's own options could follow
        return problems
    options = set(OPTION.findall(" ".join(tokens[index:])))
    for option in sorted(options):
        # `audit keygen|checkpoint|verify [--from --to]`: each option belongs to one of them
        if not any(option in _option_names(c) for c in commands):
            problems.append(f"{'/'.join(c.name for c in commands)} has no option {option}")
    return problems


def test_the_docs_show_commands() -> None:
    lines = _command_lines()
    assert len(lines) > 100
    assert any(text.startswith("dlq redeliver") for _, text in lines)


def test_every_documented_command_line_exists() -> None:
    root = _root()
    wrong = {
        f"{where}: renkei {text}": problems
        for where, text in _command_lines()
        if (problems := _problems(root, text))
    }
    assert wrong == {}


@pytest.mark.parametrize(
    "text",
    ["dlq redeliverx 1", "serve --no-such-option", "renkei serve", "users add/frobnicate U"],
)
def test_a_wrong_command_line_is_caught(text: str) -> None:
    assert _problems(_root(), text)


def test_every_documented_environment_variable_is_read() -> None:
    code = "\n".join(
        path.read_text(encoding="utf-8")
        for directory in ("bus", "adapters", "samples")
        for path in (ROOT / directory).rglob("*.py")
    )
    from bus.settings import ENV_PREFIX, Settings

    known = set(ENV_VAR.findall(code)) | TEST_ONLY_VARS
    known |= {(ENV_PREFIX + name).upper() for name in Settings.model_fields}
    unknown = {
        f"{path.relative_to(ROOT)}: {name}"
        for path in DOCS
        for name in ENV_VAR.findall(path.read_text(encoding="utf-8"))
        if name not in known
    }
    assert unknown == set()


def _commands(command: Any, path: str = "renkei") -> list[tuple[str, Any]]:
    found = [(path, command)]
    for name, sub in getattr(command, "commands", {}).items():
        found += _commands(sub, f"{path} {name}")
    return found


def test_every_command_and_option_has_a_help_text() -> None:
    missing = []
    for path, command in _commands(_root()):
        if not (command.help or "").strip():
            missing.append(path)
        for param in command.params:
            is_option = type(param).__name__.endswith("Option")
            if is_option and not (getattr(param, "help", None) or "").strip():
                missing.append(f"{path} {param.opts[0]}")
    assert missing == []
