"""``renkei config check/apply/show`` (DESIGN §6).

The store, the loader and scrypt are imported inside the commands, so other commands
(``renkei validate``) do not pay for them at start-up.
"""

from __future__ import annotations

import getpass
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, NoReturn

import typer

from bus.cli.app import app

if TYPE_CHECKING:
    from bus.config.loader import ConfigError
    from bus.config.models import HubConfig
    from bus.config.snapshots import Base, ConfigConflict, NoBase, UnknownBase
    from bus.pipeline import Finding
    from bus.store.db import Store

EXIT_OK, EXIT_INVALID = 0, 1

config_app = typer.Typer(help="The hub's configuration (設定): check, export, apply, show.")
app.add_typer(config_app, name="config")


def print_problems(error: ConfigError) -> None:
    for problem in error.problems:
        typer.echo(problem)
    typer.echo(f"{len(error.problems)} problem(s)", err=True)


def configured_store() -> Store:
    """The migrated store with a configuration in it (an empty database gets the
    configured or shipped sample directory first)."""
    from bus.config.loader import ConfigError
    from bus.config.snapshots import ensure_config
    from bus.settings import Settings
    from bus.store.db import open_store

    settings = Settings()
    store = open_store(settings)
    try:
        ensure_config(store.sessions, settings)
    except ConfigError as error:
        store.close()
        print_problems(error)
        raise typer.Exit(EXIT_INVALID) from None
    return store


@config_app.command("check")
def check(
    directory: Annotated[Path, typer.Argument(help="Configuration directory.")],
) -> None:
    """Validate a configuration directory as a whole (file:line problems; exit 1). With a
    store, also warn as `config apply` would of deliveries to systems it changes (read only)."""
    from bus.config.loader import ConfigError, load_config_dir

    try:
        config = load_config_dir(directory)
    except ConfigError as error:
        print_problems(error)
        raise typer.Exit(EXIT_INVALID) from None
    typer.echo(
        f"ok: {len(config.tenants)} tenants, {len(config.systems)} systems, "
        f"{len(config.routes)} routes, {len(config.access)} access rules"
    )
    warn_idle_destinations(config)
    _warn_changes_from_version_in_force(config)


def _store_as_it_is() -> Store | None:
    """The store, to compare a checked directory with the version in force; None when there
    is none to compare with: no SQLite file yet, a database never migrated or at another
    schema version (``config check`` never creates nor migrates a store: it writes nothing),
    or settings or a database it cannot use (a note on stderr; the check goes on)."""
    import sqlite3
    from contextlib import closing

    from sqlalchemy.engine import make_url
    from sqlalchemy.exc import ArgumentError, SQLAlchemyError

    from bus.settings import Settings
    from bus.store.db import (
        SCHEMA_HEAD,
        Store,
        create_store_engine,
        schema_version,
        session_factory,
    )

    try:
        settings = Settings()
        url = make_url(settings.effective_database_url)
    except (ValueError, ArgumentError):  # invalid settings are `renkei doctor`'s to report
        typer.echo("note: settings not usable; not compared with the store", err=True)
        return None
    if url.get_backend_name() == "sqlite":
        path = Path(url.database or "")
        if not url.database or not path.is_file() or path.stat().st_size == 0:
            return None
        try:  # read-only first: the store's connection settings would set WAL on any file
            with closing(sqlite3.connect(f"{path.resolve().as_uri()}?mode=ro", uri=True)) as db:
                found = db.execute("SELECT version_num FROM alembic_version").fetchall()
        except sqlite3.Error:
            return None
        if found != [(SCHEMA_HEAD,)]:
            return None
    engine = create_store_engine(settings)
    try:
        if schema_version(engine) == SCHEMA_HEAD:
            return Store(engine, session_factory(engine))
    except SQLAlchemyError:
        typer.echo("note: the store cannot be reached; not compared with it", err=True)
    engine.dispose()
    return None


def _warn_changes_from_version_in_force(config: HubConfig) -> None:
    """What ``config apply`` of this directory would warn about its deliveries (RK-OPS027,
    RK-OPS028), read from the store as it is; nothing when it has no configuration yet."""
    from sqlalchemy.exc import SQLAlchemyError

    from bus.config.loader import ConfigError
    from bus.config.snapshots import NoConfiguration, load_snapshot

    store = _store_as_it_is()
    if store is None:
        return
    try:
        in_force = load_snapshot(store.sessions).config
        _warn_destination_changes(store, in_force, config)
    except (NoConfiguration, ConfigError):
        return
    except SQLAlchemyError:  # e.g. a store file this login may not open for writing
        typer.echo("note: the store cannot be read; not compared with it", err=True)
    finally:
        store.close()


