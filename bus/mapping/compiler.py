"""Compiles a mapping section's field entries into plans: each entry's reader, operations,
condition, default and target, ready for :mod:`bus.mapping.codegen` to inline into one Python
function per section. Everything that can be decided from the file (paths, tables, functions,
catalogue ids, types, conditions) is decided here, once; a problem is a :class:`SpecProblem`
at the entry's file, line and column.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from bus.catalogue import Item, load_catalogue
from bus.mapping import operations as ops
from bus.mapping.formats import SpecError, SystemFormat
from bus.mapping.hooks import find_function
from bus.mapping.layout import Group, Leaf
from bus.mapping.problems import BAD_ARGUMENT, STRUCTURE, UNKNOWN_ITEM, UNKNOWN_KEY, WRONG_TYPE
from bus.mapping.suggest import item_hint
from bus.mapping.tables import (
    TableError,
    inline_code_table,
    read_code_table,
    read_gaiji_table,
    read_lookup_table,
    table_path,
)
from bus.mapping.values import Source, Text, Value
from bus.mapping.yamlpos import PDict, PList, Position, position_of
from bus.samplegen.content_model import content_model

ENTRY_KEYS = frozenset(
    {
        "to",
        "from",
        "const",
        "default",
        "param",
        "required",
        "when",
        "extract",
        "split",
        "join",
        "trim",
        "gaiji",
        "kana",
        "width",
        "share",
        "codes",
        "lookup",
        "function",
        "date",
        "written",
        "pad",
        "group",
        "path",
        "fields",
        "note",
    }
)
GROUP_KEYS = frozenset({"group", "path", "split", "fields", "when", "note"})


class SpecProblem(ValueError):
    """A load error at ``position``: ``code`` its kind (:mod:`bus.mapping.problems`),
    ``message`` the English specifics, ``item`` the catalogue item it concerns (as written),
    ``key`` the unknown key(s) of RK-MAP014, ``service`` the service of its section,
    ``hint`` what to write instead (Japanese, English)."""

    def __init__(
        self,
        position: Position,
        message: str,
        code: str,
        *,
        item: str | None = None,
        key: str | None = None,
        hint: tuple[str, str] | None = None,
    ) -> None:
        super().__init__(f"{position}: {message}")
        self.position = position
        self.message = message
        self.code = code
        self.item = item
        self.key = key
        self.hint = hint
        self.service: str | None = None

    @classmethod
    def of(cls, position: Position, error: SpecError) -> SpecProblem:
        """A format's :class:`SpecError` at the place it was written."""
        return cls(position, str(error), error.code, key=error.key, hint=error.hint)


@dataclass(frozen=True, slots=True)
class Plan:
    """An entry's parts as the code generator (:mod:`bus.mapping.codegen`) inlines them."""

    kind: str  # "copy" | "field" | "group"
    source_key: Any = None  # read with source.get (None: ``read`` is called)
    target_key: Any = None
    read: Callable[[Source, dict[str, str]], Value | None] | None = None
    constant: str | None = None  # const: the value itself
    param: str | None = None  # param: its name
    steps: tuple[ops.Op, ...] = ()
    finish: Callable[[Value], Value] | None = None
    condition: Callable[[Source], bool] | None = None
    default: str | None = None
    required: bool = False
    children: tuple[CompiledEntry, ...] = ()


@dataclass(frozen=True, slots=True)
class CompiledEntry:
    plan: Plan
    item: str | None  # the catalogue item on the standard side
    label: str  # the system path as written (for findings)
    position: Position
    group: bool = False


@dataclass(slots=True)
class SectionContext:
    """What compiling one section needs: its direction, format, layout and table folder."""

    service: str
    inbound: bool
    format: SystemFormat
    layout: Group
    directory: Path
    params: dict[str, str]
    problems: list[SpecProblem] = field(default_factory=list)
    mapped: set[str] = field(default_factory=set)  # standard keys written (inbound)
    used_items: set[str] = field(default_factory=set)

    def problem(self, where: Position, message: str, code: str, item: str | None = None) -> None:
        self.problems.append(SpecProblem(where, message, code, item=item))


