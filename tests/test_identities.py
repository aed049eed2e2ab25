"""Identities against a real store (SQLite and PostgreSQL): issued API keys with rotation and
revocation, operator accounts and permissions, tenant onboarding and disabling, the
WS-Security verifier with its shared nonce cache, encrypted secrets and rate limits."""

from __future__ import annotations

import base64
import secrets
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from bus.config.loader import parse_config_files, read_config_files
from bus.config.models import RateLimit
from bus.config.snapshots import ensure_config
from bus.kdf import is_secret_hash
from bus.pipeline import UsernameToken
from bus.security.api_keys import ApiKeyRegistry, issue_key, list_keys, revoke_key, rotate_keys
from bus.security.operators import (
    OperatorError,
    Permission,
    Role,
    add_operator,
    authenticate,
    list_operators,
    require,
    set_enabled,
    set_password,
)
from bus.security.rate_limit import RateLimiter
from bus.security.secret_box import SecretBox, SecretKeyError, load_key
from bus.security.tenancy import TenancyError, onboard
from bus.security.tenancy import set_enabled as set_tenant_enabled
from bus.security.wsse import (
    PASSWORD_DIGEST,
    UsernameTokenVerifier,
    password_digest,
    set_soap_secret,
)
from bus.settings import Settings
from bus.store.db import Store, open_store
from bus.store.models import OperatorAccount, SoapCredential
from tests.conftest import SAMPLE_CONFIG_DIR

TAKEO, KASHIMA = "412066", "412074"
SAGA_CITY = "412015"  # 佐賀市: not in the sample configuration


@pytest.fixture
def store(store_settings: Settings) -> Store:
    opened = open_store(store_settings)
    ensure_config(opened.sessions, store_settings)
    yield opened  # type: ignore[misc]
    opened.close()


# --- API keys ------------------------------------------------------------------------------


def test_issued_key_identifies_its_system_until_revoked(store: Store) -> None:
    registry = ApiKeyRegistry(store.sessions)
    issued = issue_key(store.sessions, "juki", actor="test")
    assert issued.key.startswith(f"rk_juki_{issued.key_id}.")
    assert registry.system_for(issued.key) == "juki"
    assert registry.system_for(issued.key[:-1] + ("A" if issued.key[-1] != "A" else "B")) is None
    # the key id is public: naming another system with it identifies nothing
    assert registry.system_for(issued.key.replace("rk_juki_", "rk_zeimu_")) is None
    stored = list_keys(store.sessions, "juki")
    assert [k.key_id for k in stored] == [issued.key_id]
    revoke_key(store.sessions, issued.key_id)
    assert registry.system_for(issued.key) is None  # at once, though verified before


def test_only_the_hash_is_stored(store: Store) -> None:
    issued = issue_key(store.sessions, "juki")
    with store.sessions() as session:
        from bus.store.models import ApiKey

        row = session.get(ApiKey, issued.key_id)
        assert row is not None and is_secret_hash(row.key_hash)
        assert issued.key not in row.key_hash and issued.key.split(".")[1] not in row.key_hash


def test_rotation_keeps_both_keys_valid_for_the_overlap_only(store: Store) -> None:
    registry = ApiKeyRegistry(store.sessions)
    now = datetime.now(UTC)
    old = issue_key(store.sessions, "shuno", now=now)
    new, rotated = rotate_keys(store.sessions, "shuno", overlap=timedelta(hours=2), now=now)
    assert [info.key_id for info in rotated] == [old.key_id]
    during, after = now + timedelta(hours=1), now + timedelta(hours=3)
    assert registry.system_for(old.key, during) == "shuno"
    assert registry.system_for(new.key, during) == "shuno"
    assert registry.system_for(old.key, after) is None
    assert registry.system_for(new.key, after) == "shuno"


def test_a_key_issued_with_an_expiry_expires(store: Store) -> None:
    registry = ApiKeyRegistry(store.sessions)
    now = datetime.now(UTC)
    issued = issue_key(store.sessions, "kokuho", valid_for=timedelta(days=1), now=now)
    assert registry.system_for(issued.key, now + timedelta(hours=23)) == "kokuho"
    assert registry.system_for(issued.key, now + timedelta(hours=25)) is None


# --- operator accounts ---------------------------------------------------------------------


def test_operator_authenticates_and_is_scoped_to_its_tenants(store: Store) -> None:
    password = "correct horse battery"
    add_operator(store.sessions, "takeo.viewer", password, Role.VIEWER, frozenset({TAKEO}))
    operator = authenticate(store.sessions, "takeo.viewer", password)
    assert operator.role is Role.VIEWER and operator.tenants == {TAKEO}
    assert operator.may(Permission.VIEW, TAKEO)
    assert not operator.may(Permission.VIEW, KASHIMA)
    assert not operator.may(Permission.OPERATE, TAKEO)
    with pytest.raises(OperatorError) as refused:
        require(operator, Permission.VIEW, KASHIMA)
    assert refused.value.finding.code == "RK-AUT011"
    assert operator.visible_tenants(frozenset({TAKEO, KASHIMA})) == {TAKEO}
    with store.sessions() as session:
        row = session.get(OperatorAccount, "takeo.viewer")
        assert row is not None and is_secret_hash(row.password_hash)
        assert password not in row.password_hash


