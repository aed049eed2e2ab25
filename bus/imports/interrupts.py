"""Ctrl-C (SIGINT) during `renkei import notices`, taken where the batch stays consistent.

Raised as ``KeyboardInterrupt`` wherever it lands, Ctrl-C could stop the import between a
chunk's store and its commit, or — worse — just after the batch was marked finished, where
"run it again to resume" would start a fresh pass (all 重複) and the summary was lost. So
while :class:`CtrlC` listens, the first Ctrl-C is only noted: the chunks in hand are finished
and committed and no new chunk is read. Once the file has been read, the import's last
stage (outputs, finishing the batch) completes and the command says so (exit 130). A second
Ctrl-C stops at once, except after the batch was finished (``finishing``): nothing is left
to stop there.
"""

from __future__ import annotations

import signal
import threading
from types import FrameType
from typing import Any


class CtrlC:
    """SIGINT noted instead of raised while listening (from :meth:`listen` to
    :meth:`release`); only in the main thread, elsewhere Python's own handling stays."""

    def __init__(self) -> None:
        self.pressed = 0
        self.finishing = False  # the batch is being marked finished: nothing to stop
        self._previous: Any = None
        self._listening = False

    def listen(self) -> None:
        if threading.current_thread() is threading.main_thread():
            self._previous = signal.signal(signal.SIGINT, self._noted)
            self._listening = True

    def release(self) -> None:
        if self._listening:
            signal.signal(signal.SIGINT, self._previous)
            self._listening = False

    def _noted(self, signum: int, frame: FrameType | None) -> None:
        self.pressed += 1
        if self.pressed > 1 and not self.finishing:
            raise KeyboardInterrupt  # pressed again: stop now, resumable as before
