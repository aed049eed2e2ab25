"""File linkage and PULL feed throughput (issue 9), each beside its baseline in the same run.

    .venv/bin/python bench/feeds_throughput.py --records 100000

1. Inbound file: a fixed-width CP932 国保資格異動通知 file of N records (header, trailer,
   distinct 宛名番号) taken from a hot folder by ``FolderWatcher.poll_once`` — frame and
   count check, the kokuho mapping, one PlatformMessage per record through every pipeline
   stage, stored and routed to zeimu and shuno, the report written. Baseline: the same N
   records, already translated and wrapped, given to ``Hub.ingest`` with the same four lanes
   (the pipeline alone, no file handling and no mapping).
2. Feed read: the N stored messages read by zeimu through ``read_feed`` in pages of 1,000
   (entitlement, horizon, conditions, the outbound hook; in process, no HTTP). Baseline: the
   same rows selected page by page in primary-key order with plain SQL.

Fresh SQLite store in a temporary directory; results as JSON on stdout.
"""

from __future__ import annotations

import argparse
import json
import shutil
import sys
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

GOLDEN = ROOT / "mappings" / "golden" / "kokuho" / "NhiEligibilityNotice.inbound.full.input.dat"


def atena(number: int) -> str:
    from bus.rules.check_digits import atena_number_check_digit

    base = str(410_000_000 + number)
    return f"{base}{atena_number_check_digit(base)}"


def nhi_file(count: int) -> bytes:
    template = GOLDEN.read_bytes().rstrip(b"\r\n")
    lines = [b"H2 20260401"]
    for number in range(1, count + 1):
        record = bytearray(template)
        record[6:21] = atena(number).ljust(15).encode("ascii")  # 宛名番号
        record[21:41] = str(80_000_000 + number).ljust(20).encode("ascii")  # 被保険者証番号
        lines.append(bytes(record))
    lines.append(b"T%09d" % count)
    return b"\r\n".join(lines) + b"\r\n"


def config(work: Path, inbox: Path) -> Path:
    directory = work / "config"
    shutil.copytree(ROOT / "samples" / "config", directory)
    path = directory / "systems.yaml"
    document = yaml.safe_load(path.read_text(encoding="utf-8"))
    for system in document["systems"]:
        if system["id"] == "kokuho":
            system["mapping"] = "kokuho.yaml"
            system["file_linkage"] = {
                "inbound": [
                    {
                        "path": str(inbox),
                        "service": "NhiEligibilityNotice",
                        "tenant": "412066",
                        "subject": "addresseeNumber",
                        "encoding": "cp932",
                    }
                ]
            }
    path.write_text(yaml.safe_dump(document, allow_unicode=True, sort_keys=False), encoding="utf-8")
    return directory


def open_hub(work: Path, name: str) -> tuple[object, Path]:
    from bus.hub import Hub
    from bus.settings import Settings

    inbox = work / name / "in"
    settings = Settings(data_dir=work / name / "data", config_dir=config(work / name, inbox))
    return Hub.open(settings), inbox


def baseline_ingest(work: Path, data: bytes, records: int) -> dict[str, float]:
    """Translate and wrap first (not timed), then time ``Hub.ingest`` alone, four lanes."""
    import zlib

    from bus.folders.inbound import read_records, record_message_id, wrap
    from bus.hub import Hub
    from bus.mapping.stage import section_for
    from bus.pipeline import Identity

    hub, _ = open_hub(work, "baseline")
    assert isinstance(hub, Hub)
    system = hub.config.current().index.system("kokuho")
    assert system is not None and system.file_linkage is not None
    folder = system.file_linkage.inbound[0]
    section = section_for(system, folder.service, "inbound")
    assert section is not None
    from datetime import UTC, datetime

    issued = datetime.now(UTC)
    lanes: list[list[bytes]] = [[] for _ in range(4)]
    for translation in read_records(data, section, folder).translations:
        assert translation.output is not None
        subject = atena(translation.number)
        message_id = record_message_id("kokuho", folder, "baseline", translation.number)
        raw = wrap(translation.output, "kokuho", folder, message_id, issued, subject)
        lanes[zlib.crc32(subject.encode()) % 4].append(raw)
    identity = Identity(frozenset({"kokuho"}), "folder")

    def run(lane: list[bytes]) -> int:
        stored = 0
        for raw in lane:
            message = hub.ingest(raw, adapter="file", identity=identity, service=folder.service)
            stored += message.ack is not None
        return stored

    start = time.perf_counter()
    with ThreadPoolExecutor(4) as pool:
        stored = sum(pool.map(run, lanes))
    seconds = time.perf_counter() - start
    hub.close()
    assert stored == records
    return {"records": stored, "seconds": seconds, "per_second": stored / seconds}


