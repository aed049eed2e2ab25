"""Tunes CPython's cyclic garbage collector for a long-running hub or import process.

Startup builds ~130,000 long-lived objects (SQLAlchemy, pydantic, FastAPI, the catalogue,
the configuration). A full collection walks them all, ~0.1 s each time, and a hub at load or
an import holding a 1,000-record chunk crosses the full collection's trigger every couple
of thousand messages: 10 full collections took 0.96 s of a 20,000-record import's 11 s
(docs/benchmarks.md, *The collector*). ``gc.freeze()`` moves what startup built out of the
collector's sight (it is freed by reference counting as before, never by the cycle
collector), and a higher first-generation threshold makes the young collections rarer;
the older generations keep Python's own thresholds.
"""

from __future__ import annotations

import gc


def tune_collector(young_threshold: int) -> bool:
    """Freeze every object alive now and collect the youngest generation every
    ``young_threshold`` allocations; ``0`` leaves the collector as Python set it.
    Call it once, when startup is done. True when it tuned."""
    if young_threshold <= 0:
        return False
    gc.collect()  # what startup left as garbage goes now, not frozen for ever
    gc.freeze()
    _, middle, old = gc.get_threshold()
    gc.set_threshold(young_threshold, middle, old)
    return True
