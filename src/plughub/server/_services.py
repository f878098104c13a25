"""``Services``: the shared state a replica works against — the store and the limits backends.

Everything another replica needs lives here, never in a process: tenants, keys, installations,
credentials, tasks and audit in the store (SQLite file or PostgreSQL); rate limits, concurrency
leases and change notifications in the limits backends (memory for one process, Redis for
several). ``build_services`` opens them for a ``ServerConfig`` on its embedded defaults: a
SQLite file and a credential key file in the plughub home, both created on first start.
"""

from __future__ import annotations

import logging
import os
from dataclasses import dataclass
from pathlib import Path

from ..errors import StoreError
from ..limits import LimitsBackends, create_backends
from ..store import Keyring, Store, generate_key
from ._config import ServerConfig

__all__ = ["Services", "build_services", "server_home"]

log = logging.getLogger("plughub.server")

SECRET_KEY_FILE = "secret.key"
ADMIN_KEY_FILE = "admin.key"
DEFAULT_TENANT = "default"


def server_home(config: ServerConfig) -> Path:
    """The folder of the daemon's own files: ``config.home``, else the plughub home."""
    if config.home is not None:
        return Path(config.home)
    from ..packages import home

    return home()


def _write_private(path: Path, text: str) -> None:
    """Create ``path`` readable by its owner only (fails if it exists: never overwrite a key)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "w", encoding="utf-8") as f:
        f.write(text)


def _keyring(config: ServerConfig, home: Path) -> Keyring:
    """The credential keyring: from the environment (``PLUGHUB_SECRET_KEY[_FILE]``), else the
    key file in the home, generated on first start."""
    ring = Keyring.from_env()
    if ring is not None:
        return ring
    path = home / SECRET_KEY_FILE
    if not path.exists():
        try:
            _write_private(path, generate_key() + "\n")
            log.warning(
                "generated the credential key %s: back it up with the database (without it "
                "stored credentials cannot be read)",
                path,
            )
        except FileExistsError:  # another replica on the same home made it first
            pass
    return Keyring.from_file(path)


@dataclass
class Services:
    """The store and the limits backends of one replica."""

    store: Store
    limits: LimitsBackends
    home: Path

    @property
    def replica_id(self) -> str:
        return self.limits.replica_id

    def bootstrap_admin(self, config: ServerConfig) -> Path | None:
        """On a first start with no tenant and no configured key, create tenant ``default`` and
        an admin key, written once to ``<home>/admin.key`` (mode 600); returns that path."""
        if config.api_keys or self.store.list_tenants():
            return None
        path = self.home / ADMIN_KEY_FILE
        try:
            self.store.create_tenant(DEFAULT_TENANT, "created on first start")
        except StoreError:  # another replica starting at the same time made it
            return None
        new = self.store.tenant(DEFAULT_TENANT).create_key("admin", "bootstrap")
        path.unlink(missing_ok=True)  # a stale key file from a deleted database
        _write_private(path, new.token + "\n")
        log.warning("first start: created tenant %r; its admin key is in %s", DEFAULT_TENANT, path)
        return path

    async def aclose(self) -> None:
        await self.limits.aclose()
        self.store.close()


def build_services(config: ServerConfig) -> Services:
    """Open (and migrate) the store and create the limits backends for ``config``."""
    home = server_home(config)
    url = config.store_url or f"sqlite:///{home / 'store.db'}"
    store = Store(url, keyring=_keyring(config, home))
    try:
        store.migrate()
        limits = create_backends(config.limits)
    except BaseException:
        store.close()
        raise
    return Services(store, limits, home)
