"""The Validate stage (DESIGN §1 stage 4): the pipeline's use of the validator."""

from __future__ import annotations

from dataclasses import dataclass

from bus.pipeline import Message, StageName
from bus.validation.validator import Validator


@dataclass(frozen=True, slots=True)
class ValidateStage:
    validator: Validator
    name: StageName = StageName.VALIDATE

    def __call__(self, message: Message) -> Message:
        report = self.validator.validate(message.raw)
        message.add_findings(report.findings)
        message.document = report.document
        message.envelope = report.envelope
        message.service = report.service
        return message
