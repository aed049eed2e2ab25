"""Loads the configuration directory (DESIGN §6) and validates it as a whole.

Every problem is reported as ``<file>:<line>: <message>`` (file relative to the directory) and
all of them are collected, not just the first. YAML is *composed* (not loaded) so every node
keeps its line; every plain scalar is read as text and converted by the model's own type, so
``412066``, ``011002`` or ``off`` never become an int, an octal number or ``False`` behind the
author's back (YAML 1.1's surprises). ``~``/``null``/an empty value is ``None``.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from functools import cache
from pathlib import Path
from typing import Any

import yaml
from pydantic import BaseModel, ValidationError

from bus.catalogue import NS_SERVICE, XS, load_catalogue
from bus.config.models import (
    ALL,
    AccessRule,
    HubConfig,
    Retention,
    Route,
    System,
    Tenant,
)
from bus.protection.limits import field_limit_problems
from bus.samplegen.content_model import content_model

CONFIG_SUFFIXES = (".yaml", ".yml")
REPLY_SUFFIX = "Reply"
INQUIRIES = frozenset({"AddresseeInquiry", "TaxAssessmentInquiry", "DelinquencyInquiry"})

# One model per item of each section; HubConfig is built once every item has validated.
SECTIONS: dict[str, type[BaseModel]] = {
    "tenants": Tenant,
    "systems": System,
    "routes": Route,
    "access": AccessRule,
    "retention": Retention,
}
REQUIRED_SECTIONS = ("tenants", "systems")
_NULLS = frozenset({"", "~", "null", "Null", "NULL"})


class ConfigError(ValueError):
    """The configuration is invalid; ``problems`` are ``"<file>:<line>: <message>"`` lines."""

    def __init__(self, problems: list[str]) -> None:
        super().__init__("\n".join(problems))
        self.problems = problems


@cache
def service_names() -> frozenset[str]:
    """Every service element of the catalogue's schemas (requests and their replies)."""
    return frozenset(content_model().services())


@cache
def request_services() -> frozenset[str]:
    """The ten request services: what routes and access rules may name."""
    return frozenset(s for s in service_names() if not s.endswith(REPLY_SUFFIX))


def is_inquiry(service: str) -> bool:
    return service in INQUIRIES


@cache
def service_items(service: str) -> frozenset[str]:
    """Catalogue item ids that may occur inside ``service``'s element (extension block
    included): what a route predicate on that service may name."""
    model, catalogue = content_model(), load_catalogue()
    items: set[str] = set()
    seen: set[str] = set()

    def walk(node: Any) -> None:
        for declaration in node.iter(f"{{{XS}}}element"):
            ref = declaration.get("ref")
            if ref is None:
                continue
            prefix, _, local = ref.rpartition(":")
            tag = f"{{{declaration.nsmap[prefix or None]}}}{local}"
            item = catalogue.by_tag.get(tag)
            if item is not None and catalogue.by_id.get(item.id) is item:
                items.add(item.id)
            target = model.elements.get(tag)
            if target is not None and tag not in seen:
                seen.add(tag)
                visit(target)

    def visit(element: Any) -> None:
        walk(element)
        type_name = element.get("type")
        if type_name:
            prefix, _, local = type_name.rpartition(":")
            qname = f"{{{element.nsmap[prefix or None]}}}{local}"
            complex_type = model.complex_types.get(qname)
            if complex_type is not None and qname not in seen:
                seen.add(qname)
                walk(complex_type)

    root = model.elements.get(f"{{{NS_SERVICE}}}{service}")
    if root is not None:
        visit(root)
    return frozenset(items)


# --- YAML → plain data, with a line for every path ------------------------------------------

Loc = tuple[str | int, ...]


