"""Whether a file in a hot folder is finished by its writer.

- :func:`write_locked`: another process holds a write lock on it — a POSIX byte-range lock,
  which is what Samba makes of a Windows client's lock on a file of the share, or an
  exclusive ``flock``. Such a file is not taken under either trigger.
- :func:`looks_complete` (``trigger: stable``): its end is the end of a file of its format. A
  vendor's tool that pauses mid-file for longer than ``stable_for`` (a slow query, a share
  that stalls) leaves a file whose size has settled but whose trailer record (or XML root end
  tag) is not there yet; taking it would refuse it whole while the vendor is still writing.
  Only the file's last bytes are read (and, for XML, its first), never the whole file.
"""

from __future__ import annotations

import errno
import fcntl
import os
import re
from pathlib import Path

from bus.config.models import InboundFolder
from bus.folders.records import FileRefused, parse_trailer
from bus.mapping import Section
from bus.mapping.formats.fixed import EOF_MARK, FixedFormat
from bus.mapping.formats.xml import XmlFormat

_TAIL = 64 * 1024  # far more than a trailer record or an end tag
_HEAD = 64 * 1024  # enough for the XML declaration, comments and the root's start tag
_ROOT = re.compile(rb"<([^\s?!/>]+)")


def _read(path: Path, offset: int, size: int) -> bytes:
    with path.open("rb") as handle:
        handle.seek(max(offset, 0))
        return handle.read(size)


def _xml_complete(path: Path, size: int) -> bool:
    root = _ROOT.search(_read(path, 0, _HEAD))
    if root is None:
        return False
    tail = _read(path, size - _TAIL, _TAIL).rstrip(b" \t\r\n\x00" + EOF_MARK)
    return re.search(rb"</" + re.escape(root.group(1)) + rb"\s*>\Z", tail) is not None


def _line_complete(path: Path, size: int, section: Section, folder: InboundFolder) -> bool:
    form = section.format
    tail = _read(path, size - _TAIL, _TAIL).removesuffix(EOF_MARK)
    if isinstance(form, FixedFormat) and not form.separator:
        last = tail[-form.length :]
    else:
        last = tail.rstrip(b"\r\n").rpartition(b"\n")[2].rstrip(b"\r")
    try:
        parse_trailer(last.decode(folder.encoding), folder.records)
    except (UnicodeDecodeError, FileRefused):
        return False
    return True


def looks_complete(path: Path, size: int, section: Section, folder: InboundFolder) -> bool:
    """Whether the file of ``size`` bytes ends as a complete file of the section's format
    does (its trailer record last, or the XML root's end tag). A folder without trailer
    records cannot tell: its files always look complete."""
    if isinstance(section.format, XmlFormat):
        return _xml_complete(path, size)
    if not folder.records.trailer:
        return True
    return _line_complete(path, size, section, folder)


def write_locked(path: Path) -> bool:
    """Whether another process holds a write lock on the file. Only asks (a shared lock
    taken and released at once); a file system without locks, or a file that cannot be
    opened, cannot tell (False: reading it will say what is wrong)."""
    try:
        descriptor = os.open(path, os.O_RDONLY | os.O_NONBLOCK)
    except OSError:
        return False
    try:
        for lock in (fcntl.lockf, fcntl.flock):
            try:
                lock(descriptor, fcntl.LOCK_SH | fcntl.LOCK_NB)
            except OSError as error:
                if error.errno in (errno.EAGAIN, errno.EACCES):
                    return True
                continue  # no locks here (ENOLCK, EINVAL…): cannot tell
            lock(descriptor, fcntl.LOCK_UN)
        return False
    finally:
        os.close(descriptor)
