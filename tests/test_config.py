"""Configuration (DESIGN §6): the loader's file:line problems, the index, versioned snapshots
and live reload across processes' providers (real SQLite files and PostgreSQL)."""

from __future__ import annotations

import shutil
from datetime import timedelta
from pathlib import Path

import pytest
from sqlalchemy import func, select
from sqlalchemy.orm import Session, sessionmaker
from typer.testing import CliRunner

from bus.cli import app
from bus.config.index import ConfigIndex
from bus.config.loader import (
    ConfigError,
    load_config_dir,
    parse_config_files,
    read_config_files,
    request_services,
    service_items,
)
from bus.config.models import Direction
from bus.config.snapshots import (
    ConfigProvider,
    NoConfiguration,
    apply_config,
    ensure_config,
    load_snapshot,
)
from bus.settings import Settings
from bus.store.db import Store, open_store
from bus.store.models import ConfigSnapshot

from .conftest import SAMPLE_CONFIG_DIR

TOWNS = ("412066", "412074", "412091", "414239", "414247", "414255")


def _copy_samples(tmp_path: Path) -> Path:
    directory = tmp_path / "config"
    shutil.copytree(SAMPLE_CONFIG_DIR, directory)
    return directory


def _edit(directory: Path, file: str, old: str, new: str) -> str:
    path = directory / file
    text = path.read_text(encoding="utf-8")
    assert old in text, f"{old!r} not in {file}"
    path.write_text(text.replace(old, new, 1), encoding="utf-8")
    return path.read_text(encoding="utf-8")


def _line_of(text: str, marker: str) -> int:
    return next(n for n, line in enumerate(text.splitlines(), 1) if marker in line)


# --- the sample configuration -----------------------------------------------------------------


def test_sample_configuration_loads() -> None:
    config = load_config_dir(SAMPLE_CONFIG_DIR)
    index = ConfigIndex(config)
    assert {t.code for t in config.tenants} == {*TOWNS, "410004"}
    assert index.tenant("412066") is not None
    assert index.tenant("412066").atena_check.value == "error"  # type: ignore[union-attr]
    assert {s.id for s in config.systems} == {
        "juki",
        "zeimu",
        "shuno",
        "tainou",
        "kokuho",
        "houmu",
        "kotei",
    }
    assert {r.service for r in config.routes} == request_services()
    assert len(request_services()) == 10
    resident = index.route("ResidentChangeNotice", "412066")
    assert resident is not None
    subscribers = {s.system: s for s in resident.subscribers}
    assert set(subscribers) == {"zeimu", "kokuho", "shuno", "kotei", "tainou"}
    (condition,) = subscribers["tainou"].when
    assert condition.field == "changeReason"
    assert set(condition.in_ or ()) == {"201", "202", "203", "301"}  # 転出, 死亡, 転居
    for service, provider in [
        ("AddresseeInquiry", "juki"),
        ("TaxAssessmentInquiry", "zeimu"),
        ("DelinquencyInquiry", "tainou"),
    ]:
        route = index.route(service, "414255")
        assert route is not None and route.provider == provider and not route.subscribers
    ports = sorted(s.endpoint.url for s in config.systems if s.endpoint and s.endpoint.url)
    assert [url.split(":")[2][:5] for url in ports] == [str(p) for p in range(18101, 18108)]
    assert index.retention("LevyNotice") == timedelta(days=365)
    assert index.retention("DelinquencyActionNotice") == timedelta(days=1826)


def test_cli_check_passes_on_the_samples() -> None:
    result = CliRunner().invoke(app, ["config", "check", str(SAMPLE_CONFIG_DIR)])
    assert result.exit_code == 0, result.output
    assert "7 tenants, 7 systems, 10 routes" in result.output


def test_route_predicates_only_name_items_of_their_service() -> None:
    assert "changeReason" in service_items("ResidentChangeNotice")
    assert "changeReason" not in service_items("LevyNotice")
    # extension items inside the extension block count as the service's own
    assert "actionKind" in service_items("DelinquencyActionNotice")


# --- problems name file and line -----------------------------------------------------------------

