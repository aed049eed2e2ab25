"""Tenant isolation, attacked: every identity of one town × every other tenant × every entry
point (REST and SOAP send, REST and SOAP inquiry, message status, PULL feed and export, pushed
deliveries), on a real hub over HTTP with real credentials (issued API keys, WS-Security
UsernameTokens).

A town's system never sends for another tenant, never reads another tenant's message (the
status answer is the very 404 of a message that does not exist) and never receives another
tenant's deliveries: each town's own push system (``kokuho-<code>``) and the prefecture-wide
subscriber (``ken-tokei``, which the configuration gives every tenant) are real recording
receivers on 127.0.0.1, and what each one was sent over HTTP is what is checked. A sampled
matrix runs by default (seconds); the full one with ``pytest -m slow``. Each entry point is
also shown to work for the town's own tenant, so a refusal here is isolation, not a broken
credential.
"""

from __future__ import annotations

import itertools
import uuid
from collections.abc import Callable, Iterable, Iterator
from contextlib import ExitStack
from typing import Any

import httpx
import pytest
import yaml
from lxml import etree

from adapters.soap.envelope import NS_SOAP_BINDING
from tests.conftest import require_service
from tests.support.hub_server import serialize
from tests.support.postgres import scratch_database
from tests.support.receivers import Receiver, wait_for
from tests.support.towns import TOWNS, Towns, message, message_id, soap_with_token, towns_hub

pytestmark = pytest.mark.isolation

API = "/api/v1/messages"
FEEDS = "/api/v1/feeds"
XML = {"Content-Type": "application/xml"}
SOAP_XML = {"Content-Type": "text/xml; charset=utf-8", "SOAPAction": '""'}
PAIRS = list(itertools.permutations(TOWNS, 2))
SAMPLED = [("412015", "412023"), ("412031", "412015")]
NOTICE = "ResidentChangeNotice"
PUSHED = "kokuho"  # each town's own push system: kokuho-<code>
PREFECTURE = "ken-tokei"  # a prefecture-wide subscriber: serves every tenant


def _push_systems(ports: dict[str, int]) -> tuple[Callable[[str], str], dict[str, str]]:
    """The edit giving each onboarded town a push system on its own receiver; and the
    prefecture's configuration file.

    The configuration is deliberately too wide, as a careless template could make it: each
    town's route lists *every* town's push system (and the prefecture's), and each push
    system's access rule names every town. Only what the hub enforces keeps a delivery in
    its tenant: a system receives only for the tenants it serves (its own town)."""

    def edit(text: str) -> str:
        document = yaml.safe_load(text)
        code = document["tenants"][0]["code"]
        system = f"{PUSHED}-{code}"
        url = f"http://127.0.0.1:{ports[system]}/{system}"
        document["systems"].append(
            {
                "id": system,
                "name": f"国保（{code} 単独）",
                "tenants": [code],
                "endpoint": {"transport": "http", "url": url},
            }
        )
        rule = {"system": system, "tenants": list(TOWNS), "receive": [NOTICE]}
        document["access"].append(rule)
        everyone = [f"{PUSHED}-{town}" for town in TOWNS] + [PREFECTURE]
        document["routes"][0]["subscribers"] += [{"system": s} for s in everyone]
        return yaml.safe_dump(document, allow_unicode=True, sort_keys=False)

    url = f"http://127.0.0.1:{ports[PREFECTURE]}/{PREFECTURE}"
    prefecture = {
        "systems": [
            {
                "id": PREFECTURE,
                "name": "佐賀県 統計（全団体）",
                "tenants": "*",
                "endpoint": {"transport": "http", "url": url},
            }
        ],
        "access": [{"system": PREFECTURE, "receive": [NOTICE]}],
    }
    return edit, {"prefecture.yaml": yaml.safe_dump(prefecture, allow_unicode=True)}


@pytest.fixture(
    scope="module", params=["sqlite", pytest.param("postgres", marks=pytest.mark.postgres)]
)
def towns(
    request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Towns]:
    tmp = tmp_path_factory.mktemp(f"towns-{request.param}")
    url = None
    with ExitStack() as stack:
        if request.param == "postgres":
            require_service("postgresql")
            url = stack.enter_context(scratch_database("renkei_isolation"))
        receivers = {}
        for system in [*(f"{PUSHED}-{code}" for code in TOWNS), PREFECTURE]:
            receivers[system] = Receiver(tmp, system).start()
            stack.callback(receivers[system].stop)
        edit, extra = _push_systems({system: r.port for system, r in receivers.items()})
        keyed = ("juki", "zeimu", PUSHED)
        hub = stack.enter_context(towns_hub(tmp, url, edit, extra_files=extra, keyed=keyed))
        hub.receivers.update(receivers)
        yield hub


