"""OpenPGP end to end: encrypted and signed mail through Dovecot, triaged's runners and the SMTP
sink, with throwaway keys (tests/pgp.py). Alice has a configured key; Bob has none."""

from __future__ import annotations

import base64
import hashlib
import json
import mailbox
import re
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from email import message_from_bytes
from email.message import EmailMessage
from email.policy import default
from pathlib import Path
from typing import Any

import pytest
from conftest import People
from helpers import PROJECT, DaemonProcess, Harness, base_sections, mail, make_config
from pgp import (
    Person,
    clearsigned,
    in_clear,
    inline,
    mixed_entity,
    pgp_mime,
    signed_mime,
    text_entity,
    with_autocrypt,
    wrapped,
)
from servers import Captured, ImapAccount, SmtpSink

from triaged.config import Config

REPORT = "The importer follows ../ in archive paths: unpack evil.tar to overwrite /etc/x.\n"
SECRET_WORD = "evil.tar"


def _config(
    directory: Path, account: ImapAccount, sink: SmtpSink, people: People, **extra: Any
) -> Config:
    sections = base_sections(
        directory,
        mailbox_url=account.url(),
        smtp_url=sink.url,
        password_file=str(account.password_file),
    )
    sections["mailbox"].update(poll_interval="1h", connect_timeout="10s")
    sections["smtp"].update(retry_initial="1s", retry_max="2s")
    sections["openpgp"] = {"secret_key_file": "project.asc", "public_keys": ["keys/*.asc"]}
    for name, keys in extra.items():
        sections.setdefault(name, {}).update(keys)
    directory.mkdir(parents=True, exist_ok=True)
    (directory / "project.asc").write_bytes(people.project.secret_key)
    (directory / "keys").mkdir(exist_ok=True)
    (directory / "keys" / "alice.asc").write_bytes(people.alice.public_key)
    return make_config(directory, sections=sections)


@pytest.fixture
def desk(
    tmp_dir: Path, imap_account: ImapAccount, smtp_sink: SmtpSink, people: People
) -> Iterator[Harness]:
    harness = Harness(_config(tmp_dir, imap_account, smtp_sink, people))
    try:
        yield harness
    finally:
        harness.close()


def _to(sink: SmtpSink, address: str) -> list[Captured]:
    return [m for m in sink.messages if address in m.rcpt_tos]


def _opened(person: Person, captured: Captured) -> tuple[EmailMessage, str]:
    """A PGP/MIME message as `person` reads it: (the decrypted inner message, gpg's status)."""
    assert captured.msg.get_content_type() == "multipart/encrypted", captured.raw[:400]
    armour = captured.msg.get_payload()[1].get_payload(decode=True)  # type: ignore[index, union-attr]
    plain, status = person.decrypt(armour)
    inner = message_from_bytes(plain, policy=default)
    assert isinstance(inner, EmailMessage)
    return inner, status


def _text(msg: EmailMessage) -> str:
    body = msg.get_body(("plain",))
    assert body is not None
    return str(body.get_content())  # type: ignore[attr-defined]


def _report_id(harness: Harness) -> str:
    (report,) = harness.reports()
    return str(report["id"])


# --- reports ----------------------------------------------------------------------------------


