"""The console's parts without a browser: 和暦/西暦 dates, the dashboard's figures and the
search per tenant (SQLite and PostgreSQL), import batches read from their work files, and no
asset from outside the hub in any page."""

from __future__ import annotations

import re
from datetime import UTC, date, datetime
from pathlib import Path

import pytest

from adapters.console.dashboard import dashboard
from adapters.console.dates import DateRefused, display, parse_day
from adapters.console.i18n import waiting_labeller
from adapters.console.imports_view import batch_csv, find_batch, list_batches
from bus.hub import Hub
from bus.imports.worklist import ErrorRow, Worklist
from bus.settings import Settings
from bus.store.queries import list_messages
from tests.support.hub_server import serialize
from tests.support.towns import message, message_id

CONSOLE = Path(__file__).resolve().parents[1] / "adapters" / "console"


def test_dates_show_wareki_first_in_japanese_and_seireki_first_in_english() -> None:
    moment = datetime(2026, 11, 26, 11, 5, 9, tzinfo=UTC)
    assert display(moment, "ja") == "令和8年11月26日 20:05:09（2026-11-26 20:05:09 JST）"
    assert display(moment, "en") == "2026-11-26 20:05:09 JST (令和8年11月26日 20:05:09)"
    assert display(datetime(2019, 4, 30, 15, 0, tzinfo=UTC), "ja").startswith("令和元年5月1日 ")


@pytest.mark.parametrize("text", ["令和8年11月26日", "R08.11.26", "2026-11-26", "20261126"])
def test_a_day_is_typed_in_wareki_or_seireki(text: str) -> None:
    assert parse_day(text) == date(2026, 11, 26)


@pytest.mark.parametrize("text", ["令和8年2月30日", "yesterday", "2026-13-01"])
def test_an_unreadable_day_is_a_coded_refusal(text: str) -> None:
    with pytest.raises(DateRefused) as refused:
        parse_day(text)
    assert refused.value.finding.code == "RK-CON004"


def test_import_batches_are_listed_per_tenant_with_their_error_report(tmp_path: Path) -> None:
    imports = tmp_path / "imports"
    for tenant, errors in (("412066", 1), ("412074", 0)):
        work = Worklist(imports / f"{'a' * 32}-{tenant}.sqlite", "a" * 64, tenant, "cp932")
        rows = [ErrorRow(7, 120, "receiptNumber", "RK-IMP002", "受付番号が不正", "bad")] * errors
        work.commit([], rows, offset=200, line=9)
        work.close()
    (imports / "residents.sqlite").write_bytes(b"")
    [takeo] = list_batches(tmp_path, {"412066"})
    assert (takeo.tenant, takeo.cursor_line, takeo.status) == ("412066", 9, "running")
    assert len(list_batches(tmp_path, None)) == 2
    assert find_batch(tmp_path, "../x") is None
    report = batch_csv(tmp_path, takeo, "errors").decode("utf-8-sig")
    assert "RK-IMP002" in report and report.startswith("行,")


def test_pages_load_nothing_from_outside_the_hub() -> None:
    outside = re.compile(r"(?:src|href)=\"(?:https?:)?//|@import|url\(\s*['\"]?https?:")
    files = [*CONSOLE.glob("templates/*.html"), *CONSOLE.glob("static/*")]
    assert files and not [f.name for f in files if outside.search(f.read_text("utf-8"))]


def test_dashboard_and_search_count_only_the_operators_tenants(store_settings: Settings) -> None:
    hub = Hub.open(store_settings)
    try:
        ids = {}
        for tenant in ("412066", "412074"):
            document = message("NhiEligibilityNotice", tenant, "kokuho")
            done = hub.ingest(serialize(document), adapter="test", source_address="127.0.0.1")
            assert done.ack is not None, done.findings
            ids[tenant] = message_id(document)
        with hub.store.sessions() as session:
            takeo = dashboard(session, {"412066"})
            everyone = dashboard(session, None)
            found = list_messages(session, tenants={"412074"})
            later = list_messages(session, until=datetime(2000, 1, 1, tzinfo=UTC))
    finally:
        hub.close()
    assert takeo.per_service == [("NhiEligibilityNotice", "412066", 1)]
    assert (takeo.totals["messages"], takeo.totals["pending"]) == (1, 2)  # zeimu and shuno
    assert sum(bar.count for bar in takeo.per_hour) == 1 and len(takeo.per_hour) == 24
    assert {f.tenant for f in takeo.per_destination} == {"412066"}
    assert everyone.totals["messages"] == 2
    assert [m.message_id for m in found] == [ids["412074"]] and later == []


def test_what_a_pending_delivery_waits_for_is_said_in_the_pages_language() -> None:
    japanese, english = waiting_labeller("ja"), waiting_labeller("en")
    assert japanese("paused") == "配信先が一時停止中"
    assert english("paused") == "destination paused"
    assert japanese("#44 dead") == "先の配信を待機中 #44（配信不能）"
    assert english("#44 dead") == "waiting for delivery #44 (dead)"
