"""The mapping engine's operations and formats, on small mapping files written in the test."""

from __future__ import annotations

import textwrap
from collections.abc import Callable
from pathlib import Path

import pytest

from bus.mapping import Mapping, MappingError, load_mapping
from bus.mapping.hooks import register_codec
from bus.mapping.operations import format_date
from bus.mapping.text import to_full_width, to_half_width, to_katakana

HEADER = "system: vendor\nnamespaces: {v: 'urn:example:vendor'}\n"
Write = Callable[[str], Mapping]


@pytest.fixture
def write(tmp_path: Path) -> Write:
    (tmp_path / "tables").mkdir()
    (tmp_path / "tables" / "sex.csv").write_text("system,standard\nM,1\nF,2\n", encoding="utf-8")
    (tmp_path / "tables" / "offices.csv").write_text("key,name\n01,武雄支局\n", encoding="utf-8")
    (tmp_path / "tables" / "gaiji.csv").write_text(
        "pua,char,alt\nU+E000,\U00020bb7,吉\nU+E002,,辺\n", encoding="utf-8"
    )

    def make(body: str) -> Mapping:
        path = tmp_path / "vendor.yaml"
        path.write_text(HEADER + textwrap.dedent(body), encoding="utf-8")
        return load_mapping(path)

    return make


def inbound_xml(*fields: str, root: str = "v:R") -> str:
    extra = "".join(f"\n            {field}" for field in fields)
    return f"""
    services:
      NhiEligibilityNotice:
        inbound:
          format: xml
          root: {root}
          fields:
            - {{to: localGovernmentCode, from: v:lg}}
            - {{to: insuredNumber, from: v:no}}
            - {{to: addresseeNumber, from: v:atena}}{extra}
    """


def xml(body: str) -> bytes:
    head = '<v:R xmlns:v="urn:example:vendor"><v:lg>412066</v:lg><v:no>123</v:no>'
    return f"{head}{body}</v:R>".encode()


@pytest.mark.parametrize(
    ("written", "iso"),
    [
        ("令和6年4月1日", "2024-04-01"),
        ("令和元年5月1日", "2019-05-01"),
        ("令和六年四月一日", "2024-04-01"),
        ("㍻31年4月26日", "2019-04-26"),
        ("㋿6年4月1日", "2024-04-01"),
        ("R06.04.03", "2024-04-03"),
        ("R1.5.1", "2019-05-01"),
        ("5060401", "2024-04-01"),  # GYYMMDD, 1-digit 元号 code
        ("05060401", "2024-04-01"),  # GGYYMMDD, 2-digit 元号 code
        ("2024/04/08", "2024-04-08"),
        ("20240408", "2024-04-08"),
        ("2024-04-08", "2024-04-08"),
        ("令和６年４月１日", "2024-04-01"),
    ],
)
def test_event_dates_in_every_written_form_become_iso(write: Write, written: str, iso: str) -> None:
    mapping = write(inbound_xml("- {to: qualificationAcquiredDate, from: v:d, date: iso}"))
    result = mapping.sections[("NhiEligibilityNotice", "inbound")].translate(
        xml(f"<v:d>{written}</v:d>")
    )
    assert result.output is not None, result.findings
    assert f"<std:qualificationAcquiredDate>{iso}</" in result.output.decode()


def test_birth_dates_keep_unknown_and_non_calendar_text_as_resident_date(write: Write) -> None:
    mapping = write(inbound_xml("- {to: dateOfBirth, from: v:b, date: resident}"))
    section = mapping.sections[("NhiEligibilityNotice", "inbound")]
    outputs = {
        text: section.translate(xml(f"<v:b>{text}</v:b>")).output
        for text in ("昭和18年9月16日", "不詳", "平成5年2月29日")
    }
    assert b'<std:dateOfBirth iso="1943-09-16">' in (outputs["昭和18年9月16日"] or b"")
    assert b'<std:dateOfBirth asGiven="true">\xe4\xb8\x8d\xe8\xa9\xb3<' in (outputs["不詳"] or b"")
    assert b'asGiven="true">' in (outputs["平成5年2月29日"] or b"")


def test_an_unreadable_event_date_is_a_coded_finding_naming_record_and_field(write: Write) -> None:
    mapping = write(inbound_xml("- {to: qualificationAcquiredDate, from: v:d, date: iso}"))
    result = mapping.sections[("NhiEligibilityNotice", "inbound")].translate(
        xml("<v:d>令和5年2月30日</v:d>")
    )
    assert result.output is None
    [finding] = result.findings
    assert finding.code == "RK-MAP004"
    assert finding.path == "/record[1]/v:d"
    assert finding.item == "qualificationAcquiredDate" and finding.name_ja == "資格取得年月日"


