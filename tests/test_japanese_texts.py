"""The Japanese texts staff read follow the glossary and style of docs/errors.md (用語集).

Mechanical checks only: the same placeholders on both sides of every registered message,
full-width punctuation in the Japanese ones, no outlier terms, docs/errors.md equal to the
registry, every ``make_finding`` call filling its template (else it renders ``?``), the
CLI's Japanese output lines punctuated as the messages are, the console's words
(adapters/console/i18n.py) held to the same rules, and no English word of a caller's making
(a permission, a direction, a type) inside a rendered Japanese message.
"""

from __future__ import annotations

import ast
import re
import string
from pathlib import Path

import pydantic
import pytest

from adapters.console.access import forbidden
from adapters.console.i18n import ERROR_MEANINGS, STATES, TEXTS, WHYS
from bus.config.index import ConfigIndex
from bus.config.loader import load_config_dir
from bus.errors import REGISTRY
from bus.feeds import FeedRefused, entitlement
from bus.security.operators import Operator, OperatorError, Permission, Role, require
from bus.settings import Settings, settings_refusals

ROOT = Path(__file__).resolve().parents[1]

#: hiragana, katakana (without the middle dot ・) and kanji: a Japanese character
JAPANESE = r"[\u3041-\u30fa\u30fc-\u30ff\u4e00-\u9fff]"

#: outlier → the glossary's term (docs/errors.md, 用語集)
OUTLIERS = {
    "デッドレター": "配信不能",
    "配信失敗": "配信不能",
    "再配信": "再送",
    "再度": "もう一度",
    "再送攻撃": "リプレイ攻撃（再送は運用の用語）",
    "呼び出し元": "呼出し元",
    "データストア": "メッセージストア",
    "問い合わせ": "照会",
    "問合せ": "照会",
    "電文": "メッセージ",
    "連携先": "接続システム",
    "接続先": "接続システム",
    "照会先": "回答システム",
    "自治体": "団体",
    "市町村": "団体",
    "マッピング": "変換定義",
    "ユーザー名": "利用者名",
    "取り込み[のがはも済]": "取込み（名詞）",
    "取消(?!し)": "取消し",
    "取り消し": "取消し",
}


def _placeholders(template: str) -> set[str]:
    """The fields of a template, a ``_ja``/``_en`` pair counted as one field."""
    return {
        re.sub(r"_(ja|en)$", "_*", field)
        for _, field, _, _ in string.Formatter().parse(template)
        if field
    }


def _japanese_text(template: str) -> str:
    return re.sub(r"\{[^{}]*\}", "", template)


@pytest.mark.parametrize("code", sorted(REGISTRY))
def test_both_languages_have_the_same_placeholders(code: str) -> None:
    entry = REGISTRY[code]
    assert _placeholders(entry.message_ja) == _placeholders(entry.message_en)


def test_placeholder_parity_sees_a_missing_field() -> None:
    assert _placeholders("{field_ja}の値（{actual}）") != _placeholders("{field_en} is wrong")
    assert _placeholders("（{actual}：{reason_ja}）") == _placeholders("({actual}: {reason_en})")


def _style_faults(ja: str) -> list[str]:
    text = _japanese_text(ja)
    faults = []
    if re.search(r"[()]", text):
        faults.append("half-width parenthesis: use （）")
    if re.search(r"[,，]", text):
        faults.append("comma: use 、")
    if re.search(rf"{JAPANESE}:|[:] ", text):
        faults.append("ASCII colon as a label: use ：")
    if re.search(r"[０-９]", text):
        faults.append("full-width digit: use 0-9")
    if not text.endswith("。"):
        faults.append("no closing 。")
    if re.search(rf"[A-Za-z]{JAPANESE}|{JAPANESE}[A-Za-z]", text):
        faults.append("no space between a Latin word and Japanese")
    return faults


@pytest.mark.parametrize("code", sorted(REGISTRY))
def test_japanese_messages_use_full_width_punctuation(code: str) -> None:
    assert _style_faults(REGISTRY[code].message_ja) == []


def test_style_check_sees_half_width_punctuation() -> None:
    assert len(_style_faults("値が正しくありません (例: 1,2)")) == 4
    assert _style_faults("DOCTYPE宣言は受け付けません。") != []
    assert _style_faults("{field_ja}の値が正しくありません（例：令和8年）。") == []


def _outliers(text: str) -> list[str]:
    return [f"{found} → {term}" for found, term in OUTLIERS.items() if re.search(found, text)]


@pytest.mark.parametrize("code", sorted(REGISTRY))
def test_japanese_messages_use_the_glossary_terms(code: str) -> None:
    assert _outliers(REGISTRY[code].message_ja) == []


def test_glossary_check_sees_an_outlier() -> None:
    assert _outliers("配信不能（デッドレター）です。再度ログインしてください。") == [
        "デッドレター → 配信不能",
        "再度 → もう一度",
    ]
    assert _outliers("取消・訂正の通知は取り込み済みです。") != []
    assert _outliers("取消し・訂正の通知は取込み済みです。取り込みます。") == []


