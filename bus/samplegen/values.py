"""Realistic values for the six Saga pilot towns: names with variant kanji, real-looking
addresses, valid check digits. Nothing here is a real person or property."""

from __future__ import annotations

import random
from dataclasses import dataclass, field
from datetime import date, timedelta

from lxml import etree

from bus.rules.check_digits import (
    atena_number_check_digit,
    corporate_number_check_digit,
    my_number_check_digit,
    resident_code_check_digit,
)
from bus.samplegen.content_model import ContentModel
from bus.wareki import format_wareki, from_gregorian


@dataclass(frozen=True, slots=True)
class Town:
    code: str
    name: str
    address: str
    postal_code: str
    registry_office: str


# 武雄市 鹿島市 嬉野市 大町町 江北町 白石町 (the pilot), with plausible 大字 and 郵便番号.
TOWNS: tuple[Town, ...] = (
    Town("412066", "武雄市", "佐賀県武雄市武雄町大字武雄", "8430022", "佐賀地方法務局武雄支局"),
    Town("412074", "鹿島市", "佐賀県鹿島市大字納富分", "8491311", "佐賀地方法務局武雄支局"),
    Town("412091", "嬉野市", "佐賀県嬉野市嬉野町大字下宿", "8430301", "佐賀地方法務局武雄支局"),
    Town("414239", "大町町", "佐賀県杵島郡大町町大字大町", "8492101", "佐賀地方法務局武雄支局"),
    Town("414247", "江北町", "佐賀県杵島郡江北町大字山口", "8490501", "佐賀地方法務局武雄支局"),
    Town("414255", "白石町", "佐賀県杵島郡白石町大字福田", "8491192", "佐賀地方法務局武雄支局"),
)

# (surname, kana): Saga names and the variant kanji staff really see (髙, 﨑, 邉, 齋, 𠮷, 德).
SURNAMES = (
    ("髙橋", "タカハシ"),
    ("山﨑", "ヤマサキ"),
    ("渡邉", "ワタナベ"),
    ("齋藤", "サイトウ"),
    ("𠮷田", "ヨシダ"),
    ("德永", "トクナガ"),
    ("古賀", "コガ"),
    ("江口", "エグチ"),
    ("松尾", "マツオ"),
    ("中島", "ナカシマ"),
    ("池田", "イケダ"),
    ("副島", "ソエジマ"),
    ("鶴田", "ツルタ"),
    ("樋口", "ヒグチ"),
    ("陣内", "ジンノウチ"),
    ("納富", "ノウドミ"),
)
GIVEN_NAMES = (
    ("太郎", "タロウ"),
    ("花子", "ハナコ"),
    ("健一", "ケンイチ"),
    ("陽菜", "ヒナ"),
    ("翔太", "ショウタ"),
    ("美咲", "ミサキ"),
    ("浩二", "コウジ"),
    ("恵美", "エミ"),
    ("蓮", "レン"),
    ("結衣", "ユイ"),
    ("昭", "アキラ"),
    ("ヨシ", "ヨシ"),
)
BUILDINGS = ("コーポ嬉野", "メゾン武雄", "ハイツ白石", "グリーンヒル鹿島")
STRUCTURES = ("木造瓦葺2階建", "鉄骨造スレート葺平家建", "鉄筋コンクリート造陸屋根3階建")
BUILDING_KINDS = ("居宅", "店舗", "倉庫", "共同住宅", "車庫")
PURPOSES = ("所有権移転", "所有権保存", "抵当権設定", "所有権移転請求権仮登記")
CAUSES = ("売買", "相続", "贈与", "新築", "設定")
CORPORATIONS = ("株式会社有明フーズ", "嬉野温泉観光有限会社", "合同会社ムツゴロウ物産")
SEIZED = ("普通預金（佐賀銀行 武雄支店）", "給与債権（一部）", "土地 武雄町大字武雄字川原123番")
NEGOTIATIONS = ("電話にて納付相談。分納誓約書の提出を約す。", "窓口来庁。生活状況を聴取。")


def _digits(rng: random.Random, n: int) -> str:
    return "".join(rng.choice("0123456789") for _ in range(n))


@dataclass(slots=True)
class Person:
    """One resident, consistent across every item of a message."""

    surname: tuple[str, str]
    given: tuple[str, str]
    birth: date
    town: Town
    street: str
    addressee_number: str
    household_number: str
    my_number: str
    resident_code: str

    @property
    def name(self) -> str:
        return f"{self.surname[0]}\u3000{self.given[0]}"

    @property
    def kana(self) -> str:
        return f"{self.surname[1]}\u3000{self.given[1]}"


def atena_number(rng: random.Random) -> str:
    base = _digits(rng, 9)
    return base + str(atena_number_check_digit(base))


def new_person(rng: random.Random, town: Town) -> Person:
    my_base, code_base = _digits(rng, 11), _digits(rng, 10)
    return Person(
        surname=rng.choice(SURNAMES),
        given=rng.choice(GIVEN_NAMES),
        birth=date(1930, 1, 1) + timedelta(days=rng.randrange(0, 33000)),
        town=town,
        street=f"{rng.randrange(1, 3000)}番地{rng.randrange(1, 30)}",
        addressee_number=atena_number(rng),
        household_number=atena_number(rng),
        my_number=my_base + str(my_number_check_digit(my_base)),
        resident_code=code_base + str(resident_code_check_digit(code_base)),
    )