@pytest.mark.parametrize(
    ("form", "text"),
    [
        ("wareki", "令和6年4月1日"),
        ("kanji", "令和六年四月一日"),
        ("era_letter", "R06.04.01"),
        ("era_code", "5060401"),
        ("era_code2", "05060401"),
        ("compact", "20240401"),
        ("slash", "2024/04/01"),
    ],
)
def test_dates_are_written_in_the_systems_form(form: str, text: str) -> None:
    from datetime import date

    assert format_date(date(2024, 4, 1), form) == text


def test_kana_and_width_normalisation() -> None:
    assert to_katakana("ﾔﾏﾀﾞ  ﾀﾛｳ") == "ヤマダ　タロウ"
    assert to_katakana("やまだ　はなこ") == "ヤマダ　ハナコ"
    assert to_katakana("ﾊﾟｰｸ") == "パーク"
    assert to_full_width("A1-") == "Ａ１－"
    assert to_half_width("Ａ１－　") == "A1- "


def test_code_tables_with_each_rule_for_unknown_codes(write: Write) -> None:
    mapping = write(
        inbound_xml(
            "- {to: sex, from: v:s, codes: {table: sex, unknown: error}}",
            '- {to: acquisitionReason, from: v:a, codes: {values: {"TN": "01"}, unknown: default,'
            ' default: "99"}}',
            '- {to: lossReason, from: v:l, codes: {values: {"SH": "01"}, unknown: pass}}',
        )
    )
    section = mapping.sections[("NhiEligibilityNotice", "inbound")]
    good = section.translate(xml("<v:s>F</v:s><v:a>XX</v:a><v:l>02</v:l>")).output or b""
    assert b"<std:sex>2</" in good and b">99</std:acquisitionReason>" in good
    assert b"<std:lossReason>02</" in good
    bad = section.translate(xml("<v:s>Q</v:s>"))
    assert [f.code for f in bad.findings] == ["RK-MAP003"] and bad.findings[0].item == "sex"


def test_join_split_when_lookup_const_and_param(write: Write) -> None:
    mapping = write(
        """
        params: {office: "01"}
        services:
          RegistrationNotice:
            inbound:
              format: json
              fields:
                - {to: localGovernmentCode, const: "412066"}
                - {to: assetClass, const: "2", when: {field: 家屋.番号, exists: true}}
                - {to: assetClass, const: "1"}
                - {to: propertyLocation, from: [所在.町, 所在.字], join: "大字"}
                - {to: registryOfficeName, param: office, lookup: {table: offices, column: name}}
                - {to: registrationCause, from: 原因, split: {sep: " ", index: 1}}
        """
    )
    section = mapping.sections[("RegistrationNotice", "inbound")]
    document = (
        '{"所在": {"町": "江北町", "字": "山口"}, "家屋": {"番号": "12"}, "原因": "R6.4.1 売買"}'
    )
    out = (section.translate(document.encode()).output or b"").decode()
    assert "<std:assetClass>2</" in out
    assert "<std:propertyLocation>江北町大字山口</" in out
    assert "<ext:registryOfficeName>武雄支局</" in out
    assert "<ext:registrationCause>売買</" in out
    land = (section.translate('{"所在": {"町": "江北町"}}'.encode()).output or b"").decode()
    assert "<std:assetClass>1</" in land


def test_repeating_groups_attributes_and_xpath_fallback(write: Write) -> None:
    mapping = write(
        """
        services:
          RegistrationNotice:
            inbound:
              format: xml
              root: v:登記
              fields:
                - {to: localGovernmentCode, from: "@団体"}
                - {to: assetClass, from: "string(v:区分)"}
                - {to: propertyLocation, from: "v:所在[1]"}
                - group: rightHolder
                  path: v:権利者
                  fields:
                    - {to: rightHolderName, from: v:氏名}
                    - {to: share, from: "@持分"}
        """
    )
    section = mapping.sections[("RegistrationNotice", "inbound")]
    document = (
        '<v:登記 xmlns:v="urn:example:vendor" 団体="412066"><v:区分>1</v:区分>'
        "<v:所在>江北町</v:所在>"
        '<v:権利者 持分="1/2"><v:氏名>山田　太郎</v:氏名></v:権利者>'
        '<v:権利者 持分="1/2"><v:氏名>山田　花子</v:氏名></v:権利者></v:登記>'
    )
    out = (section.translate(document.encode()).output or b"").decode()
    assert out.count("<ext:rightHolder>") == 2
    assert "<ext:share>1/2</ext:share></ext:rightHolder>" in out
    assert "<std:localGovernmentCode>412066</" in out and "<std:assetClass>1</" in out


