"""Process settings from the environment (``RENKEI_*``), honoured by every command.

The embedded default needs nothing: a SQLite file under the data directory, in-process
workers, kombu's memory transport for wake-ups and the shipped sample configuration.
"""

from __future__ import annotations

import re
from enum import Enum, StrEnum
from pathlib import Path
from types import NoneType, UnionType
from typing import TYPE_CHECKING, Union, get_args, get_origin

from annotated_types import Ge, Gt
from pydantic import Field, ValidationError, field_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

from bus.resources import data_dir

if TYPE_CHECKING:
    from bus.pipeline import Finding


class SqliteSync(StrEnum):
    """SQLite ``synchronous``: NORMAL (WAL) survives a killed process; FULL also survives
    power loss at some cost in commit latency. Read in any case (``full``, ``Full``)."""

    NORMAL = "NORMAL"
    FULL = "FULL"

    @classmethod
    def _missing_(cls, value: object) -> SqliteSync | None:
        if isinstance(value, str):
            return next((m for m in cls if m.value == value.strip().upper()), None)
        return None


def _default_config_dir() -> Path:
    return data_dir("samples") / "config"


ENV_PREFIX = "RENKEI_"
STORE_BACKENDS = ("sqlite", "postgresql")
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
    era_table: Path | None = Field(
        default=None,
        description="元号 table used instead of the shipped schemas/codes/era.csv: a copy with "
        "the next era's row added, before a release ships it (docs/operations.md, 改元への対応).",
    )
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
    parse_memory_mib: int = Field(
        default=256,
        ge=16,
        description="MiB of estimated tree memory the inbound HTTP adapters let large bodies "
        "(over 64 KiB) take at once; a body that finds no room within 2 s is refused 503 "
        "RK-API017 with Retry-After (bus/validation/parse_budget.py, docs/security.md).",
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
    console_idle_seconds: float = Field(
        default=1800.0,
        gt=0,
        description="A console session unused this long is over: the operator logs in again "
        "(besides the 8 hours after login; docs/console.md).",
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

    @field_validator("database_url")
    @classmethod
    def _readable_url(cls, value: str | None) -> str | None:
        """Parsed as the store will parse it, so a bad URL stops the command here (RK-OPS010)
        and not in SQLAlchemy, whose error quotes the URL with its password."""
        if not value:
            return value
        from sqlalchemy.engine import make_url
        from sqlalchemy.exc import ArgumentError

        try:
            backend = make_url(value).get_backend_name()
        except (ArgumentError, ValueError):  # unreadable; a port that is not a number
            raise ValueError("not a SQLAlchemy URL") from None
        if backend not in STORE_BACKENDS:
            raise ValueError(f"unsupported database {backend!r}")
        return value

    @field_validator("era_table", mode="before")
    @classmethod
    def _readable_era_table(cls, value: object) -> Path | None:
        """Read and checked as every process will read it (bus/era.py: empty is unset), so a
        wrong copy stops the command here (RK-OPS010), not at the first date of a message."""
        if value is None or not str(value).strip():
            return None
        from bus.era import load_table

        path = Path(str(value).strip())
        try:
            load_table(path)
        except OSError as error:
            raise ValueError(f"cannot read: {error.strerror}") from None
        return path

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


#: what a value may be, where the field's type does not say it (Japanese, English)
_ALLOWED = {
    "database_url": (
        "SQLAlchemy の URL（sqlite:///PATH または postgresql+psycopg://USER:PASSWORD@HOST/DB）",
        "SQLAlchemy URL: sqlite:///PATH | postgresql+psycopg://USER:PASSWORD@HOST/DB",
    ),
    "broker_url": ("kombu の URL", "kombu URL"),
    "public_url": ("URL", "URL"),
    "era_table": (
        "元号表（同梱の era.csv の行を変えずに新しい元号の行を加えた CSV）のパス",
        "path of an era table: the shipped era.csv rows unchanged, then the new era's row",
    ),
}
#: a field's type in words (Japanese, English)
_KINDS = {
    int: ("整数", "integer"),
    float: ("数", "number"),
    Path: ("パス", "path"),
    str: ("文字列", "text"),
}
#: never shown, not even in part
_SECRET_FIELDS = frozenset({"secrets_key"})
_URL_PASSWORD = re.compile(r"(://[^:/?#@]*:).*@")  # to the last @: a password may hold @ or /
_QUERY_SECRET = re.compile(r"((?:pass|password|pwd|secret|key|token)[^=&]*=)[^&]*", re.I)
_SHOWN_LENGTH = 80


def settings_refusals(error: ValidationError) -> list[Finding]:
    """One RK-OPS010 a refused ``RENKEI_*`` value: the variable, the value (a URL's password
    and the secrets key masked) and what the variable takes."""
    from bus.errors import make_finding

    findings = []
    for problem in error.errors(include_url=False):
        name = str(problem["loc"][0]) if problem["loc"] else ""
        variable = f"{ENV_PREFIX}{name.upper()}"
        shown = shown_value(name, problem.get("input"))
        allowed_ja, allowed_en = allowed_values(name)
        findings.append(
            make_finding(
                "RK-OPS010",
                path=variable,
                value_masked=shown,
                actual=shown,
                expected_ja=allowed_ja,
                expected_en=allowed_en,
            )
        )
    return findings


def shown_value(name: str, value: object) -> str:
    """``value`` as it may be printed: a secret field's as ``***``, a URL's password and
    secret query parameters as ``***``, cut at 80 characters."""
    text = "" if value is None else str(value)
    if name in _SECRET_FIELDS:
        return "***"
    text = _QUERY_SECRET.sub(r"\1***", _URL_PASSWORD.sub(r"\1***@", text))
    return text if len(text) <= _SHOWN_LENGTH else text[: _SHOWN_LENGTH - 1] + "…"


def allowed_values(name: str) -> tuple[str, str]:
    """What the field ``name`` takes, from its type and bounds, in Japanese and English:
    ``NORMAL | FULL``, ``0 以上の整数`` / ``integer >= 0``, ``true | false``."""
    field = Settings.model_fields.get(name)
    if field is None:
        return "?", "?"
    if name in _ALLOWED:
        return _ALLOWED[name]
    kind = field.annotation
    if get_origin(kind) in (Union, UnionType):
        kind = next(arg for arg in get_args(kind) if arg is not NoneType)
    if isinstance(kind, type) and issubclass(kind, Enum):
        values = " | ".join(str(member.value) for member in kind)
        return values, values
    if kind is bool:
        return "true | false", "true | false"
    unknown = getattr(kind, "__name__", "?")
    word_ja, word_en = (
        _KINDS.get(kind, (unknown, unknown)) if isinstance(kind, type) else ("?", "?")
    )
    bounds_ja, bounds_en = [], []
    for bound in field.metadata:
        if isinstance(bound, Ge):
            bounds_ja.append(f"{bound.ge} 以上の")
            bounds_en.append(f" >= {bound.ge}")
        elif isinstance(bound, Gt):
            bounds_ja.append(f"{bound.gt} より大きい")
            bounds_en.append(f" > {bound.gt}")
    return "".join(bounds_ja) + word_ja, word_en + "".join(bounds_en)
