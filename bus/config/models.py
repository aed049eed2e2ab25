"""The hub's configuration (DESIGN §6): tenants, connected systems, routes and access lists.

One YAML directory, validated as a whole: every model forbids unknown fields, and cross
references (a route naming an unknown system, an access rule naming an unknown service…) are
checked by :mod:`bus.config.loader`, which reports file and line.
"""

from __future__ import annotations

import ipaddress
from datetime import timedelta
from enum import StrEnum
from typing import Annotated, Any, Literal

from pydantic import AfterValidator, BaseModel, ConfigDict, Field, field_validator, model_validator

from bus.rules.check_digits import lg_code_valid

ALL: Literal["*"] = "*"
SystemId = Annotated[str, Field(pattern=r"^[a-z][a-z0-9_\-]{1,39}$")]
TenantCode = Annotated[str, Field(pattern=r"^[0-9]{6}$")]
ServiceName = Annotated[str, Field(pattern=r"^[A-Z][A-Za-z0-9]{1,63}$")]


class Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class AtenaSetting(StrEnum):
    OFF = "off"
    WARN = "warn"
    ERROR = "error"


class Tenant(Strict):
    """A municipality (or the prefecture) by its 全国地方公共団体コード."""

    code: TenantCode
    name: str
    atena_check: AtenaSetting = AtenaSetting.WARN  # 宛名番号 M11 W2–7: older numbers lack it
    enabled: bool = True
    # 共同利用: shared systems this tenant uses, as if listed in each system's ``tenants``
    # (how `renkei tenants add` onboards a town without editing systems.yaml)
    joins: tuple[SystemId, ...] = ()

    @field_validator("code")
    @classmethod
    def _check_digit(cls, code: str) -> str:
        if not lg_code_valid(code):
            raise ValueError(f"{code}: wrong check digit for a 全国地方公共団体コード")
        return code

    @field_validator("name")
    @classmethod
    def _named(cls, name: str) -> str:
        """Staff tell towns apart by name (console, `tenants list`): one must be given."""
        if not name.strip():
            raise ValueError("a 団体名 is required (it is empty)")
        return name


class Endpoint(Strict):
    """Where deliveries for a system go; ``transport`` names an outbound adapter."""

    transport: str = Field(pattern=r"^[a-z][a-z0-9_]*$")
    url: str | None = None
    timeout_seconds: float = Field(default=10.0, gt=0, le=300)


class RetryPolicy(Strict):
    """Exponential back-off with jitter, bounded by attempts and by age."""

    max_attempts: int = Field(default=12, ge=1, le=1000)
    max_age: timedelta = timedelta(hours=72)
    base_delay: timedelta = timedelta(seconds=1)
    max_delay: timedelta = timedelta(minutes=10)


def _fingerprint(value: str) -> str:
    text = value.replace(":", "").lower()
    if len(text) != 64 or any(c not in "0123456789abcdef" for c in text):
        raise ValueError("a SHA-256 fingerprint is 64 hex digits (colons allowed)")
    return text


CertificateFingerprint = Annotated[str, AfterValidator(_fingerprint)]


class Credentials(Strict):
    """How a calling system is recognised: API keys (hashes only) or source addresses."""

    api_key_hashes: tuple[str, ...] = ()
    allow_addresses: tuple[str, ...] = ()
    # SHA-256 of a TLS client certificate (DER), hex with or without colons (mutual TLS)
    certificate_fingerprints: tuple[CertificateFingerprint, ...] = ()

    @field_validator("allow_addresses")
    @classmethod
    def _networks(cls, values: tuple[str, ...]) -> tuple[str, ...]:
        for value in values:
            ipaddress.ip_network(value, strict=False)
        return values


FILE_TRANSPORT = "file"
FileEncoding = Literal["utf-8", "cp932"]
EndSuffix = Annotated[str, Field(pattern=r"^\.[A-Za-z0-9_]{1,16}$")]


class FileFlags(Strict):
    """The header record's 全件/差分 (full/differential) flag values."""

    full: str = Field(default="1", min_length=1, max_length=8)
    differential: str = Field(default="2", min_length=1, max_length=8)


class FileRecords(Strict):
    """A file's 見出しレコード (header: tag, then the 全件/差分 flag) and 後書きレコード
    (trailer: tag, then the record count). ``None``: the file has no such record."""

    header: str | None = Field(default="H", min_length=1, max_length=8)
    trailer: str | None = Field(default="T", min_length=1, max_length=8)
    flags: FileFlags = FileFlags()


class InboundFolder(Strict):
    """A hot folder the hub watches: every complete file in it holds records of one service
    for one tenant, in the system's format (its mapping's inbound section)."""

    path: str = Field(min_length=1)
    service: ServiceName
    tenant: TenantCode
    trigger: Literal["end_file", "stable"] = "end_file"
    end_suffix: EndSuffix = ".end"
    stable_for: timedelta = timedelta(seconds=5)
    poll_interval: timedelta = timedelta(seconds=2)
    encoding: FileEncoding = "utf-8"  # of the header and trailer records
    records: FileRecords = FileRecords()
    subject: str | None = Field(default=None, pattern=r"^[a-z][A-Za-z0-9]*$")  # ordering key


