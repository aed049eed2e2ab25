"""SOAP and REST are one ASGI application that runs in several uvicorn worker processes
(PostgreSQL store, RabbitMQ wake-ups): every request is answered by whichever process gets
it, and what one process stored another reports."""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import httpx
import pytest

from adapters.rest.json_form import to_json
from bus.catalogue import NS_ENVELOPE
from tests.support.hub_server import hub_server, sample, soap_envelope
from tests.support.receivers import wait_for

pytestmark = [pytest.mark.postgres, pytest.mark.services]


@pytest.mark.slow
def test_two_worker_processes_serve_soap_and_rest(
    tmp_path: Path, postgres_url: str, rabbitmq_url: str
) -> None:
    env = {"RENKEI_DATABASE_URL": postgres_url, "RENKEI_BROKER_URL": rabbitmq_url}
    with hub_server(tmp_path, workers=2, env=env) as hub:
        documents = [sample("ResidentChangeNotice") for _ in range(12)]
        ids = [d.findtext(f".//{{{NS_ENVELOPE}}}messageId") for d in documents]

        def send(index: int) -> int:
            document = documents[index]
            with httpx.Client(timeout=30) as client:  # a new connection: any process
                if index % 2:
                    url = f"{hub.url}/api/v1/messages/ResidentChangeNotice"
                    return client.post(url, json=to_json(document)).status_code
                return client.post(
                    f"{hub.url}/soap/ResidentChangeNotice",
                    content=soap_envelope(document),
                    headers={"Content-Type": "text/xml", "SOAPAction": '""'},
                ).status_code

        with ThreadPoolExecutor(6) as pool:
            statuses = list(pool.map(send, range(len(documents))))
        assert statuses == [200, 202] * (len(documents) // 2)
        for message_id in ids:
            assert httpx.get(f"{hub.url}/api/v1/messages/{message_id}").status_code == 200
        wait_for(lambda: set(ids) <= set(hub.receiver.applied()), timeout=60)
