"""Deliveries stored before a configuration change are checked against the one in force at
send time: a destination that no longer receives the service for the town (it left a shared
system, its grant was narrowed) is never sent the town's data — dead-lettered unsent as
``permanent`` with the reason in its error — and ``messages replay`` to it is refused up
front (RK-STO009). Other towns' deliveries to the same system flow on.

docs/dispatch.md (配信時の権限確認) and docs/security.md (Tenant isolation)."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from sqlalchemy import select

from bus.config.loader import parse_config_files, read_config_files
from bus.dispatch.operations import list_dead, redeliver
from bus.hub import Hub
from bus.settings import Settings
from bus.store.models import AuditRecord, Delivery, DeliveryState
from bus.store.queries import StoreQueryError, replay
from tests.test_routing_isolation import (
    KOUHOKU,
    SAMPLE_CONFIG,
    SHARED,
    TAKEO,
    Town,
    _shared_leaves,
    _with_own_system,
)


@pytest.fixture(params=["sqlite", pytest.param("postgres", marks=pytest.mark.postgres)])
def town(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Town]:
    files = _with_own_system(read_config_files(SAMPLE_CONFIG))
    parse_config_files(files)
    directory = tmp_path / "config"
    for path, text in files.items():
        (directory / path).parent.mkdir(parents=True, exist_ok=True)
        (directory / path).write_text(text, encoding="utf-8")
    url = None if request.param == "sqlite" else request.getfixturevalue("postgres_url")
    settings = Settings(
        data_dir=tmp_path / "data", config_dir=directory, dispatch_workers=0, database_url=url
    )
    hub = Hub.open(settings)
    try:
        yield Town(hub, files)
    finally:
        hub.close()


def _dead_reason(town: Town, message_id: str) -> str | None:
    with town.hub.store.sessions() as session:
        for detail in session.scalars(
            select(AuditRecord.detail).where(
                AuditRecord.message_id == message_id, AuditRecord.event == "dead"
            )
        ):
            return str(detail["reason"])
    return None


def test_narrowed_grant_dead_letters_the_town_and_keeps_the_others(town: Town) -> None:
    """武雄市's grant on the shared 国保 is narrowed while its notice waits: that delivery is
    dead-lettered unsent, 江北町's to the same system is sent, 武雄市's other destinations
    too. ``dlq list`` shows why."""
    takeo = town.notice(TAKEO).envelope.message_id  # type: ignore[union-attr]
    kouhoku = town.notice(KOUHOKU).envelope.message_id  # type: ignore[union-attr]
    town.change(_shared_leaves(TAKEO, "grant"))
    sent = town.dispatch()
    assert (SHARED, TAKEO, takeo) not in sent
    assert (SHARED, KOUHOKU, kouhoku) in sent
    assert {d for d, t, m in sent if m == takeo} == set(town.deliveries(takeo)) - {SHARED}
    state, error = town.deliveries(takeo)[SHARED]
    assert state == DeliveryState.DEAD.value
    assert error == f"no longer receives ResidentChangeNotice for tenant {TAKEO}"
    assert _dead_reason(town, takeo) == "permanent"
    with town.hub.store.sessions() as session:
        [dead] = list_dead(session, destination=SHARED)
    assert dead.message_id == takeo and dead.reason == "permanent"
    assert dead.last_error == error


def test_redelivered_dead_letter_is_checked_again(town: Town) -> None:
    """A dead letter redelivered after the town left is dead-lettered again, never sent;
    once the town joins again, a redelivery is sent."""
    takeo = town.notice(TAKEO).envelope.message_id  # type: ignore[union-attr]
    before = dict(town.files)
    town.change(_shared_leaves(TAKEO, "serves"))
    town.dispatch()
    with town.hub.store.sessions() as session:
        [pk] = session.scalars(
            select(Delivery.id).where(
                Delivery.destination == SHARED, Delivery.state == DeliveryState.DEAD.value
            )
        ).all()
    with town.hub.store.sessions.begin() as session:
        redeliver(session, [pk], reason="再送")
    assert (SHARED, TAKEO, takeo) not in town.dispatch()
    assert town.deliveries(takeo)[SHARED][0] == DeliveryState.DEAD.value
    town.change(lambda _: before)  # the town joins the shared system again
    with town.hub.store.sessions.begin() as session:
        redeliver(session, [pk], reason="再送")
    assert (SHARED, TAKEO, takeo) in town.dispatch()


def test_replay_is_refused_up_front(town: Town) -> None:
    """``messages replay`` to a system that no longer receives for the town adds nothing
    (RK-STO009, naming it); to every destination at once likewise; ``--to`` another one is
    replayed."""
    takeo = town.notice(TAKEO).envelope.message_id  # type: ignore[union-attr]
    town.dispatch()
    town.change(_shared_leaves(TAKEO, "serves"))
    with town.hub.store.sessions() as session:
        count = len(session.scalars(select(Delivery.id)).all())
    for to in (SHARED, None):
        with pytest.raises(StoreQueryError) as refused:
            replay(town.hub.store.sessions, takeo, reason="再送", tenant=TAKEO, to=to)
        assert refused.value.finding.code == "RK-STO009"
        assert refused.value.finding.message_en.startswith(
            f"{SHARED} no longer receives ResidentChangeNotice for tenant {TAKEO}"
        )
    with town.hub.store.sessions() as session:
        assert len(session.scalars(select(Delivery.id)).all()) == count
    other = sorted(set(town.deliveries(takeo)) - {SHARED})[0]
    report = replay(town.hub.store.sessions, takeo, reason="再送", tenant=TAKEO, to=other)
    assert [d for d, _ in report.deliveries] == [other]
    assert (other, TAKEO, takeo) in town.dispatch()
