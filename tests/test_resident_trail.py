"""``renkei messages trail``: one resident's messages, deliveries and operator actions for a
開示請求 or a 支援措置 question (docs/data-protection.md, 開示請求・提供記録への対応).

Real traffic through the hub's ingest pipeline on SQLite, a dispatch worker delivering (one
destination refusing two messages, which dead-letter), an operator redelivering one and
discarding the other with the real CLI, a replay, a 訂正 X → Y; residents whose 宛名番号 is a
prefix of the trailed one's and the other way round, and the same number in another town."""

from __future__ import annotations

import csv
import io
import json
import re
import uuid
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import event, select
from typer.testing import CliRunner

from bus.catalogue import NS_ENVELOPE, NS_STANDARD
from bus.cli import app
from bus.config.models import Endpoint
from bus.dispatch.transport import OutboundMessage, Outcome, SendResult
from bus.dispatch.worker import Worker
from bus.hub import Hub
from bus.samplegen.messages import MessageSpec, build_message, serialize
from bus.security.operators import Operator, Role
from bus.settings import Settings
from bus.store.admin_audit import ADMIN_CHAIN
from bus.store.models import AuditRecord, Delivery, StoredMessage
from bus.store.queries import StoreQueryError
from bus.store.trail import resident_key, resident_trail
from bus.store.trail_report import pseudonym_key
from tests.support.envelopes import set_relates_to

TOWN, OTHER_TOWN = "412066", "412074"
RESIDENT = "1000000016"  # the one who asks
PREFIX, LONGER = "100000001", "10000000160"  # neighbours: a prefix of it, and it a prefix
MOVED_TO = "2000000013"  # the 訂正's new 宛名番号
REFUSING = "zeimu"  # the destination that refuses (permanently) what it is told to


@dataclass
class Refusing:
    """Every system's transport: ``refuse`` messages are refused by REFUSING."""

    refuse: set[str] = field(default_factory=set)

    def send(self, message: OutboundMessage, endpoint: Endpoint) -> SendResult:
        if message.destination == REFUSING and message.message_id in self.refuse:
            return SendResult(Outcome.PERMANENT, error="HTTP 400 Bad Request")
        return SendResult(Outcome.DELIVERED)

    def close(self) -> None:
        return None


@dataclass
class Traffic:
    hub: Hub
    settings: Settings
    transport: Refusing = field(default_factory=Refusing)

    def notice(self, subject: str, *, town: str = TOWN, relates_to: str | None = None) -> str:
        """A 住民異動通知 from juki through the pipeline: its messageId."""
        number = uuid.uuid4().int % 10_000
        document = build_message(MessageSpec("ResidentChangeNotice", number, _town(town)))
        header = document[0]
        message_id = str(uuid.uuid4())
        header.find(f"{{{NS_ENVELOPE}}}messageId").text = message_id  # type: ignore[union-attr]
        header.find(f"{{{NS_ENVELOPE}}}subject").text = subject  # type: ignore[union-attr]
        reason = document.find(f".//{{{NS_STANDARD}}}changeReason")
        reason.text = "201"  # type: ignore[union-attr]
        if relates_to is not None:
            set_relates_to(header, relates_to)
        message = self.hub.ingest(serialize(document), adapter="test", source_address="127.0.0.1")
        assert message.ack is not None, [f.code for f in message.findings]
        return message_id

    def dispatch(self) -> None:
        worker = Worker(
            self.hub.store.sessions,
            lambda: self.hub.config.current().index,
            None,
            "trail-test",
            transports={"http": self.transport, "soap": self.transport},
            send_concurrency=1,
        )
        while worker.run_once():
            pass
        worker.close()

    def dead_delivery(self, message_id: str) -> int:
        with self.hub.store.sessions() as session:
            pk = session.scalar(
                select(StoredMessage.id).where(StoredMessage.message_id == message_id)
            )
            return session.scalars(
                select(Delivery.id).where(
                    Delivery.message_pk == pk,
                    Delivery.destination == REFUSING,
                    Delivery.state == "dead",
                )
            ).one()


def _town(code: str) -> Any:
    from bus.samplegen.values import TOWNS

    return next(town for town in TOWNS if town.code == code)


def cli(*args: str) -> Any:
    return CliRunner().invoke(app, list(args))


