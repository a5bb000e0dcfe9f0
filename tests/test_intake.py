"""Intake end to end: Dovecot in, aiosmtpd out."""

from __future__ import annotations

import json
import subprocess
import sys
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path

import pytest
from click.testing import CliRunner
from helpers import (
    MAINTAINERS,
    PROJECT,
    Harness,
    disposition_notification,
    imap_config,
    mail,
    outlook_read_receipt,
)
from servers import Captured, ImapAccount, SmtpSink

from triaged.cli import main
from triaged.core.ids import find_tag, tag
from triaged.intake import classify
from triaged.intake.handlers import KINDS

REPORTER = "reporter@outside.example"


@pytest.fixture
def harness(tmp_dir: Path, imap_account: ImapAccount, smtp_sink: SmtpSink) -> Iterator[Harness]:
    h = Harness(imap_config(tmp_dir, imap_account, smtp_sink))
    yield h
    h.close()


def _by_recipient(captured_list: SmtpSink | list[Captured]) -> dict[str, list[Captured]]:
    if isinstance(captured_list, SmtpSink):
        captured_list = list(captured_list.messages)
    out: dict[str, list[Captured]] = {}
    for captured in captured_list:
        for rcpt in captured.rcpt_tos:
            out.setdefault(rcpt, []).append(captured)
    return out


def _new_report(h: Harness, account: ImapAccount, sink: SmtpSink, **kw) -> tuple[str, object]:  # type: ignore[no-untyped-def]
    before = len(sink.messages)
    account.append(mail(**kw))
    assert h.pump() == 1
    receipts = [
        c
        for c in sink.wait_for(before + 1 + len(MAINTAINERS))[before:]
        if c.msg["Auto-Submitted"] == "auto-replied"
    ]
    assert len(receipts) == 1
    report_id = find_tag(str(receipts[0].msg["Subject"]))
    assert report_id
    return report_id, receipts[0]


def test_new_report_gets_a_receipt_and_shows_in_show_json(
    harness: Harness, imap_account: ImapAccount, smtp_sink: SmtpSink, tmp_dir: Path
) -> None:
    raw = mail(subject="Heap overflow in decode()", message_id="<r1@outside.example>")
    imap_account.append(raw)
    assert harness.pump() == 1
    got = _by_recipient(smtp_sink.wait_for(3))
    (receipt,) = got[REPORTER]
    report_id = find_tag(str(receipt.msg["Subject"]))
    assert report_id is not None and len(report_id) == 8
    assert tag(report_id) in receipt.msg["Subject"]
    # RFC 3834 auto-reply: marked, threaded, null envelope sender, never quoting the sender.
    assert receipt.msg["Auto-Submitted"] == "auto-replied"
    assert receipt.msg["In-Reply-To"] == "<r1@outside.example>"
    assert "<r1@outside.example>" in receipt.msg["References"]
    assert receipt.msg["X-Auto-Response-Suppress"] == "All"
    assert receipt.mail_from == "<>"
    assert PROJECT in receipt.msg["From"]
    body = receipt.msg.get_content()
    assert report_id in body
    assert "acknowledgement from a maintainer by" in body
    assert "detailed response with the next steps by" in body
    assert "Heap overflow" not in str(receipt.msg["Subject"]) + body
    # Each maintainer is told, with the report text.
    for member in MAINTAINERS:
        (note,) = got[member]
        assert (
            report_id in note.msg["Subject"] and "Heap overflow in decode()" in note.msg["Subject"]
        )
        assert "Version 1.2 is affected" in note.msg.get_content()
        assert "Acknowledge by: " in note.msg.get_content()
        assert "Detailed response by: " in note.msg.get_content()
    # The report, as `show --json` sees it.
    result = CliRunner().invoke(
        main, ["--config", str(harness.config.path), "show", report_id, "--json"]
    )
    assert result.exit_code == 0, result.output
    shown = json.loads(result.output)
    assert shown["state"] == "new" and shown["reporter"] == REPORTER
    assert shown["title"] == "Heap overflow in decode()"
    assert [m["kind"] for m in shown["messages"]] == ["report"]
    assert {o["kind"] for o in shown["outbox"]} == {"receipt", "notify"}
    assert all(o["state"] == "sent" for o in shown["outbox"])
    # Handled mail left the inbox for the processed folder, unread flags untouched.
    assert imap_account.fetch_all("INBOX") == []
    assert imap_account.fetch_all("triaged-processed") == [raw]


