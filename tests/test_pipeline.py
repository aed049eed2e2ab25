"""The pipeline contract: stage order, pass-throughs, rejection handling."""

from __future__ import annotations

import pytest

from bus.errors import make_finding
from bus.pipeline import (
    STAGE_ORDER,
    FunctionStage,
    Message,
    PassThrough,
    Pipeline,
    PipelineOrderError,
    StageName,
    build_pipeline,
)


def _recording(name: StageName, seen: list[StageName]) -> FunctionStage:
    def record(message: Message) -> Message:
        seen.append(name)
        return message

    return FunctionStage(name, record)


def test_stage_order_is_designs() -> None:
    assert [s.value for s in STAGE_ORDER] == [
        "receive",
        "authenticate",
        "translate_in",
        "validate",
        "authorize",
        "route",
        "store",
        "dispatch",
        "reply",
        "audit",
    ]


def test_stages_run_in_order() -> None:
    seen: list[StageName] = []
    pipeline = build_pipeline(_recording(name, seen) for name in reversed(STAGE_ORDER))
    message = pipeline.run(Message(raw=b"<x/>", adapter="test"))
    assert seen == list(STAGE_ORDER)
    assert message.trace == list(STAGE_ORDER)


def test_default_stages_are_explicit_pass_throughs() -> None:
    pipeline = build_pipeline()
    assert all(isinstance(stage, PassThrough) for stage in pipeline.stages)
    message = Message(raw=b"<x/>", adapter="test")
    assert pipeline.run(message) is message
    assert message.findings == []


def test_out_of_order_stages_are_refused() -> None:
    stages = [PassThrough(name) for name in STAGE_ORDER]
    stages[1], stages[2] = stages[2], stages[1]
    with pytest.raises(PipelineOrderError):
        Pipeline(stages)
    with pytest.raises(PipelineOrderError):
        Pipeline(stages[:-1])


def test_rejection_skips_forward_stages_but_audit_runs() -> None:
    seen: list[StageName] = []

    def reject(message: Message) -> Message:
        message.add_findings([make_finding("RK-SEC006", path="/")])
        return message

    stages = [_recording(name, seen) for name in STAGE_ORDER if name is not StageName.VALIDATE]
    pipeline = build_pipeline([*stages, FunctionStage(StageName.VALIDATE, reject)])
    message = pipeline.run(Message(raw=b"<", adapter="test"))
    assert message.rejected
    assert seen == [
        StageName.RECEIVE,
        StageName.AUTHENTICATE,
        StageName.TRANSLATE_IN,
        StageName.AUDIT,
    ]
    assert message.trace == [*STAGE_ORDER[:4], StageName.AUDIT]
