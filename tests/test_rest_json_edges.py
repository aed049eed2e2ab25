"""What real JSON clients send to ``POST /api/v1/messages/{Service}`` (the JSON form), against
a real ``renkei serve --no-samples``: JSON that Python's parser would take silently but that
is not what the sender meant (duplicate keys, NaN, numbers for identifiers, UTF-16), and
JSON that cannot be written as XML (lone surrogates). Each is a coded problem+json refusal
naming the field, audited, with nothing stored; what is accepted is stored as sent."""

from __future__ import annotations

import json
from collections.abc import Iterator
from typing import Any

import httpx
import pytest
from lxml import etree
from sqlalchemy import create_engine, select

from adapters.rest.json_form import JsonFormError, parse, to_json, to_xml
from adapters.rest.problem import PROBLEM_JSON
from bus.catalogue import NS_SERVICE
from bus.store.models import AuditRecord, StoredMessage
from tests.support.hub_server import HubServer, hub_server, sample
from tests.support.receivers import wait_for

API = "/api/v1/messages"
SERVICE = "ResidentChangeNotice"
STD = "urn:renkei:platform:standard:1"


@pytest.fixture(scope="module")
def hub(tmp_path_factory: pytest.TempPathFactory) -> Iterator[HubServer]:
    with hub_server(tmp_path_factory.mktemp("rest-json"), serve_options=()) as server:
        yield server


def _form(**fields: Any) -> dict[str, Any]:
    """A valid ResidentChangeNotice in JSON form (fresh messageId), ``fields`` replaced."""
    form = to_json(sample(SERVICE))
    form[SERVICE].update(fields)
    return form


def _text(form: dict[str, Any]) -> str:
    return json.dumps(form, ensure_ascii=False)


def _post(hub: HubServer, body: bytes, content_type: str = "application/json") -> httpx.Response:
    headers = {"Content-Type": content_type}
    return httpx.post(f"{hub.url}{API}/{SERVICE}", content=body, headers=headers, timeout=30)


def _refusal(response: httpx.Response, status: int, code: str) -> dict[str, Any]:
    """The one finding of a coded problem+json refusal."""
    assert response.status_code == status, response.text
    assert response.headers["content-type"] == PROBLEM_JSON
    problem = response.json()
    assert problem["type"] == f"urn:renkei:error:{code}"
    (finding,) = problem["findings"]
    assert finding["code"] == code and finding["message_ja"] and finding["message_en"]
    return dict(finding)


def _database(hub: HubServer) -> str:
    return f"sqlite:///{hub.config_dir.parent / 'hub-data' / 'renkei.db'}"


def _stored_body(hub: HubServer, message_id: str) -> bytes | None:
    engine = create_engine(_database(hub))
    try:
        with engine.connect() as connection:
            query = select(StoredMessage.body).where(StoredMessage.message_id == message_id)
            return connection.scalar(query)
    finally:
        engine.dispose()


def _rejected_codes(hub: HubServer) -> list[list[str]]:
    engine = create_engine(_database(hub))
    try:
        with engine.connect() as connection:
            query = select(AuditRecord.detail).where(AuditRecord.event == "rejected")
            return [list(detail.get("codes", [])) for detail in connection.scalars(query)]
    finally:
        engine.dispose()


def _refused_and_audited(hub: HubServer, code: str, message_id: str) -> None:
    """Nothing stored under the message's id, and the refusal in the rejection audit."""
    assert _stored_body(hub, message_id) is None
    wait_for(lambda: [code] in _rejected_codes(hub), timeout=10)


def _message_id(form: dict[str, Any]) -> str:
    return str(form["Header"]["messageId"])


# --- duplicate keys ------------------------------------------------------------------------


def test_a_duplicate_key_is_refused_with_its_path_and_name(hub: HubServer) -> None:
    """Python's json keeps the last of two equal keys; a validator and a consumer further on
    could each keep another. The hub refuses the ambiguity (RK-API015) instead."""
    form = _form(addresseeNumber="8842282030")
    text = _text(form).replace(
        '"addresseeNumber": "8842282030"',
        '"addresseeNumber": "8842282030", "addresseeNumber": "0000000019"',
    )
    response = _post(hub, text.encode())
    finding = _refusal(response, 400, "RK-API015")
    assert finding["path"] == f"/{SERVICE}/addresseeNumber"
    assert (finding["item"], finding["name_ja"]) == ("addresseeNumber", "宛名番号")
    assert "addresseeNumber" in finding["message_en"] and "宛名番号" in finding["message_ja"]
    _refused_and_audited(hub, "RK-API015", _message_id(form))


