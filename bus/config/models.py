"""The hub's configuration (DESIGN §6): tenants, connected systems, routes and access lists.

One YAML directory, validated as a whole: every model forbids unknown fields, and cross
references (a route naming an unknown system, an access rule naming an unknown service…) are
checked by :mod:`bus.config.loader`, which reports file and line.
"""

from __future__ import annotations

import ipaddress
from datetime import timedelta
from enum import StrEnum
from typing import Annotated, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator

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

    @field_validator("code")
    @classmethod
    def _check_digit(cls, code: str) -> str:
        if not lg_code_valid(code):
            raise ValueError(f"{code}: wrong check digit for a 全国地方公共団体コード")
        return code


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


class Credentials(Strict):
    """How a calling system is recognised: API keys (hashes only) or source addresses."""

    api_key_hashes: tuple[str, ...] = ()
    allow_addresses: tuple[str, ...] = ()

    @field_validator("allow_addresses")
    @classmethod
    def _networks(cls, values: tuple[str, ...]) -> tuple[str, ...]:
        for value in values:
            ipaddress.ip_network(value, strict=False)
        return values


class System(Strict):
    """A connected system (住民記録, 税, 国保, 収納, 滞納管理, 法務局…)."""

    id: SystemId
    name: str
    kind: Literal["core", "delinquency", "external", "other"] = "core"
    tenants: tuple[TenantCode, ...] | Literal["*"] = ALL
    endpoint: Endpoint | None = None
    mapping: str | None = None
    retry: RetryPolicy = RetryPolicy()
    credentials: Credentials = Credentials()


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
