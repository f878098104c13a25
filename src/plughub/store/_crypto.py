"""Credential encryption: AES-256-GCM with versioned keys.

Keys come from a key file (``PLUGHUB_SECRET_KEY_FILE``) or from ``PLUGHUB_SECRET_KEY``. Both
hold one or more entries ``<version>:<base64 of 32 bytes>`` (one a line in the file; separated
by whitespace or commas in the variable; ``#`` starts a comment in the file). A lone entry
without ``<version>:`` is version 1. New ciphertexts use the highest version; older versions
stay readable until ``Store.rotate()`` has re-encrypted everything with the newest one.

A ciphertext is ``nonce (12 bytes) || AES-GCM(ciphertext || tag)``. The associated data is
``tenant|plugin|name``, so a ciphertext copied to another tenant, plugin or name does not
decrypt.
"""

from __future__ import annotations

import base64
import binascii
import logging
import os
import re
import secrets
import stat
from collections.abc import Mapping
from pathlib import Path

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

from ..errors import StoreError

__all__ = ["KEY_ENV", "KEY_FILE_ENV", "Keyring", "credential_aad", "generate_key"]

KEY_ENV = "PLUGHUB_SECRET_KEY"
KEY_FILE_ENV = "PLUGHUB_SECRET_KEY_FILE"
_NONCE = 12
_ENTRY = re.compile(r"(?:(\d{1,9}):)?([A-Za-z0-9+/=_-]+)")
log = logging.getLogger("plughub.store")


def generate_key() -> str:
    """A new random 256-bit key, base64-encoded (without a version)."""
    return base64.b64encode(secrets.token_bytes(32)).decode()


def credential_aad(tenant_id: str, plugin_id: str, name: str) -> bytes:
    """The associated data that binds a ciphertext to its row (ids never contain ``|``)."""
    return f"{tenant_id}|{plugin_id}|{name}".encode()


def _decode_key(text: str, where: str) -> bytes:
    try:
        raw = base64.b64decode(text, validate=True)
    except (binascii.Error, ValueError):
        try:
            raw = base64.urlsafe_b64decode(text)
        except (binascii.Error, ValueError):
            raise StoreError(f"{where}: a key is not valid base64", "bad_key") from None
    if len(raw) != 32:
        raise StoreError(
            f"{where}: a key must be 32 bytes (base64 of 32 random bytes), not {len(raw)}",
            "bad_key",
        )
    return raw


class Keyring:
    """The credential keys by version. ``source`` says where they came from (never the keys)."""

    def __init__(self, keys: Mapping[int, bytes], source: str = "keys given in code") -> None:
        if not keys:
            raise StoreError(f"{source}: no key", "bad_key")
        for version, key in keys.items():
            if not isinstance(version, int) or version < 1:
                raise StoreError(f"{source}: key versions are integers >= 1", "bad_key")
            if len(key) != 32:
                raise StoreError(f"{source}: key version {version} is not 32 bytes", "bad_key")
        self._aead = {v: AESGCM(k) for v, k in keys.items()}
        self.versions = tuple(sorted(keys))
        self.newest = self.versions[-1]
        self.source = source

    def __repr__(self) -> str:
        return f"Keyring(versions={list(self.versions)}, source={self.source!r})"

    @classmethod
    def parse(cls, text: str, source: str) -> Keyring:
        """Read entries ``[<version>:]<base64>`` (see the module docstring)."""
        entries: list[str] = []
        for line in text.splitlines():
            content = line.split("#", 1)[0]
            entries.extend(e for e in re.split(r"[\s,]+", content) if e)
        if not entries:
            raise StoreError(f"{source}: holds no key", "bad_key")
        keys: dict[int, bytes] = {}
        for entry in entries:
            m = _ENTRY.fullmatch(entry)
            if m is None:
                raise StoreError(f"{source}: an entry is not '<version>:<base64 key>'", "bad_key")
            if m.group(1) is None and len(entries) > 1:
                raise StoreError(
                    f"{source}: with several keys, each needs a version ('<version>:<key>')",
                    "bad_key",
                )
            version = int(m.group(1) or 1)
            if version in keys:
                raise StoreError(f"{source}: key version {version} appears twice", "bad_key")
            keys[version] = _decode_key(m.group(2), source)
        return cls(keys, source)

    @classmethod
    def from_file(cls, path: str | os.PathLike[str]) -> Keyring:
        p = Path(path)
        try:
            text = p.read_text(encoding="utf-8")
            mode = p.stat().st_mode
        except OSError as e:
            message = f"cannot read the key file {str(p)!r}: {e.strerror}"
            raise StoreError(message, "bad_key") from None
        if mode & (stat.S_IRWXG | stat.S_IRWXO):
            log.warning("key file %s is readable by other users; chmod 600 it", p)
        return cls.parse(text, f"key file {str(p)!r}")

    @classmethod
    def from_env(cls, environ: Mapping[str, str] | None = None) -> Keyring | None:
        """The keyring configured by the environment; None when neither variable is set.

        ``PLUGHUB_SECRET_KEY_FILE`` wins when both are set.
        """
        env = os.environ if environ is None else environ
        path = env.get(KEY_FILE_ENV, "").strip()
        if path:
            return cls.from_file(path)
        value = env.get(KEY_ENV, "").strip()
        if value:
            return cls.parse(value, f"${KEY_ENV}")
        return None

    def encrypt(self, plaintext: bytes, aad: bytes) -> tuple[int, bytes]:
        """Encrypt with the newest key: ``(key_version, nonce || ciphertext)``."""
        nonce = secrets.token_bytes(_NONCE)
        return self.newest, nonce + self._aead[self.newest].encrypt(nonce, plaintext, aad)

    def has(self, version: int) -> bool:
        return version in self._aead

    def decrypt(self, version: int, blob: bytes, aad: bytes, what: str = "a credential") -> bytes:
        aead = self._aead.get(version)
        if aead is None:
            raise StoreError(
                f"{what} is encrypted with key version {version}, which {self.source} does not"
                f" hold (it has {', '.join(map(str, self.versions))})",
                "decrypt",
            )
        try:
            return aead.decrypt(blob[:_NONCE], blob[_NONCE:], aad)
        except InvalidTag:
            raise StoreError(
                f"{what} does not decrypt with key version {version} of {self.source}: the key"
                " is wrong, or the stored ciphertext was altered or moved to another row",
                "decrypt",
            ) from None
