"""A town that left (its data removed by ``renkei tenants purge``) may come back:
``renkei tenants enable`` still enables it, but warns (RK-TEN018) that its data was removed
on that day and that it starts afresh (docs/operations.md「団体の脱退」)."""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path

from typer.testing import CliRunner

from bus.cli import app
from bus.cli.offboard import purged_on
from bus.settings import Settings
from bus.store.admin_audit import ADMIN_CHAIN, record_admin_action
from bus.store.audit import append_audit
from bus.store.db import open_store
from bus.wareki import JST
from tests.test_tenant_offboarding import LEAVING, STAYING


def test_enabling_a_purged_town_warns_and_enables(data_dir: Path, tmp_path: Path) -> None:
    runner = CliRunner()
    out = tmp_path / "handover"
    assert runner.invoke(app, ["tenants", "disable", LEAVING]).exit_code == 0
    result = runner.invoke(app, ["tenants", "enable", LEAVING])  # disabled, not purged: quiet
    assert result.exit_code == 0 and "RK-TEN018" not in result.stderr
    assert runner.invoke(app, ["tenants", "disable", LEAVING]).exit_code == 0
    assert runner.invoke(app, ["tenants", "export", LEAVING, "--out", str(out)]).exit_code == 0
    purged = runner.invoke(app, ["tenants", "purge", LEAVING, "--export", str(out)])
    assert purged.exit_code == 0, purged.output

    result = runner.invoke(app, ["tenants", "enable", LEAVING])
    assert result.exit_code == 0, result.output
    assert f"enabled: {LEAVING}" in result.stdout
    today = datetime.now(JST).date().isoformat()
    assert "RK-TEN018" in result.stderr
    assert f"data was removed on {today}" in result.stderr and "starts afresh" in result.stderr
    assert f"{today} に削除されています" in result.stderr
    listed = runner.invoke(app, ["tenants", "list"]).stdout
    assert f"{LEAVING}  白石町  enabled" in listed  # it came back

    result = runner.invoke(app, ["tenants", "disable", STAYING])  # disabling never warns
    assert result.exit_code == 0 and "RK-TEN018" not in result.stderr
    result = runner.invoke(app, ["tenants", "enable", STAYING])  # nor enabling a town kept
    assert result.exit_code == 0 and "RK-TEN018" not in result.stderr


def test_a_town_purged_twice_shows_its_last_purges_day(data_dir: Path) -> None:
    """The admin chain is read newest first: the day shown is the last purge's, not the
    first's (a town that came back and left again)."""
    store = open_store(Settings(data_dir=data_dir))
    try:
        with store.sessions.begin() as session:
            a_year_before = datetime(2025, 4, 1, 3, tzinfo=UTC)  # the first purge
            detail = {"tenant": LEAVING}
            append_audit(
                session, tenant=ADMIN_CHAIN, event="tenant.purge", detail=detail, at=a_year_before
            )
            record_admin_action(session, "cli:test", "tenant.purge", {"tenant": LEAVING})
            record_admin_action(session, "cli:test", "tenant.purge", {"tenant": STAYING})
        today = datetime.now(JST).date().isoformat()
        assert purged_on(store) == {LEAVING: today, STAYING: today}
    finally:
        store.close()
