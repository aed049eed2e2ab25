"""A second independent SOAP stack: the npm ``soap`` package on the machine's Node.js reads
each service's WSDL (and the XSDs it imports over HTTP) and calls its operation with the
platform Header as a SOAP header block: valid → acknowledged (an inquiry answered), invalid →
the coded soap:Client Fault (HTTP 500)."""

from __future__ import annotations

import json
import shutil
import subprocess
from pathlib import Path
from typing import Any

import pytest
from lxml import etree

from bus.catalogue import NS_ENVELOPE
from tests.interop.conftest import INVALID, expected_code
from tests.support.hub_server import INQUIRIES, SERVICES, HubServer, sample

pytestmark = pytest.mark.interop

NODE_PROJECT = Path(__file__).resolve().parent / "node"


@pytest.fixture(scope="module")
def node_soap() -> Path:
    """The locked npm project installed once (offline from the npm cache when possible)."""
    if shutil.which("node") is None or shutil.which("npm") is None:
        pytest.skip("Node.js/npm are not installed on this machine")
    if not (NODE_PROJECT / "node_modules" / "soap").is_dir():
        offline = ["npm", "ci", "--offline", "--no-audit", "--no-fund"]
        if subprocess.run(offline, cwd=NODE_PROJECT, capture_output=True).returncode != 0:
            online = ["npm", "ci", "--no-audit", "--no-fund"]
            subprocess.run(online, cwd=NODE_PROJECT, check=True, capture_output=True, timeout=300)
    return NODE_PROJECT / "call.js"


def _job(hub: HubServer, service: str, document: etree._Element) -> dict[str, str]:
    return {
        "wsdl": f"{hub.url}/soap/{service}?wsdl",
        "operation": service,
        "header": etree.tostring(document[0], encoding="unicode"),
        "body": etree.tostring(document[1], encoding="unicode"),
    }


def _run(script: Path, jobs: list[dict[str, str]]) -> list[dict[str, Any]]:
    done = subprocess.run(
        ["node", str(script)], input=json.dumps(jobs), capture_output=True, text=True, timeout=120
    )
    assert done.returncode == 0, done.stderr
    return [json.loads(line) for line in done.stdout.splitlines()]


def test_node_soap_calls_every_operation(interop_hub: HubServer, node_soap: Path) -> None:
    valid = {service: sample(service) for service in SERVICES}
    ids = {s: d.findtext(f".//{{{NS_ENVELOPE}}}messageId") for s, d in valid.items()}
    jobs = [_job(interop_hub, s, d) for s, d in valid.items()]
    jobs += [_job(interop_hub, s, sample(s, INVALID[s])) for s in SERVICES]
    results = _run(node_soap, jobs)
    assert len(results) == 2 * len(SERVICES)
    for service, result in zip(SERVICES, results[: len(SERVICES)], strict=True):
        assert result["ok"], (service, result)
        if service in INQUIRIES:
            assert result["result"]["localGovernmentCode"], service
            reply_header = result["header"]["Header"]
            assert reply_header["correlationId"] == ids[service] != reply_header["messageId"]
        else:
            assert result["result"]["messageId"] == ids[service]
    for service, result in zip(SERVICES, results[len(SERVICES) :], strict=True):
        assert not result["ok"] and result["status"] == 500, (service, result)
        assert result["faultcode"] == "soap:Client"
        assert result["codes"][0] == expected_code(service), (service, result)
