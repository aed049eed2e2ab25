"""A disabled town (``enabled: false``) in the console, driven over HTTP on a real hub with
three towns: an operator whose towns are all disabled cannot log in (RK-AUT015) and a session
open when its last town is disabled ends (notice on the login page); an operator of one
disabled and one enabled town sees and acts on the enabled one only — dashboard, search,
message detail, dead letters, redeliver and discard, all of them — and hub staff (``*``)
still see the disabled town's data, to finish what it left."""

from __future__ import annotations

import re
import time
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime

import httpx
import pytest
from sqlalchemy import select

from adapters.console.session import COOKIE
from bus.config.loader import parse_config_files
from bus.config.models import HubConfig
from bus.config.snapshots import apply_files, load_snapshot
from bus.security.operators import Role, add_operator
from bus.security.tenancy import set_enabled
from bus.store.db import open_store
from bus.store.models import ConfigSnapshot, Delivery, DeliveryState, StoredMessage
from tests.support.hub_server import serialize
from tests.support.towns import Towns, message, message_id, towns_hub

pytestmark = pytest.mark.console

PASSWORD = "correct horse battery"
ENABLED, DISABLED = "412023", "412031"  # 唐津市 stays, 鳥栖市 is disabled
_CSRF = re.compile(r'name="csrf" value="([^"]+)"')
ACCOUNTS = {
    "tosu.only": (Role.OPERATOR, {DISABLED}),
    "tosu.early": (Role.OPERATOR, {DISABLED}),  # signed in before the town is disabled
    "karatsu.tosu": (Role.OPERATOR, {ENABLED, DISABLED}),
    "hub.admin": (Role.ADMIN, {"*"}),
}


@dataclass(frozen=True, slots=True)
class Hub:
    towns: Towns
    messages: dict[str, str]  # town → its message id
    dead: dict[str, int]  # town → a dead letter's delivery id
    early: str  # tosu.early's session cookie, from before the town was disabled

    @property
    def url(self) -> str:
        return self.towns.hub.url


def _login(client: httpx.Client, username: str) -> httpx.Response:
    token = _CSRF.search(client.get("/console/login").text)
    assert token is not None
    form = {"csrf": token[1], "username": username, "password": PASSWORD, "next": ""}
    return client.post("/console/login", data=form)


def _post(towns: Towns, town: str) -> tuple[httpx.Response, str]:
    """A 住民異動通知 of ``town`` posted by its 住民記録; the answer and its messageId."""
    document = message("ResidentChangeNotice", town, f"juki-{town}")
    answer = httpx.post(
        f"{towns.hub.url}/api/v1/messages/ResidentChangeNotice",
        content=serialize(document),
        headers={"Content-Type": "application/xml", **towns.bearer(f"juki-{town}")},
        timeout=30,
    )
    return answer, message_id(document)


def _send(towns: Towns, town: str) -> str:
    answer, mid = _post(towns, town)
    assert answer.status_code == 202, answer.text
    return mid


def _dead_letter(towns: Towns, town: str, mid: str) -> int:
    """A dead letter of the message (its town's feed has no push delivery to fail)."""
    store = open_store(towns.settings)
    try:
        with store.sessions.begin() as session:
            stored = session.scalars(
                select(StoredMessage).where(StoredMessage.message_id == mid)
            ).one()
            now = datetime.now(UTC)
            delivery = Delivery(
                message_pk=stored.id,
                destination=f"zeimu-{town}",
                tenant=town,
                subject_key="",
                sequence=1,
                state=DeliveryState.DEAD.value,
                attempts=3,
                next_attempt_at=now,
                created_at=now,
                finished_at=now,
                last_error="test: refused",
            )
            session.add(delivery)
            session.flush()
            return delivery.id
    finally:
        store.close()


def _disable(towns: Towns, town: str) -> None:
    store = open_store(towns.settings)
    try:
        with store.sessions() as session:
            latest = session.scalars(
                select(ConfigSnapshot).order_by(ConfigSnapshot.version.desc())
            ).first()
            assert latest is not None
            files = dict(latest.files)
        _, edited = set_enabled(files, town, False)
        apply_files(
            store.sessions, edited, "cli:test", because=("tenant.disable", {"tenant": town})
        )
        config: HubConfig = load_snapshot(store.sessions).config
        assert not next(t for t in config.tenants if t.code == town).enabled
    finally:
        store.close()
    parse_config_files(edited)


def _wait_until_refused(towns: Towns, town: str) -> None:
    """Every hub process picks a new version up within about a second."""
    deadline = time.monotonic() + 15
    while True:
        answer, _ = _post(towns, town)
        if answer.status_code == 403:
            return
        assert time.monotonic() < deadline, answer.status_code
        time.sleep(0.2)


