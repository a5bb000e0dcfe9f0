"""LMTP intake behind a real MTA: Postfix (Debian's package, a private instance on 127.0.0.1,
tests/mta.py) takes SMTP and delivers over LMTP to the daemon, as in production."""

from __future__ import annotations

import smtplib
from collections.abc import Iterator
from pathlib import Path

import mta
import pytest
from helpers import PROJECT, REPORTER, DaemonProcess, count_rows, lmtp_config, mail, wait_until
from servers import SmtpSink, free_port


@pytest.fixture
def lmtp_port() -> int:
    return free_port()


@pytest.fixture
def postfix(lmtp_port: int) -> Iterator[mta.PostfixServer]:
    reason = mta.available()
    assert reason is None, reason
    server = mta.PostfixServer("example.org", lmtp_port).start()
    try:
        yield server
    finally:
        server.stop()


def submit(postfix: mta.PostfixServer, message: bytes) -> None:
    with smtplib.SMTP("127.0.0.1", postfix.port, timeout=30) as client:
        assert client.sendmail(REPORTER, [PROJECT], message) == {}


def test_a_report_sent_to_postfix_reaches_triaged_over_lmtp(
    tmp_dir: Path, smtp_sink: SmtpSink, postfix: mta.PostfixServer, lmtp_port: int
) -> None:
    config = lmtp_config(tmp_dir, smtp_sink, f"lmtp://127.0.0.1:{lmtp_port}")
    with DaemonProcess(config.path, tmp_dir / "daemon.log") as daemon:
        daemon.wait_for_log("reading lmtp://")
        submit(postfix, mail(subject="Path traversal in the importer"))
        log = postfix.wait_for_log("status=sent")
        # Postfix's own record of the delivery: triaged's answer after the commit.
        assert "relay=127.0.0.1" in log and "250 2.0.0 Ok: stored" in log
        assert count_rows(config.database, "SELECT COUNT(*) FROM reports") == 1
        receipt = [m for m in smtp_sink.wait_for(3) if m.rcpt_tos == [REPORTER]]
        assert len(receipt) == 1
        assert daemon.stop() == 0


def test_mail_for_a_stopped_triaged_waits_in_postfix_and_arrives_once_it_is_up(
    tmp_dir: Path, smtp_sink: SmtpSink, postfix: mta.PostfixServer, lmtp_port: int
) -> None:
    config = lmtp_config(tmp_dir, smtp_sink, f"lmtp://127.0.0.1:{lmtp_port}")
    submit(postfix, mail(subject="Found while triaged was down"))
    postfix.wait_for_log("status=deferred")  # nothing listens: the MTA keeps it
    with DaemonProcess(config.path, tmp_dir / "daemon.log") as daemon:
        daemon.wait_for_log("reading lmtp://")
        postfix.wait_for_log("status=sent")
        wait_until(lambda: count_rows(config.database, "SELECT COUNT(*) FROM reports") == 1)
        assert daemon.stop() == 0
