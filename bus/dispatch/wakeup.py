"""Wake-ups: hints that new deliveries are due, so idle workers need not wait for their poll.

The database is the queue; a wake-up carries no work and correctness never depends on one
arriving (workers poll as a fallback). ``memory://`` (the embedded default) is a broadcast
inside this process: every :class:`Wakeups` with that URL shares one signal, without kombu's
polling virtual transport. Any other kombu URL (``amqp://…``) publishes to a fanout exchange;
each :class:`Wakeups` consumes an exclusive auto-delete queue bound to it on a background
thread, so every worker process wakes.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Iterable
from typing import Any

import kombu

# kombu's API is untyped: use it through an explicitly dynamic handle.
_kombu: Any = kombu

log = logging.getLogger(__name__)

EXCHANGE_NAME = "renkei.wakeups"
MEMORY = "memory://"


class _Signal:
    """A generation counter under a condition: ``wait`` returns as soon as the generation
    moves past what the calling thread saw last, so a notify between two waits is not lost."""

    def __init__(self) -> None:
        self._condition = threading.Condition()
        self._generation = 0
        self._seen = threading.local()

    def fire(self) -> None:
        with self._condition:
            self._generation += 1
            self._condition.notify_all()

    def wait(self, timeout: float) -> bool:
        with self._condition:
            seen = getattr(self._seen, "generation", 0)
            woke = self._condition.wait_for(lambda: self._generation != seen, timeout)
            self._seen.generation = self._generation
            return bool(woke)


_LOCAL_SIGNALS: dict[str, _Signal] = {}
_LOCAL_LOCK = threading.Lock()


def _local_signal(key: str) -> _Signal:
    with _LOCAL_LOCK:
        return _LOCAL_SIGNALS.setdefault(key, _Signal())


class Wakeups:
    """``notify(destinations)`` after a commit that created deliveries; ``wait(timeout)`` in a
    worker's loop. Thread-safe; broker failures are logged and swallowed (hints only)."""

    def __init__(self, broker_url: str = MEMORY) -> None:
        self.broker_url = broker_url
        self._remote = not broker_url.startswith("memory:")
        # One signal per process and URL: the Store stage's and the workers' instances meet.
        self._signal = _local_signal(broker_url) if not self._remote else _Signal()
        self._exchange = _kombu.Exchange(
            EXCHANGE_NAME, type="fanout", durable=False, auto_delete=False
        )
        self._publish_lock = threading.Lock()
        self._producer_connection: Any = None
        self._consumer: threading.Thread | None = None
        self._ready = threading.Event()
        self._closed = threading.Event()

    def notify(self, destinations: Iterable[str] = ()) -> None:
        self._signal.fire()  # workers of this process wake at once
        if self._remote:
            self._publish({"destinations": sorted(set(destinations))})

    def wait(self, timeout: float) -> bool:
        """True when woken (by this process or, with a broker, by any), False on timeout."""
        if self._remote:
            self._start_consumer()
        return self._signal.wait(timeout)

    def interrupt(self) -> None:
        """Wake this process's waiters only (e.g. to stop a worker pool promptly)."""
        self._signal.fire()

    def start(self, timeout: float = 5.0) -> bool:
        """Bind the consumer now (a worker calls this before its first claim, so a notify
        sent meanwhile is not missed); True once bound."""
        if not self._remote:
            return True
        self._start_consumer()
        return self._ready.wait(timeout)

    def close(self) -> None:
        self._closed.set()
        if self._consumer is not None:
            self._consumer.join(timeout=5)
        with self._publish_lock:
            if self._producer_connection is not None:
                self._producer_connection.release()
                self._producer_connection = None

    # --- broker side ----------------------------------------------------------------------

    def _publish(self, body: dict[str, list[str]]) -> None:
        with self._publish_lock:
            try:
                if self._producer_connection is None:
                    self._producer_connection = _kombu.Connection(
                        self.broker_url, connect_timeout=2
                    )
                producer = self._producer_connection.Producer(serializer="json")
                producer.publish(
                    body,
                    exchange=self._exchange,
                    declare=[self._exchange],
                    retry=True,
                    retry_policy={"max_retries": 1, "interval_start": 0.1},
                    delivery_mode=1,
                )
            except Exception as error:
                log.warning("wake-up not published: %s", type(error).__name__)
                if self._producer_connection is not None:
                    self._producer_connection.release()
                    self._producer_connection = None

    def _start_consumer(self) -> None:
        if self._consumer is None:
            with self._publish_lock:
                if self._consumer is None:
                    self._consumer = threading.Thread(
                        target=self._consume, name="renkei-wakeups", daemon=True
                    )
                    self._consumer.start()

    def _consume(self) -> None:
        delay = 0.5
        while not self._closed.is_set():
            try:
                with _kombu.Connection(self.broker_url, connect_timeout=2) as connection:
                    queue = _kombu.Queue(
                        exchange=self._exchange, exclusive=True, auto_delete=True, durable=False
                    )
                    with connection.Consumer(
                        queue, callbacks=[self._on_message], accept=["json"], no_ack=True
                    ):
                        self._ready.set()
                        delay = 0.5
                        while not self._closed.is_set():
                            try:
                                connection.drain_events(timeout=0.5)
                            except TimeoutError:
                                continue
            except Exception as error:
                self._ready.clear()
                log.warning("wake-up consumer reconnecting: %s", type(error).__name__)
                self._closed.wait(delay)
                delay = min(delay * 2, 10.0)
            finally:
                self._signal.fire()  # (re)connected or closing: let waiters re-check

    def _on_message(self, _body: object, _message: object) -> None:
        self._signal.fire()