def test_errors_doc_has_the_registry_texts() -> None:
    text = (ROOT / "docs" / "errors.md").read_text(encoding="utf-8")
    for code, entry in REGISTRY.items():
        row = f"| `{code}` | {entry.severity.value} | {entry.message_ja} | {entry.message_en} |"
        assert row in text, code


def test_errors_doc_has_the_glossary() -> None:
    text = (ROOT / "docs" / "errors.md").read_text(encoding="utf-8")
    glossary = text.split("## 用語集", 1)[-1]
    assert "## 用語集" in text
    for term in {term.split("（")[0] for term in OUTLIERS.values()}:
        assert term in glossary, term


# --- make_finding calls fill every placeholder (a missing one renders as "?") ------------


def _unfilled(source: str) -> list[str]:
    """``make_finding("RK-…", …)`` calls of ``source`` that leave a placeholder unfilled."""
    found = []
    for node in ast.walk(ast.parse(source)):
        if not (isinstance(node, ast.Call) and node.args):
            continue
        name = getattr(node.func, "id", getattr(node.func, "attr", None))
        code = node.args[0]
        if name != "make_finding" or not isinstance(code, ast.Constant):
            continue
        keywords = {keyword.arg for keyword in node.keywords}
        if None in keywords or code.value not in REGISTRY:  # **params, or an unknown code
            continue
        entry = REGISTRY[code.value]
        fields = {
            field
            for template in (entry.message_ja, entry.message_en)
            for _, field, _, _ in string.Formatter().parse(template)
            if field
        }
        missing = fields - {"field_ja", "field_en"} - keywords
        if missing:
            found.append(f"line {node.lineno}: {code.value} without {sorted(missing)}")
    return found


def test_every_make_finding_call_fills_its_template() -> None:
    faults = {
        str(path.relative_to(ROOT)): unfilled
        for directory in ("bus", "adapters")
        for path in sorted((ROOT / directory).rglob("*.py"))
        if (unfilled := _unfilled(path.read_text(encoding="utf-8")))
    }
    assert faults == {}


def test_the_call_check_sees_a_missing_placeholder() -> None:
    source = 'make_finding("RK-SEC002", path="/", limit=1)\nmake_finding("RK-SEC002", path="/")'
    assert _unfilled(source) == [
        "line 1: RK-SEC002 without ['actual']",
        "line 2: RK-SEC002 without ['actual', 'limit']",
    ]


# --- the CLI's Japanese output ------------------------------------------------------------


def _cli_faults(source: str) -> list[str]:
    """Japanese output strings (f-string parts too) with an ASCII label colon after Japanese,
    a Japanese sentence (two hiragana in a row) in half-width parentheses, or an outlier term."""
    faults = []
    tree = ast.parse(source)
    parts = {
        id(part)
        for node in ast.walk(tree)
        if isinstance(node, ast.JoinedStr)
        for part in node.values
    }
    for node in ast.walk(tree):
        if id(node) in parts:
            continue
        if isinstance(node, ast.JoinedStr):
            text = "".join(
                str(part.value) if isinstance(part, ast.Constant) else "{}" for part in node.values
            )
        elif isinstance(node, ast.Constant) and isinstance(node.value, str):
            text = node.value
        else:
            continue
        if re.search(rf"(?:{JAPANESE}|[）」])[:] ", text):
            faults.append(f"line {node.lineno}: ASCII colon after Japanese: {text!r}")
        if re.search(r"\([^()]*[\u3041-\u309f]{2}[^()]*\)", text):
            faults.append(f"line {node.lineno}: Japanese in ( ): {text!r}")
        faults += [f"line {node.lineno}: {outlier}" for outlier in _outliers(text)]
    return faults


def test_cli_japanese_output_is_punctuated_as_the_messages() -> None:
    faults = {
        path.name: found
        for path in sorted((ROOT / "bus" / "cli").glob("*.py"))
        if (found := _cli_faults(path.read_text(encoding="utf-8")))
    }
    assert faults == {}


def test_the_cli_check_sees_half_width_punctuation() -> None:
    source = (
        'f"出力: {p}"\nf"{v}: {n} ({n} 件を再送しました)"\n"データストアを更新しました"\n'
        'f"更新できません（未照合）: {e}"\n"Batch imports (一括取込み)."'
    )
    assert [fault.split(":")[0] for fault in _cli_faults(source)] == [
        "line 1",
        "line 2",
        "line 3",
        "line 4",
    ]


# --- the console's words (adapters/console/i18n.py) ---------------------------------------

