"""The platform standard message set (schemas/*.xsd): catalogue, code lists, services.

The XSDs are the source of truth for the catalogue (72 standard + 42 extension items). These
tests read the schema documents directly with lxml, so they do not depend on bus.catalogue.
The sample generator's content-model walker builds a minimal and a full PlatformMessage per
service from plain per-type values here, which must validate against renkei.xsd.
"""

from __future__ import annotations

import copy
import csv
import re
from functools import cache
from pathlib import Path

import pytest
from lxml import etree

from bus.catalogue import NS_ENVELOPE, NS_EXTENSION, NS_SERVICE, NS_STANDARD, RK, RULES, XS
from bus.samplegen.content_model import BuildOptions, content_model

ROOT = Path(__file__).resolve().parent.parent
SCHEMAS = ROOT / "schemas"
CATALOGUE_DOC = ROOT / "docs" / "catalogue.md"

XML_LANG = "{http://www.w3.org/XML/1998/namespace}lang"
ENV, STD, EXT, SVC = NS_ENVELOPE, NS_STANDARD, NS_EXTENSION, NS_SERVICE

SERVICES = (
    "ResidentChangeNotice",
    "AddresseeInquiry",
    "AddresseeInquiryReply",
    "TaxAssessmentInquiry",
    "TaxAssessmentInquiryReply",
    "LevyNotice",
    "PaymentNotice",
    "DelinquencyInquiry",
    "DelinquencyInquiryReply",
    "DelinquencyActionNotice",
    "NhiEligibilityNotice",
    "RegistrationNotice",
    "PropertyValuationChangeNotice",
)
KANA_PATTERN = "[ァ-ヶ][ァ-ヶー]*(\u3000[ァ-ヶ][ァ-ヶー]*)*"

# Sample lexical values per named type (local name); code-list types use their first code.
SAMPLES: dict[str, str] = {
    "LocalGovernmentCode": "412015",
    "MyNumber": "983205673214",
    "CorporateNumber": "4011001098993",
    "ResidentCode": "24727059608",
    "AtenaNumber": "100000013",
    "PostalCode": "8408501",
    "RealEstateNumber": "4300001234567",
    "AddressCode": "0012300",
    "NoticeNumber": "R06-000123",
    "InsuredNumber": "00012345",
    "InstallmentPeriod": "01",
    "Date": "2024-04-01",
    "Year": "2024",
    "Amount": "120000",
    "SignedAmount": "-5000",
    "Area": "165.29",
    "Count": "12",
    "SequenceNumber": "1",
    "Flag": "true",
    "CaseNumber": "D-2024-0001",
    "ReceiptNumber": "1234",
    "Share": "1/2",
    "Kana100": "サガ\u3000タロウ",
    "Kana200": "サガ\u3000タロウ",
}


def _parse(path: Path) -> etree._ElementTree:
    parser = etree.XMLParser(resolve_entities=False, no_network=True, load_dtd=False)
    return etree.parse(str(path), parser)


@cache
def schema() -> etree.XMLSchema:
    return etree.XMLSchema(_parse(SCHEMAS / "renkei.xsd"))


@cache
def schema_docs() -> dict[str, etree._Element]:
    paths = [SCHEMAS / name for name in ("envelope.xsd", "standard.xsd", "extension.xsd")]
    paths += sorted((SCHEMAS / "services").glob("*.xsd"))
    return {path.relative_to(SCHEMAS).as_posix(): _parse(path).getroot() for path in paths}


def _qname(node: etree._Element, value: str) -> str:
    prefix, _, local = value.rpartition(":")
    return f"{{{node.nsmap[prefix or None]}}}{local}"


@cache
def index() -> dict[str, dict[str, etree._Element]]:
    """Global elements and named types of all schema documents, by Clark name."""
    found: dict[str, dict[str, etree._Element]] = {
        "element": {},
        "complexType": {},
        "simpleType": {},
    }
    for root in schema_docs().values():
        tns = root.get("targetNamespace")
        for kind, table in found.items():
            for node in root.iterfind(f"{{{XS}}}{kind}"):
                key = f"{{{tns}}}{node.get('name')}"
                assert key not in table, f"duplicate global {kind} {key}"
                table[key] = node
    return found


