"""The outbound journal of a file-linkage destination (Aggregator over time).

The ``file`` transport appends each delivery to a journal per (service, tenant) in the
folder's ``.spool/`` and fsyncs it before answering "delivered"; the folder watcher closes a
journal into one batch file once it is ``interval`` old: the file is written under a
temporary name, renamed, its ``.ids`` (the messageIds in record order) written, and the end
file last. Appends and closing take an exclusive ``flock`` on the journal's lock file, so
several worker processes can share a folder. A crash mid-append leaves an incomplete tail
entry, which was never acknowledged and is ignored (the delivery is retried); a crash after
the batch file is complete but before the journal is removed is recognised by the batch name
and never writes the batch twice.
"""

from __future__ import annotations

import fcntl
import os
import time
import uuid
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path

from bus.folders.paths import fsync_dir, write_atomically
from bus.wareki import JST

SPOOL = ".spool"
_MAGIC = b"RKJ1"
IDS_SUFFIX = ".ids"


@dataclass(frozen=True, slots=True)
class SpooledRecord:
    message_id: str
    body: bytes


@dataclass(frozen=True, slots=True)
class Batch:
    service: str
    tenant: str
    name: str  # the batch file's name without its extension
    created: datetime
    records: list[SpooledRecord]


Render = Callable[[Batch], tuple[bytes, str]]
"""A batch → (the file's bytes, its extension such as ``.csv``)."""


def _journal(folder: Path, service: str, tenant: str) -> Path:
    return folder / SPOOL / f"{service}_{tenant}.journal"


@contextmanager
def _locked(journal: Path) -> Iterator[int]:
    """The journal's exclusive lock; yields the lock file's descriptor, which holds the
    journal's length after the last complete append (a hint, see :func:`_complete`)."""
    journal.parent.mkdir(parents=True, exist_ok=True)
    descriptor = os.open(f"{journal}.lock", os.O_RDWR | os.O_CREAT, 0o644)
    try:
        fcntl.flock(descriptor, fcntl.LOCK_EX)
        try:
            yield descriptor
        finally:
            fcntl.flock(descriptor, fcntl.LOCK_UN)
    finally:
        os.close(descriptor)


def _remember(lock: int, length: int) -> None:
    os.ftruncate(lock, 0)
    if length:
        os.pwrite(lock, b"%d" % length, 0)


def _complete(journal: Path, lock: int) -> int:
    """The journal's length without a torn tail, which is cut off first: an append killed
    half-way (or failed on a full disk) was never acknowledged, and appending after it would
    hide every later, acknowledged delivery from the reader. The lock file remembers the
    length after the last complete append, so the journal is only scanned after a failure."""
    try:
        size = journal.stat().st_size
    except FileNotFoundError:
        return 0
    remembered = os.pread(lock, 20, 0)
    if remembered.isdigit() and int(remembered) == size:
        return size
    complete = _parse(journal.read_bytes())[2]
    if complete < size:
        with journal.open("r+b") as handle:
            handle.truncate(complete)
            os.fsync(handle.fileno())
    return complete


def batch_name(service: str, tenant: str, created: int) -> str:
    """``<Service>_<tenant>_<YYYYMMDDhhmmss>_<id>``: the time is Japan time (JST), as staff
    read it and as the batch's header record carries it; the id keeps names unique."""
    stamp = datetime.fromtimestamp(created, JST).strftime("%Y%m%d%H%M%S")
    return f"{service}_{tenant}_{stamp}_{uuid.uuid4().hex[:8]}"


def append(folder: Path, service: str, tenant: str, message_id: str, body: bytes) -> None:
    """Add one delivery to the open batch of (service, tenant); durable on return."""
    journal = _journal(folder, service, tenant)
    with _locked(journal) as lock:
        fresh = _complete(journal, lock) == 0
        with journal.open("ab") as handle:
            if fresh:
                created = int(time.time())
                name = batch_name(service, tenant, created)
                handle.write(b"%s %s %d\n" % (_MAGIC, name.encode(), created))
            handle.write(b"%s %d\n" % (message_id.encode("ascii"), len(body)) + body + b"\n")
            handle.flush()
            os.fsync(handle.fileno())
            length = handle.tell()
        if fresh:
            fsync_dir(journal.parent)
        _remember(lock, length)


def _parse(data: bytes) -> tuple[list[bytes] | None, list[SpooledRecord], int]:
    """The journal's head (None when torn or not a journal), its complete records (each
    messageId once) and the length they end at."""
    head, newline, rest = data.partition(b"\n")
    parts = head.split(b" ")
    if not newline or len(parts) != 3 or parts[0] != _MAGIC or not parts[2].isdigit():
        return None, [], 0
    records: list[SpooledRecord] = []
    seen: set[str] = set()
    offset = 0
    while offset < len(rest):
        line_end = rest.find(b"\n", offset)
        if line_end < 0:
            break
        fields = rest[offset:line_end].split(b" ")
        if len(fields) != 2 or not fields[1].isdigit():
            break
        start, size = line_end + 1, int(fields[1])
        if start + size + 1 > len(rest) or rest[start + size : start + size + 1] != b"\n":
            break  # an incomplete tail: never acknowledged
        message_id = fields[0].decode("ascii", "replace")
        if message_id not in seen:  # a redelivery after a crash: once per batch
            seen.add(message_id)
            records.append(SpooledRecord(message_id, rest[start : start + size]))
        offset = start + size + 1
    return parts, records, len(head) + 1 + offset


def _read(journal: Path, service: str, tenant: str) -> Batch | None:
    parts, records, _ = _parse(journal.read_bytes())
    if parts is None:
        return None
    created = datetime.fromtimestamp(int(parts[2]), UTC)
    return Batch(service, tenant, parts[1].decode(), created, records)


def _journals(folder: Path) -> Iterator[tuple[Path, str, str]]:
    spool = folder / SPOOL
    if not spool.is_dir():
        return
    for journal in sorted(spool.glob("*.journal")):
        service, _, tenant = journal.stem.rpartition("_")
        yield journal, service, tenant


def close_due(
    folder: Path,
    interval: timedelta,
    render: Render,
    end_suffix: str,
    *,
    now: datetime | None = None,
) -> list[Path]:
    """Write every journal at least ``interval`` old as a batch file; the files written."""
    moment = now or datetime.now(UTC)
    written: list[Path] = []
    for journal, service, tenant in _journals(folder):
        with _locked(journal) as lock:
            if not journal.exists():
                continue
            batch = _read(journal, service, tenant)
            if batch is not None and moment - batch.created < interval:
                continue
            if batch is not None and batch.records:
                written.append(_write(folder, batch, render, end_suffix))
            journal.unlink()
            fsync_dir(journal.parent)
            _remember(lock, 0)
    return written


def _write(folder: Path, batch: Batch, render: Render, end_suffix: str) -> Path:
    data, extension = render(batch)
    target = folder / f"{batch.name}{extension}"
    end = Path(f"{target}{end_suffix}")
    if end.exists():
        return target  # written before a crash that left the journal behind
    write_atomically(target, data)
    ids = "".join(f"{record.message_id}\n" for record in batch.records)
    write_atomically(Path(f"{target}{IDS_SUFFIX}"), ids.encode("ascii"))
    write_atomically(end, b"")
    fsync_dir(folder)
    return target
