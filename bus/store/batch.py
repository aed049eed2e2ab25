"""Batch ingest: many messages through the one pipeline, stored in one transaction.

A file import hands the hub thousands of messages at once; committing each alone (or in the
small groups concurrent callers happen to form) makes the commit the bound. Here every
message still runs every per-message stage (Authenticate, Translate in, Validate,
Authorize, Route) exactly as :meth:`Pipeline.run` would, then the accepted ones are stored
together by the Store stage's group writer — their rows, deliveries and ``stored`` audit
records — with the ``rejected`` audit records of the batch in the same transaction. The
stages after Store (Reply, Audit) then run per message as usual, except that a message
rejected before Store was already audited in the batch's transaction.

A caller that gathers unrelated senders' messages into one batch (the HTTP adapters' batch
lane, :mod:`bus.batch_lane`) passes ``on_error``: a message whose stage raises is then handed
to it and left out, instead of the exception failing the whole batch. A caller whose batches
are worked in several processes but must be stored in order (a parallel file import) passes
``store_turn``: held around the Store stage's transaction alone. A caller that can correct a
refused message (a file import blanking a field the hub refused) passes ``amend``: the
corrected message then takes the refused one's place, through every stage again, before
anything is stored.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from contextlib import AbstractContextManager, nullcontext

from sqlalchemy.orm import Session

from bus.pipeline import Message, Pipeline, Stage, StageName
from bus.store.audit import AuditStage, append_audits, rejection_entry
from bus.store.ingest import StoreStage


def ingest_batch(
    pipeline: Pipeline,
    messages: Sequence[Message],
    on_error: Callable[[Message, Exception], None] | None = None,
    store_turn: AbstractContextManager[object] | None = None,
    amend: Callable[[int, Message], Message | None] | None = None,
) -> list[Message]:
    """Run ``messages`` through ``pipeline``, the accepted ones stored in one transaction
    (retried one by one if it fails); each message ends as :meth:`Pipeline.run` leaves it
    (``ack`` once committed, or findings). With ``on_error``, a message whose stage before
    Store raises is given to it with the exception and is not in the result; the others keep
    their order."""
    stages = pipeline.stages
    names = [stage.name for stage in stages]
    at_store = names.index(StageName.STORE)
    store, audit = stages[at_store], stages[names.index(StageName.AUDIT)]
    assert isinstance(store, StoreStage) and isinstance(audit, AuditStage)
    ran: list[Message] = []
    for index, given in enumerate(messages):
        try:
            message = _before_store(stages[:at_store], given)
            while message.rejected and amend is not None:
                corrected = amend(index, message)
                if corrected is None:
                    break
                message = _before_store(stages[:at_store], corrected)
        except Exception as error:
            if on_error is None:
                raise
            on_error(given, error)
            continue
        ran.append(message)
    accepted = [message for message in ran if not message.rejected]
    refused = [message for message in ran if message.rejected]

    def audit_refused(session: Session) -> None:
        append_audits(session, [rejection_entry(message) for message in refused])

    with store_turn or nullcontext():
        audited = store.store_many(accepted, audit_refused if refused else None)
    for message in accepted:
        message.trace.append(StageName.STORE)
        for stage in stages[at_store + 1 :]:
            if stage.name is StageName.AUDIT or not message.rejected:
                message = stage(message)
                message.trace.append(stage.name)
    for message in refused:
        if not audited:  # the store was full: audited as a single refusal is (write-behind)
            audit(message)
        message.trace.append(StageName.AUDIT)
    return ran


def _before_store(stages: Sequence[Stage], message: Message) -> Message:
    for stage in stages:
        if not message.rejected:
            message = stage(message)
            message.trace.append(stage.name)
    return message
