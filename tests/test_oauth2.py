"""OAuth2 (XOAUTH2) for the mailbox and SMTP, against a real Dovecot (oauth2 passdb), an
aiosmtpd sink with AUTH XOAUTH2, and the token endpoint of tests/oauth_server.py."""

from __future__ import annotations

import logging
import os
import signal
import stat
import subprocess
import sys
from collections.abc import Iterator
from email.message import EmailMessage
from pathlib import Path
from typing import Any
from urllib.parse import quote

import pytest
from helpers import (
    MAINTAINERS,
    REPORTER,
    DaemonProcess,
    base_sections,
    count_rows,
    mail,
    wait_until,
    write_config,
)
from oauth_server import TokenServer
from servers import DovecotServer, ImapAccount, SmtpSink

from triaged.config import Config, load
from triaged.errors import ConfigError, TokenError
from triaged.mail.mailbox import open_mailbox
from triaged.mail.oauth2 import (
    TokenManager,
    device_authorization,
    poll_device_token,
    tokens_for,
)
from triaged.mail.transport import open_transport

ROOT = Path(__file__).parent.parent
ALERT = "Alert: the security mailbox cannot be read"
RECOVERED = "Recovered: the security mailbox can be read again"


@pytest.fixture(scope="module")
def token_server() -> Iterator[TokenServer]:
    with TokenServer(rotate=True) as server:
        yield server


@pytest.fixture(scope="module")
def dovecot_oauth(token_server: TokenServer) -> Iterator[DovecotServer]:
    with DovecotServer(oauth2_introspection_url=token_server.introspection_url) as server:
        yield server


@pytest.fixture
def account(dovecot_oauth: DovecotServer) -> ImapAccount:
    return dovecot_oauth.add_user()


@pytest.fixture
def sink(token_server: TokenServer) -> Iterator[SmtpSink]:
    server = SmtpSink(oauth2=token_server.valid).start()
    try:
        yield server
    finally:
        server.stop()


def _sections(
    directory: Path, account: ImapAccount, sink: SmtpSink, server: TokenServer, **oauth2: Any
) -> dict[str, dict[str, Any]]:
    """Both sides on XOAUTH2, with a fresh refresh token for the account in its file."""
    secret = directory / "client-secret"
    secret.write_text(server.client_secret + "\n")
    refresh = directory / "refresh-token"
    refresh.write_text(server.grant(account.user) + "\n")
    refresh.chmod(0o600)
    smtp_url = f"smtp+plain://{quote(account.user)}@{sink.host}:{sink.port}"
    sections = base_sections(directory, mailbox_url=account.url(), smtp_url=smtp_url)
    sections["mailbox"].update(auth="oauth2", poll_interval="1h", connect_timeout="10s")
    sections["smtp"].update(auth="oauth2", retry_initial="1s", retry_max="2s")
    sections["oauth2"] = {
        "token_url": server.token_url,
        "device_authorization_url": server.device_url,
        "client_id": server.client_id,
        "client_secret_file": str(secret),
        "refresh_token_file": str(refresh),
        **oauth2,
    }
    return sections


def _config(
    directory: Path, account: ImapAccount, sink: SmtpSink, server: TokenServer, **oauth2: Any
) -> Config:
    return load(write_config(directory, _sections(directory, account, sink, server, **oauth2)))


def _secrets(server: TokenServer) -> list[str]:
    """Everything that must never reach a log line."""
    return [*server.issued, server.client_secret]


def _assert_no_secret(text: str, server: TokenServer) -> None:
    for value in _secrets(server):
        assert value not in text, "a token or secret was logged"


def _triaged(*args: str, timeout: float = 60) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    return subprocess.run(
        [sys.executable, "-m", "triaged", *args],
        capture_output=True,
        text=True,
        timeout=timeout,
        env=env,
    )


# --- configuration ---------------------------------------------------------------------------


def _minimal(tmp_path: Path, mailbox: dict[str, Any], oauth2: dict[str, Any] | None) -> Path:
    sections = base_sections(tmp_path)
    sections["mailbox"] = mailbox
    if oauth2 is not None:
        sections["oauth2"] = oauth2
    return write_config(tmp_path, sections)


