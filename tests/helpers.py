"""Helpers shared by the tests: config files and sample messages."""

from __future__ import annotations

import base64
import email
import mailbox
import os
import signal
import sqlite3
import struct
import subprocess
import sys
import time
from collections.abc import Callable
from datetime import UTC, date, datetime
from email.message import EmailMessage
from email.policy import SMTP, default
from email.utils import format_datetime, make_msgid
from pathlib import Path
from typing import TYPE_CHECKING, Any

from triaged.clocks.runner import ClockRunner
from triaged.config import Config, load
from triaged.core.ids import find_tag, tag
from triaged.intake.runner import IntakeRunner
from triaged.mail import auth
from triaged.mail.mailbox import open_mailbox
from triaged.store.db import Store

if TYPE_CHECKING:
    # Only for annotations: bench/ imports this module as tests.helpers, without tests/ on
    # the path.
    from servers import Captured, ImapAccount, SmtpSink

PROJECT = "security@example.org"
MAINTAINERS = ["alice@example.org", "bob@example.org"]
REPORTER = "reporter@outside.example"


def _toml(value: Any) -> str:
    if isinstance(value, str):
        return '"' + value.replace("\\", "\\\\").replace('"', '\\"') + '"'
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, list):
        return "[" + ", ".join(_toml(v) for v in value) + "]"
    if isinstance(value, dict):
        return "{" + ", ".join(f"{k} = {_toml(v)}" for k, v in value.items()) + "}"
    if isinstance(value, date | datetime):
        return value.isoformat()
    return str(value)


def config_text(sections: dict[str, dict[str, Any]]) -> str:
    """TOML for a config; a dict value becomes an inline table (e.g. policy.resolve)."""
    out = []
    for name, keys in sections.items():
        out.append(f"[{name}]")
        out.extend(f"{k} = {_toml(v)}" for k, v in keys.items())
        out.append("")
    return "\n".join(out)


def base_sections(
    directory: Path,
    mailbox_url: str | None = None,
    smtp_url: str | None = None,
    password_file: str | None = None,
) -> dict[str, dict[str, Any]]:
    mailbox: dict[str, Any] = {"url": mailbox_url or f"maildir:{directory / 'inbox'}"}
    if password_file:
        mailbox["password_file"] = password_file
    return {
        "project": {"name": "Example", "address": PROJECT, "timezone": "UTC"},
        "mailbox": mailbox,
        "smtp": {"url": smtp_url or f"maildir:{directory / 'outbox'}"},
        "database": {"path": str(directory / "triaged.db")},
        "maintainers": {"members": list(MAINTAINERS)},
        "policy": {"acknowledge": "48h", "respond": "96h"},
    }


def write_config(
    directory: Path, sections: dict[str, dict[str, Any]] | None = None, **kwargs: Any
) -> Path:
    directory.mkdir(parents=True, exist_ok=True)
    path = directory / "config.toml"
    path.write_text(config_text(sections or base_sections(directory, **kwargs)))
    return path


def make_config(directory: Path, **kwargs: Any) -> Config:
    return load(write_config(directory, **kwargs))


def mail(
    sender: str = "reporter@outside.example",
    subject: str = "Buffer overflow in the parser",
    body: str = "The parser overflows on long input. Version 1.2 is affected.\n",
    to: str = PROJECT,
    headers: dict[str, str] | None = None,
    message_id: str | None = None,
) -> bytes:
    msg = EmailMessage()
    msg["From"] = sender
    msg["To"] = to
    msg["Subject"] = subject
    msg["Date"] = format_datetime(datetime.now(UTC))
    msg["Message-ID"] = message_id or make_msgid(domain="outside.example")
    for key, value in (headers or {}).items():
        msg[key] = value
    msg.set_content(body)
    return msg.as_bytes(policy=SMTP)