def warn_idle_destinations(config: HubConfig) -> None:
    """RK-OPS022 for each route destination that may receive for none of the route's
    tenants: valid (routing skips it, default deny), but most likely a mistake."""
    from bus.config.index import ConfigIndex
    from bus.errors import make_finding

    for idle in ConfigIndex(config).idle_destinations():
        route = f"{idle.service} ({idle.tenants})"
        finding = make_finding("RK-OPS022", path="/", actual=route, expected=idle.system)
        typer.echo(f"{finding.code} {finding.message_ja} / {finding.message_en}", err=True)


BaseVersionOption = Annotated[
    int | None,
    typer.Option(
        "--base-version",
        min=1,
        help="The version the directory was made from (default: its .renkei-base, written by "
        "config export/apply). Changes applied since must be in the directory (RK-OPS018).",
    ),
]
ForceOption = Annotated[
    bool,
    typer.Option(
        "--force",
        help="Replace the configuration in force with the directory whatever was applied "
        "since (a deliberate undo; recorded as forced in the admin audit chain).",
    ),
]


@config_app.command("apply")
def apply(
    directory: Annotated[
        Path | None,
        typer.Argument(help="Configuration directory (default: the settings' config dir)."),
    ] = None,
    base_version: BaseVersionOption = None,
    force: ForceOption = False,
) -> None:
    """Store the directory as a new configuration version; running processes reload it.

    Refused (nothing stored) when it would undo a change applied since the version the
    directory was made from (RK-OPS018), or that version is unknown (RK-OPS019/020). On an
    empty database the directory becomes version 1 (no sample configuration first)."""
    from bus.config.base_marker import read_base
    from bus.config.loader import ConfigError, parse_config_files, read_config_files
    from bus.config.snapshots import (
        ConfigConflict,
        NoBase,
        UnknownBase,
        apply_files,
        latest_version,
        stored_base,
    )
    from bus.settings import Settings
    from bus.store.db import open_store

    settings = Settings()
    source = directory or settings.effective_config_dir
    try:
        files = read_config_files(source)
        base = None if force else _given_base(read_base(source), base_version)
    except ConfigError as error:
        print_problems(error)
        raise typer.Exit(EXIT_INVALID) from None
    store = open_store(settings)  # once: the apply and its warnings share it
    try:
        try:
            before = latest_version(store.sessions)
            version = apply_files(
                store.sessions, files, actor(), base=base, forced=force, require_base=True
            )
            stored = stored_base(store.sessions, version)
        except ConfigError as error:
            print_problems(error)
            raise typer.Exit(EXIT_INVALID) from None
        except (ConfigConflict, NoBase, UnknownBase) as error:
            refuse_stale(error, source)
        state = "unchanged" if version == before else "applied"
        typer.echo(f"{state}: configuration version {version}")
        warn_idle_destinations(parse_config_files(files))
        remember_base(source, stored)
        if version != before:
            _warn_orphaned_deliveries(store)
            _warn_removed_tenants(store, version)
            if before is not None:
                _warn_changed_destinations(store, before, version)
    finally:
        store.close()


def _given_base(marked: Base | None, option: int | None) -> Base | None:
    """``--base-version`` wins over the directory's marker (its digest kept when they agree)."""
    from bus.config.snapshots import Base

    if option is None:
        return marked
    digest = marked.digest if marked is not None and marked.version == option else None
    return Base(option, digest)


def _refuse(finding: Finding) -> NoReturn:
    typer.echo(f"{finding.code}: {finding.message_ja}\n{finding.message_en}", err=True)
    raise typer.Exit(EXIT_INVALID)


def refuse_stale(error: ConfigConflict | NoBase | UnknownBase, source: Path) -> NoReturn:
    """RK-OPS018 (a lost update), RK-OPS019 (no base known), RK-OPS020 (not this hub's)."""
    from bus.config.snapshots import ConfigConflict, NoBase
    from bus.errors import make_finding

    if isinstance(error, ConfigConflict):
        files = ", ".join(error.paths)
        _refuse(
            make_finding(
                "RK-OPS018", path="/", actual=str(error.base), version=error.found, files=files
            )
        )
    if isinstance(error, NoBase):
        _refuse(make_finding("RK-OPS019", path="/", actual=str(source)))
    _refuse(make_finding("RK-OPS020", path="/", actual=str(error.base), version=error.found))


def remember_base(source: Path, base: Base) -> None:
    """Write ``.renkei-base`` so the next apply of ``source`` is checked against ``base``;
    never into the shipped sample directory (part of the installed software)."""
    from bus.config.base_marker import MARKER, write_base
    from bus.settings import Settings

    shipped = Settings(config_dir=None).effective_config_dir
    if source.resolve() == shipped.resolve():
        return
    try:
        write_base(source, base)
    except OSError as error:
        typer.echo(
            f"note: {source / MARKER} cannot be written ({error.strerror or error}); "
            "the next apply of this directory needs --base-version "
            f"{base.version}",
            err=True,
        )


