"""A system replacement (システム更改): 国保's vendor is switched at a cutover while it has
pending deliveries and dead letters. Real receivers on 127.0.0.1 play the old system (the
recording receiver, a subprocess) and the new one (a capture server keeping the bodies), the
configuration is changed with the real ``renkei config apply``, the operator's steps are the
real ``destinations pause/resume`` and ``dlq`` commands, and an in-process worker sends on
the configuration in force (as ``renkei serve`` does)."""

from __future__ import annotations

import shutil
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml
from lxml import etree
from sqlalchemy import select
from typer.testing import CliRunner

from bus.cli import app
from bus.config.snapshots import ConfigProvider
from bus.dispatch import operations
from bus.dispatch.worker import Worker
from bus.settings import Settings
from bus.store.db import Store, open_store
from bus.store.models import Delivery
from tests.support.capture_server import CaptureServer
from tests.support.receivers import Receiver, config_dir_for, receiver_factory
from tests.test_store import accepted, sample, stage

ROOT = Path(__file__).resolve().parent.parent
NEW_FORMAT = b"urn:example:tainou:1"  # the new vendor's own XML (a copy of tainou's mapping)

receivers = pytest.fixture(receiver_factory, name="receivers")


@pytest.fixture
def hub_store(data_dir: Path) -> Iterator[Store]:
    opened = open_store(Settings(data_dir=data_dir))
    yield opened
    opened.close()


@pytest.fixture
def new_system() -> Iterator[CaptureServer]:
    server = CaptureServer().start()
    yield server
    server.stop()


def _cli(*args: str) -> Any:
    result = CliRunner().invoke(app, list(args))
    assert result.exit_code == 0, result.output
    return result


def _ingest(hub_store: Store, subject: str, seed: int, message_id: str | None = None) -> str:
    """A 住民異動通知 accepted and stored with one delivery, to kokuho; its messageId."""
    root = etree.fromstring(sample("ResidentChangeNotice", seed))
    message_id = message_id or str(uuid.uuid4())
    for name, value in (("messageId", message_id), ("subject", subject)):
        element = root.find(f".//{{*}}{name}")
        assert element is not None
        element.text = value
    raw = etree.tostring(root, xml_declaration=True, encoding="UTF-8")
    stage(hub_store)(accepted(raw, ("kokuho",)))
    return message_id


def _worker(hub_store: Store) -> Callable[[], None]:
    provider = ConfigProvider(hub_store.sessions, poll_seconds=0.0)
    worker = Worker(hub_store.sessions, lambda: provider.current().index, None, "w")

    def drain() -> None:
        for _ in range(20):
            if not worker.run_once():
                return

    return drain


def _new_config(tmp_path: Path, current: Path, url: str, system_id: str = "kokuho") -> Path:
    """``current`` with kokuho replaced by the new vendor's system: another endpoint and a
    mapping file of its own (absolute path, tables beside it); a new id when ``system_id``
    differs (routes and access follow it)."""
    mappings = tmp_path / "vendor-mappings"
    shutil.copytree(ROOT / "mappings" / "tables", mappings / "tables")
    text = (ROOT / "mappings" / "tainou.yaml").read_text(encoding="utf-8")
    mapping = mappings / "kokuho_new.yaml"
    mapping.write_text(text.replace("system: tainou", f"system: {system_id}"), encoding="utf-8")
    directory = tmp_path / f"config-{system_id}"
    shutil.copytree(current, directory)
    path = directory / "systems.yaml"
    document = yaml.safe_load(path.read_text(encoding="utf-8"))
    for system in document["systems"]:
        if system["id"] == "kokuho":
            system.update(id=system_id, mapping=str(mapping))
            system["endpoint"]["url"] = url
    path.write_text(yaml.safe_dump(document, allow_unicode=True, sort_keys=False), "utf-8")
    for name in ("routes.yaml", "access.yaml") if system_id != "kokuho" else ():
        path = directory / name
        text = path.read_text(encoding="utf-8")
        path.write_text(text.replace("system: kokuho\n", f"system: {system_id}\n"), "utf-8")
    return directory


