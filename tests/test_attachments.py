"""A report's attachments and raw messages out, safely: `show --json`, `triaged export`.

End to end through Dovecot and the SMTP sink, then the command line on the same database.
"""

from __future__ import annotations

import base64
import hashlib
import io
import json
import mailbox
import os
import re
import stat
import zipfile
from collections.abc import Iterator
from datetime import UTC, datetime
from email import message_from_bytes
from email.message import EmailMessage
from email.policy import default
from pathlib import Path
from typing import Any
from urllib.parse import quote

import pytest
from click.testing import CliRunner
from helpers import MAINTAINERS, REPORTER, Harness, imap_config, mail, make_config
from servers import Captured, ImapAccount, SmtpSink

from triaged.cli import main
from triaged.config import load
from triaged.core.files import safe_name
from triaged.core.ids import find_tag, tag
from triaged.mail import auth
from triaged.mail.compose import Composer

POC = bytes(range(256)) * 40 + b"\x00\r\n\x1b[31m end"


def _zip() -> bytes:
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w") as archive:
        archive.writestr("../../evil.sh", "#!/bin/sh\necho pwned\n")
        archive.writestr("exploit.py", "print('poc')\n")
    return buffer.getvalue()


ARCHIVE = _zip()


def with_attachments(
    subject: str, text: str, files: list[tuple[str, bytes, str]], sender: str = REPORTER
) -> bytes:
    msg = EmailMessage()
    msg["From"] = sender
    msg["To"] = "security@example.org"
    msg["Subject"] = subject
    msg["Message-ID"] = f"<{hashlib.sha256(subject.encode()).hexdigest()[:16]}@outside.example>"
    msg.set_content(text)
    for filename, data, ctype in files:
        maintype, subtype = ctype.split("/")
        msg.add_attachment(data, maintype=maintype, subtype=subtype, filename=filename)
    return msg.as_bytes()


def raw_with_names(subject: str, files: list[tuple[str, bytes]]) -> bytes:
    """A message whose attachments' file names are given as RFC 2231 values, so that they can
    hold anything (line breaks, escapes) a hostile sender puts there."""
    parts = [
        f"From: {REPORTER}\r\nTo: security@example.org\r\nSubject: {subject}\r\n"
        "MIME-Version: 1.0\r\nContent-Type: multipart/mixed; boundary=b\r\n\r\n"
        "--b\r\nContent-Type: text/plain\r\n\r\nsee the files\r\n"
    ]
    for name, data in files:
        encoded = quote(name, safe="")
        parts.append(
            "--b\r\nContent-Type: application/octet-stream\r\n"
            f"Content-Disposition: attachment; filename*=utf-8''{encoded}\r\n"
            "Content-Transfer-Encoding: base64\r\n\r\n"
            f"{base64.b64encode(data).decode()}\r\n"
        )
    parts.append("--b--\r\n")
    return "".join(parts).encode()


@pytest.fixture
def harness(tmp_dir: Path, imap_account: ImapAccount, smtp_sink: SmtpSink) -> Iterator[Harness]:
    h = Harness(imap_config(tmp_dir, imap_account, smtp_sink))
    yield h
    h.close()


def cli(h: Harness, *args: str) -> Any:
    result = CliRunner().invoke(main, ["--config", str(h.config.path), *args])
    assert result.exit_code == 0, result.output
    return result


def report_with_attachments(h: Harness, account: ImapAccount, sink: SmtpSink) -> str:
    account.append(
        with_attachments(
            "Heap overflow, PoC attached",
            "See the attached proof of concept.\n",
            [("poc.bin", POC, "application/octet-stream"), ("poc.zip", ARCHIVE, "application/zip")],
        )
    )
    assert h.pump() == 1
    receipt = next(c for c in sink.wait_for(3) if c.rcpt_tos == [REPORTER])
    report_id = find_tag(str(receipt.msg["Subject"]))
    assert report_id is not None
    return report_id