@config_app.command("export")
def export(
    directory: Annotated[
        Path, typer.Argument(help="A new or empty directory to write the files into.")
    ],
    version: Annotated[
        int | None,
        typer.Option(
            min=1, help="An older version to start from (a roll-back); default: in force."
        ),
    ] = None,
) -> None:
    """Write the configuration in force (or --version N) into DIR with its .renkei-base, the
    version the next ``config apply DIR`` is checked against: edit there, then apply."""
    from bus.config.base_marker import holds_configuration, write_directory
    from bus.config.loader import ConfigError
    from bus.config.snapshots import Base
    from bus.errors import make_finding
    from bus.store.models import ConfigSnapshot

    if holds_configuration(directory):
        _refuse(make_finding("RK-OPS021", path="/", actual=str(directory)))
    store = configured_store()
    try:
        with store.sessions() as session:
            latest = session.query(ConfigSnapshot).order_by(ConfigSnapshot.version.desc()).first()
            assert latest is not None  # configured_store() made sure there is one
            chosen = latest if version is None else session.get(ConfigSnapshot, version)
            if chosen is None:
                typer.echo(f"no configuration version {version} (in force: {latest.version})")
                raise typer.Exit(EXIT_INVALID)
            files, base = dict(chosen.files), Base(latest.version, latest.digest)
            number = chosen.version
    finally:
        store.close()
    try:
        write_directory(directory, files, base)
    except ConfigError as error:
        print_problems(error)
        raise typer.Exit(EXIT_INVALID) from None
    typer.echo(
        f"exported: configuration version {number} to {directory} "
        f"({len(files)} files; base version {base.version})"
    )


def _warn_orphaned_deliveries(store: Store) -> None:
    """RK-OPS006 when pending or dead-lettered deliveries are addressed to systems the version
    now in force no longer has: they are kept (retried, then dead-lettered with "no endpoint
    configured"), but the operator should know at once, not 72 hours later."""
    from sqlalchemy import func, select

    from bus.config.snapshots import load_snapshot
    from bus.errors import make_finding
    from bus.store.models import Delivery, DeliveryState

    systems = {system.id for system in load_snapshot(store.sessions).config.systems}
    unresolved = (DeliveryState.PENDING.value, DeliveryState.DEAD.value)
    with store.sessions() as session:
        counts = session.execute(
            select(Delivery.destination, func.count())
            .where(Delivery.state.in_(unresolved), Delivery.destination.not_in(systems))
            .group_by(Delivery.destination)
            .order_by(Delivery.destination)
        ).all()
    if counts:
        actual = ", ".join(f"{destination}: {count}" for destination, count in counts)
        finding = make_finding("RK-OPS006", path="/", actual=actual)
        typer.echo(f"{finding.code} {finding.message_ja} / {finding.message_en}", err=True)


def _warn_removed_tenants(store: Store, version: int) -> None:
    """RK-OPS017 when ``version`` drops tenants the version it replaced had (a town's file
    deleted, or a directory copied before another operator's `tenants add`), with their
    unfinished deliveries: their messages are refused from now on."""
    from sqlalchemy import func, select

    from bus.config.snapshots import load_snapshot
    from bus.errors import make_finding
    from bus.store.models import Delivery, DeliveryState

    if version <= 1:
        return
    kept = {tenant.code for tenant in load_snapshot(store.sessions, version).config.tenants}
    old = load_snapshot(store.sessions, version - 1).config.tenants
    removed = [tenant for tenant in old if tenant.code not in kept]
    if not removed:
        return
    with store.sessions() as session:
        rows = session.execute(
            select(Delivery.tenant, Delivery.state, func.count())
            .where(Delivery.tenant.in_([tenant.code for tenant in removed]))
            .group_by(Delivery.tenant, Delivery.state)
        ).all()
    counts = {(tenant, state): count for tenant, state, count in rows}
    pending, dead = DeliveryState.PENDING.value, DeliveryState.DEAD.value
    actual = ", ".join(
        f"{t.code} {t.name} pending={counts.get((t.code, pending), 0)}"
        f" dead={counts.get((t.code, dead), 0)}"
        for t in removed
    )
    finding = make_finding("RK-OPS017", path="/", actual=actual)
    typer.echo(f"{finding.code} {finding.message_ja} / {finding.message_en}", err=True)