def _subjects(bodies: list[bytes]) -> list[tuple[str, str]]:
    """(subject, messageId) of each body received, in arrival order."""
    found = []
    for body in bodies:
        root = etree.fromstring(body)
        found.append((root.findtext(".//{*}subject") or "", root.findtext(".//{*}messageId") or ""))
    return found


@pytest.mark.slow
def test_same_id_cutover_sends_the_backlog_and_dead_letters_to_the_new_system_only(
    tmp_path: Path,
    data_dir: Path,
    hub_store: Store,
    receivers: Callable[[str], Receiver],
    new_system: CaptureServer,
) -> None:
    """The runbook: pause, apply the new endpoint and mapping under the same id (warned with
    the counts, RK-OPS027), resume, redeliver. The old system gets nothing after the pause;
    the new one gets the backlog once each, in order per subject, in its own format."""
    poison = str(uuid.uuid4())
    old = receivers("kokuho").start("--fail-message-ids", poison)
    config = config_dir_for(tmp_path, {"kokuho": old.port})
    _cli("config", "apply", str(config))  # version 1, and its .renkei-base
    drain = _worker(hub_store)
    first = _ingest(hub_store, "S1", 1)
    _ingest(hub_store, "S2", 2, poison)  # refused by the old system (400): a dead letter
    drain()
    with hub_store.sessions() as session:
        dead_id = session.scalars(select(Delivery.id).where(Delivery.state == "dead")).one()
    assert old.applied() == [first]
    _cli("destinations", "pause", "kokuho", "--reason", "国保システム更改")
    backlog = [_ingest(hub_store, subject, seed) for seed, subject in enumerate("ABAB", 10)]
    follower = _ingest(hub_store, "S2", 20)  # waits behind the dead letter of its subject
    url = f"http://127.0.0.1:{new_system.port}/kokuho"
    applied = _cli("config", "apply", str(_new_config(tmp_path, config, url)))
    assert "applied: configuration version 2" in applied.stdout
    assert "RK-OPS027" in applied.stderr and "endpoint url" in applied.stderr
    assert "Its 5 pending deliveries" in applied.stderr and "its 1 dead letters" in applied.stderr
    assert "RK-OPS028" not in applied.stderr
    _cli("destinations", "resume", "kokuho")
    drain()
    _cli("dlq", "redeliver", str(dead_id), "--reason", "新システムへ再送")
    drain()
    assert old.applied() == [first]  # nothing more after the cutover
    received = _subjects(new_system.received("/kokuho"))
    assert sorted(mid for _, mid in received) == sorted([*backlog, poison, follower])  # once
    order = {s: [mid for subject, mid in received if subject == s] for s in ("A", "B", "S2")}
    assert order == {"A": backlog[0::2], "B": backlog[1::2], "S2": [poison, follower]}
    assert all(NEW_FORMAT in body for body in new_system.received("/kokuho"))


def test_apply_warns_of_a_new_endpoint_with_the_backlog_and_whether_it_was_paused(
    tmp_path: Path, data_dir: Path, hub_store: Store
) -> None:
    """The light sibling of the cutover above: ``config apply`` names a system whose
    endpoint or mapping changes while it has pending or dead deliveries, with the counts;
    RK-OPS028 (the old system may still get a send under way) when it is not paused."""
    config = config_dir_for(tmp_path, {"kokuho": 9})
    _cli("config", "apply", str(config))
    for seed, subject in enumerate("ABA"):
        _ingest(hub_store, subject, seed + 1)
    with hub_store.sessions.begin() as session:  # one of them dead-lettered meanwhile
        row = session.scalars(select(Delivery).where(Delivery.subject_key == "B")).one()
        row.state, row.last_error = "dead", "HTTP 503 Service Unavailable"
    new = _new_config(tmp_path, config, "http://127.0.0.1:10/kokuho")
    unpaused = _cli("config", "apply", str(new))
    assert "RK-OPS028" in unpaused.stderr and "RK-OPS027" not in unpaused.stderr
    assert "Its 2 pending deliveries" in unpaused.stderr and "Its 1 dead" in unpaused.stderr
    assert "mapping - → " in unpaused.stderr and "127.0.0.1:10" not in unpaused.stderr
    with hub_store.sessions.begin() as session:
        operations.pause(session, "kokuho", reason="更改", actor="test")
    (new / "systems.yaml").write_text(
        (new / "systems.yaml").read_text("utf-8").replace(":10/kokuho", ":11/kokuho"), "utf-8"
    )
    paused = _cli("config", "apply", str(new))
    assert "RK-OPS027" in paused.stderr and "RK-OPS028" not in paused.stderr
    assert "destinations resume kokuho" in paused.stderr