def test_roles_nest_and_star_means_every_tenant(store: Store) -> None:
    admin = add_operator(store.sessions, "hub-admin", "x" * 16, Role.ADMIN, frozenset({"*"}))
    operator = add_operator(store.sessions, "kashima-op", "y" * 16, Role.OPERATOR, {KASHIMA})
    assert all(admin.may(p, t) for p in Permission for t in (TAKEO, KASHIMA, "410004"))
    assert operator.may(Permission.OPERATE, KASHIMA)
    assert not operator.may(Permission.ADMINISTER, KASHIMA)
    assert [o.username for o in list_operators(store.sessions)] == ["hub-admin", "kashima-op"]


@pytest.mark.parametrize("case", ["wrong password", "unknown user", "disabled"])
def test_every_failed_login_is_the_same_refusal(store: Store, case: str) -> None:
    add_operator(store.sessions, "takeo.op", "a-long-password", Role.OPERATOR, {TAKEO})
    username, password = "takeo.op", "a-long-password"
    if case == "wrong password":
        password = "a-long-passworD"
    elif case == "unknown user":
        username = "nobody"
    else:
        set_enabled(store.sessions, "takeo.op", False)
    with pytest.raises(OperatorError) as refused:
        authenticate(store.sessions, username, password)
    assert refused.value.finding.code == "RK-AUT012"


def test_password_change_and_account_rules(store: Store) -> None:
    add_operator(store.sessions, "takeo.admin", "first-password", Role.ADMIN, {TAKEO})
    set_password(store.sessions, "takeo.admin", "second-password")
    assert authenticate(store.sessions, "takeo.admin", "second-password").username
    with pytest.raises(OperatorError):
        authenticate(store.sessions, "takeo.admin", "first-password")
    codes = []
    for username, password in (
        ("takeo.admin", "long-enough-1"),
        ("Bad Name", "long-enough-1"),
        ("short.pw", "short"),
    ):
        with pytest.raises(OperatorError) as refused:
            add_operator(store.sessions, username, password, Role.VIEWER, {TAKEO})
        codes.append(refused.value.finding.code)
    assert codes == ["RK-TEN008", "RK-TEN006", "RK-TEN007"]
    with pytest.raises(OperatorError) as refused:
        set_password(store.sessions, "nobody", "long-enough-1")
    assert refused.value.finding.code == "RK-TEN009"


# --- tenants -------------------------------------------------------------------------------


def test_onboarding_a_town_makes_the_shared_systems_serve_it() -> None:
    files = read_config_files(SAMPLE_CONFIG_DIR)
    onboarded = onboard(files, SAGA_CITY, "佐賀市")
    assert onboarded.path == f"tenants/{SAGA_CITY}.yaml"
    config = parse_config_files(onboarded.files)
    from bus.config.index import ConfigIndex
    from bus.config.models import Direction

    index = ConfigIndex(config)
    tenant = index.tenant(SAGA_CITY)
    assert tenant is not None and tenant.name == "佐賀市" and tenant.enabled
    assert index.serves("juki", SAGA_CITY) and index.serves("tainou", SAGA_CITY)
    assert index.allowed("juki", Direction.SEND, "ResidentChangeNotice", SAGA_CITY)
    assert index.allowed("zeimu", Direction.RECEIVE, "ResidentChangeNotice", SAGA_CITY)
    assert not index.serves("juki", "412023")  # 唐津市 was not onboarded


@pytest.mark.parametrize(
    ("code", "expected"),
    [
        ("412016", "RK-TEN001"),
        ("41201", "RK-TEN001"),
        ("abcdef", "RK-TEN001"),
        (TAKEO, "RK-TEN002"),
    ],
)
def test_onboarding_refuses_bad_or_existing_codes(code: str, expected: str) -> None:
    with pytest.raises(TenancyError) as refused:
        onboard(read_config_files(SAMPLE_CONFIG_DIR), code, "x")
    assert refused.value.finding.code == expected


def test_onboarding_with_an_invalid_template_stores_nothing(tmp_path: Path) -> None:
    template = tmp_path / "bad.yaml"
    template.write_text('tenants:\n  - code: "${code}"\n    name: ${name}\n    joins: [nosuch]\n')
    with pytest.raises(TenancyError) as refused:
        onboard(read_config_files(SAMPLE_CONFIG_DIR), SAGA_CITY, "佐賀市", template)
    assert refused.value.finding.code == "RK-TEN004"
    assert "nosuch" in refused.value.finding.message_en


