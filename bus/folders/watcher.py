"""The folder watcher: takes complete files from each system's hot folders and closes the
outbound batches that are due. It runs inside ``renkei serve`` (a thread, like the dispatch
workers) or alone as ``renkei folders run``.

A file is taken only when complete: its end file (``NAME.end``) is there, or (``trigger:
stable``) its size and modification time have not changed for ``stable_for``. Taking it is a
rename into ``work/`` (so two watchers never both take it); a file found in ``work/`` at the
next poll — a watcher was killed while processing it — is processed again from the start,
which stores nothing twice (its records' messageIds are derived from the file). Finished files
go to ``done/`` (with a report when records were refused), refused files to ``error/`` with
their report; end files follow their data file.
"""

from __future__ import annotations

import fcntl
import hashlib
import json
import logging
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import timedelta
from pathlib import Path

from bus.config.models import InboundFolder, OutboundFolder, System
from bus.errors import make_finding
from bus.folders.inbound import FileReport, InboundFile
from bus.folders.outbound import renderer
from bus.folders.paths import (
    DONE,
    ERROR,
    REPORT_SUFFIX,
    WORK,
    free_name,
    move_unless_there,
    resolve_folder,
    write_atomically,
)
from bus.folders.records import FileRefused
from bus.folders.spool import close_due
from bus.hub import Hub

log = logging.getLogger(__name__)
DEFAULT_POLL = timedelta(seconds=2)


@dataclass(slots=True)
class _Seen:
    size: int
    mtime_ns: int
    since: float


@contextmanager
def _exclusive(path: Path) -> Iterator[bool]:
    """A non-blocking lock on ``path`` (released when the process dies); yields whether it
    was obtained."""
    with path.open("a") as handle:
        try:
            fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            yield False
            return
        try:
            yield True
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


