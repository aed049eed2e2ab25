"""The assembled hub: store, configuration, the one ingest pipeline and dispatch workers.

Every inbound adapter calls :meth:`Hub.ingest` (or hands a notification to the batch lane,
:meth:`Hub.submit`); ``renkei serve`` also runs the workers in process (the embedded default),
``renkei worker`` runs them alone (PostgreSQL only).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from concurrent.futures import Future
from contextlib import AbstractContextManager
from dataclasses import dataclass, field
from functools import cache
from time import perf_counter

from bus.batch_lane import BatchLane
from bus.config.index import ConfigIndex
from bus.config.models import Direction, Route, System
from bus.config.snapshots import ConfigProvider, ensure_config
from bus.dispatch.reply import ReplyStage
from bus.dispatch.transport import close_transports
from bus.dispatch.wakeup import Wakeups
from bus.dispatch.worker import WorkerPool
from bus.identity import AuthenticateStage, AuthorizeStage
from bus.mapping.stage import TranslateInStage
from bus.observability.events import ingest_observed
from bus.pipeline import (
    STAGE_ORDER,
    Finding,
    Identity,
    Message,
    Pipeline,
    StageName,
    UsernameToken,
    build_pipeline,
)
from bus.routing import RouteStage, stored_destinations
from bus.security.api_keys import ApiKeyRegistry
from bus.security.rate_limit import RateLimiter
from bus.security.secret_box import SecretBox
from bus.security.wsse import UsernameTokenVerifier
from bus.settings import Settings
from bus.store.audit import AuditStage
from bus.store.batch import ingest_batch
from bus.store.db import Store, open_store
from bus.store.ingest import StoreStage
from bus.store.queries import stored_reply_body
from bus.store.rejection_audit import RejectionAuditWriter
from bus.validation.secure_parse import ParseResult
from bus.validation.stage import ValidateStage
from bus.validation.validator import Validator


def _provider_lookup(index: Callable[[], ConfigIndex]) -> Callable[[str, str], System | None]:
    def provider_for(service: str, tenant: str) -> System | None:
        current = index()
        route = current.route(service, tenant)
        if route is None or route.provider is None:
            return None
        if not current.allowed(route.provider, Direction.RECEIVE, service, tenant):
            return None
        return current.system(route.provider)

    return provider_for


def _permitted_routes(index: Callable[[], ConfigIndex]) -> Callable[[str, str], Route | None]:
    """The route for (service, tenant) keeping only subscribers allowed to receive it for that
    tenant (default deny: a subscriber that does not serve the tenant never gets its data)."""

    def route_for(service: str, tenant: str) -> Route | None:
        current = index()
        route = current.route(service, tenant)
        if route is None:
            return None
        allowed = tuple(
            subscriber
            for subscriber in route.subscribers
            if current.allowed(subscriber.system, Direction.RECEIVE, service, tenant)
        )
        return route.model_copy(update={"subscribers": allowed})

    return route_for


def _delivery(index: ConfigIndex, system_id: str) -> str:
    system = index.system(system_id)
    return system.delivery if system is not None else "push"


def identity_stages(
    store: Store, config: ConfigProvider, settings: Settings
) -> tuple[AuthenticateStage, AuthorizeStage]:
    """Authenticate and Authorize with their database-backed parts: issued API keys, the
    WS-Security secrets and nonce cache, and the shared rate-limit counters."""
    box = cache(lambda: SecretBox.from_settings(settings))
    tokens = UsernameTokenVerifier(store.sessions, box)
    return (
        AuthenticateStage(config, ApiKeyRegistry(store.sessions), tokens),
        AuthorizeStage(config, RateLimiter(store.sessions)),
    )


def assemble_pipeline(
    store: Store,
    config: ConfigProvider,
    wakeups: Wakeups,
    settings: Settings,
    rejections: RejectionAuditWriter,
) -> Pipeline:
    """The stages of DESIGN §1 wired to this store and configuration; refusals are audited
    through ``rejections`` (after the answer)."""
    validator = Validator()

    def index() -> ConfigIndex:
        return config.current().index

    authenticate, authorize = identity_stages(store, config, settings)
    store_stage = StoreStage(store.sessions, wakeups, lambda service: index().retention(service))

    def store_reply(reply: Message) -> None:
        store_stage(reply)

    def stored_reply(tenant: str, request_id: str) -> bytes | None:
        with store.sessions() as session:
            return stored_reply_body(session, tenant, request_id)

    return build_pipeline(
        [
            authenticate,
            TranslateInStage(config),
            ValidateStage(validator, config),
            authorize,
            RouteStage(
                _permitted_routes(index),
                stored_destinations(store.sessions),
                feed_consumer=lambda system: _delivery(index(), system) == "feed",
            ),
            store_stage,
            ReplyStage(
                _provider_lookup(index),
                validator.validate,
                store_reply=store_reply,
                stored_reply=stored_reply,
                caller_for=lambda system: index().system(system),
            ),
            AuditStage(store.sessions, rejections),
        ]
    )


@dataclass
class Hub:
    settings: Settings
    store: Store
    config: ConfigProvider
    wakeups: Wakeups
    pipeline: Pipeline
    rejections: RejectionAuditWriter
    lane: BatchLane = field(init=False, repr=False)

    def __post_init__(self) -> None:
        self.lane = BatchLane(self._ingest_batch, self._observed)

    def _ingest_batch(
        self, messages: Sequence[Message], on_error: Callable[[Message, Exception], None]
    ) -> list[Message]:
        return ingest_batch(self.pipeline, messages, on_error)

    def _observed(self, message: Message, seconds: float) -> None:
        ingest_observed(message, self.config.current().index, seconds)

    @classmethod
    def open(cls, settings: Settings | None = None) -> Hub:
        """Migrate the store, load the sample (or configured) configuration into an empty
        database, and assemble the pipeline."""
        settings = settings or Settings()
        store = open_store(settings)
        ensure_config(store.sessions, settings)
        config = ConfigProvider(store.sessions)
        wakeups = Wakeups.for_settings(settings)
        rejections = RejectionAuditWriter(store.sessions)
        pipeline = assemble_pipeline(store, config, wakeups, settings, rejections)
        return cls(settings, store, config, wakeups, pipeline, rejections)

    def ingest(
        self,
        raw: bytes,
        *,
        adapter: str,
        source_address: str | None = None,
        api_key: str | None = None,
        username_token: UsernameToken | None = None,
        client_certificate: bytes | None = None,
        service: str | None = None,
        identity: Identity | None = None,
        parsed: ParseResult | None = None,
    ) -> Message:
        """Run one inbound message through the pipeline; ``message.ack`` is set only once it
        is committed, ``message.findings`` says why when it is not. ``service``: the one
        service the calling endpoint accepts (RK-ENV004 for another). ``identity``: a caller
        an in-process adapter has already established (a system's own hot folder).
        ``parsed``: the adapter's own ``secure_parse(raw)`` (default limits), not repeated."""
        message = Message(
            raw=raw,
            adapter=adapter,
            source_address=source_address,
            api_key=api_key,
            username_token=username_token,
            client_certificate=client_certificate,
            endpoint_service=service,
            identity=identity,
            parsed=parsed,
        )
        return self.run(message)

    def run(self, message: Message) -> Message:
        """:meth:`ingest` for a message an adapter has made."""
        started = perf_counter()
        message = self.pipeline.run(message)
        self._observed(message, perf_counter() - started)
        return message

    def submit(self, message: Message) -> Future[Message]:
        """:meth:`run` in the batch lane (:mod:`bus.batch_lane`): with the messages other
        callers submit meanwhile, stored in one transaction. Not for an inquiry (it would hold
        the lane while its provider answers). Raises :class:`bus.batch_lane.LaneClosed` once
        the hub is closing."""
        return self.lane.submit(message)

    def ingest_many(
        self,
        raws: Sequence[bytes],
        *,
        adapter: str,
        source_address: str | None = None,
        api_key: str | None = None,
        service: str | None = None,
        identity: Identity | None = None,
        store_turn: AbstractContextManager[object] | None = None,
        amend: Callable[[int, list[Finding]], bytes | None] | None = None,
    ) -> list[Message]:
        """Run a batch of inbound messages (one caller: a file import) through the pipeline,
        every per-message stage for each, the accepted ones committed in one transaction
        (:mod:`bus.store.batch`, which holds ``store_turn`` around it); one message per raw,
        in order, each as :meth:`ingest` would return it. ``amend(i, findings)`` may give a
        corrected body for the i-th raw when it is refused, to run in its place."""

        def inbound(raw: bytes) -> Message:
            return Message(
                raw=raw,
                adapter=adapter,
                source_address=source_address,
                api_key=api_key,
                endpoint_service=service,
                identity=identity,
            )

        def corrected(index: int, refused: Message) -> Message | None:
            assert amend is not None
            raw = amend(index, refused.findings)
            return None if raw is None else inbound(raw)

        started = perf_counter()
        done = ingest_batch(
            self.pipeline,
            [inbound(raw) for raw in raws],
            store_turn=store_turn,
            amend=corrected if amend is not None else None,
        )
        share = (perf_counter() - started) / max(len(done), 1)
        index = self.config.current().index
        for message in done:
            ingest_observed(message, index, share)
        return done

    def authenticator(self) -> AuthenticateStage:
        """The Authenticate stage the ingest pipeline runs, for reads (message status, feeds)."""
        stage = self.pipeline.stages[STAGE_ORDER.index(StageName.AUTHENTICATE)]
        assert isinstance(stage, AuthenticateStage)
        return stage

    def workers(self, size: int) -> WorkerPool:
        """In-process dispatch workers (not started)."""
        self.wakeups.start()
        return WorkerPool(
            size,
            self.store.sessions,
            lambda: self.config.current().index,
            self.wakeups,
            lease_seconds=self.settings.dispatch_lease_seconds,
        )

    def close(self) -> None:
        self.lane.close()  # first: it finishes what it took, which writes to the store
        self.rejections.close()  # before the store: it writes what is pending
        self.wakeups.close()
        close_transports()
        self.store.close()