def corporate_number(rng: random.Random) -> str:
    base = _digits(rng, 12)
    return str(corporate_number_check_digit(base)) + base


def resident_date(day: date) -> tuple[str, str]:
    """(the date as a registry writes it, in 和暦, and its ISO form)."""
    wareki = from_gregorian(day)
    return (format_wareki(wareki) if wareki else day.isoformat()), day.isoformat()


@dataclass(slots=True)
class ValueFiller:
    """Fills each leaf with a value that fits its item, for one message's subject."""

    model: ContentModel
    rng: random.Random
    person: Person
    today: date
    other: Person = field(init=False)

    def __post_init__(self) -> None:
        self.other = new_person(self.rng, self.person.town)

    def __call__(self, element: etree._Element, type_qname: str) -> None:
        item = etree.QName(element).localname
        type_local = etree.QName(type_qname).localname
        codes = self.model.enumeration(type_qname)
        if codes:
            element.text = self.rng.choice(codes)
        elif type_local == "ResidentDate":
            day = self.person.birth if item == "dateOfBirth" else self._day(-3000, -10)
            element.text, iso = resident_date(day)
            element.set("iso", iso)
        else:
            element.text = self._value(item, type_local)

    def _day(self, start: int, end: int) -> date:
        return self.today + timedelta(days=self.rng.randrange(start, end))

    def _value(self, item: str, type_local: str) -> str:
        p, rng, town = self.person, self.rng, self.person.town
        n = rng.randrange
        by_item: dict[str, str] = {
            "localGovernmentCode": town.code,
            "addresseeNumber": p.addressee_number,
            "householdNumber": p.household_number,
            "residentCode": p.resident_code,
            "myNumber": p.my_number,
            "name": p.name,
            "nameKana": p.kana,
            "formerSurname": self.other.surname[0],
            "formerSurnameKana": self.other.surname[1],
            "commonName": p.name,
            "headOfHouseholdName": p.name,
            "familyRegisterHead": p.name,
            "postalCode": town.postal_code,
            "address": f"{town.address}{p.street}",
            "addressSupplement": f"{rng.choice(BUILDINGS)}{n(1, 4)}0{n(1, 9)}号",
            "registeredDomicile": f"{town.address}{rng.randrange(1, 3000)}番地",
            "previousAddress": f"福岡県福岡市中央区天神{n(1, 5)}丁目{n(1, 20)}番",
            "plannedDestinationAddress": f"長崎県佐世保市島瀬町{rng.randrange(1, 20)}番",
            "nationality": "日本",
            "addressCode": _digits(rng, 11),
            "noticeNumber": f"R{rng.randrange(5, 8):02d}-{_digits(rng, 6)}",
            "corporateNumber": corporate_number(rng),
            "corporateName": rng.choice(CORPORATIONS),
            "corporateAddress": f"{town.address}{rng.randrange(1, 999)}番地",
            "insuredCardSymbol": f"佐{rng.randrange(1, 99):02d}",
            "insuredNumber": _digits(rng, 8),
            "propertyLocation": town.address.removeprefix("佐賀県") + "字川原",
            "lotNumber": f"{rng.randrange(1, 3000)}番{rng.randrange(1, 20)}",
            "buildingNumber": f"{n(1, 3000)}番{n(1, 20)}の{n(1, 5)}",
            "buildingKind": rng.choice(BUILDING_KINDS),
            "structure": rng.choice(STRUCTURES),
            "delinquencyCaseNumber": f"T{rng.randrange(2019, 2026)}-{_digits(rng, 5)}",
            "negotiationRecord": rng.choice(NEGOTIATIONS),
            "seizedPropertyDescription": rng.choice(SEIZED),
            "realEstateNumber": _digits(rng, 13),
            "registryOfficeName": town.registry_office,
            "receiptNumber": str(rng.randrange(1, 99999)),
            "registrationPurpose": rng.choice(PURPOSES),
            "registrationCause": rng.choice(CAUSES),
            "rightHolderName": self.other.name,
            "rightHolderNameKana": self.other.kana,
            "rightHolderAddress": f"{town.address}{self.other.street}",
            "share": rng.choice(("1/1", "1/2", "2/3", "1/4")),
            "obligorName": p.name,
            "obligorAddress": f"{town.address}{p.street}",
        }
        if item in by_item:
            return by_item[item]
        return self._by_type(item, type_local)

    def _by_type(self, item: str, type_local: str) -> str:
        rng = self.rng
        if type_local == "Date":
            return self._day(-700, 300).isoformat()
        if type_local == "Year":
            return str(self.today.year - rng.randrange(0, 3))
        if type_local in ("Amount", "SignedAmount"):
            return str(rng.randrange(1, 5000) * 100)
        if type_local == "Area":
            return f"{rng.randrange(30, 2000)}.{rng.randrange(0, 100):02d}"
        if type_local == "Flag":
            return rng.choice(("true", "false"))
        if type_local == "Count":
            return str(rng.randrange(2, 36))
        if type_local == "SequenceNumber":
            return str(rng.randrange(1, 6))
        if type_local == "InstallmentPeriod":
            return f"{rng.randrange(1, 5):02d}"
        raise LookupError(f"no sample value for item {item} of type {type_local}")