@dataclass
class Scene:
    traffic: Traffic
    mine: dict[str, str]  # name → messageId of the resident's messages
    others: dict[str, str]


def residents_and_neighbours(traffic: Traffic) -> tuple[str, str, dict[str, str]]:
    """Two notices of RESIDENT, the first dead at zeimu (holding the second there) and
    delivered elsewhere, and one each of the neighbours whose numbers look like it (a prefix,
    a longer one) and of the same number in another town: what a trail must tell apart."""
    first, second = traffic.notice(RESIDENT), traffic.notice(RESIDENT)
    others = {
        "prefix": traffic.notice(PREFIX),
        "longer": traffic.notice(LONGER),
        "other_town": traffic.notice(RESIDENT, town=OTHER_TOWN),
    }
    traffic.transport.refuse = {first}
    traffic.dispatch()
    return first, second, others


@pytest.fixture
def scene(data_dir: Path) -> Iterator[Scene]:
    settings = Settings(data_dir=data_dir, dispatch_workers=0)
    hub = Hub.open(settings)
    try:
        traffic = Traffic(hub, settings)
        first, second, others = residents_and_neighbours(traffic)
        redeliver = ("--reason", "受信側の修正後", str(traffic.dead_delivery(first)))
        assert cli("dlq", "redeliver", *redeliver).exit_code == 0
        traffic.transport.refuse = {second}
        traffic.dispatch()  # first delivered at zeimu now; second dead there
        discard = ("--reason", "重複のため", str(traffic.dead_delivery(second)))
        assert cli("dlq", "discard", *discard).exit_code == 0
        replay = ("--tenant", TOWN, "--to", "shuno", "--reason", "復旧")
        assert cli("messages", "replay", first, *replay).exit_code == 0
        correction = traffic.notice(MOVED_TO, relates_to=first)  # 訂正 X → Y
        traffic.dispatch()
        mine = {"first": first, "second": second, "correction": correction}
        yield Scene(traffic, mine, others)
    finally:
        hub.close()


def _trail_json(*extra: str, resident: str = RESIDENT) -> dict[str, Any]:
    done = cli("messages", "trail", "--tenant", TOWN, "--resident", resident, "--json", *extra)
    assert done.exit_code == 0, done.output
    return dict(json.loads(done.stdout))


def test_the_trail_lists_exactly_the_residents_messages_deliveries_and_actions(
    scene: Scene,
) -> None:
    trail = _trail_json()
    mine = scene.mine
    by_id = {m["message_id"]: m for m in trail["messages"]}
    assert set(by_id) == set(mine.values())  # no neighbour's, no other town's
    assert by_id[mine["first"]]["relation"] == "subject"
    assert by_id[mine["correction"]]["relation"] == "corrected"  # moved the record to Y
    assert by_id[mine["first"]]["subject"] == "*********6"  # masked, never in clear
    assert RESIDENT not in json.dumps(trail)

    went = {(p["message_id"], p["destination"], p["state"]) for p in trail["provisions"]}
    assert (mine["first"], REFUSING, "delivered") in went  # after the redelivery
    assert (mine["second"], REFUSING, "discarded") in went
    assert (mine["first"], "shuno", "delivered") in went  # the replay's delivery too
    redelivered = next(
        p
        for p in trail["provisions"]
        if p["message_id"] == mine["first"] and p["destination"] == REFUSING
    )
    assert redelivered["attempts"] == 1  # reset by the redelivery, then delivered at once

    actions = {(a["message_id"], a["event"]) for a in trail["actions"]}
    assert actions == {
        (mine["first"], "redelivered"),
        (mine["second"], "discarded"),
        (mine["first"], "replayed"),
    }
    assert all(a["actor"].startswith("cli:") for a in trail["actions"])


def test_the_new_subject_of_a_correction_names_the_original_it_corrects(scene: Scene) -> None:
    trail = _trail_json(resident=MOVED_TO)
    relations = {m["message_id"]: m["relation"] for m in trail["messages"]}
    assert relations == {scene.mine["correction"]: "subject", scene.mine["first"]: "corrects"}


def test_the_resident_can_come_on_standard_input_not_the_command_line(scene: Scene) -> None:
    args = ["messages", "trail", "--tenant", TOWN, "--resident", "-", "--json"]
    done = CliRunner().invoke(app, args, input=f"{RESIDENT}\n")
    assert done.exit_code == 0, done.output
    listed = {m["message_id"] for m in json.loads(done.stdout)["messages"]}
    assert listed == set(scene.mine.values())