def test_encrypted_signed_pgp_mime_report_carrying_the_reporters_key(
    desk: Harness, imap_account: ImapAccount, smtp_sink: SmtpSink, people: People
) -> None:
    reporter = people.reporter
    entity = text_entity(REPORT, subject="Path traversal in the importer", key=reporter.public_key)
    raw = pgp_mime(reporter, PROJECT, "...", entity, [people.project.fingerprint])
    imap_account.append(raw)
    assert desk.pump() == 1
    smtp_sink.wait_for(3)
    report_id = _report_id(desk)
    tag = f"[security report #{report_id}]"

    # Alice has a key: her notification is encrypted to it, signed by the project, and holds
    # the plain text of the report.
    (to_alice,) = _to(smtp_sink, "alice@example.org")
    assert SECRET_WORD.encode() not in to_alice.raw
    inner, status = _opened(people.alice, to_alice)
    assert f"GOODSIG {people.project.fingerprint[-16:]}" in status
    text = _text(inner)
    assert REPORT.strip() in text
    assert "OpenPGP:   decrypted; signature good, by " + reporter.fingerprint in text
    assert "(the sender's key)" in text
    assert inner["Subject"] == f"{tag} New report: Path traversal in the importer"
    # Bob has no key; "prefer" (the default) sends him the text in clear.
    (to_bob,) = _to(smtp_sink, "bob@example.org")
    assert to_bob.msg.get_content_type() == "text/plain"
    assert REPORT.strip() in _text(to_bob.msg)

    # The receipt is PGP/MIME to the reporter's key, and keeps the tag in its subject.
    (receipt,) = _to(smtp_sink, reporter.address)
    assert receipt.msg["Subject"] == f"{tag} ..."
    inner, status = _opened(reporter, receipt)
    assert f"GOODSIG {people.project.fingerprint[-16:]}" in status
    assert inner["Subject"] == f"{tag} Your report was received"
    assert tag in _text(inner)

    # Stored as received (ciphertext), shown with its protection and the reporter's key.
    (stored,) = desk.messages()
    assert stored["raw"] == raw and SECRET_WORD.encode() not in stored["raw"]
    shown = desk.show(report_id)
    assert shown["title"] == "Path traversal in the importer"
    signature = shown["messages"][0]["openpgp"]["signature"]
    assert signature["status"] == "good" and signature["fingerprint"] == reporter.fingerprint
    assert [k["fingerprint"] for k in shown["keys"]] == [reporter.fingerprint]
    assert {o["recipient"]: o["openpgp"] for o in shown["outbox"]} == {
        reporter.address: "encrypted",
        "alice@example.org": "encrypted",
        "bob@example.org": "clear",
    }


def test_an_encrypted_report_after_a_byte_order_mark_is_decrypted(
    desk: Harness, imap_account: ImapAccount, smtp_sink: SmtpSink, people: People
) -> None:
    # The OpenPGP reader parses the raw message too: it skips what comes before the header
    # exactly as parse() does, or the report stays ciphertext.
    entity = text_entity(REPORT, subject="Path traversal in the importer")
    raw = b"\xef\xbb\xbf" + pgp_mime(
        people.reporter, PROJECT, "...", entity, [people.project.fingerprint]
    )
    imap_account.append(raw)
    assert desk.pump() == 1
    smtp_sink.wait_for(3)
    (to_bob,) = _to(smtp_sink, "bob@example.org")
    assert REPORT.strip() in _text(to_bob.msg)
    assert desk.show(_report_id(desk))["title"] == "Path traversal in the importer"


def test_inline_armoured_report(
    desk: Harness, imap_account: ImapAccount, smtp_sink: SmtpSink, people: People
) -> None:
    outsider = people.outsider
    raw = inline(outsider, PROJECT, "Path traversal", REPORT, [people.project.fingerprint])
    imap_account.append(with_autocrypt(raw, outsider))
    assert desk.pump() == 1
    smtp_sink.wait_for(3)
    tag = f"[security report #{_report_id(desk)}]"
    inner, _ = _opened(people.alice, _to(smtp_sink, "alice@example.org")[0])
    assert REPORT.strip() in _text(inner)
    assert "-----BEGIN PGP MESSAGE-----" not in _text(inner)
    (receipt,) = _to(smtp_sink, outsider.address)
    assert tag in receipt.msg["Subject"]
    inner, _ = _opened(outsider, receipt)
    assert tag in inner["Subject"]
    # Read again (show, export, /attachments), the text is the decrypted one too.
    (shown,) = desk.show(_report_id(desk))["messages"]
    assert REPORT.strip() in shown["text"] and "BEGIN PGP" not in shown["text"]


def test_report_encrypted_to_another_key(
    desk: Harness, imap_account: ImapAccount, smtp_sink: SmtpSink, people: People
) -> None:
    raw = pgp_mime(
        people.reporter, PROJECT, "Report", text_entity(REPORT), [people.outsider.fingerprint]
    )
    imap_account.append(raw)
    assert desk.pump() == 1
    smtp_sink.wait_for(3)
    report_id = _report_id(desk)
    (stored,) = desk.messages()
    assert stored["kind"] == "report" and stored["raw"] == raw
    # The team is told it could not be read.
    text = _text(_to(smtp_sink, "bob@example.org")[0].msg)
    assert "NOT decrypted: encrypted to another key" in text
    # The reporter is asked to use the right key, which the receipt names (in clear: triaged
    # has no key of theirs, and the receipt holds nothing of the report).
    (receipt,) = _to(smtp_sink, people.reporter.address)
    assert receipt.msg.get_content_type() == "text/plain"
    receipt_text = _text(receipt.msg)
    assert "not to our key" in receipt_text
    assert people.project.fingerprint in receipt_text
    assert desk.show(report_id)["messages"][0]["openpgp"]["decrypted"] is False


