"""The memory large bodies' trees may take at once (adapters/inbound.py, parse_budget).

A body of tiny nodes (``<!-- -->`` comments, ``<e/>`` elements) builds a libxml2 tree twenty
to forty times its size. Before the budget, thirty 10 MB ones sent at once by a caller with
no credentials took a hub from 127 MB to 4.7 GB (comments) and 9.1 GB (elements): every one
was parsed at once in the default thread pool before Authenticate ran. Now a large body waits
for room in ``RENKEI_PARSE_MEMORY_MIB`` and, after 2 s, is refused RK-API017 (503,
``Retry-After``) without being parsed; the share is given back when its pipeline run ends.
"""

from __future__ import annotations

import asyncio
import re
from collections import Counter
from pathlib import Path

import httpx
import pytest

from bus.validation.parse_budget import NODE_BYTES, ParseBudget, tree_cost
from tests.support.hub_server import HubServer, hub_server

SOAP_NS = "http://schemas.xmlsoap.org/soap/envelope/"
REST_PATH = "/api/v1/messages/ResidentChangeNotice"
SOAP_PATH = "/soap/ResidentChangeNotice"
_CODE = re.compile(rb"RK-[A-Z]{3}\d{3}")


def _comments(count: int) -> bytes:
    """A SOAP Envelope (a message root, so no byte check refuses it) of ``count`` comments:
    8 bytes of body, one tree node each."""
    head = f'<soap:Envelope xmlns:soap="{SOAP_NS}">'.encode()
    return head + b"<!-- -->" * count + b"</soap:Envelope>"


Answer = tuple[int, str, str | None]  # status, first code, Retry-After


def _answer(response: httpx.Response) -> Answer:
    code = _CODE.search(response.content)
    return (
        response.status_code,
        code.group().decode() if code else "",
        response.headers.get("retry-after"),
    )


async def _burst(url: str, path: str, body: bytes, count: int) -> list[Answer]:
    content_type = "text/xml; charset=utf-8" if path.startswith("/soap/") else "application/xml"
    limits = httpx.Limits(max_connections=count)
    async with httpx.AsyncClient(timeout=120, limits=limits) as client:

        async def one() -> Answer:
            response = await client.post(
                url + path, content=body, headers={"Content-Type": content_type}
            )
            return _answer(response)

        return await asyncio.gather(*(one() for _ in range(count)))


def _peak_mib(hub: HubServer) -> int:
    """The server process's peak resident memory (VmHWM) in MiB."""
    status = Path(f"/proc/{hub.process.pid}/status").read_text(encoding="ascii")
    match = re.search(r"^VmHWM:\s+(\d+) kB", status, flags=re.MULTILINE)
    assert match is not None
    return int(match.group(1)) // 1024


@pytest.mark.slow
def test_bodies_past_the_budget_are_refused_503_and_the_budget_is_given_back(
    tmp_path: Path,
) -> None:
    """A caller known by its address; a 16 MiB budget holds one 2 MB comment body's tree
    (~42 MB estimated, so the whole budget) at a time, and each takes the pipeline about half
    a second: of eight sent at once on REST and eight on SOAP, those still waiting after 2 s
    are refused RK-API017 with Retry-After (REST a 503 problem, SOAP a 503 Server fault).
    Once the burst is over, a body of the same kind is parsed again: the shares were given
    back."""
    body = _comments(250_000)
    env = {"RENKEI_PARSE_MEMORY_MIB": "16"}

    async def both(url: str) -> tuple[list[Answer], list[Answer]]:
        return await asyncio.gather(
            _burst(url, REST_PATH, body, 8), _burst(url, SOAP_PATH, body, 8)
        )

    with hub_server(tmp_path, serve_options=(), env=env) as hub:
        rest_answers, soap_answers = asyncio.run(both(hub.url))
        after = _answer(
            httpx.post(
                hub.url + REST_PATH,
                content=body,
                headers={"Content-Type": "application/xml"},
                timeout=60,
            )
        )
    rest, soap = Counter(rest_answers), Counter(soap_answers)
    busy = (503, "RK-API017", "30")
    assert rest[busy] >= 1, rest
    assert soap[busy] >= 1, soap
    # the ones admitted were parsed: a Body-less Envelope is the pipeline's RK-ENV002
    assert set(rest) <= {busy, (422, "RK-ENV002", None)}, rest
    assert set(soap) <= {busy, (500, "RK-ENV002", None)}, soap
    assert rest[(422, "RK-ENV002", None)] + soap[(500, "RK-ENV002", None)] >= 1
    assert after == (422, "RK-ENV002", None)