@pytest.fixture(scope="module")
def hub(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Hub]:
    with towns_hub(tmp_path_factory.mktemp("towns-disabled")) as towns:
        store = open_store(towns.settings)
        try:
            for name, (role, tenants) in ACCOUNTS.items():
                add_operator(store.sessions, name, PASSWORD, role, frozenset(tenants))
        finally:
            store.close()
        messages = {town: _send(towns, town) for town in (ENABLED, DISABLED)}
        dead = {town: _dead_letter(towns, town, mid) for town, mid in messages.items()}
        with httpx.Client(base_url=towns.hub.url, timeout=30) as early:
            assert _login(early, "tosu.early").status_code == 303
            assert early.get("/console/").status_code == 200
            kept = early.cookies[COOKIE]
        _disable(towns, DISABLED)
        _wait_until_refused(towns, DISABLED)
        yield Hub(towns, messages, dead, kept)


def test_an_operator_whose_towns_are_all_disabled_cannot_log_in(hub: Hub) -> None:
    with httpx.Client(base_url=hub.url, timeout=30) as client:
        answer = _login(client, "tosu.only")
        assert answer.status_code == 403
        assert "RK-AUT015" in answer.text and "利用停止中" in answer.text
        assert client.get("/console/").status_code == 303  # not signed in
        client.cookies.set("renkei_lang", "en")
        english = _login(client, "tosu.only")
        assert english.status_code == 403 and "is disabled" in english.text


def test_a_session_open_when_its_last_town_is_disabled_ends_with_a_notice(hub: Hub) -> None:
    with httpx.Client(base_url=hub.url, cookies={COOKIE: hub.early}, timeout=30) as client:
        answer = client.get(f"/console/messages/{DISABLED}/{hub.messages[DISABLED]}")
        assert answer.status_code == 303 and "/console/login" in answer.headers["location"]
        login = client.get(answer.headers["location"])
        assert "担当団体がすべて利用停止中" in login.text


def test_an_operator_of_a_disabled_and_an_enabled_town_sees_the_enabled_one_only(
    hub: Hub,
) -> None:
    with httpx.Client(base_url=hub.url, timeout=30) as client:
        assert _login(client, "karatsu.tosu").status_code == 303
        pages = {
            "dashboard": client.get("/console/"),
            "search": client.get("/console/messages"),
            "dead letters": client.get("/console/dead-letters"),
            "destinations": client.get("/console/destinations"),
            "imports": client.get("/console/imports"),
        }
        for name, page in pages.items():
            assert page.status_code == 200, name
            assert DISABLED not in page.text, name
        assert ENABLED in pages["dashboard"].text
        assert f'value="{hub.dead[ENABLED]}"' in pages["dead letters"].text
        refused = {
            "detail": client.get(f"/console/messages/{DISABLED}/{hub.messages[DISABLED]}"),
            "search by town": client.get(f"/console/messages?tenant={DISABLED}"),
        }
        for name, answer in refused.items():
            assert answer.status_code == 404, name  # as for another town's
        assert client.get(f"/console/messages/{ENABLED}/{hub.messages[ENABLED]}").status_code == 200
        filtered = client.get(f"/console/dead-letters?tenant={DISABLED}")
        assert filtered.status_code == 400 and "RK-CON007" in filtered.text
        assert client.get(f"/console/dead-letters/all?tenant={DISABLED}").status_code == 400
        csrf = _CSRF.search(pages["dead letters"].text)
        assert csrf is not None
        for action in ("redeliver", "discard"):
            form = {
                "csrf": csrf[1],
                "action": action,
                "delivery": str(hub.dead[DISABLED]),
                "reason": "監査テスト",
            }
            assert client.post("/console/dead-letters", data=form).status_code == 404, action
    store = open_store(hub.towns.settings)
    try:
        with store.sessions() as session:
            state = session.scalar(select(Delivery.state).where(Delivery.id == hub.dead[DISABLED]))
    finally:
        store.close()
    assert state == DeliveryState.DEAD.value  # untouched


def test_hub_staff_still_see_a_disabled_towns_data(hub: Hub) -> None:
    with httpx.Client(base_url=hub.url, timeout=30) as client:
        assert _login(client, "hub.admin").status_code == 303
        detail = client.get(f"/console/messages/{DISABLED}/{hub.messages[DISABLED]}")
        assert detail.status_code == 200
        dead = client.get(f"/console/dead-letters?tenant={DISABLED}")
        assert dead.status_code == 200 and f'value="{hub.dead[DISABLED]}"' in dead.text
