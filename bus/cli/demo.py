"""``renkei demo``: sends sample traffic to a running hub and prints each message's trace.

It talks to the hub only over HTTP (``POST /api/v1/messages/{Service}``), as a connected
system would, then follows each message in the Message Store the hub writes (the same
``RENKEI_DATA_DIR`` / ``RENKEI_DATABASE_URL``): received → routed → delivered per destination.
The sample traffic is a 住民異動通知 (国内転出) from 住民記録 and a 宛名照会 from 滞納管理 that
住民記録 answers.
"""

from __future__ import annotations

import ipaddress
import time
import uuid
from datetime import datetime
from typing import Annotated, Any

import httpx
import typer
from lxml import etree

from bus.catalogue import NS_ENVELOPE, NS_SERVICE, NS_STANDARD
from bus.cli.app import app
from bus.settings import Settings
from bus.store.db import open_store
from bus.store.queries import MessageDetail, StoreQueryError, show_message
from bus.wareki import JST

DEMO_TOWN = "412066"  # 武雄市
DEMO_RESIDENT = "100000000000008"  # in the 住民記録 sample's own data
FINAL_STATES = frozenset({"delivered", "dead", "discarded"})


def demo_message(
    service: str, sender: str, items: list[tuple[str, str]], subject: str | None
) -> bytes:
    """A PlatformMessage from ``sender`` with a fresh messageId."""
    env, std = f"{{{NS_ENVELOPE}}}", f"{{{NS_STANDARD}}}"
    root = etree.Element(
        f"{env}PlatformMessage", nsmap={"env": NS_ENVELOPE, "svc": NS_SERVICE, "std": NS_STANDARD}
    )
    header = etree.SubElement(root, f"{env}Header")
    etree.SubElement(header, f"{env}messageId").text = str(uuid.uuid4())
    ref = etree.SubElement(header, f"{env}service")
    etree.SubElement(ref, f"{env}name").text = service
    etree.SubElement(ref, f"{env}version").text = "1.0"
    client = etree.SubElement(header, f"{env}client")
    etree.SubElement(client, f"{env}tenant").text = DEMO_TOWN
    etree.SubElement(client, f"{env}system").text = sender
    if subject:
        etree.SubElement(header, f"{env}subject").text = subject
    etree.SubElement(header, f"{env}issuedAt").text = datetime.now(JST).isoformat("T", "seconds")
    etree.SubElement(header, f"{env}protocolVersion").text = "1.0"
    body = etree.SubElement(root, f"{{{NS_SERVICE}}}{service}")
    for name, value in items:
        etree.SubElement(body, f"{std}{name}").text = value
    return etree.tostring(root, encoding="UTF-8", xml_declaration=True)


def demo_traffic() -> list[tuple[str, bytes]]:
    today = datetime.now(JST).date().isoformat()
    notice = demo_message(
        "ResidentChangeNotice",
        "juki",
        [
            ("localGovernmentCode", DEMO_TOWN),
            ("addresseeNumber", DEMO_RESIDENT),
            ("changeReason", "201"),  # 国内転出: 税, 国保, 収納, 固定資産税 and 滞納管理
            ("changeDate", today),
        ],
        DEMO_RESIDENT,
    )
    inquiry = demo_message(
        "AddresseeInquiry",
        "tainou",  # 滞納管理 looks the resident up in 住民記録
        [("localGovernmentCode", DEMO_TOWN), ("addresseeNumber", DEMO_RESIDENT)],
        None,
    )
    return [("ResidentChangeNotice", notice), ("AddresseeInquiry", inquiry)]


def _trace(detail: MessageDetail) -> list[str]:
    summary = detail.summary
    lines = [
        f"{summary.service} {summary.message_id} ({summary.tenant}, {summary.system})",
        f"  received   {summary.received_at.astimezone(JST):%H:%M:%S.%f}"[:-3],
    ]
    if detail.deliveries:
        routed = ", ".join(sorted({d.destination for d in detail.deliveries}))
        lines.append(f"  routed     → {routed}")
    for delivery in detail.deliveries:
        when = (
            delivery.finished_at.astimezone(JST).strftime("%H:%M:%S.%f")[:-3]
            if (delivery.finished_at)
            else "…"
        )
        error = f"  ({delivery.last_error})" if delivery.last_error else ""
        lines.append(
            f"  {delivery.state:<10} {delivery.destination:<8} {when}"
            f"  attempts {delivery.attempts}{error}"
        )
    return lines


def _results(answer: dict[str, Any]) -> str:
    """How many records an inquiry's reply (JSON form) holds."""
    service: Any = next((v for k, v in answer.get("reply", {}).items() if k != "Header"), {})
    found = service.get("Result") if isinstance(service, dict) else None
    count = len(found) if isinstance(found, list) else int(found is not None)
    return f" ({count} 件 record(s))"


def _follow(settings: Settings, message_id: str, wait: float) -> MessageDetail | None:
    """The message once every delivery is final (or when ``wait`` runs out)."""
    store = open_store(settings)
    deadline = time.monotonic() + wait
    detail: MessageDetail | None = None
    try:
        while True:
            try:
                with store.sessions() as session:
                    detail = show_message(session, message_id)
            except StoreQueryError:
                detail = None
            done = detail is not None and all(d.state in FINAL_STATES for d in detail.deliveries)
            if done or time.monotonic() >= deadline:
                return detail
            time.sleep(0.2)
    finally:
        store.close()


def _on_this_machine(url: str) -> bool:
    """A hub on a loopback address, which a machine-wide HTTP_PROXY (set for other software)
    must not carry: httpx would send the demo to the proxy, and report the hub unreachable."""
    host = httpx.URL(url).host
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


@app.command()
def demo(
    url: Annotated[str, typer.Option(help="The running hub.")] = "http://127.0.0.1:8080",
    wait: Annotated[float, typer.Option(help="Seconds to wait for the deliveries.")] = 30.0,
) -> None:
    """Send sample traffic to a running hub (`renkei serve`) and print each message's trace
    from the Message Store: received → routed → delivered per destination."""
    settings = Settings()
    failed = False
    with httpx.Client(base_url=url, timeout=30, trust_env=not _on_this_machine(url)) as client:
        for service, body in demo_traffic():
            try:
                response = client.post(
                    f"/api/v1/messages/{service}",
                    content=body,
                    headers={"Content-Type": "application/xml", "Accept": "application/json"},
                )
            except httpx.HTTPError as error:
                typer.echo(
                    f"ハブに接続できません cannot reach the hub at {url}: {type(error).__name__}",
                    err=True,
                )
                raise typer.Exit(2) from None
            if response.status_code >= 300:
                typer.echo(f"{service}: HTTP {response.status_code} {response.text}", err=True)
                failed = True
                continue
            answer = response.json()
            message_id = str(answer["message_id"])
            detail = _follow(settings, message_id, wait)
            if detail is None:
                typer.echo(
                    f"{service} {message_id}: not in this Message Store "
                    f"({settings.effective_database_url}); run the demo with the hub's "
                    "RENKEI_DATA_DIR",
                    err=True,
                )
                failed = True
                continue
            for line in _trace(detail):
                typer.echo(line)
            if "reply_message_id" in answer:
                typer.echo(f"  answered   reply {answer['reply_message_id']}{_results(answer)}")
            failed = failed or any(d.state != "delivered" for d in detail.deliveries)
    raise typer.Exit(1 if failed else 0)
