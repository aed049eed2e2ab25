"""``renkei keys``, ``renkei tenants`` and ``renkei users`` through the real CLI (typer's
runner, in process) on a real store: what each prints, what it stores, its coded refusals."""

from __future__ import annotations

import re
import shutil
from pathlib import Path

import pytest
from typer.testing import CliRunner

from bus.cli import app
from bus.config.snapshots import load_snapshot
from bus.security.api_keys import ApiKeyRegistry
from bus.security.operators import OperatorError, authenticate
from bus.settings import Settings
from bus.store.db import open_store
from tests.conftest import SAMPLE_CONFIG_DIR
from tests.support.certificates import Authority

KEY = re.compile(r"rk_[a-z0-9_\-]+_[0-9a-f]{16}\.[A-Za-z0-9_\-]{43}")


@pytest.fixture
def env(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Settings:
    monkeypatch.setenv("RENKEI_DATA_DIR", str(tmp_path / "data"))
    monkeypatch.delenv("RENKEI_DATABASE_URL", raising=False)
    monkeypatch.delenv("RENKEI_CONFIG_DIR", raising=False)
    return Settings(data_dir=tmp_path / "data")


def _run(*args: str, code: int = 0) -> str:
    result = CliRunner().invoke(app, list(args))
    assert result.exit_code == code, result.output
    return result.output


def test_keys_new_rotate_revoke_list(env: Settings) -> None:
    first = KEY.search(_run("keys", "new", "--system", "zeimu"))
    assert first is not None
    rotated = _run("keys", "rotate", "--system", "zeimu", "--overlap-hours", "2")
    second = KEY.search(rotated)
    assert second is not None and "old key" in rotated and "expires" in rotated
    store = open_store(env)
    try:
        registry = ApiKeyRegistry(store.sessions)
        assert registry.system_for(first.group()) == registry.system_for(second.group()) == "zeimu"
        key_id = second.group().split(".")[0][-16:]  # rk_<system>_<16 hex>.<secret>
        assert f"revoked: {key_id}" in _run("keys", "revoke", key_id)
        assert registry.system_for(second.group()) is None
    finally:
        store.close()
    listing = _run("keys", "list", "--system", "zeimu")
    assert "revoked" in listing and "valid" in listing
    assert first.group() not in listing and second.group() not in listing  # never shown again
    assert "RK-TEN005" in _run("keys", "new", "--system", "nosuch", code=1)
    assert "RK-TEN010" in _run("keys", "revoke", "0123456789abcdef", code=1)


def test_keys_for_config_prints_a_hash_line_and_stores_nothing(env: Settings) -> None:
    output = _run("keys", "new", "--system", "juki", "--for-config")
    assert re.search(r'- "scrypt\$16384\$8\$1\$', output)
    assert not (env.data_dir / "renkei.db").exists()


def test_soap_secret_and_certificate_fingerprint(env: Settings, tmp_path: Path) -> None:
    output = _run("keys", "soap", "--system", "juki", "--username", "juki-ws")
    assert "username juki-ws" in output and "password " in output
    assert (env.data_dir / "secrets.key").is_file()  # no RENKEI_SECRETS_KEY: made once
    issued = Authority.create(tmp_path, "ca").issue(tmp_path, "juki")
    assert _run("keys", "fingerprint", str(issued.certificate)).strip() == issued.fingerprint


def test_fingerprint_refuses_a_file_that_is_not_a_certificate(tmp_path: Path) -> None:
    junk = tmp_path / "junk.pem"
    junk.write_text("junk\n", encoding="utf-8")
    refused = _run("keys", "fingerprint", str(junk), code=1)
    assert "RK-TEN012" in refused and "cannot be read as a PEM client certificate" in refused
    assert "PEM 形式のクライアント証明書として読み取れません" in refused
    for path in (tmp_path / "missing.pem", tmp_path):
        unreadable = _run("keys", "fingerprint", str(path), code=1)
        assert "RK-IO001" in unreadable and "ファイルを読み込めません" in unreadable
        assert f"The file cannot be read ({path}: " in unreadable


def test_tenants_add_list_disable_against_the_configuration_in_force(env: Settings) -> None:
    added = _run("tenants", "add", "412015", "佐賀市")
    assert "tenants/412015.yaml" in added and "configuration version 2" in added
    listing = _run("tenants", "list")
    assert "412015  佐賀市  enabled  systems: juki, kokuho" in listing  # no houmu: opt-in
    assert "configuration version 3" in _run("tenants", "disable", "412015")
    store = open_store(env)
    try:
        tenant = load_snapshot(store.sessions).index.tenant("412015")
        assert tenant is not None and not tenant.enabled
    finally:
        store.close()
    assert "RK-TEN001" in _run("tenants", "add", "412016", "x", code=1)
    assert "RK-TEN002" in _run("tenants", "add", "412066", "武雄市", code=1)
    assert "RK-TEN003" in _run("tenants", "disable", "412023", code=1)


def test_tenants_add_edits_a_configuration_directory(env: Settings, tmp_path: Path) -> None:
    directory = tmp_path / "config"
    shutil.copytree(SAMPLE_CONFIG_DIR, directory)
    _run("tenants", "add", "412023", "唐津市", "--config-dir", str(directory))
    written = (directory / "tenants" / "412023.yaml").read_text(encoding="utf-8")
    assert 'code: "412023"' in written and 'name: "唐津市"' in written


def test_users_add_list_passwd_disable(env: Settings, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("RENKEI_PASSWORD", "first-password-1")
    assert "added: takeo.op" in _run(
        "users", "add", "takeo.op", "--role", "operator", "--tenant", "412066"
    )
    assert "takeo.op  operator  enabled  tenants: 412066" in _run("users", "list")
    monkeypatch.setenv("RENKEI_PASSWORD", "second-password-2")
    _run("users", "passwd", "takeo.op")
    store = open_store(env)
    try:
        assert authenticate(store.sessions, "takeo.op", "second-password-2").tenants == {"412066"}
        _run("users", "disable", "takeo.op")
        assert "disabled" in _run("users", "list")
        with pytest.raises(OperatorError):
            authenticate(store.sessions, "takeo.op", "second-password-2")
        assert "enabled: takeo.op" in _run("users", "enable", "takeo.op")
        assert authenticate(store.sessions, "takeo.op", "second-password-2").enabled
    finally:
        store.close()
    assert "RK-TEN011" in _run("users", "add", "x.y", "--role", "root", "--tenant", "*", code=1)
    assert "RK-TEN003" in _run(
        "users", "add", "x.y", "--role", "viewer", "--tenant", "999999", code=1
    )
    monkeypatch.setenv("RENKEI_PASSWORD", "short")
    assert "RK-TEN007" in _run("users", "add", "x.y", "--role", "viewer", "--tenant", "*", code=1)


@pytest.mark.parametrize("command", [("keys", "rotate"), ("keys", "soap")])
def test_an_overlap_is_at_most_thirty_days(env: Settings, command: tuple[str, ...]) -> None:
    """An overlap is a change-over, not a second credential; an absurd one was an overflow
    traceback."""
    output = _run(*command, "--system", "juki", "--overlap-hours", "1e12", code=2)
    assert "--overlap-hours" in output and "720" in output
