"""HTML-only mail end to end: Dovecot in, aiosmtpd out; the maintainers read it as text."""

from __future__ import annotations

from collections.abc import Iterator
from email.message import EmailMessage
from pathlib import Path

import pytest
from helpers import MAINTAINERS, REPORTER, Harness, imap_config, mail
from servers import ImapAccount, SmtpSink

from triaged.core.ids import find_tag, tag

HTML_REPORT = """<html><head><style>.x { color: red }</style>
<script>document.write('SCRIPT TEXT')</script></head><body>
<p>Hello security team,</p>
<p>The <b>upload</b> endpoint accepts <a href="https://example.net/poc.html">this file</a>
and runs it.</p>
<ul><li>Version 2.1 is affected</li><li>Version 2.0 is not</li></ul>
<div style="display: none">HIDDEN TRACKING TEXT</div>
</body></html>
"""


def html_mail(subject: str, html: str, sender: str = REPORTER) -> bytes:
    msg = EmailMessage()
    msg["From"] = sender
    msg["To"] = "security@example.org"
    msg["Subject"] = subject
    msg.set_content(html, subtype="html")
    return msg.as_bytes()


@pytest.fixture
def harness(tmp_dir: Path, imap_account: ImapAccount, smtp_sink: SmtpSink) -> Iterator[Harness]:
    h = Harness(imap_config(tmp_dir, imap_account, smtp_sink))
    yield h
    h.close()


def test_html_only_report_reaches_the_maintainers_as_text(
    harness: Harness, imap_account: ImapAccount, smtp_sink: SmtpSink
) -> None:
    imap_account.append(html_mail("RCE in upload", HTML_REPORT))
    assert harness.pump() == 1
    sent = smtp_sink.wait_for(1 + len(MAINTAINERS))
    notes = [c for c in sent if c.rcpt_tos[0] in MAINTAINERS]
    assert len(notes) == len(MAINTAINERS)
    for note in notes:
        body = note.msg.get_content().replace("\r\n", "\n")
        assert "converted from its HTML" in body
        assert "Hello security team," in body
        assert "The upload endpoint accepts this file <https://example.net/poc.html>" in body
        assert "- Version 2.1 is affected" in body
        for absent in ("<p>", "<b>", "</", "SCRIPT TEXT", "document.write", "color: red"):
            assert absent not in body
        assert "HIDDEN TRACKING TEXT" not in body
    report_id = find_tag(str(notes[0].msg["Subject"]))
    assert report_id is not None
    (message,) = harness.show(report_id)["messages"]
    assert message["text_from_html"] is True
    assert message["text"].startswith("Hello security team,")


def test_follow_up_in_html_is_forwarded_as_text(
    harness: Harness, imap_account: ImapAccount, smtp_sink: SmtpSink
) -> None:
    imap_account.append(mail(subject="RCE in upload"))
    assert harness.pump() == 1
    receipt = next(c for c in smtp_sink.wait_for(3) if c.rcpt_tos == [REPORTER])
    report_id = find_tag(str(receipt.msg["Subject"]))
    assert report_id is not None
    imap_account.append(
        html_mail(
            f"Re: {tag(report_id)} RCE",
            "<div>Also <i>2.2</i> is affected.<br>Proof: <a href='https://example.net/2'>here"
            "</a></div><script>SCRIPT TEXT</script>",
        )
    )
    assert harness.pump() == 1
    forwards = smtp_sink.wait_for(5)[3:]
    assert sorted(r for c in forwards for r in c.rcpt_tos) == sorted(MAINTAINERS)
    for forward in forwards:
        body = forward.msg.get_content().replace("\r\n", "\n")
        assert "converted from its HTML" in body
        assert "Also 2.2 is affected.\nProof: here <https://example.net/2>" in body
        assert "<div>" not in body and "SCRIPT TEXT" not in body
    assert [m["kind"] for m in harness.show(report_id)["messages"]] == ["report", "followup"]
