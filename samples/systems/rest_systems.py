"""The sample REST systems (FastAPI): 収納 shuno, 国保 kokuho, 法務局 houmu, and the base of
滞納管理 tainou (samples/systems/tainou.py).

Each takes a document by ``POST /<system>`` as the hub's ``http`` transport sends it (the
messageId in ``Renkei-Message-Id``, the service in ``Renkei-Service``): platform XML, or the
system's own format when its mapping file translates it (an XML dialect, or fixed-length
records such as 国保's CP932), and lists what it received at ``GET /<system>/received``.
A message without a messageId, or with a DOCTYPE, is refused with 400 — the hub treats that
as permanent and dead-letters the delivery.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

from fastapi import FastAPI, Request, Response
from lxml import etree

from samples.systems.received import ReceivedLog

ENVELOPE = "urn:renkei:platform:envelope:1"
REST_SYSTEMS = {
    "shuno": "収納システム",
    "kokuho": "国民健康保険システム",
    "houmu": "法務局（登記済通知）",
    "tainou": "滞納管理システム",
}
# Answers an inquiry in the system's format (None: a notification, acknowledged only).
Answer = Callable[[etree._Element], bytes | None]
_PARSER = etree.XMLParser(resolve_entities=False, no_network=True, load_dtd=False, huge_tree=False)
_E = f"{{{ENVELOPE}}}"


def _header(root: etree._Element) -> dict[str, str | None]:
    header = root.find(f"{_E}Header")
    if header is None:
        return {}
    return {
        "messageId": header.findtext(f"{_E}messageId"),
        "service": header.findtext(f"{_E}service/{_E}name"),
        "tenant": header.findtext(f"{_E}client/{_E}tenant"),
        "subject": header.findtext(f"{_E}subject"),
    }


def _fields(root: etree._Element) -> dict[str, Any]:
    """The leaves by local name: a PlatformMessage's service element, or the whole document
    of a system's own dialect (its attributes as ``element@name``)."""
    children = [child for child in root if isinstance(child.tag, str)]
    top = children[1] if root.tag == f"{_E}PlatformMessage" and len(children) > 1 else root
    fields: dict[str, Any] = {}
    for leaf in top.iter():
        if not isinstance(leaf.tag, str):
            continue
        name = etree.QName(leaf).localname
        for attribute, value in leaf.attrib.items():
            fields[f"{name}@{attribute}"] = value
        if len(leaf) == 0:
            fields[name] = leaf.text
    return fields


def _decoded(body: bytes) -> str:
    for encoding in ("utf-8", "cp932"):
        try:
            return body.decode(encoding)
        except UnicodeDecodeError:
            continue
    return body.hex()


def create_app(
    system: str, data_dir: Path, path: str | None = None, answer: Answer | None = None
) -> FastAPI:
    path = (path or f"/{system}").rstrip("/")
    log = ReceivedLog(data_dir / f"{system}-received.db", system)
    app = FastAPI(title=REST_SYSTEMS.get(system, system), openapi_url=None, docs_url=None)

    @app.post(path)
    async def receive(request: Request) -> Response:
        body = await request.body()
        if b"<!DOCTYPE" in body[:4096].upper():
            return Response("DOCTYPE refused", status_code=400)
        try:
            root: etree._Element | None = etree.fromstring(body, _PARSER)
        except etree.XMLSyntaxError:
            root = None  # a non-XML format (fixed-length records): kept as text
        header = _header(root) if root is not None else {}
        message_id = request.headers.get("renkei-message-id") or header.get("messageId")
        if not message_id:
            return Response("no messageId", status_code=400)
        log.record(
            request.headers.get("renkei-service") or header.get("service") or "unknown",
            message_id,
            tenant=header.get("tenant") or request.headers.get("renkei-tenant"),
            subject=header.get("subject"),
            fields=_fields(root) if root is not None else {"record": _decoded(body)},
        )
        reply = answer(root) if answer is not None and root is not None else None
        if reply is not None:
            return Response(reply, media_type="application/xml")
        return Response(status_code=200)

    @app.get(f"{path}/received")
    def received() -> list[dict[str, Any]]:
        return log.rows()

    app.state.log = log
    return app