@pytest.fixture(scope="module")
def stored(towns: Towns) -> dict[str, str]:
    """One 住民異動通知 per town, sent by the town's own 住民記録 (its message id)."""
    ids = {}
    for code in TOWNS:
        document = message("ResidentChangeNotice", code, f"juki-{code}")
        response = httpx.post(
            f"{towns.hub.url}{API}/ResidentChangeNotice",
            content=serialize(document),
            headers={**XML, **towns.bearer(f"juki-{code}")},
            timeout=30,
        )
        assert response.status_code == 202, response.text
        destinations = sorted(response.json()["destinations"])  # zeimu-<town> pulls its feed
        assert destinations == sorted([f"{PUSHED}-{code}", PREFECTURE])
        ids[code] = message_id(document)
    return ids


def _codes(response: httpx.Response) -> list[str]:
    if response.headers.get("content-type", "").startswith("application/problem+json"):
        return [f["code"] for f in response.json()["findings"]]
    fault = etree.fromstring(response.content)
    return [e.text or "" for e in fault.iter(f"{{{NS_SOAP_BINDING}}}code")]


# --- the entry points: (towns, attacker town, claimed/victim tenant, stored ids) → response --


def _post_rest(towns: Towns, key_of: str, service: str, document: etree._Element) -> httpx.Response:
    return httpx.post(
        f"{towns.hub.url}{API}/{service}",
        content=serialize(document),
        headers={**XML, **towns.bearer(key_of)},
        timeout=30,
    )


def _post_soap(towns: Towns, town: str, service: str, document: etree._Element) -> httpx.Response:
    """``document`` over SOAP with juki-<town>'s UsernameToken."""
    system = f"juki-{town}"
    body = soap_with_token(document, system, towns.soap_passwords[system])
    return httpx.post(f"{towns.hub.url}/soap/{service}", content=body, headers=SOAP_XML, timeout=30)


def _rest(
    towns: Towns, key_of: str, service: str, tenant: str, claimed_system: str
) -> httpx.Response:
    """POST ``service`` for ``tenant`` naming ``claimed_system``, with ``key_of``'s key."""
    return _post_rest(towns, key_of, service, message(service, tenant, claimed_system))


def _rest_send(towns: Towns, town: str, tenant: str, _: dict[str, str]) -> httpx.Response:
    return _rest(towns, f"juki-{town}", "ResidentChangeNotice", tenant, f"juki-{town}")


def _rest_send_as_their_system(
    towns: Towns, town: str, tenant: str, _: dict[str, str]
) -> httpx.Response:
    """Claiming the other town's own system too (the Header names juki-<victim>)."""
    return _rest(towns, f"juki-{town}", "ResidentChangeNotice", tenant, f"juki-{tenant}")


def _soap(towns: Towns, town: str, tenant: str, service: str) -> httpx.Response:
    return _post_soap(towns, town, service, message(service, tenant, f"juki-{town}"))


def _soap_send(towns: Towns, town: str, tenant: str, _: dict[str, str]) -> httpx.Response:
    return _soap(towns, town, tenant, "ResidentChangeNotice")


def _soap_inquiry(towns: Towns, town: str, tenant: str, _: dict[str, str]) -> httpx.Response:
    return _soap(towns, town, tenant, "AddresseeInquiry")


def _rest_inquiry(towns: Towns, town: str, tenant: str, _: dict[str, str]) -> httpx.Response:
    return _rest(towns, f"juki-{town}", "AddresseeInquiry", tenant, f"juki-{town}")


def _status_as(system: str) -> Callable[[Towns, str, str, dict[str, str]], httpx.Response]:
    def status(towns: Towns, town: str, tenant: str, ids: dict[str, str]) -> httpx.Response:
        return httpx.get(
            f"{towns.hub.url}{API}/{ids[tenant]}",
            params={"tenant": tenant},
            headers=towns.bearer(f"{system}-{town}"),
            timeout=30,
        )

    return status


