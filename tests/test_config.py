"""Configuration errors: one line naming the file and the key, exit status 2."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
from click.testing import CliRunner
from helpers import base_sections, config_text, write_config

from triaged.cli import main
from triaged.config import load, parse_url
from triaged.core.durations import Duration
from triaged.errors import ConfigError


def _error(tmp_path: Path, mutate) -> ConfigError:  # type: ignore[no-untyped-def]
    sections = base_sections(tmp_path)
    mutate(sections)
    path = write_config(tmp_path, sections)
    with pytest.raises(ConfigError) as info:
        load(path)
    assert str(path) in str(info.value)
    return info.value


def test_valid_config_loads_into_a_frozen_object(tmp_path: Path) -> None:
    config = load(write_config(tmp_path))
    assert config.project.address == "security@example.org"
    assert config.policy.acknowledge == Duration(48, "h")
    assert config.mailbox.endpoint.is_maildir
    with pytest.raises(AttributeError):
        config.project = None  # type: ignore[misc]


def test_unknown_key(tmp_path: Path) -> None:
    err = _error(tmp_path, lambda s: s["project"].update(nmae="x"))
    assert err.key == "project.nmae"
    assert "unknown key" in err.message


def test_unknown_section(tmp_path: Path) -> None:
    err = _error(tmp_path, lambda s: s.update(mailboxes={"url": "x"}))
    assert err.key == ".mailboxes" or err.key.endswith("mailboxes")


def test_missing_key(tmp_path: Path) -> None:
    err = _error(tmp_path, lambda s: s["project"].pop("address"))
    assert err.key == "project.address"
    assert "missing" in err.message


def test_missing_section(tmp_path: Path) -> None:
    err = _error(tmp_path, lambda s: s.pop("maintainers"))
    assert err.key == "maintainers"


def test_wrong_type(tmp_path: Path) -> None:
    err = _error(tmp_path, lambda s: s["maintainers"].update(members="alice@example.org"))
    assert err.key == "maintainers.members"
    assert "must be a list" in err.message


def test_wrong_type_int_for_bool_like(tmp_path: Path) -> None:
    err = _error(tmp_path, lambda s: s.update(limits={"max_parts": True}))
    assert err.key == "limits.max_parts"


def test_bad_address(tmp_path: Path) -> None:
    err = _error(tmp_path, lambda s: s["project"].update(address="security at example"))
    assert err.key == "project.address"


@pytest.mark.parametrize(
    "member", ["ali ce@example.org", " alice@example.org", "alice..x@example.org", "\u212aim@x.org"]
)
def test_a_maintainer_is_an_exact_well_formed_address(tmp_path: Path, member: str) -> None:
    err = _error(tmp_path, lambda s: s["maintainers"].update(members=[member]))
    assert err.key == "maintainers.members"
    assert "not a plain e-mail address" in err.message


def test_bad_timezone(tmp_path: Path) -> None:
    err = _error(tmp_path, lambda s: s["project"].update(timezone="Mars/Olympus"))
    assert err.key == "project.timezone"


@pytest.mark.parametrize(
    ("url", "reason"),
    [
        ("pop3://user@host/INBOX", "scheme"),
        ("imaps:///INBOX", "no host"),
        ("imaps://mail.example.org/INBOX", "no user name"),
        ("imap+plain://user@mail.example.org/INBOX", "loopback"),
        ("imap+plain://user@10.0.0.1/INBOX", "loopback"),
        ("imaps://user@host:notaport/INBOX", "port"),
        ("lmtp://mail.example.org:24", "loopback"),
        ("lmtp://0.0.0.0:24", "loopback"),
        ("lmtp://user@127.0.0.1:24", "host and a port only"),
        ("lmtp://127.0.0.1:24/INBOX", "host and a port only"),
        ("lmtp+unix://", "needs a path"),
    ],
)
def test_bad_mailbox_url(tmp_path: Path, url: str, reason: str) -> None:
    def mutate(s):  # type: ignore[no-untyped-def]
        s["mailbox"] = {"url": url, "password_file": str(tmp_path / "pw")}

    (tmp_path / "pw").write_text("secret\n")
    err = _error(tmp_path, mutate)
    assert err.key == "mailbox.url"
    assert reason in err.message


def test_bad_smtp_url(tmp_path: Path) -> None:
    err = _error(tmp_path, lambda s: s["smtp"].update(url="smtp+plain://mail.example.org:25"))
    assert err.key == "smtp.url"
    assert "loopback" in err.message


def test_plain_allowed_on_loopback() -> None:
    ep = parse_url("imap+plain://u@127.0.0.1:1143/INBOX", "mailbox", Path("/"))
    assert (ep.host, ep.port, ep.username, ep.path, ep.tls) == (
        "127.0.0.1",
        1143,
        "u",
        "INBOX",
        "none",
    )
    assert parse_url("smtp+plain://[::1]:25", "smtp", Path("/")).host == "::1"
    assert parse_url("imap://u@mail.example.org/INBOX", "mailbox", Path("/")).tls == "starttls"


def test_lmtp_urls_need_no_login(tmp_path: Path) -> None:
    ep = parse_url("lmtp://127.0.0.1", "mailbox", Path("/"))
    assert (ep.host, ep.port, ep.display()) == ("127.0.0.1", 8024, "lmtp://127.0.0.1:8024")
    ep = parse_url("lmtp+unix:///run/triaged/lmtp.sock", "mailbox", Path("/"))
    assert (ep.path, ep.display()) == (
        "/run/triaged/lmtp.sock",
        "lmtp+unix:///run/triaged/lmtp.sock",
    )
    assert parse_url("lmtp+unix://lmtp.sock", "mailbox", Path("/etc/t")).path == "/etc/t/lmtp.sock"
    # No password_file: triaged is the server.
    config = load(write_config(tmp_path, mailbox_url="lmtp://[::1]:2424"))
    assert config.mailbox.endpoint.is_lmtp and config.mailbox.password is None


def test_bad_duration(tmp_path: Path) -> None:
    err = _error(tmp_path, lambda s: s["policy"].update(acknowledge="two days"))
    assert err.key == "policy.acknowledge"
    assert "not a duration" in err.message


def test_bad_resolve_duration(tmp_path: Path) -> None:
    err = _error(tmp_path, lambda s: s.update({"policy.resolve": {"critical": "14x"}}))
    assert err.key == "policy.resolve.critical"


def test_unreadable_password_file(tmp_path: Path) -> None:
    def mutate(s):  # type: ignore[no-untyped-def]
        s["mailbox"] = {
            "url": "imap+plain://u@127.0.0.1:1143/INBOX",
            "password_file": str(tmp_path / "missing"),
        }

    err = _error(tmp_path, mutate)
    assert err.key == "mailbox.password_file"
    assert "cannot read" in err.message


def test_imap_needs_password_file(tmp_path: Path) -> None:
    err = _error(tmp_path, lambda s: s["mailbox"].update(url="imaps://u@mail.example.org/INBOX"))
    assert err.key == "mailbox.password_file"


def test_password_from_systemd_credential(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    creds = tmp_path / "creds"
    creds.mkdir()
    (creds / "imap-password").write_text("s3cret\n")
    monkeypatch.setenv("CREDENTIALS_DIRECTORY", str(creds))
    sections = base_sections(tmp_path)
    sections["mailbox"] = {
        "url": "imap+plain://u@127.0.0.1/INBOX",
        "password_file": "imap-password",
    }
    config = load(write_config(tmp_path, sections))
    assert config.mailbox.password is not None
    assert config.mailbox.password.reveal() == "s3cret"
    assert "s3cret" not in repr(config)


def test_toml_syntax_error(tmp_path: Path) -> None:
    path = tmp_path / "config.toml"
    path.write_text("[project\nname = 1\n")
    with pytest.raises(ConfigError) as info:
        load(path)
    assert str(path) in str(info.value)


def test_cli_reports_one_line_and_exit_2(tmp_path: Path) -> None:
    sections = base_sections(tmp_path)
    sections["policy"]["respond"] = "5 business days"
    path = write_config(tmp_path, sections)
    result = CliRunner().invoke(main, ["--config", str(path), "check"])
    assert result.exit_code == 2
    lines = [line for line in result.output.splitlines() if line.strip()]
    assert lines == [f"triaged: {path}: policy.respond: " + lines[0].split("policy.respond: ")[1]]


def test_config_path_from_environment(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    path = tmp_path / "env.toml"
    path.write_text(config_text({"project": {}}))
    monkeypatch.setenv("TRIAGED_CONFIG", str(path))
    result = CliRunner().invoke(main, ["reports"])
    assert result.exit_code == 2
    assert str(path) in result.output


def test_default_config_path(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("TRIAGED_CONFIG", raising=False)
    if os.path.exists("/etc/triaged/config.toml"):
        pytest.skip("a real /etc/triaged/config.toml exists on this machine")
    result = CliRunner().invoke(main, ["reports"])
    assert result.exit_code == 2
    assert "/etc/triaged/config.toml" in result.output


def test_example_config_is_valid_and_complete(tmp_path: Path) -> None:
    """config.example.toml documents every key: uncommented it must load."""
    text = (Path(__file__).parent.parent / "config.example.toml").read_text()
    (tmp_path / "pw").write_text("x\n")
    text = text.replace("/etc/triaged/imap-password", str(tmp_path / "pw"))
    path = tmp_path / "example.toml"
    path.write_text(text)
    config = load(path)
    assert config.limits.receipts_per_sender_per_day == 1
