"""Owner matching (名寄せ): each 権利者/義務者 against the tenant's resident index.

A natural person is looked up by normalised name and by kana, and scored: name 0.5, address
0.3, kana 0.2 (a 消除 resident loses 0.1). A corporation is found by 法人番号 when the notice
carries one, else by its name with the form (株式会社 …) spelled out; the same name with the
form on the other side (前株/後株) is only a candidate, since those are different companies.

A matcher remembers (bounded) the keys it computed and the index look-ups it made: owners'
names recur through a file, and the index is read as it was when the look-up was first made.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from enum import StrEnum
from functools import lru_cache

from bus.imports.normalize import Corporation, address_key, corporation, kana_key, name_key
from bus.imports.residents import Resident, ResidentIndex

MATCH = 0.8  # name and address: one such candidate is a match
DELETED = ("3", "4", "5")  # 消除 (転出, 死亡, その他)
CACHE = 4096  # entries per remembered kind (keys, look-ups): flat memory whatever the file


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
    def __init__(
        self, index: ResidentIndex | None, tenant: str, town: str, cache: int = CACHE
    ) -> None:
        """``cache=0`` remembers nothing (every key computed, every look-up made)."""
        self.index = index
        self.tenant = tenant
        self.town_key = address_key(town)
        self.available = index is not None and index.count(tenant) > 0
        self._name_key: Callable[[str], str] = lru_cache(cache)(name_key)
        self._kana_key: Callable[[str], str] = lru_cache(cache)(kana_key)
        self._address_key: Callable[[str], str] = lru_cache(cache)(address_key)
        self._corporation: Callable[[str], Corporation | None] = lru_cache(cache)(corporation)
        self._find: Callable[[str, str], tuple[Resident, ...]] = lru_cache(cache)(self._lookup)

    def match(self, owner: Owner) -> Match:
        index = self.index
        if not self.available or index is None or index.unreadable is not None:
            return Match(Outcome.UNCHECKED, reasons=["住民データなし"])  # none, or damaged
        corp = self._corporation(owner.name)
        if corp is not None:
            return self._by_corporation(owner, corp.key, corp.bare, corp.number)
        address = self._address_key(owner.address) if owner.address else ""
        scored = self._score(owner, address)
        return self._decide(owner, address, scored)

    def _lookup(self, column: str, value: str) -> tuple[Resident, ...]:
        assert self.index is not None
        return tuple(self.index.find(self.tenant, column, value))

    def _score(self, owner: Owner, address: str) -> list[tuple[Resident, float, list[str]]]:
        name, kana = self._name_key(owner.name), self._kana_key(owner.kana)
        found = {r.addressee_number: r for r in self._find("name_key", name)}
        for r in self._find("kana_key", kana):
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

    def _decide(
        self, owner: Owner, address: str, scored: list[tuple[Resident, float, list[str]]]
    ) -> Match:
        candidates = [(r.addressee_number, score) for r, score, _ in scored]
        strong = [s for s in scored if s[1] >= MATCH]
        if len(strong) == 1:
            resident, _, reasons = strong[0]
            return Match(Outcome.MATCHED, resident.addressee_number, candidates, reasons)
        if len(scored) > 1:
            return Match(Outcome.CANDIDATES, candidates=candidates, reasons=["候補が複数"])
        if scored:
            return Match(Outcome.UNMATCHED, candidates=candidates, reasons=scored[0][2])
        return self._nobody(owner, address)

    def _nobody(self, owner: Owner, address: str) -> Match:
        """``address``: the key of ``owner.address``."""
        if owner.address and not address.startswith(self.town_key):
            return Match(Outcome.NOT_RESIDENT, reasons=["住所が団体外（住登外）"])
        return Match(Outcome.UNMATCHED, reasons=["該当なし"])

    def _by_corporation(self, owner: Owner, key: str, bare: str, number: str | None) -> Match:
        if number:
            by_number = self._find("corporate_number", number)
            if len(by_number) == 1:
                return Match(Outcome.MATCHED, by_number[0].addressee_number, reasons=["法人番号"])
        same_name = self._find("corporate_bare", bare)
        exact = [r for r in same_name if r.corporate_key == key]
        if len(exact) == 1:
            return Match(Outcome.MATCHED, exact[0].addressee_number, reasons=["法人名"])
        candidates = [(r.addressee_number, 1.0 if r in exact else 0.6) for r in same_name]
        if len(candidates) > 1:
            return Match(Outcome.CANDIDATES, candidates=candidates, reasons=["候補が複数"])
        if candidates:
            reasons = ["法人の種類の位置（前株・後株）が相違"]
            return Match(Outcome.UNMATCHED, candidates=candidates, reasons=reasons)
        return self._nobody(owner, self._address_key(owner.address) if owner.address else "")
