"""Ed25519 signing keys, their one-line public form, and the store of keys an operator trusts.

A public key travels as one line, ``ed25519 <base64 of the 32 raw bytes> <key id> [name]``, so
it can be pasted into a README, an index or a chat. The key id (first 16 hex digits of the
SHA-256 of the raw key) names the key in package metadata; it is a lookup hint, not a proof:
trust comes only from a key being in the :class:`TrustStore` and the signature verifying.

Private keys are PEM (PKCS#8), unencrypted, written with mode 0600 and never overwritten.
"""

from __future__ import annotations

import base64
import binascii
import builtins
import hashlib
import os
import re
import tempfile
from pathlib import Path

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import (
    Ed25519PrivateKey,
    Ed25519PublicKey,
)

__all__ = [
    "SigningKey",
    "TrustStore",
    "home",
    "key_id_of",
    "parse_public_key",
    "public_key_text",
]

ALGORITHM = "ed25519"
KEY_ID_RE = re.compile(r"[0-9a-f]{16}", re.ASCII)
_MAX_KEY_FILE = 64 * 1024


def home() -> Path:
    """plughub's per-user data folder: ``$PLUGHUB_HOME``, else the platform's user data dir.

    One function so that the CLI, the trust store and the installer agree on where things live.
    Falls back to ``~/.plughub`` when ``platformdirs`` is not installed.
    """
    env = os.environ.get("PLUGHUB_HOME")
    if env:
        return Path(env).expanduser()
    try:
        import platformdirs
    except ImportError:  # a dependency, but the fallback keeps a broken install usable
        return Path.home() / ".plughub"
    return Path(platformdirs.user_data_dir("plughub", appauthor=False))


def key_id_of(public: bytes) -> str:
    """The 16-hex-digit id of a raw 32-byte public key."""
    if len(public) != 32:
        raise ValueError(f"an ed25519 public key is 32 bytes, not {len(public)}")
    return hashlib.sha256(public).hexdigest()[:16]


def public_key_text(pub: bytes) -> str:
    """``ed25519 <base64> <key_id>``: the form to publish and to give ``plughub keys trust``."""
    return f"{ALGORITHM} {base64.b64encode(pub).decode('ascii')} {key_id_of(pub)}"


def _parse_line(text: str) -> tuple[bytes, str | None]:
    """Parse a public key line; return the raw key and the trailing name, if any."""
    lines = [ln.strip() for ln in text.strip().splitlines()]
    lines = [ln for ln in lines if ln and not ln.startswith("#")]
    if len(lines) != 1:
        raise ValueError(
            "expected one line 'ed25519 <base64> [key id] [name]'"
            + (f", got {len(lines)}" if lines else ", got nothing")
        )
    parts = lines[0].split(None, 3)
    if len(parts) < 2 or parts[0] != ALGORITHM:
        raise ValueError("a public key line starts with 'ed25519 <base64>'")
    try:
        raw = base64.b64decode(parts[1], validate=True)
    except (binascii.Error, ValueError):
        raise ValueError("the key is not valid base64") from None
    if len(raw) != 32:
        raise ValueError(f"an ed25519 public key is 32 bytes, this one is {len(raw)}")
    rest = parts[2:]
    if rest and KEY_ID_RE.fullmatch(rest[0]):
        if rest[0] != key_id_of(raw):
            raise ValueError(f"key id {rest[0]} does not match the key ({key_id_of(raw)})")
        rest = rest[1:]
    name = " ".join(rest).strip() or None
    return raw, name


def parse_public_key(text: str) -> bytes:
    """The raw 32-byte key from a public key line; ``ValueError`` if it is not one.

    A key id after the base64, when present, must match the key: it catches copy-paste damage.
    """
    return _parse_line(text)[0]


