"""Personal data out of findings and logs (DESIGN §7).

:func:`mask` fills ``Finding.value_masked``; :func:`hmac_pseudonym` gives logs a stable,
keyed stand-in for a value. Never a plain hash: a 個人番号 has only 10¹¹ values, so an unkeyed
SHA-256 is reversed by enumeration.
"""

from __future__ import annotations

import hashlib
import hmac

_PERSONAL_TEXT_CAP = 20
_PLAIN_CAP = 64
_SHOW_LAST_DIGIT_FROM = 4  # shorter digit strings are masked completely


def mask(value: str, *, personal: bool) -> str:
    """A value fit for a finding.

    Personal: a digit string keeps its length and only its last digit (``***********4``;
    fewer than 4 digits: all ``*``); other text becomes one ``＊`` per character, at most 20.
    Non-personal: unchanged, cut to 64 characters ending in ``…``."""
    if personal:
        if value.isascii() and value.isdigit():
            if len(value) < _SHOW_LAST_DIGIT_FROM:
                return "*" * len(value)
            return "*" * (len(value) - 1) + value[-1]
        return "＊" * min(len(value), _PERSONAL_TEXT_CAP)
    if len(value) > _PLAIN_CAP:
        return value[: _PLAIN_CAP - 1] + "…"
    return value


def hmac_pseudonym(value: str, key: bytes) -> str:
    """HMAC-SHA256 of the UTF-8 value under a secret ``key``, hex; raises on an empty key."""
    if not key:
        raise ValueError("hmac_pseudonym needs a non-empty secret key")
    return hmac.new(key, value.encode("utf-8", "surrogatepass"), hashlib.sha256).hexdigest()
