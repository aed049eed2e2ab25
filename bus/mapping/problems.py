"""The kinds of load error of a mapping file, each a registered code (``bus/errors.py``).

Every problem the loader finds is raised with its kind at the place it is found; the finding
it becomes has the ``file:line:column`` as its path, the English specifics as its detail and,
when the problem concerns a catalogue item, the item and its Japanese name.
"""

from __future__ import annotations

from dataclasses import replace
from typing import Any

from bus.catalogue import load_catalogue
from bus.errors import make_finding
from bus.pipeline import Finding

YAML = "RK-MAP013"  # cannot be read, or not well-formed YAML (duplicate keys included)
UNKNOWN_KEY = "RK-MAP014"  # a key (or service name) that is not known where it is written
UNKNOWN_ITEM = "RK-MAP015"  # not a catalogue id, or not an item (group) of the service there
BAD_ARGUMENT = "RK-MAP016"  # an operation's argument, a table, function, path or format
WRONG_TYPE = "RK-MAP017"  # a value of the wrong type: true/false, date, code, pattern
STRUCTURE = "RK-MAP018"  # a rule of how a file is built: needs to:, unreachable, required…

_SUBJECT_JA, _SUBJECT_EN = "変換定義", "The mapping"


def load_finding(
    code: str,
    where: str,
    detail: str,
    *,
    item: str | None = None,
    key: str | None = None,
    service: str | None = None,
    hint: tuple[str, str] | None = None,
) -> Finding:
    """A load error as a finding: ``where`` is ``file:line:column``; ``item`` a catalogue id
    (or, for RK-MAP015, the id as written, which may be no catalogue id at all); ``key`` the
    unknown key(s) for RK-MAP014; ``service`` the service whose section it is in; ``hint``
    what to write instead (Japanese, English): the Japanese message and the English
    specifics end with it."""
    known = load_catalogue().by_id.get(item) if item else None
    subject: dict[str, Any] = {}
    if known is None:
        written = f"'{item}'" if item else None
        subject = {"field_ja": written or _SUBJECT_JA, "field_en": written or _SUBJECT_EN}
    finding = make_finding(
        code,
        path=where,
        item=known.id if known else None,
        name_ja=known.name_ja if known else None,
        detail=detail,
        actual=key or "?",
        expected=service or "?",
        **subject,
    )
    if hint is None:
        return finding
    # Japanese in the message, English in the specifics (which renkei config check shows)
    return replace(
        finding, message_ja=f"{finding.message_ja}{hint[0]}", detail=f"{detail}; {hint[1]}"
    )
