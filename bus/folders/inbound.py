"""One inbound file of a hot folder, record by record through the one pipeline.

The file is read through the system's mapping (its inbound section for the folder's
service: CSV, fixed width or XML). Its header and trailer are checked first: a trailer whose
count differs from the records sends the whole file to ``error/`` and nothing of it is taken.
Then every record becomes a PlatformMessage that :meth:`bus.hub.Hub.ingest` runs like any
other (adapter ``file``, the folder's system as the authenticated caller): good records are
stored and routed, bad ones go to the file's report with their coded findings.

The formats carry no messageId, so each record's is derived from the file's SHA-256 and the
record number (UUID v5): the same file delivered again, or processed again after the hub was
killed half-way, is recognised record by record by the Idempotent Receiver and nothing is
stored twice. Records of one subject keep the file's order (one lane per subject).
"""

from __future__ import annotations

import hashlib
import uuid
import zlib
from collections.abc import Callable, Collection, Iterable, Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from lxml import etree

from bus.catalogue import NS_ENVELOPE
from bus.config.models import InboundFolder, System
from bus.errors import make_finding
from bus.folders.records import Extent, FileRefused, Framed, unframe
from bus.hub import Hub
from bus.mapping import MappingError, Section, Translation
from bus.mapping.formats.csv import CsvFormat
from bus.mapping.formats.fixed import FixedFormat
from bus.mapping.formats.xml import XmlFormat
from bus.mapping.stage import section_for
from bus.mapping.standard import escape
from bus.mapping.values import FieldFailure
from bus.pipeline import Finding, Identity, Message, Severity
from bus.routing import field_tags
from bus.wareki import JST

ADAPTER = "file"
CHUNK = 512  # records translated and ingested together
_NAMESPACE = uuid.uuid5(uuid.NAMESPACE_URL, "urn:renkei:folders")
_XML_PARSER = etree.XMLParser(
    resolve_entities=False, no_network=True, load_dtd=False, huge_tree=False
)
_UTF8_XML_PARSER = etree.XMLParser(
    resolve_entities=False, no_network=True, load_dtd=False, huge_tree=False, encoding="utf-8"
)


@dataclass(slots=True)
class FileReport:
    """What became of one file: counts, and each refused record with its findings (coded,
    personal data masked)."""

    file: str
    system: str
    service: str
    tenant: str
    sha256: str | None  # None: the file could not be read (RK-FIL008)
    extent: str | None = None
    records: int = 0
    stored: int = 0
    duplicates: int = 0
    rejected: int = 0
    errors: list[dict[str, Any]] = field(default_factory=list)
    refused: dict[str, Any] | None = None  # the whole-file finding (the file went to error/)
    # Japan time, as staff read the report (2026-04-01T09:00:00+09:00)
    started_at: str = field(default_factory=lambda: datetime.now(JST).isoformat())
    finished_at: str | None = None

    def as_dict(self) -> dict[str, Any]:
        return {
            "file": self.file,
            "system": self.system,
            "service": self.service,
            "tenant": self.tenant,
            "sha256": self.sha256,
            "extent": self.extent,
            "records": self.records,
            "stored": self.stored,
            "duplicates": self.duplicates,
            "rejected": self.rejected,
            "refused": self.refused,
            "errors": self.errors,
            "started_at": self.started_at,
            "finished_at": self.finished_at,
        }

    def finish(self) -> None:
        self.finished_at = datetime.now(JST).isoformat()

    def reject(self, number: int, findings: Iterable[Finding]) -> None:
        self.rejected += 1
        errors = [f.as_dict() for f in findings if f.severity is Severity.ERROR]
        self.errors.append({"record": number, "findings": errors})

    def locate(self, lines: Callable[[Collection[int]], dict[int, int]]) -> None:
        """Give each refused record the physical line where it starts (staff look for a line
        in an editor), after its record number; only the refused records are located."""
        if not self.errors:
            return
        found = lines({int(error["record"]) for error in self.errors})
        for index, error in enumerate(self.errors):
            line = found.get(int(error["record"]))
            if line is not None:
                self.errors[index] = {"record": error["record"], "line": line, **error}


def record_message_id(system: str, folder: InboundFolder, digest: str, number: int) -> str:
    key = f"{system}|{folder.tenant}|{folder.service}|{digest}|{number}"
    return str(uuid.uuid5(_NAMESPACE, key))


def _subject(service_xml: bytes, field_id: str | None) -> str | None:
    if field_id is None:
        return None
    element = etree.fromstring(service_xml, _XML_PARSER)
    found = next(element.iter(*field_tags(field_id)), None)
    text = (found.text or "").strip() if found is not None else ""
    return text[:64] or None