def test_bad_signature_is_stated_never_good(
    desk: Harness, imap_account: ImapAccount, smtp_sink: SmtpSink, people: People
) -> None:
    outsider = people.outsider
    desk.keyring.offer(outsider.address, outsider.public_key, "attachment")  # type: ignore[union-attr]
    raw = signed_mime(outsider, PROJECT, "Report", text_entity(REPORT), tamper=b"PS: more\r\n")
    imap_account.append(raw)
    desk.pump()
    smtp_sink.wait_for(3)
    text = _text(_to(smtp_sink, "bob@example.org")[0].msg)
    assert "signature BAD" in text
    assert "good" not in text.split("OpenPGP:", 1)[1].splitlines()[0]
    shown = desk.show(_report_id(desk))
    assert shown["messages"][0]["openpgp"]["signature"]["status"] == "bad"


def test_reporter_key_naming_another_address_is_not_used(
    desk: Harness, imap_account: ImapAccount, smtp_sink: SmtpSink, people: People
) -> None:
    stranger = people.stranger
    raw = signed_mime(stranger, PROJECT, "Report", text_entity(REPORT, key=stranger.public_key))
    imap_account.append(raw)
    desk.pump()
    smtp_sink.wait_for(3)
    (receipt,) = _to(smtp_sink, stranger.address)
    assert receipt.msg.get_content_type() == "text/plain"  # not encrypted to that key
    shown = desk.show(_report_id(desk))
    assert shown["keys"] == []
    (event,) = [e for e in shown["events"] if e["kind"] == "openpgp_key"]
    assert not event["detail"]["imported"]
    assert "sender's address" in event["detail"]["reason"]
    assert desk.keyring is not None and desk.keyring.key_for("someone@else.example") is None


# --- maintainers' replies ---------------------------------------------------------------------


def _new_report(desk: Harness, account: ImapAccount, sink: SmtpSink, people: People) -> str:
    entity = text_entity(REPORT, key=people.reporter.public_key)
    account.append(
        pgp_mime(people.reporter, PROJECT, "Report", entity, [people.project.fingerprint])
    )
    desk.pump()
    sink.wait_for(3)
    return _report_id(desk)


def _reply_address(sink: SmtpSink, maintainer: str) -> str:
    return str(_to(sink, maintainer)[0].msg["Reply-To"])


def test_encrypted_maintainer_reply_with_commands(
    desk: Harness, imap_account: ImapAccount, smtp_sink: SmtpSink, people: People
) -> None:
    report_id = _new_report(desk, imap_account, smtp_sink, people)
    reply_to = _reply_address(smtp_sink, "alice@example.org")
    entity = text_entity("/severity high\n/reply\nWe can reproduce it.\n")
    raw = pgp_mime(
        people.alice,
        reply_to,
        f"Re: [security report #{report_id}] ...",
        entity,
        [people.project.fingerprint],
    )
    imap_account.append(raw)
    desk.pump()
    smtp_sink.wait_for(5)
    assert desk.show(report_id)["severity"] == "high"
    # The transcript to Alice and the reply to the reporter both go encrypted.
    transcript = _to(smtp_sink, "alice@example.org")[1]
    inner, _ = _opened(people.alice, transcript)
    assert "done    /severity high" in _text(inner)
    reply = _to(smtp_sink, people.reporter.address)[-1]
    inner, _ = _opened(people.reporter, reply)
    assert "We can reproduce it." in _text(inner)


def _openpgp_desk(
    tmp_dir: Path, account: ImapAccount, sink: SmtpSink, people: People, **extra: Any
) -> Harness:
    return Harness(_config(tmp_dir, account, sink, people, **extra))


