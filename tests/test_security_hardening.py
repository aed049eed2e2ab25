"""Attacks found by exploratory security testing, on a real hub over HTTP (three onboarded
towns with issued credentials, operator accounts scoped to one town):

- a captured WS-Security UsernameToken replayed with its nonce spelt differently (the same
  bytes in a non-canonical Base64 form) is still a replay;
- logging out of the console ends the session: the old cookie no longer works;
- changing an operator's password ends the sessions opened before;
- password guessing on the console's login is throttled per account (RK-CON005);
- a log line never carries an unvalidated Header value in clear (a name put in the tenant).
"""

from __future__ import annotations

import base64
import io
import json
import logging
import re
import secrets
import string
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import httpx
import pytest
from lxml import etree

from bus.catalogue import NS_ENVELOPE
from bus.observability.logs import configure_logging, get_logger
from bus.security.operators import Role, add_operator, set_password
from bus.store.db import open_store
from tests.support.hub_server import serialize
from tests.support.towns import Towns, message, message_id, soap_with_token, towns_hub

TOWN = "412015"
PASSWORD = "correct horse battery"
SOAP_XML = {"Content-Type": "text/xml; charset=utf-8", "SOAPAction": '""'}
_CSRF = re.compile(r'name="csrf" value="([^"]+)"')
_B64 = string.ascii_uppercase + string.ascii_lowercase + string.digits + "+/"


@pytest.fixture(scope="module")
def towns(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Towns]:
    tmp = tmp_path_factory.mktemp("security-hardening")
    with towns_hub(tmp) as hub:
        store = open_store(hub.settings)
        try:
            for name in ("saga.ops", "saga.guessed", "saga.passwd"):
                add_operator(store.sessions, name, PASSWORD, Role.OPERATOR, frozenset({TOWN}))
        finally:
            store.close()
        yield hub


def _soap_send(towns: Towns, body: bytes) -> httpx.Response:
    url = f"{towns.hub.url}/soap/ResidentChangeNotice"
    return httpx.post(url, content=body, headers=SOAP_XML, timeout=30)


def test_a_nonce_spelt_differently_is_still_a_replay(towns: Towns) -> None:
    """16 bytes are 22 Base64 digits: the last one carries 4 unused bits, so one nonce has
    16 spellings that decode to the same bytes (and so give the same digest)."""
    user = f"juki-{TOWN}"
    nonce = secrets.token_bytes(16)
    token = soap_with_token(
        message("ResidentChangeNotice", TOWN, user), user, towns.soap_passwords[user], nonce=nonce
    )
    first = _soap_send(towns, token)
    assert first.status_code == 200, first.text
    canonical = base64.b64encode(nonce).decode()
    last = _B64.index(canonical[21])
    respelt = canonical[:21] + _B64[last ^ 1] + canonical[22:]
    assert base64.b64decode(respelt) == nonce and respelt != canonical
    replayed = _soap_send(towns, token.replace(canonical.encode(), respelt.encode()))
    assert replayed.status_code == 500 and "RK-AUT009" in replayed.text


@contextmanager
def _signed_in(towns: Towns, username: str) -> Iterator[tuple[httpx.Client, str]]:
    with httpx.Client(base_url=towns.hub.url, timeout=30) as client:
        login_csrf = _CSRF.search(client.get("/console/login").text)
        assert login_csrf is not None
        form = {"csrf": login_csrf[1], "username": username, "password": PASSWORD, "next": ""}
        answer = client.post("/console/login", data=form)
        assert answer.status_code == 303 and answer.headers["location"] == "/console/"
        found = _CSRF.search(client.get("/console/").text)
        assert found is not None
        yield client, found[1]


def _dashboard_with(towns: Towns, cookie: str) -> httpx.Response:
    return httpx.get(f"{towns.hub.url}/console/", cookies={"renkei_console": cookie}, timeout=30)


def test_logging_out_ends_the_session(towns: Towns) -> None:
    with _signed_in(towns, "saga.ops") as (client, csrf):
        cookie = client.cookies["renkei_console"]
        assert _dashboard_with(towns, cookie).status_code == 200
        assert client.post("/console/logout", data={"csrf": csrf}).status_code == 303
    replayed = _dashboard_with(towns, cookie)  # a copy kept by a shared PC, a proxy, malware
    assert replayed.status_code == 303 and "/console/login" in replayed.headers["location"]


