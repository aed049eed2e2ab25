"""The console's 開示請求 page (/console/trail): one resident's trail for staff who do not use
the command line, over HTTP on the console's own router in process (a hub on SQLite with
real traffic through the ingest pipeline and a dispatch worker, a dead letter redelivered),
and once in real headless Chromium.

Operators and admins of the town may look a resident up, hub staff (``*``) any town, viewers
not; another town's resident is 404. The 宛名番号 is POSTed only (a URL's is ignored and
nothing is recorded), CSRF-checked, never in the page, the download or a URL; each lookup is
recorded on the admin chain as the CLI's is (same kind, same fields, keyed pseudonym); the
CSV is the CLI's, byte for byte."""

from __future__ import annotations

import re
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import httpx
import pytest
from fastapi import FastAPI
from sqlalchemy import select
from typer.testing import CliRunner

from adapters.console.routes import router
from bus.cli import app as cli_app
from bus.dispatch import operations
from bus.hub import Hub
from bus.security.operators import Role, add_operator
from bus.settings import Settings
from bus.store.admin_audit import ADMIN_CHAIN
from bus.store.models import AuditRecord
from bus.store.trail import resident_key
from bus.store.trail_report import pseudonym_key
from tests.support.asgi_thread import served_in_thread
from tests.support.browser import chromium, log_in
from tests.test_resident_trail import (
    OTHER_TOWN,
    RESIDENT,
    TOWN,
    Traffic,
    residents_and_neighbours,
)

pytestmark = pytest.mark.console

PASSWORD = "correct horse battery"
_CSRF = re.compile(r'name="csrf" value="([^"]+)"')
_SEALED = re.compile(r'name="s" value="([^"]+)"')
ACCOUNTS = {
    "takeo.ops": (Role.OPERATOR, {TOWN}),
    "takeo.view": (Role.VIEWER, {TOWN}),
    "kashima.ops": (Role.OPERATOR, {OTHER_TOWN}),
    "hub.staff": (Role.OPERATOR, {"*"}),
}


@dataclass(frozen=True, slots=True)
class Scene:
    app: FastAPI
    hub: Hub
    settings: Settings
    mine: set[str]  # the resident's messageIds
    others: dict[str, str]  # the neighbours' and the other town's


@pytest.fixture(scope="module")
def scene(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Scene]:
    data = tmp_path_factory.mktemp("console-trail") / "data"
    with pytest.MonkeyPatch.context() as env:  # the CLI in this process reads the same store
        env.setenv("RENKEI_DATA_DIR", str(data))
        env.delenv("RENKEI_DATABASE_URL", raising=False)
        env.delenv("RENKEI_CONFIG_DIR", raising=False)
        env.setattr("bus.kdf.SCRYPT_N", 2**10)  # cheap passwords: the hash carries its cost
        settings = Settings(data_dir=data, dispatch_workers=0)
        hub = Hub.open(settings)
        try:
            traffic = Traffic(hub, settings)
            first, second, others = residents_and_neighbours(traffic)  # first dead at zeimu
            with hub.store.sessions.begin() as session:
                dead = traffic.dead_delivery(first)
                operations.redeliver(session, [dead], reason="受信側の修正後", actor="cli:test")
            traffic.transport.refuse = set()
            traffic.dispatch()
            for name, (role, tenants) in ACCOUNTS.items():
                add_operator(hub.store.sessions, name, PASSWORD, role, frozenset(tenants))
            app = FastAPI()
            app.include_router(router)
            app.state.hub = hub
            yield Scene(app, hub, settings, {first, second}, others)
        finally:
            hub.close()


@pytest.fixture(scope="module")
def served(scene: Scene) -> Iterator[str]:
    """The console's router under uvicorn on a free port, in a thread of this process."""
    with served_in_thread(scene.app) as url:
        yield url


class Clients(dict[str, httpx.Client]):
    """A signed-in client per account, logged in when first asked for."""

    def __init__(self, url: str) -> None:
        super().__init__()
        self.url = url

    def __missing__(self, name: str) -> httpx.Client:
        client = httpx.Client(base_url=self.url, timeout=30)
        token = _csrf(client.get("/console/login"))
        form = {"csrf": token, "username": name, "password": PASSWORD, "next": ""}
        assert client.post("/console/login", data=form).status_code == 303, name
        self[name] = client
        return client


@pytest.fixture(scope="module")
def clients(served: str) -> Iterator[Clients]:
    signed = Clients(served)
    yield signed
    for client in signed.values():
        client.close()


def _csrf(page: httpx.Response) -> str:
    found = _CSRF.search(page.text)
    assert found is not None, page.text[:400]
    return found[1]


def _lookup(client: httpx.Client, resident: str = RESIDENT, **fields: str) -> httpx.Response:
    token = _csrf(client.get("/console/"))
    form = {"csrf": token, "tenant": TOWN, "resident": resident, "output": "page"} | fields
    return client.post("/console/trail", data=form)


