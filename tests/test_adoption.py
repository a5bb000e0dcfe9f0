"""Adopting an existing mailbox at the first start, and `triaged import` of an archive.

End to end: the real daemon (`triaged run`) against Dovecot and the SMTP sink; the import
command on mbox files and a Maildir.
"""

from __future__ import annotations

import json
import mailbox
import os
import pty
import re
import sqlite3
import subprocess
import sys
import time
from datetime import UTC, datetime, timedelta
from email.utils import format_datetime
from pathlib import Path

from click.testing import CliRunner
from helpers import (
    MAINTAINERS,
    DaemonProcess,
    Harness,
    count_rows,
    imap_config,
    mail,
    make_config,
    wait_until,
)
from servers import ImapAccount, SmtpSink

from triaged.cli import main
from triaged.core.ids import find_tag

LAST_YEAR = datetime.now(UTC).replace(microsecond=0) - timedelta(days=365)
THREADS = 50  # of four messages each: 200 messages


def old_message(
    account: ImapAccount,
    n: int,
    step: int,
    sender: str,
    body: str,
    headers: dict[str, str] | None = None,
) -> bytes:
    """Message `step` of old conversation `n`, dated (Date and INTERNALDATE) last year."""
    when = LAST_YEAR + timedelta(days=n, hours=step)
    raw = mail(
        sender=sender,
        subject=f"XSS number {n}" if step == 0 else f"Re: XSS number {n}",
        body=body,
        message_id=f"<{'rmfg'[step]}.{n}@old.example>",
        headers=headers,
    )
    raw = re.sub(rb"(?m)^Date: .*$", f"Date: {format_datetime(when)}\r".encode(), raw, count=1)
    account_append(account, raw, when)
    return raw


def old_conversations(account: ImapAccount) -> list[bytes]:
    """200 messages dated last year: 50 conversations of a reporter and a maintainer, each
    threaded only by In-Reply-To/References (no tag: triaged never saw them)."""
    appended = []
    for n in range(THREADS):
        reporter = f"old{n}@researcher.example"
        first, reply, more = (f"<{c}.{n}@old.example>" for c in "rmf")
        appended += [
            old_message(account, n, 0, reporter, "Found an XSS.\n"),
            # An old command is a note now: it was for then.
            old_message(
                account,
                n,
                1,
                MAINTAINERS[0],
                "/reject not a bug\nThanks, looking.\n",
                {"In-Reply-To": first, "References": first},
            ),
            old_message(account, n, 2, reporter, "More details.\n", {"In-Reply-To": reply}),
            old_message(
                account, n, 3, reporter, "Any news?\n", {"References": f"{first} {reply} {more}"}
            ),
        ]
    return appended


def account_append(account: ImapAccount, raw: bytes, when: datetime) -> None:
    with account.session() as client:
        client.append("INBOX", raw, msg_time=when)


def test_first_start_on_a_full_inbox_answers_only_what_arrives_after(
    tmp_dir: Path, imap_account: ImapAccount, smtp_sink: SmtpSink
) -> None:
    old_conversations(imap_account)
    config = imap_config(tmp_dir, imap_account, smtp_sink)
    db = config.database
    assert not db.exists()
    with DaemonProcess(config.path, tmp_dir / "daemon.log") as daemon:
        wait_until(lambda: count_rows(db, "SELECT COUNT(*) FROM messages") == 200, 60, "200")
        daemon.wait_for_log("taken in silently")
        wait_until(lambda: not imap_account.fetch_all("INBOX"), 30, "the INBOX moved out")
        # Appended once the daemon waits in IDLE (mail that arrives in the instant between a
        # pass and IDLE can wait for the server's next word: issue 12).
        daemon.wait_for_log("waiting for new mail")
        time.sleep(1.0)
        imap_account.append(mail(sender="new@researcher.example", subject="A new RCE"))
        try:
            sent = smtp_sink.wait_for(1 + len(MAINTAINERS), timeout=30)
        except AssertionError as exc:
            raise AssertionError(daemon.log()[-5000:]) from exc
        assert daemon.stop() == 0
    receipts = [c for c in smtp_sink.messages if c.msg["Auto-Submitted"] == "auto-replied"]
    assert [c.rcpt_tos for c in receipts] == [["new@researcher.example"]]
    assert len(smtp_sink.messages) == 1 + len(MAINTAINERS) == len(sent)
    # No escalation, no reminder, nothing for the past; no command of the old mail ran.
    assert count_rows(db, "SELECT COUNT(*) FROM outbox") == 1 + len(MAINTAINERS)
    assert count_rows(db, "SELECT COUNT(*) FROM events WHERE kind = 'clock_notice'") == 0
    assert count_rows(db, "SELECT COUNT(*) FROM events WHERE kind = 'command'") == 0
    assert count_rows(db, "SELECT COUNT(*) FROM reports WHERE state != 'new'") == 0
    # The old conversations became one report each, marked imported, with their four messages.
    assert count_rows(db, "SELECT COUNT(*) FROM reports") == THREADS + 1
    runner = CliRunner()
    listing = runner.invoke(main, ["--config", str(config.path), "reports", "--json"])
    reports = {r["title"]: r for r in json.loads(listing.output)}
    old = reports["XSS number 7"]
    assert old["messages"] == 4 and old["reporter"] == "old7@researcher.example"
    assert old["created_at"].startswith((LAST_YEAR + timedelta(days=7)).strftime("%Y-%m-%d"))
    shown = runner.invoke(main, ["--config", str(config.path), "show", old["id"]])
    assert "imported:    yes" in shown.output
    assert shown.output.count("(imported)") == 4
    new = reports["A new RCE"]
    assert (
        "imported"
        not in runner.invoke(main, ["--config", str(config.path), "show", new["id"]]).output.split(
            "messages:"
        )[0]
    )
    digest = runner.invoke(main, ["--config", str(config.path), "digest", "--print"]).output
    assert f"{old['id']}  handler: nobody (imported)" in digest
    assert f"{new['id']}  handler: nobody\n" in digest
    assert find_tag(str(receipts[0].msg["Subject"])) == new["id"]


