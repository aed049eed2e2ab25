"""Inputs that crashed an entry point under bench/fuzz_inputs.py, replayed through the real
server: each must be refused with a coded finding, never a traceback."""

from __future__ import annotations

import base64
from collections.abc import Iterator

import httpx
import pytest
from lxml import etree

from tests.support.hub_server import HubServer, hub_server

# soap target, crash-28db3380…: an XML declaration whose encoding name holds control
# characters; RK-SEC005 quoted it and the SOAP Fault could not be written (ValueError).
CONTROL_CHARACTERS_IN_ENCODING = base64.b64decode(
    "PD94bWwgdmVyc2lvbj0nMC4wJyBlbmNvZGluZz0nPG9ybTplbnZlbG9wZToyIiAYGBgYGBgYGBgYGBgYGBgYGBgY"
    "GBgYGBgYGBgYGBgYGBgYGBgYGBgYGBgYGBgYGBgYGBgYGBgYGBgYGBgYGBgYGBgYGBgYGBgYGBgYGBgYGBgYGBgY"
    "GBgYGBgYGBgYGBgYGBgYGBgYGBgYGBh4InVybjpyZW5rZWk6cGw8P3htbCB2ZXJzaW9uPScxLjAnIGVuY29kaW5n"
    "PWF0Jzxmbw=="
)
CRASHES = {"control-characters-in-encoding": CONTROL_CHARACTERS_IN_ENCODING}


@pytest.fixture(scope="module")
def hub(tmp_path_factory: pytest.TempPathFactory) -> Iterator[HubServer]:
    with hub_server(tmp_path_factory.mktemp("fuzz")) as server:
        yield server


def post(hub: HubServer, path: str, body: bytes, media: str) -> httpx.Response:
    return httpx.post(hub.url + path, content=body, headers={"Content-Type": media}, timeout=30)


@pytest.mark.parametrize("name", sorted(CRASHES))
def test_soap_answers_a_client_fault(hub: HubServer, name: str) -> None:
    response = post(hub, "/soap/ResidentChangeNotice", CRASHES[name], "text/xml; charset=utf-8")
    assert response.status_code == 500  # SOAP 1.1: a Fault travels with HTTP 500
    fault = etree.fromstring(response.content)
    assert fault.findtext(".//faultcode") == "soap:Client"
    assert (fault.findtext(".//faultstring") or "").startswith("RK-SEC005")


@pytest.mark.parametrize("name", sorted(CRASHES))
def test_rest_answers_a_problem(hub: HubServer, name: str) -> None:
    response = post(hub, "/api/v1/messages/ResidentChangeNotice", CRASHES[name], "application/xml")
    assert 400 <= response.status_code < 500
    codes = [finding["code"] for finding in response.json()["findings"]]
    assert codes == ["RK-SEC005"]
    assert "\x18" not in response.json()["findings"][0]["message_en"]
