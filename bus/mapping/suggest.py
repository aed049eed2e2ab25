"""What an integrator probably meant: the catalogue id for a misspelt one or for an item's
Japanese name (氏名 → name), the service for a misspelt or versioned service name. Each
suggestion is a hint (Japanese, English) added to the load error's messages."""

from __future__ import annotations

import re
from collections.abc import Iterable
from difflib import get_close_matches

from bus.catalogue import load_catalogue

Hint = tuple[str, str]
_VERSION = re.compile(r"[-_.@ ]?[vV]?\d+(?:[._]\d+)*$")


def _nearest(written: str, candidates: Iterable[str]) -> str | None:
    by_lower = {c.lower(): c for c in candidates}
    found = get_close_matches(written.lower(), list(by_lower), n=1, cutoff=0.75)
    return by_lower[found[0]] if found else None


def item_hint(written: str, here: Iterable[str]) -> Hint | None:
    """For a ``to:``/``from:`` that is no catalogue id: the id whose Japanese name it is, or
    the nearest id, preferring the items of the service at that place (``here``)."""
    catalogue = load_catalogue()
    local = list(here)
    by_name = {item.name_ja: item.id for item in catalogue.by_id.values()}
    item_id = by_name.get(written.strip())
    if item_id is not None:
        return (
            f"「{written}」は項目 {item_id} の日本語名です。"
            f"項目 ID の {item_id} と書いてください。",
            f"'{written}' is the Japanese name of {item_id}: write the id {item_id}.",
        )
    item_id = _nearest(written, local) or _nearest(written, catalogue.by_id)
    if item_id is None:
        return None
    name = catalogue.by_id[item_id].name_ja
    return (
        f"{item_id}（{name}）の誤りではありませんか（renkei catalog で項目 ID を確認できます）。",
        f"Did you mean {item_id} ({name})? (renkei catalog lists the ids)",
    )


def service_hint(written: str, known: Iterable[str]) -> Hint | None:
    """For an unknown service: the nearest one, a version suffix dropped (``…V2``)."""
    names = sorted(known)
    bare = _VERSION.sub("", written)
    if bare != written and bare in names:
        return (
            f"サービス名に版は書きません（版はスキーマが決めます）: {bare} と書いてください。",
            f"A service name carries no version (the schema has it): write {bare}.",
        )
    found = _nearest(bare, names)
    if found is None:
        return None  # renkei catalog lists the services
    return (f"{found} ではありませんか。", f"Did you mean {found}?")


def column_hint(written: str, columns: list[str]) -> Hint:
    """For a CSV path that is no column: the column named by the catalogue item's Japanese
    name (``from: name`` where the header says 氏名), the nearest column, else the list."""
    item = load_catalogue().by_id.get(written)
    found = item.name_ja if item is not None and item.name_ja in columns else None
    found = found or _nearest(written, columns)
    if found is not None:
        return (
            f"CSV 側は列の見出し名で書きます: {found} ではありませんか。",
            f"The CSV side names a column of columns: did you mean {found}?",
        )
    listed = ", ".join(columns)
    return (f"列は次のいずれかです: {listed}", f"A column is one of: {listed}")
