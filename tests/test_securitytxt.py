"""security.txt (RFC 9116) from the config, and the warning before the published one expires."""

from __future__ import annotations

from datetime import UTC, datetime
from email import message_from_bytes
from email.message import EmailMessage
from email.policy import default
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner
from helpers import base_sections, write_config

from triaged.cli import main
from triaged.config import Config, load
from triaged.disclosure import securitytxt
from triaged.errors import ConfigError
from triaged.mail.compose import Composer
from triaged.store.db import Store

NOW = datetime(2026, 11, 22, 9, 30, 15, 123456, tzinfo=UTC)
TEAM = "security-team@example.org"


def _config(tmp_path: Path, **security_txt: Any) -> Config:
    sections = base_sections(tmp_path)
    sections["maintainers"]["team"] = TEAM
    sections["security_txt"] = security_txt
    return load(write_config(tmp_path, sections))


def _error(tmp_path: Path, **security_txt: Any) -> ConfigError:
    with pytest.raises(ConfigError) as info:
        _config(tmp_path, **security_txt)
    return info.value


def test_every_field(tmp_path: Path) -> None:
    config = _config(
        tmp_path,
        contact=["https://example.org/security", "alt-security@example.org"],
        expires_after="90d",
        encryption=["https://example.org/pgp-key.txt", "openpgp4fpr:5f2de5521c63a801ab59ccb6"],
        acknowledgments=["https://example.org/hall-of-fame"],
        policy=["https://example.org/SECURITY.md"],
        preferred_languages=["en", "fr"],
        canonical=["https://example.org/.well-known/security.txt"],
    )
    assert securitytxt.render(config, NOW) == (
        "Contact: mailto:security@example.org\n"
        "Contact: https://example.org/security\n"
        "Contact: mailto:alt-security@example.org\n"
        "Expires: 2027-02-20T09:30:15Z\n"
        "Encryption: https://example.org/pgp-key.txt\n"
        "Encryption: openpgp4fpr:5f2de5521c63a801ab59ccb6\n"
        "Acknowledgments: https://example.org/hall-of-fame\n"
        "Policy: https://example.org/SECURITY.md\n"
        "Preferred-Languages: en, fr\n"
        "Canonical: https://example.org/.well-known/security.txt\n"
    )


def test_defaults_are_the_mailbox_and_an_expiry_180_days_ahead(tmp_path: Path) -> None:
    config = _config(tmp_path)
    assert securitytxt.render(config, NOW) == (
        "Contact: mailto:security@example.org\nExpires: 2027-05-21T09:30:15Z\n"
    )


def test_without_the_section_at_all(tmp_path: Path) -> None:
    config = load(write_config(tmp_path))
    assert securitytxt.render(config, NOW).startswith("Contact: mailto:security@example.org\n")


@pytest.mark.parametrize(
    ("value", "expires"),
    [
        ("2027-06-01", "2027-06-01T00:00:00Z"),
        ("2027-06-01T12:00:00+02:00", "2027-06-01T10:00:00Z"),
    ],
)
def test_a_fixed_expires(tmp_path: Path, value: str, expires: str) -> None:
    config = _config(tmp_path, expires=value)
    assert f"Expires: {expires}\n" in securitytxt.render(config, NOW)
    # The fixed date is also the published one: nothing more to record.
    assert securitytxt.notes(config, NOW) == []


def test_a_toml_date_is_a_date(tmp_path: Path) -> None:
    path = write_config(tmp_path)
    path.write_text(path.read_text() + "\n[security_txt]\npublished_expires = 2027-06-01\n")
    config = load(path)
    assert config.security_txt.published_expires == datetime(2027, 6, 1, tzinfo=UTC)


def test_notes_for_the_publisher(tmp_path: Path) -> None:
    (note,) = securitytxt.notes(_config(tmp_path), NOW)
    assert "set security_txt.published_expires = 2027-05-21T09:30:15Z" in note
    notes = securitytxt.notes(_config(tmp_path, expires_after="400d"), NOW)
    assert "RFC 9116 recommends less than a year" in notes[0]
    (note,) = securitytxt.notes(_config(tmp_path, expires="2026-01-01"), NOW)
    assert "already past" in note


