"""Wake-ups: hints that new deliveries are due, so idle workers need not wait for their poll.

The database is the queue; a wake-up carries no work and correctness never depends on one
arriving (workers poll as a fallback). ``memory://`` (the embedded default) is a broadcast
inside this process: every :class:`Wakeups` with that URL shares one signal, without kombu's
polling virtual transport. Any other kombu URL (``amqp://…``) publishes to a fanout exchange;
each :class:`Wakeups` consumes an exclusive auto-delete queue bound to it on a background
thread, so every worker process wakes. Publishing too runs on a thread of its own
(:class:`_Publisher`): ``notify`` never waits for the broker, so a broker that hangs or is
unreachable costs the ingest that notified nothing (it cost each grouped commit 2 s).

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
import time
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
        self._consumer: threading.Thread | None = None
        self._ready = threading.Event()
        self._closed = threading.Event()
        # Broker publishing happens on a thread of its own (:class:`_Publisher`): a broker
        # that is slow or unreachable must not hold up the commit that notified.
        self._publisher: _Publisher | None = None

    @classmethod
    def for_settings(cls, settings: Settings) -> Wakeups:
        """Wake-ups over ``settings``' broker, or its store's machine channel without one."""
        return cls(settings.broker_url, machine_channel(settings))

    def notify(self, destinations: Iterable[str] = ()) -> None:
        self._signal.fire()  # workers of this process wake at once
        if self._remote:
            if self._publisher is None:
                with self._publish_lock:
                    if self._publisher is None:
                        self._publisher = _Publisher(self.broker_url, self._exchange)
            self._publisher.post(destinations)
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
        if self._publisher is not None:  # what was notified last is still sent (a CLI's)
            self._publisher.close()
            self._publisher = None

    # --- broker side ----------------------------------------------------------------------

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


#: Seconds a publisher waits after a failed publish before it tries the broker again (doubling
#: while it keeps failing); wake-ups notified meanwhile only wake this process's workers.
PUBLISH_RETRY_FIRST_SECONDS = 1.0
PUBLISH_RETRY_MAX_SECONDS = 30.0
#: Seconds to connect to the broker (and to have a publish confirmed by the socket).
PUBLISH_TIMEOUT_SECONDS = 2.0


class _Publisher:
    """Publishes a :class:`Wakeups`' notifications to the broker from a thread of its own.

    ``post`` only records the destinations and returns: an ingest notifies right after its
    commit, and a broker that does not answer (a firewall dropping packets, a broker blocked
    by its memory alarm) held each grouped commit for the 2 s connect timeout, one group at
    a time, while wake-ups are only hints. Notifications posted while a publish is under way
    are merged into the next one. After a failure the broker is left alone for a while
    (1 s, doubling to 30 s): what is posted meanwhile is dropped, as the workers' poll finds
    the deliveries anyway. The first failure is logged once (RK-OPS002), and so is the
    recovery."""

    def __init__(self, broker_url: str, exchange: Any) -> None:
        self._url = broker_url
        self._exchange = exchange
        self._lock = threading.Lock()
        self._pending: set[str] | None = None  # None: nothing to publish
        self._posted = threading.Event()
        self._closing = False
        self._connection: Any = None
        self._retry_at = 0.0  # monotonic; no publish before
        self._delay = PUBLISH_RETRY_FIRST_SECONDS
        self._failing_since: float | None = None
        self._dropped = 0
        self._thread = threading.Thread(target=self._run, name="renkei-wakeups-out", daemon=True)
        self._thread.start()

    def post(self, destinations: Iterable[str]) -> None:
        with self._lock:
            if self._closing:
                return
            if self._failing_since is not None and time.monotonic() < self._retry_at:
                self._dropped += 1
                return
            self._pending = (self._pending or set()) | set(destinations)
        self._posted.set()

    def close(self, timeout: float = 2 * PUBLISH_TIMEOUT_SECONDS + 1) -> None:
        """Publish what is pending (bounded by ``timeout``), then stop."""
        with self._lock:
            self._closing = True
        self._posted.set()
        self._thread.join(timeout)

    def _run(self) -> None:
        while True:
            self._posted.wait()
            with self._lock:
                self._posted.clear()
                pending, self._pending = self._pending, None
                closing = self._closing
            if pending is not None:
                self._publish(sorted(pending))
            if closing:
                break
        self._disconnect()

    def _publish(self, destinations: list[str]) -> None:
        try:
            if self._connection is None:
                self._connection = _kombu.Connection(
                    self._url, connect_timeout=PUBLISH_TIMEOUT_SECONDS
                )
            producer = self._connection.Producer(serializer="json")
            producer.publish(
                {"destinations": destinations},
                exchange=self._exchange,
                declare=[self._exchange],
                retry=True,
                retry_policy={"max_retries": 1, "interval_start": 0.1},
                delivery_mode=1,
                timeout=PUBLISH_TIMEOUT_SECONDS,
            )
        except Exception as error:
            self._disconnect()
            self._failed(error)
            return
        self._succeeded()

    def _failed(self, error: BaseException) -> None:
        with self._lock:
            first = self._failing_since is None
            if first:
                self._failing_since = time.monotonic()
                self._delay = PUBLISH_RETRY_FIRST_SECONDS
            else:
                self._delay = min(self._delay * 2, PUBLISH_RETRY_MAX_SECONDS)
            self._retry_at = time.monotonic() + self._delay
        if first:
            reason = f"{type(error).__name__}: {str(error).splitlines()[0] if str(error) else ''}"
            log.warning(
                "RK-OPS002 wake-ups cannot be published to the broker (%s); the dispatch "
                "workers find new deliveries by their poll (1 s) until it answers again",
                reason[:200],
            )

    def _succeeded(self) -> None:
        with self._lock:
            since, self._failing_since = self._failing_since, None
            dropped, self._dropped = self._dropped, 0
        if since is not None:
            log.warning(
                "RK-OPS002 cleared: wake-ups are published again after %.0f s "
                "(%d not sent meanwhile)",
                time.monotonic() - since,
                dropped,
            )

    def _disconnect(self) -> None:
        if self._connection is not None:
            try:
                self._connection.release()
            except Exception:  # a broken connection may fail to close: it is dropped anyway
                log.debug("broker connection not closed cleanly")
            self._connection = None