def flag(spec: Any, key: str, at: Position) -> bool:
    """A yes/no key (``kana``, ``required``, ``reverse``…): ``true`` or ``false`` in any case;
    anything else (``yes``, ``on``, ``1``) is a load error, never read as false."""
    value = spec.get(key)
    if value is None:
        return False
    written = str(value).lower()
    if written not in ("true", "false"):
        raise SpecProblem(
            position_of(value, at), f"{key} is true or false, not {str(value)!r}", WRONG_TYPE
        )
    return written == "true"


def _text(value: Value | None) -> str | None:
    return value.text if isinstance(value, Text) else value


def _leaves(group: Group) -> dict[str, Leaf]:
    return {leaf.item: leaf for leaf in group.children if isinstance(leaf, Leaf)} | {
        leaf.item: leaf
        for child in group.children
        if isinstance(child, Group) and not child.repeating
        for leaf in _leaves(child).values()
    }


def _groups(group: Group) -> dict[str, Group]:
    found = {}
    for child in group.children:
        if isinstance(child, Group):
            if child.repeating:
                found[child.name] = child
            else:
                found.update(_groups(child))
    return found


class EntryCompiler:
    def __init__(self, context: SectionContext) -> None:
        self.c = context
        self.catalogue = load_catalogue()

    # --- the standard side ---------------------------------------------------------------

    def standard_key(self, raw: Any, scope: Group, where: Position) -> tuple[str, Leaf, str | None]:
        """(record key, layout leaf, attribute) for a catalogue id (``dateOfBirth@iso``)."""
        if not isinstance(raw, str):
            raise SpecProblem(where, "a catalogue id is text", STRUCTURE)
        item_id, _, attribute = raw.partition("@")
        if item_id not in self.catalogue.by_id:
            raise SpecProblem(
                where,
                f"unknown catalogue id {item_id!r}",
                UNKNOWN_ITEM,
                item=item_id,
                hint=item_hint(item_id, _leaves(scope)),
            )
        leaf = _leaves(scope).get(item_id)
        if leaf is None:
            raise SpecProblem(
                where,
                f"{item_id!r} is not an item of {self.c.service} here",
                UNKNOWN_ITEM,
                item=item_id,
            )
        if attribute and (self.c.inbound or attribute not in ("iso", "asGiven", "alt")):
            raise SpecProblem(
                where,
                f"{raw!r}: only an outbound source may name @iso, @asGiven or @alt",
                BAD_ARGUMENT,
                item=item_id,
            )
        return item_id, leaf, attribute or None

    def item(self, item_id: str) -> Item:
        return self.catalogue.by_id[item_id]

    def _item_of(self, entry: dict[str, Any]) -> str | None:
        """The catalogue item an entry writes (inbound) or reads (outbound), if it names one:
        what a load error in the entry is about."""
        raw = entry.get("to") if self.c.inbound else entry.get("from")
        if not isinstance(raw, str):
            return None
        item_id = raw.partition("@")[0]
        return item_id if item_id in self.catalogue.by_id else None

    # --- entries -------------------------------------------------------------------------

    def entries(
        self, raw: Any, scope: Group, group_key: Any, where: Position
    ) -> list[CompiledEntry]:
        if not isinstance(raw, list):
            self.c.problem(where, "fields must be a list of entries", STRUCTURE)
            return []
        compiled: list[CompiledEntry] = []
        unconditional: dict[str, tuple[Position, bool]] = {}  # target → (entry, required)
        for entry in raw:
            at = position_of(entry, where)
            try:
                if not isinstance(entry, dict):
                    raise SpecProblem(at, "an entry is a mapping {to, from, …}", STRUCTURE)
                assert isinstance(entry, PDict)  # what load_positioned makes
                if "group" in entry:
                    compiled.append(self.group(entry, scope, group_key, at))
                    continue
                result = self.entry(entry, scope, group_key, at)
            except SpecProblem as problem:
                if problem.item is None and isinstance(entry, dict):
                    problem.item = self._item_of(entry)
                self.c.problems.append(problem)
                if self.c.inbound and isinstance(entry.get("to"), str):
                    # reported already: not also a "missing required target"
                    self.c.mapped.add(str(entry["to"]).partition("@")[0])
                continue
            target = repr(entry.get("to"))
            first = unconditional.get(target)
            if first is not None:
                self.c.problems.append(_unreachable(target, first, at, self._item_of(entry)))
            elif "when" not in entry and ("const" in entry or "default" in entry):
                unconditional[target] = (at, False)  # it always writes: later entries never run
            elif "when" not in entry and result.plan.required:
                # it writes or fails the record: a fallback after it can never count
                unconditional[target] = (at, True)
            compiled.append(result)
        return compiled

    def group(self, entry: PDict, scope: Group, parent_key: Any, at: Position) -> CompiledEntry:
        unknown = set(entry) - GROUP_KEYS
        if unknown:
            keys = ", ".join(sorted(unknown))
            raise SpecProblem(at, f"unknown key(s) in a group entry: {keys}", UNKNOWN_KEY, key=keys)
        name = entry["group"]
        group = _groups(scope).get(str(name))
        if group is None:
            raise SpecProblem(
                position_of(name, at),
                f"{name!r} is not a repeating group of {self.c.service}",
                UNKNOWN_ITEM,
                item=str(name),
            )
        try:
            key = self.c.format.compile_group(entry, parent_key, writing=not self.c.inbound)
        except SpecError as error:
            raise SpecProblem.of(at, error) from None
        children = self.entries(
            entry.get("fields"), group, key, position_of(entry.get("fields"), at)
        )
        condition = self.condition(entry.get("when"), group_key=parent_key, scope=scope, at=at)
        source_key, target_key = (key, group.name) if self.c.inbound else (group.name, key)
        plan = Plan(
            "group",
            source_key=source_key,
            target_key=target_key,
            condition=condition,
            children=tuple(children),
        )
        return CompiledEntry(plan, None, str(entry.get("path") or name), at, True)

    def entry(self, entry: PDict, scope: Group, group_key: Any, at: Position) -> CompiledEntry:
        unknown = set(entry) - ENTRY_KEYS
        if unknown:
            keys = ", ".join(sorted(unknown))
            raise SpecProblem(at, f"unknown key(s): {keys}", UNKNOWN_KEY, key=keys)
        if "to" not in entry:
            raise SpecProblem(at, "an entry needs to:", STRUCTURE)
        where_to = position_of(entry["to"], at)
        inbound = self.c.inbound
        leaf: Leaf | None = None
        if inbound:
            item_id, leaf, _ = self.standard_key(entry["to"], scope, where_to)
            target_key: Any = item_id
            label = _label(entry.get("from") or entry.get("const") or entry.get("param") or item_id)
            self.c.mapped.add(item_id)
        else:
            target_key = self._system_key(entry["to"], group_key, where_to, writing=True)
            label = _label(entry["to"])
            item_id = None
        read = self.reader(entry, scope, group_key, at)
        if not inbound and "from" in entry and isinstance(entry["from"], str):
            item_id = str(entry["from"]).partition("@")[0]
        item = self.item(item_id) if item_id else None
        steps = self.operations(entry, item, leaf, at)
        condition = self.condition(entry.get("when"), group_key=group_key, scope=scope, at=at)
        default = entry.get("default")
        if default is not None and item is not None and inbound:
            self.check_constant(default, item, position_of(default, at))
        required = flag(entry, "required", at)
        finish = self.finisher(entry, item, leaf, at)
        source_key = getattr(read, "source_key", None)
        plain = not steps and finish is _identity and condition is None and default is None
        if source_key is not None and plain and not required:
            plan = Plan("copy", source_key=source_key, target_key=target_key)
            return CompiledEntry(plan, item.id if item else None, label, at)

        plan = Plan(
            "field",
            source_key=source_key,
            target_key=target_key,
            read=read,
            constant=getattr(read, "constant", None),
            param=getattr(read, "param", None),
            steps=tuple(steps),
            finish=None if finish is _identity else finish,
            condition=condition,
            default=None if default is None else str(default),
            required=required,
        )
        return CompiledEntry(plan, item.id if item else None, label, at)

    def _system_key(self, raw: Any, group_key: Any, where: Position, writing: bool) -> Any:
        try:
            return self.c.format.compile_path(raw, group_key, writing)
        except SpecError as error:
            raise SpecProblem.of(where, error) from None

    def reader(
        self, entry: PDict, scope: Group, group_key: Any, at: Position
    ) -> Callable[[Source, dict[str, str]], Value | None]:
        sources = [k for k in ("from", "const", "param") if k in entry]
        if len(sources) != 1:
            raise SpecProblem(at, "an entry needs exactly one of from, const, param", STRUCTURE)
        if "const" in entry:
            constant = str(entry["const"])
            if self.c.inbound:
                item_id = str(entry["to"])
                self.check_constant(constant, self.item(item_id), position_of(entry["const"], at))
            return _constant(constant)
        if "param" in entry:
            name = str(entry["param"])
            if name not in self.c.params:
                raise SpecProblem(
                    position_of(entry["param"], at),
                    f"unknown parameter {name!r} (declare it under params)",
                    BAD_ARGUMENT,
                )
            return _parameter(name)
        raw = entry["from"]
        if isinstance(raw, PList):
            return self.joined(entry, raw, scope, group_key, at)
        if "join" in entry:
            raise SpecProblem(at, "join needs from: a list", STRUCTURE)
        return self.single(raw, scope, group_key, position_of(raw, at))

    def single(
        self, raw: Any, scope: Group, group_key: Any, where: Position
    ) -> Callable[[Source, dict[str, str]], Value | None]:
        if self.c.inbound:
            return _reader(self._system_key(raw, group_key, where, writing=False))
        item_id, _, attribute = self.standard_key(raw, scope, where)
        self.c.used_items.add(item_id)
        if attribute is None:
            return _reader(item_id)

        def attribute_of(source: Source, _params: dict[str, str]) -> Value | None:
            value = source.get(item_id)
            return value.attr(attribute) if isinstance(value, Text) else None

        return attribute_of

    def joined(
        self, entry: PDict, parts: PList, scope: Group, group_key: Any, at: Position
    ) -> Callable[[Source, dict[str, str]], Value | None]:
        separator = str(entry.get("join") or "")
        readers: list[Callable[[Source, dict[str, str]], Value | None]] = []
        for part in parts:
            where = position_of(part, at)
            if isinstance(part, dict) and "from" in part:  # a member with its own operations
                sub = PDict({"to": entry["to"], **part})
                sub.position = where
                sub.key_positions = {}
                readers.append(self.part(sub, scope, group_key, where))
            else:
                readers.append(self.single(part, scope, group_key, where))

        def run(source: Source, params: dict[str, str]) -> Value | None:
            values = [_text(read(source, params)) for read in readers]
            present = [v for v in values if v]
            return separator.join(present) if present else None

        return run

    def part(
        self, sub: PDict, scope: Group, group_key: Any, at: Position
    ) -> Callable[[Source, dict[str, str]], Value | None]:
        """One member of a joined ``from`` with its own operations (e.g. a date's form)."""
        read = self.reader(sub, scope, group_key, at)
        item = None
        if not self.c.inbound and isinstance(sub.get("from"), str):
            item = self.item(str(sub["from"]).partition("@")[0])
        steps = self.operations(sub, item, None, at)
        finish = self.finisher(sub, item, None, at, final=False)

        def run(source: Source, params: dict[str, str]) -> Value | None:
            value = read(source, params)
            if value is None or value == "":
                return None
            text = value.text if isinstance(value, Text) and steps else value
            for step in steps:
                text = step(text)  # type: ignore[arg-type]
            return finish(text)

        return run

    # --- operations ----------------------------------------------------------------------

    def table_file(self, name: Any, at: Position) -> Path:
        path = table_path(self.c.directory, str(name))
        if not path.is_file():
            raise SpecProblem(
                position_of(name, at),
                f"table {name!r} not found ({path.name} under tables/)",
                BAD_ARGUMENT,
            )
        return path

    def operations(
        self, entry: PDict, item: Item | None, leaf: Leaf | None, at: Position
    ) -> list[ops.Op]:
        steps: list[ops.Op] = []
        if "extract" in entry:
            try:
                pattern = re.compile(str(entry["extract"]))
            except re.error as error:
                raise SpecProblem(
                    position_of(entry["extract"], at),
                    f"bad regular expression: {error}",
                    BAD_ARGUMENT,
                ) from None
            if pattern.groups < 1:
                raise SpecProblem(
                    position_of(entry["extract"], at), "extract needs one (group)", BAD_ARGUMENT
                )
            steps.append(ops.extract(pattern))
        if "split" in entry:
            spec = entry["split"]
            usage = (
                "split is {sep, index, parts}: a separator that is not empty, index from 0, "
                "fewer than parts"
            )
            if not isinstance(spec, dict) or not spec.get("sep"):
                raise SpecProblem(position_of(spec, at), usage, BAD_ARGUMENT)
            try:
                index = int(spec.get("index") or 0)
                parts = int(spec["parts"]) if spec.get("parts") else None
            except ValueError:
                raise SpecProblem(
                    position_of(spec, at), "index and parts are whole numbers", BAD_ARGUMENT
                ) from None
            if index < 0 or (parts is not None and not 0 <= index < parts):
                raise SpecProblem(position_of(spec, at), usage, BAD_ARGUMENT)
            steps.append(ops.split(str(spec["sep"]), index, parts))
        if "trim" in entry:
            side = str(entry["trim"]).lower()
            if side not in ("true", "both", "left", "right"):
                raise SpecProblem(
                    position_of(entry["trim"], at), "trim is true, left or right", BAD_ARGUMENT
                )
            steps.append(ops.trim("both" if side == "true" else side))
        if "gaiji" in entry and not self.c.inbound:
            steps.append(ops.gaiji_out(self._gaiji(self._gaiji_spec(entry["gaiji"], at)[0], at)))
        if flag(entry, "kana", at):
            if self.c.inbound and item is not None and item.rule != "kana":
                raise SpecProblem(
                    position_of(entry["kana"], at),
                    f"kana on {item.id}, which is not a kana item",
                    WRONG_TYPE,
                )
            steps.append(ops.kana())
        if "width" in entry:
            if str(entry["width"]) not in ("full", "half"):
                raise SpecProblem(
                    position_of(entry["width"], at), "width is full or half", BAD_ARGUMENT
                )
            steps.append(ops.width(str(entry["width"])))
        if flag(entry, "share", at):
            steps.append(ops.share())
        if "codes" in entry:
            steps.append(self.codes(entry["codes"], item, at))
        if "lookup" in entry:
            spec = entry["lookup"]
            if not isinstance(spec, dict) or "table" not in spec or "column" not in spec:
                raise SpecProblem(position_of(spec, at), "lookup is {table, column}", BAD_ARGUMENT)
            try:
                columns, rows = read_lookup_table(self.table_file(spec["table"], at))
            except TableError as error:
                raise SpecProblem(position_of(spec, at), str(error), BAD_ARGUMENT) from None
            if str(spec["column"]) not in columns:
                raise SpecProblem(
                    position_of(spec["column"], at),
                    f"table {spec['table']} has no column {spec['column']!r}",
                    BAD_ARGUMENT,
                )
            steps.append(ops.lookup(rows, str(spec["column"]), str(spec["table"])))
        if "function" in entry:
            name = str(entry["function"])
            hook = find_function(name)
            if hook is None:
                raise SpecProblem(
                    position_of(entry["function"], at),
                    f"unknown function {name!r} (no renkei.mapping.functions entry point)",
                    BAD_ARGUMENT,
                )
            steps.append(ops.function(name, hook))
        if "pad" in entry:
            spec = entry["pad"]
            usage = "pad is {length, char, side}: length a whole number, one char, side left|right"
            if not isinstance(spec, dict) or not str(spec.get("length") or "").isdigit():
                raise SpecProblem(position_of(spec, at), usage, BAD_ARGUMENT)
            char, side = str(spec.get("char") or " "), str(spec.get("side") or "left")
            if len(char) != 1 or side not in ("left", "right"):
                raise SpecProblem(position_of(spec, at), usage, BAD_ARGUMENT)
            steps.append(ops.pad(int(spec["length"]), char, side))
        return steps

    def _gaiji_spec(self, spec: Any, at: Position) -> tuple[Any, str | None]:
        """``gaiji: <table>`` or ``gaiji: {table?, unknown?}``: (table name or None, the
        代替文字 for a PUA character the table does not hold, or None: RK-MAP010)."""
        if not isinstance(spec, dict):
            return spec, None
        unknown = spec.get("unknown")
        if unknown is not None and len(str(unknown)) != 1:
            raise SpecProblem(
                position_of(unknown, at), "unknown is one 代替文字 (e.g. 〓)", BAD_ARGUMENT
            )
        if spec.get("table") is None and unknown is None:
            raise SpecProblem(
                position_of(spec, at), "gaiji is a table name or {table, unknown}", BAD_ARGUMENT
            )
        return spec.get("table"), None if unknown is None else str(unknown)

    def _gaiji(self, name: Any, at: Position) -> dict[str, Any]:
        if name is None:
            return {}
        try:
            return read_gaiji_table(self.table_file(name, at))
        except TableError as error:
            raise SpecProblem(position_of(name, at), str(error), BAD_ARGUMENT) from None

    def codes(self, spec: Any, item: Item | None, at: Position) -> ops.Op:
        where = position_of(spec, at)
        if isinstance(spec, str):
            spec = {"table": spec}
        if not isinstance(spec, dict):
            raise SpecProblem(
                where, "codes is a table name or {table|values, unknown, default}", BAD_ARGUMENT
            )
        unknown = str(spec.get("unknown") or "error")
        if unknown not in ("error", "default", "pass"):
            raise SpecProblem(where, "unknown is error, default or pass", BAD_ARGUMENT)
        if unknown == "default" and spec.get("default") is None:
            raise SpecProblem(where, "unknown: default needs default:", BAD_ARGUMENT)
        if "values" in spec and isinstance(spec["values"], dict):
            table = inline_code_table("inline", spec["values"])
        elif "table" in spec:
            try:
                table = read_code_table(self.table_file(spec["table"], where))
            except TableError as error:
                raise SpecProblem(where, str(error), BAD_ARGUMENT) from None
            if table.duplicates:
                raise SpecProblem(
                    where,
                    f"unreachable: table {table.name} maps a code twice "
                    f"(CSV line {table.duplicates[0]})",
                    STRUCTURE,
                )
        else:
            raise SpecProblem(where, "codes needs table: or values:", BAD_ARGUMENT)
        mapping = table.reversed() if flag(spec, "reverse", where) else table.forward
        if self.c.inbound and item is not None and item.code_list:
            allowed = set(content_model().enumeration(_type_qname(item)))
            if allowed:
                bad = sorted({v for v in mapping.values() if v not in allowed})
                if bad:
                    raise SpecProblem(
                        where,
                        f"table gives {bad[0]!r}, not a code of {item.id} ({item.code_list})",
                        WRONG_TYPE,
                    )
        fallback = None if spec.get("default") is None else str(spec["default"])
        if fallback is not None and self.c.inbound and item is not None:
            self.check_constant(fallback, item, position_of(spec["default"], where))
        return ops.codes(mapping, table.name, unknown, fallback)

    def finisher(
        self, entry: PDict, item: Item | None, leaf: Leaf | None, at: Position, final: bool = True
    ) -> Callable[[Value], Value]:
        """The last steps: the date conversion and the 外字 table on the way in."""
        date_spec = entry.get("date")
        date_step: Callable[[Value], Value] | None = None
        if date_spec is not None:
            where = position_of(date_spec, at)
            kind = str(date_spec)
            if self.c.inbound and final:
                if kind not in ops.INBOUND_DATES:
                    raise SpecProblem(
                        where, f"inbound date is one of {ops.INBOUND_DATES}", BAD_ARGUMENT
                    )
                if leaf is not None and (kind == "resident") != leaf.resident_date:
                    want = "resident" if leaf.resident_date else "iso"
                    raise SpecProblem(
                        where, f"wrong type: {leaf.item} needs date: {want}", WRONG_TYPE
                    )
                if item is not None and kind == "iso" and not item.xsd_type.endswith(":Date"):
                    raise SpecProblem(
                        where, f"wrong type: {item.id} is not a date ({item.xsd_type})", WRONG_TYPE
                    )
                date_step = ops.date_in(kind)
            else:
                if kind not in ops.DATE_FORMS:
                    raise SpecProblem(
                        where, f"an output date form is one of {ops.DATE_FORMS}", BAD_ARGUMENT
                    )
                if item is not None and item.rule not in (
                    "date_birth",
                    "date_event",
                    "date_deadline",
                ):
                    raise SpecProblem(where, f"wrong type: {item.id} is not a date", WRONG_TYPE)
                date_step = ops.date_out(kind)
        elif self.c.inbound and final and leaf is not None and leaf.resident_date:
            raise SpecProblem(
                at, f"wrong type: {leaf.item} is a ResidentDate: add date: resident", WRONG_TYPE
            )
        if "written" in entry and str(entry["written"]) not in ops.DATE_FORMS:
            raise SpecProblem(
                position_of(entry["written"], at),
                f"written is one of {ops.DATE_FORMS}",
                BAD_ARGUMENT,
            )
        gaiji_step = None
        if "gaiji" in entry and self.c.inbound:
            name, unknown = self._gaiji_spec(entry["gaiji"], at)
            gaiji_step = ops.gaiji_in(self._gaiji(name, at), str(name), unknown)
        if date_step is None and gaiji_step is None:
            return _identity
        if gaiji_step is None:
            assert date_step is not None
            return date_step
        if date_step is None:

            def gaiji_only(value: Value) -> Value:
                return gaiji_step(_text(value) or "")

            gaiji_only.inline = gaiji_step.inline  # type: ignore[attr-defined]  # on text
            return gaiji_only
        return lambda value: date_step(gaiji_step(_text(value) or ""))

    def check_constant(self, value: Any, item: Item, where: Position) -> None:
        text = str(value)
        allowed = content_model().enumeration(_type_qname(item)) if item.code_list else []
        if allowed and text not in allowed:
            raise SpecProblem(
                where,
                f"wrong type: {text!r} is not a code of {item.id} ({item.code_list})",
                WRONG_TYPE,
            )
        if item.pattern and "\\p" not in item.pattern:
            try:
                if re.fullmatch(item.pattern, text) is None:
                    raise SpecProblem(
                        where,
                        f"wrong type: {text!r} does not match {item.id}'s pattern {item.pattern}",
                        WRONG_TYPE,
                    )
            except re.error:
                return

    # --- conditions ----------------------------------------------------------------------

    def condition(
        self, spec: Any, *, group_key: Any, scope: Group, at: Position
    ) -> Callable[[Source], bool] | None:
        """``when: {field, equals | in | exists}`` on the entry's source record."""
        if spec is None:
            return None
        where = position_of(spec, at)
        if not isinstance(spec, dict) or "field" not in spec:
            raise SpecProblem(where, "when is {field, equals | in | exists}", BAD_ARGUMENT)
        tests = [k for k in ("equals", "in", "exists") if k in spec]
        if len(tests) != 1:
            raise SpecProblem(
                where, "a condition needs exactly one of equals, in, exists", BAD_ARGUMENT
            )
        if self.c.inbound:
            key = self._system_key(
                spec["field"], group_key, position_of(spec["field"], where), writing=False
            )
        else:
            key, _, _ = self.standard_key(spec["field"], scope, position_of(spec["field"], where))
        if "equals" in spec:
            expected = str(spec["equals"])
            return lambda source: _text(source.get(key)) == expected
        if "in" in spec:
            values = spec["in"]
            if not isinstance(values, list) or not values:
                raise SpecProblem(
                    where,
                    "unreachable: in: needs a non-empty list (an empty one never holds)",
                    STRUCTURE,
                )
            allowed = frozenset(str(v) for v in values)
            return lambda source: _text(source.get(key)) in allowed
        wanted = flag(spec, "exists", where)
        return lambda source: bool(_text(source.get(key))) is wanted