def test_reply_with_the_tag_threads_and_is_forwarded(
    harness: Harness, imap_account: ImapAccount, smtp_sink: SmtpSink
) -> None:
    report_id, _ = _new_report(harness, imap_account, smtp_sink)
    imap_account.append(mail(subject=f"Re: {tag(report_id)} more", body="Also 1.1 is affected.\n"))
    assert harness.pump() == 1
    forwards = [c for c in smtp_sink.wait_for(5)[3:]]
    assert sorted(r for c in forwards for r in c.rcpt_tos) == sorted(MAINTAINERS)
    assert all("Also 1.1 is affected." in c.msg.get_content() for c in forwards)
    shown = harness.show(report_id)
    assert [m["kind"] for m in shown["messages"]] == ["report", "followup"]


def test_reply_without_tag_threads_by_in_reply_to(
    harness: Harness, imap_account: ImapAccount, smtp_sink: SmtpSink
) -> None:
    report_id, receipt = _new_report(harness, imap_account, smtp_sink)
    imap_account.append(
        mail(subject="Re: your mail", headers={"In-Reply-To": receipt.msg["Message-ID"]})  # type: ignore[attr-defined]
    )
    harness.pump()
    shown = harness.show(report_id)
    assert [m["kind"] for m in shown["messages"]] == ["report", "followup"]
    assert len(harness.reports()) == 1


def test_maintainer_reply_is_an_internal_note(
    harness: Harness, imap_account: ImapAccount, smtp_sink: SmtpSink
) -> None:
    report_id, _ = _new_report(harness, imap_account, smtp_sink)
    imap_account.append(
        mail(sender=MAINTAINERS[0], subject=f"Re: {tag(report_id)}", body="Looking.\n")
    )
    harness.pump()
    assert [e["kind"] for e in harness.show(report_id)["events"]][-1] == "note"
    # Nothing reached the reporter beyond the receipt.
    assert len(_by_recipient(smtp_sink)[REPORTER]) == 1


@pytest.mark.parametrize(
    "headers",
    [
        {"Auto-Submitted": "auto-replied"},
        {"Precedence": "bulk"},
        {"List-Id": "<dev.lists.example>"},
        {"X-Autoreply": "yes"},
        {"Return-Path": "<>"},
    ],
)
def test_automatic_mail_is_stored_and_never_answered(
    harness: Harness, imap_account: ImapAccount, smtp_sink: SmtpSink, headers: dict[str, str]
) -> None:
    report_id, _ = _new_report(harness, imap_account, smtp_sink)
    imap_account.append(mail(subject=f"Out of office: {tag(report_id)}", headers=headers))
    imap_account.append(mail(sender="other@outside.example", subject="Auto: hi", headers=headers))
    assert harness.pump() == 2
    assert len(smtp_sink.messages) == 3
    kinds = [m["kind"] for m in harness.messages()]
    assert kinds == ["report", "automatic", "automatic"]
    assert [m["kind"] for m in harness.show(report_id)["messages"]] == ["report", "automatic"]


def test_bounce_is_stored_attached_and_never_answered(
    harness: Harness, imap_account: ImapAccount, smtp_sink: SmtpSink
) -> None:
    report_id, receipt = _new_report(harness, imap_account, smtp_sink)
    bounce = (
        b"From: Mail Delivery System <MAILER-DAEMON@mx.outside.example>\r\n"
        b"To: security@example.org\r\n"
        b"Subject: Undelivered Mail Returned to Sender\r\n"
        b"Message-ID: <bounce-1@mx.outside.example>\r\n"
        b"In-Reply-To: " + str(receipt.msg["Message-ID"]).encode() + b"\r\n"  # type: ignore[attr-defined]
        b"MIME-Version: 1.0\r\n"
        b'Content-Type: multipart/report; report-type=delivery-status; boundary="b"\r\n\r\n'
        b"--b\r\nContent-Type: text/plain\r\n\r\nUser unknown.\r\n"
        b"--b\r\nContent-Type: message/delivery-status\r\n\r\n"
        b"Reporting-MTA: dns; mx.outside.example\r\n\r\nFinal-Recipient: rfc822; x@y\r\n"
        b"Action: failed\r\nStatus: 5.1.1\r\n\r\n--b--\r\n"
    )
    imap_account.append(bounce)
    harness.pump()
    assert len(smtp_sink.messages) == 3
    shown = harness.show(report_id)
    assert [m["kind"] for m in shown["messages"]] == ["report", "automatic"]


