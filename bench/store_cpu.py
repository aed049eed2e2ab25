"""CPU per message of the Store stage alone, beside the stages before it and the whole of
``Hub.ingest_many`` / ``Hub.ingest``, in one process (issues 4 and 6).

    .venv/bin/python bench/store_cpu.py --messages 3000 --group 100 [--postgres]

A hub on a temp SQLite file (or a scratch PostgreSQL database) with the sample configuration,
住民異動通知 routed to three subscribers (no workers run: only the ingest side is measured).
Each figure is process CPU (``time.process_time``) per message over ``--messages`` fresh
messages of ``bench/hub_fixtures.corpus``:

* **pre-store**: Authenticate … Route of every message (the baseline: no store writes);
* **store**: ``StoreStage.store_many`` of the routed messages in groups of ``--group``
  (``Incoming`` with its content digest, the grouped statements, the commit);
* **resend**: the same groups again (every message a duplicate: key look-up, original acks);
* **store1**: the Store stage called per message, as ``Hub.ingest`` calls it from one thread
  (every message its own transaction);
* **ingest_many**: ``Hub.ingest_many`` of fresh messages in groups of ``--group``, end to end;
* **ingest**: ``Hub.ingest`` one message at a time (a group of one per commit).

Run it with ``PYTHONPATH`` pointing at another tree to compare (the bench file stays this one).
"""

from __future__ import annotations

import argparse
import gc
import os
import sys
import tempfile
import time
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager, nullcontext
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
import hub_fixtures as fx

from bus.hub import Hub
from bus.pipeline import Message, StageName
from bus.settings import Settings
from bus.store.ingest import StoreStage

PORTS = {name: 19_601 + i for i, name in enumerate(fx.SUBSCRIBERS)}


def _cpu(action: Callable[[], object]) -> float:
    """Process CPU seconds of ``action``. The corpus and the routed messages this bench holds
    (thousands of parsed documents a hub would not keep) are frozen out of the garbage
    collector first, so its collections do not charge their scans to whichever phase runs."""
    gc.collect()
    gc.freeze()
    started = time.process_time()
    action()
    return time.process_time() - started


def _groups(items: Sequence[bytes], size: int) -> Iterator[Sequence[bytes]]:
    for start in range(0, len(items), size):
        yield items[start : start + size]


def _pre_store(hub: Hub, bodies: Sequence[bytes]) -> list[Message]:
    stages = hub.pipeline.stages
    at_store = [stage.name for stage in stages].index(StageName.STORE)
    done = []
    for body in bodies:
        message = Message(raw=body, adapter="bench", source_address="127.0.0.1")
        for stage in stages[:at_store]:
            message = stage(message)
        assert not message.rejected, message.findings
        done.append(message)
    return done


@contextmanager
def _hub(directory: Path, url: str | None) -> Iterator[Hub]:
    config = fx.config_dir(directory, PORTS)
    settings = Settings(data_dir=directory / "data", config_dir=config, database_url=url)
    hub = Hub.open(settings)
    try:
        yield hub
    finally:
        hub.close()


def run(messages: int, group: int, url: str | None) -> dict[str, float]:
    bodies = fx.corpus(5 * messages + 2)
    with tempfile.TemporaryDirectory() as scratch, _hub(Path(scratch), url) as hub:
        store = hub.pipeline.stages[[s.name for s in hub.pipeline.stages].index(StageName.STORE)]
        assert isinstance(store, StoreStage)
        hub.ingest_many(bodies[-2:], adapter="bench", source_address="127.0.0.1")  # warm up
        routed: list[Message] = []
        figures = {"pre-store": _cpu(lambda: routed.extend(_pre_store(hub, bodies[:messages])))}
        resent = _pre_store(hub, bodies[:messages])
        chunks = [routed[i : i + group] for i in range(0, messages, group)]
        figures["store"] = _cpu(lambda: [store.store_many(chunk) for chunk in chunks])
        assert all(m.ack is not None and not m.ack.duplicate for m in routed)
        again = [resent[i : i + group] for i in range(0, messages, group)]
        figures["resend"] = _cpu(lambda: [store.store_many(chunk) for chunk in again])
        assert all(m.ack is not None and m.ack.duplicate for m in resent)
        alone = _pre_store(hub, bodies[3 * messages : 4 * messages])
        figures["store1"] = _cpu(lambda: [store(message) for message in alone])
        assert all(m.ack is not None and not m.ack.duplicate for m in alone)
        fresh = bodies[messages : 2 * messages]
        figures["ingest_many"] = _cpu(
            lambda: [
                hub.ingest_many(chunk, adapter="bench", source_address="127.0.0.1")
                for chunk in _groups(fresh, group)
            ]
        )
        single = bodies[2 * messages : 3 * messages]
        figures["ingest"] = _cpu(
            lambda: [hub.ingest(b, adapter="bench", source_address="127.0.0.1") for b in single]
        )
        assert fx.chains_verify(hub.store.sessions)
    return {name: seconds * 1000 / messages for name, seconds in figures.items()}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--messages", type=int, default=2000)
    parser.add_argument("--group", type=int, default=100)
    parser.add_argument("--postgres", action="store_true", help="a scratch PostgreSQL database")
    args = parser.parse_args()
    database = fx.postgres_database("store_cpu") if args.postgres else nullcontext(None)
    with database as url:
        figures = run(args.messages, args.group, url)
    where = "PostgreSQL" if args.postgres else "SQLite"
    print(
        f"{where} messages={args.messages} group={args.group} load={os.getloadavg()[0]:.2f} "
        + " ".join(f"{name}={ms:.3f}" for name, ms in figures.items())
        + "  (CPU ms per message)"
    )


if __name__ == "__main__":
    main()