# (file, old text, new text, marker on the expected line, expected message fragment)
CASES = [
    (
        "tenants.yaml",
        "    name: 鹿島市\n",
        "    name: 鹿島市\n    colour: red\n",
        "colour",
        "unknown field 'colour'",
    ),
    (
        "tenants.yaml",
        'code: "412074"',
        'code: "412075"',
        "412075",
        "wrong check digit",
    ),
    (
        "tenants.yaml",
        "    name: 鹿島市\n",
        "    name: 鹿島市\n    atena_check: loud\n",
        "loud",
        "atena_check",
    ),
    (
        "systems.yaml",
        'allow_addresses: ["127.0.0.1/32", "::1/128"]',
        'allow_addresses:\n        - "127.0.0.1/32"\n        - "10.0.0.300/8"',
        "10.0.0.300",
        "10.0.0.300/8",
    ),
    (
        "systems.yaml",
        'tenants: ["412066", "412074", "412091", "414239", "414247", "414255"]',
        'tenants:\n      - "412066"\n      - "413992"',
        "413992",
        "unknown tenant '413992'",
    ),
    (
        "systems.yaml",
        "  - id: zeimu",
        "  - id: juki  # again",
        "# again",
        "duplicate system id 'juki'",
    ),
    (
        "systems.yaml",
        "  - id: kotei\n",
        "  - id: kotei\n    credentials_typo: 1\n",
        "credentials_typo",
        "unknown field 'credentials_typo'",
    ),
    (
        "routes.yaml",
        "  - service: LevyNotice",
        "  - service: LevyNotise",
        "LevyNotise",
        "unknown service 'LevyNotise'",
    ),
    (
        "routes.yaml",
        "      - system: kokuho",
        "      - system: kokuhoo",
        "kokuhoo",
        "unknown system 'kokuhoo'",
    ),
    (
        "routes.yaml",
        "          - field: changeReason",
        "          - field: taxItem",
        "taxItem",
        "'taxItem' is not a catalogue item of ResidentChangeNotice",
    ),
    (
        "routes.yaml",
        "    provider: zeimu",
        "    provider: zeimu\n    subscribers: [{system: shuno}]",
        "subscribers: [{system: shuno}]",
        "is an inquiry",
    ),
    (
        "routes.yaml",
        "  - service: RegistrationNotice\n",
        "  - service: RegistrationNotice\n    provider: kotei\n",
        "provider: kotei",
        "is a notification",
    ),
    (
        "routes.yaml",
        "  - service: DelinquencyInquiry\n    provider: tainou",
        "  - service: DelinquencyInquiry\n    provider: tainou\n"
        "  - {service: DelinquencyInquiry, provider: shuno}",
        "provider: shuno",
        "more than one provider route for DelinquencyInquiry",
    ),
    (
        "access.yaml",
        "    send: [PaymentNotice]",
        "    send: [PaymentNotice, AddresseeInquiryReply]",
        "AddresseeInquiryReply",
        "is a reply",
    ),
    (
        "access.yaml",
        "    inquire: [DelinquencyInquiry]",
        '    inquire: [DelinquencyInquiry]\n    tenants: ["123457"]',
        "123457",
        "unknown tenant '123457'",
    ),
    (
        "access.yaml",
        "  - system: houmu\n",
        "  - system: houmux\n",
        "houmux",
        "unknown system 'houmux'",
    ),
    (
        "retention.yaml",
        "    keep: 365 days",
        "    keep: a year or so",
        "a year or so",
        "keep",
    ),
    ("retention.yaml", "retention:", "retention:\n  - service: a: b", "a: b", "YAML syntax"),
    ("retention.yaml", "retention:", "retentions:", "retentions:", "unknown section"),
]


@pytest.mark.parametrize(
    ("file", "old", "new", "marker", "fragment"), CASES, ids=[c[4] for c in CASES]
)
def test_a_problem_names_file_and_line(
    tmp_path: Path, file: str, old: str, new: str, marker: str, fragment: str
) -> None:
    directory = _copy_samples(tmp_path)
    text = _edit(directory, file, old, new)
    line = _line_of(text, marker)
    with pytest.raises(ConfigError) as raised:
        load_config_dir(directory)
    matching = [p for p in raised.value.problems if fragment in p]
    assert matching, raised.value.problems
    assert matching[0].startswith(f"{file}:{line}: "), (matching, line)


