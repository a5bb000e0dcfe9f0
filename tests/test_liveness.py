"""Liveness: outages of the mailbox and of SMTP are told to the team once, also across restarts."""

from __future__ import annotations

import email
import email.policy
import sqlite3
from collections.abc import Iterator
from dataclasses import replace
from datetime import UTC, datetime, timedelta
from email.message import EmailMessage
from pathlib import Path
from typing import Any

import pytest
from helpers import (
    MAINTAINERS,
    DaemonProcess,
    base_sections,
    count_rows,
    imap_config,
    mail,
    wait_until,
    write_config,
)
from servers import BlackHoleProxy, Captured, DovecotServer, ImapAccount, SmtpSink
from test_service import NotifySocket

from triaged.config import Config, LivenessConfig, load
from triaged.core.durations import Duration
from triaged.errors import ConfigError
from triaged.service.liveness import MAILBOX, SMTP, Liveness
from triaged.store.db import Store

T0 = datetime(2026, 5, 4, 9, 0, tzinfo=UTC)
MAILBOX_ALERT = "Alert: the security mailbox cannot be read"
MAILBOX_OVER = "Recovered: the security mailbox can be read again"
SMTP_ALERT = "Alert: mail cannot be sent"
SMTP_OVER = "Recovered: mail can be sent again"


# --- configuration ---------------------------------------------------------------------------


def _config(tmp_path: Path, **liveness: Any) -> Config:
    sections = base_sections(tmp_path)
    if liveness:
        sections["liveness"] = liveness
    return load(write_config(tmp_path, sections))


def test_liveness_defaults_to_fifteen_minutes(tmp_path: Path) -> None:
    config = _config(tmp_path)
    assert config.liveness.mailbox_alert_after == Duration(15, "m")
    assert config.liveness.smtp_alert_after == Duration(15, "m")
    config = _config(tmp_path, mailbox_alert_after="2m", smtp_alert_after="1h")
    assert config.liveness.mailbox_alert_after == Duration(2, "m")
    assert config.liveness.smtp_alert_after == Duration(1, "h")


@pytest.mark.parametrize(
    ("keys", "key", "reason"),
    [
        ({"mailbox_alert_afer": "5m"}, "liveness.mailbox_alert_afer", "unknown key"),
        ({"smtp_alert_after": "soon"}, "liveness.smtp_alert_after", "not a duration"),
        ({"smtp_alert_after": 15}, "liveness.smtp_alert_after", "must be a str"),
        ({"mailbox_alert_after": "0s"}, "liveness.mailbox_alert_after", "positive"),
        ({"mailbox_alert_after": "1bd"}, "liveness.mailbox_alert_after", "business days"),
    ],
)
def test_bad_liveness_keys_name_the_file_and_the_key(
    tmp_path: Path, keys: dict[str, Any], key: str, reason: str
) -> None:
    with pytest.raises(ConfigError) as info:
        _config(tmp_path, **keys)
    assert info.value.key == key
    assert reason in info.value.message
    assert str(tmp_path / "config.toml") in str(info.value)


# --- the decisions, on a real database ----------------------------------------------------------


class Desk:
    """Liveness on a real database; the mail it queues is read back from the outbox."""

    def __init__(self, tmp_path: Path, team: str | None = None) -> None:
        sections = base_sections(tmp_path)
        if team:
            sections["maintainers"]["team"] = team
        sections["liveness"] = {"mailbox_alert_after": "15m", "smtp_alert_after": "30m"}
        self.config = load(write_config(tmp_path, sections))
        self.store = Store(self.config.database)
        self.liveness = Liveness(self.config, self.store)

    def restart(self) -> None:
        self.store.close()
        self.store = Store(self.config.database)
        self.liveness = Liveness(self.config, self.store)

    def mail(self) -> list[EmailMessage]:
        rows = self.store.all("SELECT raw FROM outbox ORDER BY next_attempt_at, id")
        out = []
        for row in rows:
            msg = email.message_from_bytes(row["raw"], policy=email.policy.default)
            assert isinstance(msg, EmailMessage)
            out.append(msg)
        return out

    def close(self) -> None:
        self.store.close()