def test_non_participant_using_a_valid_tag_is_held(
    harness: Harness, imap_account: ImapAccount, smtp_sink: SmtpSink
) -> None:
    report_id, _ = _new_report(harness, imap_account, smtp_sink)
    imap_account.append(
        mail(
            sender="intruder@evil.example",
            subject=f"Re: {tag(report_id)}",
            body="Give me the details.\n",
        )
    )
    harness.pump()
    got = _by_recipient(smtp_sink.wait_for(5))
    assert "intruder@evil.example" not in got
    held = [c for m in MAINTAINERS for c in got[m] if "Held" in c.msg["Subject"]]
    assert len(held) == len(MAINTAINERS)
    assert "intruder@evil.example" in held[0].msg.get_content()
    shown = harness.show(report_id)
    assert [m["kind"] for m in shown["messages"]] == ["report"]
    (stored,) = [m for m in harness.messages() if m["kind"] == "unverified"]
    assert stored["report_id"] is None and report_id in stored["reason"]


def test_reply_to_does_not_redirect_the_receipt(
    harness: Harness, imap_account: ImapAccount, smtp_sink: SmtpSink
) -> None:
    _new_report(harness, imap_account, smtp_sink, headers={"Reply-To": "victim@elsewhere.example"})
    assert "victim@elsewhere.example" not in _by_recipient(smtp_sink)


def test_one_receipt_per_sender_per_day(
    harness: Harness, imap_account: ImapAccount, smtp_sink: SmtpSink
) -> None:
    for i in range(5):
        imap_account.append(mail(sender="victim@outside.example", subject=f"report {i}"))
    assert harness.pump() == 5
    got = _by_recipient(smtp_sink.wait_for(1 + 5 * len(MAINTAINERS)))
    assert len(got["victim@outside.example"]) == 1
    assert len(harness.reports()) == 5
    # The maintainers still hear of each report, and are told no receipt went out.
    notes = got[MAINTAINERS[0]]
    assert sum("No receipt was sent" in n.msg.get_content() for n in notes) == 4


def test_oversized_message_is_quarantined_without_loading(
    tmp_dir: Path, imap_account: ImapAccount, smtp_sink: SmtpSink
) -> None:
    config = imap_config(tmp_dir, imap_account, smtp_sink)
    text = config.path.read_text() + "\n[limits]\nmax_message_size = 5000\n"
    config.path.write_text(text)
    from triaged.config import load

    h = Harness(load(config.path))
    try:
        imap_account.append(mail(body="x" * 20000 + "\n"))
        imap_account.append(mail(subject="small one"))
        assert h.pump() == 2
        kinds = {m["kind"]: m for m in h.messages()}
        assert kinds["quarantined"]["raw"] is None
        assert "too large" in kinds["quarantined"]["reason"]
        assert len(imap_account.fetch_all("triaged-quarantine")) == 1
        assert len(imap_account.fetch_all("INBOX")) == 0
        assert len(h.reports()) == 1
    finally:
        h.close()