def items() -> list[tuple[str, etree._Element, etree._Element]]:
    """(namespace, element, rk:item) of every standard/extension catalogue item."""
    result = []
    for name in ("standard.xsd", "extension.xsd"):
        root = schema_docs()[name]
        for element in root.iterfind(f"{{{XS}}}element"):
            appinfo = element.find(f"{{{XS}}}annotation/{{{XS}}}appinfo/{{{RK}}}item")
            if appinfo is not None:
                result.append((root.get("targetNamespace"), element, appinfo))
    return result


def _documentation(element: etree._Element, lang: str) -> str:
    for doc in element.iterfind(f"{{{XS}}}annotation/{{{XS}}}documentation"):
        if doc.get(XML_LANG) == lang:
            return (doc.text or "").strip()
    return ""


def _type_chain(type_qname: str) -> list[etree._Element]:
    """The named type and its named ancestors inside renkei's schemas."""
    chain = []
    table = index()
    current: str | None = type_qname
    while current is not None:
        node = table["simpleType"].get(current)
        if node is None:
            node = table["complexType"].get(current)
        if node is None:
            break
        chain.append(node)
        base = node.find(f".//{{{XS}}}restriction")
        if base is None:
            base = node.find(f".//{{{XS}}}extension")
        current = _qname(base, base.get("base")) if base is not None else None
    return chain


def enumeration(type_qname: str) -> list[str]:
    for node in _type_chain(type_qname):
        values = [e.get("value") for e in node.iterfind(f".//{{{XS}}}enumeration")]
        if values:
            return values
    return []


def read_codes(stem: str) -> list[dict[str, str]]:
    with (SCHEMAS / "codes" / f"{stem}.csv").open(encoding="utf-8", newline="") as handle:
        return list(csv.DictReader(handle))


# ---------------------------------------------------------------- sample document generator


def _fill(element: etree._Element, type_qname: str) -> None:
    local = type_qname.rpartition("}")[2]
    codes = enumeration(type_qname)
    if codes:
        element.text = codes[0]
    elif local == "ResidentDate":
        element.text = "平成5年2月29日"
        element.set("asGiven", "true")
    elif local.startswith("Text"):
        element.text = "佐賀市栄町1番1号"
    elif local in SAMPLES:
        element.text = SAMPLES[local]
    else:
        raise AssertionError(f"no sample value for type {type_qname}")


def header(service: str) -> etree._Element:
    head = etree.Element(f"{{{ENV}}}Header")

    def sub(parent: etree._Element, name: str, text: str | None = None) -> etree._Element:
        child = etree.SubElement(parent, f"{{{ENV}}}{name}")
        child.text = text
        return child

    sub(head, "messageId", "3f2b8c1e-4d5a-4b6c-8d7e-9f0a1b2c3d4e")
    if service.endswith("Reply"):
        sub(head, "correlationId", "0a1b2c3d-4e5f-4a6b-8c7d-9e0f1a2b3c4d")
    ref = sub(head, "service")
    sub(ref, "name", service)
    sub(ref, "version", "1.0")
    client = sub(head, "client")
    sub(client, "tenant", "412015")
    sub(client, "system", "juki")
    sub(head, "issuedAt", "2024-04-01T09:00:00+09:00")
    sub(head, "protocolVersion", "1.0")
    return head


def message(service: str, full: bool) -> etree._Element:
    root = etree.Element(f"{{{ENV}}}PlatformMessage")
    root.append(header(service))
    content_model().build_service(root, service, _fill, BuildOptions(full=full))
    return root


def assert_valid(document: etree._Element) -> None:
    xsd = schema()
    if not xsd.validate(document):
        pytest.fail(
            "\n".join(str(e) for e in xsd.error_log)
            + "\n"
            + etree.tostring(document, encoding="unicode", pretty_print=True)
        )


def assert_invalid(document: etree._Element) -> None:
    assert not schema().validate(document), etree.tostring(document, encoding="unicode")


# ---------------------------------------------------------------- schema and catalogue


def test_combined_schema_compiles() -> None:
    assert isinstance(schema(), etree.XMLSchema)