@pytest.fixture
def desk(tmp_path: Path) -> Iterator[Desk]:
    d = Desk(tmp_path)
    yield d
    d.close()


def _subjects(msgs: list[EmailMessage]) -> list[tuple[str, str]]:
    return [(str(m["To"]), str(m["Subject"])) for m in msgs]


def test_one_alert_per_outage_to_every_member_once_it_lasted_long_enough(desk: Desk) -> None:
    live = desk.liveness
    live.failed(MAILBOX, T0, "connect: timed out")
    live.failed(MAILBOX, T0 + timedelta(minutes=14), "connect: timed out")
    assert live.check(T0 + timedelta(minutes=14, seconds=59)) == 0
    assert desk.mail() == []
    outage = live.failed(MAILBOX, T0 + timedelta(minutes=15), "connect: refused")
    assert outage.started_at == T0 and outage.alerted_at is not None
    for minutes in (16, 60, 600):
        live.failed(MAILBOX, T0 + timedelta(minutes=minutes), "connect: refused")
        live.check(T0 + timedelta(minutes=minutes))
    msgs = desk.mail()
    assert _subjects(msgs) == [(address, MAILBOX_ALERT) for address in MAINTAINERS]
    body = msgs[0].get_content()
    assert "Monday 04 May 2026, 09:00 UTC" in body  # when it started
    assert "connect: refused" in body
    assert msgs[0]["Auto-Submitted"] == "auto-generated"


def test_the_alert_goes_to_the_team_address_when_there_is_one(tmp_path: Path) -> None:
    d = Desk(tmp_path, team="security-team@example.org")
    try:
        d.liveness.failed(SMTP, T0, "421 try later")
        assert d.liveness.check(T0 + timedelta(minutes=30)) == 1
        assert _subjects(d.mail()) == [("security-team@example.org", SMTP_ALERT)]
    finally:
        d.close()


def test_a_restart_during_the_outage_neither_realerts_nor_resets_the_start(desk: Desk) -> None:
    desk.liveness.failed(MAILBOX, T0, "timed out")
    desk.liveness.check(T0 + timedelta(minutes=20))
    assert len(desk.mail()) == len(MAINTAINERS)
    desk.restart()
    outage = desk.liveness.failed(MAILBOX, T0 + timedelta(hours=2), "timed out")
    desk.liveness.check(T0 + timedelta(hours=3))
    assert outage.started_at == T0
    assert len(desk.mail()) == len(MAINTAINERS)
    # Not yet alerted at the restart: the clock still runs from the first failure.
    desk.liveness.failed(SMTP, T0, "refused")
    desk.restart()
    desk.liveness.failed(SMTP, T0 + timedelta(minutes=30), "refused")
    assert [s for _, s in _subjects(desk.mail())].count(SMTP_ALERT) == len(MAINTAINERS)


def test_recovered_mail_only_after_an_alerted_outage_and_only_once(desk: Desk) -> None:
    live = desk.liveness
    # A short outage: nobody was told, so nobody hears of its end.
    live.failed(MAILBOX, T0, "timed out")
    assert live.succeeded(MAILBOX, T0 + timedelta(minutes=5)) is not None
    assert desk.mail() == []
    live.failed(MAILBOX, T0 + timedelta(hours=1), "timed out")
    live.check(T0 + timedelta(hours=2))
    ended = live.succeeded(MAILBOX, T0 + timedelta(hours=2, minutes=30))
    assert ended is not None and ended.started_at == T0 + timedelta(hours=1)
    assert live.succeeded(MAILBOX, T0 + timedelta(hours=3)) is None
    subjects = [s for _, s in _subjects(desk.mail())]
    assert subjects == [MAILBOX_ALERT] * 2 + [MAILBOX_OVER] * 2
    assert "lasted 1 hour 30 minutes" in desk.mail()[-1].get_content()