#: every pair the console shows, by a name for the test id
CONSOLE_TEXTS: dict[str, tuple[str, str]] = {
    **{f"TEXTS.{key}": pair for key, pair in TEXTS.items()},
    **{f"STATES.{key}": pair for key, pair in STATES.items()},
    **{f"WHYS.{key}": pair for key, pair in WHYS.items()},
    **{f"ERROR_MEANINGS.{p.pattern}": pair for p, pair in ERROR_MEANINGS},
}
#: the glossary's own exception: the screen name's English gloss (配信不能（デッドレター）)
CONSOLE_GLOSSES = {"TEXTS.dead_letters": "デッドレター"}
#: a date as staff write it (令和8年11月26日): its digits sit next to 年月日 by custom
_DATE = re.compile(r"(?:令和|平成|昭和)?[0-9]+年(?:[0-9]+月)?(?:[0-9]+日)?")


def _console_faults(ja: str) -> list[str]:
    """A label or a sentence of the console: the messages' punctuation, a closing 。 only
    where it has a sentence, and a space between a number and Japanese (``24 時間``)."""
    faults = [fault for fault in _style_faults(ja) if fault != "no closing 。"]
    text = _DATE.sub("", _japanese_text(ja))
    if "。" in text and not text.endswith(("。", "…")):
        faults.append("no closing 。")
    if re.search(rf"[0-9]{JAPANESE}|{JAPANESE}[0-9]", text):
        faults.append("no space between a number and Japanese")
    return faults


@pytest.mark.parametrize("key", sorted(CONSOLE_TEXTS))
def test_console_texts_follow_the_style(key: str) -> None:
    ja, en = CONSOLE_TEXTS[key]
    assert _console_faults(ja) == []
    assert _placeholders(ja) == _placeholders(en)
    outliers = _outliers(ja.replace(CONSOLE_GLOSSES.get(key, "\0"), ""))
    assert outliers == []


def test_console_check_sees_the_faults() -> None:
    assert _console_faults("和暦・西暦どちらでも（例: 令和8年11月26日）") == [
        "ASCII colon as a label: use ："
    ]
    assert _console_faults("メッセージID") == ["no space between a Latin word and Japanese"]
    assert _console_faults("受信件数（直近24時間）") == ["no space between a number and Japanese"]
    assert _console_faults("{action}: {done} 件処理済み") == ["ASCII colon as a label: use ："]
    assert _console_faults("一時停止します。処理中の分が終わると止まります…") == []
    assert _outliers("照会先") == ["照会先 → 回答システム"]
    assert _outliers("変換（マッピング）に失敗しました。") == ["マッピング → 変換定義"]
    assert _placeholders("次の{n}件") != _placeholders("Next page")


# --- no English word of the caller's making inside a Japanese message ----------------------


def _latin_words(text: str) -> list[str]:
    return re.findall(r"[A-Za-z]+", text)


@pytest.mark.parametrize("permission", list(Permission))
def test_an_operator_refusal_names_the_permission_in_japanese(permission: Permission) -> None:
    viewer = Operator("sato.k", Role.VIEWER, frozenset({"412066"}))
    with pytest.raises(OperatorError) as refused:
        require(viewer, permission, "414247")  # not its town: no permission at all there
    assert _latin_words(refused.value.finding.message_ja) == ["sato", "k"]
    console = forbidden(viewer, "412066")
    assert console.message_ja == "操作者 sato.k には、団体 412066 の操作権限がありません。"
    assert console.message_en == "Operator sato.k has no operate permission for tenant 412066."


def test_a_refused_setting_says_what_it_takes_in_japanese() -> None:
    with pytest.raises(pydantic.ValidationError) as error:
        Settings.model_validate({"dispatch_workers": "abc", "dispatch_lease_seconds": "0"})
    by_variable = {finding.path: finding for finding in settings_refusals(error.value)}
    workers = by_variable["RENKEI_DISPATCH_WORKERS"]
    assert "使える値：0 以上の整数。" in workers.message_ja
    assert "allowed: integer >= 0." in workers.message_en
    lease = by_variable["RENKEI_DISPATCH_LEASE_SECONDS"]
    assert "使える値：0 より大きい数。" in lease.message_ja
    for finding in by_variable.values():
        allowed = finding.message_ja.split("使える値：")[1].split("。")[0]
        assert _latin_words(allowed) == [], allowed


def test_a_feed_refusal_names_a_disabled_town_among_its_reasons() -> None:
    """One answer for every reason (an outsider learns nothing), and it covers a town taken
    out of service, not only a missing route or access rule."""
    config = load_config_dir(ROOT / "samples" / "config")
    taken = config.tenants[0].code
    disabled = config.model_copy(
        update={
            "tenants": [
                tenant.model_copy(update={"enabled": tenant.code != taken})
                for tenant in config.tenants
            ]
        }
    )

    def refusal(index: ConfigIndex, tenant: str) -> str:
        with pytest.raises(FeedRefused) as refused:
            entitlement(index, "kotei", tenant, "RegistrationNotice")
        return refused.value.finding.message_ja.replace(tenant, "{tenant}")

    answers = {refusal(ConfigIndex(disabled), taken), refusal(ConfigIndex(config), "999999")}
    assert answers == {
        "システム kotei には、団体 {tenant} の RegistrationNotice のフィードを読む権限が"
        "ありません（経路・アクセス規則がないか、団体が停止中です）。"
    }
