"""Identities (DESIGN §1 stages 2 and 5): API keys, source-address allowlists, default-deny
authorization and the per-tenant 宛名番号 setting, through the real stages and real config."""

from __future__ import annotations

import re
import shutil
from pathlib import Path

import pytest

from bus.config.snapshots import (
    ConfigProvider,
    ConfigSource,
    FixedConfig,
    apply_config,
    load_directory,
)
from bus.identity import (
    AuthenticateStage,
    AuthorizeStage,
    hash_api_key,
    is_api_key_hash,
    new_api_key,
    verify_api_key,
)
from bus.pipeline import Message, Severity, StageName, build_pipeline
from bus.settings import Settings
from bus.store.db import open_store
from bus.validation.stage import ValidateStage
from bus.validation.validator import Validator

from .conftest import SAMPLE_CONFIG_DIR, ApiCredentials

SAMPLES = Path(__file__).resolve().parent.parent / "samples" / "messages"
LOOPBACK = "127.0.0.1"
RESIDENT = SAMPLES / "ResidentChangeNotice" / "valid-minimal.xml"  # juki, 江北町 414247
ATENA_WARNING = (
    SAMPLES / "ResidentChangeNotice" / "valid-warning-RK-DOM004-addressee-number-check-digit.xml"
)


@pytest.fixture(scope="module")
def validator() -> Validator:
    return Validator()


@pytest.fixture(scope="module")
def samples_config() -> FixedConfig:
    return FixedConfig(load_directory(SAMPLE_CONFIG_DIR))


def _run(
    source: ConfigSource,
    validator: Validator,
    raw: bytes,
    *,
    address: str | None = LOOPBACK,
    api_key: str | None = None,
) -> Message:
    pipeline = build_pipeline(
        [
            AuthenticateStage(source),
            ValidateStage(validator, source),
            AuthorizeStage(source),
        ]
    )
    return pipeline.run(Message(raw=raw, adapter="test", source_address=address, api_key=api_key))


def _codes(message: Message) -> list[str]:
    return [f.code for f in message.findings if f.severity is Severity.ERROR]


def _with_header(path: Path, *, system: str | None = None, tenant: str | None = None) -> bytes:
    raw = path.read_bytes()
    if system is not None:
        start = raw.index(b"<env:system>") + len(b"<env:system>")
        raw = raw[:start] + system.encode() + raw[raw.index(b"</env:system>") :]
    if tenant is not None:
        start = raw.index(b"<env:tenant>") + len(b"<env:tenant>")
        raw = raw[:start] + tenant.encode() + raw[raw.index(b"</env:tenant>") :]
    return raw


def _config_copy(tmp_path: Path) -> Path:
    directory = tmp_path / "config"
    shutil.copytree(SAMPLE_CONFIG_DIR, directory)
    return directory


def _replace(path: Path, old: str, new: str) -> None:
    text = path.read_text(encoding="utf-8")
    assert old in text
    path.write_text(text.replace(old, new, 1), encoding="utf-8")


# --- API keys ------------------------------------------------------------------------------------


def test_api_keys_are_hashed_salted_and_verified() -> None:
    key = new_api_key("juki")
    assert key.startswith("rk_juki_") and len(key) > 40
    stored = hash_api_key(key)
    scheme, n, r, p, salt, digest = stored.split("$")
    assert (scheme, n, r, p) == ("scrypt", str(2**14), "8", "1")
    assert key not in stored and salt and digest
    assert is_api_key_hash(stored)
    assert verify_api_key(key, stored)
    assert not verify_api_key(key + "x", stored)
    assert not verify_api_key(new_api_key("juki"), stored)
    assert hash_api_key(key) != stored  # a fresh salt each time
    for broken in ("", "sha256$abc", stored.replace("scrypt", "bcrypt"), "scrypt$3$8$1$AA==$AA=="):
        assert not is_api_key_hash(broken)
        assert not verify_api_key(key, broken)


def test_api_key_identifies_its_system(
    api_credentials: ApiCredentials, validator: Validator
) -> None:
    source = FixedConfig(load_directory(api_credentials.config_dir))
    index = source.current().index
    assert index.system_for_api_key(api_credentials.key) == "juki"
    assert index.system_for_api_key(api_credentials.key) == "juki"  # remembered
    assert index.system_for_api_key(api_credentials.key[:-1]) is None
    assert index.system_for_api_key("rk_zeimu_" + api_credentials.key[8:]) is None
    assert index.system_for_api_key("") is None
    # from an address no allowlist holds, the key alone identifies juki
    message = _run(
        source, validator, RESIDENT.read_bytes(), address="192.0.2.7", api_key=api_credentials.key
    )
    assert message.identity is not None
    assert message.identity.systems == {"juki"} and message.identity.method == "api_key"
    assert _codes(message) == [] and StageName.AUTHORIZE in message.trace


