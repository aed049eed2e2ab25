"""One Python function per mapping section, generated from the compiled entries' plans.

A list of per-entry closures pays a call, a ``has`` check and a loop step for every field of
every record; the generated function inlines each entry instead: plain copies become two
lines, constants and parameters are bound values, the first-writer-wins check is emitted only
where two entries can write the same target, and a ``try`` (free when nothing is raised in
Python 3.11) around each entry keeps a failing field from stopping the others.
Everything the plans hold (keys, operations, conditions, tables) is bound as a global of the
generated code, never written into its text, so a mapping file cannot inject code.

``specialise`` (the default) also writes each operation that has an inline form
(:class:`bus.mapping.operations.Inline`: trim, half width, the 外字 scan, extract, kana, codes,
持分) as those statements instead of a call; without it every operation is called, the general
path the tests compare the specialised function with. A section reading a CSV record
(``text_only``: its values are ``str``) does not check each value read for a :class:`Text`.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from typing import Any

from bus.mapping.compiler import CompiledEntry, Plan
from bus.mapping.operations import Inline
from bus.mapping.values import DictRecord, FieldFailure, Source, Target, Text

Report = Callable[[Exception, CompiledEntry], None]
Program = Callable[[Source, Target, dict[str, str], Report], None]


class _Writer:
    def __init__(self, inbound: bool, specialise: bool, text_only: bool) -> None:
        self.inbound = inbound
        self.specialise = specialise
        self.text_only = text_only
        self.lines: list[str] = []
        self.bound: dict[str, Any] = {
            "DictRecord": DictRecord,
            "FieldFailure": FieldFailure,
            "Text": Text,
        }

    def bind(self, value: Any) -> str:
        name = f"b{len(self.bound)}"
        self.bound[name] = value
        return name

    def emit(self, depth: int, line: str) -> None:
        self.lines.append("    " * depth + line)

    # --- one scope (the section, or one member of a repeating group) ---------------------

    def scope(self, entries: Iterable[CompiledEntry], depth: int, level: int) -> None:
        """Each entry in a try/except reporting it (a group member's failure names the
        member's own entry, so a caller can tell which column it was)."""
        written: list[Any] = []  # target keys already written in this scope
        for entry in entries:
            self.emit(depth, "try:")
            self.entry(entry.plan, depth + 1, level, written)
            self.emit(depth, "except Exception as error:")
            self.emit(depth + 1, f"report(error, {self.bind(entry)})")

    def entry(self, plan: Plan, depth: int, level: int, written: list[Any]) -> None:
        source, data = f"source{level}", f"data{level}"
        if plan.kind == "group":
            self.group(plan, depth, level)
            return
        key = self.bind(plan.target_key)
        conditions = []
        if any(plan.target_key == other for other in written):
            conditions.append(f"{key} not in {data}")  # the first entry that writes wins
        written.append(plan.target_key)
        if plan.condition is not None:
            conditions.append(f"{self.bind(plan.condition)}({source})")
        if conditions:
            self.emit(depth, f"if {' and '.join(conditions)}:")
            depth += 1
        if plan.kind == "copy":
            self.emit(depth, f"value = {source}.get({self.bind(plan.source_key)})")
            self.emit(depth, "if value:")
            self.emit(depth + 1, f"{data}[{key}] = value")
            return
        self.emit(depth, f"value = {self.read(plan, source)}")
        if plan.default is None and not plan.required:  # a value is str | Text: "" is falsy
            self.emit(depth, "if value:")
        else:
            self.emit(depth, 'if value is None or value == "":')
            if plan.default is not None:
                self.emit(depth + 1, f"value = {self.bind(plan.default)}")
            else:
                self.emit(depth + 1, 'raise FieldFailure("RK-MAP002")')
            self.emit(depth, "if value is not None:")
        depth += 1
        if plan.steps:
            self.text(depth, plan)
            for step in plan.steps:
                self.step(depth, step)
        reads_iso = getattr(plan.finish, "reads_iso", None)
        inline = self.inline(plan.finish)
        if not plan.steps and (reads_iso is not None or inline is not None):  # read text
            self.text(depth, plan)
        if reads_iso is not None:  # date: iso, inlined: the ISO text or RK-MAP004 (the value)
            self.emit(depth, f"iso = {self.bind(reads_iso)}(value)")
            self.emit(depth, "if iso is None:")
            self.emit(depth + 1, 'raise FieldFailure("RK-MAP004", value=value)')
            self.emit(depth, "value = iso")
        elif plan.finish is not None:
            self.step(depth, plan.finish)
        self.emit(depth, "if value:")
        self.emit(depth + 1, f"{data}[{key}] = value")

    def text(self, depth: int, plan: Plan) -> None:
        """``value`` as text: a :class:`Text` read gives its text (read from a source that
        holds text only, it is text already)."""
        if plan.source_key is None or not self.text_only:
            self.emit(depth, "if value.__class__ is Text:")
            self.emit(depth + 1, "value = value.text")

    def inline(self, operation: Callable[[Any], Any] | None) -> Inline | None:
        found = getattr(operation, "inline", None) if self.specialise else None
        return found if isinstance(found, Inline) else None

    def step(self, depth: int, operation: Callable[[Any], Any]) -> None:
        """``value = operation(value)``, or the operation's inline statement."""
        inline = self.inline(operation)
        if inline is None:
            self.emit(depth, f"value = {self.bind(operation)}(value)")
        else:
            code = inline.code.format(*(self.bind(b) for b in inline.bound))
            for line in code.split("\n"):
                self.emit(depth, line)

    def read(self, plan: Plan, source: str) -> str:
        if plan.constant is not None:
            return self.bind(plan.constant)
        if plan.param is not None:
            return f"params.get({self.bind(plan.param)})"
        if plan.source_key is not None:
            return f"{source}.get({self.bind(plan.source_key)})"
        return f"{self.bind(plan.read)}({source}, params)"

    def group(self, plan: Plan, depth: int, level: int) -> None:
        source, target = f"source{level}", f"target{level}"
        inner = level + 1
        if plan.condition is not None:
            self.emit(depth, f"if {self.bind(plan.condition)}({source}):")
            depth += 1
        self.emit(depth, f"for source{inner} in {source}.groups({self.bind(plan.source_key)}):")
        if self.inbound:  # the target is a DictRecord: DictRecord.group without the call
            members = f"data{level}.setdefault({self.bind(plan.target_key)}, [])"
            self.emit(depth + 1, f"data{inner} = {{}}")
            self.emit(depth + 1, f"target{inner} = DictRecord(data{inner})")
            self.emit(depth + 1, f"{members}.append(target{inner})")
        else:
            self.emit(depth + 1, f"target{inner} = {target}.group({self.bind(plan.target_key)})")
            self.emit(depth + 1, f"data{inner} = target{inner}.data")
        if not plan.children:
            self.emit(depth + 1, "pass")
        self.scope(plan.children, depth + 1, inner)


def section_program(
    entries: tuple[CompiledEntry, ...],
    name: str,
    inbound: bool,
    *,
    specialise: bool = True,
    text_only: bool = False,
) -> Program:
    """The section's entries as one function ``(source, target, params, report)``: it fills
    ``target`` (a :class:`DictRecord` when ``inbound``) and calls ``report(error, entry)``
    for each entry that fails. ``text_only``: the source's values (and its groups') are
    ``str``, never :class:`Text` (a CSV record), so none is checked for it."""
    writer = _Writer(inbound, specialise, text_only)
    writer.emit(0, "def translate(source0, target0, params, report):")
    writer.emit(1, "data0 = target0.data")
    writer.scope(entries, 1, 0)
    source = "\n".join(writer.lines) + "\n"
    namespace = dict(writer.bound)
    exec(compile(source, f"<mapping {name}>", "exec"), namespace)
    program: Program = namespace["translate"]
    program.source = source  # type: ignore[attr-defined]  # for debugging: print it
    return program
