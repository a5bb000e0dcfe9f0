"""Writes tests/data/triaged-0.1.0.db: a database as triaged 0.1.0 left it.

How it was made (run once, with the released code; the upgrade test in tests/test_migrations.py
reads the result, so the file is committed and this script is only for making it again):

    git worktree add /tmp/v010 d86c8a8          # triaged 0.1.0
    python3 -m venv /tmp/v010/.venv && /tmp/v010/.venv/bin/pip install -e /tmp/v010
    PYTHONPATH=/tmp/v010 /tmp/v010/.venv/bin/python tests/data/make_triaged_010_db.py \\
        tests/data/triaged-0.1.0.db

It drives 0.1.0's own runners, with injected times from Monday 2 November 2026 09:00 UTC, over
Maildirs (no server): real intake of mail dropped into the inbox (new reports, a follow-up that
ends a /waiting pause, an out-of-office reply, a message from a stranger using a report's tag,
a message too deep to parse), maintainer commands by reply token (/ack, /assign, /severity,
/cvss, /confirm, /reject, /duplicate, /waiting, /reply, /affects, /fixed-in, /cve, /state fixed,
/embargo; one /waiting left open), the reporter's /credit, clock passes (reminders, escalations),
the outbox sending into a Maildir (those rows are `sent`), then a digest, a security.txt
warning and an SMTP outage alert that stay `pending`. Report IDs and reply tokens are random,
so two runs differ in them.

This file runs against the 0.1.0 package (flat modules: triaged.intake, triaged.clocks...), not
against the tree it sits in; it is not a test (pytest collects only test_*.py).
"""

from __future__ import annotations

import itertools
import mailbox
import shutil
import sqlite3
import sys
import tempfile
import threading
from datetime import UTC, datetime, timedelta
from email.message import EmailMessage
from email.policy import SMTP
from email.utils import format_datetime
from pathlib import Path

from triaged import auth
from triaged.clocks import ClockRunner
from triaged.config import load
from triaged.ids import tag
from triaged.intake import IntakeRunner
from triaged.liveness import SMTP as SMTP_OUTAGE
from triaged.liveness import Liveness
from triaged.mailbox import open_mailbox
from triaged.outbox import OutboxRunner
from triaged.scheduler import Scheduler
from triaged.store import Store
from triaged.transport import open_transport

PROJECT = "security@example.org"
ALICE = "alice@example.org"
BOB = "bob@example.org"
T0 = datetime(2026, 11, 2, 9, 0, tzinfo=UTC)
_SERIAL = itertools.count(1)

CONFIG = """\
[project]
name = "Example"
address = "security@example.org"
timezone = "UTC"

[mailbox]
url = "maildir:inbox"

[smtp]
url = "maildir:outbox"

[database]
path = "triaged.db"

[maintainers]
members = ["alice@example.org", "bob@example.org"]

[policy]
acknowledge = "48h"
respond = "96h"
update_every = "1w"
remind_before = ["24h"]
overdue_every = "1d"
disclose_after_fix = "7d"
embargo_max = "30d"
resolve = { critical = "14d", high = "30d" }

[digest]
schedule = "0 9 * * *"

[security_txt]
contact = ["mailto:security@example.org"]
published_expires = 2026-11-20T00:00:00Z
"""


class Desk:
    """0.1.0's intake, clock and outbox runners over one Maildir project."""

    def __init__(self, directory: Path) -> None:
        (directory / "config.toml").write_text(CONFIG)
        self.config = load(directory / "config.toml")
        self.inbox = mailbox.Maildir(directory / "inbox", create=True)
        self.store = Store(self.config.database)
        self.box = open_mailbox(self.config.mailbox)
        self.box.connect()
        self.intake = IntakeRunner(self.config, self.store, self.box)
        self.intake.start(T0)
        self.clocks = ClockRunner(self.config, self.store)
        self.transport = open_transport(self.config.smtp)
        self.outbox = OutboxRunner(self.store, self.transport, self.config.smtp)
        self.key = auth.load_or_create_key(self.config.auth.key_file)
        self.sent = 0

    def deliver(self, at: datetime, *raws: bytes) -> None:
        for raw in raws:
            self.inbox.add(raw)
        self.intake.run_once(at)

    def report(self, at: datetime, sender: str, subject: str, body: str) -> str:
        self.deliver(at, message(at, sender, PROJECT, subject, body))
        row = self.store.one("SELECT id FROM reports ORDER BY rowid DESC LIMIT 1")
        assert row is not None
        return str(row["id"])

    def command(self, at: datetime, report_id: str, body: str, sender: str = ALICE) -> None:
        to = auth.reply_address(self.key, PROJECT, report_id, sender)
        self.deliver(at, message(at, sender, to, f"Re: {tag(report_id)} report", body))

    def reporter(self, at: datetime, report_id: str, sender: str, body: str) -> None:
        self.deliver(at, message(at, sender, PROJECT, f"Re: {tag(report_id)} report", body))

    def send(self, at: datetime) -> None:
        self.sent += self.outbox.run_once(at)

    def close(self) -> None:
        self.box.close()
        self.transport.close()
        self.store.close()