def tnef(message_class: str) -> bytes:
    """A TNEF stream (winmail.dat) as Outlook writes one (MS-OXTNEF): the signature, the legacy
    key, then attTnefVersion, attOemCodepage and attMessageClass, each with its checksum."""

    def attribute(ident: int, data: bytes) -> bytes:
        level = 1  # message level
        checksum = struct.pack("<H", sum(data) & 0xFFFF)
        return struct.pack("<BII", level, ident, len(data)) + data + checksum

    return (
        struct.pack("<IH", 0x223E9F78, 0x4A2B)
        + attribute(0x00089006, struct.pack("<I", 0x00010000))
        + attribute(0x00069007, struct.pack("<II", 1252, 0))
        + attribute(0x00078008, message_class.encode("ascii") + b"\x00")
    )


def outlook_read_receipt(
    subject: str,
    sender: str = "Reporter <reporter@outside.example>",
    message_class: str = "REPORT.IPM.Note.IPNRN",
    content_class: bool = True,
) -> bytes:
    """A read receipt as Outlook sends it with TNEF: "Read: <subject>", a short text, and the
    receipt itself in winmail.dat; `Content-Class: urn:content-classes:mdn` unless told not."""
    data = base64.encodebytes(tnef(message_class)).replace(b"\n", b"\r\n")
    head = (
        f"From: {sender}\r\nTo: security@example.org\r\nSubject: Read: {subject}\r\n"
        f"Date: {format_datetime(datetime.now(UTC))}\r\n"
        f"Message-ID: {make_msgid(domain='outside.example')}\r\n"
        + ("Content-Class: urn:content-classes:mdn\r\n" if content_class else "")
        + "MIME-Version: 1.0\r\nX-MS-Has-Attach:\r\n"
        "X-MS-TNEF-Correlator: <AAAAAB1@outside.example>\r\n"
        'Content-Type: multipart/mixed; boundary="tnef-b"\r\n\r\n'
        '--tnef-b\r\nContent-Type: text/plain; charset="us-ascii"\r\n\r\n'
        f"Your message\r\n\r\n  To: security@example.org\r\n  Subject: {subject}\r\n\r\n"
        "was read on Monday, March 2, 2026 10:00:00 AM (UTC+01:00).\r\n"
        '--tnef-b\r\nContent-Type: application/ms-tnef; name="winmail.dat"\r\n'
        "Content-Transfer-Encoding: base64\r\n"
        'Content-Disposition: attachment; filename="winmail.dat"\r\n\r\n'
    )
    return head.encode() + data + b"--tnef-b--\r\n"


def disposition_notification(
    original_message_id: str,
    subject: str = "Disposition notification",
    sender: str = "reporter@outside.example",
) -> bytes:
    """An RFC 8098 message disposition notification (a read receipt, as Thunderbird sends)."""
    return (
        f"From: {sender}\r\nTo: security@example.org\r\nSubject: {subject}\r\n"
        f"Date: {format_datetime(datetime.now(UTC))}\r\n"
        f"Message-ID: {make_msgid(domain='outside.example')}\r\nMIME-Version: 1.0\r\n"
        "Content-Type: multipart/report; report-type=disposition-notification;\r\n"
        '\tboundary="mdn-b"\r\n\r\n'
        "--mdn-b\r\nContent-Type: text/plain; charset=UTF-8\r\n\r\n"
        "The message you sent has been displayed.\r\n"
        "--mdn-b\r\nContent-Type: message/disposition-notification\r\n\r\n"
        "Reporting-UA: mail.outside.example; Thunderbird 128\r\n"
        f"Final-Recipient: rfc822;{sender}\r\n"
        f"Original-Message-ID: {original_message_id}\r\n"
        "Disposition: manual-action/MDN-sent-manually; displayed\r\n\r\n"
        "--mdn-b--\r\n"
    ).encode()


