"""The one password/key hashing scheme of the hub: salted scrypt (memory-hard).

API keys (configured or issued into the database) and operator passwords are stored as
``scrypt$n$r$p$salt_b64$hash_b64``. n=2**14, r=8, p=1 costs 16 MiB and ~50 ms per check on
the project's machines, so a stolen table is expensive to brute-force; the parameters travel
with each hash, so raising them later leaves old hashes verifiable.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import re
import secrets
from dataclasses import dataclass

SCRYPT_N, SCRYPT_R, SCRYPT_P = 2**14, 8, 1
_SALT_BYTES, _HASH_BYTES = 16, 32
_MAX_N = 2**20  # refuse absurd work factors in a stored hash
_HASH_FORMAT = re.compile(
    r"^scrypt\$(?P<n>[0-9]+)\$(?P<r>[0-9]+)\$(?P<p>[0-9]+)\$"
    r"(?P<salt>[A-Za-z0-9+/=]+)\$(?P<hash>[A-Za-z0-9+/=]+)$"
)


def _scrypt(secret: str, salt: bytes, n: int, r: int, p: int, length: int) -> bytes:
    return hashlib.scrypt(
        secret.encode("utf-8", "surrogatepass"),
        salt=salt,
        n=n,
        r=r,
        p=p,
        maxmem=256 * n * r + 2**20,
        dklen=length,
    )


def hash_secret(secret: str) -> str:
    """``scrypt$n$r$p$salt_b64$hash_b64``: salted and memory-hard, never a plain digest."""
    salt = secrets.token_bytes(_SALT_BYTES)
    digest = _scrypt(secret, salt, SCRYPT_N, SCRYPT_R, SCRYPT_P, _HASH_BYTES)
    encode = base64.b64encode
    return (
        f"scrypt${SCRYPT_N}${SCRYPT_R}${SCRYPT_P}${encode(salt).decode()}${encode(digest).decode()}"
    )


@dataclass(frozen=True, slots=True)
class _ParsedHash:
    n: int
    r: int
    p: int
    salt: bytes
    digest: bytes


def _parse_hash(stored: str) -> _ParsedHash | None:
    match = _HASH_FORMAT.fullmatch(stored)
    if match is None:
        return None
    n, r, p = int(match["n"]), int(match["r"]), int(match["p"])
    if n < 2 or n > _MAX_N or n & (n - 1) or not 1 <= r <= 64 or not 1 <= p <= 16:
        return None
    try:
        salt = base64.b64decode(match["salt"], validate=True)
        digest = base64.b64decode(match["hash"], validate=True)
    except ValueError:
        return None
    return _ParsedHash(n, r, p, salt, digest) if salt and digest else None


def is_secret_hash(value: str) -> bool:
    """Whether ``value`` is a hash :func:`hash_secret` could have written."""
    return _parse_hash(value) is not None


def verify_secret(secret: str, stored: str) -> bool:
    """Constant-time comparison of the secret's scrypt hash with the stored one."""
    parsed = _parse_hash(stored)
    if parsed is None:
        return False
    candidate = _scrypt(secret, parsed.salt, parsed.n, parsed.r, parsed.p, len(parsed.digest))
    return hmac.compare_digest(candidate, parsed.digest)
