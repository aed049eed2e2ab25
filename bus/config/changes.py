"""What a new configuration version changes for the deliveries of a connected system.

A system replacement (システム更改, a vendor switch) keeps the system id and gives it another
endpoint, transport or mapping file. Deliveries are routed at ingest but sent with the
configuration in force at send time (endpoint, transport and the outbound translation), so
a pending delivery or a redelivered dead letter goes to the new system in its format; an
operator should still know how many there are, and whether the system was paused.
"""

from __future__ import annotations

from dataclasses import dataclass

from bus.config.models import HubConfig, System


@dataclass(frozen=True, slots=True)
class DestinationChange:
    """A system in both versions whose deliveries now go elsewhere or in another format.
    ``changes`` names what changed; a URL is never shown (a broker URL holds a password)."""

    system: str
    changes: tuple[str, ...]

    def describe(self) -> str:
        return ", ".join(self.changes)


def _transport(system: System) -> str:
    return system.endpoint.transport if system.endpoint is not None else "-"


def _url(system: System) -> str | None:
    return system.endpoint.url if system.endpoint is not None else None


def _changes(old: System, new: System) -> tuple[str, ...]:
    found: list[str] = []
    if _transport(old) != _transport(new):
        found.append(f"transport {_transport(old)} → {_transport(new)}")
    if _url(old) != _url(new):
        found.append("endpoint url")
    if old.mapping != new.mapping:
        found.append(f"mapping {old.mapping or '-'} → {new.mapping or '-'}")
    return tuple(found)


def changed_destinations(old: HubConfig, new: HubConfig) -> list[DestinationChange]:
    """The systems of both versions whose transport, endpoint URL (or outbound folder) or
    mapping file differ, in the new version's order."""
    before = {system.id: system for system in old.systems}
    changed: list[DestinationChange] = []
    for system in new.systems:
        previous = before.get(system.id)
        changes = _changes(previous, system) if previous is not None else ()
        if changes:
            changed.append(DestinationChange(system.id, changes))
    return changed
