"""``renkei keys``, ``renkei tenants`` and ``renkei users``: identities and tenancy
(docs/security.md). Refusals are coded findings on stderr, exit status 1. Every change is
recorded on the admin audit chain as ``cli:<login>`` (docs/audit.md)."""

from __future__ import annotations

import getpass
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import timedelta
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any

import typer

from bus.cli.app import app
from bus.cli.config import actor, configured_store

if TYPE_CHECKING:
    from bus.config.index import ConfigIndex
    from bus.pipeline import Finding
    from bus.store.db import Store

EXIT_REFUSED = 1

keys_app = typer.Typer(help="接続システムの資格情報 credentials of connected systems.")
tenants_app = typer.Typer(help="団体 tenants: onboard, list, disable, export, purge.")
users_app = typer.Typer(help="操作者 operator accounts.")
app.add_typer(keys_app, name="keys")
app.add_typer(tenants_app, name="tenants")
app.add_typer(users_app, name="users")


def _refuse(finding: Finding) -> typer.Exit:
    typer.echo(f"{finding.code}: {finding.message_ja}\n{finding.message_en}", err=True)
    return typer.Exit(EXIT_REFUSED)


@contextmanager
def _store() -> Iterator[Store]:
    store = configured_store()
    try:
        yield store
    finally:
        store.close()


def _index(store: Store) -> ConfigIndex:
    from bus.config.snapshots import load_snapshot

    return load_snapshot(store.sessions).index


def _configured_system(store: Store, system: str) -> None:
    from bus.errors import make_finding

    if _index(store).system(system) is None:
        raise _refuse(make_finding("RK-TEN005", path="/system", actual=system[:40]))


SystemOption = Annotated[str, typer.Option("--system", help="The connected system's id.")]


# --- keys ------------------------------------------------------------------------------------


@keys_app.command("new")
def keys_new(
    system: SystemOption,
    valid_days: Annotated[
        int | None, typer.Option(min=1, help="Expire after this many days (default: never).")
    ] = None,
    for_config: Annotated[
        bool,
        typer.Option(
            "--for-config",
            help="Store nothing: print a key and the hash line for systems.yaml instead.",
        ),
    ] = False,
) -> None:
    """Issue an API key into the database: shown once, only its scrypt hash is stored."""
    from bus.security.api_keys import issue_key

    if for_config:
        _key_for_config(system)
        return
    with _store() as store:
        _configured_system(store, system)
        valid_for = timedelta(days=valid_days) if valid_days else None
        issued = issue_key(store.sessions, system, actor=actor(), valid_for=valid_for)
    typer.echo(f"API key {issued.key_id} for {system} (shown once; give it to its operator):")
    typer.echo(f"  {issued.key}")
    if issued.expires_at is not None:
        typer.echo(f"expires {issued.expires_at:%Y-%m-%d %H:%M} UTC")


def _key_for_config(system: str) -> None:
    from bus.identity import hash_api_key, new_api_key

    key = new_api_key(system)
    typer.echo(f"API key for {system} (shown once; give it to the system's operator):")
    typer.echo(f"  {key}")
    typer.echo(f"Add under systems[id={system}].credentials.api_key_hashes in systems.yaml:")
    typer.echo(f'  - "{hash_api_key(key)}"')


# A credential overlap is for a change-over, not a second credential: at most 30 days.
MAX_OVERLAP_HOURS = 720.0


@keys_app.command("rotate")
def keys_rotate(
    system: SystemOption,
    overlap_hours: Annotated[
        float,
        typer.Option(
            min=0, max=MAX_OVERLAP_HOURS, help="How long the old keys keep working (hours)."
        ),
    ] = 168.0,
) -> None:
    """Issue a new key; the system's current keys expire after the overlap."""
    from bus.security.api_keys import rotate_keys

    with _store() as store:
        _configured_system(store, system)
        overlap = timedelta(hours=overlap_hours)
        issued, old = rotate_keys(store.sessions, system, overlap=overlap, actor=actor())
    typer.echo(f"API key {issued.key_id} for {system} (shown once):")
    typer.echo(f"  {issued.key}")
    for info in old:
        typer.echo(f"old key {info.key_id} expires {info.expires_at:%Y-%m-%d %H:%M} UTC")


@keys_app.command("revoke")
def keys_revoke(key_id: Annotated[str, typer.Argument(help="The key id (keys list).")]) -> None:
    """Revoke a key now, in every hub process."""
    from bus.errors import make_finding
    from bus.security.api_keys import revoke_key

    with _store() as store:
        info = revoke_key(store.sessions, key_id, actor=actor())
    if info is None:
        raise _refuse(make_finding("RK-TEN010", path="/key_id", actual=key_id[:16]))
    typer.echo(f"revoked: {info.key_id} ({info.system})")


