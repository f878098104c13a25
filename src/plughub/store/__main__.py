"""Operator commands for the store: ``python -m plughub.store COMMAND``.

- ``migrate``: upgrade the database schema to the newest revision.
- ``add-key FILE``: append a new random key version to a key file (created with mode 600).
- ``generate-key``: print a new random key (base64), for ``PLUGHUB_SECRET_KEY``.
- ``rotate``: re-encrypt every credential with the newest key version.
- ``key-status``: how many credentials each key version encrypts.

The database is ``--url``, else ``PLUGHUB_STORE_URL``, else the SQLite file in the plughub home.
"""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

from ..errors import StoreError
from ._crypto import Keyring, generate_key
from ._store import Store, default_url


def add_key(path: Path) -> int:
    """Append version N+1 to the key file; returns the new version."""
    existing = path.read_text(encoding="utf-8") if path.exists() else ""
    source = f"key file {str(path)!r}"
    versions = Keyring.parse(existing, source).versions if existing.strip() else ()
    if existing.strip() and len(existing.split()) == 1 and ":" not in existing:
        # A lone unversioned key is version 1: write it back with its version so that the
        # file stays valid once it holds two keys.
        existing = f"1:{existing.strip()}\n"
    version = (versions[-1] if versions else 0) + 1
    text = existing + ("" if not existing or existing.endswith("\n") else "\n")
    text += f"{version}:{generate_key()}\n"
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w", encoding="utf-8") as f:
        f.write(text)
    os.replace(tmp, path)
    return version


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m plughub.store", description="Operator commands for the store."
    )
    parser.add_argument(
        "--url", help="database URL (default: $PLUGHUB_STORE_URL or the home's SQLite file)"
    )
    sub = parser.add_subparsers(dest="command", required=True)
    sub.add_parser("migrate", help="upgrade the schema to the newest revision")
    add = sub.add_parser("add-key", help="append a new key version to a key file")
    add.add_argument("file", type=Path)
    sub.add_parser("generate-key", help="print a new random key")
    sub.add_parser("rotate", help="re-encrypt all credentials with the newest key version")
    sub.add_parser("key-status", help="credentials per key version")
    args = parser.parse_args(argv)
    try:
        if args.command == "generate-key":
            print(generate_key())
            return 0
        if args.command == "add-key":
            version = add_key(args.file)
            print(f"added key version {version} to {args.file}")
            return 0
        with Store(args.url or default_url()) as store:
            if args.command == "migrate":
                store.migrate()
                print(f"{store.url}: schema at revision {store.schema_revision()}")
            elif args.command == "rotate":
                count = store.rotate()
                newest = store.keyring().newest
                print(f"re-encrypted {count} credential(s) with key version {newest}")
            else:
                for version, count in sorted(store.credential_key_versions().items()):
                    print(f"key version {version}: {count} credential(s)")
    except StoreError as e:
        print(f"error: {e}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