@pytest.mark.parametrize("case", ["good", "wrapped", "foreign"])
def test_openpgp_proof(
    case: str, tmp_dir: Path, imap_account: ImapAccount, smtp_sink: SmtpSink, people: People
) -> None:
    harness = _openpgp_desk(tmp_dir, imap_account, smtp_sink, people, auth={"proofs": ["openpgp"]})
    try:
        report_id = _new_report(harness, imap_account, smtp_sink, people)
        subject = f"Re: [security report #{report_id}] New report"
        entity = text_entity("/severity high\n")
        # Sent to the project address itself: no reply token, only the signature can prove it.
        if case == "good":
            raw = signed_mime(people.alice, PROJECT, subject, entity)
        elif case == "wrapped":
            raw = wrapped(signed_mime(people.alice, PROJECT, subject, entity), "/severity low")
        else:  # signed by the reporter's key (which triaged holds), From Alice
            raw = signed_mime(people.alice, PROJECT, subject, entity, signer=people.reporter)
        imap_account.append(raw)
        harness.pump()
        shown = harness.show(report_id)
        if case == "good":
            assert shown["severity"] == "high"
            return
        assert shown["severity"] is None
        (refused,) = [e for e in shown["events"] if e["kind"] == "commands_refused"]
        reason = refused["detail"]["reason"]
        if case == "wrapped":
            assert "covers only part of the message" in reason
        else:
            assert f"signed by {people.reporter.fingerprint}, not by a key of alice" in reason
    finally:
        harness.close()


# --- what must be encrypted -------------------------------------------------------------------


def test_require_sends_no_text_to_a_keyless_maintainer(
    tmp_dir: Path, imap_account: ImapAccount, smtp_sink: SmtpSink, people: People
) -> None:
    harness = _openpgp_desk(
        tmp_dir,
        imap_account,
        smtp_sink,
        people,
        openpgp={"encrypted_to_maintainers": "require"},
    )
    try:
        entity = text_entity(REPORT, subject="Secret subject", key=people.reporter.public_key)
        imap_account.append(
            pgp_mime(people.reporter, PROJECT, "...", entity, [people.project.fingerprint])
        )
        harness.pump()
        harness.outbox.run_once(datetime.now(UTC))
        smtp_sink.wait_for(3)
        report_id = _report_id(harness)
        (to_bob,) = _to(smtp_sink, "bob@example.org")
        assert SECRET_WORD.encode() not in to_bob.raw
        assert b"Secret subject" not in to_bob.raw
        text = _text(to_bob.msg)
        assert "encrypted_to_maintainers" in text and "public_keys" in text
        assert f"[security report #{report_id}]" in to_bob.msg["Subject"]
        inner, _ = _opened(people.alice, _to(smtp_sink, "alice@example.org")[0])
        assert REPORT.strip() in _text(inner)
        states = {
            (o["recipient"], o["kind"]): o["state"] for o in harness.show(report_id)["outbox"]
        }
        assert states[("bob@example.org", "notify")] == "withheld"
    finally:
        harness.close()


TITLE = "Secret subject about the importer"


def _bob_sees(captured: Captured) -> str:
    """Everything a keyless maintainer can read of a mail: its raw bytes, and its decoded
    subject and text (a subject may travel RFC 2047-encoded, a text base64-encoded)."""
    return "\n".join(
        [captured.raw.decode("utf-8", "replace"), str(captured.msg["Subject"]), _text(captured.msg)]
    )


