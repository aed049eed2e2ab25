"""``derive: inbound`` (or ``outbound``): one direction written as the inverse of the other.

Inverting an entry swaps ``from`` and ``to``; code tables are read backwards; a ``join`` of
several sources becomes one ``split`` per source; an inbound ``date`` becomes the system's
``written`` form (a ResidentDate without ``written`` goes back as written). ``const``,
``default``, ``param`` and ``when`` entries only make sense one way and are left out, as are
fallback entries for a target already derived. ``extract``, ``split``, ``lookup`` and
``function`` cannot be inverted: write that direction out.
"""

from __future__ import annotations

from typing import Any

from bus.catalogue import load_catalogue
from bus.mapping.compiler import SpecProblem
from bus.mapping.problems import STRUCTURE
from bus.mapping.yamlpos import PDict, PList, Position, position_of

_NOT_INVERTIBLE = ("extract", "split", "lookup", "function")
_ONE_WAY = ("const", "param", "default")
_KEEP = ("trim", "gaiji", "note")


def _copy(data: dict[str, Any], position: Position) -> PDict:
    result = PDict(data)
    result.position = position
    result.key_positions = {}
    return result


def derive_fields(fields: Any, at: Position, to_inbound: bool) -> PList:
    if not isinstance(fields, list):
        raise SpecProblem(at, "the section derived from has no fields list", STRUCTURE)
    derived = PList()
    derived.position = position_of(fields, at)
    seen: set[str] = set()
    for entry in fields:
        where = position_of(entry, at)
        if not isinstance(entry, PDict) or "when" in entry or any(k in entry for k in _ONE_WAY):
            continue
        if "group" in entry:
            group = {k: v for k, v in entry.items() if k != "fields"}
            group["fields"] = derive_fields(entry.get("fields"), where, to_inbound)
            derived.append(_copy(group, where))
            continue
        blocked = [k for k in _NOT_INVERTIBLE if k in entry]
        if blocked:
            raise SpecProblem(
                where,
                f"cannot derive the inverse of {blocked[0]}: write that direction out",
                STRUCTURE,
            )
        if repr(entry.get("to")) in seen:
            continue
        seen.add(repr(entry.get("to")))
        derived.extend(_invert(entry, where, to_inbound))
    return derived


def _resident(item_id: Any) -> bool:
    item = load_catalogue().by_id.get(str(item_id).partition("@")[0])
    return item is not None and item.xsd_type == "std:ResidentDate"


def _invert(entry: PDict, where: Position, to_inbound: bool) -> list[PDict]:
    base: dict[str, Any] = {k: entry[k] for k in _KEEP if k in entry}
    if "codes" in entry:
        codes = entry["codes"]
        spec: dict[str, Any] = {"table": codes} if isinstance(codes, str) else dict(codes)
        values = spec.get("values")
        if isinstance(values, dict):
            spec["values"] = {v: k for k, v in reversed(list(values.items()))}
        else:
            reverse = str(spec.get("reverse") or "false").lower() == "true"
            spec["reverse"] = "false" if reverse else "true"
        spec.pop("unknown", None)
        spec.pop("default", None)
        base["codes"] = spec
    sources = entry.get("from")
    if to_inbound:  # an outbound date form becomes what the inbound side reads
        item = entry.get("from")
        if _resident(item):
            base["date"] = "resident"
        elif "date" in entry:
            base["date"] = "iso"
        if "date" in entry:
            base["written"] = entry["date"]
    elif "date" in entry and "written" in entry:
        base["date"] = entry["written"]
    elif "date" in entry and str(entry["date"]) == "iso":
        base["date"] = "iso"
    if isinstance(sources, list):
        if not all(isinstance(part, str) for part in sources):  # it would be left out
            raise SpecProblem(
                where,
                "cannot derive a join member with operations of its own: write that direction out",
                STRUCTURE,
            )
        separator = str(entry.get("join") or "")
        if not separator:
            raise SpecProblem(
                where,
                "cannot derive a join without a separator: write that direction out",
                STRUCTURE,
            )
        return [
            _copy(
                {
                    **base,
                    "to": part,
                    "from": entry["to"],
                    "split": {"sep": separator, "index": str(i), "parts": str(len(sources))},
                },
                where,
            )
            for i, part in enumerate(sources)
            if isinstance(part, str)
        ]
    return [_copy({**base, "to": sources, "from": entry["to"]}, where)]