def _feed(path: str) -> Callable[[Towns, str, str, dict[str, str]], httpx.Response]:
    def feed(towns: Towns, town: str, tenant: str, _: dict[str, str]) -> httpx.Response:
        return httpx.get(
            f"{towns.hub.url}{FEEDS}/ResidentChangeNotice{path}",
            params={"tenant": tenant},
            headers=towns.bearer(f"zeimu-{town}"),
            timeout=30,
        )

    return feed


EntryPoint = Callable[[Towns, str, str, dict[str, str]], httpx.Response]
# name → (call, the refusal for another tenant: HTTP status and first code)
ENTRY_POINTS: dict[str, tuple[EntryPoint, int, str]] = {
    "rest-send": (_rest_send, 403, "RK-AUT003"),
    "rest-send-as-their-system": (_rest_send_as_their_system, 403, "RK-AUT002"),
    "soap-send": (_soap_send, 500, "RK-AUT003"),
    "rest-inquiry": (_rest_inquiry, 403, "RK-AUT003"),
    "soap-inquiry": (_soap_inquiry, 500, "RK-AUT003"),
    "status-by-sender": (_status_as("juki"), 404, "RK-STO002"),
    "status-by-receiver": (_status_as("zeimu"), 404, "RK-STO002"),
    "status-by-push-receiver": (_status_as(PUSHED), 404, "RK-STO002"),
    "feed": (_feed(""), 403, "RK-FED002"),
    "feed-export": (_feed("/export"), 403, "RK-FED002"),
}
OWN_STATUS = {
    "rest-send": 202,
    "rest-send-as-their-system": 202,
    "soap-send": 200,
    "rest-inquiry": 200,
    "soap-inquiry": 200,
    "status-by-sender": 200,
    # a feed consumer reads its messages through its feed (200 above); the status endpoint
    # answers the sender and push destinations only, so even its own tenant's is a 404
    "status-by-receiver": 404,
    "status-by-push-receiver": 200,
    "feed": 200,
    "feed-export": 200,
}


def _matrix(entries: Iterable[str]) -> Iterator[object]:
    for (town, victim), name in itertools.product(PAIRS, entries):
        marks = () if (town, victim) in SAMPLED else (pytest.mark.slow,)
        yield pytest.param(name, town, victim, marks=marks, id=f"{name}-{town}-vs-{victim}")


@pytest.mark.parametrize(("entry", "town", "victim"), list(_matrix(ENTRY_POINTS)))
def test_another_tenant_is_out_of_reach(
    towns: Towns, stored: dict[str, str], entry: str, town: str, victim: str
) -> None:
    call, status, code = ENTRY_POINTS[entry]
    response = call(towns, town, victim, stored)
    assert response.status_code == status, response.text
    assert _codes(response)[0] == code


@pytest.mark.parametrize("entry", list(ENTRY_POINTS))
def test_each_entry_point_works_for_the_own_tenant(
    towns: Towns, stored: dict[str, str], entry: str
) -> None:
    call, _, _ = ENTRY_POINTS[entry]
    response = call(towns, "412015", "412015", stored)
    assert response.status_code == OWN_STATUS[entry], response.text


@pytest.mark.parametrize(("town", "victim"), SAMPLED)
def test_another_tenants_message_status_is_the_404_of_no_message(
    towns: Towns, stored: dict[str, str], town: str, victim: str
) -> None:
    """Same status, same codes, same text but for the id: the id leaks nothing."""
    headers = towns.bearer(f"zeimu-{town}")
    theirs = httpx.get(f"{towns.hub.url}{API}/{stored[victim]}", headers=headers, timeout=30)
    missing_id = str(uuid.uuid4())
    missing = httpx.get(f"{towns.hub.url}{API}/{missing_id}", headers=headers, timeout=30)
    assert theirs.status_code == missing.status_code == 404
    assert theirs.text.replace(stored[victim], "ID") == missing.text.replace(missing_id, "ID")


