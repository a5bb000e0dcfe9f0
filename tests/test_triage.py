"""Triage at volume (issue 18): reply templates, spam verdicts and blocked senders, related
reports, limits on the notices that reach maintainers, and the reporter's own /status; end to
end through Dovecot and the SMTP sink.
"""

from __future__ import annotations

import json
import shutil
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner
from helpers import MAINTAINERS, PROJECT, REPORTER, Harness, imap_config, mail, sent_to
from helpers import Desk as CommandDesk
from servers import Captured, ImapAccount, SmtpSink

from triaged import digest
from triaged.cli import main
from triaged.commands.triage import protect
from triaged.config import load
from triaged.core.ids import find_tag, tag
from triaged.core.related import best, normalised_subject, terms
from triaged.core.timefmt import ts
from triaged.errors import Refused
from triaged.intake.notices import summaries
from triaged.mail import auth
from triaged.mail.compose import Composer
from triaged.service.outbox import enqueue
from triaged.store import blocklist
from triaged.views import deadline_list

EXAMPLES = Path(__file__).resolve().parent.parent / "examples" / "replies"
ALICE, BOB = MAINTAINERS


def _with(config_path: Path, text: str) -> None:
    config_path.write_text(config_path.read_text() + "\n" + text + "\n")


# --- reply templates --------------------------------------------------------------------


@pytest.fixture
def templated(
    tmp_dir: Path, imap_account: ImapAccount, smtp_sink: SmtpSink
) -> Iterator[CommandDesk]:
    """A desk whose operator installed the shipped reply templates, on a report whose title
    holds template syntax."""
    templates = tmp_dir / "templates"
    shutil.copytree(EXAMPLES, templates / "replies")
    config = imap_config(tmp_dir, imap_account, smtp_sink)
    _with(config.path, f'[templates]\ndirectory = "{templates}"')
    h = Harness(load(config.path))
    yield CommandDesk(h, imap_account, smtp_sink, subject="{{ 7*7 }} in the importer")
    h.close()


def test_reply_template_sends_the_rendered_text_and_never_evaluates_sender_text(
    templated: CommandDesk,
) -> None:
    sent = templated.send("/reply template out-of-scope\nInternal: a scanner finding.\n")
    (to_reporter,) = sent_to(sent, REPORTER)
    text = to_reporter.msg.get_content()
    assert "our security policy does not cover" in text
    assert f"report {templated.report_id}," in text
    # The title came from the sender: it is shown as written, never rendered.
    assert '"{{ 7*7 }} in the importer"' in text and "49 in the importer" not in text
    assert "Internal" not in text
    (transcript,) = sent_to(sent, ALICE)
    assert "reply template out-of-scope sent to the reporter" in transcript.msg.get_content()
    assert templated.show()["state"] == "new"


def test_reject_template_rejects_with_the_rendered_text(templated: CommandDesk) -> None:
    sent = templated.send("/reject template not-a-vulnerability\n")
    (to_reporter,) = sent_to(sent, REPORTER)
    text = to_reporter.msg.get_content()
    assert "does not describe a security" in text and "public issue tracker" in text
    assert str(to_reporter.msg["Subject"]).endswith("Your report is rejected")
    assert templated.show()["state"] == "rejected"


def test_an_unknown_template_is_refused_with_the_list(templated: CommandDesk) -> None:
    sent = templated.send("/reply template nonsense\n")
    assert sent_to(sent, REPORTER) == []
    body = sent_to(sent, ALICE)[0].msg.get_content()
    assert "REFUSED /reply template nonsense" in body
    assert "reply templates: duplicate, not-a-vulnerability, out-of-scope" in body
    sent = templated.send("/reject template ../../etc/passwd\n")
    assert "there is no reply template" in sent_to(sent, ALICE)[0].msg.get_content()
    assert templated.show()["state"] == "new"


def test_help_lists_the_installed_templates(templated: CommandDesk) -> None:
    body = sent_to(templated.send("/help\n"), ALICE)[0].msg.get_content()
    assert "reply templates: duplicate, not-a-vulnerability, out-of-scope" in body


