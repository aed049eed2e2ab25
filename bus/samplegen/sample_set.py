"""The shipped sample set: ``samples/messages/<Service>/valid-*.xml`` and ``invalid-*.xml``.

Each invalid sample is a well-formed PlatformMessage that breaks exactly one named rule; its
file name carries the code the validator must report (``invalid-RK-DOM002-….xml``). A
``valid-warning-<code>-…`` sample is valid but must carry that warning.
"""

from __future__ import annotations

import copy
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from datetime import date, timedelta
from pathlib import Path

from lxml import etree

from bus.catalogue import NS_ENVELOPE, NS_EXTENSION, NS_SERVICE, NS_STANDARD
from bus.samplegen.content_model import content_model
from bus.samplegen.messages import MessageSpec, build_message, serialize, to_soap
from bus.samplegen.values import TOWNS

FULL_WIDTH_DIGITS = str.maketrans("0123456789", "０１２３４５６７８９")


def _set(text: str) -> Callable[[etree._Element], None]:
    def apply(element: etree._Element) -> None:
        element.text = text

    return apply


def _plain_date(text: str, as_given: bool = False) -> Callable[[etree._Element], None]:
    def apply(element: etree._Element) -> None:
        element.attrib.clear()
        element.text = text
        if as_given:
            element.set("asGiven", "true")

    return apply


def _wrong_last_digit(element: etree._Element) -> None:
    text = element.text or "0"
    element.text = text[:-1] + str((int(text[-1]) + 1) % 10)


def _wrong_first_digit(element: etree._Element) -> None:
    text = element.text or "0"
    element.text = str(int(text[0]) % 9 + 1) + text[1:]


def _full_width(element: etree._Element) -> None:
    element.text = (element.text or "").translate(FULL_WIDTH_DIGITS)


def _iso_off_by_one(element: etree._Element) -> None:
    element.set("iso", (date.fromisoformat(element.get("iso", "")) + timedelta(days=1)).isoformat())


def _remove(element: etree._Element) -> None:
    parent = element.getparent()
    if parent is not None:
        parent.remove(element)


def _copy_before_extension(element: etree._Element) -> None:
    """An extension item placed outside the Extension block."""
    block = element.getparent()
    while block is not None and block.tag != f"{{{NS_SERVICE}}}Extension":
        block = block.getparent()
    if block is not None:
        block.addprevious(copy.deepcopy(element))


@dataclass(frozen=True, slots=True)
class Breakage:
    code: str
    slug: str
    tag: str  # the element it breaks (the first one found in the document)
    apply: Callable[[etree._Element], None]


def _std(local: str) -> str:
    return f"{{{NS_STANDARD}}}{local}"


BREAKAGES: tuple[Breakage, ...] = (
    Breakage("RK-DOM002", "my-number-check-digit", _std("myNumber"), _wrong_last_digit),
    Breakage(
        "RK-DOM003", "corporate-number-check-digit", _std("corporateNumber"), _wrong_first_digit
    ),
    Breakage("RK-DOM010", "wareki-outside-era", _std("dateOfBirth"), _plain_date("平成32年1月1日")),
    Breakage(
        "RK-DOM011",
        "unknown-date-not-kept-as-given",
        _std("dateOfBirth"),
        _plain_date("年月日不詳"),
    ),
    Breakage(
        "RK-DOM012",
        "non-calendar-date-not-kept-as-given",
        _std("dateOfBirth"),
        _plain_date("平成5年2月29日"),
    ),
    Breakage("RK-DOM013", "iso-differs-from-written-date", _std("dateOfBirth"), _iso_off_by_one),
    Breakage("RK-DOM020", "emoji-in-name", _std("name"), _set("佐賀\u3000太郎\U0001f600")),
    Breakage("RK-DOM021", "gaiji-without-alt", _std("name"), _set("\ue000田\u3000太郎")),
    Breakage("RK-DOM022", "lone-variation-selector", _std("name"), _set("\U000e0100田\u3000太郎")),
    Breakage("RK-XSD001", "postal-code-full-width-digits", _std("postalCode"), _full_width),
    Breakage("RK-XSD001", "kana-in-hiragana", _std("nameKana"), _set("さが\u3000たろう")),
    Breakage("RK-XSD001", "share-zero-numerator", f"{{{NS_EXTENSION}}}share", _set("0/2")),
    Breakage("RK-XSD002", "unknown-land-category", _std("landCategory"), _set("ZZ")),
    Breakage("RK-XSD002", "unknown-tax-item", _std("taxItem"), _set("ZZ")),
    Breakage("RK-XSD003", "name-too-long", _std("name"), _set("佐" * 101)),
    Breakage("RK-XSD004", "change-reason-missing", _std("changeReason"), _remove),
    Breakage("RK-XSD004", "levy-amount-missing", _std("levyAmount"), _remove),
    Breakage("RK-XSD004", "insured-number-missing", _std("insuredNumber"), _remove),
    Breakage(
        "RK-XSD005",
        "extension-item-outside-extension",
        f"{{{NS_EXTENSION}}}delinquentAmount",
        _copy_before_extension,
    ),
    Breakage("RK-XSD006", "date-that-does-not-exist", _std("paymentDate"), _set("2026-02-30")),
    Breakage(
        "RK-XSD006", "acquired-date-month-13", _std("qualificationAcquiredDate"), _set("2025-13-01")
    ),
    Breakage(
        "RK-XSD006", "notification-date-not-a-date", _std("notificationDate"), _set("令和6年4月1日")
    ),
    Breakage("RK-XSD007", "negative-levy-amount", _std("levyAmount"), _set("-100")),
    Breakage(
        "RK-XSD008",
        "birth-iso-attribute-not-a-date",
        _std("dateOfBirth"),
        lambda element: element.set("iso", "1993-02-29"),
    ),
    Breakage(
        "RK-ENV003",
        "header-names-another-service",
        f"{{{NS_ENVELOPE}}}service/{{{NS_ENVELOPE}}}name",
        _set("LevyNotice"),
    ),
    Breakage(
        "RK-DOM001",
        "local-government-code-check-digit",
        _std("localGovernmentCode"),
        _wrong_last_digit,
    ),
)
WARNINGS: tuple[Breakage, ...] = (
    Breakage(
        "RK-DOM004", "addressee-number-check-digit", _std("addresseeNumber"), _wrong_last_digit
    ),
    Breakage("RK-DOM005", "resident-code-check-digit", _std("residentCode"), _wrong_last_digit),
)
# Every applicable breakage is shown on the resident notice; other services show two each,
# plus the local government code, which every service carries.
SHOWCASE = "ResidentChangeNotice"
PER_SERVICE = 2


