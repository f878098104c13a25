"""``package``, ``verify`` and ``keys``: build and sign a package, check one, manage trust.

``plughub.packages`` (and with it ``cryptography``) is imported inside the commands, so the
other commands do not pay for it at start-up. Keys live in ``$PLUGHUB_HOME/keys`` and the
trust store in ``$PLUGHUB_HOME/trust`` (see ``plughub.packages.home``).
"""

from __future__ import annotations

import re
import sys
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any

import typer

from ._common import EXIT_FAILED, CliError, guarded, write_json, write_line

if TYPE_CHECKING:
    from ..packages import PackageInfo

__all__ = ["keys_app", "package_command", "verify_command"]

#: A key name: becomes ``NAME.key``/``NAME.pub``, so no separators and no leading dot.
KEY_NAME_RE = re.compile(r"[A-Za-z0-9_][A-Za-z0-9._-]{0,63}", re.ASCII)
_MAX_PUB_FILE = 64 * 1024

keys_app = typer.Typer(
    name="keys",
    help="Signing keys (generate) and the keys whose packages you accept (trust, list, untrust).",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
    rich_markup_mode=None,
    context_settings={"help_option_names": ["-h", "--help"]},
)


def _home() -> Path:
    from ..packages import home

    return home()


def _signer(info: PackageInfo) -> str:
    return info.key_id or "unsigned"


@guarded
def package_command(
    folder: Annotated[
        Path, typer.Argument(metavar="DIR", help="The plugin folder (with plugin.yaml).")
    ],
    sign: Annotated[
        Path | None,
        typer.Option("--sign", metavar="KEYFILE", help="Sign with this private key (NAME.key)."),
    ] = None,
    output: Annotated[
        Path | None,
        typer.Option(
            "--output", "-o", metavar="OUT", help="Package file (default: ../NAME-VERSION.plughub)."
        ),
    ] = None,
    as_json: Annotated[bool, typer.Option("--json", help="Print the result as JSON.")] = False,
) -> None:
    """Build a .plughub package from a plugin folder, optionally signed.

    The same files always give the same bytes. Dotfiles, __pycache__, *.pyc and *.plughub are
    left out; symlinks and invalid manifests are refused (exit 2).
    """
    from ..packages import SigningKey, build_package, read_package

    if not folder.is_dir():
        raise CliError(f"{folder}: not a folder")
    key = None
    if sign is not None:
        try:
            key = SigningKey.load(sign)
        except (OSError, ValueError) as exc:
            raise CliError(f"cannot load signing key: {exc}") from None
    path = build_package(folder, output, key=key)
    info = read_package(path)
    if as_json:
        write_json(
            {
                "path": str(path),
                "id": info.id,
                "version": info.version,
                "checksum": info.checksum,
                "key_id": info.key_id,
                "files": len(info.files),
                "size": info.size,
            }
        )
        return
    write_line(str(path))
    write_line(f"id        {info.id}")
    write_line(f"version   {info.version}")
    write_line(f"checksum  {info.checksum}")
    write_line(f"key id    {_signer(info)}")
    write_line(f"files     {len(info.files)} ({info.size} bytes)")


@guarded
def verify_command(
    package: Annotated[Path, typer.Argument(metavar="PKG", help="The .plughub file to check.")],
    allow_unsigned: Annotated[
        bool, typer.Option("--allow-unsigned", help="Accept a package without a signature.")
    ] = False,
    allow_untrusted: Annotated[
        bool,
        typer.Option(
            "--allow-untrusted",
            help="Accept a signature by a key not in the trust store (it cannot be verified).",
        ),
    ] = False,
    as_json: Annotated[bool, typer.Option("--json", help="Print the result as JSON.")] = False,
) -> None:
    """Check a package: safe, intact, and signed by a trusted key.

    Exit 0 when it is; 1 with the reason (bad_signature, untrusted_key, unsigned,
    checksum_mismatch, zip_bomb...) when it is not; 2 when PKG does not exist.
    """
    from ..errors import PackageError
    from ..packages import TrustStore, verify_package

    if not package.is_file():
        raise CliError(f"{package}: no such file")
    trust = TrustStore(_home() / "trust")
    try:
        info = verify_package(
            package, trust, allow_unsigned=allow_unsigned, allow_untrusted=allow_untrusted
        )
    except PackageError as exc:
        if as_json:
            write_json(
                {"path": str(package), "valid": False, "reason": exc.reason, "error": exc.message}
            )
        else:
            sys.stderr.write(f"error: {exc} ({exc.reason})\n")
        raise typer.Exit(EXIT_FAILED) from None
    names = dict(trust.list())
    trusted = info.key_id is not None and info.key_id in names
    report: dict[str, Any] = {
        "path": str(package),
        "valid": True,
        "reason": None,
        "id": info.id,
        "version": info.version,
        "checksum": info.checksum,
        "files": len(info.files),
        "signed": info.signature is not None,
        "key_id": info.key_id,
        "key_name": names.get(info.key_id) if info.key_id else None,
        "trusted": trusted,
    }
    if as_json:
        write_json(report)
        return
    if info.key_id is None:
        signer = "unsigned (allowed by --allow-unsigned)"
    elif trusted:
        name = report["key_name"]
        signer = f"signed by {info.key_id}" + (f" ({name})" if name else "") + ", verified"
    else:
        signer = f"signed by {info.key_id}, NOT verified (untrusted key, --allow-untrusted)"
    write_line(f"ok: {info.id} {info.version}")
    write_line(f"checksum  {info.checksum}")
    write_line(f"files     {len(info.files)}")
    write_line(f"signature {signer}")


