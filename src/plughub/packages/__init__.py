"""``.plughub`` packages: build, sign, verify and extract plugin archives.

Typical use::

    from plughub.packages import SigningKey, TrustStore, build_package, verify_package, home

    key = SigningKey.load(Path("acme.key"))
    pkg = build_package(Path("plugins/weather"), key=key)        # weather-1.0.0.plughub
    info = verify_package(pkg, TrustStore(home() / "trust"))      # raises PackageError(reason)

Every package is hostile until checked: reading enforces :class:`PackageLimits` on the bytes
actually inflated, never only on zip headers. The format is described in ``docs/packages.md``.
"""

from __future__ import annotations

from ._format import (
    FORMAT_VERSION,
    META_NAME,
    PACKAGE_SUFFIX,
    SIGNATURE_DOMAIN,
    PackageInfo,
    build_package,
    check_signature,
    checksum_listing,
    extract_package,
    read_package,
    signed_message,
    verify_package,
)
from ._keys import SigningKey, TrustStore, home, key_id_of, parse_public_key, public_key_text
from ._limits import PackageLimits

__all__ = [
    "FORMAT_VERSION",
    "META_NAME",
    "PACKAGE_SUFFIX",
    "SIGNATURE_DOMAIN",
    "PackageInfo",
    "PackageLimits",
    "SigningKey",
    "TrustStore",
    "build_package",
    "check_signature",
    "checksum_listing",
    "extract_package",
    "home",
    "key_id_of",
    "parse_public_key",
    "public_key_text",
    "read_package",
    "signed_message",
    "verify_package",
]

# --- installing (install/upgrade/rollback/uninstall, sources, on-disk state) -------------------
from ._install import PHASES, Installer, InstallPlan, InstallResult
from ._sources import (
    Index,
    IndexEntry,
    IndexVersion,
    LocalPackage,
    load_index,
    open_source,
)
from ._store import PluginState, VersionRecord, recover

__all__ += [
    "PHASES",
    "Index",
    "IndexEntry",
    "IndexVersion",
    "InstallPlan",
    "InstallResult",
    "Installer",
    "LocalPackage",
    "PluginState",
    "VersionRecord",
    "load_index",
    "open_source",
    "recover",
]
