"""Request-reply (stage 9) against the recording receiver playing the provider: a valid
correlated reply, a timeout, a refusal, invalid and uncorrelated replies, a provider asking
for time (Retry-After)."""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from bus.config.index import ConfigIndex
from bus.config.models import Endpoint, HubConfig, Route, System, Tenant
from bus.dispatch.reply import MAX_HOLD_SECONDS, ReplyStage
from bus.identity import retry_after
from bus.pipeline import Message
from bus.routing import RouteStage
from bus.validation.stage import ValidateStage
from bus.validation.validator import Validator
from tests.support.receivers import Receiver

SAMPLES = Path(__file__).resolve().parent.parent / "samples" / "messages"
VALIDATOR = Validator()
SERVICES = {
    "AddresseeInquiry": "juki",
    "TaxAssessmentInquiry": "zeimu",
    "DelinquencyInquiry": "tainou",
}


@pytest.fixture
def receivers(tmp_path: Path) -> Iterator[Callable[[str], Receiver]]:
    """Recording receivers (subprocesses) playing the providers; stopped afterwards."""
    made: list[Receiver] = []

    def make(name: str) -> Receiver:
        made.append(Receiver(tmp_path, name))
        return made[-1]

    yield make
    for receiver in made:
        receiver.stop()


def _inquiry(service: str) -> Message:
    data = (SAMPLES / service / "valid-full.xml").read_bytes()
    message = ValidateStage(VALIDATOR)(Message(raw=data, adapter="test"))
    assert not message.rejected
    return message


def _stages(
    receiver: Receiver, service: str, timeout: float = 5.0
) -> tuple[RouteStage, ReplyStage, list[Message]]:
    tenant = _inquiry(service).envelope.client.tenant  # type: ignore[union-attr]
    provider = SERVICES[service]
    config = HubConfig(
        tenants=(Tenant(code=tenant, name="town"),),
        systems=(
            System(
                id=provider,
                name=provider,
                endpoint=Endpoint(transport="http", url=receiver.url, timeout_seconds=timeout),
            ),
        ),
        routes=(Route(service=service, provider=provider),),
    )
    index = ConfigIndex(config)

    def provider_for(service: str, tenant: str) -> System | None:
        route = index.route(service, tenant)
        return index.system(route.provider) if route and route.provider else None

    stored: list[Message] = []
    return (
        RouteStage(index.route, lambda tenant, mid: None),
        ReplyStage(provider_for, VALIDATOR.validate, stored.append),
        stored,
    )


def _run(route: RouteStage, reply: ReplyStage, service: str) -> Message:
    return reply(route(_inquiry(service)))


@pytest.mark.parametrize("service", sorted(SERVICES))
def test_valid_reply_is_correlated_and_stored(
    receivers: Callable[[str], Receiver], service: str
) -> None:
    receiver = receivers(SERVICES[service]).start()
    route, reply, stored = _stages(receiver, service)
    message = _run(route, reply, service)
    assert not message.rejected, [f.code for f in message.findings]
    assert message.reply is not None and stored == [message.reply]
    answer = message.reply
    assert answer.kind == "reply" and answer.service == f"{service}Reply"
    assert answer.envelope is not None and message.envelope is not None
    assert answer.envelope.correlation_id == message.envelope.message_id
    assert answer.envelope.message_id != message.envelope.message_id
    (record,) = receiver.records()
    assert record["messageId"] == message.envelope.message_id


def test_timeout_is_rpl001_and_never_retried(receivers: Callable[[str], Receiver]) -> None:
    receiver = receivers("juki").start("--delay", "2")
    route, reply, stored = _stages(receiver, "AddresseeInquiry", timeout=0.3)
    message = _run(route, reply, "AddresseeInquiry")
    assert message.rejected and message.reply is None and stored == []
    (finding,) = [f for f in message.findings if f.code.startswith("RK-RPL")]
    assert finding.code == "RK-RPL001" and "juki" in finding.message_en
    assert finding.detail is not None and finding.detail.startswith("timeout")


