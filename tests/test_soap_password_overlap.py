"""``renkei keys soap --overlap-hours N``: the previous WS-Security password keeps working until
now + N hours. Over real HTTP against a running hub whose store was created at the migration
before the overlap columns (the hub migrates it on start), with UsernameTokens built in the
tests: during the overlap the old and the new password are accepted, after it (or with no
overlap) the old one is refused RK-AUT007, a replayed nonce is refused for either; the
migration keeps an existing secret working on SQLite and PostgreSQL; ``renkei serve`` checks
a previous sealed secret too."""

from __future__ import annotations

import base64
import os
import re
import secrets
import subprocess
import sys
import time
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import httpx
import pytest
import typer
from alembic import command
from lxml import etree
from sqlalchemy import Engine, insert, inspect, select

from adapters.soap.envelope import NS_SOAP_BINDING
from bus.cli.serve import check_secrets_key
from bus.pipeline import UsernameToken
from bus.security.secret_box import SecretBox
from bus.security.wsse import PASSWORD_DIGEST, UsernameTokenVerifier, set_soap_secret
from bus.settings import Settings
from bus.store.db import _alembic_config, create_store_engine, migrate, open_store
from bus.store.models import SoapCredential
from tests.support.towns import Towns, message, soap_with_token, towns_hub

PREVIOUS_HEAD = "0007_messages_key_order"
TOWN = "412015"
SYSTEM = f"juki-{TOWN}"
SOAP_XML = {"Content-Type": "text/xml; charset=utf-8", "SOAPAction": '""'}
PASSWORD = re.compile(r"password (\S+)")


@pytest.fixture(scope="module")
def towns(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Towns]:
    """The towns' hub on a store created at the previous head (migrated when it starts)."""
    tmp = tmp_path_factory.mktemp("soap-overlap")
    engine = create_store_engine(Settings(data_dir=tmp / "hub-data"))
    try:
        command.upgrade(_alembic_config(engine), PREVIOUS_HEAD)
        columns = {c["name"] for c in inspect(engine).get_columns("soap_credentials")}
        assert "previous_secret_encrypted" not in columns  # really the store before
    finally:
        engine.dispose()
    with towns_hub(tmp) as hub:
        yield hub


def _cli(towns: Towns, *args: str) -> str:
    env = {
        **os.environ,
        "RENKEI_DATA_DIR": str(towns.settings.data_dir),
        "RENKEI_CONFIG_DIR": str(towns.hub.config_dir),
        "RENKEI_SECRETS_KEY": str(towns.settings.secrets_key),
    }
    env.pop("RENKEI_DATABASE_URL", None)
    renkei = str(Path(sys.executable).with_name("renkei"))
    result = subprocess.run(
        [renkei, *args], env=env, capture_output=True, text=True, check=False, timeout=120
    )
    assert result.returncode == 0, result.stderr
    return result.stdout


def _new_password(towns: Towns, overlap_hours: str | None) -> str:
    args = ["keys", "soap", "--system", SYSTEM]
    if overlap_hours is not None:
        args += ["--overlap-hours", overlap_hours]
    found = PASSWORD.search(_cli(towns, *args))
    assert found is not None
    return found.group(1)


def _send(towns: Towns, password: str, nonce: bytes | None = None) -> tuple[int, list[str]]:
    body = soap_with_token(
        message("ResidentChangeNotice", TOWN, SYSTEM), SYSTEM, password, nonce=nonce
    )
    response = httpx.post(
        f"{towns.hub.url}/soap/ResidentChangeNotice", content=body, headers=SOAP_XML, timeout=30
    )
    if response.status_code == 200:
        return 200, []
    codes = etree.fromstring(response.content).iter(f"{{{NS_SOAP_BINDING}}}code")
    return response.status_code, [e.text or "" for e in codes]


def _previous_until(towns: Towns) -> datetime | None:
    store = open_store(towns.settings)
    try:
        with store.sessions() as session:
            row = session.get(SoapCredential, SYSTEM)
            assert row is not None
            until = row.previous_expires_at
    finally:
        store.close()
    return None if until is None else until.replace(tzinfo=until.tzinfo or UTC)


def test_the_hub_migrated_the_store_from_the_previous_head(towns: Towns) -> None:
    engine = create_store_engine(towns.settings)
    try:
        columns = {c["name"]: c for c in inspect(engine).get_columns("soap_credentials")}
    finally:
        engine.dispose()
    assert columns["previous_secret_encrypted"]["nullable"]
    assert columns["previous_expires_at"]["nullable"]
    assert _send(towns, towns.soap_passwords[SYSTEM]) == (200, [])


