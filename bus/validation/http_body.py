"""What an HTTP edge (SOAP, REST) checks of a request body before the secure parse: its
``Content-Encoding`` and the ``charset`` of its ``Content-Type``.

- **Content-Encoding.** ``gzip`` (``x-gzip``) is decoded, ``identity`` is the body as sent;
  anything else is RK-API009. Decoding is incremental and stops as soon as the output exceeds
  the document limit (RK-SEC002), so a decompression bomb never grows past the limit in
  memory; a body that is not valid gzip is RK-API010. The limit is the one the compressed
  body was already read with, so the pipeline sees at most the document limit either way.
- **charset** (RFC 7303 §3: the ``charset`` of ``text/xml`` and ``application/xml`` governs).
  The platform accepts UTF-8 only (DESIGN §3), so a charset other than UTF-8 is refused:
  RK-API012 when it contradicts the encoding the document names for itself (its byte-order
  mark or XML declaration), else RK-API011. With ``charset=utf-8``, or none, the document
  itself must be UTF-8, as the secure parse checks (RK-SEC005 names what it declares).

Pure functions on bytes and header values: the core never imports an adapter.
"""

from __future__ import annotations

import codecs
import re
import zlib
from typing import Final

from bus.errors import make_finding
from bus.pipeline import Finding
from bus.validation.secure_parse import own_encoding

__all__ = ["GZIP_CODINGS", "charset_refusal", "decode_body", "unsupported_coding"]

GZIP_CODINGS: Final = frozenset({"gzip", "x-gzip"})
_IDENTITY: Final = "identity"
_GZIP_WBITS: Final = 16 + zlib.MAX_WBITS  # a gzip header and trailer, not a raw zlib stream
_ROOT: Final = "/"
_SHOWN_CAP: Final = 40
_NOT_PRINTABLE_ASCII: Final = re.compile(r"[^\x21-\x7e]")
_CHARSET: Final = re.compile(r";\s*charset\s*=\s*(\"[^\"]*\"|[^;\s]*)", re.IGNORECASE)
_UTF8: Final = "utf-8"
_UTF8_NAMES: Final = frozenset({"utf-8", "utf8"})


def _shown(value: str) -> str:
    """A header value fit for a message: printable ASCII, at most 40 characters."""
    return _NOT_PRINTABLE_ASCII.sub("?", value[:_SHOWN_CAP]) or "(empty)"


def _codings(content_encoding: str) -> list[str]:
    """The codings applied, in order, without ``identity`` (RFC 9110 §8.4)."""
    codings = (c.strip().lower() for c in content_encoding.split(","))
    return [c for c in codings if c and c != _IDENTITY]


def unsupported_coding(content_encoding: str) -> Finding | None:
    """RK-API009 unless the codings are none, ``identity`` or one ``gzip``."""
    codings = _codings(content_encoding)
    if not codings or (len(codings) == 1 and codings[0] in GZIP_CODINGS):
        return None
    return make_finding("RK-API009", path=_ROOT, actual=_shown(content_encoding))


def decode_body(body: bytes, content_encoding: str, limit: int) -> bytes | Finding:
    """``body`` with its ``Content-Encoding`` undone, within ``limit`` bytes of output."""
    refusal = unsupported_coding(content_encoding)
    if refusal is not None:
        return refusal
    if not _codings(content_encoding):
        return body
    return _gunzip(body, limit)


def _gunzip(body: bytes, limit: int) -> bytes | Finding:
    """Every gzip member of ``body`` (RFC 1952 allows several), decompressed at most
    ``limit + 1`` bytes at a time: RK-SEC002 as soon as the output passes ``limit``."""
    out = bytearray()
    pending = body
    try:
        while pending:
            member = zlib.decompressobj(_GZIP_WBITS)
            tail = pending
            while not member.eof:
                chunk = member.decompress(tail, limit + 1 - len(out))
                out += chunk
                if len(out) > limit:
                    return make_finding("RK-SEC002", path=_ROOT, limit=limit, actual=f">{limit}")
                tail = member.unconsumed_tail
                if not chunk and not tail:  # all input read, the member not finished
                    return make_finding("RK-API010", path=_ROOT, actual="truncated")
            pending = member.unused_data
    except zlib.error as error:
        return make_finding("RK-API010", path=_ROOT, actual=_shown(str(error)))
    return bytes(out)


def _charset(content_type: str) -> str | None:
    """The ``charset`` parameter of a Content-Type value, unquoted; ``None`` without one."""
    if ";" not in content_type:
        return None
    found = _CHARSET.search(content_type)
    return found.group(1).strip('"').strip() if found is not None else None


def _codec(name: str) -> str:
    """A comparable name for an encoding: Python's codec name, else the name itself."""
    plain = name.split(" (", 1)[0].strip()  # "UTF-16LE (BOM)" → "UTF-16LE"
    try:
        return codecs.lookup(plain).name
    except LookupError:
        return plain.lower()


def _same_encoding(charset: str, own: str) -> bool:
    declared, named = _codec(charset), _codec(own)
    # "utf-16" (either byte order, with a BOM) covers what the BOM says: utf-16-le/-be
    return named == declared or named.startswith(f"{declared}-")


def charset_refusal(content_type: str, body: bytes) -> Finding | None:
    """For a ``charset`` other than UTF-8: RK-API012 when it contradicts the document's own
    encoding (byte-order mark, XML declaration), else RK-API011. ``None`` without a charset
    or with UTF-8 (the secure parse then holds the document to UTF-8: RK-SEC005). ``body``
    may be only the body's first bytes: only its prolog is read."""
    charset = _charset(content_type)
    if charset is None or charset.lower() in _UTF8_NAMES or _codec(charset) == _UTF8:
        return None  # the hot path: "text/xml; charset=utf-8"
    own = own_encoding(body)
    if own is not None and not _same_encoding(charset, own):
        return make_finding("RK-API012", path=_ROOT, actual=_shown(charset), expected=own)
    return make_finding("RK-API011", path=_ROOT, actual=_shown(charset))