# --- related reports: the pure part -------------------------------------------------------


def test_what_a_report_names() -> None:
    text = (
        "See https://app.example.net/api/v1/upload?x=1 and cve-2026-1234.\n"
        "The bug (CWE-079) is in src/Importer.py, line 40; not in 1.2.3 or e.g. this.\n"
    )
    found = terms("Jane@Example.net", "Re: [security report #k7f3q9xm] XSS in search", text)
    assert found == [
        "sender:jane@example.net",
        "subject:xss in search",
        "cve:CVE-2026-1234",
        "cwe:CWE-79",
        "path:/api/v1/upload",
        "file:importer.py",
    ]
    assert normalised_subject("Fwd: RE:  XSS in Search.") == "xss in search"
    # A subject too short to say anything is not a term.
    assert terms(None, "bug", "") == []


def test_the_strongest_reason_and_at_most_three() -> None:
    shared = [
        ("aaaaaaaa", "one", "new", "cwe:CWE-79"),
        ("aaaaaaaa", "one", "new", "sender:x@y.example"),
        ("bbbbbbbb", "two", "closed", "file:importer.py"),
        ("cccccccc", "three", "new", "cwe:CWE-79"),
        ("dddddddd", "four", "new", "cve:CVE-2026-1"),
    ]
    got = best(shared)
    assert [(r.report_id, r.reason) for r in got] == [
        ("aaaaaaaa", "same sender"),
        ("dddddddd", "names CVE-2026-1 too"),
        ("bbbbbbbb", "names the file importer.py too"),
    ]


# --- the harness for the rest -------------------------------------------------------------

T0 = datetime(2026, 11, 2, 9, 0, tzinfo=UTC)  # a Monday
SPAMMER = "prizes@junk.example"


class Desk:
    """A triaged with spam verdicts and a notice limit of 3, run with an injected time; the
    maintainers' and the reporter's mail is read from the SMTP sink."""

    def __init__(self, tmp_dir: Path, account: ImapAccount, sink: SmtpSink) -> None:
        config = imap_config(tmp_dir, account, sink)
        _with(
            config.path,
            '[intake]\nspam_verdicts = ["X-Spam-Flag: YES", "X-Spam-Status: Yes*"]',
        )
        config.path.write_text(
            config.path.read_text().replace(
                "[mailbox]\n", "[limits]\nnotices_per_report_per_hour = 3\n\n[mailbox]\n", 1
            )
        )
        self.config = load(config.path)
        self.h = Harness(self.config)
        self.account, self.sink = account, sink
        self.seen = 0
        self.now = T0
        self.key = auth.load_or_create_key(self.config.auth.key_file)

    def deliver(self, *raws: bytes, after: timedelta = timedelta(minutes=1)) -> list[Captured]:
        """Delivers the messages and runs a pass `after` the last one; returns what was sent."""
        for raw in raws:
            self.account.append(raw)
        self.now += after
        assert self.h.pump(self.now) == len(raws)
        return self.new()

    def new(self) -> list[Captured]:
        sent = self.sink.messages[self.seen :]
        self.seen = len(self.sink.messages)
        return list(sent)

    def report(
        self, sender: str = REPORTER, subject: str = "RCE in the importer", **kw: Any
    ) -> str:
        """A new report; its ID."""
        sent = self.deliver(mail(sender=sender, subject=subject, **kw))
        assert sent, "a new report gets a notification"
        report_id = find_tag(str(sent[0].msg["Subject"]))
        assert report_id
        return report_id

    def command(
        self,
        report_id: str,
        body: str,
        sender: str = ALICE,
        after: timedelta = timedelta(minutes=1),
    ) -> list[Captured]:
        to = auth.reply_address(self.key, PROJECT, report_id, sender)
        raw = mail(sender=sender, to=to, subject=f"Re: {tag(report_id)} x", body=body)
        return self.deliver(raw, after=after)

    def tokens(self) -> auth.ReplyTokens:
        return auth.ReplyTokens(self.key, PROJECT, frozenset(MAINTAINERS))

    def close(self) -> None:
        self.h.close()


