"""Hostile mail end to end: every message of the corpora ends stored or quarantined, the daemon
keeps going, and nothing a sender wrote becomes a header of a mail triaged sends."""

from __future__ import annotations

import base64
import email
import hashlib
import mailbox
import sysconfig
from pathlib import Path

import pytest
from helpers import Harness, imap_config, make_config
from imapclient.exceptions import IMAPClientError
from servers import ImapAccount, SmtpSink

CORPUS = Path(__file__).parent / "corpus"

# The headers triaged writes; anything else in a sent message would be injected.
OUR_HEADERS = {
    "from",
    "to",
    "subject",
    "date",
    "message-id",
    "in-reply-to",
    "references",
    "reply-to",
    "auto-submitted",
    "x-auto-response-suppress",
    "x-triaged-report",
    "mime-version",
    "content-type",
    "content-transfer-encoding",
}


def _own_corpus() -> list[bytes]:
    own = [p.read_bytes() for p in sorted(CORPUS.glob("*.eml"))]
    deep = b"".join(
        b'Content-Type: multipart/mixed; boundary="b%d"\r\n\r\n--b%d\r\n' % (i, i)
        for i in range(3000)
    )
    own += [
        b"From: a@outside.example\r\nSubject: =?utf-8?q?hello=0D=0ABcc:_victim@example.org?=\r\n"
        b"Message-ID: <inj1@outside.example>\r\n\r\nbody\r\n",
        b"From: b@outside.example\r\nSubject: =?utf-8?b?"
        + base64.b64encode(b"x\r\nX-Injected: yes\r\n\r\nfake body")
        + b"?=\r\n\r\nbody\r\n",
        b"From: c@outside.example\r\nSubject: nul\x00byte\r\n\r\nnul \x00 body\r\n",
        b"From: d@outside.example\r\nSubject: deep\r\nMIME-Version: 1.0\r\n" + deep,
        b"From: e@outside.example\r\nSubject: huge\r\nX-Big: " + b"a" * 400_000 + b"\r\n\r\nx\r\n",
        b"From: f@outside.example\r\n" + b"X-H: v\r\n" * 5000 + b"Subject: many\r\n\r\nx\r\n",
        b"From: g@outside.example\r\nSubject: charset\r\n"
        b"Content-Type: text/plain; charset=bogus-9\r\n\r\n\xff\xfe bogus\r\n",
        b"\xff\xfe\x00garbage without any header\r\n",
    ]
    return own


def _cpython_corpus() -> list[bytes]:
    directory = Path(sysconfig.get_paths()["stdlib"]) / "test" / "test_email" / "data"
    return [p.read_bytes() for p in sorted(directory.glob("msg_*.txt"))]


def _check_sent(sink: SmtpSink) -> None:
    for captured in sink.messages:
        parsed = email.message_from_bytes(captured.raw)
        names = {k.lower() for k, _ in parsed.items()}
        assert names <= OUR_HEADERS, f"unexpected headers {names - OUR_HEADERS}"
        assert parsed.get_all("Bcc") is None and parsed.get_all("X-Injected") is None
        for value in parsed.values():
            assert "\r" not in value.replace("\r\n ", "").replace("\r\n\t", "")


@pytest.mark.parametrize("corpus", ["own", "cpython"])
def test_every_hostile_message_ends_stored_or_quarantined(
    corpus: str, tmp_dir: Path, imap_account: ImapAccount, smtp_sink: SmtpSink
) -> None:
    raws = _own_corpus() if corpus == "own" else _cpython_corpus()
    if not raws:
        pytest.skip("CPython's test_email data is not installed with this interpreter")
    accepted = []
    with imap_account.session() as client:
        for raw in raws:
            try:
                client.append("INBOX", raw)
            except IMAPClientError:
                continue  # Dovecot refuses some (an empty message); the Maildir test takes them
            accepted.append(raw)
    assert len(accepted) >= len(raws) - 2
    h = Harness(imap_config(tmp_dir, imap_account, smtp_sink))
    try:
        _drain_and_check(h, accepted, smtp_sink, corpus)
        assert imap_account.fetch_all("INBOX") == []
        moved = len(imap_account.fetch_all("triaged-processed")) + len(
            imap_account.fetch_all("triaged-quarantine")
        )
        assert moved == len(accepted)
    finally:
        h.close()


def test_every_hostile_message_through_the_maildir_mailbox(
    tmp_dir: Path, smtp_sink: SmtpSink
) -> None:
    raws = _own_corpus() + _cpython_corpus()
    config = make_config(tmp_dir, smtp_url=smtp_sink.url)
    inbox = mailbox.Maildir(config.mailbox.endpoint.path, create=True)
    for raw in raws:
        inbox.add(raw)
    h = Harness(config)
    try:
        _drain_and_check(h, raws, smtp_sink, "own")
        assert len(inbox) == 0
    finally:
        h.close()


def _drain_and_check(h: Harness, raws: list[bytes], sink: SmtpSink, corpus: str) -> None:
    # Passes until the mailbox is empty; none may raise, nothing may be left behind.
    for _ in range(5):
        if not h.pump():
            break
    rows = h.messages()
    # Each distinct content is stored once (an identical copy is recognised and not re-ingested).
    assert len(rows) == len({hashlib.sha256(r).hexdigest() for r in raws})
    assert all(r["raw"] is not None for r in rows)
    assert "internal error" not in " ".join(str(r["reason"]) for r in rows)
    if corpus == "own":
        assert [r["kind"] for r in rows].count("quarantined") >= 3
    _check_sent(sink)


def test_the_encoded_newline_subject_reaches_maintainers_as_one_line(
    tmp_dir: Path, imap_account: ImapAccount, smtp_sink: SmtpSink
) -> None:
    imap_account.append(
        b"From: a@outside.example\r\nTo: security@example.org\r\n"
        b"Subject: =?utf-8?q?hello=0D=0ABcc:_victim@example.org?=\r\n\r\nbody\r\n"
    )
    h = Harness(imap_config(tmp_dir, imap_account, smtp_sink))
    try:
        h.pump()
        got = smtp_sink.wait_for(3)
        _check_sent(smtp_sink)
        notes = [c for c in got if c.rcpt_tos != ["a@outside.example"]]
        assert "hello Bcc: victim@example.org" in str(notes[0].msg["Subject"])
        assert all("victim@example.org" not in c.rcpt_tos for c in got)
    finally:
        h.close()
