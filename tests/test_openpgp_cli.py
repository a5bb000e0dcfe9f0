"""`triaged key generate`, `key export`, `check` and `security-txt` with [openpgp]."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

from conftest import People
from helpers import base_sections, write_config
from servers import ImapAccount, SmtpSink

ROOT = Path(__file__).parent.parent


def _triaged(*args: str) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    return subprocess.run(
        [sys.executable, "-m", "triaged", *args],
        capture_output=True,
        text=True,
        timeout=120,
        env=env,
    )


def _config(directory: Path, **openpgp: object) -> Path:
    sections = base_sections(directory)
    sections["openpgp"] = {"secret_key_file": "project-key.asc", **openpgp}
    return write_config(directory, sections=sections)


def test_key_generate_then_export_and_security_txt(tmp_dir: Path) -> None:
    config = _config(tmp_dir)
    made = _triaged("--config", str(config), "key", "generate")
    assert made.returncode == 0, made.stderr
    secret = tmp_dir / "project-key.asc"
    assert secret.stat().st_mode & 0o777 == 0o600
    assert secret.read_text().startswith("-----BEGIN PGP PRIVATE KEY BLOCK-----")
    fingerprint = made.stdout.split()[1]
    assert len(fingerprint) == 40

    again = _triaged("--config", str(config), "key", "generate")
    assert again.returncode == 1 and "exists already" in again.stderr

    exported = _triaged("--config", str(config), "key", "export")
    assert exported.returncode == 0, exported.stderr
    assert exported.stdout.startswith("-----BEGIN PGP PUBLIC KEY BLOCK-----")
    assert "PRIVATE" not in exported.stdout
    assert fingerprint in exported.stderr

    txt = _triaged("--config", str(config), "security-txt")
    assert f"Encryption: openpgp4fpr:{fingerprint.lower()}\n" in txt.stdout
    # The command line never writes into the daemon's GnuPG home.
    assert not (tmp_dir / "gnupg").exists()


def test_security_txt_encryption_setting_wins(tmp_dir: Path, people: People) -> None:
    sections = base_sections(tmp_dir)
    sections["openpgp"] = {"secret_key_file": "project-key.asc"}
    sections["security_txt"] = {"encryption": ["https://example.org/pgp.txt"]}
    (tmp_dir / "project-key.asc").write_bytes(people.project.secret_key)
    config = write_config(tmp_dir, sections=sections)
    txt = _triaged("--config", str(config), "security-txt").stdout
    assert "Encryption: https://example.org/pgp.txt\n" in txt
    assert "openpgp4fpr" not in txt


def test_check_says_the_key_decrypts(
    tmp_dir: Path, imap_account: ImapAccount, smtp_sink: SmtpSink, people: People
) -> None:
    sections = base_sections(
        tmp_dir,
        mailbox_url=imap_account.url(),
        smtp_url=smtp_sink.url,
        password_file=str(imap_account.password_file),
    )
    sections["openpgp"] = {"secret_key_file": "project-key.asc", "public_keys": ["keys/*.asc"]}
    (tmp_dir / "project-key.asc").write_bytes(people.project.secret_key)
    (tmp_dir / "keys").mkdir()
    (tmp_dir / "keys" / "alice.asc").write_bytes(people.alice.public_key)
    config = write_config(tmp_dir, sections=sections)
    result = _triaged("--config", str(config), "check")
    assert result.returncode == 0, result.stdout + result.stderr
    assert f"openpgp: ok (key {people.project.fingerprint} encrypts, signs and decrypts)" in (
        result.stdout
    )

    # A public key where the secret key should be: the check fails and says why.
    (tmp_dir / "project-key.asc").write_bytes(people.project.public_key)
    result = _triaged("--config", str(config), "check")
    assert result.returncode == 1
    assert "openpgp: FAILED" in result.stdout
    assert "openpgp.secret_key_file" in result.stdout and "no OpenPGP secret key" in result.stdout


def test_bad_openpgp_settings_name_the_key(tmp_dir: Path) -> None:
    config = _config(tmp_dir, encrypted_to_maintainers="always")
    result = _triaged("--config", str(config), "reports")
    assert result.returncode == 2
    assert f"{config}: openpgp.encrypted_to_maintainers:" in result.stderr

    config = _config(tmp_dir, public_keys=["missing.asc"])
    (tmp_dir / "project-key.asc").write_text("not a key\n")
    result = _triaged("--config", str(config), "key", "export")
    assert result.returncode == 2
    assert "openpgp.secret_key_file" in result.stderr


def test_readme_and_example_config_document_openpgp() -> None:
    readme = (ROOT / "README.md").read_text()
    assert "## Encrypted mail" in readme
    assert "### Set-up in four steps" in readme
    assert "### What is encrypted when" in readme
    assert "### What is stored in clear in the database, and why" in readme
    for command in ("`triaged key generate`", "`triaged key export`"):
        assert f"| {command} |" in readme, command
    example = (ROOT / "config.example.toml").read_text()
    section = example.split("[openpgp]", 1)[1]
    for key in ("secret_key_file", "public_keys", "encrypted_to_maintainers", "# home ="):
        assert key in section, key