def test_provider_microsoft_fills_token_url_scopes_and_servers(tmp_path: Path) -> None:
    sections = base_sections(tmp_path)
    sections["mailbox"] = {"auth": "oauth2"}
    sections["smtp"] = {"auth": "oauth2"}
    sections["oauth2"] = {"provider": "microsoft", "client_id": "app", "refresh_token_file": "rt"}
    config = load(write_config(tmp_path, sections))
    assert config.oauth2 is not None
    assert config.oauth2.token_url == (
        "https://login.microsoftonline.com/organizations/oauth2/v2.0/token"
    )
    assert config.oauth2.device_authorization_url == (
        "https://login.microsoftonline.com/organizations/oauth2/v2.0/devicecode"
    )
    assert "https://outlook.office.com/IMAP.AccessAsUser.All" in config.oauth2.scope
    assert "offline_access" in config.oauth2.scope
    assert config.oauth2.refresh_token_file == tmp_path / "rt"
    assert config.mailbox.auth == "oauth2" and config.mailbox.password is None
    assert config.mailbox.endpoint.display() == (
        "imaps://security@example.org@outlook.office365.com:993/INBOX"
    )
    assert config.smtp.endpoint.display() == "smtp://security@example.org@smtp.office365.com:587"


def test_provider_google_and_app_only_access(tmp_path: Path) -> None:
    (tmp_path / "secret").write_text("s3cret\n")
    path = _minimal(
        tmp_path,
        {"url": "imaps://security%40example.org@imap.gmail.com/INBOX", "auth": "oauth2"},
        {"provider": "google", "client_id": "id", "refresh_token_file": "rt"},
    )
    config = load(path)
    assert config.oauth2 is not None
    assert config.oauth2.token_url == "https://oauth2.googleapis.com/token"
    assert config.oauth2.scope == ("https://mail.google.com/",)
    assert config.oauth2.device_authorization_url is None
    # Microsoft's app-only access: the tenant's own token URL and the .default scope.
    tenant = "https://login.microsoftonline.com/0000-tenant/oauth2/v2.0/token"
    path = _minimal(
        tmp_path,
        {"url": "imaps://shared%40example.org@outlook.office365.com/INBOX", "auth": "oauth2"},
        {
            "provider": "microsoft",
            "client_id": "id",
            "client_secret_file": "secret",
            "token_url": tenant,
        },
    )
    config = load(path)
    assert config.oauth2 is not None and config.oauth2.refresh_token_file is None
    assert config.oauth2.grant == "client credentials"
    assert config.oauth2.scope == ("https://outlook.office365.com/.default",)


APP_ONLY = {"token_url": "https://login.example/token", "client_id": "id"}
OK_OAUTH2 = {**APP_ONLY, "refresh_token_file": "rt"}
IMAP = "imaps://security@imap.example.org/INBOX"


@pytest.mark.parametrize(
    ("mailbox", "oauth2", "key", "reason"),
    [
        ({"url": IMAP, "auth": "token"}, None, "mailbox.auth", '"password" or "oauth2"'),
        ({"url": IMAP, "auth": "oauth2"}, None, "mailbox.auth", "[oauth2] section"),
        (
            {"url": IMAP, "auth": "oauth2", "password_file": "pw"},
            OK_OAUTH2,
            "mailbox.password_file",
            "not used with auth",
        ),
        ({"url": "maildir:in", "auth": "oauth2"}, OK_OAUTH2, "mailbox.auth", "Maildir"),
        (
            {"url": IMAP, "auth": "oauth2"},
            {**OK_OAUTH2, "token_url": "http://login.example/token"},
            "oauth2.token_url",
            "https://",
        ),
        ({"url": IMAP, "auth": "oauth2"}, {"client_id": "id"}, "oauth2.token_url", "missing"),
        (
            {"url": IMAP, "auth": "oauth2"},
            {"provider": "yahoo", "client_id": "id"},
            "oauth2.provider",
            "google, microsoft",
        ),
        (
            {"url": IMAP, "auth": "oauth2"},
            {"token_url": "https://login.example/token", "refresh_token_file": "rt"},
            "oauth2.client_id",
            "missing key",
        ),
        ({"url": IMAP, "auth": "oauth2"}, APP_ONLY, "oauth2.client_secret_file", "client secret"),
        (
            {"url": IMAP, "auth": "oauth2"},
            {"provider": "microsoft", "client_id": "id", "client_secret_file": "/dev/null"},
            "oauth2.token_url",
            "tenant",
        ),
        (
            {"url": IMAP, "auth": "oauth2"},
            {"provider": "google", "client_id": "id"},
            "oauth2.refresh_token_file",
            "no client credentials",
        ),
        (
            {"url": IMAP, "auth": "oauth2"},
            {**OK_OAUTH2, "refresh_token_file": "rt", "tenant": "x"},
            "oauth2.tenant",
            "unknown key",
        ),
        (
            {"url": IMAP, "auth": "oauth2"},
            {**OK_OAUTH2, "refresh_token_file": "rt", "scope": 42},
            "oauth2.scope",
            "space-separated",
        ),
    ],
)
def test_bad_oauth2_config_names_the_key_and_the_file(
    tmp_path: Path, mailbox: dict[str, Any], oauth2: dict[str, Any] | None, key: str, reason: str
) -> None:
    (tmp_path / "pw").write_text("pw\n")
    path = _minimal(tmp_path, mailbox, oauth2)
    with pytest.raises(ConfigError) as info:
        load(path)
    assert info.value.key == key
    assert reason in info.value.message
    assert str(path) in str(info.value)