def test_schema_hygiene() -> None:
    for path in sorted(SCHEMAS.rglob("*.xsd")):
        root = _parse(path).getroot()
        assert root.get("elementFormDefault") == "qualified", path
        assert root.find(f".//{{{XS}}}any") is None, f"{path}: xs:any wildcard"
        assert root.find(f".//{{{XS}}}anyAttribute") is None, f"{path}: xs:anyAttribute"
        for node in root.iter(f"{{{XS}}}import", f"{{{XS}}}include"):
            location = node.get("schemaLocation", "")
            assert location and "://" not in location, f"{path}: {location}"
            assert (path.parent / location).is_file(), f"{path}: {location}"
        for pattern in root.iter(f"{{{XS}}}pattern"):
            assert "\\d" not in pattern.get("value", ""), f"{path}: \\d in a pattern"
    assert not (SCHEMAS / ".keep").exists()


def test_exactly_72_standard_and_42_extension_items() -> None:
    kinds = [(ns, appinfo.get("kind")) for ns, _, appinfo in items()]
    assert kinds.count((STD, "standard")) == 72
    assert kinds.count((EXT, "extension")) == 42
    assert len(kinds) == 114
    ids = [element.get("name") for _, element, _ in items()]
    assert len(set(ids)) == 114


def test_every_item_is_annotated() -> None:
    for _, element, appinfo in items():
        name = element.get("name")
        assert re.fullmatch(r"[a-z][A-Za-z0-9]*", name), name
        assert _documentation(element, "ja"), f"{name}: no ja documentation"
        assert _documentation(element, "en"), f"{name}: no en documentation"
        assert appinfo.get("rule") in RULES, name
        assert appinfo.get("personal") in ("true", "false"), name
        assert appinfo.get("unit") in ("", "JPY", "m2", "percent"), name
        assert appinfo.get("source"), f"{name}: no source"
        assert element.get("type"), f"{name}: items use named types"


def test_rules_match_types() -> None:
    expected = {
        "lg_code": "LocalGovernmentCode",
        "my_number": "MyNumber",
        "corporate_number": "CorporateNumber",
        "atena_number": "AtenaNumber",
        "resident_code": "ResidentCode",
        "date_birth": "ResidentDate",
    }
    for _, element, appinfo in items():
        rule, type_local = appinfo.get("rule"), element.get("type").rpartition(":")[2]
        if rule in expected:
            assert type_local == expected[rule], element.get("name")
        elif rule == "kana":
            assert type_local.startswith("Kana"), element.get("name")
        elif rule in ("date_event", "date_deadline"):
            assert type_local == "Date", element.get("name")
        else:
            assert type_local not in expected.values(), element.get("name")


def test_kana_types_use_the_exact_pattern() -> None:
    for name in ("Kana100", "Kana200"):
        node = index()["simpleType"][f"{{{STD}}}{name}"]
        assert node.find(f".//{{{XS}}}pattern").get("value") == KANA_PATTERN


def test_code_lists_match_enumerations() -> None:
    used = set()
    for _, element, appinfo in items():
        stem = appinfo.get("codeList")
        values = enumeration(_qname(element, element.get("type")))
        if not stem:
            assert not values, f"{element.get('name')}: enumeration without codeList"
            continue
        used.add(stem)
        rows = read_codes(stem)
        codes = [row["code"] for row in rows]
        assert len(codes) == len(set(codes)), stem
        assert values == codes, f"{element.get('name')}: {stem}.csv and the enumeration differ"
        for row in rows:
            assert row["name_ja"] and row["name_en"], (stem, row)
    stems = {p.stem for p in (SCHEMAS / "codes").glob("*.csv")} - {"era"}
    assert stems == used, "every code list is used by an item, and every used one exists"


def test_code_list_csv_headers() -> None:
    for path in sorted((SCHEMAS / "codes").glob("*.csv")):
        if path.stem == "era":
            continue
        with path.open(encoding="utf-8", newline="") as handle:
            head = next(csv.reader(handle))
        assert head[:3] == ["code", "name_ja", "name_en"], path.name


