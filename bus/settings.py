"""Process settings from the environment (``RENKEI_*``), honoured by every command.

The embedded default needs nothing: a SQLite file under the data directory, in-process
workers, kombu's memory transport for wake-ups and the shipped sample configuration.
"""

from __future__ import annotations

from enum import StrEnum
from pathlib import Path

from pydantic import Field
from pydantic_settings import BaseSettings, SettingsConfigDict

from bus.resources import data_dir


class SqliteSync(StrEnum):
    """SQLite ``synchronous``: NORMAL (WAL) survives a killed process; FULL also survives
    power loss at some cost in commit latency."""

    NORMAL = "NORMAL"
    FULL = "FULL"


def _default_config_dir() -> Path:
    return data_dir("samples") / "config"


ENV_PREFIX = "RENKEI_"
DISPATCH_WORKERS_ENV = f"{ENV_PREFIX}DISPATCH_WORKERS"


class Settings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix=ENV_PREFIX, extra="ignore")

    data_dir: Path = Field(default=Path(".renkei"), description="Where the SQLite file lives.")
    database_url: str | None = Field(
        default=None, description="SQLAlchemy URL; default sqlite:///<data_dir>/renkei.db"
    )
    broker_url: str = Field(default="memory://", description="kombu URL for wake-ups.")
    database_lock_timeout: float = Field(
        default=5.0,
        ge=0,
        description="PostgreSQL: seconds a statement of the hub waits for a lock (lock_timeout) "
        "before it gives up; an ingest is then refused 503 RK-STO008 (resend later) instead of "
        "hanging. 0: no bound. Migrations wait without bound.",
    )
    config_dir: Path | None = Field(
        default=None, description="Configuration directory loaded into an empty database."
    )
    sqlite_synchronous: SqliteSync = SqliteSync.NORMAL
    public_url: str | None = None
    dispatch_workers: int = Field(
        default=2,
        ge=0,
        description="Worker threads `renkei serve` runs in process (0: none); with several "
        "HTTP processes on SQLite, 1 in each unless set.",
    )
    access_log: bool = Field(
        default=False,
        description="A line per HTTP request (uvicorn's access log). Off: every message already "
        "has its own line (stored, duplicate, rejected) with its ids; refusals are audited.",
    )
    folder_watcher: bool = Field(
        default=True,
        description="Whether `renkei serve` watches the configured hot folders in process.",
    )
    ingest_threads: int = Field(
        default=16,
        ge=1,
        description="Inbound HTTP inquiries run through the pipeline at once, each in a thread "
        "that waits for the provider's answer. Notifications take the batch lane instead (one "
        "thread per HTTP process; docs/architecture.md).",
    )
    malloc_arenas: int = Field(
        default=2,
        ge=0,
        description="glibc malloc arenas the HTTP process may use (0: glibc's default, 8 per "
        "core); each thread's own arena keeps a few MiB (bus/malloc_arenas.py).",
    )
    gc_young_threshold: int = Field(
        default=10_000,
        ge=0,
        description="Once startup is done, `renkei serve` and `renkei import` freeze what it "
        "built out of the garbage collector's sight and collect its youngest generation every "
        "this many allocations (0: Python's own collector settings; bus/collector.py).",
    )
    dispatch_lease_seconds: float = Field(
        default=30.0, gt=0, description="How long a claimed delivery stays with its worker."
    )
    audit_signing_key: Path | None = Field(
        default=None,
        description="Ed25519 private key (PEM) that signs audit checkpoints "
        "(`renkei audit keygen`); a public key is enough for `renkei audit verify`.",
    )
    audit_anchor_dir: Path | None = Field(
        default=None,
        description="Append-only directory outside the database: one file per checkpoint.",
    )
    secrets_key: str | None = Field(
        default=None,
        repr=False,
        description="Base64 of 32 bytes: encrypts stored WS-Security secrets (AES-256-GCM); "
        "default: <data_dir>/secrets.key, created on first use (docs/security.md).",
    )

    @property
    def effective_database_url(self) -> str:
        if self.database_url:
            return self.database_url
        return f"sqlite:///{(self.data_dir / 'renkei.db').resolve()}"

    @property
    def is_sqlite(self) -> bool:
        return self.effective_database_url.startswith("sqlite")

    @property
    def effective_config_dir(self) -> Path:
        return self.config_dir or _default_config_dir()