@pytest.fixture
def desk(tmp_dir: Path, imap_account: ImapAccount, smtp_sink: SmtpSink) -> Iterator[Desk]:
    d = Desk(tmp_dir, imap_account, smtp_sink)
    yield d
    d.close()


def _text(captured: Captured) -> str:
    return str(captured.msg.get_content())


def _digest(desk: Desk) -> dict[str, str]:
    """The digest now, as each maintainer receives it."""
    with desk.h.store.transaction():
        out = digest.compose(desk.config, desk.h.store, Composer(desk.config), desk.now,
                             desk.tokens())  # fmt: skip
        enqueue(desk.h.store, out, desk.now)
    desk.h.outbox.run_once(desk.now)
    return {c.rcpt_tos[0]: _text(c) for c in desk.new()}


# --- spam verdicts ------------------------------------------------------------------------


def test_a_report_with_the_spam_header_gets_nothing_and_is_in_the_digest(desk: Desk) -> None:
    sent = desk.deliver(mail(sender=SPAMMER, subject="You won", headers={"X-Spam-Flag": "YES"}))
    assert sent == []
    (held,) = desk.h.reports()
    assert held["state"] == "spam"
    digests = _digest(desk)
    assert sorted(digests) == sorted(MAINTAINERS)
    for maintainer, text in digests.items():
        assert "Held as spam by the mail server's verdict: 1" in text and "You won" in text
        release = auth.reply_address(desk.key, PROJECT, held["id"], maintainer)
        assert f"not spam? mail /not-spam to {release}" in text
    # Nothing about it ran a clock.
    assert deadline_list(desk.h.store, desk.now) == []


def test_released_with_not_spam_the_receipt_and_notification_go_out_once(desk: Desk) -> None:
    arrival = desk.now + timedelta(minutes=1)
    desk.deliver(mail(sender=REPORTER, subject="XSS", headers={"X-Spam-Status": "Yes, score=6"}))
    report_id = desk.h.reports()[0]["id"]
    sent = desk.command(report_id, "/not-spam\n", after=timedelta(hours=5))
    receipts = sent_to(sent, REPORTER)
    assert len(receipts) == 1
    # The promised dates count from the arrival, as the clocks do.
    when = Composer(desk.config).when
    assert when(arrival + timedelta(hours=48)) in _text(receipts[0])
    for maintainer in MAINTAINERS:
        notes = [c for c in sent_to(sent, maintainer) if "New report" in str(c.msg["Subject"])]
        assert len(notes) == 1 and "released it" in _text(notes[0])
    transcript = next(c for c in sent_to(sent, ALICE) if "Commands" in str(c.msg["Subject"]))
    assert "state: spam -> new" in _text(transcript)
    (ack,) = [d for d in deadline_list(desk.h.store, desk.now) if d["clock"] == "acknowledge"]
    assert ack["due_at"] == ts(arrival + timedelta(hours=48))
    # Again: refused, and nothing more reaches the reporter or the team.
    sent = desk.command(report_id, "/not-spam\n")
    assert [c.rcpt_tos for c in sent] == [[ALICE]] and "REFUSED" in _text(sent[0])


def test_state_acknowledged_releases_a_held_report_too(desk: Desk) -> None:
    desk.deliver(mail(sender=REPORTER, subject="XSS", headers={"X-Spam-Flag": "yes"}))
    report_id = desk.h.reports()[0]["id"]
    sent = desk.command(report_id, "/state acknowledged\n")
    assert len(sent_to(sent, REPORTER)) == 1
    assert desk.h.show(report_id)["state"] == "acknowledged"


def test_a_verdict_never_touches_a_follow_up(desk: Desk) -> None:
    report_id = desk.report()
    raw = mail(sender=REPORTER, subject=f"Re: {tag(report_id)}", headers={"X-Spam-Flag": "YES"})
    sent = desk.deliver(raw)
    assert sorted(c.rcpt_tos[0] for c in sent) == sorted(MAINTAINERS)