class SigningKey:
    """A private ed25519 key used to sign packages (``plughub package --sign``)."""

    def __init__(self, private: Ed25519PrivateKey) -> None:
        self._private = private
        self._public = private.public_key().public_bytes(
            serialization.Encoding.Raw, serialization.PublicFormat.Raw
        )
        self.key_id = key_id_of(self._public)

    def __repr__(self) -> str:  # never the key material
        return f"SigningKey(key_id={self.key_id!r})"

    @classmethod
    def generate(cls) -> SigningKey:
        return cls(Ed25519PrivateKey.generate())

    def public_bytes(self) -> bytes:
        """The raw 32-byte public key."""
        return self._public

    def sign(self, data: bytes) -> bytes:
        """The 64-byte ed25519 signature of ``data``."""
        return self._private.sign(data)

    def save(self, path: Path) -> None:
        """Write the key as PKCS#8 PEM with mode 0600; refuses to overwrite (``FileExistsError``).

        ``O_EXCL|O_NOFOLLOW`` so that an existing file or a planted symlink is never clobbered.
        """
        pem = self._private.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
        flags = os.O_WRONLY | os.O_CREAT | os.O_EXCL | getattr(os, "O_NOFOLLOW", 0)
        fd = os.open(path, flags | getattr(os, "O_CLOEXEC", 0), 0o600)
        try:
            if hasattr(os, "fchmod"):
                os.fchmod(fd, 0o600)
            view = memoryview(pem)
            while view:
                view = view[os.write(fd, view) :]
        except BaseException:
            os.close(fd)
            Path(path).unlink(missing_ok=True)
            raise
        os.close(fd)

    @classmethod
    def load(cls, path: Path) -> SigningKey:
        """Read a key written by :meth:`save`; ``ValueError`` if it is not an ed25519 key."""
        with open(path, "rb") as fh:
            data = fh.read(_MAX_KEY_FILE + 1)
        if len(data) > _MAX_KEY_FILE:
            raise ValueError(f"{path}: too large for a private key")
        try:
            private = serialization.load_pem_private_key(data, password=None)
        except (ValueError, TypeError) as exc:
            raise ValueError(f"{path}: not an unencrypted PEM private key ({exc})") from None
        if not isinstance(private, Ed25519PrivateKey):
            raise ValueError(f"{path}: not an ed25519 key")
        return cls(private)


class TrustStore:
    """The public keys whose signatures an operator accepts: ``<root>/<key_id>.pub`` files.

    One file per key, each holding its public key line (plus the name), so the store can be
    inspected, copied and provisioned with ordinary tools. A file whose key does not hash to
    its file name is ignored.
    """

    def __init__(self, root: Path) -> None:
        self.root = Path(root)

    def _file(self, key_id: str) -> Path:
        return self.root / f"{key_id}.pub"

    def add(self, text_or_bytes: str | bytes, name: str | None = None) -> str:
        """Trust a key (a public key line, or the raw 32 bytes); return its key id.

        ``name`` defaults to the name at the end of the line. Adding a trusted key again
        replaces its name.
        """
        if isinstance(text_or_bytes, bytes):
            raw, line_name = text_or_bytes, None
            key_id_of(raw)  # validates the length
        else:
            raw, line_name = _parse_line(text_or_bytes)
        label = (name if name is not None else line_name) or None
        if label is not None:
            label = label.strip()
            if any(ord(c) < 0x20 or ord(c) == 0x7F for c in label):
                raise ValueError("a key name must be one line of printable text")
        key_id = key_id_of(raw)
        text = public_key_text(raw) + (f" {label}" if label else "") + "\n"
        self.root.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(prefix=f".{key_id}.", suffix=".tmp", dir=self.root)
        try:
            with os.fdopen(fd, "w", encoding="utf-8") as fh:
                fh.write(text)
            os.chmod(tmp, 0o644)
            os.replace(tmp, self._file(key_id))
        except BaseException:
            Path(tmp).unlink(missing_ok=True)
            raise
        return key_id

    def remove(self, key_id: str) -> bool:
        """Stop trusting a key; ``False`` if it was not trusted. ``ValueError`` for a bad id."""
        if not KEY_ID_RE.fullmatch(key_id):
            raise ValueError(f"{key_id!r} is not a key id (16 lowercase hex digits)")
        try:
            self._file(key_id).unlink()
        except FileNotFoundError:
            return False
        return True

    def _read(self, key_id: str) -> tuple[bytes, str | None] | None:
        if not KEY_ID_RE.fullmatch(key_id):
            return None
        try:
            with open(self._file(key_id), encoding="utf-8") as fh:
                text = fh.read(_MAX_KEY_FILE)
            raw, name = _parse_line(text)
        except (OSError, ValueError):
            return None
        return (raw, name) if key_id_of(raw) == key_id else None

    def get(self, key_id: str) -> bytes | None:
        """The raw public key with this id, or ``None`` when it is not trusted."""
        found = self._read(key_id)
        return found[0] if found else None

    def list(self) -> builtins.list[tuple[str, str | None]]:
        """``(key_id, name)`` of every trusted key, sorted by key id."""
        if not self.root.is_dir():
            return []
        found = []
        for file in sorted(self.root.glob("*.pub")):
            entry = self._read(file.stem)
            if entry is not None:
                found.append((file.stem, entry[1]))
        return found

    def verify(self, key_id: str, data: bytes, signature: bytes) -> bool:
        """Whether ``signature`` is a valid signature of ``data`` by the trusted key ``key_id``."""
        raw = self.get(key_id)
        if raw is None:
            return False
        try:
            Ed25519PublicKey.from_public_bytes(raw).verify(signature, data)
        except (InvalidSignature, ValueError):
            return False
        return True