def _triaged(config: Path, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "triaged", "--config", str(config), *args],
        capture_output=True,
        text=True,
        timeout=120,
        cwd=Path(__file__).parent.parent,
    )


def test_import_of_an_mbox_twice_makes_the_same_reports_and_sends_nothing(
    tmp_dir: Path, imap_account: ImapAccount, smtp_sink: SmtpSink
) -> None:
    config = imap_config(tmp_dir, imap_account, smtp_sink)
    archive = tmp_dir / "security.mbox"
    box = mailbox.mbox(str(archive))
    for raw in old_conversations(imap_account):
        box.add(raw)
    box.add(b"no header at all, just text\n")
    box.flush()
    first = _triaged(config.path, "import", str(archive))
    assert first.returncode == 0, first.stderr
    assert first.stdout.strip() == (
        f"import {archive}: 201 messages read: 50 reports made, 150 threaded, 1 quarantined,"
        " 0 already stored, 0 stored apart (automatic, held or about no report)"
    )
    # Not on a terminal: plain lines, no progress bar.
    assert "import: 201 messages to read" in first.stderr and "\r" not in first.stderr
    second = _triaged(config.path, "import", str(archive))
    assert second.returncode == 0, second.stderr
    assert "0 reports made, 0 threaded, 0 quarantined, 201 already stored" in second.stdout
    db = config.database
    assert count_rows(db, "SELECT COUNT(*) FROM reports") == 50
    assert count_rows(db, "SELECT COUNT(*) FROM messages") == 201
    assert count_rows(db, "SELECT COUNT(*) FROM outbox") == 0
    assert smtp_sink.messages == []
    # The daemon, started afterwards on the same database, sends nothing for them either.
    with DaemonProcess(config.path, tmp_dir / "daemon.log") as daemon:
        daemon.wait_for_log("reading imap")
        assert daemon.stop() == 0
    assert count_rows(db, "SELECT COUNT(*) FROM outbox") == 0


def test_an_exported_report_imports_back_as_already_stored(tmp_dir: Path) -> None:
    config = make_config(tmp_dir)
    inbox = mailbox.Maildir(config.mailbox.endpoint.path, create=True)
    runner = CliRunner()
    # A report handled live (the Maildir twin of the daemon's intake), then exported.
    harness = Harness(config)
    try:
        inbox.add(mail(subject="Live report", body="From the start, a line\n>From quoted\n"))
        assert harness.pump() == 1
        (report,) = harness.reports()
    finally:
        harness.close()
    out = tmp_dir / "out"
    assert (
        runner.invoke(
            main, ["--config", str(config.path), "export", report["id"], "--output", str(out)]
        ).exit_code
        == 0
    )
    result = runner.invoke(
        main, ["--config", str(config.path), "import", str(out / f"report-{report['id']}.mbox")]
    )
    assert result.exit_code == 0, result.output
    assert (
        "1 messages read: 0 reports made, 0 threaded, 0 quarantined, 1 already stored"
        in result.output
    )


def test_import_of_a_maildir_threads_by_references(tmp_dir: Path) -> None:
    config = make_config(tmp_dir)
    archive = mailbox.Maildir(tmp_dir / "archive", create=True)
    archive.add(mail(sender="a@x.example", subject="first", message_id="<1@x.example>"))
    archive.add(
        mail(
            sender="a@x.example",
            subject="Re: first",
            message_id="<2@x.example>",
            headers={"In-Reply-To": "<1@x.example>"},
        )
    )
    result = CliRunner().invoke(
        main, ["--config", str(config.path), "import", str(tmp_dir / "archive")]
    )
    assert result.exit_code == 0, result.output
    assert "2 messages read: 1 reports made, 1 threaded" in result.output
    # The archive itself is never changed.
    assert len(archive) == 2 and not list((tmp_dir / "archive").glob(".*"))