@keys_app.command("generate")
@guarded
def keys_generate_command(
    name: Annotated[str, typer.Argument(metavar="NAME", help="Key name: NAME.key and NAME.pub.")],
    directory: Annotated[
        Path | None,
        typer.Option(
            "--dir", "-d", metavar="DIR", help="Where to write (default: PLUGHUB_HOME/keys)."
        ),
    ] = None,
) -> None:
    """Create a signing key pair: NAME.key (private, mode 0600) and NAME.pub.

    Prints the public key line to publish; never overwrites an existing key.
    """
    from ..packages import SigningKey, public_key_text

    if not KEY_NAME_RE.fullmatch(name):
        raise CliError(
            f"invalid key name {name!r}: 1-64 letters, digits, '.', '_', '-', not starting with '.'"
        )
    folder = directory if directory is not None else _home() / "keys"
    private, public = folder / f"{name}.key", folder / f"{name}.pub"
    for path in (private, public):
        if path.exists() or path.is_symlink():
            raise CliError(f"{path} exists; not overwriting a key")
    key = SigningKey.generate()
    line = public_key_text(key.public_bytes())
    try:
        folder.mkdir(parents=True, exist_ok=True)
        key.save(private)
        with open(public, "x", encoding="utf-8") as fh:
            fh.write(f"{line} {name}\n")
    except OSError as exc:
        raise CliError(f"cannot write the key: {exc}") from None
    sys.stderr.write(
        f"wrote {private} (private: keep it secret) and {public}\n"
        f"sign with: plughub package DIR --sign {private}\n"
    )
    write_line(f"{line} {name}")


@keys_app.command("trust")
@guarded
def keys_trust_command(
    key: Annotated[
        str,
        typer.Argument(
            metavar="PUBFILE_OR_TEXT", help="A .pub file, or the line 'ed25519 <base64> ...'."
        ),
    ],
    name: Annotated[
        str | None,
        typer.Option("--name", metavar="N", help="A label (default: the name in the key line)."),
    ] = None,
) -> None:
    """Accept packages signed by this key."""
    from ..packages import TrustStore

    text = key
    if not key.lstrip().startswith("ed25519 "):
        path = Path(key)
        try:
            with open(path, encoding="utf-8") as fh:
                text = fh.read(_MAX_PUB_FILE)
        except (OSError, UnicodeDecodeError) as exc:
            raise CliError(
                f"{key}: neither a public key line nor a readable file ({exc})"
            ) from None
    store = TrustStore(_home() / "trust")
    try:
        key_id = store.add(text, name)
    except ValueError as exc:
        raise CliError(f"not a public key: {exc}") from None
    label = dict(store.list()).get(key_id)
    write_line(f"trusted {key_id}" + (f" ({label})" if label else ""))


@keys_app.command("list")
@guarded
def keys_list_command(
    as_json: Annotated[bool, typer.Option("--json", help="Print a JSON list.")] = False,
) -> None:
    """List the trusted keys (key id and name)."""
    from ..packages import TrustStore

    keys = TrustStore(_home() / "trust").list()
    if as_json:
        write_json([{"key_id": key_id, "name": name} for key_id, name in keys])
        return
    if not keys:
        sys.stderr.write("no trusted keys (add one with: plughub keys trust FILE.pub)\n")
        return
    for key_id, name in keys:
        write_line(f"{key_id}  {name or ''}".rstrip())


@keys_app.command("untrust")
@guarded
def keys_untrust_command(
    key_id: Annotated[str, typer.Argument(metavar="KEY_ID", help="16 hex digits (keys list).")],
) -> None:
    """Stop accepting packages signed by this key."""
    from ..packages import TrustStore

    try:
        removed = TrustStore(_home() / "trust").remove(key_id)
    except ValueError as exc:
        raise CliError(str(exc)) from None
    if not removed:
        raise CliError(f"key {key_id} is not trusted")
    write_line(f"untrusted {key_id}")