@dataclass
class FolderWatcher:
    hub: Hub
    lanes: int = 4
    _seen: dict[Path, _Seen] = field(default_factory=dict)
    _failing: dict[str, str] = field(default_factory=dict)  # folder → why it cannot be used
    _stop: threading.Event = field(default_factory=threading.Event)
    _thread: threading.Thread | None = None

    # --- one pass ------------------------------------------------------------------------

    def poll_once(self) -> list[Path]:
        """Process every complete inbound file and close every due batch; returns where the
        processed files went."""
        moved: list[Path] = []
        for system in self._systems():
            linkage = system.file_linkage
            assert linkage is not None
            for folder in linkage.inbound:
                with self._guarded(folder.path):
                    moved.extend(self._inbound(system, folder))
            if linkage.outbound is not None:
                with self._guarded(linkage.outbound.path):
                    self._outbound(system, linkage.outbound)
        return moved

    @contextmanager
    def _guarded(self, configured: str) -> Iterator[None]:
        """One folder that cannot be used (a share not mounted, no permission, a full disk)
        is logged (RK-FIL006, once until it recovers) and retried at the next poll; the
        other folders are served meanwhile."""
        try:
            yield
        except OSError as error:
            reason = error.strerror or type(error).__name__
            if self._failing.get(configured) != reason:
                self._failing[configured] = reason
                finding = make_finding("RK-FIL006", path="/", actual=configured, expected=reason)
                log.error("%s %s", finding.code, finding.message_en)
        except Exception as error:
            reason = type(error).__name__
            if self._failing.get(configured) != reason:
                self._failing[configured] = reason
                log.exception("folder %s: pass failed; retrying at the next poll", configured)
        else:
            if self._failing.pop(configured, None) is not None:
                log.info("folder %s is served again", configured)

    def _outbound(self, system: System, folder: OutboundFolder) -> None:
        close_due(
            self._path(folder.path),
            folder.interval,
            renderer(system, folder),
            folder.end_suffix,
        )

    def _systems(self) -> list[System]:
        config = self.hub.config.current().index.config
        return [system for system in config.systems if system.file_linkage is not None]

    def _path(self, configured: str) -> Path:
        path = resolve_folder(configured, self.hub.settings.data_dir)
        path.mkdir(parents=True, exist_ok=True)
        return path

    def _inbound(self, system: System, folder: InboundFolder) -> list[Path]:
        base = self._path(folder.path)
        for sub in (WORK, DONE, ERROR):
            (base / sub).mkdir(exist_ok=True)
        moved = [self._finish(system, folder, base, name) for name in self._resumable(base, folder)]
        for name in self._ready(base, folder):
            if self._take(base, name, folder.end_suffix):
                moved.append(self._finish(system, folder, base, name))
        return [path for path in moved if path is not None]

    # --- which files ---------------------------------------------------------------------

    @staticmethod
    def _data_files(directory: Path, folder: InboundFolder) -> list[Path]:
        return sorted(
            path
            for path in directory.iterdir()
            if path.is_file()
            and not path.name.startswith(".")
            and not path.name.endswith(folder.end_suffix)
            and not path.name.endswith(REPORT_SUFFIX)
        )

    def _resumable(self, base: Path, folder: InboundFolder) -> list[str]:
        return [path.name for path in self._data_files(base / WORK, folder)]

    def _ready(self, base: Path, folder: InboundFolder) -> list[str]:
        ready = []
        now = time.monotonic()
        for path in self._data_files(base, folder):
            if folder.trigger == "end_file":
                if Path(f"{path}{folder.end_suffix}").exists():
                    ready.append(path.name)
                continue
            stat = path.stat()
            seen = self._seen.get(path)
            if seen is None or (seen.size, seen.mtime_ns) != (stat.st_size, stat.st_mtime_ns):
                self._seen[path] = _Seen(stat.st_size, stat.st_mtime_ns, now)
            elif now - seen.since >= folder.stable_for.total_seconds():
                ready.append(path.name)
        return ready

    def _take(self, base: Path, name: str, end_suffix: str) -> bool:
        """Claim a file by moving it into work/ (a watcher that loses the race skips). A file
        of that name still in work/ (another watcher is processing an earlier delivery, or it
        is to be resumed) is never replaced: the new one waits in the folder until it is gone."""
        if not move_unless_there(base / name, base / WORK / name):
            return False
        self._seen.pop(base / name, None)
        end = base / f"{name}{end_suffix}"
        if end.exists():
            end.rename(base / WORK / end.name)
        return True

    # --- processing ----------------------------------------------------------------------

    def _finish(self, system: System, folder: InboundFolder, base: Path, name: str) -> Path | None:
        work = base / WORK / name
        with _exclusive(base / WORK / f".{name}.lock") as mine:
            if not mine or not work.exists():
                return None  # another watcher is processing it
            processor = InboundFile(self.hub, system, folder, self.lanes)
            try:
                data = work.read_bytes()
                report = processor.process(name, data)
                destination = DONE
            except FileRefused as refusal:
                digest = hashlib.sha256(data).hexdigest()
                report = FileReport(name, system.id, folder.service, folder.tenant, digest)
                report.refused = refusal.finding.as_dict()
                destination = ERROR
            except Exception:
                log.exception("file %s of %s stays in work/ and is retried", name, system.id)
                return None
            target = free_name(base / destination, name)
            work.rename(target)
            write_atomically(
                Path(f"{target}{REPORT_SUFFIX}"),
                json.dumps(report.as_dict(), ensure_ascii=False, indent=1).encode("utf-8"),
            )
            end = base / WORK / f"{name}{folder.end_suffix}"
            if end.exists():
                end.rename(Path(f"{target}{folder.end_suffix}"))
        (base / WORK / f".{name}.lock").unlink(missing_ok=True)
        log.info(
            "file %s of %s: %d stored, %d duplicates, %d refused → %s",
            name,
            system.id,
            report.stored,
            report.duplicates,
            report.rejected,
            destination,
        )
        return target

    # --- running -------------------------------------------------------------------------

    def interval(self) -> float:
        """The shortest configured poll interval (default 2 s)."""
        polls = [
            folder.poll_interval
            for system in self._systems()
            for folder in (system.file_linkage.inbound if system.file_linkage else ())
        ]
        return min(polls or [DEFAULT_POLL]).total_seconds()

    def run(self) -> None:
        while not self._stop.is_set():
            try:
                self.poll_once()
            except Exception:
                log.exception("folder watcher pass failed; retrying")
            self._stop.wait(self.interval())

    def start(self) -> None:
        self._stop.clear()
        self._thread = threading.Thread(target=self.run, name="folder-watcher", daemon=True)
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=60)
            self._thread = None