# --- blocked senders ----------------------------------------------------------------------


def test_spam_blocks_the_sender_whose_next_mail_reaches_nobody(desk: Desk) -> None:
    report_id = desk.report(sender=SPAMMER, subject="Great offer")
    sent = desk.command(report_id, "/spam\n")
    assert "blocked: prizes@junk.example" in _text(sent_to(sent, ALICE)[0])
    assert desk.h.show(report_id)["state"] == "spam"
    # A new report and a follow-up with the tag: stored, counted, nothing sent.
    assert desk.deliver(mail(sender=SPAMMER, subject="Great offer again")) == []
    assert desk.deliver(mail(sender=SPAMMER, subject=f"Re: {tag(report_id)} hello")) == []
    assert len(desk.h.reports()) == 1
    (entry,) = blocklist.entries(desk.h.store)
    assert (entry["pattern"], entry["blocked_by"], entry["stopped"]) == (SPAMMER, ALICE, 2)
    assert [m["kind"] for m in desk.h.messages()][-2:] == ["blocked", "blocked"]
    # The CLI lists it.
    result = CliRunner().invoke(main, ["--config", str(desk.config.path), "blocked", "--json"])
    assert result.exit_code == 0 and json.loads(result.output)[0]["stopped"] == 2
    # Lifted: their next mail is a report again.
    sent = desk.command(report_id, f"/unblock {SPAMMER}\n")
    assert "unblocked: prizes@junk.example" in _text(sent[0])
    desk.report(sender=SPAMMER, subject="Third offer")


def test_spam_domain_blocks_the_whole_domain(desk: Desk) -> None:
    report_id = desk.report(sender=SPAMMER)
    desk.command(report_id, "/spam domain\n")
    assert desk.deliver(mail(sender="other@junk.example", subject="hi there")) == []
    assert blocklist.entries(desk.h.store)[0]["pattern"] == "@junk.example"


def test_blocking_a_maintainer_is_refused(desk: Desk) -> None:
    report_id = desk.report(sender="carol@example.org", subject="A colleague's report")
    sent = desk.command(report_id, "/spam domain\n")
    body = _text(sent[0])
    assert "REFUSED /spam domain" in body
    assert "example.org is the domain of alice@example.org, which cannot be blocked" in body
    assert blocklist.entries(desk.h.store) == []
    assert desk.h.show(report_id)["state"] == "new"
    with pytest.raises(Refused, match="maintainer"):
        protect(BOB, desk.config)


def test_not_spam_after_spam_lifts_the_block(desk: Desk) -> None:
    report_id = desk.report(sender=SPAMMER, subject="Was it spam?")
    desk.command(report_id, "/ack\n/spam\n")
    sent = desk.command(report_id, "/not-spam\n")
    assert "state: spam -> acknowledged" in _text(sent[0]) and "unblocked" in _text(sent[0])
    assert blocklist.entries(desk.h.store) == []


# --- related reports ----------------------------------------------------------------------


def test_the_second_report_of_a_sender_names_the_first(desk: Desk) -> None:
    first = desk.report(subject="XSS in the search box")
    desk.account.append(mail(subject="Another finding", body="Also CVE-2026-4242 applies.\n"))
    desk.account.append(mail(sender="x@else.example", subject="re: XSS in the SEARCH box"))
    desk.now += timedelta(minutes=1)
    desk.h.pump(desk.now)
    sent = desk.new()
    notes = {
        str(c.msg["Subject"]): _text(c)
        for c in sent_to(sent, ALICE)
        if "New report" in str(c.msg["Subject"])
    }
    second = next(text for subject, text in notes.items() if "Another finding" in subject)
    assert f"#{first} (XSS in the search box): same sender" in second
    third = next(text for subject, text in notes.items() if "SEARCH" in subject)
    assert f"#{first} (XSS in the search box): same subject" in third


