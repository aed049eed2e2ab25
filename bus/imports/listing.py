"""One notice → the rows of the 評価変更リスト: one per 権利者/義務者, with its match, in the
order staff work through it (大字 → 地番 → 受付番号)."""

from __future__ import annotations

import csv
from functools import cache, lru_cache
from typing import Any

from bus.imports.matching import Match, Outcome, Owner, OwnerMatcher
from bus.imports.normalize import fold_text, lot_key, oaza_key
from bus.imports.records import Notice
from bus.imports.worklist import ListRow
from bus.resources import data_dir


@cache
def _land_categories() -> dict[str, str]:
    path = data_dir("schemas") / "codes" / "land_category.csv"
    with path.open(encoding="utf-8", newline="") as handle:
        return {row["code"]: row["name_ja"] for row in csv.DictReader(handle)}


def land_category_name(code: str) -> str:
    return _land_categories().get(code, code)


def sort_key(values: dict[str, Any], town_key: str) -> tuple[str, str, str]:
    """大字 (however written: :func:`oaza_key`) → 地番 as numbers → 受付番号."""
    oaza = _oaza(values.get("propertyLocation", ""), town_key)
    lot = lot_key(values.get("lotNumber") or values.get("buildingNumber") or "")
    return oaza, lot, values.get("receiptNumber", "").zfill(10)


_oaza = lru_cache(maxsize=1024)(oaza_key)  # a file's 所在 are few: the town's 大字


@lru_cache(maxsize=4096)  # owners' names recur through a file
def _shown_name(name: str) -> str:
    return " ".join(fold_text(name).split())


def owners(values: dict[str, Any]) -> list[Owner]:
    found = [
        Owner(
            "権利者",
            h.get("rightHolderName", ""),
            h.get("rightHolderNameKana", ""),
            h.get("rightHolderAddress", ""),
            h.get("share", ""),
        )
        for h in values["rightHolder"]
    ]
    found += [
        Owner("義務者", o.get("obligorName", ""), "", o.get("obligorAddress", ""))
        for o in values["obligor"]
    ]
    return found


def rows_for(notice: Notice, matcher: OwnerMatcher, review: list[str]) -> list[ListRow]:
    values = notice.values
    key = sort_key(values, matcher.town_key)
    land = "registeredLandCategory" in values or "registeredLandArea" in values
    common = [
        values.get("receiptDate", ""),
        values.get("receiptNumber", ""),
        values.get("realEstateNumber", ""),
        values.get("propertyLocation", ""),
        values.get("lotNumber") or values.get("buildingNumber") or "",
        land_category_name(values["registeredLandCategory"])
        if "registeredLandCategory" in values
        else values.get("buildingKind", ""),
        values.get("registeredLandArea", "") if land else values.get("floorArea", ""),
        values.get("registrationPurpose", ""),
        values.get("registrationCause", ""),
    ]
    people = owners(values) or [Owner("権利者", "")]
    notice_key = notice.key.text()
    rows = []
    for seq, owner in enumerate(people):
        match = (
            matcher.match(owner) if owner.name else Match(Outcome.UNMATCHED, reasons=["名義人なし"])
        )
        reasons = review + match.reasons
        rows.append(
            ListRow(
                notice.line,
                seq,
                key,
                notice_key,
                [
                    *common,
                    owner.role,
                    _shown_name(owner.name),
                    owner.share,
                    match.outcome.value,
                    match.addressee_number,
                    " ".join(f"{n}({s:.2f})" for n, s in match.candidates),
                    "、".join(dict.fromkeys(reasons)),
                ],
            )
        )
    return rows