class DaemonProcess:
    """`triaged run` as a real child process, for tests of signals, crashes and IDLE, and for
    the benchmarks (`verbose=False`: log level INFO, as in production)."""

    def __init__(self, config: Path, log_path: Path, verbose: bool = True) -> None:
        self.config = config
        self.log_path = log_path
        self.verbose = verbose
        self.proc: subprocess.Popen[bytes] | None = None

    @property
    def pid(self) -> int:
        assert self.proc is not None
        return self.proc.pid

    def start(self) -> DaemonProcess:
        env = dict(os.environ)
        env["PYTHONPATH"] = os.pathsep.join(
            [str(Path(__file__).parent.parent), env.get("PYTHONPATH", "")]
        )
        log = self.log_path.open("ab")
        self.proc = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "triaged",
                "--config",
                str(self.config),
                *(["-v"] if self.verbose else []),
                "run",
            ],
            stdout=log,
            stderr=log,
            env=env,
        )
        log.close()
        return self

    def stop(self, timeout: float = 20) -> int:
        """SIGTERM, then its exit status; a daemon still running after `timeout` is killed
        (and its status is then -9)."""
        assert self.proc is not None
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
        try:
            return self.proc.wait(timeout)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            return self.proc.wait(10)

    def kill(self) -> None:
        assert self.proc is not None
        self.proc.kill()
        self.proc.wait(10)

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")

    def wait_for_log(self, needle: str, timeout: float = 15) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if needle in self.log():
                return
            assert self.proc is not None and self.proc.poll() is None, self.log()
            time.sleep(0.05)
        raise AssertionError(f"{needle!r} not logged in {timeout}s:\n{self.log()}")

    def __enter__(self) -> DaemonProcess:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait(10)


def count_rows(db: Path, sql: str) -> int:
    """One number from the database of a running daemon (0 while it does not exist yet),
    through a short read-only connection."""
    if not db.exists():
        return 0
    conn = sqlite3.connect(f"file:{db}?mode=ro", uri=True, timeout=30)
    try:
        return int(conn.execute(sql).fetchone()[0])
    except sqlite3.OperationalError:
        return 0
    finally:
        conn.close()


def wait_until(predicate: Callable[[], Any], timeout: float = 15, what: str = "condition") -> Any:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(0.05)
    raise AssertionError(f"timed out waiting for {what}")


def imap_config(
    directory: Path, account: Any, sink: Any, folder: str = "INBOX", **policy: Any
) -> Config:
    """A config reading the Dovecot account and sending to the SMTP sink."""
    sections = base_sections(
        directory,
        mailbox_url=account.url(folder),
        smtp_url=sink.url,
        password_file=str(account.password_file),
    )
    sections["mailbox"].update(poll_interval="1h", connect_timeout="10s")
    sections["smtp"].update(retry_initial="1s", retry_max="2s")
    sections["policy"].update(policy)
    return make_config(directory, sections=sections)


def lmtp_config(directory: Path, sink: Any, url: str, **limits: Any) -> Config:
    """A config whose mailbox is triaged's own LMTP server at `url`, sending to the SMTP sink."""
    sections = base_sections(directory, mailbox_url=url, smtp_url=sink.url)
    sections["smtp"].update(retry_initial="1s", retry_max="2s")
    if limits:
        sections["limits"] = dict(limits)
    return make_config(directory, sections=sections)


def with_reports(
    directory: Path, account: Any, sink: Any, n: int, batch_size: int, prefix: str = "r"
) -> Config:
    """`n` reports from distinct senders waiting in the account's INBOX, and a config that
    reads them `batch_size` at a time (for tests that interrupt a daemon mid-batch). The
    mailbox was read before (`read_before`), so they are new mail, not a mailbox to adopt."""
    for i in range(n):
        account.append(mail(sender=f"{prefix}{i}@outside.example", subject=f"report {i}"))
    config = imap_config(directory, account, sink)
    text = config.path.read_text()
    config.path.write_text(text.replace("[mailbox]\n", f"[mailbox]\nbatch_size = {batch_size}\n"))
    read_before(config)
    return config