def test_a_duplicate_service_element_is_refused(hub: HubServer) -> None:
    form = _form()
    text = _text(form)[:-1] + f', "{SERVICE}": {{}}}}'
    finding = _refusal(_post(hub, text.encode()), 400, "RK-API015")
    assert finding["path"] == f"/{SERVICE}"


@pytest.mark.parametrize(
    ("raw", "path"),
    [
        (b'{"Header": {}, "X": {"r": [{"a": "1"}, {"a": "1", "\\u0061": "2"}]}}', "/X/r/1/a"),
        (b'{"Header": {"a/b": {"~": 1, "~": 2}}}', "/Header/a~1b/~0"),
    ],
)
def test_a_duplicate_key_anywhere_is_named_by_its_pointer(raw: bytes, path: str) -> None:
    """An escaped key (``\\u0061`` is ``a``) is the same key; an item of an array is named by
    its index, and ``/`` and ``~`` are escaped as RFC 6901 says."""
    with pytest.raises(JsonFormError) as refused:
        parse(raw)
    assert (refused.value.code, refused.value.path) == ("RK-API015", path)


# --- numbers and booleans where the schema wants text --------------------------------------


@pytest.mark.parametrize(
    ("field", "literal", "name_ja"),
    [
        ("addresseeNumber", "12345", "宛名番号"),  # "0000012345" with its zeros lost
        ("postalCode", "8400001", "郵便番号"),
        ("myNumber", "123456789018", "個人番号"),
        ("nameKana", "true", None),
    ],
)
def test_a_number_or_boolean_for_a_text_item_is_refused(
    hub: HubServer, field: str, literal: str, name_ja: str | None
) -> None:
    """A JSON number cannot carry leading zeros, so an identifier sent as one may not be
    what the system holds (宛名番号 0000012345 arrives as 12345, and its check digit still
    fits): RK-API016, send it as a string."""
    form = _form(**{field: "PLACEHOLDER"})
    text = _text(form).replace('"PLACEHOLDER"', literal)
    response = _post(hub, text.encode())
    finding = _refusal(response, 400, "RK-API016")
    assert finding["path"] == f"/{SERVICE}/{field}"
    assert finding["item"] == field
    if name_ja is not None:
        assert finding["name_ja"] == name_ja and name_ja in finding["message_ja"]
    assert literal not in json.dumps(finding)  # the value (a 個人番号) is never echoed
    _refused_and_audited(hub, "RK-API016", _message_id(form))


def test_a_header_item_refused_is_named_in_japanese(hub: HubServer) -> None:
    form = _form()
    text = _text(form).replace(f'"subject": "{form["Header"]["subject"]}"', '"subject": 8842282030')
    finding = _refusal(_post(hub, text.encode()), 400, "RK-API016")
    assert (finding["path"], finding["name_ja"]) == ("/Header/subject", "順序キー（例 宛名番号）")


def test_numbers_and_booleans_for_numeric_items_are_stored_as_written(hub: HubServer) -> None:
    """``householdMemberOrder`` is an xs:int and ``suppressionFlag`` an xs:boolean: JSON
    numbers and booleans are fine there, and written with the JSON's own literal."""
    form = _form(householdMemberOrder="ORDER", suppressionFlag="FLAG")
    text = _text(form).replace('"ORDER"', "3").replace('"FLAG"', "false")
    response = _post(hub, text.encode())
    assert response.status_code == 202, response.text
    body = _stored_body(hub, _message_id(form))
    assert body is not None
    notice = etree.fromstring(body).find(f"{{{NS_SERVICE}}}{SERVICE}")
    assert notice is not None
    assert notice.findtext(f"{{{STD}}}householdMemberOrder") == "3"
    assert notice.findtext(f"{{{STD}}}suppressionFlag") == "false"


def test_a_number_keeps_the_literal_the_json_had() -> None:
    """Python's float would write 1.50 as 1.5 and 12345678901234567.5 as 1.2345678901234568e16:
    the literal is kept, so the XML says exactly what the JSON said (and the XSD judges it)."""
    form = to_json(sample("LevyNotice"))
    amount = next(key for key in form["LevyNotice"] if key.endswith("Amount"))
    form["LevyNotice"][amount] = "PLACEHOLDER"
    for literal in ("12345678901234567.50", "1.50", "1e3", "-0"):
        text = _text(form).replace('"PLACEHOLDER"', literal)
        xml = etree.fromstring(to_xml(parse(text.encode())))
        assert xml.findtext(f".//{{{STD}}}{amount}") == literal