def test_every_problem_is_collected_and_mistakes_do_not_cascade(tmp_path: Path) -> None:
    directory = _copy_samples(tmp_path)
    _edit(directory, "tenants.yaml", "    name: 鹿島市\n", "    name: 鹿島市\n    colour: red\n")
    _edit(directory, "routes.yaml", "      - system: kokuho", "      - system: kokuhoo")
    _edit(directory, "systems.yaml", '"::1/128"', '"::1/300"')  # juki's allowlist
    with pytest.raises(ConfigError) as raised:
        load_config_dir(directory)
    problems = raised.value.problems
    assert len(problems) == 3, problems
    assert [p.split(":")[0] for p in problems] == ["routes.yaml", "systems.yaml", "tenants.yaml"]
    # juki failed its own validation but still counts as declared: no "unknown system 'juki'"
    assert not any("unknown system 'juki'" in p for p in problems)


def test_subscriber_without_endpoint(tmp_path: Path) -> None:
    directory = _copy_samples(tmp_path)
    text = _edit(
        directory,
        "systems.yaml",
        "    endpoint:\n      transport: soap\n      url: http://127.0.0.1:18107/kotei\n"
        "      timeout_seconds: 10\n",
        "",
    )
    assert "18107" not in text
    routes = (directory / "routes.yaml").read_text(encoding="utf-8")
    with pytest.raises(ConfigError) as raised:
        load_config_dir(directory)
    lines = [n for n, t in enumerate(routes.splitlines(), 1) if t == "      - system: kotei"]
    assert len(lines) == 2
    assert raised.value.problems == [
        f"routes.yaml:{n}: system 'kotei' has no endpoint to deliver to" for n in lines
    ]


def test_plain_scalars_stay_text(tmp_path: Path) -> None:
    """Unquoted 412066 / off stay text: YAML 1.1 would make an int and False of them."""
    directory = _copy_samples(tmp_path)
    _edit(
        directory,
        "tenants.yaml",
        'code: "412074"\n    name: 鹿島市\n    atena_check: warn',
        "code: 412074\n    name: 鹿島市\n    atena_check: off",
    )
    index = ConfigIndex(load_config_dir(directory))
    tenant = index.tenant("412074")
    assert tenant is not None and tenant.atena_check.value == "off"


def test_missing_directory_and_empty_directory(tmp_path: Path) -> None:
    with pytest.raises(ConfigError) as raised:
        read_config_files(tmp_path / "nowhere")
    assert raised.value.problems[0].endswith(":0: not a configuration directory")
    (tmp_path / "empty").mkdir()
    with pytest.raises(ConfigError):
        read_config_files(tmp_path / "empty")
    with pytest.raises(ConfigError) as raised:
        parse_config_files({"t.yaml": "tenants: []\n"})
    assert raised.value.problems == [
        "systems.yaml:0: no systems declared",
        "t.yaml:1: no tenants declared",
    ]


def test_cli_check_reports_file_and_line(tmp_path: Path) -> None:
    directory = _copy_samples(tmp_path)
    text = _edit(directory, "tenants.yaml", "    name: 鹿島市\n", "    name: 鹿島市\n    x: 1\n")
    result = CliRunner().invoke(app, ["config", "check", str(directory)])
    assert result.exit_code == 1
    assert f"tenants.yaml:{_line_of(text, '    x: 1')}: unknown field 'x'" in result.output


# --- the index: default deny, tenant scope, routes ---------------------------------------------