def read_before(config: Config) -> None:
    """Records in the config's database that triaged read its mailbox before, as a daemon
    that ran earlier would have: mail waiting there is then handled as usual at the next
    start, not taken in silently as at the first start of a new database."""
    from triaged.mail.mailbox import open_mailbox
    from triaged.store import messages

    mailbox = open_mailbox(config.mailbox)
    mailbox.connect()
    try:
        name, uidvalidity = mailbox.name, mailbox.uidvalidity()
    finally:
        mailbox.close()
    store = Store(config.database)
    try:
        with store.transaction():
            messages.set_uidvalidity(store, name, uidvalidity, datetime.now(UTC))
    finally:
        store.close()


class Harness:
    """The runners in-process against the real servers, one pass at a time."""

    def __init__(self, config: Config) -> None:
        from triaged.intake.runner import IntakeRunner
        from triaged.mail.mailbox import open_mailbox
        from triaged.mail.openpgp import open_keyring
        from triaged.mail.sealing import Sealer
        from triaged.mail.transport import open_transport
        from triaged.service.outbox import OutboxRunner
        from triaged.store.db import Store

        self.config = config
        self.store = Store(config.database)
        # As the daemon does: the OpenPGP keys, when [openpgp] is set.
        self.keyring = open_keyring(config)
        self.mailbox = open_mailbox(config.mailbox)
        self.mailbox.connect()
        self.intake = IntakeRunner(config, self.store, self.mailbox, keyring=self.keyring)
        self.intake.start(datetime.now(UTC))
        self.transport = open_transport(config.smtp)
        sealer = Sealer(config, self.keyring) if self.keyring is not None else None
        self.outbox = OutboxRunner(self.store, self.transport, config.smtp, sealer)

    def pump(self, now: datetime | None = None) -> int:
        now = now or datetime.now(UTC)
        handled = self.intake.run_once(now)
        self.outbox.run_once(now)
        return handled

    def show(self, report_id: str) -> dict[str, Any]:
        from triaged.views import report_detail

        detail = report_detail(self.store, report_id, self.config.limits, self.keyring)
        assert detail is not None, f"no report {report_id}"
        return detail

    def cli(self, *args: str, exit_code: int = 0) -> Any:
        """`triaged --config CONFIG ARGS...` in-process, as an operator runs it on the server
        (its result: output, stdout, stderr)."""
        from click.testing import CliRunner

        from triaged.cli import main

        result = CliRunner().invoke(main, ["--config", str(self.config.path), *args])
        assert result.exit_code == exit_code, result.output
        return result

    def reports(self) -> list[dict[str, Any]]:
        from triaged.views import report_list

        return report_list(self.store)

    def messages(self) -> list[dict[str, Any]]:
        return [dict(r) for r in self.store.all("SELECT * FROM messages ORDER BY id")]

    def close(self) -> None:
        self.mailbox.close()
        self.transport.close()
        self.store.close()
        if self.keyring is not None:
            self.keyring.close()


