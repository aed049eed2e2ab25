"""Versioned configuration snapshots in the Message Store, and live reload (DESIGN §6).

``renkei config apply`` validates the directory as a whole and stores its files as a new
version; every process holds a :class:`ConfigProvider` that notices a newer version with one
cheap ``max(version)`` query at most every ``poll_seconds`` and reloads without a restart.
A poll the database does not answer (an outage, a lock wait) keeps the version in force: it
is still the configuration, and the hub refuses only what needs the store (RK-STO008).
"""

from __future__ import annotations

import hashlib
import json
import logging
import threading
import time
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, Protocol

from sqlalchemy import func, select
from sqlalchemy.exc import IntegrityError, SQLAlchemyError
from sqlalchemy.orm import Session, sessionmaker

from bus.config.index import ConfigIndex
from bus.config.loader import load_config_dir, parse_config_files, read_config_files
from bus.config.models import HubConfig
from bus.settings import Settings
from bus.store.admin_audit import record_admin_action
from bus.store.db import unreachable_finding
from bus.store.models import ConfigSnapshot
from bus.store.write_health import describe

log = logging.getLogger(__name__)

INITIAL_ACTOR = "renkei (initial configuration)"
_APPLY_ATTEMPTS = 5  # concurrent applies race for the next version number


class NoConfiguration(LookupError):
    """The database holds no configuration yet (``ensure_config`` was not called)."""


class ConfigConflict(RuntimeError):
    """Another apply made a newer version since the edited configuration was read: storing
    the edit would silently undo that change (a lost update), so nothing is stored.
    ``paths``: the files changed since ``base`` that the edit would undo (empty when the
    check was by version number alone)."""

    def __init__(self, base: int, found: int, paths: tuple[str, ...] = ()) -> None:
        super().__init__(f"version {base} was edited, but version {found} is in force now")
        self.base = base
        self.found = found
        self.paths = paths


class UnknownBase(LookupError):
    """The version an edit names as its base is not this hub's (no such version, or one with
    other content: a directory exported from another hub or database)."""

    def __init__(self, base: int, found: int) -> None:
        super().__init__(f"version {base} is not a version of this hub (in force: {found})")
        self.base = base
        self.found = found


class NoBase(LookupError):
    """An edited directory names no base while versions someone made are in force: it
    cannot be told whether applying it would undo one of them."""

    def __init__(self, found: int) -> None:
        super().__init__(f"no base version given; version {found} is in force")
        self.found = found


@dataclass(frozen=True, slots=True)
class Base:
    """The version an edited directory was made from (``.renkei-base``): its number and
    digest, so a directory from another hub with the same number is told apart."""

    version: int
    digest: str | None = None


@dataclass(frozen=True, slots=True)
class LoadedConfig:
    """One configuration version, validated and indexed."""

    version: int
    config: HubConfig
    index: ConfigIndex


class ConfigSource(Protocol):
    """What the stages need: the configuration in force now."""

    def current(self) -> LoadedConfig: ...


def files_digest(files: dict[str, str]) -> str:
    canonical = json.dumps(files, sort_keys=True, ensure_ascii=False, separators=(",", ":"))
    return hashlib.sha256(canonical.encode("utf-8")).hexdigest()


def _latest(session: Session) -> ConfigSnapshot | None:
    return session.scalars(
        select(ConfigSnapshot).order_by(ConfigSnapshot.version.desc()).limit(1)
    ).first()


def stored_base(sessions: sessionmaker[Session], version: int) -> Base:
    """The :class:`Base` of a stored ``version`` (its number and digest)."""
    with sessions() as session:
        snapshot = session.get(ConfigSnapshot, version)
        assert snapshot is not None
        return Base(version, snapshot.digest)


def undone_paths(
    base: dict[str, str], in_force: dict[str, str], files: dict[str, str]
) -> tuple[str, ...]:
    """The files another apply changed since ``base`` (added, edited or removed) that
    storing ``files`` would change back: the lost update. A change the edit already holds
    (merged, or written by ``renkei tenants add --config-dir``) is no conflict."""
    changed = {
        path for path in base.keys() | in_force.keys() if base.get(path) != in_force.get(path)
    }
    return tuple(sorted(path for path in changed if files.get(path) != in_force.get(path)))


