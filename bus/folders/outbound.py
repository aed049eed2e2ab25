"""How a closed batch is written for its destination: the format of the destination's
mapping (outbound section) with the folder's header and trailer records.

- CSV: header line, the column names once, one line per delivery, trailer line.
- Fixed width: header and trailer as records of the layout's length (space padded).
- XML (a system document, or the standard PlatformMessage when the system has no mapping for
  the service): ``<Batch flag=… count=…>`` holding each message as written for the system.

The messageIds travel in the ``.ids`` file beside the batch (record order); XML messages also
carry theirs in their Header.
"""

from __future__ import annotations

from bus.config.models import OutboundFolder, System
from bus.folders.records import CRLF, Extent, header_line, trailer_line
from bus.folders.spool import Batch, Render
from bus.mapping import MappingError, Section
from bus.mapping.formats.csv import CsvFormat
from bus.mapping.formats.fixed import FixedFormat
from bus.mapping.stage import section_for

BATCH_NAMESPACE = "urn:renkei:file:batch:1"


def _section(system: System, service: str) -> Section | None:
    try:
        return section_for(system, service, "outbound")
    except MappingError:
        return None


def _line_file(batch: Batch, folder: OutboundFolder, section: Section) -> bytes:
    form = section.format
    csv = isinstance(form, CsvFormat)
    lines: list[bytes] = []
    width = form.length if isinstance(form, FixedFormat) else 0

    def frame(text: str) -> bytes:
        encoded = text.encode(folder.encoding)
        return encoded.ljust(width, b" ") if width else encoded

    if folder.records.header:
        lines.append(frame(header_line(folder.records, Extent.DIFFERENTIAL, batch.created, csv)))
    column_header: bytes | None = None
    for record in batch.records:
        body = record.body.rstrip(b"\r\n")
        if isinstance(form, CsvFormat) and form.header:
            first, _, body = body.partition(CRLF)
            column_header = column_header or first
        lines.append(body)
    if column_header is not None:
        lines.insert(1 if folder.records.header else 0, column_header)
    if folder.records.trailer:
        lines.append(frame(trailer_line(folder.records, len(batch.records), csv)))
    return CRLF.join(lines) + CRLF


def _xml_file(batch: Batch, folder: OutboundFolder) -> bytes:
    flag = folder.records.flags.differential
    parts = [
        b'<?xml version="1.0" encoding="UTF-8"?>\n',
        f'<Batch xmlns="{BATCH_NAMESPACE}" flag="{flag}" count="{len(batch.records)}">'.encode(),
    ]
    for record in batch.records:
        body = record.body
        if body.startswith(b"<?xml"):
            body = body[body.index(b"?>") + 2 :].lstrip()
        parts.append(body)
    parts.append(b"</Batch>\n")
    return b"".join(parts)


def renderer(system: System, folder: OutboundFolder) -> Render:
    def render(batch: Batch) -> tuple[bytes, str]:
        section = _section(system, batch.service)
        if section is not None and isinstance(section.format, CsvFormat):
            return _line_file(batch, folder, section), ".csv"
        if section is not None and isinstance(section.format, FixedFormat):
            return _line_file(batch, folder, section), ".dat"
        return _xml_file(batch, folder), ".xml"

    return render