def test_a_wrong_key_is_refused_even_from_an_allowed_address(
    api_credentials: ApiCredentials, validator: Validator
) -> None:
    source = FixedConfig(load_directory(api_credentials.config_dir))
    message = _run(
        source, validator, RESIDENT.read_bytes(), address=LOOPBACK, api_key="rk_juki_guess"
    )
    assert _codes(message) == ["RK-AUT001"]
    assert message.identity is None
    assert message.trace[-1] is StageName.AUDIT and StageName.VALIDATE not in message.trace


def test_a_key_for_one_system_cannot_send_as_another(
    api_credentials: ApiCredentials, validator: Validator
) -> None:
    source = FixedConfig(load_directory(api_credentials.config_dir))
    raw = (SAMPLES / "LevyNotice" / "valid-minimal.xml").read_bytes()  # client: zeimu
    message = _run(source, validator, raw, address="192.0.2.7", api_key=api_credentials.key)
    assert _codes(message) == ["RK-AUT002"]
    (finding,) = message.findings
    assert "zeimu" in finding.message_en and finding.path.endswith("/client/system")


def test_key_through_the_database_provider(
    api_credentials: ApiCredentials, validator: Validator, tmp_path: Path
) -> None:
    store = open_store(Settings(data_dir=tmp_path / "data"))
    try:
        apply_config(store.sessions, api_credentials.config_dir)
        provider = ConfigProvider(store.sessions)
        message = _run(
            provider, validator, RESIDENT.read_bytes(), address=None, api_key=api_credentials.key
        )
        assert _codes(message) == [] and message.identity is not None
    finally:
        store.close()


# --- source addresses ---------------------------------------------------------------------------


@pytest.mark.parametrize("address", ["127.0.0.1", "::1", "::ffff:127.0.0.1"])
def test_loopback_identifies_every_sample_system(
    samples_config: FixedConfig, validator: Validator, address: str
) -> None:
    message = _run(samples_config, validator, RESIDENT.read_bytes(), address=address)
    assert _codes(message) == []
    assert message.identity is not None and message.identity.method == "address"
    assert len(message.identity.systems) == 7


@pytest.mark.parametrize("address", ["192.0.2.7", "10.0.0.1", "2001:db8::1", None])
def test_an_address_outside_every_allowlist_is_refused(
    samples_config: FixedConfig, validator: Validator, address: str | None
) -> None:
    message = _run(samples_config, validator, RESIDENT.read_bytes(), address=address)
    assert _codes(message) == ["RK-AUT001"]


def test_claiming_a_system_from_outside_its_allowlist_is_refused(
    tmp_path: Path, validator: Validator
) -> None:
    """zeimu's network may reach the hub, but it cannot send as juki from there."""
    directory = _config_copy(tmp_path)
    systems = directory / "systems.yaml"
    text = systems.read_text(encoding="utf-8")
    zeimu = text.index("  - id: zeimu")
    text = text[:zeimu] + text[zeimu:].replace('"::1/128"]', '"::1/128", "10.20.0.0/16"]', 1)
    systems.write_text(text, encoding="utf-8")
    source = FixedConfig(load_directory(directory))

    claimed_juki = _run(source, validator, RESIDENT.read_bytes(), address="10.20.1.1")
    assert claimed_juki.identity is not None and claimed_juki.identity.systems == {"zeimu"}
    assert _codes(claimed_juki) == ["RK-AUT002"]
    levy = (SAMPLES / "LevyNotice" / "valid-minimal.xml").read_bytes()  # zeimu's own
    assert _codes(_run(source, validator, levy, address="10.20.1.1")) == []


# --- authorization ------------------------------------------------------------------------------

REQUEST_SAMPLES = sorted(
    path for path in SAMPLES.glob("*/valid-*.xml") if not path.parent.name.endswith("Reply")
)
REPLY_SAMPLES = sorted(SAMPLES.glob("*Reply/valid-*.xml"))


@pytest.mark.parametrize("path", REQUEST_SAMPLES, ids=lambda p: f"{p.parent.name}/{p.name}")
def test_every_sample_request_passes_with_the_sample_config(
    samples_config: FixedConfig, validator: Validator, path: Path
) -> None:
    message = _run(samples_config, validator, path.read_bytes())
    assert _codes(message) == [], [f.message_en for f in message.findings]
    assert message.trace[:5] == list(StageName)[:5]


