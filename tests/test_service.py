"""The daemon as a service: sd_notify, signals, reload, backup, single instance."""

from __future__ import annotations

import os
import signal
import socket
import sqlite3
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from dataclasses import replace
from pathlib import Path

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
from servers import BlackHoleProxy, DovecotServer, ImapAccount, SmtpSink

ROOT = Path(__file__).parent.parent


class NotifySocket:
    """A real AF_UNIX datagram socket, as systemd offers in $NOTIFY_SOCKET."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        self.sock.bind(str(path))
        self.sock.settimeout(0.2)
        self.messages: list[str] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._read, daemon=True)
        self._thread.start()

    def _read(self) -> None:
        while not self._stop.is_set():
            try:
                data = self.sock.recv(65536)
            except TimeoutError:
                continue
            except OSError:
                return
            self.messages.extend(data.decode().splitlines())

    def wait_for(self, line: str, timeout: float = 20) -> int:
        """Waits for a line starting with `line`; returns its index."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            for index, message in enumerate(list(self.messages)):
                if message.startswith(line):
                    return index
            time.sleep(0.05)
        raise AssertionError(f"no {line!r} in {self.messages}")

    def close(self) -> None:
        self._stop.set()
        self.sock.close()


@pytest.fixture
def notify(tmp_dir: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[NotifySocket]:
    sock = NotifySocket(tmp_dir / "notify.sock")
    monkeypatch.setenv("NOTIFY_SOCKET", str(sock.path))
    yield sock
    sock.close()


def test_ready_after_login_status_and_stopping(
    tmp_dir: Path, imap_account: ImapAccount, smtp_sink: SmtpSink, notify: NotifySocket
) -> None:
    config = imap_config(tmp_dir, imap_account, smtp_sink)
    with DaemonProcess(config.path, tmp_dir / "d.log") as daemon:
        notify.wait_for("READY=1")
        assert "reading imap+plain://" in daemon.log()
        notify.wait_for("STATUS=reading imap+plain://")
        assert daemon.stop() == 0
    notify.wait_for("STOPPING=1")


def test_no_ready_while_the_mailbox_cannot_be_logged_in_to(
    tmp_dir: Path, imap_account: ImapAccount, smtp_sink: SmtpSink, notify: NotifySocket
) -> None:
    config = imap_config(tmp_dir, imap_account, smtp_sink)
    imap_account.password_file.write_text("wrong\n")
    try:
        with DaemonProcess(config.path, tmp_dir / "d.log") as daemon:
            daemon.wait_for_log("mailbox unavailable")
            time.sleep(1)
            assert not any(m.startswith("READY=1") for m in notify.messages)
            assert any(m.startswith("STATUS=mailbox unavailable") for m in notify.messages)
            daemon.stop()
    finally:
        imap_account.password_file.write_text(imap_account.password + "\n")


def test_watchdog_is_petted_while_the_loops_turn(
    tmp_dir: Path,
    imap_account: ImapAccount,
    smtp_sink: SmtpSink,
    notify: NotifySocket,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("WATCHDOG_USEC", "2000000")
    config = imap_config(tmp_dir, imap_account, smtp_sink)
    with DaemonProcess(config.path, tmp_dir / "d.log") as daemon:
        notify.wait_for("READY=1")
        first = notify.wait_for("WATCHDOG=1", timeout=10)
        time.sleep(2.5)
        assert notify.messages.count("WATCHDOG=1") >= 2, notify.messages[first:]
        daemon.stop()


def test_watchdog_stops_when_imap_hangs(
    tmp_dir: Path,
    dovecot: DovecotServer,
    imap_account: ImapAccount,
    smtp_sink: SmtpSink,
    notify: NotifySocket,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """A server that accepts connections but never answers: socket timeouts and reconnects go
    on, but no round trip completes, so WATCHDOG=1 stops (and systemd would restart us)."""
    monkeypatch.setenv("WATCHDOG_USEC", "2000000")  # a ping every 0.5 s, silence after 2 s
    with BlackHoleProxy(dovecot.host, dovecot.port) as proxy:
        config = imap_config(tmp_dir, replace(imap_account, port=proxy.port), smtp_sink)
        config.path.write_text(
            config.path.read_text().replace('connect_timeout = "10s"', 'connect_timeout = "3s"')
        )

        def pings() -> int:
            return notify.messages.count("WATCHDOG=1")

        with DaemonProcess(config.path, tmp_dir / "d.log") as daemon:
            notify.wait_for("READY=1")
            wait_until(lambda: pings() >= 3, what="WATCHDOG=1 while healthy")
            proxy.black_hole()
            wait_until(
                lambda: any(m.startswith("STATUS=mailbox unavailable") for m in notify.messages),
                timeout=30,
                what="STATUS=mailbox unavailable",
            )
            silent_from = pings()
            # Two more tries that time out: each one used to count as the loop turning.
            daemon.wait_for_log("mailbox still unavailable (try 3)", timeout=60)
            assert pings() == silent_from, notify.messages[-10:]
            assert "no progress in intake" in daemon.log()
            # The server answers again: round trips complete, the pings come back.
            proxy.forward()
            wait_until(lambda: pings() > silent_from, timeout=60, what="WATCHDOG=1 again")
            statuses = [m for m in notify.messages if m.startswith("STATUS=")]
            assert statuses[-1].startswith("STATUS=reading imap+plain://"), statuses[-3:]
            assert daemon.stop() == 0


def test_sigterm_in_the_middle_of_a_batch_loses_nothing(
    tmp_dir: Path, imap_account: ImapAccount, smtp_sink: SmtpSink
) -> None:
    n = 120  # wide enough that a busy machine still interrupts it mid-way
    config = with_reports(tmp_dir, imap_account, smtp_sink, n, batch_size=4, prefix="r")
    db = config.database
    with DaemonProcess(config.path, tmp_dir / "d1.log") as first:
        wait_until(lambda: count_rows(db, "SELECT COUNT(*) FROM messages") >= 3, what="ingest")
        # Frozen while the signal arrives, so the daemon cannot finish the whole inbox first
        # (on a fast machine it used to, and the test then proved nothing).
        os.kill(first.pid, signal.SIGSTOP)
        started = time.monotonic()
        os.kill(first.pid, signal.SIGTERM)
        os.kill(first.pid, signal.SIGCONT)
        assert first.stop(timeout=30) == 0
        assert time.monotonic() - started < 30  # the unit's TimeoutStopSec
    stored = count_rows(db, "SELECT COUNT(*) FROM messages")
    assert stored < n
    # Everything stored was moved out of the inbox or will be recognised: restart and finish.
    with DaemonProcess(config.path, tmp_dir / "d2.log") as second:
        wait_until(
            lambda: count_rows(db, "SELECT COUNT(*) FROM messages") == n,
            timeout=60,
            what="all stored",
        )
        wait_until(
            lambda: len(smtp_sink.messages) >= n * (1 + len(MAINTAINERS)),
            timeout=60,
            what="all sent",
        )
        second.stop()
    assert count_rows(db, "SELECT COUNT(*) FROM reports") == n
    assert count_rows(db, "SELECT COUNT(*) FROM outbox WHERE state != 'sent'") == 0
    ids = [c.msg["Message-ID"] for c in smtp_sink.messages]
    assert len(ids) == len(set(ids)) == n * (1 + len(MAINTAINERS))


def test_sighup_reloads_a_good_config_and_refuses_a_bad_one(
    tmp_dir: Path, imap_account: ImapAccount, smtp_sink: SmtpSink, notify: NotifySocket
) -> None:
    config = imap_config(tmp_dir, imap_account, smtp_sink)
    good = config.path.read_text()
    with DaemonProcess(config.path, tmp_dir / "d.log") as daemon:
        notify.wait_for("READY=1")
        daemon.wait_for_log("waiting for new mail")
        config.path.write_text(good.replace('name = "Example"', 'name = "Renamed"'))
        assert daemon.proc is not None
        daemon.proc.send_signal(signal.SIGHUP)
        daemon.wait_for_log("configuration and templates reloaded")
        notify.wait_for("RELOADING=1")
        imap_account.append(mail(subject="after reload"))
        got = smtp_sink.wait_for(1 + len(MAINTAINERS))
        assert "Renamed security" in str(got[0].msg["From"])
        # A bad file is refused; the running configuration keeps working.
        config.path.write_text(good.replace('acknowledge = "48h"', 'acknowledge = "soon"'))
        daemon.proc.send_signal(signal.SIGHUP)
        daemon.wait_for_log("reload refused")
        assert "policy.acknowledge" in daemon.log()
        imap_account.append(mail(sender="second@outside.example", subject="after bad reload"))
        got = smtp_sink.wait_for(2 * (1 + len(MAINTAINERS)))
        assert "Renamed security" in str(got[-1].msg["From"])
        assert daemon.stop() == 0


def test_second_instance_on_the_same_database_is_refused(
    tmp_dir: Path, imap_account: ImapAccount, smtp_sink: SmtpSink
) -> None:
    config = imap_config(tmp_dir, imap_account, smtp_sink)
    with DaemonProcess(config.path, tmp_dir / "d.log") as daemon:
        daemon.wait_for_log("reading")
        result = subprocess.run(
            [sys.executable, "-m", "triaged", "--config", str(config.path), "run"],
            capture_output=True,
            text=True,
            timeout=30,
            env={**os.environ, "PYTHONPATH": str(ROOT)},
        )
        assert result.returncode == 1
        assert "another triaged is already running" in result.stderr
        assert str(daemon.proc.pid) in result.stderr  # type: ignore[union-attr]
        daemon.stop()


def test_backup_while_the_daemon_writes_restores_consistently(
    tmp_dir: Path, imap_account: ImapAccount, smtp_sink: SmtpSink
) -> None:
    n = 60
    config = with_reports(tmp_dir, imap_account, smtp_sink, n, batch_size=2, prefix="b")
    db = config.database
    copy = tmp_dir / "copy.db"
    with DaemonProcess(config.path, tmp_dir / "d.log") as daemon:
        wait_until(lambda: count_rows(db, "SELECT COUNT(*) FROM messages") >= 2, what="ingest")
        result = subprocess.run(
            [sys.executable, "-m", "triaged", "--config", str(config.path), "backup", str(copy)],
            capture_output=True,
            text=True,
            timeout=60,
            env={**os.environ, "PYTHONPATH": str(ROOT)},
        )
        assert result.returncode == 0, result.stderr
        daemon.stop()
    conn = sqlite3.connect(copy)
    try:
        assert conn.execute("PRAGMA integrity_check").fetchone()[0] == "ok"
        reports = conn.execute("SELECT COUNT(*) FROM reports").fetchone()[0]
        # Consistent: every report has its message, receipt row and notifications.
        assert (
            conn.execute("SELECT COUNT(*) FROM messages WHERE kind = 'report'").fetchone()[0]
            == reports
        )
        assert conn.execute("SELECT COUNT(*) FROM outbox").fetchone()[0] == reports * (
            1 + len(MAINTAINERS)
        )
        assert 0 < reports <= n
    finally:
        conn.close()
    # An existing file is never overwritten without --overwrite.
    again = subprocess.run(
        [sys.executable, "-m", "triaged", "--config", str(config.path), "backup", str(copy)],
        capture_output=True,
        text=True,
        timeout=60,
        env={**os.environ, "PYTHONPATH": str(ROOT)},
    )
    assert again.returncode == 1 and "exists" in again.stderr