@keys_app.command("list")
def keys_list(
    system: Annotated[str | None, typer.Option("--system", help="Only this system.")] = None,
) -> None:
    """Issued keys (never the keys themselves): id, system, created, expiry, revocation; then
    the WS-Security UsernameTokens, with a previous password still valid and until when."""
    from datetime import UTC, datetime

    from bus.security.api_keys import list_keys
    from bus.security.wsse import list_soap_credentials

    with _store() as store:
        keys = list_keys(store.sessions, system)
        soap = list_soap_credentials(store.sessions, system)
    now = datetime.now(UTC)
    for info in keys:
        state = "valid" if info.valid_at(now) else "revoked" if info.revoked_at else "expired"
        expires = f"{info.expires_at:%Y-%m-%d %H:%M} UTC" if info.expires_at else "-"
        typer.echo(f"{info.key_id}  {info.system:<12} {state:<8} expires {expires}")
    for credential in soap:
        line = (
            f"soap {credential.username}  {credential.system:<12} "
            f"changed {credential.changed_at:%Y-%m-%d %H:%M} UTC"
        )
        if credential.previous_valid_at(now):
            line += (
                f"; previous password valid until {credential.previous_until:%Y-%m-%d %H:%M} UTC"
            )
        typer.echo(line)


@keys_app.command("soap")
def keys_soap(
    system: SystemOption,
    username: Annotated[
        str | None, typer.Option(help="UsernameToken username (default: the system id).")
    ] = None,
    overlap_hours: Annotated[
        float,
        typer.Option(
            min=0,
            max=MAX_OVERLAP_HOURS,
            help="How long the replaced password keeps working (default 0: it stops at once).",
        ),
    ] = 0.0,
) -> None:
    """Set a fresh WS-Security UsernameToken password (PasswordDigest): shown once, stored
    encrypted with RENKEI_SECRETS_KEY. With --overlap-hours the password replaced is accepted
    too until then."""
    from bus.security.secret_box import SecretBox
    from bus.security.wsse import list_soap_credentials, set_soap_secret
    from bus.settings import Settings

    with _store() as store:
        _configured_system(store, system)
        box = SecretBox.from_settings(Settings())
        name, password = set_soap_secret(
            store.sessions,
            box,
            system,
            username,
            actor=actor(),
            overlap=timedelta(hours=overlap_hours),
        )
        (credential,) = list_soap_credentials(store.sessions, system)
    typer.echo(f"UsernameToken for {system} (shown once): username {name}")
    typer.echo(f"  password {password}")
    if credential.previous_until is not None:
        until = f"{credential.previous_until:%Y-%m-%d %H:%M:%S}"
        typer.echo(f"previous password valid until {until} UTC")
    elif overlap_hours > 0:
        typer.echo("no previous password kept: there was none, or the key in force cannot open it")


@keys_app.command("fingerprint")
def keys_fingerprint(
    certificate: Annotated[Path, typer.Argument(help="A PEM client certificate.")],
) -> None:
    """The SHA-256 fingerprint to list under credentials.certificate_fingerprints."""
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes

    from bus.errors import make_finding

    try:
        pem = certificate.read_bytes()
    except OSError as error:
        reason = f"{certificate}: {error.strerror or error}"
        raise _refuse(make_finding("RK-IO001", path=str(certificate), actual=reason)) from None
    try:
        loaded = x509.load_pem_x509_certificate(pem)
    except ValueError:
        finding = make_finding("RK-TEN012", path=str(certificate), actual=str(certificate))
        raise _refuse(finding) from None
    typer.echo(loaded.fingerprint(hashes.SHA256()).hex())


# --- tenants ---------------------------------------------------------------------------------


def _config_files(store: Store, directory: Path | None) -> tuple[int, dict[str, str]]:
    """The version in force and the files to edit: the directory's, else that version's.
    The version is read first, so an apply made while the files are read is a conflict."""
    from bus.config.loader import read_config_files
    from bus.store.models import ConfigSnapshot

    with store.sessions() as session:
        latest = session.query(ConfigSnapshot).order_by(ConfigSnapshot.version.desc()).first()
        assert latest is not None  # configured_store() made sure there is one
        base, files = latest.version, dict(latest.files)
    return base, (read_config_files(directory) if directory is not None else files)


