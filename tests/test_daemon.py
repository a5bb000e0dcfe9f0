"""The daemon against Dovecot and aiosmtpd (a real process, or in-process where a test hooks its
loop): IDLE, crashes, reconnects."""

from __future__ import annotations

import os
import subprocess
import sys
import threading
import time
from collections import Counter
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from helpers import (
    MAINTAINERS,
    DaemonProcess,
    count_rows,
    imap_config,
    mail,
    wait_until,
    with_reports,
)
from imapclient import IMAPClient
from servers import DovecotServer, ImapAccount, SmtpSink

from triaged.mail.mailbox.imap import ImapMailbox
from triaged.service.daemon import Daemon


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


@pytest.mark.parametrize("window", ["before IDLE", "during the SEARCH"])
def test_mail_arriving_between_a_pass_and_idle_is_answered_at_once(
    window: str,
    tmp_dir: Path,
    imap_account: ImapAccount,
    smtp_sink: SmtpSink,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # The window made certain: the message is appended at that point of the daemon's own
    # loop, once. Before IDLE, Dovecot's EXISTS comes in the packet of "+ idling"; during the
    # SEARCH, it comes after the result that lacks the message. Either way IDLE itself never
    # reports it, and the receipt waited for Dovecot's keepalive (about 2 minutes).
    config = imap_config(tmp_dir, imap_account, smtp_sink)
    delivered = threading.Event()

    def deliver_once(original: Callable[..., Any]) -> Callable[..., Any]:
        def hooked(self: Any, *args: Any) -> Any:
            if not delivered.is_set():
                delivered.set()
                imap_account.append(mail(subject="in the window"))
            return original(self, *args)

        return hooked

    if window == "before IDLE":
        monkeypatch.setattr(ImapMailbox, "wait", deliver_once(ImapMailbox.wait))
    else:
        monkeypatch.setattr(IMAPClient, "search", deliver_once(IMAPClient.search))
    daemon = Daemon(config)
    thread = threading.Thread(target=daemon.run, daemon=True)
    thread.start()
    try:
        assert delivered.wait(20)
        got = smtp_sink.wait_for(1 + len(MAINTAINERS), timeout=15)
        assert any(c.rcpt_tos == ["reporter@outside.example"] for c in got)
    finally:
        daemon.request_stop()
        thread.join(timeout=30)
    assert not thread.is_alive()


# A process whose main thread does what the intake loop does after each pass (it sets and clears
# an Event), while another thread sends it SIGHUP 300 times, one at a time, each acted on (with
# SignalRelay) by setting that same Event. A handler that set the Event itself, in the main
# thread, waited for the Event's lock its own thread held: this process would never end.
_SIGNALS_WHILE_INSIDE_AN_EVENT = """
import os, signal, sys, threading
from triaged.service.signals import SignalRelay

wake = threading.Event()
acted = threading.Semaphore(0)
finished = threading.Event()

def on_sighup(signum):
    wake.set()
    acted.release()

def sender():
    for _ in range(300):
        os.kill(os.getpid(), signal.SIGHUP)
        if not acted.acquire(timeout=20):
            print("a signal was not acted on", flush=True)
            os._exit(3)
    finished.set()

with SignalRelay({signal.SIGHUP: on_sighup}):
    threading.Thread(target=sender, daemon=True).start()
    while not finished.is_set():
        wake.set()
        wake.clear()
print("acted on 300 signals")
"""


def test_signals_coming_while_the_main_thread_is_inside_an_event_are_all_acted_on() -> None:
    env = dict(os.environ, PYTHONPATH=str(Path(__file__).parent.parent))
    result = subprocess.run(
        [sys.executable, "-c", _SIGNALS_WHILE_INSIDE_AN_EVENT],
        capture_output=True,
        text=True,
        timeout=120,
        env=env,
    )
    assert result.returncode == 0, result.stdout + result.stderr
    assert result.stdout.strip() == "acted on 300 signals"