def _warn_changed_destinations(store: Store, before: int, version: int) -> None:
    """The warnings of :func:`_warn_destination_changes` for stored version ``version``
    replacing ``before``."""
    from bus.config.snapshots import load_snapshot

    old = load_snapshot(store.sessions, before).config
    _warn_destination_changes(store, old, load_snapshot(store.sessions, version).config)


def _warn_destination_changes(store: Store, old: HubConfig, new: HubConfig) -> None:
    """RK-OPS027 (paused) or RK-OPS028 (not paused) for each system whose endpoint,
    transport or mapping ``new`` changes and that has pending or dead-lettered
    deliveries: they are sent with the configuration in force at send time, so to the new
    system in its format; a send already under way when the configuration changed finishes
    on the old one, which a pause before the apply prevents (docs/operations.md, 更改).
    ``config apply`` warns after applying, ``config check`` before (reading only)."""
    from sqlalchemy import func, select

    from bus.config.changes import changed_destinations
    from bus.dispatch.claims import paused_destinations
    from bus.errors import make_finding
    from bus.store.models import Delivery, DeliveryState

    changed = changed_destinations(old, new)
    if not changed:
        return
    unresolved = (DeliveryState.PENDING.value, DeliveryState.DEAD.value)
    with store.sessions() as session:
        rows = session.execute(
            select(Delivery.destination, Delivery.state, func.count())
            .where(
                Delivery.destination.in_([change.system for change in changed]),
                Delivery.state.in_(unresolved),
            )
            .group_by(Delivery.destination, Delivery.state)
        ).all()
        paused = paused_destinations(session)
    counts = {(destination, state): count for destination, state, count in rows}
    for change in changed:
        pending = counts.get((change.system, DeliveryState.PENDING.value), 0)
        dead = counts.get((change.system, DeliveryState.DEAD.value), 0)
        if pending or dead:
            finding = make_finding(
                "RK-OPS027" if change.system in paused else "RK-OPS028",
                path="/",
                actual=change.system,
                changes=change.describe(),
                pending=pending,
                dead=dead,
            )
            typer.echo(f"{finding.code} {finding.message_ja} / {finding.message_en}", err=True)


@config_app.command("show")
def show() -> None:
    """The configuration in force: version and a summary."""
    from bus.cli import output
    from bus.config.models import ALL
    from bus.config.snapshots import load_snapshot
    from bus.store.audit import utc
    from bus.store.models import ConfigSnapshot
    from bus.wareki import JST

    store = configured_store()
    try:
        loaded = load_snapshot(store.sessions)
        with store.sessions() as session:
            snapshot = session.get(ConfigSnapshot, loaded.version)
            assert snapshot is not None
            at = utc(snapshot.applied_at).astimezone(JST)  # SQLite hands back naive UTC
            applied = f"{at:%Y-%m-%d %H:%M:%S} JST by {snapshot.applied_by or '-'}"
            digest = snapshot.digest
    finally:
        store.close()
    config = loaded.config
    console = output.console()
    console.print(
        f"configuration version {loaded.version} (applied {applied}, sha256 {digest})",
        soft_wrap=True,  # the digest whole on its line, whatever the width
    )
    tenants = output.table(
        "code", "name", "atena_check", "enabled", title="団体 tenants", ids=("code",)
    )
    for tenant in config.tenants:
        tenants.add_row(tenant.code, tenant.name, tenant.atena_check.value, str(tenant.enabled))
    systems = output.table(
        "id",
        "name",
        "kind",
        "tenants",
        "endpoint",
        "identified by",
        title="接続システム systems",
        ids=("id", "endpoint"),
    )
    for system in config.systems:
        credentials = system.credentials
        ways = [f"{len(credentials.api_key_hashes)} API key(s)"] * bool(credentials.api_key_hashes)
        ways += [", ".join(credentials.allow_addresses)] * bool(credentials.allow_addresses)
        systems.add_row(
            system.id,
            system.name,
            system.kind,
            ALL if system.tenants == ALL else str(len(system.tenants)),
            system.endpoint.url or system.endpoint.transport if system.endpoint else "-",
            "; ".join(ways) or "-",
        )
    routes = output.table("service", "tenants", "destinations", title="配信経路 routes")
    for route in config.routes:
        destinations = [route.provider] if route.provider else []
        destinations += [s.system + (" (when …)" if s.when else "") for s in route.subscribers]
        tenant_scope = ALL if route.tenants == ALL else ", ".join(route.tenants)
        routes.add_row(route.service, tenant_scope, ", ".join(destinations) or "-")
    output.print_tables(tenants, systems, routes, to=console)


def actor() -> str:
    """Who runs the command (``cli:<login>``, recorded with what it changes)."""
    try:
        return f"cli:{getpass.getuser()}"[:64]
    except (KeyError, OSError):
        return "cli"
