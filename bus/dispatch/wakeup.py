"""Wake-ups: hints that new deliveries are due, so idle workers need not wait for their poll.

The database is the queue; a wake-up carries no work and correctness never depends on one
arriving (workers poll as a fallback). ``memory://`` (the embedded default) is a broadcast
inside this process: every :class:`Wakeups` with that URL shares one signal, without kombu's
polling virtual transport. Any other kombu URL (``amqp://…``) publishes to a fanout exchange;
each :class:`Wakeups` consumes an exclusive auto-delete queue bound to it on a background
thread, so every worker process wakes.

Without a broker, the processes of one machine on one store (``renkei serve``'s HTTP
processes and its dispatch process, a ``renkei import``) reach each other over a *machine
channel* (:func:`machine_channel`): a Unix datagram socket named after the database. The
process whose workers wait binds it; every other one sends it a one-byte datagram per
notify (dropped when nobody listens or one is already queued: a hint, like the rest).
"""

from __future__ import annotations

import errno
import hashlib
import logging
import os
import socket
import sys
import threading
from collections.abc import Iterable
from typing import Any

import kombu
from sqlalchemy.engine import make_url

from bus.settings import Settings

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


def machine_channel(settings: Settings) -> str | None:
    """The machine channel of ``settings``' store: a Linux abstract socket name (no file to
    create or clean up) derived from the SQLite file's real path (or from the database URL),
    so every process of this machine that opens that store finds the same one. None with a
    broker (it carries the wake-ups), for an in-memory database, or off Linux (workers then
    rely on their poll)."""
    if not settings.broker_url.startswith("memory:") or not sys.platform.startswith("linux"):
        return None
    store = settings.effective_database_url
    if settings.is_sqlite:
        database = make_url(store).database
        if not database or database == ":memory:":
            return None
        store = os.path.realpath(database)
    digest = hashlib.sha256(store.encode()).hexdigest()[:24]
    return f"\0renkei-wakeups-{digest}"


class _ChannelListener:
    """This process's end of a machine channel: a thread receiving datagrams and firing the
    process's signal for each (a worker busy meanwhile sees one wake-up for them all)."""

    def __init__(self, channel: str, signal: _Signal) -> None:
        self._socket = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        try:
            self._socket.bind(channel)
        except OSError:
            self._socket.close()
            raise
        self._socket.settimeout(0.5)  # to notice close()
        self._signal = signal
        self._closed = threading.Event()
        self._thread = threading.Thread(target=self._receive, name="renkei-wakeups", daemon=True)
        self._thread.start()

    def _receive(self) -> None:
        while not self._closed.is_set():
            try:
                self._socket.recv(16)
            except TimeoutError:
                continue
            except OSError:
                return
            self._signal.fire()

    def close(self) -> None:
        self._closed.set()
        self._thread.join(timeout=5)
        self._socket.close()


#: Machine channels this process listens on (one listener each, whatever the instances).
_LISTENERS: dict[str, _ChannelListener] = {}


class Wakeups:
    """``notify(destinations)`` after a commit that created deliveries; ``wait(timeout)`` in a
    worker's loop. Thread-safe; broker failures are logged and swallowed (hints only)."""

    def __init__(self, broker_url: str = MEMORY, channel: str | None = None) -> None:
        self.broker_url = broker_url
        self._remote = not broker_url.startswith("memory:")
        self._channel = None if self._remote else channel
        self._sender: socket.socket | None = None
        self._listener: _ChannelListener | None = None
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

    @classmethod
    def for_settings(cls, settings: Settings) -> Wakeups:
        """Wake-ups over ``settings``' broker, or its store's machine channel without one."""
        return cls(settings.broker_url, machine_channel(settings))

    def notify(self, destinations: Iterable[str] = ()) -> None:
        self._signal.fire()  # workers of this process wake at once
        if self._remote:
            self._publish({"destinations": sorted(set(destinations))})
        elif self._channel is not None and self._channel not in _LISTENERS:
            self._send_to_channel(self._channel)

    def _send_to_channel(self, channel: str) -> None:
        with self._publish_lock:
            try:
                if self._sender is None:
                    self._sender = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
                    self._sender.setblocking(False)
                self._sender.sendto(b"!", channel)
            except OSError as error:  # nobody listens, or a wake-up is queued already
                if error.errno not in (errno.ECONNREFUSED, errno.ENOENT, errno.EAGAIN):
                    log.warning("wake-up not sent: %s", error)

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
            self._listen()
            return True
        self._start_consumer()
        return self._ready.wait(timeout)

    def _listen(self) -> None:
        """Bind the machine channel, unless this process listens already or another one does
        (then this process's workers rely on their own signal and their poll)."""
        if self._channel is None:
            return
        with _LOCAL_LOCK:
            if self._channel in _LISTENERS:
                return
            try:
                self._listener = _ChannelListener(self._channel, self._signal)
            except OSError as error:
                log.info("machine wake-up channel held by another process (%s)", error.strerror)
                return
            _LISTENERS[self._channel] = self._listener

    def close(self) -> None:
        if self._listener is not None and self._channel is not None:
            with _LOCAL_LOCK:
                _LISTENERS.pop(self._channel, None)
            self._listener.close()
            self._listener = None
        with self._publish_lock:
            if self._sender is not None:
                self._sender.close()
                self._sender = None
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