MINI = {
    "tenants.yaml": """
tenants:
  - {code: "412066", name: 武雄市}
  - {code: "412074", name: 鹿島市}
  - {code: "410004", name: 佐賀県, enabled: false}
""",
    "systems.yaml": """
systems:
  - id: juki
    name: 住民記録
    tenants: ["412066", "412074"]
    endpoint: {transport: http, url: "http://127.0.0.1:1/juki"}
    credentials: {allow_addresses: ["10.1.0.0/16", "fd00::/8"]}
  - id: zeimu
    name: 税務
    tenants: ["412066"]
    endpoint: {transport: http}
    credentials: {allow_addresses: ["10.1.2.0/24"]}
  - id: pref
    name: 県
    tenants: "*"
    endpoint: {transport: http}
""",
    "access.yaml": """
access:
  - system: juki
    send: [ResidentChangeNotice]
  - system: zeimu
    tenants: "*"
    receive: [ResidentChangeNotice]
    inquire: [AddresseeInquiry]
  - system: pref
    tenants: ["412074"]
    send: [LevyNotice]
  - system: juki
    receive: [AddresseeInquiry]
""",
    "routes.yaml": """
routes:
  - service: ResidentChangeNotice
    subscribers: [{system: zeimu}]
  - service: ResidentChangeNotice
    tenants: ["412074"]
    subscribers: []
  - service: AddresseeInquiry
    provider: juki
""",
}


@pytest.fixture(scope="module")
def mini() -> ConfigIndex:
    return ConfigIndex(parse_config_files(MINI))


def test_access_is_default_deny(mini: ConfigIndex) -> None:
    send, inquire, receive = Direction.SEND, Direction.INQUIRE, Direction.RECEIVE
    assert mini.allowed("juki", send, "ResidentChangeNotice", "412066")
    assert mini.allowed("juki", send, "ResidentChangeNotice", "412074")
    assert not mini.allowed("juki", send, "ResidentChangeNotice", "410004")  # not served
    assert not mini.allowed("juki", send, "LevyNotice", "412066")  # not granted
    assert not mini.allowed("juki", receive, "ResidentChangeNotice", "412066")  # other direction
    assert not mini.allowed("juki", inquire, "ResidentChangeNotice", "412066")
    # tenants "*" on a rule means the system's own tenants
    assert mini.allowed("zeimu", inquire, "AddresseeInquiry", "412066")
    assert not mini.allowed("zeimu", inquire, "AddresseeInquiry", "412074")
    # a rule naming a tenant: only that one, and only if the system serves it
    assert mini.allowed("pref", send, "LevyNotice", "412074")
    assert not mini.allowed("pref", send, "LevyNotice", "412066")
    assert not mini.allowed("nobody", send, "LevyNotice", "412066")
    assert mini.serves("pref", "410004") and not mini.serves("zeimu", "412074")


def test_tenant_route_replaces_the_default(mini: ConfigIndex) -> None:
    default = mini.route("ResidentChangeNotice", "412066")
    assert default is not None and [s.system for s in default.subscribers] == ["zeimu"]
    own = mini.route("ResidentChangeNotice", "412074")
    assert own is not None and own.subscribers == ()
    assert mini.route("LevyNotice", "412066") is None
    assert mini.retention("LevyNotice") == timedelta(days=365)  # the built-in default


def test_address_allowlists(mini: ConfigIndex) -> None:
    assert mini.systems_for_address("10.1.2.3") == {"juki", "zeimu"}
    assert mini.systems_for_address("10.1.9.9") == {"juki"}
    assert mini.systems_for_address("::ffff:10.1.2.3") == {"juki", "zeimu"}
    assert mini.systems_for_address("fd00::1") == {"juki"}
    assert mini.systems_for_address("10.2.0.1") == frozenset()
    assert mini.systems_for_address("not an address") == frozenset()
    assert mini.tenant("410004") is not None and not mini.tenant("410004").enabled  # type: ignore[union-attr]


# --- snapshots and reload -------------------------------------------------------------------------


def _count(sessions: sessionmaker[Session]) -> int:
    with sessions() as session:
        return session.scalar(select(func.count()).select_from(ConfigSnapshot)) or 0


@pytest.fixture(params=["sqlite", pytest.param("postgres", marks=pytest.mark.postgres)])
def database(request: pytest.FixtureRequest, tmp_path: Path) -> Settings:
    if request.param == "sqlite":
        return Settings(data_dir=tmp_path / "data")
    return Settings(
        data_dir=tmp_path / "data", database_url=request.getfixturevalue("postgres_url")
    )


