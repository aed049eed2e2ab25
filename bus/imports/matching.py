"""Owner matching (名寄せ): each 権利者/義務者 against the tenant's resident index.

A natural person is looked up by normalised name and by kana, and scored: name 0.5, address
0.3, kana 0.2 (a 消除 resident loses 0.1). A corporation is found by 法人番号 when the notice
carries one, else by its name with the form (株式会社 …) spelled out; the same name with the
form on the other side (前株/後株) is only a candidate, since those are different companies.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from enum import StrEnum

from bus.imports.normalize import address_key, corporation, kana_key, name_key
from bus.imports.residents import Resident, ResidentIndex

MATCH = 0.8  # name and address: one such candidate is a match
DELETED = ("3", "4", "5")  # 消除 (転出, 死亡, その他)


class Outcome(StrEnum):
    MATCHED = "一致"
    CANDIDATES = "候補複数"
    UNMATCHED = "不一致"
    NOT_RESIDENT = "住登外"
    UNCHECKED = "未照合"


@dataclass(frozen=True, slots=True)
class Owner:
    role: str  # 権利者 | 義務者
    name: str
    kana: str = ""
    address: str = ""
    share: str = ""


@dataclass(slots=True)
class Match:
    outcome: Outcome
    addressee_number: str = ""
    candidates: list[tuple[str, float]] = field(default_factory=list)
    reasons: list[str] = field(default_factory=list)


class OwnerMatcher:
    def __init__(self, index: ResidentIndex | None, tenant: str, town: str) -> None:
        self.index = index
        self.tenant = tenant
        self.town_key = address_key(town)
        self.available = index is not None and index.count(tenant) > 0

    def match(self, owner: Owner) -> Match:
        if not self.available or self.index is None:
            return Match(Outcome.UNCHECKED, reasons=["住民データなし"])
        corp = corporation(owner.name)
        if corp is not None:
            return self._corporation(owner, corp.key, corp.bare, corp.number)
        scored = self._score(owner)
        return self._decide(owner, scored)

    def _score(self, owner: Owner) -> list[tuple[Resident, float, list[str]]]:
        assert self.index is not None
        name, kana, address = name_key(owner.name), kana_key(owner.kana), address_key(owner.address)
        found = {r.addressee_number: r for r in self.index.find(self.tenant, "name_key", name)}
        for r in self.index.find(self.tenant, "kana_key", kana):
            found.setdefault(r.addressee_number, r)
        scored = []
        for r in found.values():
            score, reasons = 0.0, []
            if r.name_key == name:
                score += 0.5
            else:
                reasons.append("氏名相違（カナのみ一致）")
            if address and r.address_key == address:
                score += 0.3
            else:
                reasons.append("住所相違")
            if kana and r.kana_key == kana:
                score += 0.2
            if r.resident_status in DELETED:
                score -= 0.1
                reasons.append("消除済")
            if r.resident_type == "3":
                reasons.append("住登外者として登録")
            scored.append((r, round(score, 2), reasons))
        return sorted(scored, key=lambda s: (-s[1], s[0].addressee_number))

    def _decide(self, owner: Owner, scored: list[tuple[Resident, float, list[str]]]) -> Match:
        candidates = [(r.addressee_number, score) for r, score, _ in scored]
        strong = [s for s in scored if s[1] >= MATCH]
        if len(strong) == 1:
            resident, _, reasons = strong[0]
            return Match(Outcome.MATCHED, resident.addressee_number, candidates, reasons)
        if len(scored) > 1:
            return Match(Outcome.CANDIDATES, candidates=candidates, reasons=["候補が複数"])
        if scored:
            return Match(Outcome.UNMATCHED, candidates=candidates, reasons=scored[0][2])
        return self._nobody(owner)

    def _nobody(self, owner: Owner) -> Match:
        if owner.address and not address_key(owner.address).startswith(self.town_key):
            return Match(Outcome.NOT_RESIDENT, reasons=["住所が団体外（住登外）"])
        return Match(Outcome.UNMATCHED, reasons=["該当なし"])

    def _corporation(self, owner: Owner, key: str, bare: str, number: str | None) -> Match:
        assert self.index is not None
        if number:
            by_number = self.index.find(self.tenant, "corporate_number", number)
            if len(by_number) == 1:
                return Match(Outcome.MATCHED, by_number[0].addressee_number, reasons=["法人番号"])
        same_name = self.index.find(self.tenant, "corporate_bare", bare)
        exact = [r for r in same_name if r.corporate_key == key]
        if len(exact) == 1:
            return Match(Outcome.MATCHED, exact[0].addressee_number, reasons=["法人名"])
        candidates = [(r.addressee_number, 1.0 if r in exact else 0.6) for r in same_name]
        if len(candidates) > 1:
            return Match(Outcome.CANDIDATES, candidates=candidates, reasons=["候補が複数"])
        if candidates:
            reasons = ["法人の種類の位置（前株・後株）が相違"]
            return Match(Outcome.UNMATCHED, candidates=candidates, reasons=reasons)
        return self._nobody(owner)
