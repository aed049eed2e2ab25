"""The import of one 登記済通知 file (`renkei import notices`), start to finish.

Lines are read from the batch's cursor, parsed through the mapping, and every ``CHUNK``
lines' good records go through ``Hub.ingest_many`` (adapter ``batch``) as 登記済通知 messages:
each runs every pipeline stage and the chunk is stored in one transaction, in file order; the
hub routes them to 固定資産税. The chunks are worked here or, with ``jobs`` > 1, in worker
processes (:mod:`bus.imports.parallel`). Then each chunk's list rows, errors, counts and
cursor are committed to the batch's work file, in file order. The import returns once its
records are stored, without waiting for deliveries.
"""

from __future__ import annotations

import hashlib
import os
import sqlite3
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path

from bus.config.index import ConfigIndex
from bus.config.models import Direction
from bus.errors import make_finding
from bus.hub import Hub
from bus.identity import service_refused
from bus.imports.chunk_work import ChunkResult, ChunkWork, Span, Stored, StoreUnwritable
from bus.imports.encoding import csv_fields, decode_line, detect_encoding
from bus.imports.envelope import SENDER, SERVICE
from bus.imports.interrupts import CtrlC
from bus.imports.layout import ImportRefused, load_section
from bus.imports.lines import RawLine, split_lines
from bus.imports.matching import OwnerMatcher
from bus.imports.outputs import (
    ERROR_COLUMNS,
    error_cells,
    prepare_out,
    remove_created,
    remove_stale_parts,
    unwritable,
    write_csv,
    write_list,
)
from bus.imports.parallel import ChunkPool, WorkerSpec
from bus.imports.records import NoticeParser, header_problem
from bus.imports.residents import ResidentIndex
from bus.imports.worklist import DONE, Worklist
from bus.observability.metrics import observe_import_chunk
from bus.store.storage_full import is_storage_full
from bus.store.write_health import describe

CHUNK = 1000


@dataclass(slots=True)
class Summary:
    new: int
    duplicate: int
    errors: int
    encoding: str
    outputs: list[Path] = field(default_factory=list)


Progress = Callable[[int, int, int], None]  # (records so far, errors so far, bytes read)


@dataclass(frozen=True, slots=True)
class ImportOptions:
    path: Path
    tenant: str
    layout: str | None = None
    out_dir: Path | None = None
    out_encoding: str = "utf-8"
    sheet_rows: int = 1_048_576
    jobs: int = 1  # worker processes (bus.imports.parallel); 1: in this process