def test_show_json_hashes_match_the_bytes_sent(
    harness: Harness, imap_account: ImapAccount, smtp_sink: SmtpSink
) -> None:
    report_id = report_with_attachments(harness, imap_account, smtp_sink)
    # A follow-up with one more file: it is number 3 of the report.
    imap_account.append(
        with_attachments(
            f"Re: {tag(report_id)} PoC",
            "And a screenshot.\n",
            [("shot.png", b"\x89PNG\r\n\x1a\nfake", "image/png")],
        )
    )
    assert harness.pump() == 1
    forwards = smtp_sink.wait_for(5)[3:]
    assert {r for c in forwards for r in c.rcpt_tos} == set(MAINTAINERS)
    assert "  3. shot.png (image/png, 12 bytes)" in forwards[0].msg.get_content()

    shown = json.loads(cli(harness, "show", report_id, "--json").output)
    first, second = shown["messages"]
    assert first["attachments"] == [
        {
            "index": 1,
            "filename": "poc.bin",
            "content_type": "application/octet-stream",
            "size": len(POC),
            "sha256": hashlib.sha256(POC).hexdigest(),
        },
        {
            "index": 2,
            "filename": "poc.zip",
            "content_type": "application/zip",
            "size": len(ARCHIVE),
            "sha256": hashlib.sha256(ARCHIVE).hexdigest(),
        },
    ]
    assert second["attachments"][0]["index"] == 3
    assert (
        second["attachments"][0]["sha256"] == hashlib.sha256(b"\x89PNG\r\n\x1a\nfake").hexdigest()
    )
    assert first["text"] == "See the attached proof of concept.\n"
    # The notification named the same numbers and hashes.
    note = next(c for c in smtp_sink.messages if c.rcpt_tos == [MAINTAINERS[0]])
    body = note.msg.get_content()
    assert f"  1. poc.bin (application/octet-stream, {len(POC)} bytes)" in body
    assert f"sha256 {hashlib.sha256(ARCHIVE).hexdigest()}" in body


def test_show_prints_each_message_text_with_control_characters_neutralised(
    harness: Harness, imap_account: ImapAccount, smtp_sink: SmtpSink
) -> None:
    report_id = report_with_attachments(harness, imap_account, smtp_sink)
    imap_account.append(
        with_attachments(
            f"Re: {tag(report_id)}", "Line one\n\x1b[2J\x1b]0;owned\x07 \u202eevil\n", []
        )
    )
    assert harness.pump() == 1
    output = cli(harness, "show", report_id).output
    assert "See the attached proof of concept." in output
    assert f"attachment 1: poc.bin (application/octet-stream, {len(POC)} bytes, sha256" in output
    assert "Line one" in output
    assert "\x1b" not in output and "\x07" not in output and "\u202e" not in output
    assert "\ufffd[2J\ufffd]0;owned\ufffd \ufffdevil" in output


def test_export_writes_the_exact_bytes_and_a_readable_mbox(
    harness: Harness, imap_account: ImapAccount, smtp_sink: SmtpSink, tmp_dir: Path
) -> None:
    report_id = report_with_attachments(harness, imap_account, smtp_sink)
    follow_up = with_attachments(
        f"Re: {tag(report_id)}", "From now on it also crashes 1.1.\n>From the log:\n", []
    )
    imap_account.append(follow_up)
    assert harness.pump() == 1
    target = tmp_dir / "export"
    output = cli(harness, "export", report_id, "--output", str(target)).output
    files = sorted(p.name for p in target.iterdir())
    assert files == ["1-poc.bin", "2-poc.zip", f"report-{report_id}.mbox"]
    assert (target / "1-poc.bin").read_bytes() == POC
    # An archive is written as it came, never unpacked.
    assert (target / "2-poc.zip").read_bytes() == ARCHIVE
    for path in target.iterdir():
        assert stat.S_IMODE(path.stat().st_mode) == 0o600
        # Each file's SHA-256 is printed, as sha256sum does.
        assert f"{hashlib.sha256(path.read_bytes()).hexdigest()}  {path}" in output
    stored = [m["raw"] for m in harness.messages()]
    box = mailbox.mbox(str(target / f"report-{report_id}.mbox"))
    read = [re.sub(rb"(?m)^>(>*From )", rb"\1", box.get_bytes(key)) for key in box.iterkeys()]
    assert read == stored
    assert [box[key]["Subject"] for key in box.iterkeys()] == [
        "Heap overflow, PoC attached",
        f"Re: {tag(report_id)}",
    ]