def test_smtp_oauth2_needs_the_user_in_the_url(tmp_path: Path) -> None:
    sections = base_sections(tmp_path, smtp_url="smtp://smtp.example.org")
    sections["smtp"]["auth"] = "oauth2"
    sections["oauth2"] = {**OK_OAUTH2, "refresh_token_file": "rt"}
    path = write_config(tmp_path, sections)
    result = _triaged("--config", str(path), "check")
    assert result.returncode == 2
    assert f"{path}: smtp.url: XOAUTH2 logs in as the URL's user" in result.stderr


# --- the token manager, against the token endpoint --------------------------------------------


class Clock:
    def __init__(self) -> None:
        self.now = 1_000_000.0

    def __call__(self) -> float:
        return self.now


def _manager(config: Config, clock: Clock | None = None) -> TokenManager:
    assert config.oauth2 is not None
    return TokenManager(config.oauth2, config.path, clock or Clock())


def test_the_access_token_is_refreshed_ahead_of_its_expiry_and_not_before(
    tmp_dir: Path, account: ImapAccount, sink: SmtpSink, token_server: TokenServer
) -> None:
    clock = Clock()
    tokens = _manager(_config(tmp_dir, account, sink, token_server), clock)
    before = token_server.count("refresh_token")
    first = tokens.token()
    assert token_server.count("refresh_token") == before + 1
    clock.now += 3600 - 301  # more than five minutes left: the same token
    assert tokens.token() == first
    assert token_server.count("refresh_token") == before + 1
    clock.now += 2  # less than five minutes left: a new one, before the server would refuse
    second = tokens.token()
    assert second != first and token_server.valid(account.user, second)
    assert token_server.count("refresh_token") == before + 2


def test_a_rotated_refresh_token_is_written_back_atomically_0600(
    tmp_dir: Path, account: ImapAccount, sink: SmtpSink, token_server: TokenServer
) -> None:
    config = _config(tmp_dir, account, sink, token_server)
    assert config.oauth2 is not None and config.oauth2.refresh_token_file is not None
    path = config.oauth2.refresh_token_file
    path.chmod(0o644)
    old = path.read_text().strip()
    clock = Clock()
    tokens = _manager(config, clock)
    tokens.token()
    new = path.read_text().strip()
    assert new != old
    assert token_server.refresh_tokens.get(new) == account.user
    assert old not in token_server.refresh_tokens  # the server spent the old one
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert sorted(p.name for p in tmp_dir.iterdir() if p.name.startswith(".")) == []
    # The next refresh uses the written-back token, and rotates it again.
    clock.now += 3600
    tokens.token()
    assert path.read_text().strip() not in (old, new)


def test_a_revoked_grant_says_what_failed_and_the_fix_and_is_not_retried_until_replaced(
    tmp_dir: Path, account: ImapAccount, sink: SmtpSink, token_server: TokenServer
) -> None:
    config = _config(tmp_dir, account, sink, token_server)
    assert config.oauth2 is not None and config.oauth2.refresh_token_file is not None
    path = config.oauth2.refresh_token_file
    token_server.revoke(path.read_text().strip())
    tokens = _manager(config)
    with pytest.raises(TokenError) as info:
        tokens.token()
    assert info.value.lasting
    assert "invalid_grant" in str(info.value) and "revoked" in str(info.value)
    assert str(info.value).endswith(f"fix: triaged --config {config.path} oauth2 login")
    asked = len(token_server.grants)
    with pytest.raises(TokenError):
        tokens.token()
    assert len(token_server.grants) == asked  # the same spent token is not sent again
    path.write_text(token_server.grant(account.user) + "\n")
    assert token_server.valid(account.user, tokens.token())


