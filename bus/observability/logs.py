"""JSON logs: one line per event, for renkei's own events and every library's.

structlog renders the hub's events; the standard library's records (uvicorn, zeep, kombu,
SQLAlchemy, and bus modules still on ``logging``) go through the same processors by
structlog's ``ProcessorFormatter`` on the root logger's one handler. Each line carries an
ISO-8601 UTC timestamp with its zone (``…Z``), the level, the logger and whatever context is
bound: ``messageId``, ``correlationId``, ``service``, ``tenant``, ``system`` while a message
is being handled (contextvars, so a library's record inside that work carries them too).

Personal data never reaches a line in clear text (DESIGN §7): values under personal keys are
masked and any 12-digit run (a 個人番号's shape) in any text is masked as a safety net.
"""

from __future__ import annotations

import logging
import os
import re
import sys
from collections.abc import Mapping
from contextvars import ContextVar
from typing import TextIO

import structlog
from structlog.typing import EventDict, Processor, WrappedLogger

from bus.masking import mask

LEVEL_ENV = "RENKEI_LOG_LEVEL"
FORMAT_ENV = "RENKEI_LOG_FORMAT"
ACCESS_LOGGER = "uvicorn.access"  # without a handler, uvicorn does not even format its line
LIBRARY_LOGGERS = ("uvicorn", "uvicorn.error", ACCESS_LOGGER, "zeep", "kombu", "sqlalchemy")
PERSONAL_KEYS = frozenset(
    {"name", "nameKana", "address", "myNumber", "individualNumber", "birthDate", "body", "raw"}
)
# Twelve digits on their own — but not the last group of a UUID (a messageId may end in
# twelve decimal digits).
_MY_NUMBER_SHAPE = re.compile(r"(?<![0-9])(?<![0-9A-Fa-f]{4}-)[0-9]{12}(?![0-9A-Fa-f])")
# The correlation fields come from a Header that may not have been validated (a refused
# message's): a value that does not look like what it claims to be may be anything, personal
# data included, and is masked (the shapes the audit trail keeps: bus/store/audit.py).
_MESSAGE_ID_SHAPE = re.compile(r"[0-9A-Za-z\-]{1,36}")
SHAPED_KEYS = {
    "messageId": _MESSAGE_ID_SHAPE,
    "correlationId": _MESSAGE_ID_SHAPE,
    "tenant": re.compile(r"[0-9]{6}"),
    "system": re.compile(r"[a-z][a-z0-9_\-]{1,39}"),
    "service": re.compile(r"[A-Z][A-Za-z0-9]{1,63}"),
}


def _mask_text(text: str) -> str:
    return _MY_NUMBER_SHAPE.sub(lambda match: mask(match.group(), personal=True), text)


_MESSAGE_CONTEXT: ContextVar[Mapping[str, str | None] | None] = ContextVar(
    "renkei_message_context", default=None
)


def merge_message_context(_logger: WrappedLogger, _method: str, event: EventDict) -> EventDict:
    """Add the context :func:`bound` set (an event's own keys win)."""
    context = _MESSAGE_CONTEXT.get()
    if context:
        for key, value in context.items():
            event.setdefault(key, value)
    return event


def mask_personal(_logger: WrappedLogger, _method: str, event: EventDict) -> EventDict:
    """Mask personal keys' values, correlation fields that do not have their shape and
    個人番号-shaped digit runs in every text value."""
    for key, value in event.items():
        if key in PERSONAL_KEYS and value is not None:
            event[key] = mask(str(value), personal=True)
        elif (shape := SHAPED_KEYS.get(key)) and isinstance(value, str):
            if not shape.fullmatch(value):
                event[key] = mask(value, personal=True)
            elif len(value) >= 12:
                event[key] = _mask_text(value)
        elif isinstance(value, str) and len(value) >= 12:
            event[key] = _mask_text(value)
    return event


def drop_console_colours(_logger: WrappedLogger, _method: str, event: EventDict) -> EventDict:
    """uvicorn adds an ANSI-coloured copy of its message; a JSON line needs only one."""
    event.pop("color_message", None)
    return event


def _shared() -> list[Processor]:
    return [
        structlog.contextvars.merge_contextvars,
        merge_message_context,
        structlog.stdlib.add_log_level,
        structlog.stdlib.add_logger_name,
        structlog.processors.TimeStamper(fmt="iso", utc=True, key="timestamp"),
        structlog.processors.StackInfoRenderer(),
    ]