def test_require_names_an_encrypted_report_to_a_keyless_maintainer_only_by_its_id(
    tmp_dir: Path, imap_account: ImapAccount, smtp_sink: SmtpSink, people: People
) -> None:
    from triaged.clocks.runner import ClockRunner
    from triaged.digest import compose
    from triaged.mail.compose import Composer
    from triaged.service.outbox import enqueue

    harness = _openpgp_desk(
        tmp_dir,
        imap_account,
        smtp_sink,
        people,
        openpgp={"encrypted_to_maintainers": "require"},
    )
    reporter = people.reporter
    project = [people.project.fingerprint]
    try:
        entity = text_entity(REPORT, subject=TITLE, key=reporter.public_key)
        imap_account.append(pgp_mime(reporter, PROJECT, "...", entity, project))
        harness.pump()
        report_id = _report_id(harness)
        tag = f"[security report #{report_id}]"
        hidden = f"encrypted report #{report_id}"
        # Bob asks for the report's summary; his transcript names the report, not its title.
        reply_to = harness.intake.dispatcher.reply_to(report_id, "bob@example.org")
        assert reply_to is not None
        imap_account.append(
            mail(sender="bob@example.org", to=reply_to, subject=f"Re: {tag}", body="/status\n")
        )
        # The reporter writes again, encrypted; and reports something else in clear, which
        # the new-report notification names as possibly related to the encrypted one.
        imap_account.append(
            pgp_mime(reporter, PROJECT, f"Re: {tag} ...", text_entity("More.\n"), project)
        )
        imap_account.append(mail(sender=reporter.address, subject="Another bug"))
        # Bob can encrypt, though triaged has no key of his: his encrypted commands are
        # applied, and their transcript, which echoes them, is not sent to him in clear.
        entity = text_entity("/severity high\n")
        imap_account.append(pgp_mime(people.bob, reply_to, f"Re: {tag} ...", entity, project))
        harness.pump()
        assert harness.show(report_id)["severity"] == "high"
        # Two days on: the acknowledge deadlines are missed; the digest goes out.
        later = datetime.now(UTC) + timedelta(hours=49)
        ClockRunner(harness.config, harness.store).run_once(later)
        with harness.store.transaction():
            enqueue(
                harness.store,
                compose(harness.config, harness.store, Composer(harness.config), later),
                later,
            )
        harness.outbox.run_once(later)

        to_bob = _to(smtp_sink, "bob@example.org")
        for captured in to_bob:
            assert TITLE not in _bob_sees(captured), captured.raw[:600]
            assert SECRET_WORD not in _bob_sees(captured)

        def text_of(subject_part: str) -> str:
            (found,) = [m for m in to_bob if subject_part in str(m.msg["Subject"])]
            return _text(found.msg)

        assert f"report:    {report_id} {hidden}" in text_of("Commands: done /status")
        assert f"#{report_id} ({hidden}): same sender" in text_of("New report: Another bug")
        missed = [m for m in to_bob if str(m.msg["Subject"]).startswith(f"{tag} Missed:")]
        assert f"Title:    {hidden}" in _text(missed[0].msg)
        assert hidden in text_of("digest")
        # What carries the reporter's words is withheld, and a notice says so in its place.
        withheld = [_text(m.msg) for m in to_bob if "mail withheld" in str(m.msg["Subject"])]
        assert any("notification of the report" in text for text in withheld)
        assert any("forwarded follow-up" in text for text in withheld)
        assert any("transcript of your encrypted commands" in text for text in withheld)
        assert not [m for m in to_bob if "done /severity" in str(m.msg["Subject"])]
        # Alice has a key: she reads the title.
        to_alice = [_opened(people.alice, m)[0] for m in _to(smtp_sink, "alice@example.org")]
        assert any(
            f"Title:    {TITLE}" in _text(m) for m in to_alice if "Missed:" in str(m["Subject"])
        )
    finally:
        harness.close()


def test_nothing_of_an_encrypted_text_is_stored_as_related_report_terms(
    desk: Harness, imap_account: ImapAccount, smtp_sink: SmtpSink, people: People
) -> None:
    text = "CVE-2026-1234: the importer unpacks evil.tar over /srv/app/config.\n"
    entity = text_entity(text, subject="Importer bug", key=people.reporter.public_key)
    imap_account.append(
        pgp_mime(people.reporter, PROJECT, "...", entity, [people.project.fingerprint])
    )
    desk.pump()
    report_id = _report_id(desk)
    rows = desk.store.all("SELECT term FROM report_terms WHERE report_id = ?", (report_id,))
    assert sorted(row["term"] for row in rows) == [
        "sender:reporter@outside.example",
        "subject:importer bug",
    ]
    # A report in clear naming the same CVE and file is not linked to it by them.
    imap_account.append(mail(sender="other@outside.example", subject="Unrelated", body=text))
    desk.pump()
    smtp_sink.wait_for(6)
    notification = _to(smtp_sink, "bob@example.org")[-1]
    assert "New report: Unrelated" in str(notification.msg["Subject"])
    assert report_id not in _text(notification.msg)


