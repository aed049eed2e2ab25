"""Owner matching (名寄せ): each 権利者/義務者 against the tenant's resident index.

A natural person is looked up by normalised name and by kana, and scored: name 0.5, address
0.3, kana 0.2 (a 消除 resident loses 0.1). A corporation is found by 法人番号 when the notice
carries one, else by its name with the form (株式会社 …) spelled out *and* its address: many
companies share a name, so the name alone (0.7) is only a candidate, and a company of the same
name whose 法人番号 differs from the notice's is another company, never a candidate. The same
name with the form on the other side (前株/後株) is only a candidate (0.6), since those are
different companies, and so is the same name under another form (社会福祉法人A, 医療法人A:
another body). An owner whose address lies outside the town and whom no candidate matches by
address is 住登外, whoever in the town shares the name (listed as candidates); an address
that names no town (大字大町1722) is read inside the tenant's.

A matcher remembers (bounded) the keys it computed and the index look-ups it made: owners'
names recur through a file, and the index is read as it was when the look-up was first made.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from enum import StrEnum
from functools import lru_cache, partial

from bus.imports.normalize import (
    Corporation,
    address_key,
    corporation,
    fold_place_particles,
    fold_small_kana,
    kana_key,
    name_key,
    town_address_key,
)
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
        # an owner's address that names no town is read inside this one (大字武雄123)
        self._address_key: Callable[[str], str] = lru_cache(cache)(
            partial(town_address_key, town_key=self.town_key)
        )
        # keys an index stored before 霞ヶ関/霞が関 and キョウコ/キヨウコ were folded
        self._stored_address: Callable[[str], str] = lru_cache(cache)(fold_place_particles)
        self._stored_kana: Callable[[str], str] = lru_cache(cache)(fold_small_kana)
        self._corporation: Callable[[str], Corporation | None] = lru_cache(cache)(corporation)
        self._find: Callable[[str, str], tuple[Resident, ...]] = lru_cache(cache)(self._lookup)

    def match(self, owner: Owner) -> Match:
        index = self.index
        if not self.available or index is None or index.unreadable is not None:
            return Match(Outcome.UNCHECKED, reasons=["住民データなし"])  # none, or damaged
        corp = self._corporation(owner.name)
        if corp is not None:
            return self._by_corporation(owner, corp)
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
            if self._same_address(r, address):
                score += 0.3
            else:
                reasons.append("住所相違")
            if kana and self._stored_kana(r.kana_key) == kana:
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
        if (
            scored
            and self._outside(owner, address)
            and not any(self._same_address(r, address) for r, *_ in scored)
        ):
            # none of them lives at the owner's address: someone else of the same name
            reasons = ["住所が団体外（住登外）", "候補あり（住所相違）"]
            return Match(Outcome.NOT_RESIDENT, candidates=candidates, reasons=reasons)
        if len(scored) > 1:
            return Match(Outcome.CANDIDATES, candidates=candidates, reasons=["候補が複数"])
        if scored:
            return Match(Outcome.UNMATCHED, candidates=candidates, reasons=scored[0][2])
        return self._nobody(owner, address)

    def _same_address(self, resident: Resident, address: str) -> bool:
        """Whether the resident lives at ``address`` (an owner's address key; "": none)."""
        return bool(address) and self._stored_address(resident.address_key) == address

    def _outside(self, owner: Owner, address: str) -> bool:
        """Whether the owner's address (``address``: its key) lies outside the town."""
        return bool(owner.address) and not address.startswith(self.town_key)

    def _nobody(self, owner: Owner, address: str, reasons: tuple[str, ...] = ()) -> Match:
        """``address``: the key of ``owner.address``."""
        if self._outside(owner, address):
            return Match(Outcome.NOT_RESIDENT, reasons=["住所が団体外（住登外）", *reasons])
        return Match(Outcome.UNMATCHED, reasons=["該当なし", *reasons])

    def _by_corporation(self, owner: Owner, corp: Corporation) -> Match:
        key, bare, number = corp.key, corp.bare, corp.number
        if number:
            by_number = self._find("corporate_number", number)
            if len(by_number) == 1:
                return Match(Outcome.MATCHED, by_number[0].addressee_number, reasons=["法人番号"])
        address = self._address_key(owner.address) if owner.address else ""
        named = self._find("corporate_bare", bare)
        # the same name under another 法人番号 is another company
        same_name = [r for r in named if not (number and r.corporate_number not in ("", number))]
        scored = sorted(
            ((r, _corporate_score(r, key, self._same_address(r, address))) for r in same_name),
            key=lambda s: (-s[1], s[0].addressee_number),
        )
        here = [r for r, score in scored if score >= MATCH]
        if len(here) == 1:
            return Match(Outcome.MATCHED, here[0].addressee_number, reasons=["法人名"])
        candidates = [(r.addressee_number, score) for r, score in scored]
        if len(candidates) > 1:
            return Match(Outcome.CANDIDATES, candidates=candidates, reasons=["候補が複数"])
        if candidates:
            resident = scored[0][0]
            if resident.corporate_key == key:
                reasons = ["住所相違"]
            elif resident.corporate_key in (corp.form + bare, bare + corp.form):
                reasons = ["法人の種類の位置（前株・後株）が相違"]
            else:  # 社会福祉法人A and 医療法人A: another body (or a form since changed)
                reasons = ["法人の種類が相違"]
            return Match(Outcome.UNMATCHED, candidates=candidates, reasons=reasons)
        other = ("同名の法人は法人番号が相違",) if named else ()
        return self._nobody(owner, address, other)


def _corporate_score(resident: Resident, key: str, at_address: bool) -> float:
    """The same name with the form where the notice writes it: 0.7, 1.0 at the owner's
    address (a match); the form on the other side (前株/後株, another company) or another
    form (社会福祉法人 for 医療法人): 0.6."""
    if resident.corporate_key != key:
        return 0.6
    return 1.0 if at_address else 0.7