def message(
    at: datetime,
    sender: str,
    to: str,
    subject: str,
    body: str,
    headers: dict[str, str] | None = None,
) -> bytes:
    msg = EmailMessage()
    msg["From"] = sender
    msg["To"] = to
    msg["Subject"] = subject
    msg["Date"] = format_datetime(at)
    msg["Message-ID"] = f"<{at:%Y%m%d%H%M}.{next(_SERIAL)}@outside.test>"
    for key, value in (headers or {}).items():
        msg[key] = value
    msg.set_content(body)
    return msg.as_bytes(policy=SMTP)


def too_deep(at: datetime) -> bytes:
    """A message nested deeper than max_mime_depth (20): intake quarantines it."""
    inner = "text/plain\n\nhello\n"
    for level in range(30):
        inner = (
            f'multipart/mixed; boundary="b{level}"\n\n--b{level}\nContent-Type: {inner}'
            f"\n--b{level}--\n"
        )
    head = f"From: deep@outside.test\nTo: {PROJECT}\nSubject: nested\nDate: {format_datetime(at)}\n"
    return (head + "MIME-Version: 1.0\nContent-Type: " + inner).encode()


def run(desk: Desk) -> None:
    h = timedelta(hours=1)
    sqli = desk.report(T0, "jane@outside.test", "SQL injection in login", "POST /login ' OR 1=1\n")
    xss = desk.report(T0, "kim@outside.test", "XSS in comments", "<script>alert(1)</script>\n")
    bogus = desk.report(T0, "lee@outside.test", "Your site is hacked", "Pay me for details.\n")
    traversal = desk.report(T0, "max@outside.test", "Path traversal in import", "../../etc\n")
    # Nobody answers this one: its clocks give reminders, an escalation, an overdue repeat.
    desk.report(T0, "noa@outside.test", "Open redirect", "/go?to=//evil.test\n")
    desk.deliver(
        T0,
        message(
            T0,
            "ooo@outside.test",
            PROJECT,
            f"Auto: Re: {tag(sqli)} receipt",
            "I am away until Monday.\n",
            {"Auto-Submitted": "auto-replied"},
        ),
    )
    desk.send(T0 + timedelta(minutes=1))

    desk.command(
        T0 + 2 * h,
        sqli,
        "/ack\n/assign bob@example.org\n/severity high\n"
        "/cvss CVSS:3.1/AV:N/AC:L/PR:N/UI:N/S:U/C:H/I:H/A:H\n/confirm\n",
    )
    desk.command(T0 + 2 * h, xss, "/ack\n/waiting\n/reply\nWhich browser did you use?\n")
    desk.command(T0 + 2 * h, bogus, "/reject not a vulnerability report\n", sender=BOB)
    dup = desk.report(T0 + 2 * h, "oli@outside.test", "SQLi on /login", "same as before\n")
    desk.command(T0 + 3 * h, dup, f"/duplicate {sqli}\n", sender=BOB)
    desk.reporter(T0 + 3 * h, xss, "kim@outside.test", "Firefox 140 on Debian.\n")
    desk.reporter(T0 + 3 * h, sqli, "stranger@elsewhere.test", "I found this too.\n")
    desk.deliver(T0 + 3 * h, too_deep(T0 + 3 * h))
    desk.command(
        T0 + 4 * h,
        traversal,
        "/ack\n/confirm\n/severity critical\n/affects >=1.0 <1.0.4\n/cve CVE-2026-1234\n",
    )
    desk.send(T0 + 4 * h)

    desk.clocks.recompute_all()
    desk.clocks.run_once(T0 + 25 * h)  # reminders: acknowledge (open redirect), respond (sqli...)
    desk.send(T0 + 25 * h)

    desk.command(T0 + 48 * h, traversal, "/fixed-in 1.0.4\n/state fixed\n", sender=BOB)
    desk.reporter(T0 + 49 * h, traversal, "max@outside.test", '/credit "Max Mustermann"\n')
    desk.command(T0 + 50 * h, traversal, "/embargo 2026-11-20\n", sender=BOB)
    desk.command(T0 + 50 * h, sqli, "/waiting\n/reply\nCould you send the request log?\n")
    desk.clocks.run_once(T0 + 50 * h)  # escalation: redirect's acknowledge was due at T0 + 48h
    desk.send(T0 + 50 * h)

    # Left pending: the daily digest, the security.txt warning, an SMTP outage alert.
    now = T0 + 72 * h + timedelta(minutes=2)
    scheduler = Scheduler(lambda: desk.config, lambda: now, threading.Event())
    assert scheduler.digest_pass()
    assert scheduler.security_txt_pass()
    liveness = Liveness(desk.config, desk.store)
    liveness.failed(SMTP_OUTAGE, now, "Connection refused")
    liveness.failed(SMTP_OUTAGE, now + timedelta(minutes=20), "Connection refused")
    desk.clocks.run_once(now)


def main(target: Path) -> None:
    with tempfile.TemporaryDirectory() as tmp:
        desk = Desk(Path(tmp))
        try:
            run(desk)
        finally:
            desk.close()
        database = Path(tmp) / "triaged.db"
        # One file: the WAL folded into it, then rewritten small.
        conn = sqlite3.connect(database)
        conn.execute("PRAGMA wal_checkpoint(TRUNCATE)")
        conn.execute("PRAGMA journal_mode=DELETE")
        conn.execute("VACUUM")
        conn.close()
        shutil.copyfile(database, target)


if __name__ == "__main__":
    main(Path(sys.argv[1]))
