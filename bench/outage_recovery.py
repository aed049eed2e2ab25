"""Recovery after a week-long outage of one destination (docs/operations.md,
長期停止からの復旧（大量の再送）), played for real on an embedded hub (SQLite in a temp dir):

1. a week of 住民異動通知 is stored (as the Store stage does) for two destinations: zeimu
   (healthy: delivered) and tainou (down: each resident's first message dead-lettered by
   ``attempts`` at some time in the week, that resident's later messages pending behind it);
2. tainou is paused, ``renkei dlq redeliver --all --destination tainou`` is timed (wall, peak
   RSS, progress lines), optionally only a time window (``--dead-since``);
3. ``renkei serve`` runs with two real HTTP receivers (subprocesses of this script that record
   arrival time and requests in flight); ``destinations resume tainou`` starts the drain and,
   meanwhile, a new juki message is POSTed every 0.5 s and its latency to zeimu measured;
4. checks: every tainou delivery applied once, per-resident order kept (arrival order = store
   sequence), peak requests in flight at tainou and its busiest second.

Run: ``.venv/bin/python bench/outage_recovery.py [--dead 50000] [--followers 8000]``.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
import time
from collections import Counter, defaultdict
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
RENKEI = str(Path(sys.executable).parent / "renkei")
HUB_PORT, TAINOU_PORT, ZEIMU_PORT = 18440, 18441, 18442
SUBJECT = re.compile(rb"<env:subject>([^<]+)</env:subject>")


def atena(number: int) -> bytes:
    """A valid 宛名番号 (modulus-11 check digit) made from ``number``."""
    from bus.samplegen.values import atena_number_check_digit

    base = f"{number:09d}"
    return (base + str(atena_number_check_digit(base))).encode()


# --- a receiver that records arrival times and requests in flight -------------------------


def run_receiver(port: int, log: Path, delay: float, hold: str = "") -> None:
    """``hold`` ``"from,to,seconds"``: between ``from`` and ``to`` seconds after the first
    request, answer 503 with ``Retry-After: seconds`` (the vendor choking mid-drain)."""
    inflight = 0
    handle = log.open("a", encoding="utf-8")
    first: list[float] = []
    hold_from, hold_to, retry_after = (float(v) for v in hold.split(",")) if hold else (0, 0, 0)

    async def serve(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        nonlocal inflight
        try:
            while True:
                head = await reader.readuntil(b"\r\n\r\n")
                headers = {}
                for line in head.decode("latin-1").split("\r\n")[1:]:
                    if ":" in line:
                        name, value = line.split(":", 1)
                        headers[name.strip().lower()] = value.strip()
                await reader.readexactly(int(headers.get("content-length", "0")))
                began = time.time()
                if not first:
                    first.append(began)
                if hold_from <= began - first[0] < hold_to:
                    handle.write(json.dumps({"refused": began}) + "\n")
                    writer.write(
                        b"HTTP/1.1 503 Service Unavailable\r\ncontent-length: 0\r\n"
                        b"retry-after: %d\r\n\r\n" % retry_after
                    )
                    await writer.drain()
                    continue
                inflight += 1
                peak = inflight
                if delay:
                    await asyncio.sleep(delay)
                record = {
                    "id": headers.get("renkei-message-id"),
                    "at": began,
                    "inflight": peak,
                }
                handle.write(json.dumps(record) + "\n")
                handle.flush()
                inflight -= 1
                writer.write(b"HTTP/1.1 200 OK\r\ncontent-length: 0\r\n\r\n")
                await writer.drain()
        except (asyncio.IncompleteReadError, ConnectionError):
            writer.close()

    async def main() -> None:
        server = await asyncio.start_server(serve, "127.0.0.1", port, backlog=512)
        async with server:
            await server.serve_forever()

    asyncio.run(main())


# --- the hub's configuration and a week of traffic -----------------------------------------


def config_dir(directory: Path) -> Path:
    import yaml

    target = directory / "config"
    shutil.copytree(ROOT / "samples" / "config", target)
    systems_path = target / "systems.yaml"
    systems = yaml.safe_load(systems_path.read_text(encoding="utf-8"))
    for system in systems["systems"]:
        port = {"tainou": TAINOU_PORT, "zeimu": ZEIMU_PORT}.get(system["id"])
        if port:
            url = f"http://127.0.0.1:{port}/{system['id']}"
            system["endpoint"] = {"transport": "http", "url": url, "timeout_seconds": 10}
    systems_path.write_text(yaml.safe_dump(systems, allow_unicode=True), encoding="utf-8")
    routes_path = target / "routes.yaml"
    routes = yaml.safe_load(routes_path.read_text(encoding="utf-8"))
    for route in routes["routes"]:
        if route["service"] == "ResidentChangeNotice":
            route["subscribers"] = [{"system": "zeimu"}, {"system": "tainou"}]
    routes_path.write_text(yaml.safe_dump(routes, allow_unicode=True), encoding="utf-8")
    return target


def week_of_traffic(dead: int, followers: int) -> list[bytes]:
    """``dead`` residents' first message, then ``followers`` later messages of the first
    residents (a resident's 2nd change in the week); each resident its own 宛名番号."""
    sys.path.insert(0, str(ROOT / "bench"))
    import hub_fixtures as fx

    base = fx.corpus(600, distinct=600)
    bodies = []
    for i in range(dead + followers):
        resident = i if i < dead else i - dead
        body = base[resident % len(base)]
        old = SUBJECT.search(body)
        assert old is not None
        new = atena(900_000_000 + resident)
        bodies.append(fx.renumber(body.replace(old.group(1), new)))
    return bodies


def prefill(sessions: Any, bodies: list[bytes], dead: int, week_ago: datetime) -> None:
    """Store the week as ingest does, then as dispatch would have left it: zeimu delivered,
    tainou's first message per resident dead by ``attempts`` (with its ``dead`` audit record),
    the later ones pending behind it."""
    sys.path.insert(0, str(ROOT / "bench"))
    import hub_fixtures as fx
    from sqlalchemy import select, update

    from bus.store.audit import append_audit
    from bus.store.ingest import store_incoming
    from bus.store.models import Delivery, StoredMessage

    step = timedelta(days=7) / len(bodies)
    for start in range(0, len(bodies), 500):
        with sessions.begin() as session:
            for offset, body in enumerate(bodies[start : start + 500]):
                at = week_ago + step * (start + offset)
                incoming = fx.incoming(body, at, ("zeimu", "tainou"))
                store_incoming(session, incoming, now=at)
    with sessions.begin() as session:
        session.execute(
            update(Delivery)
            .where(Delivery.destination == "zeimu")
            .values(state="delivered", attempts=1)
        )
    heads = []
    with sessions() as session:
        rows = session.execute(
            select(Delivery.id, Delivery.tenant, Delivery.created_at, StoredMessage.message_id)
            .join(StoredMessage, StoredMessage.id == Delivery.message_pk)
            .where(Delivery.destination == "tainou")
            .order_by(Delivery.id)
            .limit(dead)
        ).all()
        heads = [tuple(r) for r in rows]
    for start in range(0, len(heads), 1000):
        with sessions.begin() as session:
            for delivery, tenant, created, message_id in heads[start : start + 1000]:
                died = created + timedelta(minutes=30)
                session.execute(
                    update(Delivery)
                    .where(Delivery.id == delivery)
                    .values(
                        state="dead",
                        attempts=12,
                        first_attempt_at=created,
                        finished_at=died,
                        last_error="HTTP 503 Service Unavailable",
                    )
                )
                append_audit(
                    session,
                    tenant=tenant,
                    event="dead",
                    message_id=message_id,
                    detail={"delivery": delivery, "destination": "tainou", "reason": "attempts"},
                )


# --- the run --------------------------------------------------------------------------------


def cli(env: dict[str, str], *args: str) -> tuple[float, float, str, str]:
    """Run ``renkei ARGS``: (wall seconds, peak RSS MiB of that process, stdout, stderr)."""
    rss_file = Path(tempfile.mktemp(prefix="renkei-rss-"))
    command = ["/usr/bin/time", "-o", str(rss_file), "-f", "%M", RENKEI, *args]
    started = time.monotonic()
    done = subprocess.run(command, env=env, capture_output=True, text=True, check=False)
    wall = time.monotonic() - started
    if done.returncode:
        raise SystemExit(f"renkei {' '.join(args)}: {done.returncode}\n{done.stderr}")
    rss = int(rss_file.read_text().split()[-1]) / 1024
    rss_file.unlink()
    return wall, rss, done.stdout, done.stderr


def records(log: Path) -> list[dict[str, Any]]:
    if not log.exists():
        return []
    return [json.loads(line) for line in log.read_text().splitlines() if line.strip()]


def main() -> None:
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("--dead", type=int, default=50_000)
    parser.add_argument("--followers", type=int, default=8_000)
    parser.add_argument("--delay", type=float, default=0.0, help="tainou's answer time (s)")
    parser.add_argument("--database-url", default="", help="PostgreSQL (default: SQLite)")
    parser.add_argument("--redeliver-args", default="", help="extra `dlq redeliver` options")
    parser.add_argument("--per-second", default="", help="paced redelivery and resume")
    parser.add_argument("--port-base", type=int, default=18440)
    parser.add_argument(
        "--hold", default="", help="tainou answers 503 Retry-After: 'from,to,seconds'"
    )
    parser.add_argument("--receiver", nargs="+", help=argparse.SUPPRESS)
    args = parser.parse_args()
    global HUB_PORT, TAINOU_PORT, ZEIMU_PORT
    HUB_PORT, TAINOU_PORT, ZEIMU_PORT = args.port_base, args.port_base + 1, args.port_base + 2
    paced = ["--per-second", args.per_second] if args.per_second else []
    if args.receiver:
        port, log, delay, *hold = args.receiver
        run_receiver(int(port), Path(log), float(delay), "".join(hold))
        return
    directory = Path(tempfile.mkdtemp(prefix="renkei-outage-"))
    config = config_dir(directory)
    env = os.environ | {
        "RENKEI_DATA_DIR": str(directory / "data"),
        "RENKEI_CONFIG_DIR": str(config),
    }
    if args.database_url:
        env["RENKEI_DATABASE_URL"] = args.database_url
    os.environ.update(env)
    from sqlalchemy import func, select

    from bus.config.snapshots import ensure_config
    from bus.dispatch import operations
    from bus.settings import Settings
    from bus.store.db import open_store
    from bus.store.models import Delivery, StoredMessage

    settings = Settings()
    store = open_store(settings)
    ensure_config(store.sessions, settings)
    bodies = week_of_traffic(args.dead, args.followers)
    started = time.monotonic()
    week_ago = datetime.now(UTC) - timedelta(days=7)
    prefill(store.sessions, bodies, args.dead, week_ago)
    print(f"prefill: {len(bodies):,} messages in {time.monotonic() - started:.1f} s")
    with store.sessions.begin() as session:
        operations.pause(session, "tainou", reason="bench: outage", actor="bench")

    wall, rss, out, _ = cli(env, "destinations", "list")
    print(f"destinations list: {wall:.2f} s, {rss:.0f} MiB\n{out}")
    wall, rss, out, _ = cli(env, "dlq", "list", "--destination", "tainou", "--limit", "1000")
    print(f"dlq list --limit 1000: {wall:.2f} s, peak RSS {rss:.0f} MiB")
    extra = args.redeliver_args.split()
    wall, rss, out, err = cli(
        env,
        "dlq",
        "redeliver",
        "--all",
        "--destination",
        "tainou",
        *extra,
        *paced,
        "--reason",
        "滞納管理システム復旧後に再送",
    )
    lines = err.strip().splitlines()
    print(
        f"dlq redeliver --all: {wall:.1f} s, peak RSS {rss:.0f} MiB, {len(lines)} progress "
        f"lines; last: {lines[-1] if lines else ''}\n  {out.strip()}"
    )

    logs = {name: directory / f"{name}.jsonl" for name in ("tainou", "zeimu")}
    receivers = [
        subprocess.Popen(
            [
                sys.executable,
                __file__,
                "--receiver",
                str(port),
                str(logs[name]),
                str(args.delay if name == "tainou" else 0),
                args.hold if name == "tainou" else "",
            ]
        )
        for name, port in (("tainou", TAINOU_PORT), ("zeimu", ZEIMU_PORT))
    ]
    hub = subprocess.Popen(
        [RENKEI, "serve", "--no-samples", "--port", str(HUB_PORT)],
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=open(directory / "serve.log", "w"),  # noqa: SIM115
    )
    import httpx

    try:
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            try:
                if httpx.get(f"http://127.0.0.1:{HUB_PORT}/healthz").status_code == 200:
                    break
            except httpx.HTTPError:
                time.sleep(0.2)
        with store.sessions() as session:
            pending = session.scalar(
                select(func.count()).where(
                    Delivery.destination == "tainou", Delivery.state == "pending"
                )
            )
        print(f"tainou pending before resume: {pending:,}")
        cli(env, "destinations", "resume", "tainou", *paced, "--reason", "復旧確認済み")
        resumed = time.time()
        latencies = []
        sys.path.insert(0, str(ROOT / "bench"))
        import hub_fixtures as fx

        template = bodies[0]
        sent: dict[str, float] = {}
        progress = []
        while True:
            body = fx.renumber(
                template.replace(SUBJECT.search(template).group(1), atena(800_000_000 + len(sent)))  # type: ignore[union-attr]
            )
            message_id = fx.header_value(body, "messageId")
            sent[message_id] = time.time()
            answer = httpx.post(
                f"http://127.0.0.1:{HUB_PORT}/api/v1/messages/ResidentChangeNotice",
                content=body,
                headers={"content-type": "application/xml"},
                timeout=30,
            )
            if answer.status_code != 202:
                raise SystemExit(f"ingest: {answer.status_code} {answer.text[:600]}")
            time.sleep(0.5)
            with store.sessions() as session:
                left = session.scalar(
                    select(func.count()).where(
                        Delivery.destination == "tainou", Delivery.state == "pending"
                    )
                )
            progress.append((time.time() - resumed, left))
            if not left or time.time() - resumed > 900:
                break
        drained = time.time() - resumed
        time.sleep(1.5)
        zeimu = {r["id"]: r["at"] for r in records(logs["zeimu"])}
        latencies = sorted(zeimu[m] - t for m, t in sent.items() if m in zeimu)
        answered = records(logs["tainou"])
        tainou = [r for r in answered if "id" in r]
        refused = [r["refused"] for r in answered if "refused" in r]
    finally:
        hub.terminate()
        hub.wait(30)
        for receiver in receivers:
            receiver.terminate()
    # checks
    counts = Counter(r["id"] for r in tainou)
    with store.sessions() as session:
        states = dict(
            session.execute(
                select(Delivery.state, func.count())
                .where(Delivery.destination == "tainou")
                .group_by(Delivery.state)
            ).all()
        )
        order = session.execute(
            select(
                StoredMessage.message_id, Delivery.tenant, Delivery.subject_key, Delivery.sequence
            )
            .join(StoredMessage, StoredMessage.id == Delivery.message_pk)
            .where(Delivery.destination == "tainou")
        ).all()
    arrived = {}
    for r in tainou:
        arrived.setdefault(r["id"], r["at"])
    per_subject: dict[tuple[str, str], list[tuple[int, float]]] = defaultdict(list)
    for message_id, tenant, subject, sequence in order:
        if message_id in arrived:
            per_subject[(tenant, subject)].append((sequence, arrived[message_id]))
    disorder = sum(
        1
        for items in per_subject.values()
        for a, b in zip(sorted(items), sorted(items)[1:], strict=False)
        if b[1] < a[1]
    )
    per_second = Counter(int(r["at"] - resumed) for r in tainou)
    print(
        f"drain: {len(arrived):,} tainou messages in {drained:.1f} s "
        f"({len(arrived) / max(drained, 1e-9):,.0f}/s); states {states}"
    )
    print(
        f"  resends {sum(c - 1 for c in counts.values())}, out of order {disorder}, "
        f"peak in flight at tainou {max((r['inflight'] for r in tainou), default=0)}, "
        f"busiest second {max(per_second.values(), default=0)} requests"
    )
    if refused:
        after_hold = Counter(int(r["at"] - max(refused)) for r in tainou if r["at"] > max(refused))
        print(
            f"  503 Retry-After answered {len(refused)} times; after the hold: busiest second "
            f"{max(after_hold.values(), default=0)} requests"
        )
    if latencies:
        mid = latencies[len(latencies) // 2]
        print(
            f"  new juki→zeimu during the drain: {len(latencies)} messages, median "
            f"{mid * 1000:.0f} ms, max {latencies[-1] * 1000:.0f} ms"
        )
    print(
        "  progress (s, tainou pending): "
        + ", ".join(f"{t:.0f}:{left}" for t, left in progress[:: max(1, len(progress) // 10)])
    )
    store.close()
    print(f"(kept: {directory})")


if __name__ == "__main__":
    main()
