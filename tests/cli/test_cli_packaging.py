"""``package``, ``verify`` and ``keys``: an author signs, an operator trusts and verifies; every
refusal exits 1 with its reason, every usage mistake exits 2."""

from __future__ import annotations

import json
import stat
import zipfile
from pathlib import Path

import pytest
from typer.testing import CliRunner, Result

from plughub.cli import app
from plughub.packages import META_NAME, TrustStore, read_package

MANIFEST = "id: acme/greet\nversion: 1.2.0\ndescription: Greets.\nentrypoint: plugin\n"
CODE = "from plughub.sdk import tool\n\n\n@tool\ndef hi() -> str:\n    return 'hi'\n"

runner = CliRunner()


@pytest.fixture
def home(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    path = tmp_path / "home"
    monkeypatch.setenv("PLUGHUB_HOME", str(path))
    return path


@pytest.fixture
def plugin(tmp_path: Path) -> Path:
    src = tmp_path / "greet"
    src.mkdir()
    (src / "plugin.yaml").write_text(MANIFEST)
    (src / "plugin.py").write_text(CODE)
    return src


def run(*args: str) -> Result:
    return runner.invoke(app, list(args))


def test_generate_writes_a_private_and_a_public_key(home):
    result = run("keys", "generate", "alice")
    assert result.exit_code == 0, result.stderr
    line = result.stdout.strip()
    assert line.startswith("ed25519 ") and line.endswith(" alice")
    private, public = home / "keys" / "alice.key", home / "keys" / "alice.pub"
    assert stat.S_IMODE(private.stat().st_mode) == 0o600
    assert public.read_text().strip() == line
    assert "keep it secret" in result.stderr


def test_generate_into_a_chosen_folder_and_never_overwrite(home, tmp_path):
    assert run("keys", "generate", "bob", "--dir", str(tmp_path / "k")).exit_code == 0
    before = (tmp_path / "k" / "bob.key").read_bytes()
    again = run("keys", "generate", "bob", "--dir", str(tmp_path / "k"))
    assert again.exit_code == 2 and "not overwriting" in again.stderr
    assert (tmp_path / "k" / "bob.key").read_bytes() == before


@pytest.mark.parametrize("name", ["../evil", ".hidden", "a/b", "", "x" * 65])
def test_generate_refuses_a_bad_key_name(home, name):
    result = run("keys", "generate", "--", name)
    assert result.exit_code == 2 and "invalid key name" in result.stderr
    assert not (home / "keys").exists()


def test_trust_list_untrust(home):
    run("keys", "generate", "alice")
    pub = home / "keys" / "alice.pub"
    trusted = run("keys", "trust", str(pub))
    assert trusted.exit_code == 0, trusted.stderr
    key_id = trusted.stdout.split()[1]
    assert trusted.stdout.strip() == f"trusted {key_id} (alice)"
    assert run("keys", "list").stdout.split() == [key_id, "alice"]
    # the line itself works too, and --name relabels
    relabel = run("keys", "trust", pub.read_text().strip(), "--name", "Alice A.")
    assert relabel.exit_code == 0 and "(Alice A.)" in relabel.stdout
    listed = json.loads(run("keys", "list", "--json").stdout)
    assert listed == [{"key_id": key_id, "name": "Alice A."}]
    assert run("keys", "untrust", key_id).stdout.strip() == f"untrusted {key_id}"
    assert run("keys", "list").stdout == ""
    gone = run("keys", "untrust", key_id)
    assert gone.exit_code == 2 and "not trusted" in gone.stderr
    bad = run("keys", "untrust", "../x")
    assert bad.exit_code == 2 and "not a key id" in bad.stderr


def test_trust_refuses_what_is_not_a_key(home, tmp_path):
    (tmp_path / "junk.pub").write_text("ed25519 nope")
    for arg in (str(tmp_path / "junk.pub"), "ed25519 AAAA", str(tmp_path / "missing.pub")):
        result = run("keys", "trust", arg)
        assert result.exit_code == 2, arg
        assert result.stderr.startswith("error: ")
    assert TrustStore(home / "trust").list() == []


def test_package_sign_verify(home, plugin, tmp_path):
    run("keys", "generate", "alice")
    run("keys", "trust", str(home / "keys" / "alice.pub"))
    built = run("package", str(plugin), "--sign", str(home / "keys" / "alice.key"))
    assert built.exit_code == 0, built.stderr
    pkg = tmp_path / "greet-1.2.0.plughub"
    info = read_package(pkg)
    lines = built.stdout.splitlines()
    assert lines[0] == str(pkg)
    assert f"checksum  {info.checksum}" in lines and f"key id    {info.key_id}" in lines
    assert "id        acme/greet" in lines and "version   1.2.0" in lines
    verified = run("verify", str(pkg))
    assert verified.exit_code == 0, verified.stderr
    assert verified.stdout.startswith("ok: acme/greet 1.2.0")
    assert f"signed by {info.key_id} (alice), verified" in verified.stdout
    report = json.loads(run("verify", str(pkg), "--json").stdout)
    assert report["valid"] and report["trusted"] and report["key_name"] == "alice"
    assert report["checksum"] == info.checksum and report["files"] == 2


def test_package_json_and_output_path(home, plugin, tmp_path):
    out = tmp_path / "dist" / "g.plughub"
    out.parent.mkdir()
    result = run("package", str(plugin), "-o", str(out), "--json")
    assert result.exit_code == 0, result.stderr
    data = json.loads(result.stdout)
    assert data["path"] == str(out) and data["key_id"] is None and data["files"] == 2


def test_verify_refusals_exit_1_with_the_reason(home, plugin, tmp_path):
    pkg = tmp_path / "u.plughub"
    run("package", str(plugin), "-o", str(pkg))
    unsigned = run("verify", str(pkg))
    assert unsigned.exit_code == 1 and "(unsigned)" in unsigned.stderr
    assert run("verify", str(pkg), "--allow-unsigned").exit_code == 0
    report = json.loads(run("verify", str(pkg), "--json").stdout)
    assert report["valid"] is False and report["reason"] == "unsigned"

    tampered = tmp_path / "t.plughub"
    with zipfile.ZipFile(pkg) as zin, zipfile.ZipFile(tampered, "w") as zout:
        for info in zin.infolist():
            data = zin.read(info)
            zout.writestr(info, data + b"# evil\n" if info.filename == "plugin.py" else data)
    result = run("verify", str(tampered), "--allow-unsigned")
    assert result.exit_code == 1 and "(checksum_mismatch)" in result.stderr

    run("keys", "generate", "stranger")
    signed = tmp_path / "s.plughub"
    run("package", str(plugin), "-o", str(signed), "--sign", str(home / "keys" / "stranger.key"))
    untrusted = run("verify", str(signed))
    assert untrusted.exit_code == 1 and "(untrusted_key)" in untrusted.stderr
    allowed = run("verify", str(signed), "--allow-untrusted")
    assert allowed.exit_code == 0 and "NOT verified" in allowed.stdout

    (tmp_path / "noise.plughub").write_bytes(b"not a zip at all" * 10)
    noise = run("verify", str(tmp_path / "noise.plughub"))
    assert noise.exit_code == 1 and "(not_a_zip)" in noise.stderr


def test_usage_errors_exit_2(home, plugin, tmp_path):
    assert run("verify", str(tmp_path / "missing.plughub")).exit_code == 2
    assert run("package", str(tmp_path / "nowhere")).exit_code == 2
    (tmp_path / "bad.key").write_text("nope")
    bad_key = run("package", str(plugin), "--sign", str(tmp_path / "bad.key"))
    assert bad_key.exit_code == 2 and "cannot load signing key" in bad_key.stderr
    (plugin / "plugin.yaml").write_text("id: nope\n")
    bad_manifest = run("package", str(plugin))
    assert bad_manifest.exit_code == 2 and "plugin.yaml" in bad_manifest.stderr
    (plugin / "plugin.yaml").write_text(MANIFEST)
    (plugin / "link").symlink_to("/etc/hostname")
    link = run("package", str(plugin))
    assert link.exit_code == 2 and "symbolic link" in link.stderr


def test_the_real_script_signs_and_verifies(sh, plugin, tmp_path):
    env = {"PLUGHUB_HOME": str(tmp_path / "script-home")}
    made = sh("keys", "generate", "ci", plugins=False, extra_env=env)
    assert made.returncode == 0, made.stderr
    key = tmp_path / "script-home" / "keys" / "ci.key"
    assert (
        sh("keys", "trust", str(key.with_suffix(".pub")), plugins=False, extra_env=env).returncode
        == 0
    )
    built = sh("package", str(plugin), "--sign", str(key), plugins=False, extra_env=env)
    assert built.returncode == 0, built.stderr
    pkg = Path(built.stdout.decode().splitlines()[0])
    ok = sh("verify", str(pkg), "--json", plugins=False, extra_env=env)
    assert ok.returncode == 0, ok.stderr
    assert json.loads(ok.stdout)["trusted"] is True
    with zipfile.ZipFile(pkg) as zf:
        assert json.loads(zf.read(META_NAME))["signature"]["algorithm"] == "ed25519"
    refused = sh("verify", str(pkg), plugins=False, extra_env={"PLUGHUB_HOME": str(tmp_path / "x")})
    assert refused.returncode == 1 and b"(untrusted_key)" in refused.stderr