def test_required_code_lists_are_complete() -> None:
    land = [row["name_ja"] for row in read_codes("land_category")]
    assert len(land) == 23 and land[0] == "田" and land[-1] == "雑種地"
    reasons = read_codes("change_reason")
    by_category = {c: [r for r in reasons if r["category"] == c] for c in ("記載", "消除", "修正")}
    assert sum(len(v) for v in by_category.values()) == len(reasons)
    assert [len(v) for v in by_category.values()] == [9, 9, 19]
    names = {r["name_ja"] for r in reasons}
    assert {"国内転入", "出生", "死亡", "世帯主変更", "通称の削除", "異動の取消し（修正）"} <= names
    taxes = {row["name_ja"] for row in read_codes("tax_item")}
    assert {"個人住民税", "法人住民税", "固定資産税", "都市計画税", "国民健康保険税"} <= taxes
    assert [r["code"] for r in read_codes("execution_suspension_reason")] == ["1", "2", "3"]


# ---------------------------------------------------------------- services


def _service_refs() -> tuple[set[str], set[str]]:
    """(refs outside any Extension, refs inside an Extension), expanding ext containers."""
    outside: set[str] = set()
    inside: set[str] = set()
    for name, root in schema_docs().items():
        if not name.startswith("services/"):
            continue
        for node in root.iter(f"{{{XS}}}element"):
            if node.get("ref") is None:
                continue
            in_ext = any(
                a.get("name") == "Extension" for a in node.iterancestors(f"{{{XS}}}element")
            )
            (inside if in_ext else outside).add(_qname(node, node.get("ref")))
    pending = list(inside)
    while pending:
        decl = index()["element"][pending.pop()]
        for node in decl.iter(f"{{{XS}}}element"):
            if node.get("ref") and _qname(node, node.get("ref")) not in inside:
                inside.add(_qname(node, node.get("ref")))
                pending.append(_qname(node, node.get("ref")))
    return outside, inside


def test_every_item_is_referenced_by_a_service() -> None:
    outside, inside = _service_refs()
    for ns, element, _ in items():
        assert f"{{{ns}}}{element.get('name')}" in outside | inside, element.get("name")


def test_extension_items_only_inside_extension_blocks() -> None:
    outside, inside = _service_refs()
    assert not {q for q in outside if q.startswith(f"{{{EXT}}}")}
    assert inside and all(q.startswith(f"{{{EXT}}}") for q in inside)


def test_service_elements() -> None:
    elements = index()["element"]
    declared = {k.rpartition("}")[2] for k in elements if k.startswith(f"{{{SVC}}}")}
    assert declared == set(SERVICES)
    for service in SERVICES:
        decl = elements[f"{{{SVC}}}{service}"]
        assert decl.get("substitutionGroup") == "env:Service", service
        assert _documentation(decl, "ja") and _documentation(decl, "en"), service
    services_xsd = _parse(SCHEMAS / "services.xsd").getroot()
    included = {n.get("schemaLocation") for n in services_xsd.iter(f"{{{XS}}}include")}
    assert included == {f"services/{p.name}" for p in (SCHEMAS / "services").glob("*.xsd")}


@pytest.mark.parametrize("service", SERVICES)
def test_minimal_message_validates(service: str) -> None:
    assert_valid(message(service, full=False))


@pytest.mark.parametrize("service", SERVICES)
def test_full_message_validates(service: str) -> None:
    assert_valid(message(service, full=True))


def test_full_messages_cover_every_item() -> None:
    seen = set()
    for service in SERVICES:
        seen |= {el.tag for el in message(service, full=True).iter()}
    for ns, element, _ in items():
        assert f"{{{ns}}}{element.get('name')}" in seen, element.get("name")


def _find(document: etree._Element, ns: str, local: str) -> etree._Element:
    found = document.find(f".//{{{ns}}}{local}")
    assert found is not None, local
    return found


def test_extension_item_outside_extension_fails() -> None:
    document = message("DelinquencyActionNotice", full=True)
    amount = _find(document, EXT, "delinquentAmount")
    service = document[1]
    service.insert(len(service) - 1, copy.deepcopy(amount))  # just before svc:Extension
    assert_invalid(document)
    document = message("DelinquencyActionNotice", full=True)
    _find(document, SVC, "Extension").getparent().remove(_find(document, SVC, "Extension"))
    document[1].append(copy.deepcopy(amount))  # in place of the Extension block
    assert_invalid(document)