def test_deliveries_stay_within_the_tenant(towns: Towns, stored: dict[str, str]) -> None:
    """Each town's notice reaches only its own systems and the prefecture's: each 税務's feed
    of its own tenant holds its town's notice and no other, each town's push receiver was
    sent its town's notice only, the prefecture's receiver every town's."""
    for code in TOWNS:
        assert _settled(towns, code, stored[code]) == _delivered(code)
        assert set(_received(towns, f"{PUSHED}-{code}").values()) == {code}
        assert _received(towns, PREFECTURE)[stored[code]] == code
    for code in TOWNS:
        response = httpx.get(
            f"{towns.hub.url}{FEEDS}/ResidentChangeNotice",
            params={"tenant": code},
            headers=towns.bearer(f"zeimu-{code}"),
            timeout=30,
        )
        assert response.status_code == 200, response.text
        seen = {entry["message_id"] for entry in response.json()["entries"]}
        assert stored[code] in seen
        assert not seen & {stored[other] for other in TOWNS if other != code}


def test_matrix_covers_every_pair_and_entry_point() -> None:
    """The full matrix (slow) is the product the issue asks for; the sampled part is in it."""
    params = list(_matrix(ENTRY_POINTS))
    assert len(params) == len(PAIRS) * len(ENTRY_POINTS) == 6 * len(ENTRY_POINTS)
    assert len(list(_matrix(PUSH_SENDERS))) == 6 * len(PUSH_SENDERS)
    assert set(SAMPLED) <= set(PAIRS)


# --- receive pushed deliveries: what each town's own endpoint was actually sent --------------


def _records(towns: Towns, system: str) -> list[dict[str, Any]]:
    return towns.receivers[system].records()


def _received(towns: Towns, system: str) -> dict[str, str]:
    """messageId → tenant of everything ``system``'s receiver was sent over HTTP."""
    return {r["messageId"]: r["tenant"] for r in _records(towns, system)}


def _push_rest(towns: Towns, town: str, document: etree._Element) -> httpx.Response:
    return _post_rest(towns, f"juki-{town}", NOTICE, document)


def _push_soap(towns: Towns, town: str, document: etree._Element) -> httpx.Response:
    return _post_soap(towns, town, NOTICE, document)


# the identities sending for a town: (send, its refusal of another tenant: status, first code)
PUSH_SENDERS: dict[str, tuple[Callable[[Towns, str, etree._Element], httpx.Response], int]] = {
    "push-rest-key": (_push_rest, 403),
    "push-soap-token": (_push_soap, 500),
}


def _settled(towns: Towns, town: str, sent: str) -> dict[str, str]:
    """destination → final state of the message's deliveries, as its sender reads them."""
    seen: dict[str, str] = {}

    def final() -> bool:
        response = httpx.get(
            f"{towns.hub.url}{API}/{sent}", headers=towns.bearer(f"juki-{town}"), timeout=30
        )
        assert response.status_code == 200, response.text
        seen.clear()
        seen.update({d["destination"]: d["state"] for d in response.json()["deliveries"]})
        return "pending" not in seen.values()

    wait_for(final)
    return seen


def _delivered(town: str) -> dict[str, str]:
    """What the configuration entitles for ``town``: its own push system and the prefecture."""
    return {f"{PUSHED}-{town}": "delivered", PREFECTURE: "delivered"}


@pytest.mark.parametrize(("sender", "town", "victim"), list(_matrix(PUSH_SENDERS)))
def test_pushed_deliveries_reach_only_the_senders_tenant(
    towns: Towns, stored: dict[str, str], sender: str, town: str, victim: str
) -> None:
    """The town's identity tries the victim's tenant (refused), then sends for its own: once
    every delivery is final, the victim's endpoint was sent neither, and only its own
    tenant's messages ever; the town's own endpoint and the prefecture's got the message."""
    send, refusal = PUSH_SENDERS[sender]
    claimed = message(NOTICE, victim, f"juki-{town}")
    refused = send(towns, town, claimed)
    assert refused.status_code == refusal, refused.text
    assert _codes(refused)[0] == "RK-AUT003"
    own = message(NOTICE, town, f"juki-{town}")
    accepted = send(towns, town, own)
    assert accepted.status_code in (200, 202), accepted.text
    sent = message_id(own)
    assert _settled(towns, town, sent) == _delivered(town)
    mine = _records(towns, f"{PUSHED}-{town}")
    assert [r["tenant"] for r in mine if r["messageId"] == sent] == [town]
    assert _received(towns, PREFECTURE)[sent] == town
    theirs = _received(towns, f"{PUSHED}-{victim}")
    assert stored[victim] in theirs  # the victim's endpoint works: its own notice is there
    assert sent not in theirs and set(theirs.values()) == {victim}
    for system in towns.receivers:
        assert message_id(claimed) not in _received(towns, system)
