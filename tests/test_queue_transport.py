"""The kombu queue transport: publishes to a configured exchange/queue, embedded
(``memory://``) and on RabbitMQ."""

from __future__ import annotations

import uuid
from typing import Any

import kombu
import pytest

from adapters.queue_out import QueueTarget, QueueTransport
from bus.config.models import Endpoint
from bus.dispatch.transport import OutboundMessage, Outcome, transport_for

from .support.receivers import free_port

_kombu: Any = kombu
BODY = "<PlatformMessage>住民異動通知</PlatformMessage>".encode()


def _message() -> OutboundMessage:
    return OutboundMessage(
        str(uuid.uuid4()), "c-1", "ResidentChangeNotice", "412066", "zeimu", BODY
    )


def _drain(broker_url: str, queue_name: str, exchange: str) -> list[Any]:
    got: list[Any] = []
    with _kombu.Connection(broker_url) as connection:
        queue = _kombu.Queue(
            queue_name,
            exchange=_kombu.Exchange(exchange, type="direct", durable=True),
            routing_key=queue_name,
            durable=True,
        )
        with connection.Consumer(queue, callbacks=[lambda body, m: (got.append(m), m.ack())]):
            try:
                while True:
                    connection.drain_events(timeout=1)
            except TimeoutError:
                pass
    return got


def test_registered_under_the_queue_entry_point() -> None:
    assert isinstance(transport_for(Endpoint(transport="queue", url="memory://")), QueueTransport)


def test_target_parameters_come_off_the_broker_url() -> None:
    target = QueueTarget.parse("amqp://u:p@h:5672//?exchange=x&queue=q&heartbeat=10", "zeimu")
    assert target == QueueTarget("amqp://u:p@h:5672//?heartbeat=10", "x", "q", "q")
    assert QueueTarget.parse("memory://", "kokuho").queue == "kokuho"


def _publish_and_consume(broker_url: str) -> None:
    queue_name = f"renkei-test-{uuid.uuid4().hex[:8]}"
    transport = QueueTransport()
    message = _message()
    try:
        url = f"{broker_url}?exchange=renkei.test&queue={queue_name}"
        result = transport.send(message, Endpoint(transport="queue", url=url, timeout_seconds=5))
        assert result.outcome is Outcome.DELIVERED, result.error
    finally:
        transport.close()
    [received] = _drain(broker_url, queue_name, "renkei.test")
    assert received.body == BODY
    assert received.properties["message_id"] == message.message_id
    assert received.properties["correlation_id"] == "c-1"
    assert received.headers["Renkei-Message-Id"] == message.message_id
    assert received.headers["Renkei-Service"] == "ResidentChangeNotice"
    assert received.delivery_info["routing_key"] == queue_name


def test_publishes_on_the_embedded_memory_transport() -> None:
    _publish_and_consume("memory://")


@pytest.mark.services
def test_publishes_on_rabbitmq(rabbitmq_url: str) -> None:
    _publish_and_consume(rabbitmq_url)


def test_an_unreachable_broker_is_a_retry() -> None:
    transport = QueueTransport()
    try:
        result = transport.send(
            _message(),
            Endpoint(
                transport="queue",
                url=f"amqp://guest:guest@127.0.0.1:{free_port()}//",
                timeout_seconds=1,
            ),
        )
    finally:
        transport.close()
    assert result.outcome is Outcome.RETRY
    assert result.error is not None and result.error.startswith("broker:")