@pytest.mark.slow
def test_unauthenticated_burst_of_hostile_bodies_stays_within_the_budget(tmp_path: Path) -> None:
    """Twelve 10 MB bodies of 1.25 million comments each (~210 MB of tree apiece), sent at
    once by a caller with no credentials, on the default budget (256 MiB). Without it the
    hub's peak grew by about 2.5 GB; now by the budget, one tree over it and the bodies
    being read (measured ~600 MB). Every caller is still told RK-AUT001: a body refused for
    want of room is refused by Authenticate first."""
    body = _comments(1_250_000)
    with hub_server(tmp_path, serve_options=(), loopback=False) as hub:
        before = _peak_mib(hub)
        answers = Counter(asyncio.run(_burst(hub.url, REST_PATH, body, 12)))
        grown = _peak_mib(hub) - before
    assert answers == {(401, "RK-AUT001", None): 12}
    assert grown < 1000, f"the hub's peak memory grew by {grown} MiB"


def test_the_open_validate_endpoint_parses_within_the_budget_too(tmp_path: Path) -> None:
    """``POST /api/v1/validate`` takes no credentials and parses up to 10 MiB: sixteen 2 MB
    comment bodies at once on a 16 MiB budget (each tree, ~40 MB, estimated at more than the
    whole budget, so parsed one at a time). The server's peak grew by 82 MiB; with the budget
    out of the way (``RENKEI_PARSE_MEMORY_MIB=100000``) the same burst grew it by 336 MiB,
    the trees built at once. Those still waiting after 2 s are refused 503 RK-API017 with
    Retry-After: how many depends on the machine's speed (none when sixteen parses take
    less than 2 s), so only the outcomes' kinds are asserted."""
    body = _comments(250_000)
    with hub_server(tmp_path, serve_options=(), env={"RENKEI_PARSE_MEMORY_MIB": "16"}) as hub:
        before = _peak_mib(hub)
        answers = Counter(asyncio.run(_burst(hub.url, "/api/v1/validate", body, 16)))
        grown = _peak_mib(hub) - before
    busy, validated = (503, "RK-API017", "30"), (200, "RK-ENV002", None)
    assert answers[validated] >= 1 and set(answers) <= {busy, validated}, answers
    assert grown < 200, f"the hub's peak memory grew by {grown} MiB"


def test_the_budget_admits_within_its_total_and_a_large_tree_alone() -> None:
    """The default suite's sibling of the two HTTP tests above (each ~15 s): the estimate
    counts every node, the budget admits up to its total, a tree estimated over the total
    takes the whole budget (admitted alone, never refused for its size), and a share given
    back twice is given back once."""
    assert tree_cost(b"<r><!-- --><e/></r>") == 19 + 4 * NODE_BYTES
    budget = ParseBudget(1000)
    first = budget.try_reserve(600)
    assert first is not None
    assert budget.try_reserve(500) is None
    first.release()
    first.release()
    assert budget.in_use == 0
    alone = budget.try_reserve(10**9)
    assert alone is not None and budget.in_use == 1000
    assert budget.try_reserve(1) is None
    alone.release()
    assert budget.in_use == 0