def _unreachable(
    target: str, first: tuple[Position, bool], at: Position, item: str | None
) -> SpecProblem:
    """A later entry for a target an earlier entry always writes (or, being ``required``,
    writes or refuses the record): it never counts."""
    line, required = first[0].line, first[1]
    if not required:
        return SpecProblem(
            at,
            f"unreachable: {target} is always written by the entry at line {line}",
            STRUCTURE,
            item=item,
        )
    return SpecProblem(
        at,
        f"unreachable: {target} is required by the entry at line {line}, so a record without "
        "that source is refused before this fallback counts",
        STRUCTURE,
        item=item,
        hint=(
            f"{line} 行目の required: true を外し、同じ項目の最後の行に付けてください。",
            f"Move required: true from line {line} to the last entry for this target.",
        ),
    )


def _identity(value: Value) -> Value:
    return value


def _reader(key: Any) -> Callable[[Source, dict[str, str]], Value | None]:
    def read(source: Source, _params: dict[str, str]) -> Value | None:
        return source.get(key)

    read.source_key = key  # type: ignore[attr-defined]  # lets a plain copy skip this call
    return read


def _constant(value: str) -> Callable[[Source, dict[str, str]], Value | None]:
    def read(_source: Source, _params: dict[str, str]) -> Value | None:
        return value

    read.constant = value  # type: ignore[attr-defined]  # inlined by the code generator
    return read


def _parameter(name: str) -> Callable[[Source, dict[str, str]], Value | None]:
    def read(_source: Source, params: dict[str, str]) -> Value | None:
        return params.get(name)

    read.param = name  # type: ignore[attr-defined]  # inlined by the code generator
    return read


def _type_qname(item: Item) -> str:
    prefix, _, local = item.xsd_type.partition(":")
    namespace = {"std": "urn:renkei:platform:standard:1", "ext": "urn:renkei:platform:extension:1"}
    return f"{{{namespace.get(prefix, '')}}}{local}"


def _label(raw: Any) -> str:
    if isinstance(raw, dict):
        return str(raw.get("name") or f"{raw.get('start')}+{raw.get('bytes')}")
    return str(raw)
