"""One chunk of a 登記済通知 file through the hub: parse, ingest, list rows.

The same work runs in the importing process (one job) or in each worker process of a
parallel import (:mod:`bus.imports.parallel`). What it returns is plain data: the importing
process counts it and commits it to the batch's work file in file order.
"""

from __future__ import annotations

from contextlib import AbstractContextManager
from dataclasses import dataclass
from datetime import UTC, datetime

from bus.errors import make_finding
from bus.hub import Hub
from bus.imports.envelope import wrap
from bus.imports.lines import RawLine
from bus.imports.listing import rows_for
from bus.imports.matching import OwnerMatcher
from bus.imports.records import Notice, NoticeParser, RecordError
from bus.imports.worklist import ErrorRow, ListRow

ADAPTER = "batch"
SOURCE_ADDRESS = "127.0.0.1"  # a local import acts as the 法務局 system on the loopback


@dataclass(frozen=True, slots=True)
class Stored:
    """The hub's acknowledgement of one record: new, or a duplicate of what it stored then."""

    key: str
    duplicate: bool
    stored_at: datetime


@dataclass(frozen=True, slots=True)
class Span:
    """Where a chunk lies in the file: what the resume cursor and the progress need."""

    first_offset: int
    end: int
    next_line: int

    @classmethod
    def of(cls, chunk: list[RawLine]) -> Span:
        return cls(chunk[0].offset, chunk[-1].end, chunk[-1].number + 1)


@dataclass(slots=True)
class ChunkResult:
    rows: list[ListRow]
    errors: list[ErrorRow]
    stored: list[Stored]  # one per accepted record, in file order


class ChunkWork:
    def __init__(self, hub: Hub, parser: NoticeParser, matcher: OwnerMatcher, tenant: str) -> None:
        self.hub, self.parser, self.matcher, self.tenant = hub, parser, matcher, tenant

    def process(
        self,
        chunk: list[RawLine],
        at_head: bool,
        store_turn: AbstractContextManager[object] | None = None,
    ) -> ChunkResult:
        """``at_head``: the chunk starts the file, so its first line may be the header row.
        ``store_turn``: held around the chunk's store transaction (file order across
        processes)."""
        self.parser.header_seen = not at_head
        notices: list[Notice] = []
        errors: list[ErrorRow] = []
        for raw in chunk:
            parsed = self.parser.parse(raw)
            if isinstance(parsed, RecordError):
                errors.append(error_row(parsed))
            elif parsed is not None:
                notices.append(parsed)
        issued = datetime.now(UTC).astimezone()
        messages = self.hub.ingest_many(
            [wrap(n.service_xml, self.tenant, n.key, issued) for n in notices],
            adapter=ADAPTER,
            source_address=SOURCE_ADDRESS,
            service="RegistrationNotice",
            store_turn=store_turn,
        )
        rows: list[ListRow] = []
        stored: list[Stored] = []
        for notice, message in zip(notices, messages, strict=True):
            ack = message.ack
            if ack is None:
                codes = ",".join(f.code for f in message.findings)
                path = f"/line[{notice.line}]"
                finding = make_finding("RK-IMP004", path=path, line=notice.line, actual=codes)
                errors.append(error_row(RecordError(notice.line, 0, "", finding)))
                continue
            stored.append(Stored(notice.key.text(), ack.duplicate, ack.stored_at))
            rows.extend(rows_for(notice, self.matcher, notice.review))
        return ChunkResult(rows, errors, stored)


def error_row(error: RecordError) -> ErrorRow:
    finding = error.finding
    return ErrorRow(
        error.line, error.offset, error.field, finding.code, finding.message_ja, finding.message_en
    )
