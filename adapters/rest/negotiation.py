"""Content negotiation of ``POST /api/v1/messages/{Service}`` and ``GET
/api/v1/messages/{id}`` (RFC 9110 §12.5.1): the JSON form by default, XML when the caller
prefers it, 406 (RK-API013, problem+json) when it accepts neither, decided before the message
is read, so nothing is stored that the caller could not be told about. Success and error
replies follow the same choice: JSON and ``application/problem+json``, or XML
(``rks:Acknowledgement``, the reply's ``PlatformMessage``, ``rks:MessageStatus``) and
``application/problem+xml``.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Final

from bus.errors import make_finding
from bus.pipeline import Finding

JSON: Final = "application/json"
XML: Final = "application/xml"
TEXT_XML: Final = "text/xml"
#: What the route can answer, in the hub's order of preference; a problem document's type
#: is accepted as its family (a client that names only problem+xml wants XML errors).
_OFFERS: Final = (
    (JSON, JSON),
    (XML, XML),
    (TEXT_XML, TEXT_XML),
    ("application/problem+json", JSON),
    ("application/problem+xml", XML),
)
_MAX_RANGES: Final = 32  # a longer Accept is read only this far


@dataclass(frozen=True, slots=True)
class Choice:
    """The media type of a successful answer; ``xml`` when it is an XML one."""

    media_type: str

    @property
    def xml(self) -> bool:
        return self.media_type != JSON


DEFAULT: Final = Choice(JSON)


def _ranges(accept: str) -> list[tuple[str, float]]:
    """``(media range, q)`` of an Accept value; an unreadable q counts as 0."""
    ranges: list[tuple[str, float]] = []
    for part in accept.split(",")[:_MAX_RANGES]:
        media, *parameters = (p.strip() for p in part.split(";"))
        if not media:
            continue
        quality = 1.0
        for parameter in parameters:
            name, _, value = parameter.partition("=")
            if name.strip().lower() == "q":
                try:
                    quality = min(max(float(value.strip()), 0.0), 1.0)
                except ValueError:
                    quality = 0.0
        ranges.append((media.lower(), quality))
    return ranges


def _quality(offer: str, ranges: list[tuple[str, float]]) -> float:
    """The q of the most specific range that matches ``offer`` (RFC 9110 §12.5.1)."""
    kind = offer.split("/", 1)[0]
    best, specificity = 0.0, -1
    for media, quality in ranges:
        if media == offer:
            rank = 2
        elif media == f"{kind}/*":
            rank = 1
        elif media == "*/*":
            rank = 0
        else:
            continue
        if rank > specificity:
            best, specificity = quality, rank
    return best


def negotiate(accept: str | None) -> Choice | Finding:
    """The answer's media type for this Accept value, or RK-API013 when none is acceptable.
    No Accept (or an empty one) is anything: JSON."""
    if not accept or not accept.strip():
        return DEFAULT
    ranges = _ranges(accept)
    best: tuple[float, str] | None = None
    for offer, family in _OFFERS:
        quality = _quality(offer, ranges)
        if quality > 0 and (best is None or quality > best[0]):
            best = (quality, family)
    if best is None:
        shown = accept[:64].encode("ascii", "replace").decode("ascii")
        available = ", ".join(offer for offer, _ in _OFFERS)
        return make_finding("RK-API013", path="/", actual=shown, expected=available)
    return Choice(best[1])
