"""Identities on a real hub over HTTP: zeep's own WS-Security UsernameToken (PasswordDigest)
accepted, replayed and stale tokens refused with coded SOAP Client faults, issued API keys
rotated and revoked while the hub runs, rate limits answered with 429 + Retry-After or a SOAP
fault (and nothing stored), and a tenant disabled with ``renkei tenants disable``."""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import httpx
import pytest
from lxml import etree
from sqlalchemy import func, select
from zeep import Client
from zeep import Settings as ZeepSettings
from zeep.exceptions import Fault
from zeep.wsse.username import UsernameToken

from adapters.rest.json_form import child_table, to_json
from adapters.soap.envelope import NS_SOAP_BINDING
from bus.security.api_keys import revoke_key, rotate_keys
from bus.store.db import open_store
from bus.store.models import StoredMessage
from tests.interop.test_zeep_soap import _zeep_value
from tests.support.hub_server import serialize
from tests.support.towns import (
    SOAP,
    Towns,
    message,
    message_id,
    soap_with_token,
    towns_hub,
)

API = "/api/v1/messages"
XML = {"Content-Type": "application/xml"}
SOAP_XML = {"Content-Type": "text/xml; charset=utf-8", "SOAPAction": '""'}
TOWN, LIMITED = "412015", "412031"
RATE = 3  # per minute, for juki-412031 (see the fixture)


@pytest.fixture(scope="module")
def towns(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Towns]:
    tmp = tmp_path_factory.mktemp("security-http")

    def limited(text: str) -> str:
        return text.replace(
            f'tenants: ["{LIMITED}"]\n  - id: zeimu',
            f'tenants: ["{LIMITED}"]\n    rate_limit: {{per_minute: {RATE}}}\n  - id: zeimu',
        )

    with towns_hub(tmp, edit=limited) as hub:
        yield hub


def _fault_codes(response: httpx.Response) -> list[str]:
    return [
        e.text or "" for e in etree.fromstring(response.content).iter(f"{{{NS_SOAP_BINDING}}}code")
    ]


def _soap(towns: Towns, body: bytes, service: str = "ResidentChangeNotice") -> httpx.Response:
    return httpx.post(f"{towns.hub.url}/soap/{service}", content=body, headers=SOAP_XML, timeout=30)


# --- WS-Security -----------------------------------------------------------------------------


def _zeep_send(towns: Towns, password: str) -> tuple[str, Any]:
    """A 住民異動通知 through zeep with zeep's own UsernameToken (PasswordDigest): the
    message id sent and zeep's answer."""
    system = f"juki-{TOWN}"
    client = Client(
        f"{towns.hub.url}/soap/ResidentChangeNotice?wsdl",
        settings=ZeepSettings(strict=True),
        wsse=UsernameToken(system, password, use_digest=True),
    )
    document = message("ResidentChangeNotice", TOWN, system)
    node = child_table().root["ResidentChangeNotice"]
    kwargs = _zeep_value(client, to_json(document)["ResidentChangeNotice"], node)
    assert isinstance(kwargs, dict)
    answer = client.service.ResidentChangeNotice(_soapheaders=[document[0]], **kwargs)
    return message_id(document), answer


def test_zeep_username_token_digest_is_accepted(towns: Towns) -> None:
    sent, answer = _zeep_send(towns, towns.soap_passwords[f"juki-{TOWN}"])
    assert answer["messageId"] == sent


def test_zeep_with_a_wrong_password_gets_a_client_fault(towns: Towns) -> None:
    with pytest.raises(Fault) as fault:
        _zeep_send(towns, "not-the-password")
    assert fault.value.code == "soap:Client"
    assert fault.value.detail is not None
    codes = [e.text for e in fault.value.detail.iter(f"{{{NS_SOAP_BINDING}}}code")]
    assert codes == ["RK-AUT007"]


def test_a_replayed_token_is_refused_even_with_a_new_message(towns: Towns) -> None:
    system = f"juki-{TOWN}"
    password = towns.soap_passwords[system]
    created, nonce = datetime.now(UTC), os.urandom(16)
    first = soap_with_token(
        message("ResidentChangeNotice", TOWN, system),
        system,
        password,
        created=created,
        nonce=nonce,
    )
    assert _soap(towns, first).status_code == 200
    again = soap_with_token(
        message("ResidentChangeNotice", TOWN, system),
        system,
        password,
        created=created,
        nonce=nonce,
    )
    response = _soap(towns, again)
    assert response.status_code == 500 and _fault_codes(response) == ["RK-AUT009"]
    assert b"<faultcode>soap:Client</faultcode>" in response.content.replace(b" ", b"")


@pytest.mark.parametrize("minutes", [-6, 6])
def test_a_stale_or_future_token_is_refused(towns: Towns, minutes: int) -> None:
    system = f"juki-{TOWN}"
    body = soap_with_token(
        message("ResidentChangeNotice", TOWN, system),
        system,
        towns.soap_passwords[system],
        created=datetime.now(UTC) + timedelta(minutes=minutes),
    )
    response = _soap(towns, body)
    assert response.status_code == 500 and _fault_codes(response) == ["RK-AUT008"]