def test_disabling_edits_the_entry_in_place_and_keeps_comments() -> None:
    files = read_config_files(SAMPLE_CONFIG_DIR)
    path, edited = set_tenant_enabled(files, KASHIMA, False)
    assert path == "tenants.yaml"
    assert edited[path].splitlines()[0] == files[path].splitlines()[0]  # the comment header
    tenants = {t.code: t for t in parse_config_files(edited).tenants}
    assert not tenants[KASHIMA].enabled and tenants[TAKEO].enabled
    _, again = set_tenant_enabled(edited, KASHIMA, True)
    assert all(t.enabled for t in parse_config_files(again).tenants)
    block = '  - code: "412074"\n    name: 鹿島市\n    atena_check: warn'
    assert block in files[path]
    flow = files[path].replace(block, '  - {code: "412074", name: 鹿島市, atena_check: warn}')
    _, flowed = set_tenant_enabled({**files, path: flow}, KASHIMA, False)
    assert not {t.code: t for t in parse_config_files(flowed).tenants}[KASHIMA].enabled
    with pytest.raises(TenancyError) as refused:
        set_tenant_enabled(files, SAGA_CITY, False)
    assert refused.value.finding.code == "RK-TEN003"


# --- WS-Security UsernameToken -------------------------------------------------------------


def _token(
    password: str,
    *,
    created: datetime,
    nonce: bytes | None = None,
    username: str = "juki",
    kind: str = PASSWORD_DIGEST,
) -> UsernameToken:
    nonce = nonce or secrets.token_bytes(16)
    stamp = created.strftime("%Y-%m-%dT%H:%M:%SZ")
    digest = password_digest(nonce, stamp, password)
    return UsernameToken(username, digest, base64.b64encode(nonce).decode(), stamp, kind)


def test_username_token_digest_freshness_and_replay(store: Store, tmp_path: Path) -> None:
    box = SecretBox(secrets.token_bytes(32))
    username, password = set_soap_secret(store.sessions, box, "juki")
    verifier = UsernameTokenVerifier(store.sessions, lambda: box)
    other_worker = UsernameTokenVerifier(store.sessions, lambda: box)
    now = datetime.now(UTC)
    token = _token(password, created=now)
    assert verifier.verify(token, now) == "juki"
    replayed = other_worker.verify(token, now + timedelta(seconds=30))
    assert not isinstance(replayed, str) and replayed.code == "RK-AUT009"
    stale = verifier.verify(_token(password, created=now - timedelta(minutes=6)), now)
    assert not isinstance(stale, str) and stale.code == "RK-AUT008"
    future = verifier.verify(_token(password, created=now + timedelta(minutes=6)), now)
    assert not isinstance(future, str) and future.code == "RK-AUT008"
    wrong = verifier.verify(_token(password + "x", created=now), now)
    assert not isinstance(wrong, str) and wrong.code == "RK-AUT007"
    unknown = verifier.verify(_token(password, created=now, username="nobody"), now)
    assert not isinstance(unknown, str) and unknown.code == "RK-AUT007"
    text = verifier.verify(_token(password, created=now, kind="#PasswordText"), now)
    assert not isinstance(text, str) and text.code == "RK-AUT006"
    with store.sessions() as session:
        row = session.get(SoapCredential, "juki")
        assert row is not None and password.encode() not in row.secret_encrypted
        assert row.username == username


def test_secret_box_binds_the_ciphertext_to_its_row(tmp_path: Path) -> None:
    settings = Settings(data_dir=tmp_path / "data")
    key = load_key(settings)
    assert (tmp_path / "data" / "secrets.key").stat().st_mode & 0o077 == 0
    assert load_key(settings) == key  # created once, then read
    box = SecretBox(key)
    sealed = box.seal("s3cret", "juki")
    assert box.open(sealed, "juki") == "s3cret"
    with pytest.raises(SecretKeyError):
        box.open(sealed, "zeimu")
    with pytest.raises(SecretKeyError):
        load_key(Settings(data_dir=tmp_path, secrets_key="c2hvcnQ="))


def test_a_key_file_another_process_created_meanwhile_is_the_key(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Two hub processes' first use at once: this one saw no key file, another created it
    before this one could. Its key is used (no error, no second key, nothing half-written)."""
    settings = Settings(data_dir=tmp_path / "data")
    theirs = load_key(settings)  # the other process's
    monkeypatch.setattr(Path, "exists", lambda _self: False)  # checked before it was there
    assert load_key(settings) == theirs
    monkeypatch.undo()
    assert [p.name for p in (tmp_path / "data").iterdir()] == ["secrets.key"]


# --- rate limits ---------------------------------------------------------------------------


def test_rate_limit_is_shared_by_every_worker(store: Store) -> None:
    first, second = RateLimiter(store.sessions), RateLimiter(store.sessions)
    limit = RateLimit(per_second=3, per_minute=5)
    start = 1_800_000_000.25
    outcomes = [
        (first if i % 2 else second).admit("juki", limit, start + i * 0.1) for i in range(4)
    ]
    assert outcomes == [None, None, None, 1]  # the 4th in the same second
    assert first.admit("juki", limit, start + 1.0) is None  # next second: 5th in the minute
    waited = second.admit("juki", limit, start + 2.0)  # 6th in the minute
    assert waited is not None and 1 <= waited <= 60
    assert first.admit("zeimu", limit, start) is None  # counted per system
