"""LMTP intake (triaged/mail/mailbox/lmtp.py): the daemon as the MTA's delivery target.

The daemon runs as a child process (`triaged run`) with `[mailbox] url = "lmtp://..."` and the
SMTP sink as its outgoing server; the MTA is the stdlib's `smtplib.LMTP` client here, and a real
Postfix in tests/test_postfix.py. Every answer the MTA gets is checked against what the
database holds at that moment.
"""

from __future__ import annotations

import contextlib
import json
import mailbox
import os
import signal
import smtplib
import socket
import sqlite3
import threading
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner
from helpers import (
    PROJECT,
    REPORTER,
    DaemonProcess,
    Harness,
    count_rows,
    lmtp_config,
    mail,
    make_config,
    wait_until,
)
from servers import SmtpSink, free_port

from triaged.cli import main
from triaged.config import Config
from triaged.core.timefmt import ts


@pytest.fixture
def port() -> int:
    return free_port()


@pytest.fixture
def daemon_config(tmp_dir: Path, smtp_sink: SmtpSink, port: int) -> Config:
    return lmtp_config(tmp_dir, smtp_sink, f"lmtp://127.0.0.1:{port}", max_message_size=1_000_000)


@pytest.fixture
def daemon(daemon_config: Config, tmp_dir: Path) -> Iterator[DaemonProcess]:
    with DaemonProcess(daemon_config.path, tmp_dir / "daemon.log") as process:
        process.wait_for_log("reading lmtp://")
        yield process


def client(port: int) -> smtplib.LMTP:
    lmtp = smtplib.LMTP("127.0.0.1", port, timeout=60)
    lmtp.ehlo()  # LHLO
    return lmtp


def cli(config: Config, *args: str) -> str:
    """What `triaged ARGS` prints on stdout (the SMTP sink's thread may log on stderr)."""
    result = CliRunner().invoke(main, ["--config", str(config.path), *args])
    assert result.exit_code == 0, result.output
    return result.stdout


def receipts(sink: SmtpSink) -> list[Any]:
    return [m for m in sink.messages if m.rcpt_tos == [REPORTER]]


def test_a_report_is_in_triaged_reports_the_moment_its_250_arrives(
    daemon: DaemonProcess, daemon_config: Config, smtp_sink: SmtpSink, port: int
) -> None:
    lmtp = client(port)
    refused = lmtp.sendmail(REPORTER, [PROJECT], mail(subject="Heap overflow in the decoder"))
    lmtp.quit()
    assert refused == {}  # every recipient got its 250
    # No waiting: the 250 came only once the report was committed.
    listed = json.loads(cli(daemon_config, "reports", "--json"))
    assert [r["title"] for r in listed] == ["Heap overflow in the decoder"]
    assert "intake: new report" in daemon.log()
    smtp_sink.wait_for(1 + 2)  # the receipt and a notification to each maintainer
    (receipt,) = receipts(smtp_sink)
    assert receipt.msg["Subject"].endswith("Your report was received")
    # Stored as final delivery stores it: the envelope sender and the recipient on top.
    raw = _stored_raw(daemon_config.database)
    assert raw.startswith(f"Return-Path: <{REPORTER}>\r\nDelivered-To: {PROJECT}\r\n".encode())


def test_over_a_unix_socket(tmp_dir: Path, smtp_sink: SmtpSink) -> None:
    socket_path = tmp_dir / "run" / "lmtp.sock"
    socket_path.parent.mkdir()
    config = lmtp_config(tmp_dir, smtp_sink, f"lmtp+unix://{socket_path}")
    with DaemonProcess(config.path, tmp_dir / "daemon.log") as daemon:
        daemon.wait_for_log("reading lmtp+unix://")
        lmtp = smtplib.LMTP(str(socket_path), timeout=60)
        lmtp.ehlo()
        assert lmtp.sendmail(REPORTER, [PROJECT], mail()) == {}
        lmtp.quit()
        assert count_rows(config.database, "SELECT COUNT(*) FROM reports") == 1
        assert daemon.stop() == 0
    assert not socket_path.exists()  # removed when the daemon stops