def test_a_neighbours_trail_holds_only_theirs(scene: Scene) -> None:
    for resident, name in ((PREFIX, "prefix"), (LONGER, "longer")):
        trail = _trail_json(resident=resident)
        assert [m["message_id"] for m in trail["messages"]] == [scene.others[name]]


def test_the_csv_for_staff_reads_back(scene: Scene, tmp_path: Path) -> None:
    out = tmp_path / "開示.csv"
    done = cli(
        "messages", "trail", "--tenant", TOWN, "--resident", RESIDENT, "--out", str(out), "--wareki"
    )
    assert done.exit_code == 0, done.output
    raw = out.read_bytes()
    assert raw.startswith(b"\xef\xbb\xbf")
    assert b"\r\n" in raw and b"\n" not in raw.replace(b"\r\n", b"")
    assert RESIDENT.encode() not in raw
    table = list(csv.reader(io.StringIO(raw.decode("utf-8-sig"), newline="")))
    assert table[0][:3] == ["日時", "和暦", "区分"]
    body = [dict(zip(table[0], row, strict=True)) for row in table[1:]]
    assert {row["messageId"] for row in body} == set(scene.mine.values())
    assert all(row["和暦"].startswith("令和") for row in body)
    kinds = [row["区分"] for row in body]
    assert kinds.count("受信") == 3
    assert {row["状態"] for row in body if row["区分"] == "操作"} == {
        "配信不能の再送",
        "配信不能の破棄",
        "再送",
    }
    discarded = [
        row
        for row in body
        if row["区分"] == "提供" and row["messageId"] == scene.mine["second"]
        if row["提供先システム"] == REFUSING
    ]
    assert [row["状態"] for row in discarded] == ["破棄（配信せず）"]
    assert [row["日時"] for row in body] == sorted(row["日時"] for row in body)
    assert RESIDENT not in done.output


def test_the_lookup_is_on_the_admin_chain_keyed_not_in_clear(scene: Scene) -> None:
    _trail_json("--since", "2020-01-01")
    with scene.traffic.hub.store.sessions() as session:
        record = session.scalars(
            select(AuditRecord)
            .where(AuditRecord.tenant == ADMIN_CHAIN)
            .order_by(AuditRecord.seq.desc())
            .limit(1)
        ).one()
        every = session.execute(select(AuditRecord)).scalars().all()
        dumped = json.dumps(
            [[r.event, r.actor, r.message_id, r.detail] for r in every], ensure_ascii=False
        )
    assert record.event == "message.trail"
    assert record.actor is not None and record.actor.startswith("cli:")
    key = pseudonym_key(scene.traffic.settings)
    assert record.detail["tenant"] == TOWN
    assert record.detail["resident"] == "*********6"
    assert record.detail["resident_key"] == resident_key(TOWN, RESIDENT, key)
    assert record.detail["resident_key"] != resident_key(TOWN, PREFIX, key)
    assert record.detail["messages"] == 3
    assert RESIDENT not in dumped
    verified = cli("audit", "verify", "--json")
    assert verified.exit_code == 0, verified.output
    assert all(chain["ok"] for chain in json.loads(verified.stdout).values())


def test_a_towns_operator_cannot_trail_another_towns_resident(scene: Scene) -> None:
    other = Operator("kashima-op", Role.OPERATOR, frozenset({OTHER_TOWN}))
    sessions = scene.traffic.hub.store.sessions
    with pytest.raises(StoreQueryError) as refused, sessions.begin() as session:
        resident_trail(
            session, tenant=TOWN, resident=RESIDENT, actor="console:kashima-op",
            pseudonym_key=b"k", operator=other,
        )  # fmt: skip
    assert refused.value.finding.code == "RK-AUT011"
    with sessions.begin() as session:
        own = resident_trail(
            session, tenant=OTHER_TOWN, resident=RESIDENT, actor="console:kashima-op",
            pseudonym_key=b"k", operator=other,
        )  # fmt: skip
    assert [m.message_id for m in own.messages] == [scene.others["other_town"]]