def file_hash(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as handle:
        while block := handle.read(1 << 20):
            digest.update(block)
    return digest.hexdigest()


def chunks(lines: Iterator[RawLine], size: int) -> Iterator[list[RawLine]]:
    chunk: list[RawLine] = []
    for line in lines:
        chunk.append(line)
        if len(chunk) >= size:
            yield chunk
            chunk = []
    if chunk:
        yield chunk


def until_pressed(parts: Iterator[list[RawLine]], ctrl_c: CtrlC) -> Iterator[list[RawLine]]:
    """The chunks until Ctrl-C: none is read after it (those in hand are still committed)."""
    while not ctrl_c.pressed:
        part = next(parts, None)
        if part is None:
            return
        yield part


def _town(index: ConfigIndex, code: str) -> str:
    """The tenant's name, once the hub is known to take its notices from the 法務局 system:
    a tenant unknown or disabled, or not served by that system, is refused before the
    import starts (RK-AUT005, RK-AUT003, RK-AUT004), not record by record."""
    tenant = index.tenant(code)
    path = "/import/tenant"
    if tenant is None or not tenant.enabled:
        raise ImportRefused(make_finding("RK-AUT005", path=path, actual=code))
    if not index.serves(SENDER, code):
        raise ImportRefused(make_finding("RK-AUT003", path=path, actual=SENDER, expected=code))
    if not index.allowed(SENDER, Direction.SEND, SERVICE, code):
        raise ImportRefused(service_refused(path, SENDER, Direction.SEND, SERVICE, code))
    return tenant.name


def _check_header(path: Path, encoding: str, columns: list[str]) -> None:
    """Refuse (RK-IMP012) a file whose header row names the layout's columns in another
    order or with others, before anything is imported."""
    with path.open("rb") as stream:
        first = next((line for line in split_lines(stream) if line.data.strip()), None)
    if first is None:
        return
    text = decode_line(first.data, encoding)
    fields = csv_fields(text) if isinstance(text, str) else None
    problem = header_problem(fields, columns) if fields else None
    if problem is not None:
        raise ImportRefused(make_finding("RK-IMP012", path="/line[1]", actual=problem))


def output_stem(path: Path, tenant: str, digest: str) -> str:
    """The outputs' names begin with the file's name, the tenant and the file's short hash
    (the batch's): same-named files from two folders keep their own outputs in one ``--out``,
    and a file imported again replaces its own."""
    return f"{path.stem}_{tenant}_{digest[:8]}"


@contextmanager
def work_file_room(work: Path) -> Iterator[None]:
    """The batch's work file written in a full data directory: RK-IMP015
    (:class:`StoreUnwritable`, as the store's own RK-STO007 refusal of a chunk), not the
    driver's traceback. Its transaction was rolled back, so the cursor stays at the last
    committed chunk and the same command resumes there once there is room."""
    try:
        yield
    except sqlite3.OperationalError as error:
        if not is_storage_full(error):
            raise
        raise StoreUnwritable(f"{work}: {describe(error)}") from None


class NoticeImport:
    """One run over one file; see :func:`run_import`. Constructing it is where an import is
    refused (:class:`ImportRefused`: tenant, layout, header, ``--out``, a run of the same
    batch in progress), before anything is stored; :meth:`close` it in any case."""

    def __init__(self, hub: Hub, options: ImportOptions, index: ResidentIndex | None) -> None:
        town = _town(hub.config.current().index, options.tenant)
        self.hub, self.options, self.index, self.town = hub, options, index, town
        self.section = load_section(options.layout)
        columns: list[str] | None = getattr(self.section.format, "columns", None)
        with options.path.open("rb") as stream:
            detected = detect_encoding(stream)
        if columns is None:  # fixed width: the layout names its encoding
            self.encoding = str(getattr(self.section.format, "encoding", "cp932"))
        else:
            self.encoding = detected.encoding
            _check_header(options.path, self.encoding, columns)
        digest = self.digest = file_hash(options.path)
        work = hub.settings.data_dir / "imports" / f"{digest[:32]}-{options.tenant}.sqlite"
        # --out last (only RK-IMP013 after it): a refused import leaves no folder behind
        self.created = prepare_out(options.out_dir) if options.out_dir is not None else []
        try:
            with work_file_room(work):
                self.worklist = Worklist(
                    work, digest, options.tenant, self.encoding, file_name=options.path.name
                )
        except BaseException:
            remove_created(self.created)
            raise
        if self.worklist.state.status == DONE:
            self.worklist.restart()
        # A stopped run may have stored records past its cursor (a parallel run: several
        # chunks). They come back as duplicates stored since this pass began (the batch's
        # first run: a run stopped twice leaves tails of both) with no list row committed:
        # those are this batch's own (新規, once).
        state = self.worklist.state
        since = state.pass_started_at or state.last_commit_at
        self.own_window: tuple[datetime, datetime] | None = None
        if self.worklist.resumed and since is not None:
            self.own_window = (since, datetime.now(UTC))
        self.own_keys: set[str] = set()

    def run(self, progress: Progress | None = None, ctrl_c: CtrlC | None = None) -> Summary:
        """The import from the batch's cursor to its outputs. A full data directory while
        the work file (or the store) is written stops it with RK-IMP015
        (:class:`StoreUnwritable`): nothing past the last committed chunk counts, so the
        same command resumes once there is room. With ``ctrl_c`` listening, a Ctrl-C before
        the file is read stops it (``KeyboardInterrupt``) once the chunks in hand are
        committed; one after that lets the outputs and the batch finish (the caller says so)."""
        with work_file_room(self.worklist.path):
            return self._run(progress, ctrl_c)

    def _run(self, progress: Progress | None, ctrl_c: CtrlC | None) -> Summary:
        state = self.worklist.state
        at_head = state.cursor_offset == 0
        with self.options.path.open("rb") as stream:
            lines = split_lines(stream, start=state.cursor_offset, first_number=state.cursor_line)
            parts = chunks(lines, CHUNK)
            if ctrl_c is not None:
                parts = until_pressed(parts, ctrl_c)
            for span, result in self._results(parts, at_head):
                new = self._new(result.stored)
                duplicate, errors = len(result.stored) - new, len(result.errors)
                state.new += new
                state.duplicate += duplicate
                state.errors += errors
                self.worklist.commit(result.rows, result.errors, span.end, span.next_line)
                observe_import_chunk(
                    self.options.tenant,
                    new=new,
                    duplicate=duplicate,
                    errors=errors,
                    nbytes=span.end - span.first_offset,
                )
                if progress:
                    progress(state.new + state.duplicate + state.errors, state.errors, span.end)
        if ctrl_c is not None and ctrl_c.pressed:  # the chunks in hand are committed
            raise KeyboardInterrupt
        # finished once the outputs are written: a run killed while writing them resumes
        # at the end of the file and writes them again (not a fresh pass, all 重複)
        outputs = self._write_outputs() if self.options.out_dir else []
        if ctrl_c is not None:
            ctrl_c.finishing = True  # from here a Ctrl-C has nothing left to stop
        self.worklist.finish()
        return Summary(state.new, state.duplicate, state.errors, self.encoding, outputs)

    def _results(
        self, parts: Iterator[list[RawLine]], at_head: bool
    ) -> Iterator[tuple[Span, ChunkResult]]:
        """Each chunk's result in file order: from worker processes, or worked here."""
        if self.options.jobs > 1:
            spec = WorkerSpec(
                self.hub.settings, self.options.layout, self.encoding, self.options.tenant,
                self.town, self._readable_index(), os.getpid(),
            )  # fmt: skip
            pool = ChunkPool(spec, self.options.jobs)
            try:
                yield from pool.results(parts, at_head)
            finally:
                pool.close()
            return
        parser = NoticeParser(self.section, self.encoding, self.options.tenant, self.town)
        matcher = OwnerMatcher(self.index, self.options.tenant, self.town)
        work = ChunkWork(self.hub, parser, matcher, self.options.tenant)
        for chunk in parts:
            yield Span.of(chunk), work.process(chunk, at_head)
            at_head = False

    def _readable_index(self) -> Path | None:
        """The index file for the workers: none when it is unreadable (owners 未照合)."""
        index = self.index
        return index.path if index is not None and index.unreadable is None else None

    def _new(self, stored: list[Stored]) -> int:
        """How many of a chunk's records are 新規: stored now, or by a stopped run of this
        pass past its cursor (once per key)."""
        new = sum(not s.duplicate for s in stored)
        window = self.own_window
        if window is None or new == len(stored):
            return new
        since, until = window
        keys = {s.key for s in stored if s.duplicate and since <= s.stored_at < until}
        own = keys - self.worklist.committed_keys(keys) - self.own_keys if keys else keys
        self.own_keys |= own  # few: what the stopped runs left
        return new + len(own)

    def _write_outputs(self) -> list[Path]:
        out = self.options.out_dir
        assert out is not None
        stem = output_stem(self.options.path, self.options.tenant, self.digest)
        xlsx = out / f"{stem}_評価変更リスト.xlsx"
        listing = out / f"{stem}_評価変更リスト.csv"
        report = out / f"{stem}_エラー.csv"
        encoding = self.options.out_encoding
        try:
            out.mkdir(parents=True, exist_ok=True)
            remove_stale_parts((xlsx, listing, report))
            rows = self.worklist.sorted_rows()
            write_list(xlsx, listing, rows, encoding, self.options.sheet_rows)
            errors = (error_cells(e) for e in self.worklist.error_rows())
            write_csv(report, ERROR_COLUMNS, errors, encoding)
        except OSError as error:  # a folder of an output's name, a disk full …
            raise unwritable(error) from None
        return [xlsx, listing, report]

    def close(self) -> None:
        self.worklist.close()
        remove_created(self.created)  # when nothing was written into them


def run_import(
    hub: Hub,
    options: ImportOptions,
    index: ResidentIndex | None = None,
    progress: Progress | None = None,
) -> Summary:
    job = NoticeImport(hub, options, index)
    try:
        return job.run(progress)
    finally:
        job.close()