class ClockDesk:
    """A project's Maildir mailbox with one report, driven through intake and the clock runner
    with an injected time; what is sent is read from the outbox."""

    def __init__(self, config: Config) -> None:
        assert config.mailbox.endpoint.is_maildir
        self.config = config
        self.inbox = mailbox.Maildir(config.mailbox.endpoint.path, create=True)
        self.store = Store(self.config.database)
        self.box = open_mailbox(self.config.mailbox)
        self.box.connect()
        self.intake = IntakeRunner(self.config, self.store, self.box)
        self.intake.start(datetime.now(UTC))
        self.clocks = ClockRunner(self.config, self.store)
        self.key = auth.load_or_create_key(self.config.auth.key_file)
        self.seen = self._last_outbox_id()
        self.report_id = ""

    def _last_outbox_id(self) -> int:
        row = self.store.one("SELECT MAX(id) AS n FROM outbox")
        return int(row["n"] or 0) if row else 0

    def deliver(self, raw: bytes, at: datetime) -> None:
        self.inbox.add(raw)
        assert self.intake.run_once(at) == 1

    def report(self, at: datetime) -> str:
        self.deliver(mail(sender=REPORTER, subject="RCE in the importer"), at)
        row = self.store.one("SELECT id FROM reports ORDER BY created_at DESC LIMIT 1")
        assert row is not None
        self.report_id = str(row["id"])
        self.new_mail()
        return self.report_id

    def command(self, body: str, at: datetime, sender: str | None = None) -> None:
        sender = sender or self.config.maintainers.members[0]
        to = auth.reply_address(self.key, self.config.project.address, self.report_id, sender)
        subject = f"Re: {tag(self.report_id)} RCE"
        self.deliver(mail(sender=sender, to=to, subject=subject, body=body), at)
        self.new_mail()

    def reporter_writes(self, body: str, at: datetime) -> None:
        subject = f"Re: {tag(self.report_id)} RCE"
        self.deliver(mail(sender=REPORTER, subject=subject, body=body), at)
        self.new_mail()

    def tick(self, at: datetime) -> list[EmailMessage]:
        """One clock pass at `at`; returns the mail it put in the outbox."""
        self.clocks.run_once(at)
        return self.new_mail()

    def new_mail(self) -> list[EmailMessage]:
        rows = self.store.all("SELECT raw FROM outbox WHERE id > ? ORDER BY id", (self.seen,))
        self.seen = self._last_outbox_id()
        return [email.message_from_bytes(row["raw"], policy=default) for row in rows]  # type: ignore[misc]

    def close(self) -> None:
        self.box.close()
        self.store.close()


class Desk:
    """A report in the mailbox, and the maintainers' and reporter's mail clients."""

    def __init__(
        self,
        h: Harness,
        account: ImapAccount,
        sink: SmtpSink,
        subject: str = "RCE in the importer",
    ) -> None:
        self.h, self.account, self.sink = h, account, sink
        account.append(mail(sender=REPORTER, subject=subject, message_id="<orig@outside.example>"))
        h.pump()
        got = sink.wait_for(1 + len(MAINTAINERS))
        self.notes = {c.rcpt_tos[0]: c for c in got if c.rcpt_tos[0] in MAINTAINERS}
        report_id = find_tag(str(got[0].msg["Subject"]))
        assert report_id
        self.report_id = report_id
        self.seen = len(got)

    def reply_to(self, maintainer: str) -> str:
        return str(self.notes[maintainer].msg["Reply-To"])

    def send(
        self,
        body: str,
        sender: str = MAINTAINERS[0],
        to: str | None = None,
        headers: dict[str, str] | None = None,
        raw: bytes | None = None,
        message_id: str | None = None,
    ) -> list[Captured]:
        """Delivers one message and returns what triaged sent because of it."""
        if raw is None:
            if to is None:
                to = self.reply_to(sender) if sender in MAINTAINERS else PROJECT
            raw = mail(
                sender=sender,
                to=to,
                subject=f"Re: {tag(self.report_id)} RCE",
                body=body,
                headers=headers,
                message_id=message_id,
            )
        self.account.append(raw)
        assert self.h.pump() == 1
        new = self.sink.messages[self.seen :]
        self.seen = len(self.sink.messages)
        return list(new)

    def other_report(self, sender: str = "other@outside.example") -> list[Captured]:
        """Another report arrives; returns what triaged sent for it."""
        self.account.append(mail(sender=sender, subject="another report"))
        self.h.pump()
        new = self.sink.wait_for(self.seen + 1 + len(MAINTAINERS))[self.seen :]
        self.seen = len(self.sink.messages)
        return new

    def show(self) -> dict[str, Any]:
        return self.h.show(self.report_id)


def sent_to(sent: list[Captured], address: str) -> list[Captured]:
    """What of `sent` went to `address` alone."""
    return [c for c in sent if c.rcpt_tos == [address]]
