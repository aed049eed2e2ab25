"""Loads a mapping file (``mappings/<system>.yaml``, DESIGN §5), checks it against the
catalogue and compiles every section. All problems are collected, each a coded finding
(:mod:`bus.mapping.problems`) whose path is ``file:line:column``.
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path
from time import monotonic

from bus.mapping.compiler import EntryCompiler, SectionContext, SpecProblem
from bus.mapping.derive import derive_fields
from bus.mapping.formats import SpecError, SystemFormat
from bus.mapping.formats.csv import CsvFormat
from bus.mapping.formats.fixed import FixedFormat
from bus.mapping.formats.json import JsonFormat
from bus.mapping.formats.xml import XmlFormat
from bus.mapping.layout import service_layout, services
from bus.mapping.problems import BAD_ARGUMENT, STRUCTURE, UNKNOWN_KEY, YAML, load_finding
from bus.mapping.section import Direction, Section
from bus.mapping.suggest import service_hint
from bus.mapping.yamlpos import PDict, Position, YamlSyntaxError, load_positioned, position_of
from bus.pipeline import Finding

FILE_KEYS = frozenset({"system", "description", "namespaces", "params", "services"})
SECTION_KEYS = frozenset(
    {
        "format",
        "root",
        "fields",
        "derive",
        "columns",
        "encoding",
        "delimiter",
        "header",
        "line_breaks",
        "record_length",
        "separator",
        "note",
    }
)
FORMATS = ("xml", "json", "csv", "fixed")


class MappingError(ValueError):
    """The mapping file is invalid. ``findings`` are its load errors, coded (path
    ``file:line:column``, the English specifics as detail); ``problems`` the same as
    ``file:line:column: specifics`` lines."""

    def __init__(self, findings: list[Finding]) -> None:
        self.findings = findings
        self.problems = [f"{finding.path}: {finding.detail}" for finding in findings]
        super().__init__("\n".join(self.problems))

    @property
    def first(self) -> str:
        """The first problem in one line with its code (``RK-MAP015 file:line:column: …``)."""
        finding = self.findings[0]
        return f"{finding.code} {finding.path}: {finding.detail}"


def _error(code: str, where: str, detail: str, hint: tuple[str, str] | None = None) -> MappingError:
    return MappingError([load_finding(code, where, detail, hint=hint)])


def _finding(problem: SpecProblem) -> Finding:
    return load_finding(
        problem.code,
        str(problem.position),
        problem.message,
        item=problem.item,
        key=problem.key,
        service=problem.service,
        hint=problem.hint,
    )


@dataclass(frozen=True, slots=True)
class Mapping:
    """A loaded, compiled mapping file."""

    path: Path
    system: str
    namespaces: dict[str, str]
    params: dict[str, str]
    sections: dict[tuple[str, Direction], Section]

    def section(self, service: str, direction: Direction) -> Section | None:
        return self.sections.get((service, direction))

    @property
    def golden_dir(self) -> Path:
        """``golden/<file name>/`` beside the file: the system's name for its main mapping,
        its own folder for a second layout of the same system (``houmu_fixed.yaml``)."""
        return self.path.parent / "golden" / self.path.stem


def _make_format(section: PDict, namespaces: dict[str, str], at: Position) -> SystemFormat:
    kind = str(section.get("format") or "")
    try:
        if kind == "xml":
            root = section.get("root")
            if not isinstance(root, str):
                raise SpecError(
                    "an XML section needs root: the system's document element", STRUCTURE
                )
            return XmlFormat(root, namespaces)
        if kind == "json":
            return JsonFormat()
        if kind == "csv":
            return CsvFormat(section)
        if kind == "fixed":
            return FixedFormat(section)
    except SpecError as error:
        place = position_of(section.get(error.at_key), at) if error.at_key else at
        raise SpecProblem.of(place, error) from None
    raise SpecProblem(
        position_of(section.get("format"), at), f"format must be one of {FORMATS}", BAD_ARGUMENT
    )


class _FileLoader:
    def __init__(self, path: Path, data: PDict) -> None:
        self.path = path
        self.data = data
        self.problems: list[SpecProblem] = []
        self.namespaces: dict[str, str] = {}
        self.params: dict[str, str] = {}

    def at(self, key: str) -> Position:
        return self.data.key_positions.get(key, self.data.position)

    def load(self) -> Mapping:
        data = self.data
        for key in sorted(set(data) - FILE_KEYS):
            self.problems.append(
                SpecProblem(self.at(key), f"unknown key {key!r}", UNKNOWN_KEY, key=repr(key))
            )
        system = data.get("system")
        if not isinstance(system, str) or not system:
            self.problems.append(
                SpecProblem(data.position, "missing system: (the system id)", STRUCTURE)
            )
        namespaces = data.get("namespaces") or {}
        if not isinstance(namespaces, dict):
            self.problems.append(
                SpecProblem(self.at("namespaces"), "namespaces is prefix: URI", STRUCTURE)
            )
        else:
            self.namespaces = {str(k): str(v) for k, v in namespaces.items()}
        params = data.get("params") or {}
        if isinstance(params, dict):
            self.params = {str(k): "" if v is None else str(v) for k, v in params.items()}
        else:
            self.problems.append(
                SpecProblem(self.at("params"), "params is name: default", STRUCTURE)
            )
        sections: dict[tuple[str, Direction], Section] = {}
        raw_services = data.get("services")
        if not isinstance(raw_services, PDict) or not raw_services:
            self.problems.append(
                SpecProblem(data.position, "services: needs at least one service", STRUCTURE)
            )
            raw_services = PDict()
            raw_services.position, raw_services.key_positions = data.position, {}
        known = set(services())
        for service, spec in raw_services.items():
            where = raw_services.key_positions.get(service, raw_services.position)
            if service not in known:
                self.problems.append(
                    SpecProblem(
                        where,
                        f"unknown service {service!r}",
                        UNKNOWN_KEY,
                        key=repr(service),
                        hint=service_hint(service, known),
                    )
                )
                continue
            if not isinstance(spec, PDict) or not set(spec) <= {"inbound", "outbound"} or not spec:
                self.problems.append(
                    SpecProblem(where, "a service has inbound: and/or outbound:", STRUCTURE)
                )
                continue
            for direction in ("inbound", "outbound"):
                if direction in spec:
                    before = len(self.problems)
                    section = self.section(
                        service, direction, spec, position_of(spec[direction], where)
                    )
                    for problem in self.problems[before:]:
                        problem.service = problem.service or service
                    if section is not None:
                        sections[(service, direction)] = section
        if self.problems:
            findings = (_finding(p) for p in sorted(self.problems, key=_order))
            # a derived direction compiles the same entries again: each problem said once
            raise MappingError(list(dict.fromkeys(findings)))
        return Mapping(self.path, str(system), self.namespaces, self.params, sections)

    def section(
        self, service: str, direction: Direction, spec: PDict, at: Position
    ) -> Section | None:
        raw = spec[direction]
        if not isinstance(raw, PDict):
            self.problems.append(
                SpecProblem(at, f"{direction} is a mapping {{format, root, fields}}", STRUCTURE)
            )
            return None
        for key in sorted(set(raw) - SECTION_KEYS):
            self.problems.append(
                SpecProblem(
                    raw.key_positions.get(key, at),
                    f"unknown key {key!r}",
                    UNKNOWN_KEY,
                    key=repr(key),
                )
            )
        if "derive" in raw:
            other = str(raw["derive"])
            if (
                other == direction
                or other not in ("inbound", "outbound")
                or not isinstance(spec.get(other), dict)
            ):
                self.problems.append(
                    SpecProblem(
                        position_of(raw["derive"], at),
                        f"derive names the other direction of {service}, which must be written out",
                        BAD_ARGUMENT,
                    )
                )
                return None
            extra = sorted(set(raw) - {"derive", "note"})
            if extra:  # they would be ignored: the derived section is the other one inverted
                self.problems.append(
                    SpecProblem(
                        raw.key_positions.get(extra[0], at),
                        f"derive: takes the other direction as it is; {', '.join(extra)} would "
                        "be ignored (write this direction out instead)",
                        STRUCTURE,
                    )
                )
                return None
            base = spec[other]
            try:
                fields = derive_fields(
                    base.get("fields"), position_of(base, at), direction == "inbound"
                )
            except SpecProblem as problem:
                self.problems.append(problem)
                return None
            raw = PDict({**base, "fields": fields})
            raw.position, raw.key_positions = base.position, base.key_positions
        try:
            system_format = _make_format(raw, self.namespaces, at)
        except SpecProblem as problem:
            self.problems.append(problem)
            return None
        layout = service_layout(service)
        context = SectionContext(
            service, direction == "inbound", system_format, layout, self.path.parent, self.params
        )
        compiler = EntryCompiler(context)
        entries = compiler.entries(
            raw.get("fields"), layout, None, position_of(raw.get("fields"), at)
        )
        if context.inbound:
            for leaf in layout.children:
                if (
                    getattr(leaf, "required", False)
                    and hasattr(leaf, "item")
                    and leaf.item not in context.mapped
                ):
                    context.problem(
                        at,
                        f"missing required target {leaf.item} ({service} requires it)",
                        STRUCTURE,
                        leaf.item,
                    )
        self.problems.extend(context.problems)
        if context.problems:
            return None
        items = frozenset(context.mapped | context.used_items)
        return Section(service, direction, system_format, tuple(entries), dict(self.params), items)


def _order(problem: SpecProblem) -> tuple[int, int]:
    return problem.position.line, problem.position.column


MAX_BYTES = 2 << 20  # the largest shipped mapping is 12 KB; YAML parsing costs ~1 s a MB
_TOO_LARGE = (
    "変換定義ファイルは 2 MB までです。大きなコード表は tables/ の CSV に分けてください。",
    "A mapping file is at most 2 MB: put large code tables in CSV files under tables/.",
)
_EMPTY = (
    "空のファイルです。system: と services: を書いてください（docs/mapping-guide.md）。",
    "The file is empty: write system: and services: (docs/mapping-guide.md).",
)


def _read_text(path: Path) -> str:
    name = str(path)
    try:
        with path.open("rb") as stream:
            data = stream.read(MAX_BYTES + 1)
    except OSError as error:
        raise _error(YAML, f"{name}:0:0", f"cannot be read ({error})") from None
    if len(data) > MAX_BYTES:
        raise _error(YAML, f"{name}:0:0", f"larger than {MAX_BYTES} bytes", _TOO_LARGE)
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError as error:
        line = data[: error.start].count(b"\n") + 1
        raise _error(
            YAML,
            f"{name}:{line}:0",
            f"not UTF-8 ({error.reason} at byte {error.start})",
            ("変換定義ファイルは UTF-8 で保存してください。", "Save the mapping file as UTF-8."),
        ) from None


def load_mapping(path: Path) -> Mapping:
    """Read, check and compile a mapping file; raises :class:`MappingError`."""
    name = str(path)
    text = _read_text(path)
    try:
        data = load_positioned(text, name)
    except YamlSyntaxError as error:
        raise _error(YAML, str(error.position), error.problem, error.hint) from None
    if data is None:
        raise _error(STRUCTURE, f"{name}:1:1", "the file is empty", _EMPTY)
    if not isinstance(data, PDict):
        raise _error(
            STRUCTURE, f"{name}:1:1", "a mapping file is a YAML mapping (system, services…)"
        )
    return _FileLoader(path, data).load()


@lru_cache(maxsize=64)
def _cached(path: Path, mtime_ns: int) -> Mapping:
    return load_mapping(path)


RECHECK_SECONDS = 1.0
_checked: dict[Path, tuple[float, int]] = {}  # path → (when its mtime was read, the mtime)


def cached_mapping(path: Path) -> Mapping:
    """The compiled mapping, reloaded when the file changes (the hub's translate stages).
    The file's modification time is read at most once per :data:`RECHECK_SECONDS` per path
    (a translate stage asks for every message and delivery), so an edit is picked up within
    that long."""
    now = monotonic()
    seen = _checked.get(path)
    if seen is not None and now - seen[0] < RECHECK_SECONDS:
        return _cached(path, seen[1])
    try:
        mtime = path.stat().st_mtime_ns
    except OSError:
        _checked.pop(path, None)
        raise _error(YAML, f"{path}:0:0", "not found") from None
    _checked[path] = (now, mtime)
    return _cached(path, mtime)


@lru_cache(maxsize=256)
def resolve(name: str, directory: Path | None = None) -> Path:
    """A system's ``mapping:`` setting → the file: absolute, or under the mappings folder.
    Cached: a dispatch worker asks for every delivery, and building the path costs more than
    the rest of finding the compiled mapping."""
    from bus.resources import data_dir

    candidate = Path(name)
    if candidate.is_absolute():
        return candidate
    return (directory or data_dir("mappings")) / candidate
