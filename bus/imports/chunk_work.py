"""One chunk of a 登記済通知 file through the hub: parse, ingest, list rows.

The same work runs in the importing process (one job) or in each worker process of a
parallel import (:mod:`bus.imports.parallel`). What it returns is plain data: the importing
process counts it and commits it to the batch's work file in file order.
"""

from __future__ import annotations

from contextlib import AbstractContextManager
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import NamedTuple

from bus.errors import make_finding
from bus.hub import Hub
from bus.imports.envelope import SERVICE, wrap
from bus.imports.lines import RawLine
from bus.imports.listing import rows_for
from bus.imports.matching import OwnerMatcher
from bus.imports.records import MAX_BLANKED, Notice, NoticeParser, RecordError
from bus.imports.worklist import ErrorRow, RowValues
from bus.pipeline import Finding, Severity

ADAPTER = "batch"
SOURCE_ADDRESS = "127.0.0.1"  # a local import acts as the 法務局 system on the loopback


class Stored(NamedTuple):
    """The hub's acknowledgement of one record: new, or a duplicate of what it stored then
    (a named tuple: a thousand a chunk are pickled across a parallel import's pipe)."""

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
    rows: list[RowValues]  # as the work file stores them (plain data for the pipe)
    errors: list[ErrorRow]
    stored: list[Stored]  # one per accepted record, in file order


STORE_FULL = "RK-STO007"


class StoreUnwritable(Exception):
    """The hub's store is full (its Store stage refused the chunk's records RK-STO007):
    not a record error. The import stops with RK-IMP015 before the work file's cursor passes
    the chunk, so running it again once there is room resumes (as after a kill)."""

    def __init__(self, reason: str) -> None:  # one argument: it crosses a process pipe
        self.finding = make_finding("RK-IMP015", path="/import", actual=reason)
        super().__init__(reason)


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
        lines: list[RawLine] = []
        errors: list[ErrorRow] = []
        for raw in chunk:
            parsed = self.parser.parse(raw)
            if isinstance(parsed, RecordError):
                errors.append(error_row(parsed))
            elif parsed is not None:
                notices.append(parsed)
                lines.append(raw)
        issued = datetime.now(UTC).astimezone()
        blanked: dict[int, set[str]] = {}

        def amend(index: int, findings: list[Finding]) -> bytes | None:
            """The record again with the columns the hub refused blanked (要確認): only the
            three kinds of record error stop a record (docs/batch-import.md)."""
            columns = self.parser.refused_columns(findings)
            done = blanked.get(index, set())
            if columns is None or columns <= done or len(columns | done) > MAX_BLANKED:
                return None
            blanked[index] = columns | done
            again = self.parser.parse(lines[index], sorted(blanked[index]))
            if not isinstance(again, Notice):
                return None
            notices[index] = again
            return wrap(again.service_xml, self.tenant, again.key, issued)

        messages = self.hub.ingest_many(
            [wrap(n.service_xml, self.tenant, n.key, issued) for n in notices],
            adapter=ADAPTER,
            source_address=SOURCE_ADDRESS,
            service=SERVICE,
            store_turn=store_turn,
            amend=amend,
        )
        if any(f.code == STORE_FULL for m in messages if m.ack is None for f in m.findings):
            raise StoreUnwritable(STORE_FULL)
        rows: list[RowValues] = []
        stored: list[Stored] = []
        for notice, raw, message in zip(notices, lines, messages, strict=True):
            ack = message.ack
            if ack is None:
                errors.append(error_row(refusal(raw, message.findings)))
                continue
            stored.append(Stored(notice.key.text(), ack.duplicate, ack.stored_at))
            rows.extend(row.stored() for row in rows_for(notice, self.matcher, notice.review))
        return ChunkResult(rows, errors, stored)


def refusal(raw: RawLine, findings: list[Finding]) -> RecordError:
    """Why the hub refused a record it could not take even with columns blanked: a notice of
    the same key with other content already stored (RK-IMP011), or the hub's first error."""
    path, line = f"/line[{raw.number}]", raw.number
    errors = [f for f in findings if f.severity is Severity.ERROR]
    if errors and errors[0].code == "RK-STO001":
        return RecordError(line, raw.offset, "", make_finding("RK-IMP011", path=path, line=line))
    first = errors[0] if errors else None
    finding = make_finding(
        "RK-IMP004",
        path=path,
        line=line,
        actual=",".join(f.code for f in errors),
        reason_ja=first.message_ja if first else "",
        reason_en=first.message_en if first else "",
    )
    return RecordError(line, raw.offset, first.name_ja or "" if first else "", finding)


def error_row(error: RecordError) -> ErrorRow:
    finding = error.finding
    return ErrorRow(
        error.line, error.offset, error.field, finding.code, finding.message_ja, finding.message_en
    )