def test_apply_versions_and_identical_apply(database: Settings, tmp_path: Path) -> None:
    store = open_store(database)
    try:
        directory = _copy_samples(tmp_path)
        assert apply_config(store.sessions, directory, actor="tester") == 1
        assert apply_config(store.sessions, directory) == 1  # identical: no new row
        assert _count(store.sessions) == 1
        _edit(directory, "tenants.yaml", "name: 大町町", "name: 大町町（改）")
        assert apply_config(store.sessions, directory) == 2
        _edit(directory, "tenants.yaml", "name: 大町町（改）", "name: 大町町")
        assert apply_config(store.sessions, directory) == 3  # a roll-back is a new version
        _edit(directory, "tenants.yaml", "name: 大町町", "nom: 大町町")
        with pytest.raises(ConfigError):
            apply_config(store.sessions, directory)
        assert _count(store.sessions) == 3  # an invalid configuration is never stored
        loaded = load_snapshot(store.sessions)
        assert loaded.version == 3
        with store.sessions() as session:
            first = session.get(ConfigSnapshot, 1)
            assert first is not None and first.applied_by == "tester"
    finally:
        store.close()


def test_ensure_config_loads_the_configured_directory_once(tmp_path: Path) -> None:
    directory = _copy_samples(tmp_path)
    settings = Settings(data_dir=tmp_path / "data", config_dir=directory)
    store = open_store(settings)
    try:
        with pytest.raises(NoConfiguration):
            ConfigProvider(store.sessions).current()
        assert ensure_config(store.sessions, settings) == 1
        assert ensure_config(store.sessions, settings) == 1
        assert _count(store.sessions) == 1
        # no config_dir: the shipped samples
        assert Settings().effective_config_dir.resolve() == SAMPLE_CONFIG_DIR.resolve()
    finally:
        store.close()


def test_a_second_provider_reloads_without_restart(database: Settings, tmp_path: Path) -> None:
    """Two 'processes' (separate engines) on one database: one applies, the other reloads."""
    directory = _copy_samples(tmp_path)
    writer: Store = open_store(database)
    reader: Store = open_store(database)
    try:
        apply_config(writer.sessions, directory)
        live = ConfigProvider(reader.sessions, poll_seconds=0)
        lazy = ConfigProvider(reader.sessions, poll_seconds=3600)
        first = live.current()
        assert first.version == 1 and lazy.current().version == 1
        assert live.current() is first  # unchanged version: the same parsed config, no reparse
        assert first.index.allowed("juki", Direction.SEND, "ResidentChangeNotice", "414239")

        _edit(directory, "access.yaml", "    send: [ResidentChangeNotice]\n", "")
        assert apply_config(writer.sessions, directory) == 2

        second = live.current()
        assert second.version == 2
        assert not second.index.allowed("juki", Direction.SEND, "ResidentChangeNotice", "414239")
        assert lazy.current().version == 1  # within its poll interval
        assert lazy.refresh().version == 2
    finally:
        writer.close()
        reader.close()


def test_cli_apply_and_show(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("RENKEI_DATA_DIR", str(tmp_path / "data"))
    monkeypatch.delenv("RENKEI_DATABASE_URL", raising=False)
    monkeypatch.delenv("RENKEI_CONFIG_DIR", raising=False)
    runner = CliRunner()
    shown = runner.invoke(app, ["config", "show"])  # empty database: migrated, samples loaded
    assert shown.exit_code == 0, shown.output
    assert "configuration version 1" in shown.output and "武雄市" in shown.output
    directory = _copy_samples(tmp_path)
    same = runner.invoke(app, ["config", "apply", str(directory)])
    assert same.exit_code == 0 and "unchanged: configuration version 1" in same.output
    _edit(directory, "tenants.yaml", "name: 白石町", "name: しろいし")
    changed = runner.invoke(app, ["config", "apply", str(directory)])
    assert changed.exit_code == 0 and "applied: configuration version 2" in changed.output
    _edit(directory, "tenants.yaml", "name: しろいし", "nam: しろいし")
    refused = runner.invoke(app, ["config", "apply", str(directory)])
    assert refused.exit_code == 1 and "tenants.yaml:" in refused.output
    assert (tmp_path / "data" / "renkei.db").is_file()