def wrap(
    service_xml: bytes,
    system: str,
    folder: InboundFolder,
    message_id: str,
    issued: datetime,
    subject: str | None,
) -> bytes:
    """A PlatformMessage around a translated service element."""
    subject_xml = f"<env:subject>{escape(subject)}</env:subject>" if subject else ""
    header = (
        f"<env:Header><env:messageId>{message_id}</env:messageId>"
        f"<env:service><env:name>{folder.service}</env:name><env:version>1.0</env:version>"
        f"</env:service><env:client><env:tenant>{folder.tenant}</env:tenant>"
        f"<env:system>{system}</env:system></env:client>{subject_xml}"
        f"<env:issuedAt>{issued.isoformat(timespec='seconds')}</env:issuedAt>"
        "<env:protocolVersion>1.0</env:protocolVersion></env:Header>"
    )
    return (
        f'<env:PlatformMessage xmlns:env="{NS_ENVELOPE}">{header}'.encode()
        + service_xml
        + b"</env:PlatformMessage>"
    )


def inbound_section(system: System, folder: InboundFolder) -> Section:
    try:
        section = section_for(system, folder.service, "inbound")
    except MappingError:
        section = None
    if section is None:
        raise FileRefused(
            make_finding("RK-FIL005", path="/", actual=system.id, expected=folder.service)
        )
    return section


# --- reading the records -------------------------------------------------------------------


def _no_lines(numbers: Collection[int]) -> dict[int, int]:
    return {}


@dataclass(frozen=True, slots=True)
class _Records:
    extent: Extent
    count: int
    translations: Iterator[Translation]
    # record number → the physical line where it starts (formats with lines), asked for the
    # refused records only once the file is done: nothing is spent on the good ones
    lines: Callable[[Collection[int]], dict[int, int]] = _no_lines


def _parse_xml(data: bytes, encoding: str) -> etree._Element:
    """A CP932 folder's file is decoded with Python's cp932 codec (Microsoft's table: NEC and
    IBM extensions such as 髙 ①, ～ as U+FF5E, as for CSV and fixed width) whatever its
    declaration says: vendors declare Shift_JIS, which libxml2 reads without those. Otherwise
    the file's own declaration decides (UTF-8 without one)."""
    try:
        if encoding == "cp932":
            return etree.fromstring(data.decode("cp932").encode("utf-8"), _UTF8_XML_PARSER)
        return etree.fromstring(data, _XML_PARSER)
    except UnicodeDecodeError:
        raise FileRefused(make_finding("RK-FIL001", path="/", actual="not cp932")) from None
    except etree.XMLSyntaxError as error:
        raise FileRefused(make_finding("RK-FIL001", path="/", actual=str(error)[:40])) from None


def _xml_records(data: bytes, section: Section, folder: InboundFolder) -> _Records:
    """An XML file: the root's children are the records; ``flag``/``count`` attributes are
    its header and trailer."""
    root = _parse_xml(data, folder.encoding)
    children = list(root.iterchildren(tag=etree.Element))
    flags = folder.records.flags
    extent = Extent.DIFFERENTIAL
    if folder.records.header:
        flag = root.get("flag", "")
        if flag not in (flags.full, flags.differential):
            expected = f"{flags.full}=全件, {flags.differential}=差分"
            raise FileRefused(
                make_finding("RK-FIL004", path="/@flag", actual=flag[:8], expected=expected)
            )
        extent = Extent.FULL if flag == flags.full else Extent.DIFFERENTIAL
    if folder.records.trailer:
        count = root.get("count", "")
        if not count.isdigit():
            raise FileRefused(make_finding("RK-FIL002", path="/@count", actual=count[:20]))
        _check_count(int(count), len(children))
    assert isinstance(section.format, XmlFormat)
    xml_format = section.format

    def translations() -> Iterator[Translation]:
        for number, child in enumerate(children, start=1):
            try:
                source = xml_format.source(child)
            except FieldFailure as failure:
                finding = make_finding(failure.code, path=f"/record[{number}]", **failure.params)
                yield Translation(number, None, [finding])
                continue
            yield section.run(source, number)

    def lines(numbers: Collection[int]) -> dict[int, int]:
        found: dict[int, int] = {}
        for number in numbers:
            if 0 < number <= len(children):
                line: object = children[number - 1].sourceline  # of the record's start tag
                if isinstance(line, int):
                    found[number] = line
        return found

    return _Records(extent, len(children), translations(), lines)