def test_a_wrong_client_secret_and_a_missing_refresh_token_file(
    tmp_dir: Path, account: ImapAccount, sink: SmtpSink, token_server: TokenServer
) -> None:
    config = _config(tmp_dir, account, sink, token_server)
    (tmp_dir / "client-secret").write_text("not-the-secret\n")
    with pytest.raises(TokenError) as info:
        _manager(load(config.path)).token()
    assert "invalid_client" in str(info.value) and "client_secret_file" in str(info.value)
    assert "not-the-secret" not in str(info.value)
    (tmp_dir / "client-secret").write_text(token_server.client_secret + "\n")
    (tmp_dir / "refresh-token").unlink()
    with pytest.raises(TokenError) as info:
        _manager(load(config.path)).token()
    assert "does not exist" in str(info.value) and "oauth2 login" in str(info.value)


def test_app_only_access_by_client_credentials_reads_the_mailbox(
    tmp_dir: Path, account: ImapAccount, sink: SmtpSink, token_server: TokenServer
) -> None:
    sections = _sections(tmp_dir, account, sink, token_server)
    del sections["oauth2"]["refresh_token_file"]
    config = load(write_config(tmp_dir, sections))
    token_server.app_user = account.user
    try:
        account.append(mail())
        mailbox = open_mailbox(config.mailbox, tokens_for(config))
        mailbox.connect()
        try:
            assert len(mailbox.pending()) == 1
        finally:
            mailbox.close()
        assert token_server.grants[-1] == "client_credentials"
    finally:
        token_server.app_user = None


def _message(subject: str) -> bytes:
    msg = EmailMessage()
    msg["From"] = "security@example.org"
    msg["To"] = REPORTER
    msg["Subject"] = subject
    msg.set_content("hello\n")
    return bytes(msg)


def test_smtp_gets_a_new_token_once_when_the_server_refuses_one(
    tmp_dir: Path,
    account: ImapAccount,
    sink: SmtpSink,
    token_server: TokenServer,
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.DEBUG)
    config = _config(tmp_dir, account, sink, token_server)
    transport = open_transport(config.smtp, tokens_for(config))
    try:
        transport.send("security@example.org", REPORTER, _message("first"))
        token_server.expire_access_tokens()  # every token so far dies before its time
        transport.close()
        transport.send("security@example.org", REPORTER, _message("second"))
    finally:
        transport.close()
    got = sink.wait_for(2)
    assert [c.login for c in got] == [account.user, account.user]
    assert sink.refusals == 1
    ours = [r for r in caplog.records if r.name.startswith("triaged")]
    assert [r.getMessage() for r in ours if r.levelno >= logging.WARNING] == []
    assert any("refused the access token" in r.getMessage() for r in ours)
    _assert_no_secret(caplog.text, token_server)


# --- the daemon, as a separate process ---------------------------------------------------------


def _receipts(sink: SmtpSink) -> list[Any]:
    return [c for c in sink.messages if c.rcpt_tos == [REPORTER]]


def test_a_report_is_read_and_answered_with_oauth2_and_an_expired_token_is_replaced(
    tmp_dir: Path, account: ImapAccount, sink: SmtpSink, token_server: TokenServer
) -> None:
    config = _config(tmp_dir, account, sink, token_server)
    with DaemonProcess(config.path, tmp_dir / "d.log") as daemon:
        # After the start: mail already there at a new database's first start is adopted.
        daemon.wait_for_log("waiting for new mail")
        account.append(mail(subject="SQL injection in search"))
        wait_until(lambda: _receipts(sink), timeout=60, what="the receipt")
        assert count_rows(config.database, "SELECT COUNT(*) FROM reports") == 1
        # The access token dies before its time; a reload makes the daemon log in again.
        token_server.expire_access_tokens()
        assert daemon.proc is not None
        daemon.proc.send_signal(signal.SIGHUP)
        daemon.wait_for_log("refused the access token", timeout=60)
        account.append(mail(sender="second@outside.example", subject="XSS in the admin"))
        # Its receipt and the maintainers' notifications, like the first report's.
        sink.wait_for(2 * (1 + len(MAINTAINERS)), timeout=60)
        assert daemon.stop() == 0
        log = daemon.log()
    assert {c.login for c in sink.messages} == {account.user}
    assert account.fetch_all("triaged-processed") and not account.fetch_all()
    # triaged's own lines (apscheduler may warn of a late job on a busy machine).
    loud = [line for line in log.splitlines() if line.startswith(("WARNING triaged", "ERROR"))]
    assert loud == []
    assert count_rows(config.database, "SELECT COUNT(*) FROM outages") == 0
    _assert_no_secret(log, token_server)