def test_import_reads_each_from_line_date_and_survives_a_hostile_one(tmp_dir: Path) -> None:
    config = make_config(tmp_dir)
    archive = tmp_dir / "dates.mbox"
    lines = (
        b"From a@x.example Sat Nov  1 09:05:07 2025",  # the usual form, day padded
        b"From b@x.example sat nov 21 10:00:00 2025",  # lower case
        b"From c@x.example Sat Nov 21 10:00:00 UTC 2025",  # a zone inside, still read
        b"From d@x.example Sat Nov 3 1:2:3 3964255961",  # a ten-digit year: the Date header
    )
    with archive.open("wb") as out:
        for n, line in enumerate(lines):
            out.write(line + b"\n")
            raw = mail(sender=f"{'abcd'[n]}@x.example", subject=f"report {n}")
            raw = re.sub(rb"(?m)^Date: .*$", b"Date: Mon, 02 Jun 2025 08:00:00 +0000\r", raw)
            out.write(raw.replace(b"\r\n", b"\n") + b"\n")
    result = CliRunner().invoke(main, ["--config", str(config.path), "import", str(archive)])
    assert result.exit_code == 0, result.output
    assert "4 messages read: 4 reports made" in result.output
    with sqlite3.connect(config.database) as conn:
        received = [row[0] for row in conn.execute("SELECT received_at FROM messages ORDER BY id")]
    assert [value[:19] for value in received] == [
        "2025-11-01T09:05:07",
        "2025-11-21T10:00:00",
        "2025-11-21T10:00:00",
        "2025-06-02T08:00:00",
    ]


def test_import_refuses_what_is_no_archive(tmp_dir: Path) -> None:
    config = make_config(tmp_dir)
    (tmp_dir / "notes.txt").write_text("hello\n")
    result = CliRunner().invoke(
        main, ["--config", str(config.path), "import", str(tmp_dir / "notes.txt")]
    )
    assert result.exit_code == 1
    assert "not an mbox file" in result.output


def test_a_maildir_is_adopted_by_its_file_times_and_a_restart_keeps_the_moment(
    tmp_dir: Path,
) -> None:
    config = make_config(tmp_dir)
    inbox = mailbox.Maildir(config.mailbox.endpoint.path, create=True)
    old = [inbox.add(mail(sender=f"o{n}@x.example", subject=f"old {n}")) for n in range(3)]
    year_ago = (datetime.now(UTC) - timedelta(days=365)).timestamp()
    for key in old:
        path = Path(config.mailbox.endpoint.path) / inbox._lookup(key)  # type: ignore[attr-defined]
        os.utime(path, (year_ago, year_ago))
    harness = Harness(config)
    try:
        assert harness.pump() == 3
        assert harness.store.one("SELECT COUNT(*) AS n FROM outbox")["n"] == 0
    finally:
        harness.close()
    # Another old file turns up after a restart (say, a folder moved back in): still before
    # the moment the database was first started, still taken in silently; new mail is not.
    late = inbox.add(mail(sender="late@x.example", subject="old, found late"))
    path = Path(config.mailbox.endpoint.path) / inbox._lookup(late)  # type: ignore[attr-defined]
    os.utime(path, (year_ago, year_ago))
    inbox.add(mail(sender="new@x.example", subject="new"))
    harness = Harness(config)
    try:
        assert harness.pump() == 2
        receipts = harness.store.all("SELECT recipient FROM outbox WHERE kind = 'receipt'")
        assert [r["recipient"] for r in receipts] == ["new@x.example"]
        assert len(harness.reports()) == 5
    finally:
        harness.close()


def test_import_on_a_terminal_shows_a_progress_bar(tmp_dir: Path) -> None:
    config = make_config(tmp_dir)
    archive = tmp_dir / "a.mbox"
    box = mailbox.mbox(str(archive))
    for n in range(30):
        box.add(mail(sender=f"s{n}@x.example", subject=f"report {n}"))
    box.flush()
    controller, terminal = pty.openpty()
    try:
        proc = subprocess.run(
            [sys.executable, "-m", "triaged", "--config", str(config.path), "import", str(archive)],
            stdout=subprocess.PIPE,
            stderr=terminal,
            timeout=120,
            cwd=Path(__file__).parent.parent,
        )
        os.close(terminal)
        shown = b""
        while True:
            try:
                chunk = os.read(controller, 65536)
            except OSError:
                break
            if not chunk:
                break
            shown += chunk
    finally:
        os.close(controller)
    assert proc.returncode == 0
    assert b"importing" in shown and b"100%" in shown
    assert b"messages to read" not in shown  # the plain lines are for pipes and logs
    assert b"30 messages read: 30 reports made" in proc.stdout