def _automatic(snapshot: ConfigSnapshot) -> bool:
    """The first version an empty database loaded by itself (:func:`ensure_config`)."""
    return snapshot.version == 1 and snapshot.applied_by == INITIAL_ACTOR


def _check_base(
    session: Session, latest: ConfigSnapshot, base: Base, files: dict[str, str]
) -> None:
    """Raise when ``files``, edited from ``base``, would undo what was applied since."""
    if latest.version == base.version:
        if base.digest is not None and base.digest != latest.digest:
            raise UnknownBase(base.version, latest.version)
        return
    stored = session.get(ConfigSnapshot, base.version) if base.version < latest.version else None
    if stored is None or (base.digest is not None and base.digest != stored.digest):
        raise UnknownBase(base.version, latest.version)
    undone = undone_paths(dict(stored.files), dict(latest.files), files)
    if undone:
        raise ConfigConflict(base.version, latest.version, undone)


def apply_files(
    sessions: sessionmaker[Session],
    files: dict[str, str],
    actor: str | None,
    *,
    because: tuple[str, dict[str, Any]] | None = None,
    base_version: int | None = None,
    base: Base | None = None,
    forced: bool = False,
    require_base: bool = False,
) -> int:
    """Store ``files`` as a new version after validating them; content identical to the
    version in force returns that version (no new row, nothing audited). Re-applying an
    *older* content does make a new version: it is a roll-back. ``because``: the admin
    action that made the edit (e.g. ``("tenant.add", {...})``), recorded after
    ``config.apply`` in the same transaction with the new version added to its detail.
    ``base_version``: the version the edit was made from (read-modify-write, as ``renkei
    tenants`` does); when another version was stored since, :class:`ConfigConflict`.
    ``base``: the version an edited *directory* was made from (``renkei config apply``):
    newer versions are fine as long as the files hold their changes (:func:`undone_paths`),
    else :class:`ConfigConflict`; a base this hub never stored, :class:`UnknownBase`.
    ``forced``: recorded with the apply (``replaced``: the version in force it replaced).
    ``require_base``: without ``base`` (and not ``forced``), :class:`NoBase` unless nobody's
    change can be lost: an empty database, or only the automatic first version."""
    parse_config_files(files)  # raises ConfigError: an invalid configuration is never stored
    digest = files_digest(files)
    for attempt in range(_APPLY_ATTEMPTS):
        try:
            with sessions.begin() as session:
                latest = _latest(session)
                if latest is not None and latest.digest == digest:
                    return latest.version
                in_force = latest.version if latest else 0
                if base_version is not None and in_force != base_version:
                    raise ConfigConflict(base_version, in_force)
                if base is not None and latest is not None:
                    _check_base(session, latest, base, files)
                elif require_base and not forced and latest is not None and not _automatic(latest):
                    raise NoBase(latest.version)
                version = in_force + 1
                session.add(
                    ConfigSnapshot(
                        version=version,
                        applied_at=datetime.now(UTC),
                        applied_by=actor[:64] if actor else None,
                        digest=digest,
                        files=files,
                    )
                )
                detail: dict[str, Any] = {
                    "version": version,
                    "digest": digest,
                    "files": sorted(files),
                }
                if base is not None:
                    detail["base"] = base.version
                if forced and latest is not None:
                    detail |= {"forced": True, "replaced": in_force}
                record_admin_action(session, actor, "config.apply", detail)
                if because is not None:
                    action, cause = because
                    record_admin_action(session, actor, action, cause | {"version": version})
            return version
        except IntegrityError:
            if attempt == _APPLY_ATTEMPTS - 1:
                raise
    raise AssertionError("unreachable")


def apply_config(sessions: sessionmaker[Session], directory: Path, actor: str | None = None) -> int:
    """Validate the directory and store it as the configuration in force; its version."""
    return apply_files(sessions, read_config_files(directory), actor)


def latest_version(sessions: sessionmaker[Session]) -> int | None:
    with sessions() as session:
        return session.scalar(select(func.max(ConfigSnapshot.version)))


