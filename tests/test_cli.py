"""`triaged check` against the live servers, and the embedded default end to end."""

from __future__ import annotations

import mailbox
import os
import signal
import subprocess
import sys
import time
from email import message_from_bytes
from email.policy import default
from pathlib import Path

from helpers import wait_until, write_config
from servers import ImapAccount, SmtpSink

ROOT = Path(__file__).parent.parent


def _triaged(*args: str, timeout: float = 60) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    return subprocess.run(
        [sys.executable, "-m", "triaged", *args],
        capture_output=True,
        text=True,
        timeout=timeout,
        env=env,
    )


def test_check_against_live_dovecot_and_smtp(
    tmp_dir: Path, imap_account: ImapAccount, smtp_sink: SmtpSink
) -> None:
    path = write_config(
        tmp_dir,
        mailbox_url=imap_account.url(),
        smtp_url=smtp_sink.url,
        password_file=str(imap_account.password_file),
    )
    result = _triaged("--config", str(path), "check")
    assert result.returncode == 0, result.stdout + result.stderr
    assert "config: ok" in result.stdout
    assert "mailbox: ok" in result.stdout
    assert "smtp: ok" in result.stdout


def test_check_with_a_wrong_password_says_what_failed(
    tmp_dir: Path, imap_account: ImapAccount, smtp_sink: SmtpSink
) -> None:
    wrong = tmp_dir / "wrong-password"
    wrong.write_text("not-the-password\n")
    path = write_config(
        tmp_dir, mailbox_url=imap_account.url(), smtp_url=smtp_sink.url, password_file=str(wrong)
    )
    result = _triaged("--config", str(path), "check")
    assert result.returncode == 1
    assert "mailbox: FAILED" in result.stdout and "login" in result.stdout
    assert "not-the-password" not in result.stdout + result.stderr
    assert "smtp: ok" in result.stdout


def test_check_with_smtp_down(
    tmp_dir: Path, imap_account: ImapAccount, smtp_sink: SmtpSink
) -> None:
    smtp_sink.stop()
    path = write_config(
        tmp_dir,
        mailbox_url=imap_account.url(),
        smtp_url=smtp_sink.url,
        password_file=str(imap_account.password_file),
    )
    result = _triaged("--config", str(path), "check")
    assert result.returncode == 1
    assert "mailbox: ok" in result.stdout and "smtp: FAILED" in result.stdout


def test_embedded_default_triages_the_sample_reports(tmp_path: Path) -> None:
    directory = tmp_path / "demo"
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    proc = subprocess.Popen(
        [sys.executable, "-m", "triaged", "demo", "--dir", str(directory)],
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        env=env,
    )
    try:
        outbox = directory / "outbox" / "new"

        def delivered() -> list[Path]:
            # Two samples are reports (a receipt and two notifications each); one is automatic.
            files = sorted(outbox.glob("*")) if outbox.exists() else []
            return files if len(files) >= 6 else []

        files = wait_until(delivered, timeout=30, what="the demo's outgoing mail")
        time.sleep(1.5)
        assert len(list(outbox.glob("*"))) == 6
    finally:
        proc.send_signal(signal.SIGINT)
        output, _ = proc.communicate(timeout=20)
    assert proc.returncode == 0, output
    messages = [message_from_bytes(f.read_bytes(), policy=default) for f in files]
    receipts = [m for m in messages if m["Auto-Submitted"] == "auto-replied"]
    assert sorted(str(m["To"]) for m in receipts) == [
        "jane@researcher.example",
        "sam@bughunter.example",
    ]
    assert all("[security report #" in str(m["Subject"]) for m in messages)
    assert "ooo@vendor.example" not in {str(m["To"]) for m in messages}
    # Each file is a complete message, with the envelope a delivering MTA would add.
    assert all(m["Delivered-To"] and m["Message-ID"] and m["Date"] for m in messages)
    assert "report " in output and "automatic mail from ooo@vendor.example" in output
    # The demo's inbox is a Maildir whose handled mail moved to the processed folder.
    inbox = mailbox.Maildir(directory / "inbox", create=False)
    assert len(inbox) == 0
    assert len(inbox.get_folder("triaged-processed")) == 3
    listing = _triaged("--config", str(directory / "config.toml"), "reports")
    assert "jane@researcher.example" in listing.stdout


def test_demo_config_is_the_embedded_default(tmp_path: Path) -> None:
    from triaged.config import load
    from triaged.service.demo import prepare

    config_file, samples = prepare(tmp_path / "d")
    assert len(samples) == 3
    config = load(config_file)
    assert config.mailbox.endpoint.is_maildir and config.smtp.endpoint.is_maildir
    assert config.database.parent == (tmp_path / "d")
    # A second start keeps the data and feeds nothing twice.
    assert prepare(tmp_path / "d")[1] == []