def _trail_records(scene: Scene, event: str = "message.trail") -> list[AuditRecord]:
    with scene.hub.store.sessions() as session:
        query = select(AuditRecord).where(
            AuditRecord.tenant == ADMIN_CHAIN, AuditRecord.event == event
        )
        return list(session.scalars(query.order_by(AuditRecord.seq)))


def test_a_towns_operator_sees_the_residents_trail_masked(scene: Scene, clients: Clients) -> None:
    client = clients["takeo.ops"]
    form = client.get("/console/trail")
    assert form.status_code == 200 and 'action="/console/trail"' in form.text
    assert 'href="/console/trail"' in form.text  # in the menu
    page = _lookup(client)
    assert page.status_code == 200, page.text[:400]
    shown = set(re.findall(r'href="/console/messages/412066/([0-9a-f-]{36})"', page.text))
    assert shown == scene.mine  # no neighbour's, no other town's
    assert "*********6" in page.text and "本人" in page.text
    assert "配信不能の再送" in page.text and "cli:test" in page.text  # the operator action
    assert "配信済" in page.text and "zeimu" in page.text
    assert "令和" in page.text and "JST）" in page.text  # dates as the console writes them
    assert RESIDENT not in page.text  # not in the page, not in the CSV form (sealed)
    assert "含まれないもの" in page.text
    client.cookies.set("renkei_lang", "en")
    try:
        english = _lookup(client)
    finally:
        client.cookies.delete("renkei_lang")
    assert english.status_code == 200 and "Disclosure (resident trail)" in english.text


def test_the_lookup_is_recorded_as_the_clis_is(scene: Scene, clients: Clients) -> None:
    assert _lookup(clients["takeo.ops"], since="令和2年1月1日").status_code == 200
    console = _trail_records(scene)[-1]
    args = ["messages", "trail", "--tenant", TOWN, "--resident", RESIDENT, "--json"]
    done = CliRunner().invoke(cli_app, [*args, "--since", "2020-01-01"])
    assert done.exit_code == 0, done.output
    cli = _trail_records(scene)[-1]
    assert (console.event, console.actor) == ("message.trail", "console:takeo.ops")
    assert cli.actor is not None and cli.actor.startswith("cli:")
    assert console.detail == cli.detail  # same fields, same values (since included)
    key = resident_key(TOWN, RESIDENT, pseudonym_key(scene.settings))
    assert console.detail["resident_key"] == key and console.detail["resident"] == "*********6"
    assert RESIDENT not in str(console.detail)


def _search(client: httpx.Client, **fields: str) -> httpx.Response:
    form = {"csrf": _csrf(client.get("/console/messages")), "message_id": ""} | fields
    return client.post("/console/messages", data=form, follow_redirects=True)


def test_a_message_search_by_resident_is_recorded_whoever_searches(
    scene: Scene, clients: Clients
) -> None:
    """A viewer may not open the trail, but may search messages by 宛名番号: that look-up of
    one resident goes on the admin chain too, masked and under the trail's pseudonym."""
    assert _search(clients["takeo.view"], service="").status_code == 200
    assert _trail_records(scene, "message.search") == []  # no 宛名番号: nothing to record
    page = _search(clients["takeo.view"], subject=RESIDENT, tenant=TOWN)
    assert page.status_code == 200
    shown = set(re.findall(r'href="/console/messages/412066/([0-9a-f-]{36})"', page.text))
    assert scene.mine <= shown
    (viewer,) = _trail_records(scene, "message.search")
    key = pseudonym_key(scene.settings)
    assert viewer.actor == "console:takeo.view"
    assert viewer.detail == {
        "subject": "*********6",
        "resident_keys": {TOWN: resident_key(TOWN, RESIDENT, key)},
        "found": len(shown),
    }
    assert _search(clients["hub.staff"], subject=RESIDENT, tenant="").status_code == 200
    staff = _trail_records(scene, "message.search")[-1]
    towns = sorted(tenant.code for tenant in scene.hub.config.current().index.config.tenants)
    assert OTHER_TOWN in towns and staff.detail["resident_keys"] == {  # every town searched
        town: resident_key(town, RESIDENT, key) for town in towns
    }
    assert RESIDENT not in str([viewer.detail, staff.detail])


def test_the_resident_is_taken_from_a_post_only(scene: Scene, clients: Clients) -> None:
    client = clients["takeo.ops"]
    before = len(_trail_records(scene))
    linked = client.get(f"/console/trail?tenant={TOWN}&resident={RESIDENT}&output=csv")
    assert (linked.status_code, linked.headers["location"]) == (303, "/console/trail")
    assert (
        client.post("/console/trail", data={"tenant": TOWN, "resident": RESIDENT}).status_code
        == 403
    )
    assert "RK-CON001" in client.post("/console/trail", data={"csrf": "x", "tenant": TOWN}).text
    assert len(_trail_records(scene)) == before  # nothing looked up, nothing recorded


