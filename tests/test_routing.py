"""The Route stage: recipient lists, predicates on catalogue fields (never prefixes),
inquiries, replies and relatesTo."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from lxml import etree

from bus.catalogue import NS_ENVELOPE, NS_EXTENSION, NS_SERVICE, NS_STANDARD
from bus.config.index import ConfigIndex
from bus.config.models import Condition, HubConfig, Route, Subscriber, System, Tenant
from bus.pipeline import Message, Severity
from bus.routing import RelatedMessage, RouteStage, condition_holds, message_kind
from bus.validation.stage import ValidateStage
from bus.validation.validator import Validator

SAMPLES = Path(__file__).resolve().parent.parent / "samples" / "messages"
TENANT = "414247"  # 江北町
MOVE_OUT = ("201", "202", "203", "301")


def _config(*routes: Route) -> HubConfig:
    systems = tuple(
        System(id=name, name=name) for name in ("juki", "zeimu", "kokuho", "shuno", "tainou")
    )
    return HubConfig(tenants=(Tenant(code=TENANT, name="江北町"),), systems=systems, routes=routes)


RESIDENT_ROUTE = Route(
    service="ResidentChangeNotice",
    subscribers=(
        Subscriber(system="zeimu"),
        Subscriber(system="kokuho"),
        Subscriber(
            system="tainou",
            when=(Condition.model_validate({"field": "changeReason", "in": MOVE_OUT}),),
        ),
    ),
)


@pytest.fixture(scope="module")
def validate() -> ValidateStage:
    return ValidateStage(Validator())


def _stage(config: HubConfig, related: dict[str, tuple[str, ...]] | None = None) -> RouteStage:
    """``related``: messageId → the destinations of that earlier message of the sender."""
    index = ConfigIndex(config)
    stored = {
        mid: RelatedMessage("notification", tuple((d, "") for d in destinations))
        for mid, destinations in (related or {}).items()
    }
    return RouteStage(index.route, lambda sender, mid: stored.get(mid))


def _route(stage: RouteStage, validate: ValidateStage, data: bytes) -> Message:
    message = validate(Message(raw=data, adapter="test"))
    assert not message.rejected, [f.code for f in message.findings]
    return stage(message)


def _resident(reason: str) -> bytes:
    text = (SAMPLES / "ResidentChangeNotice" / "valid-full.xml").read_text(encoding="utf-8")
    text = text.replace(
        "<std:changeReason>107</std:changeReason>", f"<std:changeReason>{reason}</std:changeReason>"
    )
    return text.encode("utf-8")


def _rebuild(
    element: etree._Element, parent: etree._Element | None, maps: dict[str, dict[str | None, str]]
) -> Any:
    ns = etree.QName(element).namespace or ""
    # lxml accepts None (the default namespace) as a key; its stubs do not say so.
    nsmap: Any = maps.get(ns)
    if parent is None:
        copy = etree.Element(element.tag, nsmap=nsmap)
    else:
        copy = etree.SubElement(parent, element.tag, nsmap=nsmap)
    copy.text, copy.tail = element.text, element.tail
    for key, value in element.attrib.items():
        copy.set(key, value)
    for child in element:
        if isinstance(child.tag, str):
            _rebuild(child, copy, maps)
    return copy


def rewrite_prefixes(data: bytes, maps: dict[str, dict[str | None, str]]) -> bytes:
    """The same document, with the namespace declarations ``maps`` gives per namespace."""
    root = etree.fromstring(data)
    return etree.tostring(_rebuild(root, None, maps), encoding="UTF-8", xml_declaration=True)


REWRITES: dict[str, dict[str, dict[str | None, str]]] = {
    "a/b prefixes": {
        NS_ENVELOPE: {"a": NS_ENVELOPE, "s": NS_SERVICE},
        NS_STANDARD: {"b": NS_STANDARD},
    },
    "default namespaces": {
        NS_ENVELOPE: {None: NS_ENVELOPE},
        NS_SERVICE: {None: NS_SERVICE},
        NS_STANDARD: {None: NS_STANDARD},
    },
    # The trap for flow tools matching prefixed keys: "std" now names the extension
    # namespace and "ext" the standard one.
    "swapped std/ext": {
        NS_ENVELOPE: {"env": NS_ENVELOPE, "svc": NS_SERVICE},
        NS_SERVICE: {"std": NS_EXTENSION, "ext": NS_STANDARD},
    },
}


def _destinations(message: Message) -> list[str]:
    return [delivery.destination for delivery in message.deliveries]


@pytest.mark.parametrize("reason", ["107", "201", "203", "301"])
def test_predicate_on_change_reason(validate: ValidateStage, reason: str) -> None:
    message = _route(_stage(_config(RESIDENT_ROUTE)), validate, _resident(reason))
    expected = ["zeimu", "kokuho"] + (["tainou"] if reason in MOVE_OUT else [])
    assert _destinations(message) == expected
    assert message.kind == "notification"
    assert all(d.subject == "8842282030" and d.tenant == TENANT for d in message.deliveries)
    assert message.deliveries[0].message_id == "de748862-4821-434d-8d7b-7a6494de5047"


@pytest.mark.parametrize("rewrite", sorted(REWRITES))
@pytest.mark.parametrize("reason", ["107", "203"])
def test_prefix_rewritten_message_routes_identically(
    validate: ValidateStage, rewrite: str, reason: str
) -> None:
    original = _resident(reason)
    rewritten = rewrite_prefixes(original, REWRITES[rewrite])
    assert rewritten != original
    if rewrite == "swapped std/ext":
        assert b"<std:changeReason" not in rewritten  # the standard item now reads ext:…
        assert f"<ext:changeReason>{reason}<".encode() in rewritten
    stage = _stage(_config(RESIDENT_ROUTE))
    assert _destinations(_route(stage, validate, rewritten)) == _destinations(
        _route(stage, validate, original)
    )


def test_conditions_match_namespace_not_local_name_alone() -> None:
    service = etree.fromstring(
        f'<s:ResidentChangeNotice xmlns:s="{NS_SERVICE}" xmlns:o="urn:other">'
        "<o:changeReason>203</o:changeReason></s:ResidentChangeNotice>"
    )
    condition = Condition.model_validate({"field": "changeReason", "in": MOVE_OUT})
    assert not condition_holds(condition, service)
    etree.SubElement(service, f"{{{NS_STANDARD}}}changeReason").text = "203"
    assert condition_holds(condition, service)


def test_equals_in_exists_on_extension_items(validate: ValidateStage) -> None:
    def route(*conditions: dict[str, Any]) -> list[str]:
        when = tuple(Condition.model_validate(c) for c in conditions)
        config = _config(
            Route(
                service="DelinquencyActionNotice",
                subscribers=(Subscriber(system="shuno"), Subscriber(system="zeimu", when=when)),
            )
        )
        data = (SAMPLES / "DelinquencyActionNotice" / "valid-full.xml").read_bytes()
        return _destinations(_route(_stage(config), validate, data))

    assert route({"field": "actionKind", "equals": "04"}) == ["shuno", "zeimu"]
    assert route({"field": "actionKind", "equals": "05"}) == ["shuno"]
    assert route({"field": "actionKind", "in": ["01", "04"]}) == ["shuno", "zeimu"]
    assert route({"field": "reminderType", "exists": True}) == ["shuno", "zeimu"]
    assert route({"field": "reminderType", "exists": False}) == ["shuno"]
    assert route({"field": "changeReason", "exists": True}) == ["shuno"]  # not in this service
    # all conditions must hold
    assert route(
        {"field": "actionKind", "equals": "04"}, {"field": "reminderType", "equals": "01"}
    ) == ["shuno"]


def test_no_subscriber_is_a_warning_and_no_delivery(validate: ValidateStage) -> None:
    data = (SAMPLES / "LevyNotice" / "valid-full.xml").read_bytes()
    message = _route(_stage(_config(RESIDENT_ROUTE)), validate, data)
    assert message.deliveries == []
    assert [(f.code, f.severity) for f in message.findings if f.code.startswith("RK-RTE")] == [
        ("RK-RTE001", Severity.WARNING)
    ]
    assert not message.rejected


def test_inquiry_needs_a_provider(validate: ValidateStage) -> None:
    data = (SAMPLES / "AddresseeInquiry" / "valid-full.xml").read_bytes()
    without = _route(_stage(_config(RESIDENT_ROUTE)), validate, data)
    assert without.kind == "inquiry" and without.rejected
    assert "RK-RTE002" in [f.code for f in without.findings]
    with_provider = _route(
        _stage(_config(Route(service="AddresseeInquiry", provider="juki"))), validate, data
    )
    assert with_provider.kind == "inquiry" and not with_provider.rejected
    assert with_provider.deliveries == []  # request-reply: sent by the Reply stage, not queued


def test_kinds() -> None:
    assert message_kind("AddresseeInquiryReply") == "reply"
    assert message_kind("TaxAssessmentInquiry") == "inquiry"
    assert message_kind("DelinquencyInquiry") == "inquiry"
    assert message_kind("PaymentNotice") == "notification"


def test_reply_is_not_routed(validate: ValidateStage) -> None:
    data = (SAMPLES / "AddresseeInquiryReply" / "valid-full.xml").read_bytes()
    message = _route(_stage(_config(RESIDENT_ROUTE)), validate, data)
    assert message.kind == "reply" and message.deliveries == [] and not message.findings


def test_relates_to_follows_the_original(validate: ValidateStage) -> None:
    original_id = "11111111-2222-4333-8444-555555555555"
    text = _resident("107").decode("utf-8")
    text = text.replace(
        "<env:service>", f"<env:relatesTo>{original_id}</env:relatesTo>\n    <env:service>", 1
    )
    data = text.encode("utf-8")
    # the original went to tainou too (it was a 転出): the 訂正 follows it there
    stage = _stage(_config(RESIDENT_ROUTE), {original_id: ("zeimu", "tainou", "kokuho")})
    message = _route(stage, validate, data)
    assert _destinations(message) == ["zeimu", "tainou", "kokuho"]
    # unknown original: the route table decides
    message = _route(_stage(_config(RESIDENT_ROUTE)), validate, data)
    assert _destinations(message) == ["zeimu", "kokuho"]


def test_sample_configuration_routes(validate: ValidateStage) -> None:
    from bus.config.snapshots import load_directory

    loaded = load_directory(Path(__file__).resolve().parent.parent / "samples" / "config")
    stage = RouteStage(loaded.index.route, lambda tenant, mid: None)
    message = _route(stage, validate, _resident("203"))
    assert "tainou" in _destinations(message)
    message = _route(stage, validate, _resident("107"))
    assert "tainou" not in _destinations(message) and _destinations(message)