def _apply(
    store: Store,
    directory: Path | None,
    edit: tuple[int, dict[str, str]],
    changed: str,
    because: tuple[str, dict[str, Any]],
) -> int:
    """Apply the edited configuration (``edit``: the version it was made from and its files)
    unless another version was applied meanwhile (RK-TEN013: nothing stored, the directory
    as it was); ``because`` goes to the admin chain with it. A directory's files are checked
    against the version the directory was made from (its ``.renkei-base``), as ``renkei
    config apply`` checks them (RK-OPS018/019/020), and its marker is then renewed."""
    from bus.cli.config import print_problems, refuse_stale, remember_base
    from bus.config.base_marker import read_base
    from bus.config.loader import ConfigError
    from bus.config.snapshots import (
        Base,
        ConfigConflict,
        NoBase,
        UnknownBase,
        apply_files,
        stored_base,
    )
    from bus.errors import make_finding

    base, files = edit
    marked: Base | None = None
    if directory is not None:
        try:
            marked = read_base(directory)
        except ConfigError as error:
            print_problems(error)
            raise typer.Exit(1) from None
    target = directory / changed if directory is not None else None
    before = target.read_text(encoding="utf-8") if target and target.is_file() else None
    if target is not None:
        target.parent.mkdir(parents=True, exist_ok=True)
        target.write_text(files[changed], encoding="utf-8")
    try:
        if directory is None:
            return apply_files(store.sessions, files, actor(), because=because, base_version=base)
        version = apply_files(
            store.sessions, files, actor(), because=because, base=marked, require_base=True
        )
    except (ConfigConflict, NoBase, UnknownBase) as conflict:
        if target is not None:
            _restore(target, before)
        if directory is not None:
            refuse_stale(conflict, directory)
        assert isinstance(conflict, ConfigConflict)
        actual = f"{conflict.base} → {conflict.found}"
        raise _refuse(make_finding("RK-TEN013", path="/", actual=actual)) from None
    remember_base(directory, stored_base(store.sessions, version))
    return version


def _restore(target: Path, text: str | None) -> None:
    if text is None:
        target.unlink(missing_ok=True)
    else:
        target.write_text(text, encoding="utf-8")


ConfigDirOption = Annotated[
    Path | None,
    typer.Option(
        "--config-dir",
        help="Edit this configuration directory and apply it (default: RENKEI_CONFIG_DIR if "
        "set, else the configuration in force in the database).",
        file_okay=False,
    ),
]


def _directory(option: Path | None) -> Path | None:
    from bus.settings import Settings

    return option or Settings().config_dir


@tenants_app.command("add")
def tenants_add(
    code: Annotated[str, typer.Argument(help="全国地方公共団体コード (6 digits).")],
    name: Annotated[str, typer.Argument(help="団体名, e.g. 佐賀市.")],
    template: Annotated[
        Path | None, typer.Option(help="Onboarding template (default: the shipped town one).")
    ] = None,
    config_dir: ConfigDirOption = None,
) -> None:
    """Onboard a town in one step: tenants/<code>.yaml from the template, applied."""
    from bus.security.tenancy import DEFAULT_TEMPLATE, TenancyError, onboard

    directory = _directory(config_dir)
    with _store() as store:
        base, files = _config_files(store, directory)
        try:
            onboarded = onboard(files, code, name, template or DEFAULT_TEMPLATE)
        except TenancyError as error:
            raise _refuse(error.finding) from None
        detail = {"tenant": code, "name": name, "file": onboarded.path}
        edit = (base, onboarded.files)
        version = _apply(store, directory, edit, onboarded.path, ("tenant.add", detail))
    typer.echo(f"added: {code} {name} ({onboarded.path}); configuration version {version}")


@tenants_app.command("list")
def tenants_list() -> None:
    """Tenants in force, whether enabled, the systems serving each, and when a town that left
    had its data removed (renkei tenants purge)."""
    from bus.cli.offboard import purged_on

    with _store() as store:
        index = _index(store)
        purged = purged_on(store)
    for tenant in index.config.tenants:
        systems = sorted(s.id for s in index.config.systems if index.serves(s.id, tenant.code))
        state = "enabled" if tenant.enabled else "disabled"
        line = f"{tenant.code}  {tenant.name}  {state}  systems: {', '.join(systems) or '-'}"
        if tenant.code in purged:
            line += f"  purged: {purged[tenant.code]}"
        typer.echo(line)