def _line_records(data: bytes, section: Section, folder: InboundFolder) -> _Records:
    form = section.format
    bare_fixed = isinstance(form, FixedFormat) and not form.separator
    length = form.length if isinstance(form, FixedFormat) and bare_fixed else 0
    framed: Framed = unframe(data, folder.records, folder.encoding, length)
    count = sum(1 for _ in form.records(framed.data))
    if framed.declared is not None:
        _check_count(framed.declared, count)
    first = 2 if folder.records.header else 1  # the physical line of the first data line

    def lines(numbers: Collection[int]) -> dict[int, int]:
        if isinstance(form, CsvFormat):
            return _csv_lines(framed.data, form, first, numbers)
        if isinstance(form, FixedFormat) and form.separator:
            return {n: first + n - 1 for n in numbers}  # one record a line
        return {}  # fixed width without separators: no lines

    return _Records(framed.extent, count, section.translate_records(framed.data), lines)


def _csv_lines(
    data: bytes, form: CsvFormat, first: int, numbers: Collection[int]
) -> dict[int, int]:
    """The line where each of the CSV records ``numbers`` starts, numbered as
    :meth:`CsvFormat.records` numbers them (:meth:`CsvFormat.rows` gives each row's first
    line, a quoted line break continuing a record). One pass up to the last record asked for."""
    wanted, found = set(numbers), {}
    try:
        text = form.decode(data)
    except FieldFailure:
        return {1: first} if 1 in wanted else {}
    last, number = max(wanted, default=0), 0
    for line, row in form.rows(text):
        if form.header and line == 1:
            if row != form.columns:  # the format reports the column names as record 1
                return {1: first} if 1 in wanted else {}
            continue
        number += 1
        if number in wanted:
            found[number] = first + line - 1
        if number >= last:
            break
    return found


def _check_count(declared: int, actual: int) -> None:
    if declared != actual:
        raise FileRefused(
            make_finding("RK-FIL003", path="/trailer", expected=str(declared), actual=str(actual))
        )


def read_records(data: bytes, section: Section, folder: InboundFolder) -> _Records:
    """Check the file's frame and count; raises :class:`FileRefused`."""
    if isinstance(section.format, XmlFormat):
        return _xml_records(data, section, folder)
    return _line_records(data, section, folder)


# --- through the pipeline ------------------------------------------------------------------


@dataclass(slots=True)
class InboundFile:
    """Processes files of one hot folder of one system."""

    hub: Hub
    system: System
    folder: InboundFolder
    lanes: int = 4

    def process(self, name: str, data: bytes) -> FileReport:
        """Every record of ``data`` through the pipeline; raises :class:`FileRefused` (with
        nothing ingested) when the frame or the count is wrong."""
        digest = hashlib.sha256(data).hexdigest()
        report = FileReport(name, self.system.id, self.folder.service, self.folder.tenant, digest)
        section = inbound_section(self.system, self.folder)
        records = read_records(data, section, self.folder)
        report.extent, report.records = records.extent.value, records.count
        issued = datetime.now(UTC)
        with ThreadPoolExecutor(self.lanes, thread_name_prefix="folder") as pool:
            for chunk in _chunks(records.translations, CHUNK):
                self._ingest_chunk(chunk, digest, issued, report, pool)
        report.errors.sort(key=lambda error: int(error["record"]))
        report.locate(records.lines)
        report.finish()
        return report

    def _ingest_chunk(
        self,
        chunk: list[Translation],
        digest: str,
        issued: datetime,
        report: FileReport,
        pool: ThreadPoolExecutor,
    ) -> None:
        lanes: list[list[tuple[int, bytes]]] = [[] for _ in range(self.lanes)]
        for translation in chunk:
            if translation.output is None:
                report.reject(translation.number, translation.findings)
                continue
            message_id = record_message_id(self.system.id, self.folder, digest, translation.number)
            subject = _subject(translation.output, self.folder.subject)
            raw = wrap(translation.output, self.system.id, self.folder, message_id, issued, subject)
            lanes[zlib.crc32((subject or "").encode()) % self.lanes].append(
                (translation.number, raw)
            )
        for done in pool.map(self._ingest_lane, [lane for lane in lanes if lane]):
            for number, message in done:
                if message.ack is None:
                    report.reject(number, message.findings)
                elif message.ack.duplicate:
                    report.duplicates += 1
                else:
                    report.stored += 1

    def _ingest_lane(self, lane: list[tuple[int, bytes]]) -> list[tuple[int, Message]]:
        identity = Identity(frozenset({self.system.id}), "folder")
        return [
            (
                number,
                self.hub.ingest(
                    raw, adapter=ADAPTER, identity=identity, service=self.folder.service
                ),
            )
            for number, raw in lane
        ]


def _chunks(items: Iterator[Translation], size: int) -> Iterator[list[Translation]]:
    chunk: list[Translation] = []
    for item in items:
        chunk.append(item)
        if len(chunk) == size:
            yield chunk
            chunk = []
    if chunk:
        yield chunk
