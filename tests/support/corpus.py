"""Message corpora for the reliability tests: many ResidentChangeNotice messages over a few
subjects, so each subject has a long ordered history that fans out to several subscribers.

Each message is a full sample message (``bus.samplegen``) whose Header subject and body
``addresseeNumber`` are set to its subject's 宛名番号 (valid M11 check digit), whose
``issuedAt`` increases strictly with its position in the corpus (so per subject too), and whose
``changeReason`` cycles through :data:`CHANGE_REASONS`, half of which the sample routes send to
滞納管理 (``tainou``) as well. Which systems must receive a message is computed from the
sample ``routes.yaml`` itself (:func:`subscribers_for`), not from the hub's routing code.
"""

from __future__ import annotations

import random
import uuid
from dataclasses import dataclass
from datetime import datetime, timedelta, timezone
from functools import cache
from pathlib import Path
from typing import Any

import yaml
from lxml import etree

from bus.catalogue import NS_ENVELOPE, NS_STANDARD
from bus.rules.check_digits import atena_number_check_digit
from bus.samplegen.messages import MessageSpec, build_message, serialize
from bus.samplegen.values import TOWNS

SERVICE = "ResidentChangeNotice"
SAMPLE_ROUTES = Path(__file__).resolve().parents[2] / "samples" / "config" / "routes.yaml"
# 101 国内転入, 201 国内転出, 302 軽微な修正, 203 死亡, 103 出生, 301 転居, 304 誤記修正,
# 202 国外転出: the sample route sends 201/202/203/301 to tainou too (4 of every 8 messages).
CHANGE_REASONS = ("101", "201", "302", "203", "103", "301", "304", "202")
JST = timezone(timedelta(hours=9))
FIRST_ISSUED = datetime(2026, 4, 1, 9, 0, tzinfo=JST)
_E, _S = f"{{{NS_ENVELOPE}}}", f"{{{NS_STANDARD}}}"


@dataclass(frozen=True, slots=True)
class Subject:
    tenant: str
    number: str  # 宛名番号: 9 digits and the M11 check digit


@dataclass(frozen=True, slots=True)
class CorpusMessage:
    index: int  # position in the corpus = the order it is meant to be ingested in
    message_id: str
    tenant: str
    subject: str
    change_reason: str
    issued_at: str
    subscribers: frozenset[str]  # empty for an invalid message
    raw: bytes
    valid: bool = True


def addressee_number(base: int) -> str:
    digits = f"{base:09d}"
    return digits + str(atena_number_check_digit(digits))


def make_subjects(count: int, rng: random.Random) -> list[Subject]:
    """``count`` distinct subjects spread over the six pilot towns."""
    numbers: set[str] = set()
    while len(numbers) < count:
        numbers.add(addressee_number(rng.randrange(10**8, 10**9)))
    return [Subject(TOWNS[i % len(TOWNS)].code, n) for i, n in enumerate(sorted(numbers))]


@cache
def _routes(path: Path) -> tuple[tuple[str, tuple[dict[str, Any], ...]], ...]:
    document = yaml.safe_load(path.read_text(encoding="utf-8"))
    route = next(r for r in document["routes"] if r["service"] == SERVICE)
    assert route.get("tenants", "*") == "*", "a tenant-specific route: extend subscribers_for"
    return tuple((s["system"], tuple(s.get("when", ()))) for s in route["subscribers"])


def subscribers_for(change_reason: str, routes: Path = SAMPLE_ROUTES) -> frozenset[str]:
    """The systems the sample route selects for a ResidentChangeNotice with this reason."""
    selected = set()
    for system, conditions in _routes(routes):
        holds = True
        for condition in conditions:
            assert condition["field"] == "changeReason", condition  # the only one used here
            if "in" in condition:
                holds = holds and change_reason in [str(v) for v in condition["in"]]
            elif "equals" in condition:
                holds = holds and change_reason == str(condition["equals"])
            else:
                raise AssertionError(f"unsupported condition {condition}")
        if holds:
            selected.add(system)
    return frozenset(selected)


def _set(document: etree._Element, path: str, value: str) -> None:
    element = document.find(path)
    assert element is not None, path
    element.text = value


def resident_change_corpus(
    count: int, subjects: int = 40, seed: int = 0, invalid_every: int = 0
) -> list[CorpusMessage]:
    """``count`` messages over ``subjects`` subjects, in ingest order. Subjects are drawn at
    random (each gets about count/subjects messages, interleaved with the others'); the same
    seed gives the same corpus. With ``invalid_every`` = k, every k-th message (index k-1,
    2k-1, …) lacks its required changeReason: the hub must refuse it (RK-XSD004), never
    acknowledge or deliver it."""
    rng = random.Random(seed)
    people = make_subjects(subjects, rng)
    corpus = []
    for index in range(count):
        subject = people[rng.randrange(len(people))]
        reason = CHANGE_REASONS[index % len(CHANGE_REASONS)]
        town = next(t for t in TOWNS if t.code == subject.tenant)
        document = build_message(MessageSpec(SERVICE, seed * 1_000_003 + index, town))
        message_id = str(uuid.UUID(int=rng.getrandbits(128), version=4))
        issued = (FIRST_ISSUED + timedelta(seconds=index)).isoformat()
        _set(document, f"{_E}Header/{_E}messageId", message_id)
        _set(document, f"{_E}Header/{_E}subject", subject.number)
        _set(document, f"{_E}Header/{_E}issuedAt", issued)
        _set(document, f".//{_S}addresseeNumber", subject.number)
        _set(document, f".//{_S}changeReason", reason)
        valid = not (invalid_every and index % invalid_every == invalid_every - 1)
        if not valid:
            element = document.find(f".//{_S}changeReason")
            assert element is not None
            element.getparent().remove(element)  # type: ignore[union-attr]
        corpus.append(
            CorpusMessage(
                index=index,
                message_id=message_id,
                tenant=subject.tenant,
                subject=subject.number,
                change_reason=reason,
                issued_at=issued,
                subscribers=subscribers_for(reason) if valid else frozenset(),
                raw=serialize(document),
                valid=valid,
            )
        )
    assert len({m.message_id for m in corpus}) == count
    return corpus
