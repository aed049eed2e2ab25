"""取消・訂正 (a Header ``relatesTo`` naming an earlier message) end to end: ``renkei serve``
on 127.0.0.1, one recording receiver playing every connected system, sent with httpx (REST)
and zeep (SOAP), operated with the real CLI (docs/dispatch.md, 取消・訂正)."""

from __future__ import annotations

import json
import os
import subprocess
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest
import zeep
import zeep.exceptions
from lxml import etree

from adapters.rest.json_form import child_table, to_json
from bus.catalogue import NS_ENVELOPE, NS_STANDARD
from bus.samplegen.messages import MessageSpec, build_message
from bus.samplegen.values import TOWNS
from tests.support.envelopes import set_relates_to
from tests.support.hub_server import RENKEI, HubServer, hub_server, serialize
from tests.support.receivers import config_dir_for, wait_for

API = "/api/v1/messages/ResidentChangeNotice"
FAST = {"max_attempts": 1000, "max_age": "PT1H", "base_delay": "PT0.05S", "max_delay": "PT0.2S"}
POISON = (str(uuid.uuid4()), str(uuid.uuid4()))  # refused 400 by every system: dead letters
MOVE_OUT = "201"  # 国内転出: routed to tainou and kotei too
CORRECTION = "107"  # 改製: zeimu, kokuho, shuno only (samples/config/routes.yaml)
EVERYWHERE = {"zeimu", "kokuho", "shuno", "kotei", "tainou"}


@dataclass(frozen=True, slots=True)
class Hub:
    server: HubServer
    receiver_args: tuple[str, ...]
    env: dict[str, str]

    @property
    def url(self) -> str:
        return self.server.url

    def cli(self, *args: str, as_json: bool = True) -> Any:
        command = [RENKEI, *args, *(["--json"] if as_json else [])]
        done = subprocess.run(command, env=self.env, capture_output=True, text=True, timeout=60)
        assert done.returncode == 0, done.stderr
        return json.loads(done.stdout) if as_json else done.stdout

    def received(self, message_id: str) -> list[str]:
        """The systems that applied the message, in the order they did."""
        records = self.server.receiver.records()
        return [r["system"] for r in records if r["messageId"] == message_id and r["applied"]]

    def order(self, system: str, *message_ids: str) -> list[str]:
        return [
            r["messageId"]
            for r in self.server.receiver.records()
            if r["system"] == system and r["applied"] and r["messageId"] in message_ids
        ]


@pytest.fixture(scope="module")
def hub(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Hub]:
    tmp = tmp_path_factory.mktemp("relates")
    config = config_dir_for(tmp, {}, retry=FAST)
    args = ("--fail-message-ids", ",".join(POISON))
    with hub_server(tmp, config_source=config, receiver_args=args, serve_options=()) as server:
        env = {
            **os.environ,
            "RENKEI_DATA_DIR": str(tmp / "hub-data"),
            "RENKEI_CONFIG_DIR": str(server.config_dir),
        }
        yield Hub(server, args, env)


def notice(
    *,
    seed: int,
    town: int = 4,
    reason: str = MOVE_OUT,
    relates_to: str | None = None,
    message_id: str | None = None,
    subject: str | None = None,
) -> etree._Element:
    """A valid 住民異動通知 of TOWNS[town] from juki; a 取消/訂正 when ``relates_to``."""
    document = build_message(MessageSpec("ResidentChangeNotice", seed, TOWNS[town]))
    header = document[0]
    header.find(f"{{{NS_ENVELOPE}}}messageId").text = message_id or str(uuid.uuid4())  # type: ignore[union-attr]
    document.find(f".//{{{NS_STANDARD}}}changeReason").text = reason  # type: ignore[union-attr]
    if subject is not None:
        header.find(f"{{{NS_ENVELOPE}}}subject").text = subject  # type: ignore[union-attr]
    if relates_to is not None:
        set_relates_to(header, relates_to)
    return document


def message_id_of(document: etree._Element) -> str:
    return document.findtext(f".//{{{NS_ENVELOPE}}}messageId") or ""


def subject_of(document: etree._Element) -> str:
    return document.findtext(f".//{{{NS_ENVELOPE}}}subject") or ""


def post(hub: Hub, document: etree._Element) -> httpx.Response:
    return httpx.post(
        f"{hub.url}{API}",
        content=serialize(document),
        headers={"Content-Type": "application/xml"},
        timeout=30,
    )


def accepted(hub: Hub, document: etree._Element) -> dict[str, Any]:
    response = post(hub, document)
    assert response.status_code == 202, response.text
    body: dict[str, Any] = response.json()
    return body


def codes(body: dict[str, Any]) -> list[str]:
    return [finding["code"] for finding in body["findings"]]


