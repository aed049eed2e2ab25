"""Onboarding a seventh town into a hub in production and taking one out (docs/operations.md,
「団体の追加」「団体の利用停止」): the mistakes an integrator makes are refused or reported, and
two operators changing the configuration at once never lose one of the changes silently."""

from __future__ import annotations

import os
import subprocess
import sys
import uuid
from pathlib import Path

import pytest
from lxml import etree
from typer.testing import CliRunner

from bus.cli import app
from bus.config.index import ConfigIndex
from bus.config.loader import parse_config_files, read_config_files
from bus.config.models import Direction
from bus.config.snapshots import apply_files, ensure_config, latest_version, load_snapshot
from bus.settings import Settings
from bus.store.db import open_store
from tests.support.receivers import SAMPLE_CONFIG_DIR
from tests.test_store import accepted, sample, stage, with_message_id

RENKEI = str(Path(sys.executable).with_name("renkei"))
TARA = "414417"  # 太良町: 4·6+1·5+4·4+4·3+1·2 = 59, 59 mod 11 = 4, (11 − 4) mod 10 = 7


def _tenants(data: Path) -> set[str]:
    store = open_store(Settings(data_dir=data))
    try:
        return {tenant.code for tenant in load_snapshot(store.sessions).config.tenants}
    finally:
        store.close()


def _for_town(raw: bytes, code: str) -> bytes:
    root = etree.fromstring(raw)
    for element in root.iter("{*}tenant", "{*}localGovernmentCode"):
        element.text = code
    return etree.tostring(root, encoding="UTF-8", xml_declaration=True)


def test_a_town_without_a_name_is_refused(data_dir: Path) -> None:
    result = CliRunner().invoke(app, ["tenants", "add", TARA, " "])
    assert result.exit_code == 1, result.output
    assert "RK-TEN004" in result.output and "団体名" in result.output
    assert TARA not in _tenants(data_dir)


def test_an_edit_of_an_older_version_is_a_conflict_not_a_lost_update(data_dir: Path) -> None:
    """Operator A read version 1 to add a town; operator B applied version 2 meanwhile.
    (The lighter sibling of the slow test below, which races real `renkei` processes.)"""
    from bus.config.snapshots import ConfigConflict

    settings = Settings(data_dir=data_dir)
    store = open_store(settings)
    try:
        base = ensure_config(store.sessions, settings)
        files = read_config_files(SAMPLE_CONFIG_DIR)
        other = {**files, "retention.yaml": files["retention.yaml"] + "\n# B's change\n"}
        assert apply_files(store.sessions, other, "cli:b") == base + 1
        mine = {**files, "tenants/414417.yaml": f'tenants: [{{code: "{TARA}", name: 太良町}}]\n'}
        with pytest.raises(ConfigConflict) as conflict:
            apply_files(store.sessions, mine, "cli:a", base_version=base)
        assert (conflict.value.base, conflict.value.found) == (base, base + 1)
        assert latest_version(store.sessions) == base + 1  # B's change stays in force
    finally:
        store.close()


@pytest.mark.slow
def test_concurrent_tenant_adds_never_drop_a_town(tmp_path: Path, data_dir: Path) -> None:
    """Three operators onboard three towns at the same moment: every command that says
    "added" has its town in the version in force; the others are refused (RK-TEN013)."""
    CliRunner().invoke(app, ["config", "show"])  # the database and its first version
    env = {**os.environ, "RENKEI_DATA_DIR": str(data_dir)}
    towns = {"414433": "甲町", "414441": "乙町", "414450": "丙町"}
    commands = [
        subprocess.Popen(
            [RENKEI, "tenants", "add", code, name],
            env=env,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        for code, name in towns.items()
    ]
    outcomes = {
        code: command.communicate(timeout=60) for code, command in zip(towns, commands, strict=True)
    }
    in_force = _tenants(data_dir)
    for code, (out, err) in outcomes.items():
        if f"added: {code}" in out:
            assert code in in_force, f"{code} was reported added, then lost: {outcomes}"
        else:
            assert "RK-TEN013" in err, outcomes
            assert code not in in_force


def test_removing_a_town_with_pending_deliveries_is_reported(data_dir: Path) -> None:
    runner = CliRunner()
    added = runner.invoke(app, ["tenants", "add", TARA, "太良町"])
    assert added.exit_code == 0, added.output
    store = open_store(Settings(data_dir=data_dir))
    try:
        for seed in (1, 2):
            raw = _for_town(sample("ResidentChangeNotice", seed), TARA)
            stage(store)(accepted(with_message_id(raw, str(uuid.uuid4())), ("zeimu",)))
    finally:
        store.close()
    # a directory copied before the town was added: refused (RK-OPS019, nothing tells what it
    # was made from); forced, applying it drops 太良町
    refused = runner.invoke(app, ["config", "apply", str(SAMPLE_CONFIG_DIR)])
    assert refused.exit_code == 1 and "RK-OPS019" in refused.output, refused.output
    result = runner.invoke(app, ["config", "apply", str(SAMPLE_CONFIG_DIR), "--force"])
    assert result.exit_code == 0, result.output
    assert "RK-OPS017" in result.output, result.output
    assert f"{TARA} 太良町 pending=2 dead=0" in result.output
    assert "412066" not in result.output.split("RK-OPS017", 1)[1]  # kept towns: not named
    again = runner.invoke(app, ["config", "apply", str(SAMPLE_CONFIG_DIR)])
    assert "RK-OPS017" not in again.output  # unchanged: nothing to say


def _onboarded_index() -> tuple[dict[str, str], ConfigIndex]:
    from bus.security.tenancy import onboard

    town = onboard(read_config_files(SAMPLE_CONFIG_DIR), TARA, "太良町")
    return town.files, ConfigIndex(parse_config_files(town.files))


def test_a_new_town_gets_no_registration_notices_until_it_joins_houmu() -> None:
    """登記済通知 reach the hub only for a town that arranged their electronic delivery with
    its 法務局: onboarding alone must not let houmu send (or import) them for the town."""
    files, index = _onboarded_index()
    assert index.serves("kotei", TARA) and index.serves("juki", TARA)  # the shared systems
    assert not index.serves("houmu", TARA)
    assert not index.allowed("houmu", Direction.SEND, "RegistrationNotice", TARA)
    # the documented opt-in: houmu added to the town's joins, then config apply
    path = f"tenants/{TARA}.yaml"
    text = files[path].replace("kokuho, kotei]", "kokuho, kotei, houmu]")
    assert text != files[path]
    joined = ConfigIndex(parse_config_files({**files, path: text}))
    assert joined.allowed("houmu", Direction.SEND, "RegistrationNotice", TARA)
    assert joined.allowed("kotei", Direction.RECEIVE, "RegistrationNotice", TARA)
