"""What a receiving system writes in its status line's reason phrase is not recorded: a
refusal is kept as its status code and the code's standard phrase, in the Message Store's
attempts, ``last_error`` and the dead letter's audit record alike."""

from __future__ import annotations

from collections.abc import Callable

import pytest
from sqlalchemy import select

from bus.config.models import RetryPolicy
from bus.dispatch.worker import Worker
from bus.store.db import Store
from bus.store.models import AuditRecord, Delivery, DeliveryAttempt
from tests.support.raw_server import Answer, RawServer
from tests.test_dispatch import add_message, hub_config, store  # noqa: F401
from tests.test_qa_outbound2_bounds import whole


@pytest.mark.parametrize(
    ("status_line", "recorded"),
    [
        ("404 Resident YAMADA TARO 123456789018 unknown", "HTTP 404 Not Found"),
        ("422 Kojin bango 123456789018 mismatch", "HTTP 422 Unprocessable Entity"),
        ("599 Suzuki Hanako", "HTTP 599"),  # no standard phrase: the code alone
    ],
)
def test_a_reason_phrase_the_system_chose_is_never_recorded(
    store: Store,  # noqa: F811
    serve: Callable[[Answer], RawServer],
    status_line: str,
    recorded: str,
    caplog: pytest.LogCaptureFixture,
) -> None:
    """The phrase was kept when plain ASCII (up to 40 characters): a romanised name or a
    個人番号's 12 digits went into ``last_error``, the attempt history, the ``dead`` audit
    record, ``renkei dlq list`` and the console."""
    server = serve(lambda method, target: whole(b"", status_line))
    config = hub_config({"zeimu": server.base + "/zeimu"}, policy=RetryPolicy(max_attempts=1))
    _, [delivery] = add_message(store.sessions, "A", ("zeimu",))
    worker = Worker(store.sessions, lambda: config, None, "qa2:3", send_concurrency=1)
    try:
        assert worker.run_once() == 1
    finally:
        worker.close()
    with store.sessions() as session:
        row = session.get_one(Delivery, delivery)
        attempts = session.scalars(
            select(DeliveryAttempt.error).where(DeliveryAttempt.delivery_id == delivery)
        ).all()
        audit = session.scalars(select(AuditRecord.detail).where(AuditRecord.event == "dead")).one()
    assert (row.state, row.last_error, attempts) == ("dead", recorded, [recorded])
    assert audit["error"] == recorded
    logged = caplog.text
    assert recorded in logged and status_line.partition(" ")[2] not in logged