def test_reports_naming_the_same_cve_are_related(desk: Desk) -> None:
    first = desk.report(sender="a@one.example", subject="Overflow")
    desk.command(first, "/cve CVE-2026-1111\n")
    sent = desk.deliver(mail(sender="b@two.example", subject="Crash", body="See CVE-2026-1111."))
    note = _text(sent_to(sent, ALICE)[0])
    assert f"#{first} (Overflow): names CVE-2026-1111 too" in note


# --- limits on notices to maintainers -----------------------------------------------------


def test_sixty_forged_tagged_mails_give_the_cap_and_one_summary_each(desk: Desk) -> None:
    report_id = desk.report()
    forged = [
        mail(sender=f"mallory{n}@evil.example", subject=f"Re: {tag(report_id)} pwned {n}")
        for n in range(60)
    ]
    sent = desk.deliver(*forged)
    for maintainer in MAINTAINERS:
        assert len(sent_to(sent, maintainer)) == 3
    # The summary waits for the hour, then comes once.
    assert _summaries(desk, timedelta(minutes=30)) == []
    summaries_sent = _summaries(desk, timedelta(minutes=31))
    assert sorted(c.rcpt_tos[0] for c in summaries_sent) == sorted(MAINTAINERS)
    text = _text(summaries_sent[0])
    assert "57 more message(s)" in text and "mallory59@evil.example" in text
    assert _summaries(desk, timedelta(hours=2)) == []
    # Nothing lost: all stored, all counted.
    assert sum(1 for m in desk.h.messages() if m["kind"] == "unverified") == 60
    counts = desk.h.show(report_id)["untrusted"]
    assert counts == {"held": 60, "refused": 0, "folded": 57}


def test_refused_command_notices_are_capped_too(desk: Desk) -> None:
    report_id = desk.report()
    forged = [
        mail(sender=ALICE, to=PROJECT, subject=f"Re: {tag(report_id)}", body="/close\n")
        for _ in range(5)
    ]
    sent = desk.deliver(*forged)
    assert [c.rcpt_tos[0] for c in sent].count(ALICE) == 3
    summary = _summaries(desk, timedelta(hours=1))
    assert len(summary) == len(MAINTAINERS) and "refused commands" in _text(summary[0])
    assert desk.h.show(report_id)["untrusted"] == {"held": 0, "refused": 5, "folded": 2}


def _summaries(desk: Desk, after: timedelta) -> list[Captured]:
    desk.now += after
    with desk.h.store.transaction():
        out = summaries(desk.config, desk.h.store, Composer(desk.config), desk.now, desk.tokens())
        enqueue(desk.h.store, out, desk.now)
    desk.h.outbox.run_once(desk.now)
    return desk.new()


# --- the reporter's /status ---------------------------------------------------------------


def test_a_reporters_status_gives_the_promised_dates_nothing_internal_once_an_hour(
    desk: Desk,
) -> None:
    arrival = desk.now + timedelta(minutes=1)
    report_id = desk.report()
    desk.command(report_id, "/severity critical\n/assign bob@example.org\nSecret: it is bad.\n")
    subject = f"Re: {tag(report_id)} status?"
    sent = desk.deliver(mail(subject=subject, body="/status\n"))
    (answer,) = sent_to(sent, REPORTER)
    text = _text(answer)
    when = Composer(desk.config).when
    assert f"report {report_id}: received; we are looking at it" in text
    assert f"an acknowledgement from a maintainer by {when(arrival + timedelta(hours=48))}" in text
    assert (
        f"a detailed response with the next steps by {when(arrival + timedelta(hours=96))}" in text
    )
    for internal in ("critical", "bob@example.org", "Secret", "severity"):
        assert internal not in text
    # Once an hour.
    sent = desk.deliver(mail(subject=subject, body="/status\n"), after=timedelta(minutes=30))
    assert "REFUSED /status" in _text(sent_to(sent, REPORTER)[0])
    assert "acknowledgement" not in _text(sent_to(sent, REPORTER)[0])
    sent = desk.deliver(mail(subject=subject, body="/status\n"), after=timedelta(minutes=31))
    assert "acknowledgement from a maintainer" in _text(sent_to(sent, REPORTER)[0])