def ensure_config(sessions: sessionmaker[Session], settings: Settings) -> int:
    """The version in force; an empty database first gets ``settings.effective_config_dir``
    (the shipped sample configuration unless another is configured)."""
    version = latest_version(sessions)
    if version is not None:
        return version
    return apply_config(sessions, settings.effective_config_dir, INITIAL_ACTOR)


def load_snapshot(sessions: sessionmaker[Session], version: int | None = None) -> LoadedConfig:
    """A stored version (the latest by default), parsed and indexed."""
    with sessions() as session:
        snapshot = _latest(session) if version is None else session.get(ConfigSnapshot, version)
        if snapshot is None:
            raise NoConfiguration(
                "no configuration in the database" if version is None else f"no version {version}"
            )
        number, files = snapshot.version, dict(snapshot.files)
    config = parse_config_files(files)
    return LoadedConfig(number, config, ConfigIndex(config))


def load_directory(directory: Path) -> LoadedConfig:
    """A directory's configuration as version 0, without a database (tools, tests)."""
    config = load_config_dir(directory)
    return LoadedConfig(0, config, ConfigIndex(config))


@dataclass(frozen=True, slots=True)
class FixedConfig:
    """A :class:`ConfigSource` that never changes (``renkei validate``, tools)."""

    loaded: LoadedConfig

    def current(self) -> LoadedConfig:
        return self.loaded


class ConfigProvider:
    """The configuration in force for this process, reloaded when a newer version appears.

    At most one ``max(version)`` query per ``poll_seconds``; the parse and index happen only
    when the version changed. Thread-safe: one thread reloads, the others keep the old one.
    A poll that fails on the database once a version is loaded keeps that version (logged
    once until a poll succeeds) and is tried again after ``poll_seconds``; without one, the
    error propagates.
    """

    def __init__(self, sessions: sessionmaker[Session], poll_seconds: float = 1.0) -> None:
        self._sessions = sessions
        self._poll_seconds = poll_seconds
        self._loaded: LoadedConfig | None = None
        self._checked_at = float("-inf")
        self._poll_failing = False
        self._poll_code = "RK-OPS001"  # how the failing polls were told
        self._lock = threading.Lock()

    def current(self) -> LoadedConfig:
        loaded = self._loaded
        if loaded is not None and self.fresh():
            return loaded
        if loaded is not None and not self._lock.acquire(blocking=False):
            return loaded  # another thread is checking right now
        if loaded is None:
            self._lock.acquire()
        try:
            return self._refresh()
        finally:
            self._lock.release()

    def fresh(self) -> bool:
        """Whether :meth:`current` would answer now without reading the database."""
        return self._loaded is not None and (
            time.monotonic() - self._checked_at < self._poll_seconds
        )

    def refresh(self) -> LoadedConfig:
        """Check the database now, whatever the poll interval."""
        with self._lock:
            return self._refresh()

    def _refresh(self) -> LoadedConfig:
        try:
            version = latest_version(self._sessions)
            self._checked_at = time.monotonic()
            if version is None:
                raise NoConfiguration("no configuration in the database; run `renkei config apply`")
            if self._loaded is None or self._loaded.version != version:
                self._loaded = load_snapshot(self._sessions, version)
        except SQLAlchemyError as error:
            if self._loaded is None:
                raise
            self._checked_at = time.monotonic()  # tried again after poll_seconds, not per call
            self._poll_failed(error)
            return self._loaded
        if self._poll_failing:
            self._poll_failing = False
            log.warning(
                "%s cleared: the configuration is polled again (version %d)",
                self._poll_code,
                version,
            )
        return self._loaded

    def _poll_failed(self, error: SQLAlchemyError) -> None:
        """The first failed poll of a series is logged (coded, no traceback)."""
        if self._poll_failing:
            return
        self._poll_failing = True
        reason = describe(error)
        self._poll_code = unreachable_finding(error, reason).code  # RK-OPS013: locked elsewhere
        log.warning(
            "%s the configuration cannot be polled (%s); version %d stays in force "
            "until the database answers",
            self._poll_code,
            reason,
            self._loaded.version if self._loaded is not None else 0,
        )