def test_export_contains_hostile_filenames(
    harness: Harness, imap_account: ImapAccount, smtp_sink: SmtpSink, tmp_dir: Path
) -> None:
    hostile = [
        ("../../etc/passwd", b"one"),
        ("..", b"two"),
        (".bashrc", b"three"),
        ("a\x1b[31mred\r\n.txt", b"four"),
        ("/abs/olute", b"five"),
        ("x" * 400 + ".pdf", b"six"),
    ]
    imap_account.append(raw_with_names("hostile names", hostile))
    assert harness.pump() == 1
    (report,) = harness.reports()
    target = tmp_dir / "out"
    target.mkdir()
    outside = tmp_dir / "outside.txt"
    outside.write_bytes(b"untouched")
    # A file already there and a link planted where an attachment would go: neither is
    # written through.
    (target / "1-passwd").write_bytes(b"mine")
    os.symlink(outside, target / "3-bashrc")
    before = sorted(os.listdir(tmp_dir))
    cli(harness, "export", report["id"], "--output", str(target))
    assert (target / "1-passwd").read_bytes() == b"mine"
    assert outside.read_bytes() == b"untouched"
    written = {p.name: p.read_bytes() for p in target.iterdir() if not p.is_symlink()}
    assert written.pop(f"report-{report['id']}.mbox").startswith(b"From reporter@")
    assert written.pop("1-passwd") == b"mine"
    assert sorted(written.values()) == sorted(d for _, d in hostile)
    for name in written:
        assert "/" not in name and not re.search("[\x00-\x1f\x7f]", name)
        assert len(name.encode()) <= 210
        assert (target / name).resolve().parent == target.resolve()
    assert written["1-passwd-2"] == b"one"
    assert written["3-bashrc-2"] == b"three"
    assert written["4-a [31mred.txt"] == b"four"
    assert written["6-" + "x" * 196 + ".pdf"] == b"six"
    # Nothing appeared beside the target directory.
    assert sorted(os.listdir(tmp_dir)) == before


@pytest.mark.parametrize(
    ("name", "expected"),
    [
        ("../../etc/passwd", "_.._etc_passwd"),
        ("..", "attachment"),
        ("", "attachment"),
        (".hidden", "hidden"),
        ("a/b\\c", "a_b_c"),
        ("bell\x07\u202egnp.exe", "bell_gnp.exe"),
        ("é" * 150 + ".pdf", "é" * 98 + ".pdf"),
    ],
)
def test_safe_name(name: str, expected: str) -> None:
    assert safe_name(name, "attachment") == expected


# --- /attachments and [intake] forward_attachments ------------------------------------------


def command_mail(h: Harness, report_id: str, sender: str, body: str) -> bytes:
    """A maintainer's reply to triaged's mail: to the reply address with their token."""
    key = auth.load_or_create_key(h.config.auth.key_file)
    to = auth.reply_address(key, h.config.project.address, report_id, sender)
    return mail(sender=sender, to=to, subject=f"Re: {tag(report_id)} PoC", body=body)


def files_of(captured: Captured) -> dict[str, bytes]:
    return {
        str(part.get_filename()): part.get_payload(decode=True)
        for part in captured.msg.iter_attachments()
    }


def test_attachments_go_to_the_maintainer_who_asked_and_nobody_else(
    harness: Harness, imap_account: ImapAccount, smtp_sink: SmtpSink
) -> None:
    report_id = report_with_attachments(harness, imap_account, smtp_sink)
    before = len(smtp_sink.messages)
    imap_account.append(command_mail(harness, report_id, MAINTAINERS[1], "/attachments\n"))
    assert harness.pump() == 1
    new = smtp_sink.wait_for(before + 2)[before:]
    # Two mails, both to Bob: the files and the transcript. Alice and the reporter get nothing.
    assert [c.rcpt_tos for c in new] == [[MAINTAINERS[1]], [MAINTAINERS[1]]]
    files = next(c for c in new if c.msg.get_content_type() == "multipart/mixed")
    assert files_of(files) == {"1-poc.bin": POC, "2-poc.zip": ARCHIVE}
    assert {p.get_content_type() for p in files.msg.iter_attachments()} == {
        "application/octet-stream"
    }
    text = files.msg.get_body(("plain",)).get_content()
    assert f"sha256 {hashlib.sha256(POC).hexdigest()}" in text
    transcript = next(c for c in new if c is not files)
    assert "done    /attachments\r\n        attachments 1, 2 mailed to bob@example.org (only)" in (
        transcript.msg.get_content()
    )
    # Asking for some by number.
    imap_account.append(command_mail(harness, report_id, MAINTAINERS[0], "/attachments 2\n"))
    assert harness.pump() == 1
    latest = smtp_sink.wait_for(before + 4)[before + 2 :]
    assert [c.rcpt_tos for c in latest] == [[MAINTAINERS[0]], [MAINTAINERS[0]]]
    assert files_of(next(c for c in latest if c.msg.is_multipart())) == {"2-poc.zip": ARCHIVE}
    assert len(smtp_sink.messages) == before + 4


