"""Masking for findings and keyed pseudonyms for logs: personal data never in clear."""

from __future__ import annotations

import hashlib
import hmac

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from bus.masking import hmac_pseudonym, mask


@pytest.mark.parametrize(
    ("value", "masked"),
    [
        ("983205673214", "***********4"),
        ("4011001098993", "************3"),
        ("1234", "***4"),
        ("123", "***"),
        ("7", "*"),
        ("", ""),
        ("山田太郎", "＊＊＊＊"),
        ("ヤマダ　タロウ", "＊" * 7),
        ("平成元年1月8日", "＊" * 8),
        ("１２３４５", "＊" * 5),  # full-width digits are text, not shown
        ("1234-5678", "＊" * 9),
        ("東" * 30, "＊" * 20),
    ],
)
def test_personal_values_are_masked(value: str, masked: str) -> None:
    assert mask(value, personal=True) == masked


@pytest.mark.parametrize(
    ("value", "shown"),
    [
        ("131016", "131016"),
        ("RK-DOM001", "RK-DOM001"),
        ("", ""),
        ("x" * 64, "x" * 64),
        ("x" * 65, "x" * 63 + "…"),
        ("課" * 100, "課" * 63 + "…"),
    ],
)
def test_non_personal_values_shown_truncated(value: str, shown: str) -> None:
    assert mask(value, personal=False) == shown


def test_hmac_pseudonym() -> None:
    key = b"k" * 32
    pseudonym = hmac_pseudonym("983205673214", key)
    assert pseudonym == hmac.new(key, b"983205673214", hashlib.sha256).hexdigest()
    assert len(pseudonym) == 64 and int(pseudonym, 16) >= 0
    assert pseudonym == hmac_pseudonym("983205673214", key)  # stable: joins log lines
    assert pseudonym != hmac_pseudonym("983205673214", b"other key")
    assert pseudonym != hmac_pseudonym("983205673215", key)
    assert pseudonym != hashlib.sha256(b"983205673214").hexdigest()  # never a plain hash


def test_hmac_needs_a_key() -> None:
    with pytest.raises(ValueError):
        hmac_pseudonym("983205673214", b"")


@settings(database=None, max_examples=300)
@given(st.text())
def test_personal_text_never_in_clear(value: str) -> None:
    masked = mask(value, personal=True)
    if value.isascii() and value.isdigit():
        assert len(masked) == len(value)
        assert masked.count("*") >= len(value) - 1
    else:
        assert set(masked) <= {"＊"}
        assert len(masked) == min(len(value), 20)
    assert len(mask(value, personal=False)) <= 64
    hmac_pseudonym(value, b"key")  # lone surrogates too