def test_a_revoked_refresh_token_alerts_once_then_recovers_after_a_new_file_and_sighup(
    tmp_dir: Path, account: ImapAccount, sink: SmtpSink, token_server: TokenServer
) -> None:
    sections = _sections(tmp_dir, account, sink, token_server)
    sections["liveness"] = {"mailbox_alert_after": "1s"}
    path = write_config(tmp_dir, sections)
    config = load(path)
    refresh_file = tmp_dir / "refresh-token"
    with DaemonProcess(path, tmp_dir / "d.log") as daemon:
        daemon.wait_for_log("waiting for new mail")
        token_server.revoke(refresh_file.read_text().strip())
        token_server.expire_access_tokens()
        assert daemon.proc is not None
        daemon.proc.send_signal(signal.SIGHUP)
        daemon.wait_for_log("mailbox still unavailable (try 3)", timeout=60)
        alerts = "SELECT COUNT(*) FROM outbox WHERE kind = 'outage'"
        assert count_rows(config.database, alerts) == len(MAINTAINERS)
        # A person signs in again (`triaged oauth2 login` writes the file) and reloads.
        refresh_file.write_text(token_server.grant(account.user) + "\n")
        daemon.proc.send_signal(signal.SIGHUP)
        wait_until(
            lambda: (
                len([c for c in sink.messages if c.msg["Subject"] == RECOVERED]) == len(MAINTAINERS)
            ),
            timeout=60,
            what="the recovered mail",
        )
        assert daemon.stop() == 0
        log = daemon.log()
    alerts_sent = [c for c in sink.messages if c.msg["Subject"] == ALERT]
    assert sorted(r for c in alerts_sent for r in c.rcpt_tos) == sorted(MAINTAINERS)
    body = " ".join(alerts_sent[0].msg.get_content().split())
    assert "refused the refresh token" in body and "invalid_grant" in body
    assert f"fix: triaged --config {path} oauth2 login" in body
    assert count_rows(config.database, "SELECT COUNT(*) FROM outages") == 0
    _assert_no_secret(log, token_server)
    for captured in sink.messages:
        _assert_no_secret(captured.raw.decode("utf-8", "replace"), token_server)


# --- triaged oauth2 login, triaged check ------------------------------------------------------


def test_oauth2_login_by_the_device_grant_stores_the_refresh_token(
    tmp_dir: Path, account: ImapAccount, sink: SmtpSink, token_server: TokenServer
) -> None:
    config = _config(tmp_dir, account, sink, token_server)
    refresh_file = tmp_dir / "refresh-token"
    refresh_file.unlink()
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    proc = subprocess.Popen(
        [sys.executable, "-m", "triaged", "--config", str(config.path), "oauth2", "login"],
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        env=env,
    )
    assert proc.stdout is not None
    first = proc.stdout.readline()
    assert first.startswith(f"To sign in, open {token_server.base}/verify and enter the code ")
    user_code = first.split()[-1]
    assert user_code in token_server.pending_user_codes()
    token_server.approve(user_code, account.user)
    rest = proc.stdout.read()
    assert proc.wait(timeout=60) == 0, first + rest
    assert f"The refresh token is in {refresh_file} (mode 0600)" in rest
    stored = refresh_file.read_text().strip()
    assert token_server.refresh_tokens[stored] == account.user
    assert stat.S_IMODE(refresh_file.stat().st_mode) == 0o600
    _assert_no_secret(first + rest, token_server)
    # The daemon's side takes it from there.
    assert token_server.valid(account.user, _manager(config).token())


