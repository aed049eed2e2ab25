"""HTTPS with client certificates (mutual TLS) for ``renkei serve``.

uvicorn terminates TLS (and verifies a client certificate against ``--tls-client-ca``) but
does not hand the certificate to the application, and neither does hypercorn 0.18 (its ASGI
scope carries no ``tls`` extension). :class:`ClientCertificateProtocol` is uvicorn's own h11
protocol plus the ASGI TLS extension: for a connection whose client presented a verified
certificate, every request's scope gets ``extensions["tls"]["client_cert_chain"]`` (PEM,
leaf first), which the inbound adapters map to a system by its SHA-256 fingerprint
(``credentials.certificate_fingerprints``). See docs/security.md for why not a proxy.
"""

from __future__ import annotations

import asyncio
import ssl
from typing import Any

from starlette.types import Receive, Scope, Send
from uvicorn.protocols.http.h11_impl import H11Protocol


class ClientCertificateProtocol(H11Protocol):
    """uvicorn's h11 protocol that fills the ASGI TLS extension with the peer certificate."""

    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        super().connection_made(transport)
        ssl_object = transport.get_extra_info("ssl_object")
        peer = ssl_object.getpeercert(binary_form=True) if ssl_object is not None else None
        if not peer:
            return
        tls: dict[str, Any] = {
            "client_cert_chain": [ssl.DER_cert_to_PEM_cert(peer)],
            "tls_version": None,
            "cipher_suite": None,
            "server_cert": None,
        }
        app = self.app

        async def with_certificate(scope: Scope, receive: Receive, send: Send) -> None:
            scope.setdefault("extensions", {})["tls"] = tls
            await app(scope, receive, send)

        self.app = with_certificate  # per connection: this protocol object is the connection
