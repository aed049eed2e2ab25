"""The Validate stage (DESIGN §1 stage 4): the pipeline's use of the validator.

With a configuration, the 宛名番号 check follows the Header's client tenant (``atena_check``:
off drops RK-DOM004, error raises it to an error, warn leaves it a warning): older numbers of
some municipalities lack the check digit.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from typing import TYPE_CHECKING

from bus.config.models import AtenaSetting
from bus.errors import make_finding
from bus.pipeline import Finding, Message, Severity, StageName
from bus.validation.validator import Validator

if TYPE_CHECKING:
    from bus.config.snapshots import ConfigSource

ATENA_CODE = "RK-DOM004"


def apply_atena_setting(findings: list[Finding], setting: AtenaSetting) -> list[Finding]:
    """The findings as a tenant with this 宛名番号 setting sees them."""
    if setting is AtenaSetting.OFF:
        return [f for f in findings if f.code != ATENA_CODE]
    if setting is AtenaSetting.ERROR:
        return [
            replace(f, severity=Severity.ERROR) if f.code == ATENA_CODE else f for f in findings
        ]
    return findings


def _endpoint_findings(endpoint_service: str, service: str) -> list[Finding]:
    """An endpoint (``/soap/{Service}``, ``/api/v1/messages/{Service}``) takes only its own
    service: the operation is chosen by the service element, and it must be this one."""
    if service == endpoint_service:
        return []
    path = "/PlatformMessage"
    return [make_finding("RK-ENV004", path=path, actual=service, expected=endpoint_service)]


@dataclass(frozen=True, slots=True)
class ValidateStage:
    validator: Validator
    provider: ConfigSource | None = None
    name: StageName = StageName.VALIDATE

    def __call__(self, message: Message) -> Message:
        report = self.validator.validate(message.raw, parsed=message.parsed)
        findings = report.findings
        if self.provider is not None and report.envelope is not None:
            tenant = self.provider.current().index.tenant(report.envelope.client.tenant)
            if tenant is not None:
                findings = apply_atena_setting(findings, tenant.atena_check)
        message.add_findings(findings)
        if message.endpoint_service is not None and report.service is not None:
            message.add_findings(_endpoint_findings(message.endpoint_service, report.service))
        message.document = report.document
        message.envelope = report.envelope
        message.service = report.service
        return message
