"""The folder watcher: takes complete files from each system's hot folders and closes the
outbound batches that are due. It runs inside ``renkei serve`` (a thread, like the dispatch
workers) or alone as ``renkei folders run``.

A file is taken only when complete: its end file (``NAME.end``) is there, or (``trigger:
stable``) its size and modification time have not changed for ``stable_for`` — measured on
the monotonic clock since the watcher first saw them so, never by comparing the file's
modification time with the wall clock, which a VM resumed after a migration or NTP steps.
Taking it is a rename into ``work/`` (so two watchers never both take it); a file found in
``work/`` at the next poll — a watcher was killed while processing it — is processed again
from the start, which stores nothing twice (its records' messageIds are derived from the
file). Finished files go to ``done/``, refused files to ``error/``, each with its report: the
report is written first (under a temporary name, renamed), then the end file and last the
data file are moved, so a kill leaves the file in ``work/`` — and the next pass, finding the
report that matches its SHA-256, completes the move without processing it again.

A file that cannot be read is retried with a growing interval while the error may pass (an
I/O error, a share that went away: RK-FIL007, logged once) and moved to ``error/`` with its
report when it will not (no permission, not a readable file) or has failed for
``read_give_up`` (RK-FIL008). Under ``trigger: stable`` a file that is empty, or does not end
as a complete file does (no trailer record yet, no XML root end tag), is taken only once it
has been unchanged for ``UNFINISHED_AGE`` (the same monotonic measure): vendors create the
file and write it later, or pause mid-file.

A pass that fails because the store cannot be reached (the database down, a lock not granted
in time: :func:`bus.store.write_health.is_store_unavailable`) is logged once (RK-OPS001,
or RK-OPS013 when another process holds the SQLite store's lock; no traceback) until a pass
succeeds again; the file stays in ``work/`` and is processed again
from the start once the store answers. No failure stops the watcher's thread.
"""

from __future__ import annotations

import errno
import fcntl
import hashlib
import json
import logging
import os
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import timedelta
from pathlib import Path

from bus.config.models import InboundFolder, OutboundFolder, System
from bus.errors import make_finding
from bus.folders.complete import looks_complete, write_locked
from bus.folders.inbound import FileReport, InboundFile, inbound_section
from bus.folders.outbound import renderer
from bus.folders.paths import (
    DONE,
    ERROR,
    REPORT_SUFFIX,
    WORK,
    free_name,
    fsync_dir,
    move_unless_there,
    readable_name,
    resolve_folder,
    write_atomically,
)
from bus.folders.records import FileRefused
from bus.folders.spool import close_due
from bus.hub import Hub
from bus.store.db import unreachable_finding
from bus.store.write_health import describe, is_store_unavailable

log = logging.getLogger(__name__)
DEFAULT_POLL = timedelta(seconds=2)
# trigger: stable takes an empty or unfinished-looking file (no trailer yet) only once it has
# been unchanged this long (or stable_for, when longer): a vendor's tool often creates the
# file and writes it later, or pauses mid-file
UNFINISHED_AGE = timedelta(minutes=10)
# read errors that retrying does not cure: the file goes to error/ at once (RK-FIL008)
PERMANENT = frozenset(
    {
        errno.EACCES,
        errno.EPERM,
        errno.EINVAL,
        errno.EISDIR,
        errno.ENOTDIR,
        errno.ELOOP,
        errno.ENAMETOOLONG,
        errno.EFBIG,
        errno.EOVERFLOW,
        errno.ENXIO,
        errno.ENODEV,
    }
)


# names that are never data files: being written (NAME.tmp, then renamed; WinSCP's
# .filepart), an open Office document's owner file (~$NAME), a Windows or macOS folder's own
# files; dot-files (.DS_Store, the watcher's own) are skipped too. The hub never touches them.
NOT_DATA_PREFIXES = (".", "~")
NOT_DATA_SUFFIXES = (".tmp", ".temp", ".part", ".partial", ".filepart", ".crdownload")
NOT_DATA_NAMES = frozenset({"thumbs.db", "ehthumbs.db", "desktop.ini"})