def test_device_grant_polling_honours_slow_down_and_a_refusal(
    tmp_dir: Path, account: ImapAccount, sink: SmtpSink, token_server: TokenServer
) -> None:
    config = _config(tmp_dir, account, sink, token_server)
    assert config.oauth2 is not None
    code = device_authorization(config.oauth2)
    token_server.slow_down_once = True
    waits: list[float] = []

    def sleep(seconds: float) -> None:
        waits.append(seconds)
        if len(waits) == 3:
            token_server.approve(code.user_code, account.user)

    refresh = poll_device_token(config.oauth2, code, sleep=sleep)
    assert token_server.refresh_tokens[refresh] == account.user
    assert waits == [1, 6, 6]  # RFC 8628 3.5: slow_down adds 5 s to every later wait
    code = device_authorization(config.oauth2)
    token_server.deny(code.user_code)
    with pytest.raises(TokenError, match="declined"):
        poll_device_token(config.oauth2, code, sleep=lambda s: None)


def test_oauth2_login_with_google_explains_why_not(tmp_path: Path) -> None:
    path = _minimal(
        tmp_path,
        {"url": "imaps://security%40example.org@imap.gmail.com/INBOX", "auth": "oauth2"},
        {"provider": "google", "client_id": "id", "refresh_token_file": "rt"},
    )
    result = _triaged("--config", str(path), "oauth2", "login")
    assert result.returncode == 1
    assert "does not grant the Gmail scope" in result.stderr
    assert "Google Workspace" in result.stderr


def test_check_says_which_auth_each_side_uses_and_whether_a_token_was_had(
    tmp_dir: Path, account: ImapAccount, sink: SmtpSink, token_server: TokenServer
) -> None:
    config = _config(tmp_dir, account, sink, token_server)
    result = _triaged("--config", str(config.path), "check")
    assert result.returncode == 0, result.stdout + result.stderr
    lines = result.stdout.splitlines()
    assert lines[1].startswith(f"oauth2: ok (a token from {token_server.token_url} by the ")
    assert "refresh token grant" in lines[1]
    assert lines[2].startswith("mailbox: ok (") and "auth oauth2 (XOAUTH2)" in lines[2]
    assert lines[3].startswith("smtp: ok (auth oauth2 (XOAUTH2); ")
    token_server.revoke((tmp_dir / "refresh-token").read_text().strip())
    token_server.expire_access_tokens()
    result = _triaged("--config", str(config.path), "check")
    assert result.returncode == 1
    assert "oauth2: FAILED: OAuth2: " in result.stdout and "invalid_grant" in result.stdout
    assert f"fix: triaged --config {config.path} oauth2 login" in result.stdout
    assert "mailbox: FAILED (auth oauth2 (XOAUTH2))" in result.stdout
    _assert_no_secret(result.stdout + result.stderr, token_server)


def test_password_login_is_unchanged_next_to_oauth2(
    tmp_dir: Path, account: ImapAccount, smtp_sink: SmtpSink
) -> None:
    path = write_config(
        tmp_dir,
        mailbox_url=account.url(),
        smtp_url=smtp_sink.url,
        password_file=str(account.password_file),
    )
    result = _triaged("--config", str(path), "check")
    assert result.returncode == 0, result.stdout + result.stderr
    assert "auth password" in result.stdout and "oauth2:" not in result.stdout
    assert "smtp: ok (no login; " in result.stdout


def test_the_example_config_documents_oauth2(tmp_path: Path) -> None:
    """config.example.toml's [oauth2] block, uncommented and switched on, is a valid config."""
    text = (ROOT / "config.example.toml").read_text()
    block = text[text.index("# [oauth2]\n") : text.index("[database]")]
    keys = [
        line[2:] for line in block.splitlines() if line.startswith(("# [", "# ")) and " = " in line
    ]
    assert [k.split(" = ")[0] for k in keys] == [
        "provider",
        "token_url",
        "client_id",
        "client_secret_file",
        "scope",
        "refresh_token_file",
        "device_authorization_url",
    ]
    (tmp_path / "secret").write_text("s\n")
    keys = [k.replace("/etc/triaged/oauth2-client-secret", str(tmp_path / "secret")) for k in keys]
    sections = base_sections(tmp_path)
    sections["mailbox"] = {"auth": "oauth2"}
    path = write_config(tmp_path, sections)
    path.write_text(path.read_text() + "[oauth2]\n" + "\n".join(keys) + "\n")
    config = load(path)
    assert config.oauth2 is not None and config.oauth2.provider == "microsoft"
    assert config.mailbox.endpoint.host == "outlook.office365.com"