class _RenkeiHandler(logging.StreamHandler):  # type: ignore[type-arg]
    """The root logger's JSON handler (recognised, so configuring twice replaces it).
    Without a stream it writes to whatever ``sys.stderr`` is at the time (like
    ``logging.lastResort``), so a replaced stderr (a test's capture) is never written after
    it was closed."""

    def __init__(self, stream: TextIO | None) -> None:
        super().__init__(stream)
        self._follow_stderr = stream is None

    def emit(self, record: logging.LogRecord) -> None:
        if self._follow_stderr:
            self.stream = sys.stderr
        super().emit(record)


def json_formatter() -> structlog.stdlib.ProcessorFormatter:
    return structlog.stdlib.ProcessorFormatter(
        foreign_pre_chain=[*_shared(), structlog.stdlib.ExtraAdder()],
        processors=[
            structlog.stdlib.ProcessorFormatter.remove_processors_meta,
            structlog.processors.format_exc_info,
            drop_console_colours,
            mask_personal,
            structlog.processors.JSONRenderer(ensure_ascii=False),
        ],
    )


def _route_structlog_to_stdlib() -> None:
    """structlog events become standard-library records (formatted by the root handler).
    Done on import, so an event is never printed in structlog's default console form."""
    structlog.configure(
        processors=[
            structlog.stdlib.filter_by_level,  # before any work: a DEBUG event costs little
            *_shared(),
            structlog.stdlib.PositionalArgumentsFormatter(),
            structlog.stdlib.ProcessorFormatter.wrap_for_formatter,
        ],
        logger_factory=structlog.stdlib.LoggerFactory(),
        wrapper_class=structlog.stdlib.BoundLogger,
        cache_logger_on_first_use=True,
    )


_route_structlog_to_stdlib()


def configure_logging(
    level: str | None = None,
    stream: TextIO | None = None,
    access_log: bool = False,
) -> None:
    """One JSON handler on the root logger for structlog's events and every library's.

    Idempotent: a second call replaces renkei's handler (other handlers, e.g. pytest's, stay).
    ``level``: default ``RENKEI_LOG_LEVEL`` or INFO. ``access_log``: uvicorn's line per
    request (``RENKEI_ACCESS_LOG`` in a serving process; off, it is not even formatted).
    ``RENKEI_LOG_FORMAT=plain`` leaves the standard library's configuration alone (a host
    application's own)."""
    if os.environ.get(FORMAT_ENV, "json") == "plain":
        return
    handler = _RenkeiHandler(stream)
    handler.setFormatter(json_formatter())
    root = logging.getLogger()
    for old in [h for h in root.handlers if isinstance(h, _RenkeiHandler)]:
        root.removeHandler(old)
    root.addHandler(handler)
    root.setLevel((level or os.environ.get(LEVEL_ENV) or "INFO").upper())
    _skip_unused_record_fields()
    for name in LIBRARY_LOGGERS:  # uvicorn's own handlers would print a second, plain line
        library = logging.getLogger(name)
        library.handlers.clear()
        library.propagate = access_log or name != ACCESS_LOGGER
    logging.getLogger("sqlalchemy").setLevel(logging.WARNING)  # its INFO is every statement


def _skip_unused_record_fields() -> None:
    """No line carries the caller's file and line, the thread or the process, so the standard
    library need not look them up for every record (the logging HOWTO's "Optimization": the
    caller look-up walks the stack, ~a tenth of a log line's cost)."""
    logging._srcfile = None  # the documented switch
    logging.logThreads = False
    logging.logProcesses = False
    logging.logMultiprocessing = False


def get_logger(name: str) -> structlog.stdlib.BoundLogger:
    logger: structlog.stdlib.BoundLogger = structlog.stdlib.get_logger(name)
    return logger


def context_of(
    *,
    message_id: str | None,
    correlation_id: str | None = None,
    service: str | None = None,
    tenant: str | None = None,
    system: str | None = None,
) -> Mapping[str, str | None]:
    """The correlation fields of one message, in the names the logs use (every key always
    present, ``null`` when unset, so a log shipper sees one shape)."""
    return {
        "messageId": message_id,
        "correlationId": correlation_id,
        "service": service,
        "tenant": tenant,
        "system": system,
    }


class bound:  # lower case: it reads like a function, ``with bound(context):``
    """Bind ``context`` to every log line (structlog and stdlib) of this thread/task.
    One context variable holding the mapping, and a plain class rather than a generator: a
    dispatch worker binds one per send, so this must cost next to nothing (structlog's
    ``bound_contextvars`` costs a variable and a token per key)."""

    __slots__ = ("_context", "_token")

    def __init__(self, context: Mapping[str, str | None]) -> None:
        self._context = context

    def __enter__(self) -> None:
        self._token = _MESSAGE_CONTEXT.set(self._context)

    def __exit__(self, *_exc: object) -> None:
        _MESSAGE_CONTEXT.reset(self._token)