def file_end_to_end(work: Path, data: bytes, records: int) -> tuple[dict[str, float], object]:
    from bus.folders.watcher import FolderWatcher
    from bus.hub import Hub

    hub, inbox = open_hub(work, "file")
    assert isinstance(hub, Hub)
    watcher = FolderWatcher(hub)
    watcher.poll_once()
    (inbox / "NHI.dat").write_bytes(data)
    (inbox / "NHI.dat.end").write_bytes(b"")
    start = time.perf_counter()
    (moved,) = watcher.poll_once()
    seconds = time.perf_counter() - start
    report = json.loads(Path(f"{moved}.report.json").read_text(encoding="utf-8"))
    assert report["stored"] == records, report
    return {"records": records, "seconds": seconds, "per_second": records / seconds}, hub


def feed_read(hub: object, records: int) -> dict[str, float]:
    from bus.feeds import Cursor, entitlement, read_feed
    from bus.hub import Hub

    assert isinstance(hub, Hub)
    entitled = entitlement(hub.config.current().index, "zeimu", "412066", "NhiEligibilityNotice")
    cursor, read, more = Cursor.start("412066", "NhiEligibilityNotice"), 0, True
    start = time.perf_counter()
    while more:
        page = read_feed(hub.store.sessions, entitled, cursor, 1000)
        read += len(page.entries)
        cursor, more = page.next_cursor, page.more
    seconds = time.perf_counter() - start
    assert read == records, read
    return {"messages": read, "seconds": seconds, "per_second": read / seconds}


def sql_scan(hub: object, records: int) -> dict[str, float]:
    from sqlalchemy import select

    from bus.hub import Hub
    from bus.store.models import StoredMessage

    assert isinstance(hub, Hub)
    position, read = 0, 0
    start = time.perf_counter()
    with hub.store.sessions() as session:
        while True:
            rows = session.execute(
                select(StoredMessage.id, StoredMessage.message_id, StoredMessage.body)
                .where(
                    StoredMessage.tenant == "412066",
                    StoredMessage.service == "NhiEligibilityNotice",
                    StoredMessage.id > position,
                )
                .order_by(StoredMessage.id)
                .limit(1000)
            ).all()
            if not rows:
                break
            read += len(rows)
            position = rows[-1][0]
    seconds = time.perf_counter() - start
    assert read == records
    return {"messages": read, "seconds": seconds, "per_second": read / seconds}


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--records", type=int, default=100_000)
    options = parser.parse_args()
    data = nhi_file(options.records)
    with tempfile.TemporaryDirectory() as temporary:
        work = Path(temporary)
        baseline = baseline_ingest(work, data, options.records)
        inbound, hub = file_end_to_end(work, data, options.records)
        scan = sql_scan(hub, options.records)
        feed = feed_read(hub, options.records)
        hub.close()  # type: ignore[attr-defined]
    results = {
        "records": options.records,
        "inbound_file": inbound,
        "baseline_hub_ingest": baseline,
        "inbound_ratio": inbound["per_second"] / baseline["per_second"],
        "feed_read": feed,
        "baseline_sql_scan": scan,
        "feed_ratio": feed["per_second"] / scan["per_second"],
    }
    print(json.dumps(results, indent=1))


if __name__ == "__main__":
    main()
