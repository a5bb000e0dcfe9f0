"""The canary (triaged/service/canary.py): probes through triaged's SMTP to the project's
address, back through the mailbox.

The SMTP sink plays the project's mail server: with its relay on, what it accepts for the
project's address is appended to the Dovecot INBOX the daemon reads; with the relay off, it is
lost on the way, as a spam filter or a removed alias would lose it.
"""

from __future__ import annotations

import sqlite3
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path

import pytest
from click.testing import CliRunner
from helpers import (
    MAINTAINERS,
    PROJECT,
    DaemonProcess,
    Harness,
    count_rows,
    imap_config,
    mail,
    wait_until,
)
from servers import Captured, ImapAccount, SmtpSink
from test_service import NotifySocket

from triaged.cli import main
from triaged.config import Config, load
from triaged.mail import auth
from triaged.service.canary import Canary

ALERT = "Alert: mail to the security address is not arriving"
RECOVERED = "Recovered: mail to the security address arrives again"


@pytest.fixture
def notify(tmp_dir: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[NotifySocket]:
    sock = NotifySocket(tmp_dir / "notify.sock")
    monkeypatch.setenv("NOTIFY_SOCKET", str(sock.path))
    yield sock
    sock.close()


class Relay:
    """The project's mail server in front of the mailbox: on, or losing everything."""

    def __init__(self, account: ImapAccount) -> None:
        self.account = account
        self.on = True

    def __call__(self, captured: Captured) -> None:
        if self.on and PROJECT in captured.rcpt_tos:
            self.account.append(captured.raw)


def canary_config(tmp_dir: Path, account: ImapAccount, sink: SmtpSink, **keys: str) -> Config:
    config = imap_config(tmp_dir, account, sink)
    text = config.path.read_text()
    text += "\n[liveness]\n" + "".join(f'{k} = "{v}"\n' for k, v in keys.items())
    config.path.write_text(text)
    return load(config.path)


def titled(sink: SmtpSink, subject: str) -> list[Captured]:
    return [c for c in sink.messages if c.msg["Subject"] == subject]


def probes_back(db: Path) -> int:
    return count_rows(db, "SELECT COUNT(*) FROM canaries WHERE returned_at IS NOT NULL")


def probes_sent(db: Path) -> int:
    return count_rows(db, "SELECT COUNT(*) FROM canaries")


def check(config: Config, *args: str) -> tuple[int, str]:
    result = CliRunner().invoke(main, ["--config", str(config.path), "check", *args])
    return result.exit_code, result.stdout


def test_a_probe_comes_back_and_nothing_else_happens(
    tmp_dir: Path, imap_account: ImapAccount, smtp_sink: SmtpSink
) -> None:
    smtp_sink.relay = Relay(imap_account)
    config = canary_config(tmp_dir, imap_account, smtp_sink, canary_every="1s")
    db = config.database
    with DaemonProcess(config.path, tmp_dir / "daemon.log") as daemon:
        daemon.wait_for_log("waiting for new mail")
        wait_until(lambda: probes_back(db) >= 2, timeout=30, what="two probes back")
        code, said = check(config, "--canary", "--timeout", "30")
        assert code == 0, said
        assert "canary: ok (back through the mailbox after" in said
        assert daemon.stop() == 0
    # Consumed silently: stored as canary mail, no report, nothing to anyone but the probes.
    assert count_rows(db, "SELECT COUNT(*) FROM reports") == 0
    kinds = count_rows(db, "SELECT COUNT(DISTINCT kind) FROM messages")
    assert kinds == 1 and count_rows(db, "SELECT COUNT(*) FROM messages WHERE kind = 'canary'")
    assert {tuple(c.rcpt_tos) for c in smtp_sink.messages} == {(PROJECT,)}
    assert count_rows(db, "SELECT COUNT(*) FROM outages") == 0
    assert imap_account.fetch_all("INBOX") == []  # taken out of the inbox like any mail
    # The digest counts them.
    digest = CliRunner().invoke(main, ["--config", str(config.path), "digest", "--print"])
    assert "This week: " in digest.stdout and "probes came back; round trip" in digest.stdout


def test_a_probe_lost_on_the_way_alerts_once_and_recovers_once(
    tmp_dir: Path, imap_account: ImapAccount, smtp_sink: SmtpSink, notify: NotifySocket
) -> None:
    relay = Relay(imap_account)
    relay.on = False
    smtp_sink.relay = relay
    config = canary_config(
        tmp_dir, imap_account, smtp_sink, canary_every="1s", canary_alert_after="3s"
    )
    db = config.database
    with DaemonProcess(config.path, tmp_dir / "daemon.log") as daemon:
        daemon.wait_for_log("waiting for new mail")
        code, said = check(config, "--canary", "--timeout", "2")
        assert code == 1 and "canary: FAILED: the probe sent to" in said, said
        wait_until(
            lambda: len(titled(smtp_sink, ALERT)) >= len(MAINTAINERS),
            timeout=30,
            what="the alert",
        )
        wait_until(
            lambda: _status(notify, "canary probes not coming back since", "alerted"),
            what="STATUS saying so",
        )
        # The outage goes on for several more looks: still one alert each.
        sent = probes_sent(db)
        wait_until(lambda: probes_sent(db) >= sent + 3, timeout=30, what="more probes")
        assert sorted(r for c in titled(smtp_sink, ALERT) for r in c.rcpt_tos) == MAINTAINERS
        alert = titled(smtp_sink, ALERT)[0].msg.get_content()
        assert "has not come back through the mailbox" in alert and PROJECT in alert

        relay.on = True  # mail flows again
        wait_until(
            lambda: len(titled(smtp_sink, RECOVERED)) >= len(MAINTAINERS),
            timeout=30,
            what="the recovery",
        )
        wait_until(lambda: "canary" not in _status(notify), what="STATUS without the canary")
        sent = probes_sent(db)
        wait_until(lambda: probes_back(db) >= 2 and probes_sent(db) >= sent + 2, timeout=30)
        assert daemon.stop() == 0
    assert sorted(r for c in titled(smtp_sink, RECOVERED) for r in c.rcpt_tos) == MAINTAINERS
    assert len(titled(smtp_sink, ALERT)) == len(MAINTAINERS)
    assert count_rows(db, "SELECT COUNT(*) FROM reports") == 0


def test_a_forged_probe_is_ordinary_mail_and_a_genuine_one_is_not(
    tmp_dir: Path, imap_account: ImapAccount, smtp_sink: SmtpSink
) -> None:
    config = canary_config(tmp_dir, imap_account, smtp_sink, canary_every="1h")
    h = Harness(config)
    key = auth.load_or_create_key(config.auth.key_file)
    # Someone who read a probe's header but has no key: a made-up ID with any signature.
    forged = auth.canary_token(b"k" * 32, "0" * 32)
    imap_account.append(mail(subject="Please look at this", headers={auth.CANARY_HEADER: forged}))
    now = datetime.now(UTC)
    with h.store.transaction():
        probe_id, probe = Canary(config, h.store, key).probe(now)
    imap_account.append(probe.raw)
    assert h.pump() == 2
    reports = h.store.all("SELECT title FROM reports")
    assert [r["title"] for r in reports] == ["Please look at this"]  # a report like any other
    kinds = sorted(r["kind"] for r in h.store.all("SELECT kind FROM messages"))
    assert kinds == ["canary", "report"]
    conn = sqlite3.connect(config.database)
    returned = conn.execute("SELECT returned_at FROM canaries WHERE id = ?", (probe_id,))
    assert returned.fetchone()[0] is not None
    conn.close()
    # A copy of a genuine probe proves nothing new: counted once, and still no report.
    imap_account.append(probe.raw.replace(b"Message-ID: <", b"Message-ID: <copy."))
    h.pump()
    assert count_rows(config.database, "SELECT COUNT(*) FROM reports") == 1


def _status(notify: NotifySocket, *needles: str) -> str:
    for line in reversed(notify.messages):
        if line.startswith("STATUS="):
            return line if all(n in line for n in needles) else ""
    return ""