def test_gaiji_become_mj_characters_or_keep_pua_with_alt(write: Write) -> None:
    mapping = write(inbound_xml("- {to: name, from: v:n, gaiji: gaiji}"))
    section = mapping.sections[("NhiEligibilityNotice", "inbound")]
    mj = (section.translate(xml("<v:n>\ue000田　一郎</v:n>")).output or b"").decode()
    assert "<std:name>\U00020bb7田　一郎</std:name>" in mj
    alt = (section.translate(xml("<v:n>\ue002見　一郎</v:n>")).output or b"").decode()
    assert '<std:name alt="辺見　一郎">\ue002見　一郎</std:name>' in alt
    unknown = section.translate(xml("<v:n>\ue005</v:n>"))
    assert [f.code for f in unknown.findings] == ["RK-MAP010"]


def fixed_mapping(write: Write, encoding: str = "cp932") -> Mapping:
    return write(
        f"""
        services:
          NhiEligibilityNotice:
            outbound:
              format: fixed
              encoding: {encoding}
              record_length: 40
              separator: none
              fields:
                - {{to: {{start: 1, bytes: 6}}, from: localGovernmentCode}}
                - {{to: {{start: 7, bytes: 10, pad: full}}, from: name}}
                - {{to: {{start: 17, bytes: 4, type: zoned}}, from: addresseeNumber}}
                - {{to: {{start: 21, bytes: 3, type: packed}}, from: insuredNumber}}
            inbound: {{derive: outbound}}
        """
    )


def standard(name: str, insured: str = "123") -> bytes:
    return (
        '<svc:NhiEligibilityNotice xmlns:svc="urn:renkei:platform:service:1" '
        'xmlns:std="urn:renkei:platform:standard:1"><std:localGovernmentCode>412066'
        f"</std:localGovernmentCode><std:insuredNumber>{insured}</std:insuredNumber>"
        f"<std:name>{name}</std:name><std:addresseeNumber>12</std:addresseeNumber>"
        "</svc:NhiEligibilityNotice>"
    ).encode()


def test_fixed_width_counts_cp932_bytes_and_pads_with_full_width_spaces(write: Write) -> None:
    mapping = fixed_mapping(write)
    out = mapping.sections[("NhiEligibilityNotice", "outbound")].translate(standard("髙木"))
    assert out.output is not None, out.findings
    record = out.output
    assert len(record) == 40
    assert record[6:16] == "髙木".encode("cp932") + "　　　".encode("cp932")
    assert record[20:23] == bytes.fromhex("00123c")  # packed decimal, positive sign nibble
    back = mapping.sections[("NhiEligibilityNotice", "inbound")].translate(record)
    assert back.output is not None and "<std:name>髙木</std:name>" in back.output.decode()
    too_long = mapping.sections[("NhiEligibilityNotice", "outbound")].translate(
        standard("長谷川　由美子")
    )
    assert [f.code for f in too_long.findings] == ["RK-MAP006"]
    not_cp932 = mapping.sections[("NhiEligibilityNotice", "outbound")].translate(
        standard("\U00020bb7")
    )
    assert [f.code for f in not_cp932.findings] == ["RK-MAP007"]


def test_zoned_and_packed_decimals_read_their_signs(write: Write) -> None:
    mapping = fixed_mapping(write)
    inbound = mapping.sections[("NhiEligibilityNotice", "inbound")]
    record = (
        b"412066"
        + "山田".encode("cp932")
        + b" " * 6
        + b"001"
        + bytes([0x72])
        + bytes.fromhex("00123d")
        + b" " * 17
    )
    source = inbound.format.read(record)
    fields = inbound.format.fields  # type: ignore[attr-defined]
    assert source.get(fields[2]) == "-12"
    assert source.get(fields[3]) == "-123"


def test_codec_hook_for_mainframe_encodings(write: Write) -> None:
    class Ebcdic:  # stands in for a JEF/KEIS codec a vendor package registers
        def encode(self, text: str) -> bytes:
            return text.encode("cp037")

        def decode(self, data: bytes) -> str:
            return data.decode("cp037")

    register_codec("test-ebcdic", Ebcdic())
    mapping = write(
        """
        services:
          NhiEligibilityNotice:
            outbound:
              format: fixed
              encoding: test-ebcdic
              record_length: 6
              separator: none
              fields:
                - {to: {start: 1, bytes: 6}, from: localGovernmentCode}
        """
    )
    out = mapping.sections[("NhiEligibilityNotice", "outbound")].translate(standard("x"))
    assert out.output == "412066".encode("cp037")


def test_function_hook_registered_by_entry_point(write: Write) -> None:
    mapping = write(inbound_xml("- {to: insuredCardSymbol, from: v:o, function: amount_plain}"))
    section = mapping.sections[("NhiEligibilityNotice", "inbound")]
    assert b"<std:insuredCardSymbol>1234</" in (
        section.translate(xml("<v:o>1,234</v:o>")).output or b""
    )
    refused = section.translate(xml("<v:o>abc</v:o>"))
    assert [f.code for f in refused.findings] == ["RK-MAP008"]


