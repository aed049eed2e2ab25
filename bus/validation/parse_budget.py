"""A memory budget for the trees of large documents parsed at once (a Throttler).

libxml2 builds one node of about 120–170 bytes for every element, comment or processing
instruction, so the tree of a document made of tiny nodes is some twenty to forty times its
size: a 10 MB body of ``<!-- -->`` comments took 210 MB, one of ``<e/>`` elements (9,999 to a
parent, under RK-SEC010) 300 MB. Thirty such bodies sent at once, before any credential is
checked, took a hub past 9 GB (docs/security.md, "Memory of large bodies").

:func:`tree_cost` estimates a tree's memory from the bytes alone (one ``memchr``-speed count
of ``<``, which starts every node); :class:`ParseBudget` admits parses while the estimates of
the trees alive stay under its total. A reservation is released when its tree is no longer
needed (by the caller: :meth:`Reservation.release`, idempotent and callable from any thread).
A document whose estimate alone exceeds the total is admitted only when nothing else holds
the budget, so it is never refused for being large, only made to wait its turn.
"""

from __future__ import annotations

import threading
from typing import Final

#: The memory estimated for each node: libxml2's node (120 bytes on 64-bit) plus its share of
#: the allocator's overhead, measured at 130–170 bytes a node (comments cost the most).
NODE_BYTES: Final = 160

MIB: Final = 1024 * 1024


def tree_cost(data: bytes) -> int:
    """The estimated memory of ``data``'s tree: its text once more, and :data:`NODE_BYTES` for
    every ``<`` (each element, comment, PI or CDATA section starts with one; an end tag or a
    ``<`` in a comment counts too, which only errs on the safe side)."""
    return len(data) + NODE_BYTES * data.count(b"<")


class Reservation:
    """A share of a :class:`ParseBudget`, given back once by :meth:`release`."""

    __slots__ = ("_budget", "cost")

    def __init__(self, budget: ParseBudget, cost: int) -> None:
        self._budget: ParseBudget | None = budget
        self.cost = cost

    def release(self) -> None:
        budget, self._budget = self._budget, None
        if budget is not None:
            budget._give_back(self.cost)


class ParseBudget:
    """At most ``total`` bytes of estimated tree memory reserved at once; thread-safe."""

    def __init__(self, total: int) -> None:
        if total < 1:
            raise ValueError("ParseBudget.total must be at least 1")
        self.total = total
        self._in_use = 0
        self._lock = threading.Lock()

    @property
    def in_use(self) -> int:
        return self._in_use

    def try_reserve(self, cost: int) -> Reservation | None:
        """A reservation of ``cost`` (at most the whole budget), or ``None`` when the trees
        already admitted leave too little room now."""
        cost = min(max(cost, 0), self.total)
        with self._lock:
            if self._in_use + cost > self.total:
                return None
            self._in_use += cost
        return Reservation(self, cost)

    def _give_back(self, cost: int) -> None:
        with self._lock:
            self._in_use -= cost