def test_there_are_samples_for_all_ten_services() -> None:
    assert len({p.parent.name for p in REQUEST_SAMPLES}) == 10


@pytest.mark.parametrize("path", REPLY_SAMPLES, ids=lambda p: p.parent.name)
def test_a_reply_is_never_accepted_inbound(
    samples_config: FixedConfig, validator: Validator, path: Path
) -> None:
    message = _run(samples_config, validator, path.read_bytes())
    assert _codes(message) == ["RK-AUT004"]


@pytest.mark.parametrize(
    ("path", "system", "expected_en", "expected_ja"),
    [
        (  # not granted to tainou
            RESIDENT,
            "tainou",
            "no send permission for the Resident change notice (ResidentChangeNotice)",
            "住民異動通知（ResidentChangeNotice）の送信権限",
        ),
        (
            SAMPLES / "AddresseeInquiry" / "valid-minimal.xml",
            "shuno",
            "no inquire permission for the Addressee inquiry (AddresseeInquiry)",
            "宛名照会（AddresseeInquiry）の照会権限",
        ),
        (
            SAMPLES / "LevyNotice" / "valid-minimal.xml",
            "juki",
            "no send permission for the Levy notice (LevyNotice)",
            "調定情報通知（LevyNotice）の送信権限",
        ),
    ],
    ids=["tainou-send", "shuno-inquire", "juki-send"],
)
def test_access_is_default_deny(
    samples_config: FixedConfig,
    validator: Validator,
    path: Path,
    system: str,
    expected_en: str,
    expected_ja: str,
) -> None:
    message = _run(samples_config, validator, _with_header(path, system=system))
    assert _codes(message) == ["RK-AUT004"]
    finding = message.findings[-1]
    assert expected_en in finding.message_en and expected_ja in finding.message_ja
    # in Japanese, only the codes stay Latin: the system, the service id (no "send")
    assert re.findall(r"[A-Za-z]+", finding.message_ja) == [system, path.parent.name]


def test_a_tenant_the_system_does_not_serve(
    samples_config: FixedConfig, validator: Validator
) -> None:
    message = _run(samples_config, validator, _with_header(RESIDENT, tenant="410004"))  # 佐賀県
    assert _codes(message) == ["RK-AUT003"]
    assert message.findings[-1].message_en == "System juki does not act for tenant 410004."


def test_unknown_or_disabled_tenant(tmp_path: Path, validator: Validator) -> None:
    directory = _config_copy(tmp_path)
    _replace(
        directory / "tenants.yaml", "    name: 江北町\n", "    name: 江北町\n    enabled: false\n"
    )
    source = FixedConfig(load_directory(directory))
    assert _codes(_run(source, validator, RESIDENT.read_bytes())) == ["RK-AUT005"]
    unknown = _with_header(RESIDENT, tenant="011002")  # 札幌市: valid code, not a tenant
    assert _codes(_run(source, validator, unknown)) == ["RK-AUT005"]


# --- the tenant's 宛名番号 setting through the Validate stage ------------------------------------


@pytest.mark.parametrize(
    ("tenant", "setting", "codes", "rejected"),
    [
        ("414247", "warn", ["RK-DOM004"], False),
        ("412066", "error", ["RK-DOM004"], True),  # 武雄市 refuses it in the sample config
        ("414239", "off", [], False),
    ],
)
def test_atena_check_follows_the_tenant(
    tmp_path: Path,
    validator: Validator,
    tenant: str,
    setting: str,
    codes: list[str],
    rejected: bool,
) -> None:
    directory = _config_copy(tmp_path)
    path = directory / "tenants.yaml"
    text, count = re.subn(
        rf'(code: "{tenant}"\n    name: [^\n]+\n    atena_check: )\w+',
        rf"\g<1>{setting}",
        path.read_text(encoding="utf-8"),
    )
    assert count == 1
    path.write_text(text, encoding="utf-8")
    source = FixedConfig(load_directory(directory))
    index = source.current().index
    configured = index.tenant(tenant)
    assert configured is not None and configured.atena_check.value == setting
    message = _run(source, validator, _with_header(ATENA_WARNING, tenant=tenant))
    assert [f.code for f in message.findings] == codes
    assert message.rejected is rejected
    if rejected:
        assert message.findings[0].severity is Severity.ERROR
        assert StageName.AUTHORIZE not in message.trace