def test_during_the_overlap_both_passwords_work_and_replays_are_refused(towns: Towns) -> None:
    old = towns.soap_passwords[SYSTEM]
    new = _new_password(towns, "2")
    assert new != old
    old_nonce, new_nonce = secrets.token_bytes(16), secrets.token_bytes(16)
    assert _send(towns, old, old_nonce) == (200, [])
    assert _send(towns, new, new_nonce) == (200, [])
    assert _send(towns, old, old_nonce) == (500, ["RK-AUT009"])  # replayed, old password
    assert _send(towns, new, new_nonce) == (500, ["RK-AUT009"])  # replayed, new password
    # a nonce used with one password is spent for the other too (one cache per username)
    assert _send(towns, new, old_nonce) == (500, ["RK-AUT009"])
    assert _send(towns, "not-the-password") == (500, ["RK-AUT007"])
    listing = _cli(towns, "keys", "list", "--system", SYSTEM)
    until = _previous_until(towns)
    assert until is not None
    assert abs(until - (datetime.now(UTC) + timedelta(hours=2))) < timedelta(minutes=5)
    assert f"previous password valid until {until:%Y-%m-%d %H:%M} UTC" in listing
    assert old not in listing and new not in listing
    towns.soap_passwords[SYSTEM] = new


def test_after_the_overlap_the_old_password_is_refused(towns: Towns) -> None:
    old = towns.soap_passwords[SYSTEM]
    new = _new_password(towns, "0.002")  # 7.2 s: the CLI's exit and one send, under load
    assert _send(towns, old) == (200, [])
    until = _previous_until(towns)
    assert until is not None and until > datetime.now(UTC)  # the send was in the overlap
    time.sleep(max(0.0, (until - datetime.now(UTC)).total_seconds()) + 0.5)
    assert _send(towns, old) == (500, ["RK-AUT007"])
    assert _send(towns, new) == (200, [])
    assert "previous password" not in _cli(towns, "keys", "list", "--system", SYSTEM)
    towns.soap_passwords[SYSTEM] = new


@pytest.mark.parametrize("overlap", [None, "0"])
def test_without_an_overlap_the_old_password_is_refused_at_once(
    towns: Towns, overlap: str | None
) -> None:
    old = towns.soap_passwords[SYSTEM]
    new = _new_password(towns, overlap)
    assert _previous_until(towns) is None
    assert _send(towns, old) == (500, ["RK-AUT007"])
    assert _send(towns, new) == (200, [])
    towns.soap_passwords[SYSTEM] = new


# --- the migration on SQLite and PostgreSQL ---------------------------------------------------


def _token(password: str, now: datetime, username: str = "juki") -> UsernameToken:
    from bus.security.wsse import password_digest

    nonce = secrets.token_bytes(16)
    created = now.strftime("%Y-%m-%dT%H:%M:%SZ")
    return UsernameToken(
        username=username,
        password_digest=password_digest(nonce, created, password),
        password_type=PASSWORD_DIGEST,
        nonce=base64.b64encode(nonce).decode(),
        created=created,
    )


def test_a_store_at_the_previous_head_migrates_and_keeps_its_secret(engine: Engine) -> None:
    from sqlalchemy.orm import sessionmaker

    box = SecretBox(secrets.token_bytes(32))
    command.upgrade(_alembic_config(engine), PREVIOUS_HEAD)
    with engine.begin() as connection:
        connection.execute(
            insert(SoapCredential.__table__).values(
                system="juki",
                username="juki",
                secret_encrypted=box.seal("before-the-migration", "juki"),
                changed_at=datetime.now(UTC),
            )
        )
    migrate(engine)
    with engine.connect() as connection:
        row = connection.execute(
            select(SoapCredential.previous_secret_encrypted, SoapCredential.previous_expires_at)
        ).one()
    assert tuple(row) == (None, None)
    sessions = sessionmaker(engine, expire_on_commit=False)
    verifier = UsernameTokenVerifier(sessions, lambda: box)
    now = datetime.now(UTC)
    assert verifier.verify(_token("before-the-migration", now), now) == "juki"
    _, new = set_soap_secret(sessions, box, "juki", overlap=timedelta(hours=1))
    assert verifier.verify(_token("before-the-migration", now), now) == "juki"
    assert verifier.verify(_token(new, now), now) == "juki"
    later = now + timedelta(hours=1, minutes=1)
    refused = verifier.verify(_token("before-the-migration", later), later)
    assert not isinstance(refused, str) and refused.code == "RK-AUT007"
    assert verifier.verify(_token(new, later), later) == "juki"
    # down to the previous head and up again: the current secret stays
    command.downgrade(_alembic_config(engine), PREVIOUS_HEAD)
    migrate(engine)
    assert verifier.verify(_token(new, later), later) == "juki"


# --- renkei serve's start-up check ------------------------------------------------------------


def test_serve_refuses_a_previous_secret_the_key_cannot_open(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    key = base64.b64encode(secrets.token_bytes(32)).decode()
    settings = Settings(data_dir=tmp_path / "data", secrets_key=key)
    store = open_store(settings)
    try:
        set_soap_secret(store.sessions, SecretBox.from_settings(settings), "juki")
        check_secrets_key(settings)  # the current secret opens: starts
        with store.sessions.begin() as session:
            row = session.get(SoapCredential, "juki")
            assert row is not None
            row.previous_secret_encrypted = SecretBox(secrets.token_bytes(32)).seal("x", "juki")
            row.previous_expires_at = datetime.now(UTC) + timedelta(hours=1)
    finally:
        store.close()
    with pytest.raises(typer.Exit):
        check_secrets_key(settings)
    assert "RK-OPS005" in capsys.readouterr().err
