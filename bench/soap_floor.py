"""The floor for bench/soap_throughput.py: a bare ASGI endpoint that only parses the SOAP
request with lxml (the hub's safe parser settings) and XSD-validates its platform Header and
Body element against the same combined schema the hub uses — no authentication, routing,
storage or dispatch. Run by uvicorn: ``uvicorn --factory soap_floor:app``.
"""

from __future__ import annotations

from typing import Any

from lxml import etree

from bus.validation.schema import load_schema

SOAP = "http://schemas.xmlsoap.org/soap/envelope/"
ENVELOPE_HEADER = "{urn:renkei:platform:envelope:1}Header"
_ACK = (
    b'<?xml version="1.0" encoding="UTF-8"?>'
    b'<soap:Envelope xmlns:soap="http://schemas.xmlsoap.org/soap/envelope/"><soap:Body>'
    b"<ack>%s</ack></soap:Body></soap:Envelope>"
)


def app() -> Any:
    schema = load_schema()  # one per process; uvicorn runs one request at a time per loop
    parser = etree.XMLParser(
        resolve_entities=False, no_network=True, load_dtd=False, huge_tree=False
    )

    async def application(scope: dict[str, Any], receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            return
        chunks = []
        more = True
        while more:
            event = await receive()
            chunks.append(event.get("body", b""))
            more = event.get("more_body", False)
        try:
            root = etree.fromstring(b"".join(chunks), parser)
        except etree.XMLSyntaxError:
            root = etree.Element("unparseable")
        header = root.find(f"{{{SOAP}}}Header/{ENVELOPE_HEADER}")
        body = root.find(f"{{{SOAP}}}Body")
        valid = (
            header is not None
            and body is not None
            and len(body) == 1
            and schema.validate(header)
            and schema.validate(body[0])
        )
        status = 200 if valid else 500
        await send(
            {
                "type": "http.response.start",
                "status": status,
                "headers": [(b"content-type", b"text/xml; charset=utf-8")],
            }
        )
        await send({"type": "http.response.body", "body": _ACK % (b"ok" if valid else b"invalid")})

    return application