def send_zeep(hub: Hub, document: etree._Element) -> Any:
    client = zeep.Client(f"{hub.url}/soap/ResidentChangeNotice?wsdl")  # type: ignore[no-untyped-call]
    service = "ResidentChangeNotice"
    arguments = to_json(document)[service]
    assert isinstance(arguments, dict)
    table = child_table().root[service]
    values = {
        key: ({"_value_1": v["$"], **{k[1:]: x for k, x in v.items() if k != "$"}})
        if isinstance(v, dict) and "$" in v
        else v
        for key, v in arguments.items()
    }
    assert set(values) <= set(table.children)
    return client.service.ResidentChangeNotice(_soapheaders=[document[0]], **values)


def deliveries(hub: Hub, message_id: str) -> list[dict[str, Any]]:
    """The message's deliveries from the status GET (polled there: a CLI call costs seconds)."""
    response = httpx.get(f"{hub.url}/api/v1/messages/{message_id}", timeout=10)
    assert response.status_code == 200, response.text
    found: list[dict[str, Any]] = response.json()["deliveries"]
    return found


def delivered_everywhere(hub: Hub, message_id: str, systems: set[str]) -> None:
    wait_for(lambda: set(hub.received(message_id)) == systems, timeout=20)


def test_cancellation_follows_the_original_and_a_resend_is_delivered_once(hub: Hub) -> None:
    """1 and 7: a 取消 goes where the original went (tainou and kotei too, though its own
    change reason would not route there), after it; sent again, it is delivered once."""
    original = notice(seed=1)
    original_id = message_id_of(original)
    assert set(accepted(hub, original)["destinations"]) == EVERYWHERE
    delivered_everywhere(hub, original_id, EVERYWHERE)
    cancel = notice(seed=1, reason=CORRECTION, relates_to=original_id)
    answer = send_zeep(hub, cancel)  # the vendor's SOAP client
    assert str(answer.messageId) == message_id_of(cancel)
    resent = accepted(hub, cancel)  # the sender's retry, over REST this time
    assert resent["duplicate"] is True and set(resent["destinations"]) == EVERYWHERE
    delivered_everywhere(hub, message_id_of(cancel), EVERYWHERE)
    for system in EVERYWHERE:
        assert hub.order(system, original_id, message_id_of(cancel)) == [
            original_id,
            message_id_of(cancel),
        ]
    records = hub.server.receiver.records()
    assert len([r for r in records if r["messageId"] == message_id_of(cancel)]) == 5


def test_correction_with_another_subject_waits_behind_the_dead_original(hub: Hub) -> None:
    """3, and 2 with a corrected 宛名番号: the original is a dead letter at every destination;
    its 訂正 (another subject) waits behind it, and says why, until the operator discards the
    dead original. It used to be delivered at once, overtaking the original."""
    original = notice(seed=2, reason=CORRECTION, message_id=POISON[0])
    accepted(hub, original)

    def dead() -> list[dict[str, Any]]:
        letters = hub.cli("dlq", "list", "--tenant", TOWNS[4].code)
        return [d for d in letters if d["message_id"] == POISON[0]]

    wait_for(lambda: {d["state"] for d in deliveries(hub, POISON[0])} == {"dead"}, timeout=20)
    assert len(dead()) == 3
    fix = notice(seed=2, reason=CORRECTION, relates_to=POISON[0], subject="1234567890")
    assert subject_of(fix) != subject_of(original)
    assert sorted(accepted(hub, fix)["destinations"]) == ["kokuho", "shuno", "zeimu"]
    fix_id = message_id_of(fix)
    shown = hub.cli("messages", "show", fix_id, "--tenant", TOWNS[4].code)
    dead_ids = {d["id"] for d in dead()}
    assert {d["waiting_for"] for d in shown["deliveries"]} == {f"#{i} dead" for i in dead_ids}, (
        shown["deliveries"]
    )
    assert hub.received(fix_id) == []
    hub.cli("dlq", "discard", *map(str, sorted(dead_ids)), "--reason", "取消済み", as_json=False)
    delivered_everywhere(hub, fix_id, {"zeimu", "kokuho", "shuno"})


def test_correction_does_not_overtake_an_original_still_retrying(hub: Hub) -> None:
    """2: the systems are down; the original is being retried when its 訂正 (another
    subject) arrives. The 訂正 waits for it (operators see which delivery it waits for) and
    every system gets the original first once they are back."""
    hub.server.receiver.stop()
    try:
        original = notice(seed=3)
        original_id = message_id_of(original)
        accepted(hub, original)

        wait_for(lambda: all(d["attempts"] >= 1 for d in deliveries(hub, original_id)), timeout=20)
        fix = notice(seed=3, reason=CORRECTION, relates_to=original_id, subject="2345678901")
        accepted(hub, fix)
        shown = hub.cli("messages", "show", message_id_of(fix), "--tenant", TOWNS[4].code)
        assert all((d["waiting_for"] or "").endswith(" pending") for d in shown["deliveries"]), (
            shown["deliveries"]
        )
    finally:
        hub.server.receiver.start(*hub.receiver_args)
    delivered_everywhere(hub, message_id_of(fix), EVERYWHERE)
    for system in EVERYWHERE:
        assert hub.order(system, original_id, message_id_of(fix)) == [
            original_id,
            message_id_of(fix),
        ]