def is_data_name(name: str) -> bool:
    """Whether a file of this name in a hot folder may be a delivery (case ignored)."""
    folded = name.casefold()
    return not (
        folded.startswith(NOT_DATA_PREFIXES)
        or folded.endswith(NOT_DATA_SUFFIXES)
        or folded in NOT_DATA_NAMES
    )


@dataclass(slots=True)
class _Seen:
    """A watched file's size and modification time, and since when (``time.monotonic()``)
    the watcher has seen them unchanged."""

    size: int
    mtime_ns: int
    since: float


@dataclass(slots=True)
class _Unreadable:
    """A file in work/ whose read failed: why, since when, and when to try again."""

    reason: str
    since: float
    attempts: int
    retry_at: float


def _reason(error: OSError) -> str:
    code = errno.errorcode.get(error.errno or 0, type(error).__name__)
    return f"{code}: {error.strerror}" if error.strerror else code


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
    # a file that cannot be read for now: first retried after read_retry, then at doubling
    # intervals up to read_retry_max; moved to error/ once it has failed for read_give_up
    read_retry: timedelta = timedelta(seconds=30)
    read_retry_max: timedelta = timedelta(minutes=10)
    read_give_up: timedelta = timedelta(hours=1)
    unfinished_age: timedelta = UNFINISHED_AGE  # trigger: stable, an unfinished-looking file
    _seen: dict[Path, _Seen] = field(default_factory=dict)
    _failing: dict[str, str] = field(default_factory=dict)  # folder → why it cannot be used
    _unreadable: dict[Path, _Unreadable] = field(default_factory=dict)  # work/ file → state
    _broken: dict[Path, str] = field(default_factory=dict)  # work/ file → its failure, logged
    _store_down: bool = False  # the store could not be reached: logged once, until a pass works
    _store_failed: bool = False  # ... during the pass under way
    _store_code: str = "RK-OPS001"  # ... and how it was told (RK-OPS013: locked elsewhere)
    _pass_failing: str | None = None  # why the last pass failed outside a folder, logged once
    _stop: threading.Event = field(default_factory=threading.Event)
    _thread: threading.Thread | None = None

    # --- one pass ------------------------------------------------------------------------

    def poll_once(self) -> list[Path]:
        """Process every complete inbound file and close every due batch; returns where the
        processed files went."""
        moved: list[Path] = []
        bases: set[Path] = set()
        self._store_failed = False
        for system in self._systems():
            linkage = system.file_linkage
            assert linkage is not None
            for folder in linkage.inbound:
                bases.add(resolve_folder(folder.path, self.hub.settings.data_dir))
                with self._guarded(folder.path):
                    moved.extend(self._inbound(system, folder))
            if linkage.outbound is not None:
                with self._guarded(linkage.outbound.path):
                    self._outbound(system, linkage.outbound)
        # folders no longer configured: forget what was observed in them
        for path in [path for path in self._seen if path.parent not in bases]:
            del self._seen[path]
        if self._store_down and not self._store_failed:
            self._store_down = False
            log.warning(
                "%s cleared: the hot folders reach the message store again", self._store_code
            )
        return moved

    def watching(self) -> int:
        """How many files (``trigger: stable``) are being observed until they settle."""
        return len(self._seen)

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
            if is_store_unavailable(error):
                self._store_unavailable(error)
                return
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
        resumable = self._resumable(base, folder)
        self._forget_gone(base / WORK, set(resumable))
        moved = [self._finish_alone(system, folder, base, name) for name in resumable]
        for name in self._ready(system, base, folder):
            if self._take(base, name, folder.end_suffix):
                moved.append(self._finish_alone(system, folder, base, name))
        return [path for path in moved if path is not None]

    def _finish_alone(
        self, system: System, folder: InboundFolder, base: Path, name: str
    ) -> Path | None:
        """:meth:`_finish`, where a failure that is this file's alone (not the folder's, an
        ``OSError``, nor the store's) leaves it in work/, retried at the next poll with its
        traceback logged once, and the folder's other files are served meanwhile."""
        try:
            return self._finish(system, folder, base, name)
        except OSError:
            raise
        except Exception as error:
            if is_store_unavailable(error):
                raise
            work, why = base / WORK / name, type(error).__name__
            if self._broken.get(work) != why:
                self._broken[work] = why
                log.exception(
                    "file %s of %s stays in work/ and is retried", readable_name(name), system.id
                )
            return None

    # --- which files ---------------------------------------------------------------------

    @staticmethod
    def _data_files(directory: Path, folder: InboundFolder) -> list[Path]:
        return sorted(
            path
            for path in directory.iterdir()
            if path.is_file()
            and is_data_name(path.name)
            and not path.name.endswith(folder.end_suffix)
            and not path.name.endswith(REPORT_SUFFIX)
        )

    def _resumable(self, base: Path, folder: InboundFolder) -> list[str]:
        return [path.name for path in self._data_files(base / WORK, folder)]

    def _forget_gone(self, work: Path, names: set[str]) -> None:
        """Read failures of files no longer in work/ (taken away, or finished elsewhere)."""
        for record in (self._unreadable, self._broken):
            for path in [p for p in record if p.parent == work and p.name not in names]:
                del record[path]

    def _ready(self, system: System, base: Path, folder: InboundFolder) -> list[str]:
        ready = []
        now = time.monotonic()
        listed = self._data_files(base, folder)
        for path in listed:
            if folder.trigger == "end_file":
                end = Path(f"{path}{folder.end_suffix}")
                if end.exists() and not write_locked(path):
                    ready.append(path.name)
                continue
            try:
                stat = path.stat()
            except FileNotFoundError:
                continue  # gone since the listing: forgotten below
            seen = self._seen.get(path)
            if seen is None or (seen.size, seen.mtime_ns) != (stat.st_size, stat.st_mtime_ns):
                self._seen[path] = _Seen(stat.st_size, stat.st_mtime_ns, now)
            elif (
                now - seen.since >= folder.stable_for.total_seconds()
                and (
                    self._finished(system, folder, path, stat.st_size)
                    or now - seen.since >= self._unfinished_wait(folder)
                )
                and not write_locked(path)
            ):
                ready.append(path.name)
        present = set(listed)
        for path in [path for path in self._seen if path.parent == base and path not in present]:
            del self._seen[path]  # vanished before it settled
        return ready

    @staticmethod
    def _finished(system: System, folder: InboundFolder, path: Path, size: int) -> bool:
        """Whether a settled file also ends as a complete file of its format does; one the
        folder's mapping or a read cannot tell about is left to processing."""
        if size == 0:
            return False
        try:
            return looks_complete(path, size, inbound_section(system, folder), folder)
        except FileRefused:
            return True
        except OSError:
            return True  # cannot be read: taken, and handled as such (RK-FIL007/008)

    def _unfinished_wait(self, folder: InboundFolder) -> float:
        """How long (seconds) an empty or unfinished file must stay unchanged: it is usually
        one a vendor is still writing."""
        return max(self.unfinished_age, folder.stable_for).total_seconds()

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
        lock = base / WORK / f".{name}.lock"
        shown = readable_name(name)  # the name in reports and logs
        with _exclusive(lock) as mine:
            if not mine or not os.path.lexists(work):
                return None  # another watcher is processing it
            if not self._due(work):
                return None  # could not be read: backing off
            self._complete_take(base, name, folder.end_suffix)
            try:
                data: bytes | None = work.read_bytes()
            except FileNotFoundError:
                return None  # taken away since the listing
            except OSError as error:
                if not self._give_up(system, work, error):
                    return None
                data = None
            digest = hashlib.sha256(data).hexdigest() if data is not None else None
            target = self._reported(base, name, shown, digest)
            if target is not None:  # an earlier pass wrote the report and was killed
                log.info("file %s of %s: report found, moving it beside it", shown, system.id)
                self._move(base, name, folder.end_suffix, target)
                lock.unlink(missing_ok=True)
                return target
            report, destination = self._report(system, folder, shown, data, work)
            if report is None:
                return None
            target = free_name(base / destination, name)
            # the report first, then the end file, the data file last: a kill at any point
            # leaves the file in work/ (completed by the next pass) or beside its report
            write_atomically(
                Path(f"{target}{REPORT_SUFFIX}"),
                json.dumps(report.as_dict(), ensure_ascii=False, indent=1).encode("utf-8"),
            )
            fsync_dir(target.parent)
            self._move(base, name, folder.end_suffix, target)
        lock.unlink(missing_ok=True)
        if report.refused is not None:
            log.warning(
                "file %s of %s refused whole (%s) → %s",
                shown,
                system.id,
                report.refused["code"],
                destination,
            )
            return target
        log.info(
            "file %s of %s: %d stored, %d duplicates, %d refused → %s",
            shown,
            system.id,
            report.stored,
            report.duplicates,
            report.rejected,
            destination,
        )
        return target

    def _report(
        self, system: System, folder: InboundFolder, name: str, data: bytes | None, work: Path
    ) -> tuple[FileReport | None, str]:
        """Process the file (``data`` None: it cannot be read and goes to error/); ``name``
        is its readable name."""
        if data is None:
            report = FileReport(name, system.id, folder.service, folder.tenant, None)
            failed = self._unreadable.pop(work)
            finding = make_finding("RK-FIL008", path="/", actual=name, expected=failed.reason)
            report.refused = finding.as_dict()
            report.finish()
            return report, ERROR
        processor = InboundFile(self.hub, system, folder, self.lanes)
        try:
            report = processor.process(name, data)
            self._broken.pop(work, None)
            return report, DONE
        except FileRefused as refusal:
            digest = hashlib.sha256(data).hexdigest()
            report = FileReport(name, system.id, folder.service, folder.tenant, digest)
            report.refused = refusal.finding.as_dict()
            report.finish()
            return report, ERROR
        except Exception as error:
            if is_store_unavailable(error):  # the store's outage, not this file's fault
                self._store_unavailable(error)
                return None, ERROR
            why = type(error).__name__
            if self._broken.get(work) != why:  # the traceback once, not at every poll
                self._broken[work] = why
                log.exception("file %s of %s stays in work/ and is retried", name, system.id)
            else:
                log.debug("file %s of %s: %s again; retried", name, system.id, why)
            return None, ERROR

    # --- files that cannot be read -------------------------------------------------------

    def _due(self, work: Path) -> bool:
        failed = self._unreadable.get(work)
        return failed is None or time.monotonic() >= failed.retry_at

    def _give_up(self, system: System, work: Path, error: OSError) -> bool:
        """Record a failed read; True when the file is to go to error/ (RK-FIL008: the error
        will not pass, or has lasted read_give_up), else it is retried later (RK-FIL007,
        logged once per reason)."""
        now, reason = time.monotonic(), _reason(error)
        failed = self._unreadable.get(work)
        if failed is None:
            failed = self._unreadable[work] = _Unreadable(reason, now, 0, now)
        failed.attempts += 1
        permanent = error.errno in PERMANENT
        if permanent or now - failed.since >= self.read_give_up.total_seconds():
            failed.reason = reason
            finding = make_finding(
                "RK-FIL008", path="/", actual=readable_name(work.name), expected=reason
            )
            log.error("%s %s (%s)", finding.code, finding.message_en, system.id)
            return True
        if failed.attempts == 1 or failed.reason != reason:
            failed.reason = reason
            finding = make_finding(
                "RK-FIL007", path="/", actual=readable_name(work.name), expected=reason
            )
            log.warning("%s %s (%s)", finding.code, finding.message_en, system.id)
        backoff = self.read_retry * 2 ** min(failed.attempts - 1, 20)
        failed.retry_at = now + min(backoff, self.read_retry_max).total_seconds()
        return False

    # --- moving ----------------------------------------------------------------------------

    @staticmethod
    def _complete_take(base: Path, name: str, end_suffix: str) -> None:
        """Finish a take a kill interrupted: the data file still linked in the folder too,
        or its end file left there. (A new delivery's end file only ever follows its data
        file, so an end file without one is this file's.)"""
        source, work, end = base / name, base / WORK / name, base / f"{name}{end_suffix}"
        try:
            if os.path.lexists(source) and os.path.samefile(source, work):
                source.unlink()
            if end.exists() and not os.path.lexists(source):
                end.rename(base / WORK / end.name)
        except OSError:
            pass  # best effort: the file itself is in work/ and is processed

    @staticmethod
    def _reported(base: Path, name: str, shown: str, digest: str | None) -> Path | None:
        """Where an earlier pass wrote this file's report before a kill stopped it from
        moving the file there: a report of that name (``shown`` in it) and SHA-256 without
        its data file."""
        for directory in (base / DONE, base / ERROR):
            candidate, number = directory / name, 0
            while True:
                report = Path(f"{candidate}{REPORT_SUFFIX}")
                if not report.exists():
                    if not os.path.lexists(candidate):
                        break
                elif not os.path.lexists(candidate):
                    try:
                        written = json.loads(report.read_bytes())
                    except (OSError, ValueError):
                        written = None
                    if (
                        isinstance(written, dict)
                        and written.get("file") == shown
                        and written.get("sha256") == digest
                    ):
                        return candidate
                number += 1
                candidate = directory / f"{name}.{number}"
        return None

    @staticmethod
    def _move(base: Path, name: str, end_suffix: str, target: Path) -> None:
        """The end file, then the data file (last: its arrival means the pair is complete)."""
        end = base / WORK / f"{name}{end_suffix}"
        if end.exists():
            end.rename(Path(f"{target}{end_suffix}"))
        (base / WORK / name).rename(target)

    # --- running -------------------------------------------------------------------------

    def interval(self) -> float:
        """The shortest configured poll interval (default 2 s)."""
        polls = [
            folder.poll_interval
            for system in self._systems()
            for folder in (system.file_linkage.inbound if system.file_linkage else ())
        ]
        return min(polls or [DEFAULT_POLL]).total_seconds()

    def _store_unavailable(self, error: Exception) -> None:
        """A pass (or one folder's) failed because the store cannot be reached now: one
        coded warning until a pass succeeds again; the files wait in ``work/``."""
        self._store_failed = True
        if self._store_down:
            return
        self._store_down = True
        finding = unreachable_finding(error, describe(error), path="/folders")
        self._store_code = finding.code
        log.warning(
            "%s %s Hot-folder files wait in work/ and are processed once it answers.",
            finding.code,
            finding.message_en,
        )

    def run(self) -> None:
        """Pass after pass until stopped; a pass that fails (the configuration or the store
        unreadable) is logged once and tried again after the default poll."""
        while not self._stop.is_set():
            try:
                self.poll_once()
                wait = self.interval()
            except Exception as error:
                wait = DEFAULT_POLL.total_seconds()
                if is_store_unavailable(error):
                    self._store_unavailable(error)
                elif self._pass_failing != type(error).__name__:
                    self._pass_failing = type(error).__name__
                    log.exception("folder watcher pass failed; retrying")
            else:
                self._pass_failing = None
            self._stop.wait(wait)

    def start(self) -> None:
        self._stop.clear()
        self._thread = threading.Thread(target=self.run, name="folder-watcher", daemon=True)
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=60)
            self._thread = None