@pytest.mark.parametrize(
    ("keys", "key", "message"),
    [
        ({"expires": "2027-06-01", "expires_after": "90d"}, "expires", "not both"),
        ({"expires_after": "5bd"}, "expires_after", "positive duration"),
        ({"expires": "next year"}, "expires", "not a date"),
        ({"acknowledgments": ["http://example.org/thanks"]}, "acknowledgments", "https://"),
        ({"contact": ["ftp://example.org"]}, "contact", "mailto: or https:// or tel:"),
        ({"canonical": ["https://example.org/a b"]}, "canonical", "not a URI"),
        ({"preferred_languages": ["English"]}, "preferred_languages", "language tag"),
        ({"encryption": "https://example.org/key"}, "encryption", "must be a list"),
        ({"hiring": ["https://example.org/jobs"]}, "hiring", "unknown key"),
    ],
)
def test_config_errors_name_the_key(
    tmp_path: Path, keys: dict[str, Any], key: str, message: str
) -> None:
    err = _error(tmp_path, **keys)
    assert err.key == f"security_txt.{key}"
    assert message in err.message


def _mail(raw: bytes) -> EmailMessage:
    msg = message_from_bytes(raw, policy=default)
    assert isinstance(msg, EmailMessage)
    return msg


def test_the_team_is_warned_once_a_month_before_the_published_expiry(tmp_path: Path) -> None:
    config = _config(tmp_path, published_expires="2027-06-01")
    store = Store(config.database)
    composer = Composer(config)
    assert (
        securitytxt.expiry_notices(config, store, composer, datetime(2027, 5, 1, tzinfo=UTC)) == []
    )
    day = datetime(2027, 5, 3, 9, 0, tzinfo=UTC)
    (warning,) = securitytxt.expiry_notices(config, store, composer, day)
    assert (warning.recipient, warning.kind, warning.report_id) == (TEAM, "security_txt", None)
    msg = _mail(warning.raw)
    assert msg["Subject"] == "security.txt expires on 2027-06-01"
    assert msg["Auto-Submitted"] == "auto-generated"
    body = msg.get_content()
    assert "expires at 2027-06-01T00:00:00Z" in body and "(28 days from now)" in body
    assert "triaged security-txt > security.txt" in body
    # Daily passes after that, and a restart, send nothing more for this date.
    for later in (day, datetime(2027, 5, 4, tzinfo=UTC), datetime(2027, 6, 2, tzinfo=UTC)):
        assert securitytxt.expiry_notices(config, store, composer, later) == []
    assert [tuple(row) for row in store.all("SELECT report_id, key FROM notices")] == [
        ("", "security_txt_expires:2027-06-01T00:00:00Z")
    ]
    # A new file, a new date: warned again when its time comes.
    config = _config(tmp_path, published_expires="2027-12-01")
    assert securitytxt.expiry_notices(config, store, composer, day) == []
    (warning,) = securitytxt.expiry_notices(
        config, store, composer, datetime(2027, 11, 20, tzinfo=UTC)
    )
    assert _mail(warning.raw)["Subject"] == "security.txt expires on 2027-12-01"
    store.close()


def test_a_file_found_already_expired_is_reported_as_expired(tmp_path: Path) -> None:
    config = _config(tmp_path, published_expires="2026-11-01")
    store = Store(config.database)
    (warning,) = securitytxt.expiry_notices(config, store, Composer(config), NOW)
    msg = _mail(warning.raw)
    assert msg["Subject"] == "security.txt expired on 2026-11-01"
    assert "expired at 2026-11-01T00:00:00Z" in msg.get_content()
    store.close()


def test_nothing_published_nothing_to_warn_about(tmp_path: Path) -> None:
    config = _config(tmp_path)
    store = Store(config.database)
    assert securitytxt.expiry_notices(config, store, Composer(config), NOW) == []
    store.close()


def test_cli_security_txt(tmp_path: Path) -> None:
    _config(tmp_path, contact=["https://example.org/security"])
    result = CliRunner().invoke(main, ["--config", str(tmp_path / "config.toml"), "security-txt"])
    assert result.exit_code == 0
    lines = result.stdout.splitlines()
    assert lines[:2] == [
        "Contact: mailto:security@example.org",
        "Contact: https://example.org/security",
    ]
    assert lines[2].startswith("Expires: ") and lines[2].endswith("Z")
    assert "note: once this file is online, set security_txt.published_expires" in result.stderr