def test_only_those_who_may_read_personal_data_of_the_town_may_look_up(
    scene: Scene, clients: Clients
) -> None:
    before = len(_trail_records(scene))
    viewer = clients["takeo.view"]
    assert 'href="/console/trail"' not in viewer.get("/console/").text
    refused = viewer.get("/console/trail")
    assert refused.status_code == 403 and "RK-AUT011" in refused.text
    assert _lookup(viewer).status_code == 403
    kashima = clients["kashima.ops"]
    assert _lookup(kashima).status_code == 404  # another town's: as if it did not exist
    assert len(_trail_records(scene)) == before
    own = _lookup(kashima, tenant=OTHER_TOWN)
    assert own.status_code == 200
    assert scene.others["other_town"] in own.text and not scene.mine & set(own.text.split('"'))
    staff = _lookup(clients["hub.staff"])
    assert staff.status_code == 200 and all(mid in staff.text for mid in scene.mine)
    actors = [r.actor for r in _trail_records(scene)[before:]]
    assert actors == ["console:kashima.ops", "console:hub.staff"]


def test_a_malformed_lookup_is_refused_with_its_code_and_not_echoed(
    scene: Scene, clients: Clients
) -> None:
    client = clients["hub.staff"]
    before = len(_trail_records(scene))
    named = _lookup(client, resident="山田太郎")
    assert named.status_code == 400 and "RK-STO010" in named.text and "山田" not in named.text
    assert 'name="resident" required' in named.text and 'aria-invalid="true"' in named.text
    day = _lookup(client, since="令和8年2月30日")
    assert day.status_code == 400 and "RK-CON004" in day.text
    town = _lookup(client, tenant="412067")  # a wrong check digit
    assert town.status_code == 400 and "RK-TEN001" in town.text
    assert len(_trail_records(scene)) == before
    wide = _lookup(client, resident=" １０００００００１６ ")  # typed full width
    assert wide.status_code == 200 and all(mid in wide.text for mid in scene.mine)


def test_the_csv_is_the_clis_byte_for_byte(scene: Scene, clients: Clients, tmp_path: Any) -> None:
    out = tmp_path / "開示.csv"
    args = ["messages", "trail", "--tenant", TOWN, "--resident", RESIDENT, "--wareki"]
    done = CliRunner().invoke(cli_app, [*args, "--out", str(out)])
    assert done.exit_code == 0, done.output
    client = clients["takeo.ops"]
    csv = _lookup(client, output="csv", wareki="1")
    assert csv.status_code == 200 and csv.headers["content-type"].startswith("text/csv")
    disposition = csv.headers["content-disposition"]
    assert disposition.startswith("attachment;") and RESIDENT not in disposition
    assert csv.content == out.read_bytes()
    assert csv.content.startswith(b"\xef\xbb\xbf") and b"\r\n" in csv.content
    # again from the page's own download form: the 宛名番号 sealed for this session
    page = _lookup(client)
    sealed = _SEALED.search(page.text)
    assert sealed is not None and RESIDENT not in sealed[1]
    before = len(_trail_records(scene))
    form = {"csrf": _csrf(page), "tenant": TOWN, "s": sealed[1], "output": "csv", "wareki": "1"}
    again = client.post("/console/trail", data=form)
    assert again.content == out.read_bytes()
    assert len(_trail_records(scene)) == before + 1  # a download is a lookup too
    stolen = clients["hub.staff"].post(
        "/console/trail", data=form | {"csrf": _csrf(clients["hub.staff"].get("/console/"))}
    )
    assert stolen.status_code == 400 and "RK-CON001" in stolen.text  # another session's seal


@pytest.mark.slow
def test_staff_look_a_resident_up_in_a_browser(scene: Scene, served: str) -> None:
    """Through the menu, the form, the results and the download, in Chromium (about 4 s on
    two cores); axe finds no WCAG 2.1 AA violation on the form, the results or a refusal."""
    from tests.test_console_a11y import _axe, _require_axe

    axe = _require_axe().read_text(encoding="utf-8")
    with chromium() as browser:
        context = browser.new_context(locale="ja-JP")
        context.set_default_timeout(10_000)
        page = context.new_page()
        log_in(page, served, "takeo.ops", PASSWORD)
        page.get_by_role("link", name="開示請求（提供記録）").click()
        violations = {"form": _axe(page, axe)}
        page.get_by_label("宛名番号").fill("山田")
        page.get_by_role("button", name="画面に表示").click()
        page.wait_for_selector(".finding")
        violations["refused"] = _axe(page, axe)
        page.get_by_label("宛名番号").fill(RESIDENT)
        page.get_by_role("button", name="画面に表示").click()
        rows = page.locator("#trail tbody tr")
        rows.first.wait_for()
        violations["results"] = _axe(page, axe)
        assert page.url == f"{served}/console/trail"  # no 宛名番号 in the address bar
        assert rows.count() >= 3 and RESIDENT not in page.content()
        with page.expect_download() as download:
            page.locator("#trail-csv button").click()
        assert download.value.suggested_filename.startswith(f"trail-{TOWN}-")
        context.close()
    assert not {name: found for name, found in violations.items() if found}, violations