def test_uidvalidity_change_does_not_reingest(
    tmp_dir: Path, imap_account: ImapAccount, smtp_sink: SmtpSink, caplog: pytest.LogCaptureFixture
) -> None:
    with imap_account.session() as client:
        client.create_folder("Reports")
    harness = Harness(imap_config(tmp_dir, imap_account, smtp_sink, folder="Reports"))
    raws = [mail(sender=f"r{i}@outside.example", subject=f"r{i}") for i in range(3)]
    for raw in raws:
        imap_account.append(raw, "Reports")
    assert harness.pump() == 3
    sent = len(smtp_sink.wait_for(3 + 3 * len(MAINTAINERS)))
    harness.close()
    # The server loses its index: the folder is recreated (new UIDVALIDITY) with the same mail.
    with imap_account.session() as client:
        old = client.select_folder("Reports")[b"UIDVALIDITY"]
        client.close_folder()
        client.delete_folder("Reports")
        client.create_folder("Reports")
        new = client.select_folder("Reports")[b"UIDVALIDITY"]
    assert old != new
    for raw in raws:
        imap_account.append(raw, "Reports")
    with caplog.at_level("INFO"):
        h2 = Harness(harness.config)
    try:
        h2.pump()
        assert "UIDVALIDITY" in caplog.text
        assert len(h2.reports()) == 3
        assert len(smtp_sink.messages) == sent
        assert imap_account.fetch_all("Reports") == []
    finally:
        h2.close()


def test_tag_of_an_unknown_report_starts_a_new_one(
    harness: Harness, imap_account: ImapAccount, smtp_sink: SmtpSink
) -> None:
    imap_account.append(mail(subject="Re: [security report #zzzzzzzz] hello"))
    harness.pump()
    assert len(harness.reports()) == 1


def test_mail_from_our_own_address_is_not_answered(
    harness: Harness, imap_account: ImapAccount, smtp_sink: SmtpSink
) -> None:
    imap_account.append(mail(sender=PROJECT, subject="looping"))
    imap_account.append(mail(sender="security+abc@example.org", subject="looping too"))
    assert harness.pump() == 2
    assert smtp_sink.messages == []
    assert harness.reports() == []


