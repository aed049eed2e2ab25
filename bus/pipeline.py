"""The one ingest pipeline: the stage protocol and the core types (DESIGN §1).

Every inbound adapter turns bytes into a :class:`Message` and calls :meth:`Pipeline.run`;
adapters never validate or route by themselves. Stages run in :class:`StageName` order, each
a small callable like a structlog processor. A stage that finds an error-severity
:class:`Finding` makes the message *rejected*; the stages after it that move the message
forward are then skipped (the trace records what ran).
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from enum import StrEnum
from typing import TYPE_CHECKING, Any, Protocol

from lxml import etree

if TYPE_CHECKING:  # secure_parse imports this module
    from bus.validation.secure_parse import ParseResult


class Severity(StrEnum):
    ERROR = "error"
    WARNING = "warning"
    INFO = "info"


class StageName(StrEnum):
    """The ten stages of DESIGN §1, in the order they run."""

    RECEIVE = "receive"
    AUTHENTICATE = "authenticate"
    TRANSLATE_IN = "translate_in"
    VALIDATE = "validate"
    AUTHORIZE = "authorize"
    ROUTE = "route"
    STORE = "store"
    DISPATCH = "dispatch"
    REPLY = "reply"
    AUDIT = "audit"


STAGE_ORDER: tuple[StageName, ...] = tuple(StageName)


@dataclass(frozen=True, slots=True)
class Finding:
    """One validation or processing result, in the shape of DESIGN §4.

    ``value_masked`` never holds personal data in clear text; ``detail`` carries a library's
    own text (e.g. libxml2's) for diagnosis only.
    """

    code: str
    severity: Severity
    path: str
    item: str | None
    name_ja: str | None
    rule: str | None
    value_masked: str | None
    message_ja: str
    message_en: str
    detail: str | None = None

    def as_dict(self) -> dict[str, Any]:
        return {
            "code": self.code,
            "severity": self.severity.value,
            "path": self.path,
            "item": self.item,
            "name_ja": self.name_ja,
            "rule": self.rule,
            "value_masked": self.value_masked,
            "message_ja": self.message_ja,
            "message_en": self.message_en,
            "detail": self.detail,
        }


@dataclass(frozen=True, slots=True)
class SystemRef:
    """A connected system acting for a tenant (全国地方公共団体コード + system id)."""

    tenant: str
    system: str


@dataclass(frozen=True, slots=True)
class Envelope:
    """The platform Header (DESIGN §3). A reply has its own ``message_id``; its
    ``correlation_id`` is the request's id (Correlation Identifier)."""

    message_id: str
    service: str
    service_version: str
    client: SystemRef
    issued_at: datetime
    protocol_version: str
    correlation_id: str | None = None
    relates_to: str | None = None
    target: SystemRef | None = None
    subject: str | None = None
    user_id: str | None = None


@dataclass(frozen=True, slots=True)
class Identity:
    """Who may be calling, as established by the Authenticate stage: one system for an API
    key; for a source address, every system whose allowlist holds it (Authorize then requires
    the Header's client system to be one of them)."""

    systems: frozenset[str]
    method: str  # "api_key" | "address"


@dataclass(frozen=True, slots=True)
class UsernameToken:
    """A WS-Security UsernameToken (OASIS UsernameToken Profile 1.1) with PasswordDigest, as
    a SOAP adapter found it: checked by the Authenticate stage, never stored or logged."""

    username: str
    password_digest: str  # Base64(SHA-1(nonce + created + password))
    nonce: str  # Base64
    created: str  # xs:dateTime text, exactly as sent (it is part of the digest)
    password_type: str  # the Password element's Type URI


class DeliveryStatus(StrEnum):
    PENDING = "pending"
    DELIVERED = "delivered"
    DEAD = "dead"


@dataclass(slots=True)
class Delivery:
    """One destination's copy of a stored message, claimed and sent by a dispatch worker."""

    message_id: str
    destination: str
    tenant: str
    subject: str | None
    sequence: int | None = None
    status: DeliveryStatus = DeliveryStatus.PENDING
    attempts: int = 0
    last_error: str | None = None
    # the stored delivery it must follow besides its subject's order (a 訂正 of another
    # subject waits for its original's delivery there: bus/routing.py)
    waits_for: int | None = None


@dataclass(frozen=True, slots=True)
class Acknowledgement:
    """What the sender is told once the Store stage has committed (never before).

    ``duplicate`` is true when the Idempotent Receiver recognised a resend of the same content:
    the original acknowledgement is returned and nothing is stored again."""

    message_id: str
    stored_at: datetime
    destinations: tuple[str, ...]
    duplicate: bool = False


@dataclass(slots=True)
class Message:
    """A message as received and as it moves through the pipeline.

    ``raw`` is what the adapter received. After Validate, ``document`` is the canonical
    ``<PlatformMessage>`` root (a SOAP envelope is unwrapped into it), ``envelope`` the parsed
    Header and ``service`` the service element's local name.
    """

    raw: bytes
    adapter: str
    received_at: datetime = field(default_factory=lambda: datetime.now(UTC))
    source_address: str | None = None
    api_key: str | None = field(default=None, repr=False)  # Bearer; never logged/stored
    username_token: UsernameToken | None = field(default=None, repr=False)  # SOAP WS-Security
    client_certificate: bytes | None = field(default=None, repr=False)  # TLS peer, DER
    # The service an adapter's endpoint serves (``/soap/{Service}``): Validate refuses another.
    endpoint_service: str | None = None
    # An adapter's secure parse of ``raw`` (default limits), when it screened the body before
    # ingest: Validate uses it instead of parsing again.
    parsed: ParseResult | None = field(default=None, repr=False)
    document: etree._Element | None = None
    envelope: Envelope | None = None
    service: str | None = None
    identity: Identity | None = None
    kind: str | None = None  # notification | inquiry | reply (set by Route)
    findings: list[Finding] = field(default_factory=list)
    deliveries: list[Delivery] = field(default_factory=list)
    ack: Acknowledgement | None = None
    reply: Message | None = None
    trace: list[StageName] = field(default_factory=list)

    @property
    def rejected(self) -> bool:
        return any(f.severity is Severity.ERROR for f in self.findings)

    def add_findings(self, findings: Iterable[Finding]) -> None:
        self.findings.extend(findings)


class Stage(Protocol):
    """A pipeline stage: takes the message, enriches it or adds findings, returns it."""

    @property
    def name(self) -> StageName: ...

    def __call__(self, message: Message) -> Message: ...


@dataclass(frozen=True, slots=True)
class PassThrough:
    """A stage whose behaviour a later issue supplies; until then it only lets the message by.

    It is explicit (not a missing stage) so the order of DESIGN §1 is fixed from the start.
    """

    name: StageName

    def __call__(self, message: Message) -> Message:
        return message


@dataclass(frozen=True, slots=True)
class FunctionStage:
    """Adapts a plain function to the :class:`Stage` protocol."""

    name: StageName
    function: Callable[[Message], Message]

    def __call__(self, message: Message) -> Message:
        return self.function(message)


class PipelineOrderError(ValueError):
    """The stages given do not follow DESIGN §1's order."""


class Pipeline:
    """Runs stages in DESIGN order; stops moving the message forward once it is rejected.

    Audit always runs, so a rejection is recorded like an acceptance.
    """

    def __init__(self, stages: Sequence[Stage]) -> None:
        names = [stage.name for stage in stages]
        if names != list(STAGE_ORDER):
            raise PipelineOrderError(
                f"stages must be exactly {[s.value for s in STAGE_ORDER]}, got {names}"
            )
        self._stages = tuple(stages)

    @property
    def stages(self) -> tuple[Stage, ...]:
        return self._stages

    def run(self, message: Message) -> Message:
        for stage in self._stages:
            if message.rejected and stage.name is not StageName.AUDIT:
                continue
            message = stage(message)
            message.trace.append(stage.name)
        return message


def build_pipeline(overrides: Iterable[Stage] = ()) -> Pipeline:
    """The default pipeline: every stage a pass-through unless ``overrides`` supplies it."""
    by_name: dict[StageName, Stage] = {name: PassThrough(name) for name in STAGE_ORDER}
    for stage in overrides:
        by_name[stage.name] = stage
    return Pipeline([by_name[name] for name in STAGE_ORDER])