@pytest.mark.parametrize(
    "tag", [f"{{{EXT}}}unknownItem", "{urn:example:vendor}note", f"{{{STD}}}name"]
)
def test_unknown_element_inside_extension_fails(tag: str) -> None:
    document = message("RegistrationNotice", full=True)
    etree.SubElement(_find(document, SVC, "Extension"), tag).text = "x"
    assert_invalid(document)


def test_envelope_rules() -> None:
    document = message("ResidentChangeNotice", full=False)
    document.append(copy.deepcopy(document[1]))
    assert_invalid(document)  # exactly one service element
    document = message("ResidentChangeNotice", full=False)
    _find(document, ENV, "issuedAt").text = "2024-04-01T09:00:00"
    assert_invalid(document)  # zone required
    _find(document, ENV, "issuedAt").text = "2024-04-01T00:00:00Z"
    assert_valid(document)
    _find(document, ENV, "messageId").text = "3F2B8C1E-4D5A-4B6C-8D7E-9F0A1B2C3D4E"
    assert_invalid(document)  # lowercase hex only
    document = message("ResidentChangeNotice", full=False)
    document[1].tag = f"{{{ENV}}}Service"
    assert_invalid(document)  # the head is abstract


@pytest.mark.parametrize(
    ("local", "value", "valid"),
    [
        ("addresseeNumber", "１２３４５", False),  # full-width digits
        ("addresseeNumber", "1234567890123456", False),
        ("myNumber", "98320567321", False),
        ("localGovernmentCode", "41201", False),
        ("nameKana", "サガ\u3000タロウ", True),
        ("nameKana", "サガ タロウ", False),  # half-width space
        ("nameKana", "サガ\u3000\u3000タロウ", False),
        ("nameKana", "ｻｶﾞ", False),
        ("nameKana", "さが", False),
        ("changeReason", "999", False),
        ("notificationDate", "2024-04-01+09:00", False),
        ("notificationDate", "2023-02-29", False),
    ],
)
def test_item_facets(local: str, value: str, valid: bool) -> None:
    document = message("ResidentChangeNotice", full=True)
    _find(document, STD, local).text = value
    assert schema().validate(document) is valid, schema().error_log


def test_resident_dates_keep_non_calendar_text() -> None:
    document = message("ResidentChangeNotice", full=True)
    birth = _find(document, STD, "dateOfBirth")
    for text in ("明治45年7月30日", "年月日不詳", "平成5年2月29日", "令和○年頃"):
        birth.text = text
        assert_valid(document)
    birth.set("iso", "1912-07-30")
    assert_valid(document)
    birth.set("iso", "1993-02-29")
    assert_invalid(document)


def test_text_items_take_an_alt_attribute() -> None:
    document = message("ResidentChangeNotice", full=True)
    name = _find(document, STD, "name")
    name.text = "\ue000田\u3000太郎"
    name.set("alt", "吉田\u3000太郎")
    assert_valid(document)
    name.set("lang", "ja")
    assert_invalid(document)


def test_share_and_corporate_subject() -> None:
    document = message("PaymentNotice", full=False)
    subject = _find(document, STD, "addresseeNumber")
    subject.tag = f"{{{STD}}}corporateNumber"
    subject.text = "4011001098993"
    assert_valid(document)  # 法人住民税: the subject is the 法人番号
    document = message("RegistrationNotice", full=True)
    share = _find(document, EXT, "share")
    for text, valid in (("1/2", True), ("12/100", True), ("0/2", False), ("1/2 ", False)):
        share.text = text
        assert schema().validate(document) is valid, text


# ---------------------------------------------------------------- documentation


def test_catalogue_doc_mentions_every_item() -> None:
    text = CATALOGUE_DOC.read_text(encoding="utf-8")
    for _, element, _ in items():
        assert f"`{element.get('name')}`" in text, element.get("name")
    for service in SERVICES:
        assert service in text, service