@dataclass(slots=True)
class _Located:
    """Plain data for one section item plus the (file, line) of every path inside it."""

    file: str
    data: Any
    lines: dict[Loc, int] = field(default_factory=dict)
    scalars: dict[Loc, str] = field(default_factory=dict)

    def line(self, loc: Loc) -> int:
        """The line of the deepest known node on ``loc`` (pydantic adds union-member tags
        to a loc; unknown parts are skipped)."""
        best = self.lines.get((), 0)
        current: Loc = ()
        for part in loc:
            candidate = (*current, part)
            if candidate in self.lines:
                current = candidate
                best = self.lines[candidate]
        return best

    def where(self, loc: Loc = ()) -> str:
        return f"{self.file}:{self.line(loc)}"


class _Reader:
    """Turns composed YAML nodes into dicts/lists/strings, recording each node's line."""

    def __init__(self, file: str, problems: list[str]) -> None:
        self.file = file
        self.problems = problems

    def read(self, node: yaml.Node, located: _Located, loc: Loc) -> Any:
        located.lines[loc] = node.start_mark.line + 1
        if isinstance(node, yaml.MappingNode):
            result: dict[str, Any] = {}
            for key_node, value_node in node.value:
                key = str(key_node.value) if isinstance(key_node, yaml.ScalarNode) else "?"
                if key in result:
                    self.problems.append(
                        f"{self.file}:{key_node.start_mark.line + 1}: duplicate key {key!r}"
                    )
                    continue
                result[key] = self.read(value_node, located, (*loc, key))
                located.lines[(*loc, key)] = key_node.start_mark.line + 1
            return result
        if isinstance(node, yaml.SequenceNode):
            return [self.read(child, located, (*loc, i)) for i, child in enumerate(node.value)]
        assert isinstance(node, yaml.ScalarNode)
        value = str(node.value)
        located.scalars[loc] = value
        if node.style is None and value in _NULLS:
            return None
        return value


def read_config_files(directory: Path) -> dict[str, str]:
    """``{relative path: text}`` of every ``*.yaml``/``*.yml`` file under ``directory``."""
    if not directory.is_dir():
        raise ConfigError([f"{directory}:0: not a configuration directory"])
    files: dict[str, str] = {}
    problems: list[str] = []
    for path in sorted(directory.rglob("*")):
        if path.suffix not in CONFIG_SUFFIXES or not path.is_file():
            continue
        name = path.relative_to(directory).as_posix()
        try:
            files[name] = path.read_text(encoding="utf-8")
        except (OSError, UnicodeDecodeError) as error:
            problems.append(f"{name}:0: cannot be read ({error})")
    if problems:
        raise ConfigError(problems)
    if not files:
        raise ConfigError([f"{directory}:0: no *.yaml configuration files"])
    return files


def _compose(name: str, text: str, problems: list[str]) -> yaml.Node | None:
    try:
        return yaml.compose(text, Loader=yaml.SafeLoader)
    except yaml.MarkedYAMLError as error:
        mark = error.problem_mark or error.context_mark
        line = mark.line + 1 if mark is not None else 0
        context = ""
        if error.context and error.context_mark is not None:
            context = f" ({error.context} at line {error.context_mark.line + 1})"
        problems.append(f"{name}:{line}: YAML syntax error: {error.problem}{context}")
    except yaml.YAMLError as error:
        problems.append(f"{name}:0: YAML error: {error}")
    return None


def _section_items(
    files: dict[str, str], problems: list[str], declared: dict[str, str]
) -> dict[str, list[_Located]]:
    """Each section's items in file order; a section may be split over several files.
    ``declared`` receives where each section key was first seen."""
    sections: dict[str, list[_Located]] = {name: [] for name in SECTIONS}
    for name, text in sorted(files.items()):
        root = _compose(name, text, problems)
        if root is None:
            continue
        if not isinstance(root, yaml.MappingNode):
            problems.append(f"{name}:{root.start_mark.line + 1}: expected a mapping of sections")
            continue
        reader = _Reader(name, problems)
        for key_node, value_node in root.value:
            key, line = str(key_node.value), key_node.start_mark.line + 1
            if key not in SECTIONS:
                problems.append(
                    f"{name}:{line}: unknown section {key!r} (expected one of "
                    f"{', '.join(SECTIONS)})"
                )
                continue
            declared.setdefault(key, f"{name}:{line}")
            if isinstance(value_node, yaml.ScalarNode) and value_node.value in _NULLS:
                continue  # an empty section
            if not isinstance(value_node, yaml.SequenceNode):
                problems.append(f"{name}:{line}: section {key!r} must be a list")
                continue
            for child in value_node.value:
                located = _Located(name, None)
                located.data = reader.read(child, located, ())
                sections[key].append(located)
    return sections