def _set_enabled(code: str, enabled: bool, config_dir: Path | None) -> None:
    from bus.cli.offboard import purged_on
    from bus.errors import make_finding
    from bus.security.tenancy import TenancyError, set_enabled

    directory = _directory(config_dir)
    with _store() as store:
        base, files = _config_files(store, directory)
        try:
            path, edited = set_enabled(files, code, enabled)
        except TenancyError as error:
            raise _refuse(error.finding) from None
        because = (f"tenant.{'enable' if enabled else 'disable'}", {"tenant": code, "file": path})
        version = _apply(store, directory, (base, edited), path, because)
        purged = purged_on(store).get(code) if enabled else None
    state = "enabled" if enabled else "disabled"
    typer.echo(f"{state}: {code} ({path}); configuration version {version}")
    if purged is not None:  # a town that left comes back: allowed, but not as it was
        finding = make_finding("RK-TEN018", path="/tenant", actual=code, expected=purged)
        typer.echo(f"{finding.code} {finding.message_ja} / {finding.message_en}", err=True)


@tenants_app.command("disable")
def tenants_disable(
    code: Annotated[str, typer.Argument(help="全国地方公共団体コード.")],
    config_dir: ConfigDirOption = None,
) -> None:
    """Stop a tenant: its messages are refused (RK-AUT005) by every hub process."""
    _set_enabled(code, False, config_dir)


@tenants_app.command("enable")
def tenants_enable(
    code: Annotated[str, typer.Argument(help="全国地方公共団体コード.")],
    config_dir: ConfigDirOption = None,
) -> None:
    """Take a disabled tenant back into service (warned, RK-TEN018, when its data was purged)."""
    _set_enabled(code, True, config_dir)


# --- users -----------------------------------------------------------------------------------


def _password(prompt: bool) -> str:
    """From RENKEI_PASSWORD (scripts, tests) or an interactive prompt typed twice."""
    import os

    given = os.environ.get("RENKEI_PASSWORD")
    if given is not None or not prompt:
        return given or ""
    first = getpass.getpass("パスワード password: ")
    if getpass.getpass("もう一度 again: ") != first:
        typer.echo("パスワードが一致しません passwords differ", err=True)
        raise typer.Exit(EXIT_REFUSED)
    return first


@users_app.command("add")
def users_add(
    username: Annotated[str, typer.Argument(help="Login name (a-z, 0-9, . _ -).")],
    role: Annotated[str, typer.Option(help="viewer | operator | admin.")],
    tenant: Annotated[
        list[str], typer.Option("--tenant", help='Tenant code; repeat; "*" for all.')
    ],
) -> None:
    """Create an operator account (password from RENKEI_PASSWORD or a prompt)."""
    from bus.errors import make_finding
    from bus.security.operators import ALL_TENANTS, OperatorError, Role, add_operator

    try:
        chosen = Role(role)
    except ValueError:
        raise _refuse(make_finding("RK-TEN011", path="/role", actual=role[:16])) from None
    with _store() as store:
        index = _index(store)
        for code in tenant:
            if code != ALL_TENANTS and index.tenant(code) is None:
                raise _refuse(make_finding("RK-TEN003", path="/tenant", actual=code[:16]))
        try:
            operator = add_operator(
                store.sessions,
                username,
                _password(True),
                chosen,
                frozenset(tenant),
                actor=actor(),
            )
        except OperatorError as error:
            raise _refuse(error.finding) from None
    typer.echo(f"added: {operator.username} ({operator.role}; {', '.join(sorted(tenant))})")


@users_app.command("list")
def users_list() -> None:
    """Operator accounts: username, role, enabled or disabled, and their tenants."""
    from bus.security.operators import list_operators

    with _store() as store:
        operators = list_operators(store.sessions)
    for operator in operators:
        state = "enabled" if operator.enabled else "disabled"
        tenants = ", ".join(sorted(operator.tenants))
        typer.echo(f"{operator.username}  {operator.role}  {state}  tenants: {tenants}")


def _enable(username: str, enabled: bool) -> None:
    from bus.security.operators import OperatorError, set_enabled

    with _store() as store:
        try:
            set_enabled(store.sessions, username, enabled, actor=actor())
        except OperatorError as error:
            raise _refuse(error.finding) from None
    typer.echo(f"{'enabled' if enabled else 'disabled'}: {username}")


@users_app.command("disable")
def users_disable(username: Annotated[str, typer.Argument()]) -> None:
    """Lock an account (its logins are refused; nothing is deleted)."""
    _enable(username, False)


@users_app.command("enable")
def users_enable(username: Annotated[str, typer.Argument()]) -> None:
    """Unlock an account that was disabled (its password is unchanged)."""
    _enable(username, True)


@users_app.command("passwd")
def users_passwd(username: Annotated[str, typer.Argument()]) -> None:
    """Set a new password (RENKEI_PASSWORD or a prompt)."""
    from bus.security.operators import OperatorError, set_password

    with _store() as store:
        try:
            set_password(store.sessions, username, _password(True), actor=actor())
        except OperatorError as error:
            raise _refuse(error.finding) from None
    typer.echo(f"password changed: {username}")
