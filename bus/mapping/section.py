"""A compiled mapping section: one service in one direction, ready to translate.

Inbound (system → standard) gives the standard service element; outbound (standard → system)
gives the system's bytes. Translation never raises for bad input: every problem is a coded
finding naming the record and the field, and a record with an error yields no output.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass, field
from typing import Literal

from lxml import etree

from bus.catalogue import load_catalogue
from bus.errors import make_finding
from bus.mapping.codegen import Program, section_program
from bus.mapping.compiler import CompiledEntry
from bus.mapping.formats import SystemFormat
from bus.mapping.formats.csv import CsvFormat
from bus.mapping.standard import read_service, service_element, write_service
from bus.mapping.values import DictRecord, FieldFailure, Source
from bus.masking import mask
from bus.pipeline import Finding, Severity
from bus.validation.secure_parse import secure_parse

Direction = Literal["inbound", "outbound"]


@dataclass(slots=True)
class Translation:
    """One record's result: ``output`` (None when a finding is an error) and findings;
    inbound, ``record`` is the standard record ``output`` was written from (catalogue id →
    value, repeating group → list of records), so a caller need not parse ``output`` again."""

    number: int
    output: bytes | None
    findings: list[Finding] = field(default_factory=list)
    record: DictRecord | None = None

    @property
    def ok(self) -> bool:
        return self.output is not None


def _finding(failure: FieldFailure, number: int, entry: CompiledEntry | None) -> Finding:
    item = load_catalogue().by_id.get(entry.item) if entry and entry.item else None
    label = entry.label if entry else ""
    path = f"/record[{number}]" + (f"/{label}" if label else "")
    params = failure.params
    value = params.get("value")
    if value is not None:  # the value itself (RK-MAP003/004), masked as validation masks it
        value = mask(str(value), personal=item.personal if item else True)
        params = {k: v for k, v in params.items() if k != "value"} | {"actual": value}
    return make_finding(
        failure.code,
        path=path,
        item=item.id if item else None,
        name_ja=item.name_ja if item else (label or None),
        rule=item.rule if item else None,
        detail=f"mapping entry at {entry.position}" if entry else None,
        value_masked=value,
        **params,
    )


@dataclass(frozen=True, slots=True)
class Section:
    service: str
    direction: Direction
    format: SystemFormat
    entries: tuple[CompiledEntry, ...]
    params: dict[str, str]
    items: frozenset[str] = frozenset()  # catalogue items written (inbound) or read (outbound)
    program: Program = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        name = f"{self.service} {self.direction}"
        inbound = self.direction == "inbound"
        # a CSV record (and each member of its groups) is a CsvRecord, dict[str, str]
        text_only = inbound and isinstance(self.format, CsvFormat)
        program = section_program(self.entries, name, inbound, text_only=text_only)
        object.__setattr__(self, "program", program)

    # --- one record ----------------------------------------------------------------------

    def run(
        self, source: Source, number: int = 1, params: Mapping[str, str] | None = None
    ) -> Translation:
        merged = self.params if not params else {**self.params, **params}
        target = self.format.new_target() if self.direction == "outbound" else DictRecord()
        findings: list[Finding] = []

        def report(error: Exception, entry: CompiledEntry) -> None:
            if isinstance(error, FieldFailure):
                findings.append(_finding(error, number, entry))
            else:  # a defect must not crash a batch: report it, coded
                findings.append(
                    make_finding(
                        "RK-MAP008",
                        path=f"/record[{number}]/{entry.label}",
                        expected=type(error).__name__,
                    )
                )

        self.program(source, target, merged, report)
        if findings and any(f.severity is Severity.ERROR for f in findings):
            return Translation(number, None, findings)
        try:
            if self.direction == "inbound":
                assert isinstance(target, DictRecord)
                output = write_service(self.service, target)
                return Translation(number, output, findings, target)
            output = self.format.render(target)
        except FieldFailure as failure:
            return Translation(number, None, [*findings, _finding(failure, number, None)])
        return Translation(number, output, findings)

    # --- whole inputs --------------------------------------------------------------------

    def source(self, data: bytes) -> Source:
        """The input as a source record: the system's document (inbound) or the standard
        message / service element (outbound). Raises FieldFailure RK-MAP005."""
        if self.direction == "inbound":
            return self.format.read(data)
        parsed = secure_parse(data)
        if parsed.root is None:
            raise FieldFailure("RK-MAP005", expected="XML", actual=parsed.findings[0].code)
        return self.standard_source(parsed.root)

    def standard_source(self, document: etree._Element) -> DictRecord:
        element = service_element(document)
        if element is None or etree.QName(element).localname != self.service:
            found = (
                etree.QName(element).localname
                if element is not None
                else etree.QName(document).localname
            )
            raise FieldFailure("RK-MAP005", expected=self.service, actual=found)
        return read_service(element)

    def translate(self, data: bytes, params: Mapping[str, str] | None = None) -> Translation:
        """One document (XML/JSON, or a single CSV/fixed-width record)."""
        try:
            source = self.source(data)
        except FieldFailure as failure:
            return Translation(1, None, [_finding(failure, 1, None)])
        return self.run(source, 1, params)

    def translate_records(
        self, data: bytes, params: Mapping[str, str] | None = None
    ) -> Iterator[Translation]:
        """Every record of a CSV or fixed-width file (inbound), good records translated,
        bad ones reported: the streaming API of the batch import."""
        for number, source in self.format.records(data):
            if isinstance(source, FieldFailure):
                yield Translation(number, None, [_finding(source, number, None)])
            elif isinstance(source, Exception):  # pragma: no cover - formats yield FieldFailure
                raise source
            else:
                yield self.run(source, number, params)

    def translate_fields(
        self,
        records: Iterable[list[str] | Mapping[str, str]],
        params: Mapping[str, str] | None = None,
    ) -> Iterator[Translation]:
        """Already-split CSV records (a list in column order or column → value)."""
        record_of = getattr(self.format, "record", None)
        if record_of is None:
            raise TypeError(f"{self.format.name} records are bytes: use translate_records")
        for number, fields in enumerate(records, start=1):
            source = record_of(fields)
            if isinstance(source, FieldFailure):
                yield Translation(number, None, [_finding(source, number, None)])
            else:
                yield self.run(source, number, params)