def _describe(loc: Loc) -> str:
    return ".".join(str(part) for part in loc)


def _pydantic_problems(located: _Located, error: ValidationError) -> list[str]:
    problems = []
    for detail in error.errors():
        loc: Loc = tuple(detail["loc"])
        kind, message = detail["type"], str(detail["msg"]).removeprefix("Value error, ")
        line = _entry_line(located, loc, message) or located.line(loc)
        where = f"{located.file}:{line}"
        if kind == "extra_forbidden":
            problems.append(f"{where}: unknown field {str(loc[-1])!r}")
        elif kind == "missing":
            problems.append(f"{where}: missing required field {str(loc[-1])!r}")
        else:
            problems.append(f"{where}: {_describe(loc) or 'item'}: {message}")
    return problems


def _entry_line(located: _Located, loc: Loc, message: str) -> int | None:
    """A list validator (e.g. ``allow_addresses``) fails as a whole: the line of the entry
    its message quotes."""
    for index in range(len(located.scalars)):
        value = located.scalars.get((*loc, index))
        if value is None:
            return None
        if f"'{value}'" in message:
            return located.lines.get((*loc, index))
    return None


@dataclass(slots=True)
class _Checker:
    """Cross-reference checks on items that validated on their own."""

    tenants: list[tuple[Tenant, _Located]]
    systems: list[tuple[System, _Located]]
    routes: list[tuple[Route, _Located]]
    access: list[tuple[AccessRule, _Located]]
    retention: list[tuple[Retention, _Located]]
    problems: list[str] = field(default_factory=list)
    # Ids of items that failed their own validation still count as declared: one mistake,
    # one problem (no cascade of "unknown system" lines).
    invalid_ids: dict[str, set[str]] = field(default_factory=dict)
    tenant_codes: set[str] = field(default_factory=set)
    system_by_id: dict[str, System] = field(default_factory=dict)

    def report(self, located: _Located, loc: Loc, message: str) -> None:
        self.problems.append(f"{located.where(loc)}: {message}")

    def run(self) -> list[str]:
        self.tenant_codes = self._unique(self.tenants, lambda t: t.code, "tenant code")
        self.tenant_codes |= self.invalid_ids.get("tenants", set())
        self._unique(self.systems, lambda s: s.id, "system id")
        for system, _ in self.systems:
            self.system_by_id.setdefault(system.id, system)
        self._check_systems()
        self._check_tenant_joins()
        self._check_routes()
        self._check_access()
        self._check_retention()
        return self.problems

    def _unique(
        self, entries: Iterable[tuple[Any, _Located]], key: Callable[[Any], str], what: str
    ) -> set[str]:
        seen: dict[str, _Located] = {}
        for model, located in entries:
            value = key(model)
            if value in seen:
                self.report(
                    located, (), f"duplicate {what} {value!r} (first at {seen[value].where()})"
                )
            else:
                seen[value] = located
        return set(seen)

    def _tenant_list(self, tenants: Any, located: _Located, loc: Loc) -> None:
        if tenants == ALL:
            return
        for index, code in enumerate(tenants):
            if code not in self.tenant_codes:
                self.report(located, (*loc, index), f"unknown tenant {code!r}")

    def _system(self, system: str, located: _Located, loc: Loc) -> System | None:
        found = self.system_by_id.get(system)
        if found is None and system not in self.invalid_ids.get("systems", set()):
            self.report(located, loc, f"unknown system {system!r}")
        return found

    def _service(self, service: str, located: _Located, loc: Loc) -> bool:
        if service in request_services():
            return True
        if service in service_names():
            self.report(
                located, loc, f"{service!r} is a reply; replies return through request-reply"
            )
        else:
            self.report(located, loc, f"unknown service {service!r}")
        return False

    def _check_systems(self) -> None:
        from bus.identity import is_api_key_hash  # bus.identity's stages import this module

        for system, located in self.systems:
            self._tenant_list(system.tenants, located, ("tenants",))
            if system.mapping is not None:
                self._check_mapping(system, located)
            if system.file_linkage is not None:
                self._check_inbound_folders(system, located)
            for loc, problem in field_limit_problems(system.fields):
                self.report(located, ("fields", *loc), problem)
            for index, value in enumerate(system.credentials.api_key_hashes):
                if not is_api_key_hash(value):
                    self.report(
                        located,
                        ("credentials", "api_key_hashes", index),
                        "not an API key hash (scrypt$n$r$p$salt$hash; "
                        "`renkei keys new --for-config`)",
                    )

    def _check_tenant_joins(self) -> None:
        for tenant, located in self.tenants:
            for index, system in enumerate(tenant.joins):
                self._system(system, located, ("joins", index))

    def _check_mapping(self, system: System, located: _Located) -> None:
        """The mapping file a system names must exist, load and be that system's."""
        from bus.mapping import MappingError, cached_mapping, resolve

        assert system.mapping is not None
        try:
            mapping = cached_mapping(resolve(system.mapping))
        except MappingError as error:
            # the first load error with its code (RK-MAP013…018), as renkei mapping check
            self.report(located, ("mapping",), f"mapping {system.mapping!r}: {error.first}")
            return
        if mapping.system != system.id:
            wrong = f"mapping {system.mapping!r} is for system {mapping.system!r}"
            self.report(located, ("mapping",), wrong)

    def _check_inbound_folders(self, system: System, located: _Located) -> None:
        """Each hot folder's service must be one the system may send, for a tenant it serves,
        read through its mapping's inbound section."""
        from bus.mapping import MappingError, cached_mapping, resolve

        assert system.file_linkage is not None
        for index, folder in enumerate(system.file_linkage.inbound):
            loc: Loc = ("file_linkage", "inbound", index)
            if not self._service(folder.service, located, (*loc, "service")):
                continue
            self._tenant_list((folder.tenant,), located, (*loc, "tenant"))
            if not any(
                rule.system == system.id and folder.service in rule.send for rule, _ in self.access
            ):
                self.report(
                    located,
                    loc,
                    f"system {system.id!r} has no access rule to send {folder.service}",
                )
            if system.mapping is None:
                self.report(located, loc, "a hot folder needs the system's mapping file")
                continue
            try:
                section = cached_mapping(resolve(system.mapping)).section(folder.service, "inbound")
            except MappingError:
                continue  # reported by _check_mapping
            if section is None:
                self.report(
                    located,
                    (*loc, "service"),
                    f"mapping {system.mapping!r} has no inbound section for {folder.service}",
                )

    def _check_routes(self) -> None:
        claimed: dict[tuple[str, str], _Located] = {}
        for route, located in self.routes:
            if not self._service(route.service, located, ("service",)):
                continue
            self._tenant_list(route.tenants, located, ("tenants",))
            scopes = [ALL] if route.tenants == ALL else list(route.tenants)
            for scope in scopes:
                first = claimed.setdefault((route.service, scope), located)
                if first is not located:
                    what = "more than one provider" if is_inquiry(route.service) else "duplicate"
                    self.report(
                        located,
                        ("tenants",) if scope != ALL else ("service",),
                        f"{what} route for {route.service} (tenants {scope}); "
                        f"first at {first.where()}",
                    )
            if is_inquiry(route.service):
                self._check_inquiry(route, located)
            else:
                self._check_notification(route, located)

    def _check_inquiry(self, route: Route, located: _Located) -> None:
        if route.subscribers:
            self.report(
                located,
                ("subscribers",),
                f"{route.service} is an inquiry: it has one provider, no subscribers",
            )
        if route.provider is None:
            self.report(located, (), f"inquiry {route.service} needs a provider")
        else:
            self._destination(route.provider, route.service, located, ("provider",))

    def _check_notification(self, route: Route, located: _Located) -> None:
        if route.provider is not None:
            self.report(
                located,
                ("provider",),
                f"{route.service} is a notification: it has subscribers, no provider",
            )
        allowed_fields = service_items(route.service)
        for index, subscriber in enumerate(route.subscribers):
            loc: Loc = ("subscribers", index)
            self._destination(subscriber.system, route.service, located, (*loc, "system"))
            for number, condition in enumerate(subscriber.when):
                where: Loc = (*loc, "when", number)
                if condition.field not in allowed_fields:
                    self.report(
                        located,
                        (*where, "field"),
                        f"{condition.field!r} is not a catalogue item of {route.service}",
                    )
                tests = [condition.equals, condition.in_, condition.exists]
                if sum(test is not None for test in tests) != 1:
                    self.report(
                        located, where, "a condition needs exactly one of equals, in, exists"
                    )

    def _destination(self, system_id: str, service: str, located: _Located, loc: Loc) -> None:
        system = self._system(system_id, located, loc)
        if system is None:
            return
        if system.endpoint is None and system.delivery != "feed":
            self.report(located, loc, f"system {system_id!r} has no endpoint to deliver to")
        if not any(rule.system == system_id and service in rule.receive for rule, _ in self.access):
            self.report(
                located, loc, f"system {system_id!r} has no access rule to receive {service}"
            )

    def _check_access(self) -> None:
        for rule, located in self.access:
            self._system(rule.system, located, ("system",))
            self._tenant_list(rule.tenants, located, ("tenants",))
            for direction in ("send", "inquire", "receive"):
                for index, service in enumerate(getattr(rule, direction)):
                    loc: Loc = (direction, index)
                    if not self._service(service, located, loc):
                        continue
                    if direction == "send" and is_inquiry(service):
                        self.report(located, loc, f"{service} is an inquiry: grant 'inquire'")
                    if direction == "inquire" and not is_inquiry(service):
                        self.report(located, loc, f"{service} is a notification: grant 'send'")

    def _check_retention(self) -> None:
        self._unique(self.retention, lambda r: r.service, "retention for service")
        for retention, located in self.retention:
            if retention.service != ALL:
                self._service(retention.service, located, ("service",))