def test_server_error_text_stays_out_of_the_headers(desk: Desk) -> None:
    hostile = "550 no\r\nSubject: injected\r\nBcc: victim@example.net\n\x00"
    desk.liveness.failed(SMTP, T0, hostile)
    desk.liveness.check(T0 + timedelta(hours=1))
    (first, *_) = desk.mail()
    assert first["Subject"] == SMTP_ALERT
    assert first["Bcc"] is None
    assert "550 no Subject: injected Bcc: victim@example.net" in first.get_content()


def test_an_smtp_alert_still_waiting_goes_out_before_the_all_clear(desk: Desk) -> None:
    desk.liveness.failed(SMTP, T0, "refused")
    desk.liveness.check(T0 + timedelta(minutes=30))
    # The outbox retried the alert and put it off for an hour, as it does with any message.
    desk.store.conn.execute(
        "UPDATE outbox SET next_attempt_at = '2026-05-04T11:00:00.000000Z' WHERE kind = 'outage'"
    )
    desk.liveness.succeeded(SMTP, T0 + timedelta(minutes=40))
    subjects = [s for _, s in _subjects(desk.mail())]
    assert subjects == [SMTP_ALERT] * 2 + [SMTP_OVER] * 2


# --- the daemon, against Dovecot and the SMTP sink ---------------------------------------------