def test_refusal_is_rpl003(receivers: Callable[[str], Receiver]) -> None:
    message_id = _inquiry("AddresseeInquiry").envelope.message_id  # type: ignore[union-attr]
    receiver = receivers("juki").start("--fail-message-ids", message_id)
    route, reply, _ = _stages(receiver, "AddresseeInquiry")
    message = _run(route, reply, "AddresseeInquiry")
    assert [f.code for f in message.findings if f.code.startswith("RK-RPL")] == ["RK-RPL003"]


def test_provider_down_is_rpl001(receivers: Callable[[str], Receiver]) -> None:
    receiver = receivers("juki")  # never started: nothing listens
    route, reply, _ = _stages(receiver, "AddresseeInquiry")
    message = _run(route, reply, "AddresseeInquiry")
    assert [f.code for f in message.findings if f.code.startswith("RK-RPL")] == ["RK-RPL001"]


@pytest.mark.parametrize("mode", ["invalid", "wrong-correlation", "wrong-tenant", "empty"])
def test_bad_reply_is_rpl002(receivers: Callable[[str], Receiver], mode: str) -> None:
    receiver = receivers("juki").start("--reply-mode", mode)
    route, reply, stored = _stages(receiver, "AddresseeInquiry")
    message = _run(route, reply, "AddresseeInquiry")
    assert [f.code for f in message.findings if f.code.startswith("RK-RPL")] == ["RK-RPL002"]
    assert message.reply is None and stored == []


def test_notifications_pass_by(receivers: Callable[[str], Receiver]) -> None:
    receiver = receivers("juki").start()
    _, reply, stored = _stages(receiver, "AddresseeInquiry")
    data = (SAMPLES / "ResidentChangeNotice" / "valid-full.xml").read_bytes()
    message = ValidateStage(VALIDATOR)(Message(raw=data, adapter="test"))
    message.kind = "notification"
    assert reply(message).reply is None and receiver.records() == [] and stored == []


@pytest.mark.parametrize("status", [429, 503])
def test_a_provider_asking_for_time_is_answered_rpl004_and_not_called_until_then(
    receivers: Callable[[str], Receiver], status: int
) -> None:
    busy = receivers("juki").start("--fail-status", str(status), "--retry-after", "2")
    route, reply, stored = _stages(busy, "AddresseeInquiry")
    first = _run(route, reply, "AddresseeInquiry")
    (finding,) = [f for f in first.findings if f.code.startswith("RK-RPL")]
    assert finding.code == "RK-RPL004" and retry_after([finding]) == 2
    assert "2 秒後" in finding.message_ja and "in 2 s" in finding.message_en
    # the provider is back at once, on the same address, recording what it is sent: the
    # hold it asked for keeps inquiries from it until its Retry-After has passed
    busy.stop()
    back = Receiver(busy.log.parent, "juki", port=busy.port).start()
    held = _run(route, reply, "AddresseeInquiry")
    assert [f.code for f in held.findings if f.code.startswith("RK-RPL")] == ["RK-RPL004"]
    assert back.records() == [] and stored == []
    time.sleep(2.1)
    answered = _run(route, reply, "AddresseeInquiry")
    assert not answered.rejected and answered.reply is not None
    back.stop()


def test_a_mistaken_huge_retry_after_holds_no_longer_than_the_cap(
    receivers: Callable[[str], Receiver],
) -> None:
    busy = receivers("juki").start("--fail-status", "429", "--retry-after", "86400")
    route, reply, _ = _stages(busy, "AddresseeInquiry")
    (finding,) = [
        f for f in _run(route, reply, "AddresseeInquiry").findings if f.code == "RK-RPL004"
    ]
    assert retry_after([finding]) == int(MAX_HOLD_SECONDS)