def parse_config_files(files: dict[str, str]) -> HubConfig:
    """Validate ``{relative path: YAML text}`` as one configuration; raise :class:`ConfigError`
    with every problem found."""
    problems: list[str] = []
    declared: dict[str, str] = {}
    sections = _section_items(files, problems, declared)
    valid: dict[str, list[tuple[Any, _Located]]] = {name: [] for name in SECTIONS}
    invalid_ids: dict[str, set[str]] = {name: set() for name in SECTIONS}
    for name, items in sections.items():
        model = SECTIONS[name]
        for located in items:
            try:
                valid[name].append((model.model_validate(located.data), located))
            except ValidationError as error:
                problems.extend(_pydantic_problems(located, error))
                if isinstance(located.data, dict):
                    ident = located.data.get("code", located.data.get("id"))
                    if isinstance(ident, str):
                        invalid_ids[name].add(ident)
    for name in REQUIRED_SECTIONS:
        if not sections[name]:
            where = declared.get(name, f"{name}.yaml:0")
            problems.append(f"{where}: no {name} declared")
    checker = _Checker(
        valid["tenants"],
        valid["systems"],
        valid["routes"],
        valid["access"],
        valid["retention"],
        invalid_ids=invalid_ids,
    )
    problems.extend(checker.run())
    if problems:
        raise ConfigError(_sorted(problems))
    return HubConfig(**{name: tuple(m for m, _ in items) for name, items in valid.items()})


_LOCATION = re.compile(r"^(?P<file>[^:]*):(?P<line>\d+): ")


def _sorted(problems: list[str]) -> list[str]:
    def key(problem: str) -> tuple[str, int]:
        match = _LOCATION.match(problem)
        return (match["file"], int(match["line"])) if match else (problem, 0)

    return sorted(dict.fromkeys(problems), key=key)


def load_config_dir(directory: Path) -> HubConfig:
    return parse_config_files(read_config_files(directory))
