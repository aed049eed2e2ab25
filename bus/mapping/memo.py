"""Bounded caches for pure text functions on the per-record path of a batch.

A 登記済通知 file repeats the same few hundred dates, 持分 and 所在 over and over; a function of
the text alone (no clock, no configuration read after the first call) can keep its answers.
Only short texts are kept, so a hostile or corrupt long value never stays in memory, and the
cache holds at most ``maxsize`` of them (least recently used out first).
"""

from __future__ import annotations

from collections.abc import Callable
from functools import _CacheInfo, lru_cache, wraps
from typing import Generic, Protocol, TypeVar, cast

T = TypeVar("T")
T_co = TypeVar("T_co", covariant=True)


class TextCache(Protocol, Generic[T_co]):
    """The cached function: called like the function, ``__wrapped__`` is the function."""

    @property
    def __wrapped__(self) -> Callable[[str], T_co]: ...

    def __call__(self, text: str) -> T_co: ...

    def cache_info(self) -> _CacheInfo: ...

    def cache_clear(self) -> None: ...


def short_text_cache(
    maxsize: int, longest: int = 40
) -> Callable[[Callable[[str], T]], TextCache[T]]:
    """Decorates a pure ``str -> T`` function: answers for texts of at most ``longest``
    characters come from an LRU cache of ``maxsize`` entries."""

    def decorate(function: Callable[[str], T]) -> TextCache[T]:
        cached = lru_cache(maxsize=maxsize)(function)

        @wraps(function)
        def run(text: str) -> T:
            return cached(text) if len(text) <= longest else function(text)

        run.cache_info = cached.cache_info  # type: ignore[attr-defined]
        run.cache_clear = cached.cache_clear  # type: ignore[attr-defined]
        return cast(TextCache[T], run)

    return decorate