def test_gaiji_without_a_table_keep_pua_with_a_fallback_alt(write: Write) -> None:
    """``gaiji: {unknown: 〓}``: a sender with no 外字 table (the 法務局) — the character stays
    a PUA character and the value carries the 代替文字 (ゲタ) in alt; no table, no error."""
    mapping = write(inbound_xml("- {to: name, from: v:n, gaiji: {unknown: 〓}}"))
    section = mapping.sections[("NhiEligibilityNotice", "inbound")]
    out = section.translate(xml("<v:n>\ue005田　一郎</v:n>"))
    assert '<std:name alt="〓田　一郎">\ue005田　一郎</std:name>' in (out.output or b"").decode()
    assert out.findings == [] and out.record is not None
    assert out.record.data["name"].attr("alt") == "〓田　一郎"  # the record the output came from
    with pytest.raises(MappingError, match=r"vendor\.yaml:\d+:\d+: .*one 代替文字"):
        write(inbound_xml("- {to: name, from: v:n, gaiji: {unknown: ゲタ}}"))


def test_share_reads_every_written_form_and_reports_the_member(write: Write) -> None:
    mapping = write(
        """
        services:
          RegistrationNotice:
            inbound:
              format: csv
              columns: [所在, 氏名, 持分]
              fields:
                - {to: localGovernmentCode, const: "412066"}
                - {to: assetClass, const: "1"}
                - {to: propertyLocation, from: 所在}
                - group: rightHolder
                  split: ／
                  fields:
                    - {to: rightHolderName, from: 氏名}
                    - {to: share, from: 持分, share: true}
        """
    )
    section = mapping.sections[("RegistrationNotice", "inbound")]
    (good,) = section.translate_fields([["江北町", "山田　太郎／山田　花子", "２分の１／持分 1/2"]])
    assert good.record is not None
    assert [m.data["share"] for m in good.record.data["rightHolder"]] == ["1/2", "1/2"]
    (bad,) = section.translate_fields([["江北町", "山田　太郎", "半分"]])
    assert bad.output is None
    assert [(f.code, f.path) for f in bad.findings] == [("RK-MAP011", "/record[1]/持分")]


def test_fixed_width_repeating_groups_are_occurs_slots(write: Write) -> None:
    mapping = write(
        """
        services:
          RegistrationNotice:
            inbound:
              format: fixed
              record_length: 30
              separator: none
              fields:
                - {to: localGovernmentCode, from: {start: 1, bytes: 6}}
                - {to: assetClass, const: "1"}
                - {to: propertyLocation, from: {start: 7, bytes: 4, pad: full}}
                - group: rightHolder
                  path: {start: 11, bytes: 10, occurs: 2}
                  fields:
                    - {to: rightHolderName, from: {start: 1, bytes: 6, pad: full}}
                    - {to: share, from: {start: 7, bytes: 4}}
        """
    )
    section = mapping.sections[("RegistrationNotice", "inbound")]
    one = "412066江北山田　1/2 ".encode("cp932") + b" " * 10
    out = section.translate(one)
    assert out.record is not None, out.findings
    assert [m.data for m in out.record.data["rightHolder"]] == [
        {"rightHolderName": "山田", "share": "1/2"}
    ]  # the blank second slot is no one
    with pytest.raises(MappingError, match="overlap"):
        write(
            """
            services:
              RegistrationNotice:
                inbound:
                  format: fixed
                  record_length: 30
                  fields:
                    - {to: localGovernmentCode, from: {start: 1, bytes: 12}}
                    - {to: assetClass, const: "1"}
                    - {to: propertyLocation, from: {start: 21, bytes: 4}}
                    - group: rightHolder
                      path: {start: 11, bytes: 10, occurs: 1}
                      fields:
                        - {to: rightHolderName, from: {start: 1, bytes: 6}}
            """
        )


def test_a_width_counted_in_characters_is_told_in_bytes(write: Write) -> None:
    """A vendor's layout counted 氏名 in characters: the field ends inside 様, and the message
    says widths are bytes (RK-MAP020), not that a character cannot be encoded in "decode"."""
    inbound = fixed_mapping(write).sections[("NhiEligibilityNotice", "inbound")]
    name = " 山田花子様".encode("cp932")  # 11 bytes where the field holds 10
    record = b"412066" + name + b"012" + bytes.fromhex("00123c") + b" " * 17
    assert len(record) == 40
    out = inbound.translate(record)
    cut = [f for f in out.findings if f.code == "RK-MAP020"]
    assert len(cut) == 1 and "7–16" in cut[0].message_en and "2 bytes" in cut[0].message_en
    assert "RK-MAP007" not in [f.code for f in out.findings]
    assert "バイト数で数えます" in cut[0].message_ja