def test_apply_says_nothing_when_the_endpoint_stays(
    tmp_path: Path, data_dir: Path, hub_store: Store
) -> None:
    config = config_dir_for(tmp_path, {"kokuho": 9})
    _cli("config", "apply", str(config))
    _ingest(hub_store, "A", 1)
    changed = config_dir_for(tmp_path, {"kokuho": 9}, retry={"max_attempts": 3}, name="config")
    result = _cli("config", "apply", str(changed))
    assert "applied: configuration version 2" in result.stdout
    assert "RK-OPS027" not in result.stderr and "RK-OPS028" not in result.stderr


def test_a_new_system_id_dead_letters_the_old_ids_backlog_unsent(
    tmp_path: Path, data_dir: Path, hub_store: Store
) -> None:
    """Replacing kokuho by a system with another id: the old id's deliveries are not moved.
    Each subject's first one is dead-lettered unsent (permanent) when its turn comes, the
    later ones wait behind it; RK-OPS006 says so at apply time (it said they were retried
    and dead-lettered once the retry policy was spent)."""
    config = config_dir_for(tmp_path, {"kokuho": 9})
    _cli("config", "apply", str(config))
    for seed, subject in enumerate("ABA"):
        _ingest(hub_store, subject, seed + 1)
    new = _new_config(tmp_path, config, "http://127.0.0.1:10/kokuho2", system_id="kokuho2")
    applied = _cli("config", "apply", str(new))
    assert "RK-OPS006" in applied.stderr and "kokuho: 3" in applied.stderr
    assert "dead-lettered unsent" in applied.stderr and "dlq redeliver" in applied.stderr
    _worker(hub_store)()
    with hub_store.sessions() as session:
        rows = session.scalars(select(Delivery).order_by(Delivery.id)).all()
        states = [(r.subject_key, r.state, r.last_error) for r in rows]
    gone = "no longer receives ResidentChangeNotice for tenant 412066"
    assert states == [("A", "dead", gone), ("B", "dead", gone), ("A", "pending", None)]


def test_a_round_under_way_sends_on_the_configuration_in_force_at_each_send(
    tmp_path: Path,
    data_dir: Path,
    hub_store: Store,
    receivers: Callable[[str], Receiver],
    new_system: CaptureServer,
) -> None:
    """Applied without a pause while a round is sending to a slow old system: each send
    takes the endpoint in force when it starts, so the old system gets at most the one send
    under way at the apply (the round's configuration was read once: the rest of the round,
    5 of 6 here, reached the old system after the apply)."""
    old = receivers("kokuho").start("--delay", "0.25")
    config = config_dir_for(tmp_path, {"kokuho": old.port})
    _cli("config", "apply", str(config))
    for seed in range(6):
        _ingest(hub_store, f"S{seed}", seed + 1)
    provider = ConfigProvider(hub_store.sessions, poll_seconds=0.0)
    worker = Worker(
        hub_store.sessions, lambda: provider.current().index, None, "w", send_concurrency=1
    )
    sending = threading.Thread(target=worker.run_once)
    sending.start()
    time.sleep(0.3)
    url = f"http://127.0.0.1:{new_system.port}/kokuho"
    _cli("config", "apply", str(_new_config(tmp_path, config, url)))
    applied_at = time.time()
    sending.join()
    after = [r for r in old.records() if r["receivedAt"] > applied_at]
    assert len(after) <= 1, after
    assert len(old.records()) + len(new_system.received("/kokuho")) == 6