def test_a_foreign_recipient_gets_550_and_the_project_addresses_250(
    daemon: DaemonProcess, daemon_config: Config, port: int
) -> None:
    lmtp = client(port)
    assert lmtp.has_extn("pipelining")  # the kill -9 test below sends its commands at once
    lmtp.mail(REPORTER)
    assert lmtp.rcpt("someone@example.org")[0] == 550
    assert lmtp.rcpt("security@other.example")[0] == 550
    assert lmtp.rcpt("securityx@example.org")[0] == 550
    assert lmtp.rcpt("security+abc123@example.org")[0] == 250  # a reply token
    assert lmtp.rcpt("Security@EXAMPLE.org")[0] == 250
    lmtp.rset()
    # A message for a foreign address only is refused whole; nothing is stored.
    with pytest.raises(smtplib.SMTPRecipientsRefused):
        lmtp.sendmail(REPORTER, ["someone@example.org"], mail())
    lmtp.quit()
    assert count_rows(daemon_config.database, "SELECT COUNT(*) FROM messages") == 0


def test_an_oversized_message_gets_552_without_the_daemon_holding_it(
    daemon: DaemonProcess, daemon_config: Config, port: int
) -> None:
    lmtp = client(port)
    # Announced: refused at MAIL FROM, before a byte of it is sent.
    code, _ = lmtp.docmd("MAIL", f"FROM:<{REPORTER}> SIZE=50000000")
    assert code == 552
    lmtp.rset()
    before = _peak_rss(daemon.pid)
    # Not announced: 64 MB of data against a 1 MB limit, refused once it is all sent.
    line = b"x" * 998 + b"\r\n"
    body = mail(body="see below\n") + line * (64 * 1024 * 1024 // len(line))
    lmtp.mail(REPORTER)  # without SIZE=, which smtplib's sendmail would add
    lmtp.rcpt(PROJECT)
    assert lmtp.data(body)[0] == 552
    lmtp.quit()
    grew = _peak_rss(daemon.pid) - before
    assert grew < 16 * 1024 * 1024, f"the daemon's peak memory grew by {grew} bytes"
    assert count_rows(daemon_config.database, "SELECT COUNT(*) FROM messages") == 0
    # The server goes on taking mail.
    lmtp = client(port)
    assert lmtp.sendmail(REPORTER, [PROJECT], mail()) == {}
    lmtp.quit()


def test_a_malformed_message_gets_250_and_is_quarantined(
    daemon: DaemonProcess, daemon_config: Config, port: int
) -> None:
    # More header fields than limits.max_headers (1000): the parser will not read it.
    bomb = b"".join(b"X-Filler-%d: x\r\n" % n for n in range(2000)) + b"\r\nbody\r\n"
    lmtp = client(port)
    assert lmtp.sendmail(REPORTER, [PROJECT], b"From: " + REPORTER.encode() + b"\r\n" + bomb) == {}
    lmtp.quit()
    conn = sqlite3.connect(daemon_config.database)
    kind, reason, raw = conn.execute("SELECT kind, reason, raw FROM messages").fetchone()
    conn.close()
    assert kind == "quarantined"
    assert "header" in reason
    assert raw.endswith(bomb)  # kept whole: never lost
    assert count_rows(daemon_config.database, "SELECT COUNT(*) FROM reports") == 0


@pytest.mark.parametrize("when", ["before the commit", "after the commit"])
def test_kill_9_in_the_middle_of_a_delivery_the_retry_is_stored_once(
    tmp_dir: Path, smtp_sink: SmtpSink, daemon_config: Config, port: int, when: str
) -> None:
    message = mail(subject="Race in the scheduler")
    db = daemon_config.database
    with DaemonProcess(daemon_config.path, tmp_dir / "first.log") as first:
        first.wait_for_log("reading lmtp://")
        # The MTA's side of a delivery whose answer never reaches it.
        sock = socket.create_connection(("127.0.0.1", port), timeout=30)
        reader = sock.makefile("rb")
        reader.readline()  # greeting
        for command in (b"LHLO mta.test", f"MAIL FROM:<{REPORTER}>".encode(),
                        f"RCPT TO:<{PROJECT}>".encode(), b"DATA"):  # fmt: skip
            sock.sendall(command + b"\r\n")
        data = message.replace(b"\r\n.", b"\r\n..")
        assert data.endswith(b"\r\n")
        if when == "before the commit":
            sock.sendall(data[: len(data) // 2])  # cut off mid-message
        else:
            sock.sendall(data + b".\r\n")
            # Committed (the receipt is in the outbox with it); the 250 is never read.
            wait_until(lambda: count_rows(db, "SELECT COUNT(*) FROM messages") == 1, what="commit")
        os.kill(first.pid, signal.SIGKILL)
        first.proc.wait(10)  # type: ignore[union-attr]
        sock.close()
    with DaemonProcess(daemon_config.path, tmp_dir / "second.log") as second:
        second.wait_for_log("reading lmtp://")
        # The MTA tries again with the same message.
        lmtp = client(port)
        assert lmtp.sendmail(REPORTER, [PROJECT], message) == {}
        lmtp.quit()
        assert count_rows(db, "SELECT COUNT(*) FROM messages") == 1
        assert count_rows(db, "SELECT COUNT(*) FROM reports") == 1
        wait_until(
            lambda: count_rows(db, "SELECT COUNT(*) FROM outbox WHERE state = 'pending'") == 0,
            what="the outbox sent",
        )
        assert count_rows(db, "SELECT COUNT(*) FROM outbox WHERE kind = 'receipt'") == 1
        assert len(receipts(smtp_sink)) == 1
        assert second.stop() == 0


def test_the_database_unavailable_gets_451_and_the_retry_250(
    daemon: DaemonProcess, daemon_config: Config, port: int
) -> None:
    # Another process holds the write lock for longer than the daemon waits for it (30 s).
    holder = sqlite3.connect(daemon_config.database, isolation_level=None)
    holder.execute("BEGIN EXCLUSIVE")
    try:
        lmtp = client(port)
        with pytest.raises(smtplib.SMTPDataError) as refused:
            lmtp.sendmail(REPORTER, [PROJECT], mail())
        assert refused.value.smtp_code == 451
        lmtp.close()
    finally:
        holder.rollback()
        holder.close()
    daemon.wait_for_log("reachable again", timeout=60)
    lmtp = client(port)
    assert lmtp.sendmail(REPORTER, [PROJECT], mail()) == {}
    lmtp.quit()
    assert count_rows(daemon_config.database, "SELECT COUNT(*) FROM reports") == 1


def test_check_speaks_lmtp_to_the_daemon_or_to_a_server_of_its_own(
    tmp_dir: Path, daemon_config: Config
) -> None:
    alone = cli(daemon_config, "check")
    assert "mailbox: ok (lmtp://127.0.0.1:" in alone
    assert "a server of this check's own answers" in alone
    with DaemonProcess(daemon_config.path, tmp_dir / "daemon.log") as daemon:
        daemon.wait_for_log("reading lmtp://")
        running = cli(daemon_config, "check")
        assert "LMTP: the daemon answers; mail for security@example.org taken" in running
        assert daemon.stop() == 0
    assert count_rows(daemon_config.database, "SELECT COUNT(*) FROM messages") == 0


def test_mail_that_keeps_coming_is_stamped_when_it_comes_and_counts_as_progress(
    tmp_dir: Path,
) -> None:
    # An MTA delivering without a pause keeps the intake pass going (it looks again after every
    # pass that handled mail): each later pass takes the time again, and each one is progress
    # for the watchdog. Shown with the Maildir twin, where mail can be dropped in between.
    config = make_config(tmp_dir)
    h = Harness(config)
    inbox = mailbox.Maildir(config.mailbox.endpoint.path, create=True)
    inbox.add(mail(sender="first@outside.example"))
    t0 = datetime(2026, 12, 1, 9, 0, tzinfo=UTC)
    later = t0 + timedelta(hours=1)
    passes: list[int] = []

    def after_pass() -> None:
        passes.append(len(passes))
        if len(passes) == 1:
            inbox.add(mail(sender="second@outside.example"))

    assert h.intake.run_once(t0, lambda: later, after_pass) == 2
    assert len(passes) == 3  # two that handled a message, one that found nothing
    created = dict(h.store.conn.execute("SELECT reporter, created_at FROM reports").fetchall())
    assert created == {"first@outside.example": ts(t0), "second@outside.example": ts(later)}
    h.close()


# systemd/triaged.service: what systemd waits after SIGTERM before it kills the daemon.
TIMEOUT_STOP_SEC = 30


def _deliver_burst(port: int, tag: str, per_connection: int, stop: threading.Event) -> set[str]:
    """4 connections delivering at once (as an MTA does under load) until each has sent
    `per_connection` messages, `stop` is set or the server goes away; the subjects that got 250."""
    accepted: set[str] = set()
    lock = threading.Lock()

    def deliver(connection: int) -> None:
        with contextlib.suppress(OSError, smtplib.SMTPException):
            lmtp = client(port)
            for n in range(per_connection):
                if stop.is_set():
                    break
                subject = f"Overflow {tag} {connection}-{n}"
                if lmtp.sendmail(REPORTER, [PROJECT], mail(subject=subject)) == {}:
                    with lock:
                        accepted.add(subject)
            # No QUIT: the stop comes right after the last 250.
            lmtp.close()

    threads = [threading.Thread(target=deliver, args=(c,)) for c in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    return accepted


def _titles(db: Path) -> set[str]:
    conn = sqlite3.connect(db)
    try:
        return {row[0] for row in conn.execute("SELECT title FROM reports")}
    finally:
        conn.close()


def _sigterm_once(daemon: DaemonProcess, db: Path, reports: int, done: threading.Event) -> None:
    """SIGTERM once `reports` reports are stored, the deliveries going on."""
    wait_until(
        lambda: count_rows(db, "SELECT COUNT(*) FROM reports") >= reports,
        what="deliveries under way",
    )
    daemon.proc.send_signal(signal.SIGTERM)  # type: ignore[union-attr]
    done.set()


@pytest.mark.parametrize("when", ["just after a burst", "while deliveries are in flight"])
def test_sigterm_during_or_just_after_a_burst_stops_the_daemon_and_loses_nothing(
    tmp_dir: Path, daemon_config: Config, port: int, when: str
) -> None:
    # The signal used to be acted on in the intake loop's thread, between two of its bytecodes:
    # when that thread was inside the outbox's wake-up Event (set after every pass, the moment
    # the 250s went out), the handler waited for a lock its own thread held, and the daemon
    # never stopped. Several rounds, as the window is narrow.
    for round_ in range(4):
        log_path = tmp_dir / f"daemon-{round_}.log"
        with DaemonProcess(daemon_config.path, log_path) as daemon:
            daemon.wait_for_log("reading lmtp://")
            done = threading.Event()
            if when == "just after a burst":
                accepted = _deliver_burst(port, f"r{round_}", 15, done)
                exit_code = daemon.stop(timeout=TIMEOUT_STOP_SEC)
            else:
                db = daemon_config.database
                target = count_rows(db, "SELECT COUNT(*) FROM reports") + 20
                stopper = threading.Thread(target=_sigterm_once, args=(daemon, db, target, done))
                stopper.start()
                accepted = _deliver_burst(port, f"r{round_}", 1000, done)
                stopper.join()
                exit_code = daemon.stop(timeout=TIMEOUT_STOP_SEC)
        assert exit_code == 0, log_path.read_text(errors="replace")[-3000:]
        assert accepted, "no delivery got its 250"
        # Every message that got its 250 is stored (one the daemon stopped before answering
        # got 451, or its connection closed, and the MTA delivers it again).
        assert accepted <= _titles(daemon_config.database)


def test_a_storm_of_sighup_during_a_burst_then_sigterm_stops_the_daemon(
    daemon: DaemonProcess, daemon_config: Config, port: int
) -> None:
    # Each SIGHUP sets the intake loop's wake-up Event: many chances for the signal to come
    # while the intake loop's own thread is inside that Event.
    done = threading.Event()

    def storm() -> None:
        while not done.is_set():
            daemon.proc.send_signal(signal.SIGHUP)  # type: ignore[union-attr]
            done.wait(0.01)

    stormer = threading.Thread(target=storm)
    stormer.start()
    try:
        accepted = _deliver_burst(port, "storm", 25, threading.Event())
    finally:
        done.set()
        stormer.join()
    assert daemon.stop(timeout=TIMEOUT_STOP_SEC) == 0, daemon.log()[-3000:]
    assert accepted <= _titles(daemon_config.database)
    assert "reloaded from" in daemon.log()


def _stored_raw(db: Path) -> bytes:
    conn = sqlite3.connect(db)
    try:
        return bytes(conn.execute("SELECT raw FROM messages ORDER BY id LIMIT 1").fetchone()[0])
    finally:
        conn.close()


def _peak_rss(pid: int) -> int:
    """The process's peak resident memory (VmHWM), in bytes."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) * 1024
    raise AssertionError("no VmHWM")