def test_attachments_over_the_limit_are_named_with_the_cli_command(
    tmp_dir: Path, imap_account: ImapAccount, smtp_sink: SmtpSink
) -> None:
    config = imap_config(tmp_dir, imap_account, smtp_sink)
    config.path.write_text(
        config.path.read_text() + f"\n[limits]\nmax_attachments_mail = {len(ARCHIVE) + 10}\n"
    )
    h = Harness(load(config.path))
    try:
        report_id = report_with_attachments(h, imap_account, smtp_sink)
        imap_account.append(command_mail(h, report_id, MAINTAINERS[0], "/attachments\n"))
        assert h.pump() == 1
        new = smtp_sink.wait_for(5)[3:]
        files = next(c for c in new if c.msg.is_multipart())
        assert files_of(files) == {"2-poc.zip": ARCHIVE}
        text = files.msg.get_body(("plain",)).get_content()
        assert f"triaged export {report_id}" in text and "1. poc.bin" in text
        transcript = next(c for c in new if c is not files).msg.get_content()
        assert f"1 over the {len(ARCHIVE) + 10}-byte limit" in transcript
        assert f"triaged export {report_id}" in transcript
    finally:
        h.close()


def test_attachments_from_a_non_maintainer_is_refused_as_any_command(
    harness: Harness, imap_account: ImapAccount, smtp_sink: SmtpSink
) -> None:
    report_id = report_with_attachments(harness, imap_account, smtp_sink)
    # The reporter asks: refused, as any maintainers' command (their note still reaches the
    # maintainers, without the files).
    imap_account.append(
        mail(sender=REPORTER, subject=f"Re: {tag(report_id)}", body="/attachments\n")
    )
    assert harness.pump() == 1
    new = smtp_sink.wait_for(6)[3:]
    assert not any(c.msg.is_multipart() for c in new)
    answer = next(c for c in new if c.rcpt_tos == [REPORTER])
    assert "/attachments is not available to you" in answer.msg.get_content()
    # A maintainer's address without the proof (no token in the address): refused, the team
    # told, nothing mailed to the sender.
    before = len(smtp_sink.messages)
    imap_account.append(
        mail(sender=MAINTAINERS[0], subject=f"Re: {tag(report_id)}", body="/attachments\n")
    )
    assert harness.pump() == 1
    refused = smtp_sink.wait_for(before + len(MAINTAINERS))[before:]
    assert all("Refused commands" in str(c.msg["Subject"]) for c in refused)
    assert not any(c.msg.is_multipart() for c in refused)
    events = [e["kind"] for e in harness.show(report_id)["events"]]
    assert "attachments_sent" not in events


def test_forward_attachments_ride_along_with_the_notification(
    tmp_dir: Path, imap_account: ImapAccount, smtp_sink: SmtpSink
) -> None:
    config = imap_config(tmp_dir, imap_account, smtp_sink)
    config.path.write_text(config.path.read_text() + '\n[intake]\nforward_attachments = "2KB"\n')
    h = Harness(load(config.path))
    try:
        small = b"small proof\x00\xff"
        imap_account.append(
            with_attachments(
                "two files",
                "see attached\n",
                [
                    ("big.bin", POC, "application/octet-stream"),
                    ("small.txt", small, "text/plain"),
                ],
            )
        )
        assert h.pump() == 1
        notes = [c for c in smtp_sink.wait_for(3) if c.rcpt_tos[0] in MAINTAINERS]
        assert len(notes) == 2
        for note in notes:
            assert files_of(note) == {"2-small.txt": small}
            text = note.msg.get_body(("plain",)).get_content()
            assert "2. small.txt (text/plain, 13 bytes), attached to this mail" in text
            assert f"1. big.bin (application/octet-stream, {len(POC)} bytes)\r\n" in text
        receipt = next(c for c in smtp_sink.messages if c.rcpt_tos == [REPORTER])
        assert not receipt.msg.is_multipart()
    finally:
        h.close()


def test_composed_attachments_keep_their_bytes_and_any_name_safely(tmp_dir: Path) -> None:
    composer = Composer(make_config(tmp_dir))
    names = ['été "quoted".bin', "line\r\nBcc: victim@example.net", "plain.txt"]
    out = composer.build(
        kind="attachments",
        to=MAINTAINERS[0],
        subject="files",
        template="attachments_mail.txt",
        context={"sent": [], "over": [], "limit": 1},
        now=datetime(2026, 1, 1, tzinfo=UTC),
        report_id="abcd2345",
        attachments=[(name, POC + name.encode()) for name in names],
    )
    parsed = message_from_bytes(out.raw, policy=default)
    assert "Bcc" not in parsed and parsed["To"] == MAINTAINERS[0]
    parts = list(parsed.iter_attachments())
    assert [p.get_filename() for p in parts] == [
        'été "quoted".bin',
        "line Bcc: victim@example.net",
        "plain.txt",
    ]
    assert [p.get_payload(decode=True) for p in parts] == [POC + n.encode() for n in names]
    assert all(len(line) <= 998 for line in out.raw.split(b"\r\n"))