def test_mail_to_a_keyless_reporter_who_wrote_encrypted_is_held(
    desk: Harness, imap_account: ImapAccount, smtp_sink: SmtpSink, people: People
) -> None:
    outsider = people.outsider
    raw = pgp_mime(outsider, PROJECT, "Report", text_entity(REPORT), [people.project.fingerprint])
    imap_account.append(raw)
    desk.pump()
    smtp_sink.wait_for(3)
    report_id = _report_id(desk)
    # The receipt quotes nothing and goes (it asks for their key).
    (receipt,) = _to(smtp_sink, outsider.address)
    assert "attach your" in _text(receipt.msg)
    reply_to = _reply_address(smtp_sink, "alice@example.org")
    imap_account.append(
        mail(
            sender="alice@example.org",
            to=reply_to,
            subject=f"Re: [security report #{report_id}] New report",
            body="/reply\nCould you send the file evil.tar again?\n",
        )
    )
    desk.pump()
    desk.outbox.run_once(datetime.now(UTC))
    assert len(_to(smtp_sink, outsider.address)) == 1  # nothing more to the reporter
    held = [o for o in desk.show(report_id)["outbox"] if o["state"] == "held"]
    assert [(o["recipient"], o["kind"]) for o in held] == [(outsider.address, "reporter")]
    assert "no OpenPGP key" in held[0]["last_error"]
    # The team is told: Bob in clear (no key), Alice encrypted to hers.
    (to_bob,) = [m for m in _to(smtp_sink, "bob@example.org") if "must be" in m.msg["Subject"]]
    assert SECRET_WORD not in _text(to_bob.msg)
    subjects = [_opened(people.alice, m)[0]["Subject"] for m in _to(smtp_sink, "alice@example.org")]
    assert any("must be encrypted" in subject for subject in subjects)


def test_clearsigned_report_is_verified(
    desk: Harness, imap_account: ImapAccount, smtp_sink: SmtpSink, people: People
) -> None:
    desk.keyring.offer(people.outsider.address, people.outsider.public_key, "attachment")  # type: ignore[union-attr]
    imap_account.append(clearsigned(people.outsider, PROJECT, "Report", REPORT))
    desk.pump()
    smtp_sink.wait_for(3)
    text = _text(_to(smtp_sink, "bob@example.org")[0].msg)
    assert re.search(r"OpenPGP:   signature good, by \w+ \(the sender's key\)", text)
    assert "BEGIN PGP SIGNED MESSAGE" not in text.split("----- report text -----")[1]


# --- reading an encrypted report again: show, export ------------------------------------------

POC = bytes(range(256)) * 8 + b"evil.tar proof\r\n"
SHOT = b"\x89PNG\r\n\x1a\nscreenshot"
TRACE = b"trace: evil.tar unpacked to /etc/x\n"