def test_a_new_password_ends_the_sessions_opened_before(towns: Towns) -> None:
    with _signed_in(towns, "saga.passwd") as (client, _):
        cookie = client.cookies["renkei_console"]
        assert _dashboard_with(towns, cookie).status_code == 200
    store = open_store(towns.settings)
    try:
        set_password(store.sessions, "saga.passwd", PASSWORD, actor="test")
    finally:
        store.close()
    ended = _dashboard_with(towns, cookie)
    assert ended.status_code == 303 and "/console/login" in ended.headers["location"]
    with _signed_in(towns, "saga.passwd") as (client, _):  # a new login works
        assert client.get("/console/").status_code == 200


def test_password_guessing_is_throttled_per_account(towns: Towns) -> None:
    if time.time() % 60 > 40:  # the 12 attempts in one counting window (a minute)
        time.sleep(60.5 - time.time() % 60)
    with httpx.Client(base_url=towns.hub.url, timeout=30) as client:

        def attempt(password: str) -> httpx.Response:
            token = _CSRF.search(client.get("/console/login").text)
            assert token is not None
            form = {"csrf": token[1], "username": "saga.guessed", "password": password}
            return client.post("/console/login", data=form)

        answers = [attempt(f"guess number {n}") for n in range(12)]
        assert answers[0].status_code == 401 and "RK-AUT012" in answers[0].text
        assert answers[-1].status_code == 429 and "RK-CON005" in answers[-1].text
        assert "Retry-After" in answers[-1].headers
        # even the right password is refused while the account is throttled
        assert attempt(PASSWORD).status_code == 429
    with _signed_in(towns, "saga.ops"):  # another account is not affected
        pass


def test_a_header_value_that_is_not_what_it_claims_is_masked_in_logs(tmp_path: Path) -> None:
    stream = io.StringIO()
    root = logging.getLogger()
    level, handlers = root.level, list(root.handlers)
    configure_logging("INFO", stream)
    try:
        get_logger("renkei.events").info(
            "message.rejected",
            codes=["RK-XSD001"],
            messageId="山田　太郎",
            correlationId="佐賀市本庄町1番地",
            service="ResidentChangeNotice",
            tenant="山田太郎",
            system="juki-412015",
        )
    finally:
        for handler in [h for h in root.handlers if h not in handlers]:
            root.removeHandler(handler)
        root.setLevel(level)
    line = json.loads(stream.getvalue().splitlines()[-1])
    text = stream.getvalue()
    assert "山田" not in text and "本庄町" not in text
    assert line["service"] == "ResidentChangeNotice" and line["system"] == "juki-412015"
    assert line["tenant"] and line["messageId"] and line["correlationId"]  # masked, not gone


def test_a_delivery_id_beyond_any_key_is_nothing_selected_not_a_crash(towns: Towns) -> None:
    with _signed_in(towns, "saga.ops") as (client, csrf):
        form = {"csrf": csrf, "action": "redeliver", "reason": "再送", "delivery": "9" * 40}
        answer = client.post("/console/dead-letters", data=form)
        assert answer.status_code == 400 and "RK-CON003" in answer.text
        assert answer.headers["x-frame-options"] == "DENY"  # a console page, not a bare 500


def _send_rest(towns: Towns, document: etree._Element, system: str) -> httpx.Response:
    return httpx.post(
        f"{towns.hub.url}/api/v1/messages/ResidentChangeNotice",
        content=serialize(document),
        headers={"Content-Type": "application/xml", **towns.bearer(system)},
        timeout=30,
    )


def test_a_status_lookup_says_nothing_of_another_towns_message_with_the_same_id(
    towns: Towns,
) -> None:
    """Town B's message id, reused by town C for a message of its own: C's status lookup
    (without ``tenant=``) finds C's message, as if B's did not exist. It was 409 RK-STO003
    ("several stored messages have the id"), which confirmed B's id to C."""
    theirs = message("ResidentChangeNotice", "412023", "juki-412023")
    assert _send_rest(towns, theirs, "juki-412023").status_code == 202
    reused = message("ResidentChangeNotice", "412031", "juki-412031")
    taken = message_id(theirs)
    element = reused.find(f".//{{{NS_ENVELOPE}}}messageId")
    assert element is not None
    element.text = taken
    assert _send_rest(towns, reused, "juki-412031").status_code == 202
    url = f"{towns.hub.url}/api/v1/messages/{taken}"
    mine = httpx.get(url, headers=towns.bearer("juki-412031"), timeout=30)
    assert mine.status_code == 200, mine.text
    assert mine.json()["tenant"] == "412031"
    # a town party to neither gets the 404 of a message that does not exist
    neither = httpx.get(url, headers=towns.bearer("zeimu-412015"), timeout=30)
    assert neither.status_code == 404 and neither.json()["findings"][0]["code"] == "RK-STO002"