# --- what is not JSON, or not UTF-8 --------------------------------------------------------


@pytest.mark.parametrize("constant", ["NaN", "Infinity", "-Infinity"])
def test_nan_and_infinity_are_not_json(hub: HubServer, constant: str) -> None:
    form = _form(householdMemberOrder="ORDER")
    text = _text(form).replace('"ORDER"', constant)
    response = _post(hub, text.encode())
    finding = _refusal(response, 400, "RK-API004")
    assert finding["path"] == f"/{SERVICE}/householdMemberOrder"
    assert constant in finding["message_en"] and "RFC 8259" in finding["message_en"]
    _refused_and_audited(hub, "RK-API004", _message_id(form))


def test_a_number_of_ten_thousand_digits_is_judged_as_a_value_not_as_broken_json(
    hub: HubServer,
) -> None:
    """CPython refuses to turn more than 4,300 digits into an int (ValueError), which the hub
    reported as "not JSON": it is JSON, and the schema judges the value (422, its path)."""
    form = _form(householdMemberOrder="ORDER")
    text = _text(form).replace('"ORDER"', "1" * 10_000)
    response = _post(hub, text.encode())
    assert response.status_code == 422, response.text
    (finding,) = [f for f in response.json()["findings"] if f["severity"] == "error"]
    assert finding["path"] == f"/PlatformMessage/{SERVICE}/householdMemberOrder"
    assert _stored_body(hub, _message_id(form)) is None


def test_utf16_json_is_refused_and_a_bom_is_ignored(hub: HubServer) -> None:
    """RFC 8259 §8.1: JSON between systems is UTF-8 (a parser MAY ignore a BOM)."""
    form = _form()
    response = _post(hub, _text(form).encode("utf-16"))
    finding = _refusal(response, 400, "RK-API004")
    assert "UTF-8" in finding["message_en"] and "UTF-8" in finding["message_ja"]
    _refused_and_audited(hub, "RK-API004", _message_id(form))
    with_bom = _post(hub, b"\xef\xbb\xbf" + _text(form).encode())
    assert with_bom.status_code == 202, with_bom.text


def test_a_syntax_error_says_where(hub: HubServer) -> None:
    finding = _refusal(_post(hub, b'{"Header": {\n  "subject": 1,,\n}}'), 400, "RK-API004")
    assert "line 2" in finding["message_en"]


# --- what XML cannot hold -------------------------------------------------------------------


@pytest.mark.parametrize(
    ("raw", "path"),
    [
        (b'{"Header": {"\\ud800": "x"}}', "/Header/\\ud800"),
        (b'{"Header": {"subject": {"$": "a", "@\\udfff": "x"}}}', "/Header/subject/@\\udfff"),
    ],
)
def test_a_lone_surrogate_in_a_key_is_a_coded_refusal_not_a_500(
    hub: HubServer, raw: bytes, path: str
) -> None:
    finding = _refusal(_post(hub, raw), 400, "RK-API004")
    assert finding["path"] == path


@pytest.mark.parametrize(
    ("escaped", "named"), [("\\ud800", "U+D800"), ("\\u0000", "U+0000"), ("\\ufffe", "U+FFFE")]
)
def test_a_character_xml_cannot_hold_is_named(hub: HubServer, escaped: str, named: str) -> None:
    form = _form(address="PLACEHOLDER")
    text = _text(form).replace("PLACEHOLDER", f"佐賀{escaped}")
    finding = _refusal(_post(hub, text.encode()), 400, "RK-API004")
    assert finding["path"] == f"/{SERVICE}/address"
    assert named in finding["message_en"] and finding["name_ja"] == "住所"


# --- what is accepted is stored as sent ----------------------------------------------------


def test_kana_gaiji_and_wave_dashes_are_stored_exactly(hub: HubServer) -> None:
    """〜 (U+301C) and ～ (U+FF5E) are different characters; a 外字 in the private use area
    keeps its code point and its ``alt``."""
    form = _form(
        nameKana="ソエジマ　レン",
        address="佐賀県杵島郡江北町大字山口59番地〜61番地",
        addressSupplement="ハイツ白石205号～207号",
    )
    form[SERVICE]["name"] = {"$": "副\ue000　蓮", "@alt": "副島　蓮"}
    response = _post(hub, _text(form).encode())
    assert response.status_code == 202, response.text
    body = _stored_body(hub, _message_id(form))
    assert body is not None
    stored = to_json(etree.fromstring(body))[SERVICE]
    for key in ("nameKana", "address", "addressSupplement", "name"):
        assert stored[key] == form[SERVICE][key], key
