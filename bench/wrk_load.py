"""wrk as the load generator of bench/soap_throughput.py.

Every request carries a new messageId (the hub would answer a repeated one from its
Idempotent Receiver, which is cheaper than a real ingest): the bodies are split around their
messageId and a Lua script joins each with an id unique per run, wrk invocation, thread and
request — the warm-up and the measured run use the same script, so the invocation (its start
second) is part of the id.
"""

from __future__ import annotations

import json
import re
import shutil
import subprocess
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

_MESSAGE_ID = re.compile(rb"(<env:messageId>)[^<]+(</env:messageId>)")

_SCRIPT = r"""
local parts = dofile("%(parts)s")
local counter = 0
local thread_id = 0
local threads = {}
local headers = {["Content-Type"] = "text/xml; charset=utf-8", ["SOAPAction"] = '""'}

local invocation = os.time() %% 4096  -- this wrk run's start second (the main state's)
local started = 0

function setup(thread)
  table.insert(threads, thread)
  thread:set("tid", #threads)
  thread:set("invocation_id", invocation)
end

function init(args)
  thread_id = tonumber(tid) or 0
  started = tonumber(invocation_id) or 0
end

function request()
  counter = counter + 1
  local p = parts[(counter + thread_id * 7919) %% #parts + 1]
  local id = ""
  if %(unique)s then
    id = string.format("%(run)s-%%04x-4%%03x-8000-%%012x", thread_id, started, counter)
  end
  return wrk.format("POST", nil, headers, p[1] .. id .. p[2])
end

%(delay)s
function done(summary, latency, requests)
  io.write(string.format(
    '{"requests":%%d,"duration_us":%%d,"status_errors":%%d,"connect_errors":%%d,' ..
    '"read_errors":%%d,"write_errors":%%d,"timeouts":%%d,' ..
    '"p50_us":%%d,"p90_us":%%d,"p99_us":%%d}\n',
    summary.requests, summary.duration, summary.errors.status, summary.errors.connect,
    summary.errors.read, summary.errors.write, summary.errors.timeout,
    latency:percentile(50), latency:percentile(90), latency:percentile(99)))
end
"""


@dataclass(frozen=True)
class WrkResult:
    requests: int
    seconds: float
    status_errors: int
    socket_errors: int
    p50_ms: float
    p90_ms: float
    p99_ms: float

    @property
    def acknowledged(self) -> int:
        """Requests answered 2xx (wrk counts other statuses and socket errors apart)."""
        return self.requests - self.status_errors - self.socket_errors

    @property
    def per_second(self) -> float:
        return self.acknowledged / self.seconds


def available() -> str | None:
    return None if shutil.which("wrk") else "wrk is not installed (Debian: apt-get install wrk)"


def write_script(
    directory: Path,
    bodies: Sequence[bytes],
    run: int,
    *,
    unique_ids: bool = True,
    delay_ms: float | None = None,
) -> Path:
    """The Lua script and its data file for ``bodies``; ``run`` (< 2**32) keeps the ids of
    different runs against the same hub apart. ``unique_ids=False`` sends the bodies as they
    are (a vendor's own request format has no platform messageId). ``delay_ms`` paces each
    connection (wrk waits that long before each request): ``connections * 1000 / delay_ms``
    requests per second at most, for a soak at a fixed load."""
    entries = []
    for body in bodies:
        found = _MESSAGE_ID.search(body)
        if not unique_ids or found is None:
            assert not unique_ids, "a body without <env:messageId>"
            entries.append((body, b""))
            continue
        entries.append((body[: found.end(1)], body[found.start(2) :]))
    parts = directory / f"parts-{run}.lua"
    with parts.open("wb") as handle:
        handle.write(b"return {\n")
        for before, after in entries:
            handle.write(b"{[==[" + before + b"]==], [==[" + after + b"]==]},\n")
        handle.write(b"}\n")
    script = directory / f"load-{run}.lua"
    script.write_text(
        _SCRIPT
        % {
            "parts": parts,
            "run": f"{run:08x}",
            "unique": str(unique_ids).lower(),
            "delay": "" if delay_ms is None else f"function delay() return {delay_ms:.0f} end\n",
        }
    )
    return script


def run_wrk(
    url: str, script: Path, *, seconds: int, connections: int, threads: int = 2
) -> tuple[WrkResult, int]:
    """Run wrk; returns its result and its pid. (wrk wants a connection per thread at least.)"""
    command = ["wrk", f"-t{min(threads, connections)}", f"-c{connections}", f"-d{seconds}s"]
    command += ["--timeout", "10s", "-s", str(script), url]
    process = subprocess.Popen(command, stdout=subprocess.PIPE, text=True)
    out, _ = process.communicate(timeout=seconds + 60)
    line = next(line for line in reversed(out.splitlines()) if line.startswith("{"))
    data = json.loads(line)
    socket_errors = sum(data[k] for k in ("connect_errors", "read_errors", "write_errors"))
    result = WrkResult(
        requests=data["requests"],
        seconds=data["duration_us"] / 1e6,
        status_errors=data["status_errors"],
        socket_errors=socket_errors + data["timeouts"],
        p50_ms=data["p50_us"] / 1000,
        p90_ms=data["p90_us"] / 1000,
        p99_ms=data["p99_us"] / 1000,
    )
    return result, process.pid
