"""Shared fixtures. Service-backed tests use :func:`require_service`: they skip with a clear
reason on a machine without the service, and fail loudly when RENKEI_REQUIRE_SERVICES=1 (CI)."""

from __future__ import annotations

import os
import shutil
import socket
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import pytest
import yaml

from bus.cli import load_commands
from bus.settings import Settings
from tests.support.postgres import scratch_database
from tests.support.raw_server import Answer, RawServer

if TYPE_CHECKING:
    from sqlalchemy.engine import Engine

    from bus.hub import Hub

load_commands()  # every command registered, for the tests that invoke the app in process

# The shapes DESIGN §4 fixes (pinned here, independently of the code that produces them).
FINDING_KEYS = [
    "code",
    "severity",
    "path",
    "item",
    "name_ja",
    "rule",
    "value_masked",
    "message_ja",
    "message_en",
]
CATALOGUE_KEYS = [
    "id",
    "name_ja",
    "namespace",
    "kind",
    "xsd_type",
    "length",
    "pattern",
    "code_list",
    "unit",
    "rule",
]

SERVICES = {
    "postgresql": ("127.0.0.1", 5432),
    "rabbitmq": ("127.0.0.1", 5672),
}


def require_service(name: str) -> tuple[str, int]:
    host, port = SERVICES[name]
    try:
        with socket.create_connection((host, port), timeout=2):
            return host, port
    except OSError as error:
        reason = f"{name} not reachable on {host}:{port} ({error})"
        if os.environ.get("RENKEI_REQUIRE_SERVICES") == "1":
            pytest.fail(f"RENKEI_REQUIRE_SERVICES=1 but {reason}")
        pytest.skip(reason)


RABBITMQ_URL = "amqp://guest:guest@127.0.0.1:5672//"


@pytest.fixture
def postgres_url() -> Iterator[str]:
    """A fresh, empty PostgreSQL database for one test, dropped afterwards."""
    require_service("postgresql")
    with scratch_database("renkei_test") as url:
        yield url


@pytest.fixture
def rabbitmq_url() -> str:
    require_service("rabbitmq")
    return RABBITMQ_URL


@pytest.fixture(params=["sqlite", pytest.param("postgres", marks=pytest.mark.postgres)])
def store_settings(request: pytest.FixtureRequest, tmp_path: Path) -> Settings:
    """Settings for the embedded default (SQLite + memory wake-ups) and for scale-out
    (PostgreSQL + RabbitMQ): store and dispatch tests run on both."""
    if request.param == "sqlite":
        return Settings(data_dir=tmp_path / "data")
    url = request.getfixturevalue("postgres_url")
    broker = request.getfixturevalue("rabbitmq_url")
    return Settings(data_dir=tmp_path / "data", database_url=url, broker_url=broker)


@pytest.fixture
def hub(store_settings: Settings) -> Iterator[Hub]:
    """An assembled hub on the embedded default or on PostgreSQL + RabbitMQ (no workers)."""
    from bus.hub import Hub

    opened = Hub.open(store_settings)
    try:
        yield opened
    finally:
        opened.close()


@pytest.fixture(params=["sqlite", pytest.param("postgres", marks=pytest.mark.postgres)])
def engine(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Engine]:
    """A bare store engine (no migration run) on SQLite or a scratch PostgreSQL database:
    for tests that migrate it themselves."""
    from bus.store.db import create_store_engine

    url = None if request.param == "sqlite" else request.getfixturevalue("postgres_url")
    created = create_store_engine(Settings(data_dir=tmp_path / "data", database_url=url))
    yield created
    created.dispose()


@pytest.fixture
def local_hub(tmp_path: Path) -> Iterator[Hub]:
    """A hub on a SQLite file of its own with no dispatch workers (what an adapter does with
    a message, in process)."""
    from bus.hub import Hub

    opened = Hub.open(Settings(data_dir=tmp_path / "data", dispatch_workers=0))
    try:
        yield opened
    finally:
        opened.close()


# --- credentials: every later test can go through Authenticate + Authorize ------------------

SAMPLE_CONFIG_DIR = Path(__file__).resolve().parent.parent / "samples" / "config"


@dataclass(frozen=True, slots=True)
class ApiCredentials:
    """A configuration directory in which ``system`` holds the API key ``key``."""

    config_dir: Path
    system: str
    key: str

    @property
    def authorization(self) -> str:
        return f"Bearer {self.key}"


def config_with_api_key(tmp_path: Path, system: str = "juki") -> tuple[Path, str]:
    """Copy the sample configuration under ``tmp_path`` and give ``system`` a fresh API key
    (its scrypt hash in systems.yaml); returns the directory and the key."""
    from bus.identity import hash_api_key, new_api_key

    directory = tmp_path / f"config-{system}"
    shutil.copytree(SAMPLE_CONFIG_DIR, directory, dirs_exist_ok=True)
    path = directory / "systems.yaml"
    document = yaml.safe_load(path.read_text(encoding="utf-8"))
    entry = next(s for s in document["systems"] if s["id"] == system)
    key = new_api_key(system)
    credentials = entry.setdefault("credentials", {})
    credentials["api_key_hashes"] = [*credentials.get("api_key_hashes", []), hash_api_key(key)]
    path.write_text(yaml.safe_dump(document, allow_unicode=True, sort_keys=False), encoding="utf-8")
    return directory, key


@pytest.fixture
def api_credentials(tmp_path: Path) -> ApiCredentials:
    """The sample configuration plus a freshly issued API key for ``juki``."""
    directory, key = config_with_api_key(tmp_path, "juki")
    return ApiCredentials(directory, "juki", key)


@pytest.fixture
def serve() -> Iterator[Callable[[Answer], RawServer]]:
    """Start scripted raw HTTP servers (``tests/support/raw_server.py``), stopped after."""
    made: list[RawServer] = []

    def start(answer: Answer) -> RawServer:
        made.append(RawServer(answer).start())
        return made[-1]

    yield start
    for server in made:
        server.stop()


@pytest.fixture
def data_dir(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """An embedded store's data directory for CLI commands run in this process (CliRunner):
    RENKEI_DATA_DIR set to it, no database URL nor configuration directory from outside."""
    data = tmp_path / "data"
    monkeypatch.setenv("RENKEI_DATA_DIR", str(data))
    monkeypatch.delenv("RENKEI_DATABASE_URL", raising=False)
    monkeypatch.delenv("RENKEI_CONFIG_DIR", raising=False)
    return data