@pytest.fixture
def notify(tmp_dir: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[NotifySocket]:
    sock = NotifySocket(tmp_dir / "notify.sock")
    monkeypatch.setenv("NOTIFY_SOCKET", str(sock.path))
    yield sock
    sock.close()


def _with_liveness(config: Config, **keys: str) -> Path:
    text = config.path.read_text().replace('connect_timeout = "10s"', 'connect_timeout = "3s"')
    text += "\n[liveness]\n" + "".join(f'{k} = "{v}"\n' for k, v in keys.items())
    config.path.write_text(text)
    return config.path


def _titled(sink: SmtpSink, subject: str) -> list[Captured]:
    return [c for c in sink.messages if c.msg["Subject"] == subject]


def _status(notify: NotifySocket, *needles: str) -> str:
    for line in reversed(notify.messages):
        if line.startswith("STATUS=") and all(n in line for n in needles):
            return line
    return ""


def _last_status(notify: NotifySocket) -> str:
    return _status(notify)


def _started_at(db: Path, name: str) -> str | None:
    conn = sqlite3.connect(db, timeout=30)
    try:
        row = conn.execute("SELECT started_at FROM outages WHERE name = ?", (name,)).fetchone()
    finally:
        conn.close()
    return None if row is None else str(row[0])


def test_mailbox_outage_alerts_once_across_a_restart_then_says_recovered(
    tmp_dir: Path,
    dovecot: DovecotServer,
    imap_account: ImapAccount,
    smtp_sink: SmtpSink,
    notify: NotifySocket,
) -> None:
    with BlackHoleProxy(dovecot.host, dovecot.port) as proxy:
        config = imap_config(tmp_dir, replace(imap_account, port=proxy.port), smtp_sink)
        path = _with_liveness(config, mailbox_alert_after="2s")
        with DaemonProcess(path, tmp_dir / "d1.log") as first:
            notify.wait_for("READY=1")
            first.wait_for_log("waiting for new mail")
            proxy.stop()  # the server goes away: connections drop, new ones are refused
            alerts = wait_until(
                lambda: len(_titled(smtp_sink, MAILBOX_ALERT)) >= len(MAINTAINERS) or None,
                timeout=60,
                what="the alert mail",
            )
            status = wait_until(
                lambda: _status(notify, "mailbox unavailable since", "maintainers alerted"),
                what="STATUS with the outage",
            )
            assert first.stop() == 0
        alerts = _titled(smtp_sink, MAILBOX_ALERT)
        assert sorted(r for c in alerts for r in c.rcpt_tos) == sorted(MAINTAINERS)
        started = _started_at(config.database, MAILBOX)
        assert started is not None
        since = datetime.strptime(started, "%Y-%m-%dT%H:%M:%S.%fZ")
        assert since.strftime("since %A %d %B %Y, %H:%M UTC") in " ".join(
            alerts[0].msg.get_content().split()
        )

        # The watchdog restarts triaged during the outage: still one alert, same start.
        notify.messages.clear()
        with DaemonProcess(path, tmp_dir / "d2.log") as second:
            # By the third failed try, more than mailbox_alert_after has passed since this
            # process started: an alert counted from a reset start would be queued by now.
            second.wait_for_log("mailbox still unavailable (try 3)", timeout=60)
            assert count_rows(
                config.database, "SELECT COUNT(*) FROM outbox WHERE kind = 'outage'"
            ) == len(MAINTAINERS)
            assert _started_at(config.database, MAILBOX) == started
            assert _status(notify, "mailbox unavailable").split(": ")[0] == status.split(": ")[0]

            proxy.start()
            over = wait_until(
                lambda: len(_titled(smtp_sink, MAILBOX_OVER)) >= len(MAINTAINERS) or None,
                timeout=60,
                what="the recovered mail",
            )
            wait_until(
                lambda: _last_status(notify).startswith("STATUS=reading"),
                what="STATUS reading again",
            )
            assert second.stop() == 0
    over = _titled(smtp_sink, MAILBOX_OVER)
    assert sorted(r for c in over for r in c.rcpt_tos) == sorted(MAINTAINERS)
    assert len(_titled(smtp_sink, MAILBOX_ALERT)) == len(MAINTAINERS)
    assert _started_at(config.database, MAILBOX) is None


def test_smtp_outage_alert_waits_for_the_server_then_comes_with_the_all_clear(
    tmp_dir: Path, imap_account: ImapAccount, smtp_sink: SmtpSink, notify: NotifySocket
) -> None:
    config = imap_config(tmp_dir, imap_account, smtp_sink)
    path = _with_liveness(config, smtp_alert_after="2s")
    with DaemonProcess(path, tmp_dir / "d.log") as daemon:
        notify.wait_for("READY=1")
        daemon.wait_for_log("waiting for new mail")
        smtp_sink.stop()
        imap_account.append(mail(subject="Report while SMTP is down"))
        wait_until(
            lambda: _status(notify, "SMTP failing since", "maintainers alerted"),
            timeout=30,
            what="STATUS with the SMTP outage, alerted",
        )
        smtp_sink.start()
        # The report's receipt and notifications, then per maintainer the alert and the
        # all-clear.
        smtp_sink.wait_for(1 + 3 * len(MAINTAINERS), timeout=60)
        wait_until(
            lambda: "SMTP failing" not in _last_status(notify), what="STATUS without the outage"
        )
        assert daemon.stop() == 0
    for address in MAINTAINERS:
        got = [c.msg["Subject"] for c in smtp_sink.messages if c.rcpt_tos == [address]]
        assert got.count(SMTP_ALERT) == 1 and got.count(SMTP_OVER) == 1, got
        assert got.index(SMTP_ALERT) < got.index(SMTP_OVER)
    alert = _titled(smtp_sink, SMTP_ALERT)[0].msg.get_content()
    assert "cannot send mail" in alert and "Failing since" in alert
    assert "Connection refused" in alert


def test_the_example_config_documents_the_defaults(tmp_path: Path) -> None:
    text = (Path(__file__).parent.parent / "config.example.toml").read_text()
    (tmp_path / "pw").write_text("x\n")
    path = tmp_path / "example.toml"
    path.write_text(text.replace("/etc/triaged/imap-password", str(tmp_path / "pw")))
    assert load(path).liveness == LivenessConfig()