@dataclass(frozen=True, slots=True)
class Sample:
    service: str
    name: str
    document: etree._Element

    def write(self, directory: Path) -> Path:
        path = directory / self.service / f"{self.name}.xml"
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(serialize(self.document))
        return path


def _element(document: etree._Element, tag: str) -> etree._Element:
    found = document.find(f".//{tag}")
    if found is None:
        raise LookupError(f"sample has no {tag}")
    return found


def _broken(document: etree._Element, breakage: Breakage) -> etree._Element | None:
    broken = copy.deepcopy(document)
    target = broken.find(f".//{breakage.tag}")
    if target is None:
        return None
    breakage.apply(target)
    return broken


def _special_valid(service: str, town_index: int) -> Iterator[tuple[str, etree._Element]]:
    if service != SHOWCASE:
        return
    base = build_message(MessageSpec(service, 101, TOWNS[town_index]))
    yield "valid-soap-binding", to_soap(copy.deepcopy(base))
    for name, text, attrs in (
        ("valid-meiji-era-change-day", "明治45年7月30日", {"iso": "1912-07-30"}),
        ("valid-unknown-birth-date-kept-as-given", "年月日不詳", {"asGiven": "true"}),
        ("valid-non-calendar-date-kept-as-given", "大正8年2月29日", {"asGiven": "true"}),
    ):
        document = copy.deepcopy(base)
        birth = _element(document, _std("dateOfBirth"))
        _plain_date(text)(birth)
        for key, value in attrs.items():
            birth.set(key, value)
        yield name, document
    document = copy.deepcopy(base)
    name_element = _element(document, _std("name"))
    name_element.text = "\ue000田\u3000花子"
    name_element.set("alt", "吉田\u3000花子")
    yield "valid-gaiji-with-alt", document


def sample_set() -> Iterator[Sample]:
    """Every sample, deterministically (the same bytes on every run)."""
    for index, service in enumerate(content_model().services()):
        town_index = index % len(TOWNS)
        full = build_message(MessageSpec(service, 1000 + index, TOWNS[town_index]))
        yield Sample(service, "valid-full", full)
        minimal = build_message(MessageSpec(service, 2000 + index, TOWNS[town_index], full=False))
        yield Sample(service, "valid-minimal", minimal)
        for name, document in _special_valid(service, town_index):
            yield Sample(service, name, document)
        for breakage in WARNINGS:
            broken = _broken(full, breakage)
            if broken is not None and service == SHOWCASE:
                yield Sample(service, f"valid-warning-{breakage.code}-{breakage.slug}", broken)
        applicable = [(b, d) for b in BREAKAGES if (d := _broken(full, b)) is not None]
        if service != SHOWCASE:
            common = [pair for pair in applicable if pair[0].code == "RK-DOM001"]
            others = [pair for pair in applicable if pair[0].code != "RK-DOM001"]
            start = index % max(len(others), 1)
            applicable = [*(others[start:] + others[:start])[:PER_SERVICE], *common]
        for breakage, broken in applicable:
            yield Sample(service, f"invalid-{breakage.code}-{breakage.slug}", broken)


def write_sample_set(directory: Path) -> list[Path]:
    return [sample.write(directory) for sample in sample_set()]