class OutboundFolder(Strict):
    """Where the hub writes this system's deliveries: one file per service, tenant and
    ``interval``, written atomically (temporary name, rename, then the end file)."""

    path: str = Field(min_length=1)
    interval: timedelta = timedelta(minutes=5)
    end_suffix: EndSuffix = ".end"
    encoding: FileEncoding = "utf-8"
    records: FileRecords = FileRecords()


class FileLinkage(Strict):
    """ファイル連携: the system's hot folders."""

    inbound: tuple[InboundFolder, ...] = ()
    outbound: OutboundFolder | None = None


class FieldLimits(Strict):
    """項目制限: the catalogue items a system is entitled to receive (DESIGN §7).

    ``my_number``: the system runs a 番号法 利用事務 and may receive 個人番号 (default: not
    entitled, so it is removed). ``allow`` (only these items) or ``deny`` (all but these),
    by catalogue id; at most one of them."""

    my_number: bool = False
    allow: tuple[str, ...] | None = None
    deny: tuple[str, ...] = ()

    @model_validator(mode="after")
    def _one_list(self) -> FieldLimits:
        if self.allow is not None and self.deny:
            raise ValueError("fields: give either allow or deny, not both")
        return self


class RateLimit(Strict):
    """Requests a system may send per fixed window (counted in the database for all
    workers); ``None``: no limit in that window."""

    per_second: int | None = Field(default=None, ge=1, le=100_000)
    per_minute: int | None = Field(default=None, ge=1, le=6_000_000)


class System(Strict):
    """A connected system (住民記録, 税, 国保, 収納, 滞納管理, 法務局…).

    ``delivery: feed`` makes it a PULL feed consumer: routes still entitle it, but no push
    deliveries are created for it. An outbound folder implies the ``file`` transport."""

    id: SystemId
    name: str
    kind: Literal["core", "delinquency", "external", "other"] = "core"
    tenants: tuple[TenantCode, ...] | Literal["*"] = ALL
    endpoint: Endpoint | None = None
    mapping: str | None = None
    retry: RetryPolicy = RetryPolicy()
    credentials: Credentials = Credentials()
    delivery: Literal["push", "feed"] = "push"
    file_linkage: FileLinkage | None = None
    rate_limit: RateLimit | None = None
    fields: FieldLimits = FieldLimits()  # 項目制限 (bus.protection.limits)
    # 同時送信数の上限: at most this many deliveries to the system leased (being sent or about
    # to be) at once, across every worker and dispatch process (bus/dispatch/claims.py)
    max_in_flight: int | None = None

    @field_validator("max_in_flight")
    @classmethod
    def _max_in_flight(cls, value: int | None) -> int | None:
        if value is not None and value < 1:
            from bus.errors import make_finding  # bus.errors imports the pipeline, not this

            finding = make_finding("RK-OPS029", path="max_in_flight", actual=value)
            raise ValueError(f"{finding.code} {finding.message_ja} / {finding.message_en}")
        return value

    @model_validator(mode="before")
    @classmethod
    def _file_endpoint(cls, data: Any) -> Any:
        """An outbound folder is the system's endpoint (transport ``file``, url the folder)."""
        if not isinstance(data, dict):
            return data
        linkage = data.get("file_linkage")
        outbound = linkage.get("outbound") if isinstance(linkage, dict) else None
        if not isinstance(outbound, dict) or not isinstance(outbound.get("path"), str):
            return data
        endpoint = data.get("endpoint")
        if endpoint is None:
            return {**data, "endpoint": {"transport": FILE_TRANSPORT, "url": outbound["path"]}}
        if isinstance(endpoint, dict) and endpoint.get("transport") != FILE_TRANSPORT:
            raise ValueError("file_linkage.outbound needs no endpoint (or transport: file)")
        if isinstance(endpoint, dict) and endpoint.get("url") is None:
            return {**data, "endpoint": {**endpoint, "url": outbound["path"]}}
        return data


class Condition(Strict):
    """A predicate on one catalogue field of the service element (never an XML prefix)."""

    field: str = Field(pattern=r"^[a-z][A-Za-z0-9]*$")
    equals: str | None = None
    in_: tuple[str, ...] | None = Field(default=None, alias="in")
    exists: bool | None = None


class Subscriber(Strict):
    system: SystemId
    when: tuple[Condition, ...] = ()  # all must hold


class Route(Strict):
    """Who gets a service: subscribers for a notification, one provider for an inquiry."""

    service: ServiceName
    tenants: tuple[TenantCode, ...] | Literal["*"] = ALL
    subscribers: tuple[Subscriber, ...] = ()
    provider: SystemId | None = None


class Direction(StrEnum):
    SEND = "send"  # may send this notification
    INQUIRE = "inquire"  # may send this inquiry
    RECEIVE = "receive"  # may receive it (as subscriber or provider)


class AccessRule(Strict):
    """Default deny: a system may do only what a rule grants, for the tenants it names."""

    system: SystemId
    tenants: tuple[TenantCode, ...] | Literal["*"] = ALL
    send: tuple[ServiceName, ...] = ()
    inquire: tuple[ServiceName, ...] = ()
    receive: tuple[ServiceName, ...] = ()


class Retention(Strict):
    service: ServiceName | Literal["*"] = ALL
    keep: timedelta = timedelta(days=365)


class HubConfig(Strict):
    tenants: tuple[Tenant, ...]
    systems: tuple[System, ...]
    routes: tuple[Route, ...] = ()
    access: tuple[AccessRule, ...] = ()
    retention: tuple[Retention, ...] = ()