def test_relates_to_of_another_town_is_neither_followed_nor_revealed(hub: Hub) -> None:
    """4: 江北町's original went to tainou and kotei; 白石町's message naming its id is routed
    by 白石町's route table and told only that no message of its own has that id."""
    original = notice(seed=4)
    original_id = message_id_of(original)
    accepted(hub, original)
    other = notice(seed=4, town=5, reason=CORRECTION, relates_to=original_id)
    body = accepted(hub, other)
    assert sorted(body["destinations"]) == ["kokuho", "shuno", "zeimu"]
    assert codes(body) == ["RK-RTE004"]
    assert TOWNS[4].code not in json.dumps(body)


def test_unknown_relates_to_is_told_to_the_sender(hub: Hub) -> None:
    """5 and 8: an id the sender never sent — or a 取消 overtaking its own original — is
    routed by the route table at once, with a warning; the original, arriving later, is
    delivered after it."""
    original = notice(seed=5, reason=CORRECTION)
    early = notice(seed=5, reason=CORRECTION, relates_to=message_id_of(original))
    body = accepted(hub, early)
    assert codes(body) == ["RK-RTE004"]
    assert body["findings"][0]["severity"] == "warning"
    assert sorted(body["destinations"]) == ["kokuho", "shuno", "zeimu"]
    late = accepted(hub, original)
    assert codes(late) == []
    delivered_everywhere(hub, message_id_of(original), {"zeimu", "kokuho", "shuno"})
    assert hub.order("zeimu", message_id_of(early), message_id_of(original)) == [
        message_id_of(early),
        message_id_of(original),
    ]


def test_relates_to_itself_is_refused_with_a_code(hub: Hub) -> None:
    """6: REST 422 and a SOAP Client fault, RK-RTE003; nothing stored."""
    own = str(uuid.uuid4())
    response = post(hub, notice(seed=6, message_id=own, relates_to=own))
    assert response.status_code == 422, response.text
    assert [f["code"] for f in response.json()["findings"]] == ["RK-RTE003"]
    own = str(uuid.uuid4())
    with pytest.raises(zeep.exceptions.Fault) as fault:
        send_zeep(hub, notice(seed=6, message_id=own, relates_to=own))
    assert "Client" in str(fault.value.code)
    assert b"RK-RTE003" in etree.tostring(fault.value.detail)
    assert httpx.get(f"{hub.url}/api/v1/messages/{own}").status_code == 404


def test_relates_to_an_inquiry_and_a_chain_of_cancellations(hub: Hub) -> None:
    """6: naming an inquiry warns (RK-RTE005) and routes by the table; a 取消 of a 取消
    follows the chain to the original's destinations."""
    inquiry_path = Path(__file__).resolve().parent.parent / "samples" / "messages"
    inquiry = etree.parse(str(inquiry_path / "AddresseeInquiry" / "valid-full.xml")).getroot()
    inquiry_id = str(uuid.uuid4())
    inquiry.find(f".//{{{NS_ENVELOPE}}}messageId").text = inquiry_id  # type: ignore[union-attr]
    asked = httpx.post(
        f"{hub.url}/api/v1/messages/AddresseeInquiry",
        content=serialize(inquiry),
        headers={"Content-Type": "application/xml"},
        timeout=30,
    )
    assert asked.status_code == 200, asked.text
    # juki asked nothing: naming the inquiry tainou sent is an unknown id for juki
    body = accepted(hub, notice(seed=7, town=0, reason=CORRECTION, relates_to=inquiry_id))
    assert codes(body) == ["RK-RTE004"]
    # juki's own reply to it was never delivered on: the route table decides
    reply_id = asked.json()["reply_message_id"]
    body = accepted(hub, notice(seed=7, town=0, reason=CORRECTION, relates_to=reply_id))
    assert codes(body) == ["RK-RTE005"]
    assert sorted(body["destinations"]) == ["kokuho", "shuno", "zeimu"]
    original = notice(seed=8)
    accepted(hub, original)
    first = notice(seed=8, reason=CORRECTION, relates_to=message_id_of(original))
    accepted(hub, first)
    second = notice(seed=8, reason=CORRECTION, relates_to=message_id_of(first))
    chained = accepted(hub, second)
    assert set(chained["destinations"]) == EVERYWHERE and codes(chained) == []
    delivered_everywhere(hub, message_id_of(second), EVERYWHERE)
