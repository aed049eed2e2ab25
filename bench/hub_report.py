"""Markdown tables for the hub benchmark."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field


@dataclass
class Result:
    label: str
    seconds: float
    messages: int
    deliveries: int
    ingest_seconds: float | None = None
    cpu: dict[str, float] = field(default_factory=dict)  # component -> CPU seconds
    checks: str = ""
    steal: float = 0.0  # the hypervisor's steal share of the VM's CPU time meanwhile

    @property
    def rate(self) -> float:
        return self.deliveries / self.seconds


def print_ingest(results: Sequence[Result]) -> None:
    print("\n### (a) Ingest + fan-out to 3 HTTP subscribers\n")
    print("| setup | messages | ingest msg/s | deliveries/s end to end | seconds | checks |")
    print("| --- | ---: | ---: | ---: | ---: | --- |")
    for r in results:
        assert r.ingest_seconds is not None
        print(
            f"| {r.label} | {r.messages:,} | {r.messages / r.ingest_seconds:,.0f} | "
            f"{r.rate:,.0f} | {r.seconds:.1f} | {r.checks} |"
        )
    print_cpu(results)


def print_dispatch(
    baselines: Sequence[Result], embedded: Sequence[Result], postgres: Sequence[Result]
) -> None:
    print("\n### (b) Dispatch only, pre-filled store\n")
    print(
        "| setup | deliveries | deliveries/s | seconds | vs raw httpx | vs raw http.client "
        "| vs 1 worker | checks |"
    )
    print("| --- | ---: | ---: | ---: | ---: | ---: | ---: | --- |")
    httpx_rate, client_rate = (b.rate for b in baselines)
    one = postgres[0].rate if postgres else None
    for r in [*baselines, *embedded, *postgres]:
        versus_one = f"{r.rate / one:.2f}x" if one and r in postgres else ""
        print(
            f"| {r.label} | {r.deliveries:,} | {r.rate:,.0f} | {r.seconds:.1f} | "
            f"{r.rate / httpx_rate:.2f}x | {r.rate / client_rate:.2f}x | {versus_one} | "
            f"{r.checks} |"
        )
    print_cpu([*baselines, *embedded, *postgres])


def print_cpu(results: Sequence[Result]) -> None:
    print("\nCPU time per component, ms per delivery (seconds in brackets):\n")
    names = list(dict.fromkeys(name for r in results for name in r.cpu))
    print("| setup | " + " | ".join(names) + " | total | host steal |")
    print("| --- |" + " ---: |" * (len(names) + 2))
    for r in results:
        cells = [
            f"{r.cpu[n] / r.deliveries * 1e3:.2f} ({r.cpu[n]:.1f})" if n in r.cpu else ""
            for n in names
        ]
        total = sum(r.cpu.values())
        print(
            f"| {r.label} | " + " | ".join(cells) + f" | {total / r.deliveries * 1e3:.2f} | "
            f"{r.steal:.0%} |"
        )
