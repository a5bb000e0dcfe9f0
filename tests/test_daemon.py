"""The daemon as a real process against Dovecot and aiosmtpd: IDLE, crashes, reconnects."""

from __future__ import annotations

import time
from collections import Counter
from pathlib import Path

from helpers import (
    MAINTAINERS,
    DaemonProcess,
    count_rows,
    imap_config,
    mail,
    wait_until,
    with_reports,
)
from servers import DovecotServer, ImapAccount, SmtpSink


def test_idle_answers_a_new_message_without_waiting_for_a_poll(
    tmp_dir: Path, imap_account: ImapAccount, smtp_sink: SmtpSink
) -> None:
    # poll_interval is one hour: only IDLE can make this fast.
    config = imap_config(tmp_dir, imap_account, smtp_sink)
    with DaemonProcess(config.path, tmp_dir / "daemon.log") as daemon:
        daemon.wait_for_log("idle=True")
        daemon.wait_for_log("waiting for new mail")
        time.sleep(0.5)
        start = time.monotonic()
        imap_account.append(mail(subject="idle test"))
        got = smtp_sink.wait_for(1 + len(MAINTAINERS), timeout=20)
        elapsed = time.monotonic() - start
        assert any(c.rcpt_tos == ["reporter@outside.example"] for c in got)
        # Far below the poll interval; the exact latency is measured in bench/, not here.
        assert elapsed < 30
        assert daemon.stop() == 0


def test_kill_9_during_a_batch_then_restart_loses_and_duplicates_nothing(
    tmp_dir: Path, imap_account: ImapAccount, smtp_sink: SmtpSink
) -> None:
    n = 120  # wide enough that a busy machine still interrupts it mid-way
    config = with_reports(tmp_dir, imap_account, smtp_sink, n, batch_size=4, prefix="r")
    db = config.database
    with DaemonProcess(config.path, tmp_dir / "daemon1.log") as first:
        wait_until(
            lambda: count_rows(db, "SELECT COUNT(*) FROM messages") >= 3, what="ingest start"
        )
        first.kill()
    stored_at_kill = count_rows(db, "SELECT COUNT(*) FROM messages")
    assert stored_at_kill < n, "the kill came too late to test anything"
    with DaemonProcess(config.path, tmp_dir / "daemon2.log") as second:
        wait_until(
            lambda: count_rows(db, "SELECT COUNT(*) FROM messages") == n,
            timeout=60,
            what="all messages stored",
        )
        wait_until(
            lambda: count_rows(db, "SELECT COUNT(*) FROM outbox WHERE state != 'sent'") == 0,
            timeout=60,
            what="outbox drained",
        )
        assert second.stop() == 0
    assert count_rows(db, "SELECT COUNT(*) FROM reports") == n
    assert count_rows(db, "SELECT COUNT(DISTINCT sha256) FROM messages") == n
    assert count_rows(db, "SELECT COUNT(*) FROM outbox WHERE kind = 'receipt'") == n
    assert imap_account.fetch_all("INBOX") == []
    assert len(imap_account.fetch_all("triaged-processed")) == n
    # Every receipt arrived, each reporter got exactly one receipt Message-ID; a message in
    # flight at the kill may arrive twice, but only ever under its one Message-ID.
    receipts = [c for c in smtp_sink.messages if c.msg["Auto-Submitted"] == "auto-replied"]
    per_reporter = {}
    for c in receipts:
        per_reporter.setdefault(c.rcpt_tos[0], set()).add(c.msg["Message-ID"])
    assert len(per_reporter) == n
    assert all(len(ids) == 1 for ids in per_reporter.values())
    repeats = Counter(c.msg["Message-ID"] for c in smtp_sink.messages)
    total_rows = count_rows(db, "SELECT COUNT(*) FROM outbox")
    assert len(repeats) == total_rows
    assert sum(count - 1 for count in repeats.values()) <= 1


def test_dovecot_restarted_under_the_daemon_reconnects_and_catches_up(
    tmp_dir: Path, dovecot: DovecotServer, imap_account: ImapAccount, smtp_sink: SmtpSink
) -> None:
    config = imap_config(tmp_dir, imap_account, smtp_sink)
    with DaemonProcess(config.path, tmp_dir / "daemon.log") as daemon:
        daemon.wait_for_log("waiting for new mail")
        dovecot.stop()
        daemon.wait_for_log("mailbox unavailable")
        time.sleep(2)
        dovecot.start()
        imap_account.append(mail(subject="after the restart"))
        smtp_sink.wait_for(1 + len(MAINTAINERS), timeout=90)
        daemon.wait_for_log("reachable again")
        assert daemon.log().count("mailbox unavailable") == 1
        assert daemon.stop() == 0