def test_a_malformed_resident_is_refused_without_echoing_it(data_dir: Path) -> None:
    typed = "山田太郎"
    done = cli("messages", "trail", "--tenant", TOWN, "--resident", typed)
    assert done.exit_code == 2
    assert "RK-STO010" in done.output and typed not in done.output
    assert not (data_dir / "renkei.db").exists()  # refused before the store was opened
    wrong_check_digit = cli("messages", "trail", "--tenant", "412067", "--resident", RESIDENT)
    assert wrong_check_digit.exit_code == 2 and "RK-TEN001" in wrong_check_digit.output


def _plans(scene: Scene) -> dict[str, list[str]]:
    """Each statement a trail runs (as SQLite ran it, the values written in): its plan."""
    statements: list[str] = []
    engine = scene.traffic.hub.store.engine

    def trace(driver: Any, *_: Any) -> None:
        driver.set_trace_callback(statements.append)

    event.listen(engine, "checkout", trace)
    try:
        with scene.traffic.hub.store.sessions.begin() as session:
            resident_trail(
                session, tenant=TOWN, resident=RESIDENT, actor="cli:plan", pseudonym_key=b"k"
            )
    finally:
        event.remove(engine, "checkout", trace)
    reads = [s for s in statements if s.lstrip().upper().startswith(("SELECT", "WITH"))]
    with engine.connect() as connection:
        cursor = connection.connection.cursor()
        return {
            s: [str(row[-1]) for row in cursor.execute("EXPLAIN QUERY PLAN " + s)] for s in reads
        }


def test_the_trail_finds_deliveries_and_operator_actions_by_index(scene: Scene) -> None:
    """Never a table scan; deliveries by their unique key's (tenant, destination, subject);
    operator actions by the messageId index, not along the tenant's whole audit chain;
    messages by their Header subject through migration 0011's index, not within the whole
    tenant. (Which index finds a 訂正 by its relatesTo is the planner's choice on a store this
    small; bench/resident_trail.py shows ``ix_messages_relates_to`` on a large one.)"""
    plans = _plans(scene)
    lines = [line for plan in plans.values() for line in plan]
    tables = re.compile(r"^SCAN (messages|deliveries|audit_records)\b|AUTOMATIC")
    assert not [line for line in lines if tables.search(line)]
    assert any("(tenant=? AND destination=? AND subject_key=?)" in line for line in lines)
    assert any("ix_messages_subject (tenant=? AND subject=?)" in line for line in lines), lines
    audit = [line for line in lines if "audit_records" in line and "head" not in line]
    assert audit and all("ix_audit_records_message_id" in line for line in audit), audit


def test_the_trail_on_both_stores(store_settings: Settings) -> None:
    """The destinations' loose index scan (a recursive query) and the look-ups on SQLite and
    PostgreSQL alike."""
    hub = Hub.open(store_settings.model_copy(update={"dispatch_workers": 0}))
    try:
        traffic = Traffic(hub, store_settings)
        first = traffic.notice(RESIDENT)
        traffic.notice(PREFIX)
        correction = traffic.notice(MOVED_TO, relates_to=first)
        with hub.store.sessions.begin() as session:
            trail = resident_trail(
                session, tenant=TOWN, resident=RESIDENT, actor="cli:test", pseudonym_key=b"k"
            )
    finally:
        hub.close()
    assert {(m.message_id, m.relation) for m in trail.messages} == {
        (first, "subject"),
        (correction, "corrected"),
    }
    assert {p.destination for p in trail.provisions if p.message_id == first} >= {"zeimu"}


def test_since_keeps_only_what_happened_after_it(scene: Scene) -> None:
    """The 支援措置 question: since the flag was set, did their data go anywhere? An older
    message is listed only for what happened to it after that moment."""
    flagged = datetime.now(UTC).isoformat()
    quiet = _trail_json("--since", flagged)
    assert (quiet["messages"], quiet["provisions"], quiet["actions"]) == ([], [], [])
    first = scene.mine["first"]
    again = ("--tenant", TOWN, "--to", "kokuho", "--reason", "再取込みのため")
    assert cli("messages", "replay", first, *again).exit_code == 0
    later = _trail_json("--since", flagged)
    assert [m["message_id"] for m in later["messages"]] == [first]
    assert [(p["destination"], p["state"]) for p in later["provisions"]] == [("kokuho", "pending")]
    assert [a["event"] for a in later["actions"]] == ["replayed"]