def test_cli_reports_lists_them(
    harness: Harness, imap_account: ImapAccount, smtp_sink: SmtpSink
) -> None:
    report_id, _ = _new_report(harness, imap_account, smtp_sink)
    out = subprocess.run(
        [sys.executable, "-m", "triaged", "--config", str(harness.config.path), "reports"],
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    assert report_id in out and REPORTER in out


def test_attachments_are_listed_for_the_maintainers(
    harness: Harness, imap_account: ImapAccount, smtp_sink: SmtpSink
) -> None:
    raw = (
        b"From: reporter@outside.example\r\nTo: security@example.org\r\nSubject: poc\r\n"
        b'MIME-Version: 1.0\r\nContent-Type: multipart/mixed; boundary="b"\r\n\r\n'
        b"--b\r\nContent-Type: text/plain\r\n\r\nSee the attached proof of concept.\r\n"
        b"--b\r\nContent-Type: application/x-python\r\n"
        b'Content-Disposition: attachment; filename="exploit.py"\r\n\r\nprint(1)\r\n--b--\r\n'
    )
    imap_account.append(raw)
    harness.pump()
    got = _by_recipient(smtp_sink.wait_for(3))
    body = got[MAINTAINERS[0]][0].msg.get_content()
    assert "exploit.py (application/x-python, 8 bytes)" in body
    assert "See the attached proof of concept." in body
    # The receipt lists nothing of it.
    assert "exploit" not in got[REPORTER][0].msg.get_content()


def test_templates_can_be_overridden_from_a_directory(
    tmp_dir: Path, imap_account: ImapAccount, smtp_sink: SmtpSink
) -> None:
    templates = tmp_dir / "templates"
    templates.mkdir()
    (templates / "receipt.txt").write_text("Got it: {{ tag }}. -- {{ project.name }}\n")
    config = imap_config(tmp_dir, imap_account, smtp_sink)
    config.path.write_text(config.path.read_text() + f'\n[templates]\ndirectory = "{templates}"\n')
    from triaged.config import load

    h = Harness(load(config.path))
    try:
        # A subject that looks like template syntax is data, never evaluated.
        imap_account.append(mail(subject="{{ 7*7 }} {% raw %}", body="{{ config }}\n"))
        h.pump()
        got = _by_recipient(smtp_sink.wait_for(3))
        receipt = got[REPORTER][0].msg.get_content()
        assert receipt.startswith("Got it: [security report #") and "-- Example" in receipt
        note = got[MAINTAINERS[0]][0]
        assert "{{ 7*7 }} {% raw %}" in str(note.msg["Subject"])
        # Evaluated, the subject would read "49 " where it is shown; the text is shown as sent.
        assert "{{ config }}" in note.msg.get_content()
        assert "Subject:   {{ 7*7 }} {% raw %}" in note.msg.get_content()
    finally:
        h.close()


def test_mail_announced_during_a_pass_is_handled_before_waiting(
    harness: Harness, imap_account: ImapAccount, smtp_sink: SmtpSink
) -> None:
    # A message that arrives while a pass runs is announced (EXISTS) in the answer to one of
    # the pass's own commands, and IDLE then reports nothing new: run_once must look again
    # rather than leave it for the next new mail (found by bench/: 4,000 of 10,000 stalled).
    imap_account.append(mail(sender="first@outside.example", subject="first"))
    mailbox = harness.mailbox
    original = mailbox.mark_processed
    arrived: list[int] = []

    def mark_processed(uids: list[str]) -> None:
        if not arrived:
            arrived.append(imap_account.append(mail(sender="second@outside.example")))
        original(uids)

    mailbox.mark_processed = mark_processed  # type: ignore[method-assign]
    assert harness.intake.run_once(datetime.now(UTC)) == 2
    assert sorted(r["reporter"] for r in harness.reports()) == [
        "first@outside.example",
        "second@outside.example",
    ]
    assert imap_account.fetch_all("INBOX") == []


def test_a_from_without_angle_brackets_is_never_glued_into_an_address(
    harness: Harness, imap_account: ImapAccount, smtp_sink: SmtpSink
) -> None:
    # A real sender wrote this; the receipt once went to johnsmithjs18@example.net, an address
    # nobody wrote. No well-formed address: the report is made, nothing goes to the sender, and
    # the maintainers see the From as it was written.
    imap_account.append(mail(sender="John Smith js18@example.net", subject="XSS in search"))
    assert harness.pump() == 1
    got = _by_recipient(smtp_sink.wait_for(len(MAINTAINERS)))
    assert sorted(got) == sorted(MAINTAINERS)
    [report] = harness.reports()
    assert report["reporter"] is None
    body = got[MAINTAINERS[0]][0].msg.get_content()
    assert "John Smith js18@example.net" in body
    assert "No receipt was sent to the reporter (no usable From address)" in body
    assert [m["kind"] for m in harness.messages()] == ["report"]


def test_a_from_that_only_resembles_a_maintainer_is_a_new_report(
    harness: Harness, imap_account: ImapAccount, smtp_sink: SmtpSink
) -> None:
    # "ali ce@example.org" is no address; glued together it was alice@example.org, a
    # maintainer, and the report vanished as "maintainer mail about no report".
    imap_account.append(mail(sender="ali ce@example.org", subject="Auth bypass"))
    assert harness.pump() == 1
    got = _by_recipient(smtp_sink.wait_for(len(MAINTAINERS)))
    assert sorted(got) == sorted(MAINTAINERS)
    assert all("New report: Auth bypass" in c.msg["Subject"] for c in got[MAINTAINERS[0]])
    [report] = harness.reports()
    assert report["reporter"] is None
    [stored] = harness.messages()
    assert (stored["kind"], stored["from_addr"]) == ("report", None)


def test_a_from_that_only_resembles_a_maintainer_cannot_write_in_their_name(
    harness: Harness, imap_account: ImapAccount, smtp_sink: SmtpSink
) -> None:
    report_id, _ = _new_report(harness, imap_account, smtp_sink)
    sent = len(smtp_sink.messages)
    imap_account.append(
        mail(
            sender="ali ce@example.org",
            subject=f"Re: {tag(report_id)}",
            body="Planted note: this is not a bug.\n",
        )
    )
    assert harness.pump() == 1
    got = smtp_sink.wait_for(sent + len(MAINTAINERS))[sent:]
    assert sorted(r for c in got for r in c.rcpt_tos) == sorted(MAINTAINERS)
    assert all("Held" in c.msg["Subject"] for c in got)
    assert "ali ce@example.org" in got[0].msg.get_content()
    # Held apart: no note, nothing in the report in alice's name.
    shown = harness.show(report_id)
    assert [m["kind"] for m in shown["messages"]] == ["report"]
    assert "note" not in [e["kind"] for e in shown["events"]]
    assert all(e.get("actor") != MAINTAINERS[0] for e in shown["events"])
    (stored,) = [m for m in harness.messages() if m["kind"] == "unverified"]
    assert stored["from_addr"] is None


@pytest.mark.parametrize("prefix", [b"\xef\xbb\xbf", b"\r\n"], ids=["bom", "blank line"])
def test_a_prefix_before_the_header_does_not_quarantine_the_report(
    harness: Harness, imap_account: ImapAccount, smtp_sink: SmtpSink, prefix: bytes
) -> None:
    raw = prefix + mail(subject="SSRF in the webhook client")
    imap_account.append(raw)
    assert harness.pump() == 1
    got = _by_recipient(smtp_sink.wait_for(1 + len(MAINTAINERS)))
    (receipt,) = got[REPORTER]
    report_id = find_tag(str(receipt.msg["Subject"]))
    assert report_id is not None
    assert harness.show(report_id)["title"] == "SSRF in the webhook client"
    [stored] = harness.messages()
    assert (stored["kind"], stored["raw"]) == ("report", raw)  # stored as received
    assert imap_account.fetch_all("triaged-processed") == [raw]


@pytest.mark.parametrize("content_class", [True, False], ids=["mdn class", "tnef only"])
def test_an_outlook_read_receipt_is_threaded_and_never_answered(
    harness: Harness, imap_account: ImapAccount, smtp_sink: SmtpSink, content_class: bool
) -> None:
    report_id, receipt = _new_report(harness, imap_account, smtp_sink)
    sent = len(smtp_sink.messages)
    subject = str(receipt.msg["Subject"])  # type: ignore[attr-defined]
    imap_account.append(outlook_read_receipt(subject, content_class=content_class))
    assert harness.pump() == 1
    assert len(smtp_sink.messages) == sent  # not a follow-up: nothing forwarded, no receipt
    shown = harness.show(report_id)
    assert [m["kind"] for m in shown["messages"]] == ["report", "automatic"]
    assert shown["messages"][-1]["reason"] == "read receipt"
    assert len(harness.reports()) == 1


def test_a_read_receipt_about_no_report_is_stored_and_not_answered(
    harness: Harness, imap_account: ImapAccount, smtp_sink: SmtpSink
) -> None:
    # Once taken for a new report, and answered with a receipt.
    imap_account.append(outlook_read_receipt("Buffer overflow in the parser"))
    assert harness.pump() == 1
    assert smtp_sink.messages == []
    assert harness.reports() == []
    [stored] = harness.messages()
    assert (stored["kind"], stored["reason"], stored["report_id"]) == (
        "automatic",
        "read receipt",
        None,
    )


def test_an_rfc_8098_read_receipt_threads_by_the_message_it_names(
    harness: Harness, imap_account: ImapAccount, smtp_sink: SmtpSink
) -> None:
    report_id, receipt = _new_report(harness, imap_account, smtp_sink)
    sent = len(smtp_sink.messages)
    # No tag in the subject, no In-Reply-To: only its Original-Message-ID says what was read.
    original = str(receipt.msg["Message-ID"])  # type: ignore[attr-defined]
    imap_account.append(disposition_notification(original))
    assert harness.pump() == 1
    assert len(smtp_sink.messages) == sent
    shown = harness.show(report_id)
    assert [m["kind"] for m in shown["messages"]] == ["report", "automatic"]
    assert shown["messages"][-1]["reason"] == "read receipt"


def test_every_kind_of_mail_has_a_handler() -> None:
    """A kind the rules can decide with no row in the table would fail each such message."""
    kinds = {
        value for name, value in vars(classify).items() if name.isupper() and isinstance(value, str)
    }
    assert kinds == set(KINDS)