def _sha(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def _encrypted_report_with_files(
    desk: Harness, account: ImapAccount, sink: SmtpSink, people: People
) -> str:
    """An encrypted report carrying POC (attachment 1), a follow-up in clear carrying SHOT (2),
    and an encrypted follow-up carrying TRACE (3)."""
    reporter = people.reporter
    project = [people.project.fingerprint]
    entity = mixed_entity(REPORT, [("poc.bin", POC)], subject="Path traversal in the importer")
    account.append(pgp_mime(reporter, PROJECT, "...", entity, project))
    assert desk.pump() == 1
    report_id = _report_id(desk)
    subject = f"Re: [security report #{report_id}] ..."
    clear = mixed_entity("Screenshot attached.\n", [("shot.png", SHOT)])
    account.append(in_clear(reporter, PROJECT, subject, clear))
    assert desk.pump() == 1
    entity = mixed_entity("And the trace.\n", [("trace.log", TRACE)])
    account.append(pgp_mime(reporter, PROJECT, subject, entity, project))
    assert desk.pump() == 1
    sink.wait_for(5)
    return report_id


def test_show_reads_an_encrypted_report_decrypted(
    desk: Harness, imap_account: ImapAccount, smtp_sink: SmtpSink, people: People
) -> None:
    report_id = _encrypted_report_with_files(desk, imap_account, smtp_sink, people)
    # The notification of the encrypted follow-up numbered its file after the report's
    # first two (intake reads the earlier messages decrypted too).
    forward = _to(smtp_sink, "bob@example.org")[-1]
    assert "  3. trace.log (application/octet-stream" in _text(forward.msg)

    shown = json.loads(desk.cli("show", report_id, "--json").stdout)
    first, _, third = shown["messages"]
    assert REPORT.strip() in first["text"] and "And the trace." in third["text"]
    assert [m["unreadable"] for m in shown["messages"]] == [None, None, None]
    files = [
        (a["index"], a["filename"], a["sha256"])
        for m in shown["messages"]
        for a in m["attachments"]
    ]
    assert files == [
        (1, "poc.bin", _sha(POC)),
        (2, "shot.png", _sha(SHOT)),
        (3, "trace.log", _sha(TRACE)),
    ]
    text = desk.cli("show", report_id).stdout
    assert REPORT.strip() in text and "And the trace." in text
    assert "attachment 3: trace.log (application/octet-stream" in text
    assert "encrypted.asc" not in text and "BEGIN PGP MESSAGE" not in text
    # Read in memory only: the database holds the ciphertext as received, as before.
    assert all(SECRET_WORD.encode() not in row["raw"] for row in desk.messages())


def test_export_writes_the_ciphertext_and_the_decrypted_attachments(
    desk: Harness,
    imap_account: ImapAccount,
    smtp_sink: SmtpSink,
    people: People,
    tmp_dir: Path,
) -> None:
    report_id = _encrypted_report_with_files(desk, imap_account, smtp_sink, people)
    stored = desk.messages()
    target = tmp_dir / "export"
    result = desk.cli("export", report_id, "--output", str(target))
    files = {p.name: p.read_bytes() for p in target.iterdir()}
    assert files.pop("1-poc.bin") == POC
    assert files.pop("2-shot.png") == SHOT
    assert files.pop("3-trace.log") == TRACE
    # The mbox holds the messages exactly as received: the encrypted ones as ciphertext.
    box = mailbox.mbox(str(target / f"report-{report_id}.mbox"))
    assert [box.get_bytes(key) for key in box.iterkeys()] == [row["raw"] for row in stored]
    assert SECRET_WORD.encode() not in files.pop(f"report-{report_id}.mbox")
    assert files == {}
    assert f"{_sha(TRACE)}  {target / '3-trace.log'}" in result.stdout
    assert "2 message(s) came encrypted: the mbox holds them as received" in result.stderr
    assert desk.messages() == stored


def test_a_message_that_cannot_be_decrypted_says_so(
    desk: Harness,
    imap_account: ImapAccount,
    smtp_sink: SmtpSink,
    people: People,
    tmp_dir: Path,
) -> None:
    entity = mixed_entity(REPORT, [("poc.bin", POC)])
    imap_account.append(
        pgp_mime(people.reporter, PROJECT, "Report", entity, [people.outsider.fingerprint])
    )
    assert desk.pump() == 1
    report_id = _report_id(desk)
    (shown,) = json.loads(desk.cli("show", report_id, "--json").stdout)["messages"]
    assert shown["text"] == "" and shown["attachments"] == []
    assert shown["unreadable"].startswith("encrypted; not decrypted when it arrived:")
    assert "another key" in shown["unreadable"]
    text = desk.cli("show", report_id).stdout
    assert "(no text: encrypted; not decrypted when it arrived: encrypted to another key" in text
    assert "encrypted.asc" not in text
    target = tmp_dir / "out"
    result = desk.cli("export", report_id, "--output", str(target))
    assert sorted(p.name for p in target.iterdir()) == [f"report-{report_id}.mbox"]
    number = desk.messages()[0]["id"]
    assert f"message #{number}: encrypted; not decrypted when it arrived" in result.stderr


def test_show_without_the_project_key_at_hand(
    desk: Harness,
    imap_account: ImapAccount,
    smtp_sink: SmtpSink,
    people: People,
    tmp_dir: Path,
) -> None:
    report_id = _encrypted_report_with_files(desk, imap_account, smtp_sink, people)
    # The command line loads the key from secret_key_file; here it cannot be read.
    (tmp_dir / "project.asc").unlink()
    result = desk.cli("show", report_id, "--json")
    assert "note: encrypted messages are not read (no text, no attachments;" in result.stderr
    assert "openpgp.secret_key_file" in result.stderr
    first, second, third = json.loads(result.stdout)["messages"]
    unread = "encrypted, and no OpenPGP key is at hand here to decrypt it"
    assert first["unreadable"] == third["unreadable"] == unread
    assert first["attachments"] == third["attachments"] == []
    # The message in clear is read as ever.
    assert second["unreadable"] is None and "Screenshot attached." in second["text"]


def _command(harness: Harness, report_id: str, maintainer: str, body: str) -> bytes:
    """A maintainer's reply in clear, to their reply address for the report."""
    reply_to = harness.intake.dispatcher.reply_to(report_id, maintainer)
    assert reply_to is not None
    return mail(
        sender=maintainer, to=reply_to, subject=f"Re: [security report #{report_id}]", body=body
    )


def test_attachments_command_mails_the_decrypted_files(
    desk: Harness, imap_account: ImapAccount, smtp_sink: SmtpSink, people: People
) -> None:
    report_id = _encrypted_report_with_files(desk, imap_account, smtp_sink, people)
    before = len(smtp_sink.messages)
    imap_account.append(_command(desk, report_id, "alice@example.org", "/attachments 1 3\n"))
    assert desk.pump() == 1
    new = smtp_sink.wait_for(before + 2)[before:]
    assert [c.rcpt_tos for c in new] == [["alice@example.org"]] * 2
    # Sealed to Alice's key (she has one), and the files are those of the decrypted messages,
    # by the numbers show and export give them.
    opened = [_opened(people.alice, c)[0] for c in new]
    (files,) = [m for m in opened if m.get_content_type() == "multipart/mixed"]
    got = {p.get_filename(): p.get_payload(decode=True) for p in files.iter_attachments()}
    assert got == {"1-poc.bin": POC, "3-trace.log": TRACE}
    (transcript,) = [m for m in opened if m is not files]
    assert "attachments 1, 3 mailed to alice@example.org (only)" in _text(transcript)


def test_require_withholds_attachments_from_a_keyless_maintainer(
    tmp_dir: Path, imap_account: ImapAccount, smtp_sink: SmtpSink, people: People
) -> None:
    harness = _openpgp_desk(
        tmp_dir,
        imap_account,
        smtp_sink,
        people,
        openpgp={"encrypted_to_maintainers": "require"},
    )
    try:
        report_id = _encrypted_report_with_files(harness, imap_account, smtp_sink, people)
        imap_account.append(_command(harness, report_id, "bob@example.org", "/attachments\n"))
        assert harness.pump() == 1
        harness.outbox.run_once(datetime.now(UTC))  # the notices the first pass wrote
        for captured in _to(smtp_sink, "bob@example.org"):
            assert TRACE not in captured.raw and b"poc.bin" not in captured.raw
            assert base64.b64encode(TRACE) not in captured.raw
        notices = [_text(c.msg) for c in _to(smtp_sink, "bob@example.org")]
        assert any("a mail with its attachments about it was not" in text for text in notices)
        states = {o["kind"]: o["state"] for o in harness.show(report_id)["outbox"]}
        assert states["attachments"] == "withheld"
    finally:
        harness.close()


# --- the daemon -------------------------------------------------------------------------------


def test_daemon_reads_and_answers_encrypted_mail(
    tmp_dir: Path, imap_account: ImapAccount, smtp_sink: SmtpSink, people: People
) -> None:
    config = _config(tmp_dir, imap_account, smtp_sink, people)
    entity = text_entity(REPORT, key=people.reporter.public_key)
    with DaemonProcess(config.path, tmp_dir / "daemon.log") as daemon:
        # After the start: mail already there at a new database's first start is adopted.
        daemon.wait_for_log("waiting for new mail")
        imap_account.append(
            pgp_mime(people.reporter, PROJECT, "Report", entity, [people.project.fingerprint])
        )
        smtp_sink.wait_for(3, timeout=30)
        assert daemon.stop() == 0
    inner, _ = _opened(people.reporter, _to(smtp_sink, people.reporter.address)[0])
    assert "[security report #" in inner["Subject"]
    inner, _ = _opened(people.alice, _to(smtp_sink, "alice@example.org")[0])
    assert REPORT.strip() in _text(inner)
    # The keyring is the daemon's own, beside the database, private.
    assert (tmp_dir / "gnupg").stat().st_mode & 0o777 == 0o700


def test_daemon_refuses_to_start_with_an_unusable_key_file(
    tmp_dir: Path, imap_account: ImapAccount, smtp_sink: SmtpSink, people: People
) -> None:
    config = _config(tmp_dir, imap_account, smtp_sink, people)
    (tmp_dir / "project.asc").write_text("-----BEGIN PGP PRIVATE KEY BLOCK-----\ngarbage\n")
    with DaemonProcess(config.path, tmp_dir / "daemon.log") as daemon:
        assert daemon.proc is not None
        assert daemon.proc.wait(60) == 2
    assert f"{config.path}: openpgp.secret_key_file:" in daemon.log()