def test_an_incomplete_token_is_refused(towns: Towns) -> None:
    system = f"juki-{TOWN}"
    body = soap_with_token(
        message("ResidentChangeNotice", TOWN, system), system, towns.soap_passwords[system]
    )
    document = etree.fromstring(body)
    nonce = next(document.iter("{*}Nonce"))
    nonce.getparent().remove(nonce)  # type: ignore[union-attr]
    response = _soap(towns, serialize(document))
    assert response.status_code == 500 and _fault_codes(response) == ["RK-AUT006"]
    assert document.tag == f"{{{SOAP}}}Envelope"


# --- issued API keys while the hub runs ------------------------------------------------------


def _send(towns: Towns, key: str) -> httpx.Response:
    document = message("ResidentChangeNotice", TOWN, f"juki-{TOWN}")
    return httpx.post(
        f"{towns.hub.url}{API}/ResidentChangeNotice",
        content=serialize(document),
        headers={**XML, "Authorization": f"Bearer {key}"},
        timeout=30,
    )


def test_rotation_overlap_then_revocation_over_http(towns: Towns) -> None:
    store = open_store(towns.settings)
    try:
        old = towns.keys[f"juki-{TOWN}"]
        new, _ = rotate_keys(store.sessions, f"juki-{TOWN}", overlap=timedelta(hours=1))
        assert _send(towns, old).status_code == 202
        assert _send(towns, new.key).status_code == 202
        revoke_key(store.sessions, new.key_id)
    finally:
        store.close()
    refused = _send(towns, new.key)
    assert refused.status_code == 401 and refused.json()["findings"][0]["code"] == "RK-AUT001"
    assert _send(towns, old).status_code == 202  # still within its overlap


# --- rate limits -----------------------------------------------------------------------------


def _stored_count(towns: Towns, tenant: str) -> int:
    store = open_store(towns.settings)
    try:
        with store.sessions() as session:
            return (
                session.scalar(
                    select(func.count())
                    .select_from(StoredMessage)
                    .where(StoredMessage.tenant == tenant)
                )
                or 0
            )
    finally:
        store.close()


def test_rate_limit_is_429_with_retry_after_then_a_soap_fault(towns: Towns) -> None:
    """At most RATE per minute are taken; 2 × RATE + 1 quick requests span at most two
    windows, so at least one is refused, and only the taken ones are stored."""
    system = f"juki-{LIMITED}"
    statuses, limited = [], None
    for _ in range(2 * RATE + 1):
        document = message("ResidentChangeNotice", LIMITED, system)
        answer = httpx.post(
            f"{towns.hub.url}{API}/ResidentChangeNotice",
            content=serialize(document),
            headers={**XML, **towns.bearer(system)},
            timeout=30,
        )
        statuses.append(answer.status_code)
        limited = limited or (answer if answer.status_code == 429 else None)
    assert set(statuses) == {202, 429} and statuses[0] == 202, statuses
    assert limited is not None
    assert limited.json()["findings"][0]["code"] == "RK-AUT010"
    assert 1 <= int(limited.headers["retry-after"]) <= 60
    assert _stored_count(towns, LIMITED) == statuses.count(202)  # refused ones not stored
    body = soap_with_token(
        message("ResidentChangeNotice", LIMITED, system), system, towns.soap_passwords[system]
    )
    soap = _soap(towns, body)
    assert soap.status_code == 500 and _fault_codes(soap) == ["RK-AUT010"]
    assert 1 <= int(soap.headers["retry-after"]) <= 60


# --- tenants ---------------------------------------------------------------------------------


def test_disabling_a_tenant_refuses_its_messages(towns: Towns) -> None:
    env = {
        **os.environ,
        "RENKEI_DATA_DIR": str(towns.settings.data_dir),
        "RENKEI_CONFIG_DIR": str(towns.hub.config_dir),
    }
    renkei = str(Path(sys.executable).with_name("renkei"))
    disable = subprocess.run(
        [renkei, "tenants", "disable", "412023"],
        env=env,
        capture_output=True,
        text=True,
        check=False,
    )
    assert disable.returncode == 0, disable.stderr
    assert "enabled: false" in (towns.hub.config_dir / "tenants" / "412023.yaml").read_text()
    listing = subprocess.run(
        [renkei, "tenants", "list"], env=env, capture_output=True, text=True, check=True
    )
    assert "412023  唐津市  disabled" in listing.stdout
    document = message("ResidentChangeNotice", "412023", "juki-412023")

    def refused() -> httpx.Response:
        return httpx.post(
            f"{towns.hub.url}{API}/ResidentChangeNotice",
            content=serialize(document),
            headers={**XML, **towns.bearer("juki-412023")},
            timeout=30,
        )

    from tests.support.receivers import wait_for

    wait_for(lambda: refused().status_code == 403, timeout=30)  # once the hub reloaded
    assert refused().json()["findings"][0]["code"] == "RK-AUT005"
