"""The import of one 登記済通知 file (`renkei import notices`), start to finish.

Lines are read from the batch's cursor, parsed through the mapping, and every ``CHUNK``
lines' good records go through ``Hub.ingest_many`` (adapter ``batch``) as 登記済通知 messages:
each runs every pipeline stage and the chunk is stored in one transaction, in file order; the
hub routes them to 固定資産税. Then the chunk's list rows, errors, counts and cursor are
committed to the batch's work file. The import returns once its records are stored, without
waiting for deliveries.
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path

from bus.errors import make_finding
from bus.hub import Hub
from bus.imports.encoding import detect_encoding
from bus.imports.envelope import wrap
from bus.imports.lines import RawLine, split_lines
from bus.imports.listing import rows_for
from bus.imports.matching import OwnerMatcher
from bus.imports.outputs import ERROR_COLUMNS, error_cells, write_csv, write_list
from bus.imports.records import Notice, NoticeParser, RecordError
from bus.imports.residents import ResidentIndex
from bus.imports.worklist import DONE, ErrorRow, ListRow, Worklist
from bus.mapping import MappingError, Section, load_mapping, resolve
from bus.observability.metrics import observe_import_chunk
from bus.pipeline import Finding, Message

CHUNK = 1000
DEFAULT_LAYOUT = "houmu.yaml"
ADAPTER = "batch"
SOURCE_ADDRESS = "127.0.0.1"  # a local import acts as the 法務局 system on the loopback


class ImportRefused(Exception):
    """The import cannot start (unknown tenant, unusable layout); carries the finding."""

    def __init__(self, finding: Finding) -> None:
        super().__init__(finding.message_en)
        self.finding = finding


@dataclass(slots=True)
class Summary:
    new: int
    duplicate: int
    errors: int
    encoding: str
    outputs: list[Path] = field(default_factory=list)


Progress = Callable[[int, int, int], None]  # (records so far, errors so far, bytes read)


@dataclass(frozen=True, slots=True)
class ImportOptions:
    path: Path
    tenant: str
    layout: str | None = None
    out_dir: Path | None = None
    out_encoding: str = "utf-8"
    sheet_rows: int = 1_048_576


def refuse(reason: str) -> ImportRefused:
    return ImportRefused(make_finding("RK-IMP005", path="/import", actual=reason))


def load_section(layout: str | None) -> Section:
    """The layout's RegistrationNotice section: a file path (``mappings/houmu_fixed.yaml``)
    or a name under the mappings folder (``houmu.yaml``, the default)."""
    given = Path(layout) if layout else None
    path = given if given is not None and given.is_file() else resolve(layout or DEFAULT_LAYOUT)
    try:
        mapping = load_mapping(path)
    except MappingError as error:
        raise refuse(error.problems[0]) from None
    section = mapping.section("RegistrationNotice", "inbound")
    if section is None:
        raise refuse(f"{layout or DEFAULT_LAYOUT} has no RegistrationNotice inbound section")
    return section


def file_hash(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as handle:
        while block := handle.read(1 << 20):
            digest.update(block)
    return digest.hexdigest()


def chunks(lines: Iterator[RawLine], size: int) -> Iterator[list[RawLine]]:
    chunk: list[RawLine] = []
    for line in lines:
        chunk.append(line)
        if len(chunk) >= size:
            yield chunk
            chunk = []
    if chunk:
        yield chunk


class NoticeImport:
    """One run over one file; see :func:`run_import`."""

    def __init__(self, hub: Hub, options: ImportOptions, index: ResidentIndex | None) -> None:
        tenant = hub.config.current().index.tenant(options.tenant)
        if tenant is None:
            raise refuse(f"団体コード {options.tenant} は設定にありません")
        self.hub, self.options = hub, options
        self.section = load_section(options.layout)
        fixed = getattr(self.section.format, "columns", None) is None
        with options.path.open("rb") as stream:
            detected = detect_encoding(stream)
        self.encoding = (
            str(getattr(self.section.format, "encoding", "cp932")) if fixed else (detected.encoding)
        )
        digest = file_hash(options.path)
        work = hub.settings.data_dir / "imports" / f"{digest[:32]}-{options.tenant}.sqlite"
        self.worklist = Worklist(work, digest, options.tenant, self.encoding)
        if self.worklist.state.status == DONE:
            self.worklist.restart()
        self.parser = NoticeParser(self.section, self.encoding, options.tenant, tenant.name)
        self.parser.header_seen = self.worklist.state.cursor_offset > 0
        self.matcher = OwnerMatcher(index, options.tenant, tenant.name)
        # Records stored by a run killed before its chunk's commit come back as duplicates:
        # those stored after the last commit are this batch's own (counted 新規 once).
        self.own_since = self.worklist.state.last_commit_at if self.worklist.resumed else None

    def run(self, progress: Progress | None = None) -> Summary:
        state = self.worklist.state
        with self.options.path.open("rb") as stream:
            lines = split_lines(stream, start=state.cursor_offset, first_number=state.cursor_line)
            for chunk in chunks(lines, CHUNK):
                before = (state.new, state.duplicate, state.errors)
                rows, errors = self._chunk(chunk)
                last = chunk[-1]
                self.worklist.commit(rows, errors, last.end, last.number + 1)
                observe_import_chunk(
                    self.options.tenant,
                    new=state.new - before[0],
                    duplicate=state.duplicate - before[1],
                    errors=state.errors - before[2],
                    nbytes=last.end - chunk[0].offset,
                )
                self.own_since = None
                if progress:
                    progress(state.new + state.duplicate + state.errors, state.errors, last.end)
        self.worklist.finish()
        outputs = self._write_outputs() if self.options.out_dir else []
        return Summary(state.new, state.duplicate, state.errors, self.encoding, outputs)

    def _chunk(self, chunk: list[RawLine]) -> tuple[list[ListRow], list[ErrorRow]]:
        notices: list[Notice] = []
        errors: list[ErrorRow] = []
        for raw in chunk:
            parsed = self.parser.parse(raw)
            if isinstance(parsed, RecordError):
                errors.append(_error_row(parsed))
            elif parsed is not None:
                notices.append(parsed)
        issued = datetime.now(UTC).astimezone()
        tenant = self.options.tenant
        messages = self.hub.ingest_many(
            [wrap(n.service_xml, tenant, n.key, issued) for n in notices],
            adapter=ADAPTER,
            source_address=SOURCE_ADDRESS,
            service="RegistrationNotice",
        )
        rows: list[ListRow] = []
        seen: set[str] = set()
        state = self.worklist.state
        for notice, message in zip(notices, messages, strict=True):
            if message.ack is None:
                codes = ",".join(f.code for f in message.findings)
                parse_error = RecordError(
                    notice.line,
                    0,
                    "",
                    make_finding(
                        "RK-IMP004", path=f"/line[{notice.line}]", line=notice.line, actual=codes
                    ),
                )
                errors.append(_error_row(parse_error))
                continue
            if self._is_new(message, notice, seen):
                state.new += 1
            else:
                state.duplicate += 1
            rows.extend(rows_for(notice, self.matcher, notice.review))
        state.errors += len(errors)
        return rows, errors

    def _is_new(self, message: Message, notice: Notice, seen: set[str]) -> bool:
        ack = message.ack
        assert ack is not None
        key = notice.key.text()
        first = key not in seen
        seen.add(key)
        if not ack.duplicate:
            return True
        own = self.own_since is not None and ack.stored_at >= self.own_since
        return own and first

    def _write_outputs(self) -> list[Path]:
        out = self.options.out_dir
        assert out is not None
        out.mkdir(parents=True, exist_ok=True)
        stem = self.options.path.stem
        xlsx = out / f"{stem}_評価変更リスト.xlsx"
        listing = out / f"{stem}_評価変更リスト.csv"
        report = out / f"{stem}_エラー.csv"
        encoding = self.options.out_encoding
        write_list(xlsx, listing, self.worklist.sorted_rows(), encoding, self.options.sheet_rows)
        errors = (error_cells(e) for e in self.worklist.error_rows())
        write_csv(report, ERROR_COLUMNS, errors, encoding)
        return [xlsx, listing, report]

    def close(self) -> None:
        self.worklist.close()


def _error_row(error: RecordError) -> ErrorRow:
    finding = error.finding
    return ErrorRow(
        error.line, error.offset, error.field, finding.code, finding.message_ja, finding.message_en
    )


def run_import(
    hub: Hub,
    options: ImportOptions,
    index: ResidentIndex | None = None,
    progress: Progress | None = None,
) -> Summary:
    job = NoticeImport(hub, options, index)
    try:
        return job.run(progress)
    finally:
        job.close()
