"""Secrets the hub must read back in clear (a WS-Security PasswordDigest is checked against
the password itself), encrypted at rest with AES-256-GCM.

The key is ``RENKEI_SECRETS_KEY`` (Base64 of 32 bytes; every hub process of a deployment
needs the same one), else ``<data_dir>/secrets.key``, created with mode 0600 on first use —
fine for one machine; back it up apart from the database's backups. The associated data binds each
ciphertext to its row (the system id), so a ciphertext copied to another row does not open.
"""

from __future__ import annotations

import base64
import binascii
import contextlib
import os
import secrets
import tempfile
from pathlib import Path

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

from bus.settings import Settings

KEY_FILE = "secrets.key"
_NONCE_BYTES = 12


class SecretKeyError(ValueError):
    """The configured key is not Base64 of 32 bytes, or a ciphertext does not open."""


def _key_file(settings: Settings) -> bytes:
    """The key file, created on first use. Several hub processes may get there at once: each
    writes a complete key to a file of its own and links it into place, and the first link
    wins — nobody reads a half-written key or fails on another's."""
    path = Path(settings.data_dir) / KEY_FILE
    if not path.exists():
        path.parent.mkdir(parents=True, exist_ok=True)
        descriptor, written = tempfile.mkstemp(dir=path.parent, prefix=f".{KEY_FILE}.")  # 0600
        try:
            with os.fdopen(descriptor, "w") as handle:
                handle.write(base64.b64encode(secrets.token_bytes(32)).decode())
                handle.flush()
                os.fsync(handle.fileno())
            with contextlib.suppress(FileExistsError):  # another process's key won: it is the key
                os.link(written, path)
        finally:
            os.unlink(written)
    return path.read_bytes().strip()


def load_key(settings: Settings) -> bytes:
    encoded = settings.secrets_key.encode() if settings.secrets_key else _key_file(settings)
    try:
        key = base64.b64decode(encoded, validate=True)
    except binascii.Error:
        key = b""
    if len(key) != 32:
        raise SecretKeyError("RENKEI_SECRETS_KEY must be Base64 of 32 bytes")
    return key


class SecretBox:
    def __init__(self, key: bytes) -> None:
        self._aead = AESGCM(key)

    @classmethod
    def from_settings(cls, settings: Settings) -> SecretBox:
        return cls(load_key(settings))

    def seal(self, secret: str, context: str) -> bytes:
        nonce = secrets.token_bytes(_NONCE_BYTES)
        return nonce + self._aead.encrypt(nonce, secret.encode("utf-8"), context.encode())

    def open(self, sealed: bytes, context: str) -> str:
        nonce, ciphertext = sealed[:_NONCE_BYTES], sealed[_NONCE_BYTES:]
        try:
            return self._aead.decrypt(nonce, ciphertext, context.encode()).decode("utf-8")
        except InvalidTag:
            raise SecretKeyError(f"the stored secret for {context} does not open") from None
