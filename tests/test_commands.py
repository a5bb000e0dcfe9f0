"""Maintainers command triaged by email: end to end through Dovecot and aiosmtpd."""

from __future__ import annotations

import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from helpers import MAINTAINERS, PROJECT, Desk, Harness, imap_config, make_config, sent_to
from servers import ImapAccount, SmtpSink

from triaged.commands.base import COMMANDS, HELP_ORDER, help_for, help_text
from triaged.core.ids import find_tag, tag

REPORTER = "reporter@outside.example"
ALICE, BOB = MAINTAINERS


@pytest.fixture
def desk(tmp_dir: Path, imap_account: ImapAccount, smtp_sink: SmtpSink) -> Iterator[Desk]:
    h = Harness(imap_config(tmp_dir, imap_account, smtp_sink))
    yield Desk(h, imap_account, smtp_sink)
    h.close()


def test_maintainer_mail_carries_a_personal_reply_token(desk: Desk) -> None:
    alice, bob = desk.reply_to(ALICE), desk.reply_to(BOB)
    assert alice.startswith("security+") and alice.endswith("@example.org")
    assert alice != bob


@pytest.mark.parametrize(
    ("command", "field", "expected"),
    [
        ("/severity high", "severity", "high"),
        ("/cvss CVSS:3.1/AV:N/AC:L/PR:N/UI:N/S:U/C:H/I:H/A:H", "cvss_score", 9.8),
        ("/assign bob@example.org", "handler", "bob@example.org"),
        ("/affects >=1.0 <1.0.4", "affected", ">=1.0 <1.0.4"),
        ("/fixed-in 1.0.4", "fixed_in", "1.0.4"),
        ("/cve CVE-2026-1234", "cves", ["CVE-2026-1234"]),
        ("/embargo 2099-12-01", "embargo", "2099-12-01"),
        ('/credit "Jane Doe"', "credit", "Jane Doe"),
        ("/credit anonymous", "credit", "anonymous"),
        ("/waiting", "waiting", True),
        ("/ack", "state", "acknowledged"),
        ("/confirm", "state", "confirmed"),
        ("/reject not a vulnerability", "state", "rejected"),
        ("/state spam", "state", "spam"),
    ],
)
def test_each_command_changes_the_report(
    desk: Desk, command: str, field: str, expected: Any
) -> None:
    sent = desk.send(command + "\n")
    (transcript,) = sent_to(sent, ALICE)
    assert "done" in transcript.msg.get_content() and command in transcript.msg.get_content()
    shown = desk.show()
    value = shown[field]
    if field == "credit":
        value = value["name"] or value["kind"]
    assert value == expected
    assert any(e["kind"] == "command" and e["actor"] == ALICE for e in shown["events"])


def test_duplicate_needs_an_existing_other_report(desk: Desk) -> None:
    new = desk.other_report()
    other = find_tag(str(new[0].msg["Subject"]))
    sent = desk.send(f"/duplicate {desk.report_id}\n/duplicate zzzzzzzz\n/duplicate {other}\n")
    body = sent_to(sent, ALICE)[0].msg.get_content()
    assert body.count("REFUSED") == 2 and "cannot duplicate itself" in body
    assert "there is no report zzzzzzzz" in body
    shown = desk.show()
    assert (shown["state"], shown["duplicate_of"]) == ("duplicate", other)
    desk.send("/reopen\n")
    assert desk.show()["state"] == "new"


def test_transcript_lists_each_command_and_the_state_after(desk: Desk) -> None:
    sent = desk.send("/severity critical\n/frobnicate now\n/confirm\n\nI can reproduce it.\n")
    (transcript,) = sent_to(sent, ALICE)
    body = transcript.msg.get_content()
    assert "done    /severity critical" in body
    assert "REFUSED /frobnicate now" in body and "unknown command /frobnicate" in body
    assert "done    /confirm" in body
    assert "State now: confirmed" in body
    assert "kept as an internal note" in body
    assert tag(desk.report_id) in str(transcript.msg["Subject"])
    assert transcript.msg["Reply-To"] == desk.reply_to(ALICE)
    # One transcript, to the sender only; the other maintainer gets nothing now.
    assert sent_to(sent, BOB) == []


def test_invalid_transition_is_refused_with_the_states_it_could_go(desk: Desk) -> None:
    sent = desk.send("/state disclosed\n")
    body = sent_to(sent, ALICE)[0].msg.get_content()
    assert "REFUSED /state disclosed" in body
    assert "a new report cannot become disclosed" in body
    assert "acknowledged, confirmed" in body
    assert desk.show()["state"] == "new"
    body = sent_to(desk.send("/close\n"), ALICE)[0].msg.get_content()
    assert "REFUSED" in body


def test_reply_reaches_the_reporter_without_the_internal_text(desk: Desk) -> None:
    body = (
        "/severity high\n"
        "/reply\n"
        "Thank you, we can reproduce it and are working on a fix.\n"
        "\n"
        "On Sun, 22 Nov 2026, Example security wrote:\n"
        "> A new security report arrived\n"
        "> internal secret handler notes\n"
    )
    sent = desk.send(body)
    (to_reporter,) = sent_to(sent, REPORTER)
    text = to_reporter.msg.get_content()
    assert "we can reproduce it and are working on a fix" in text
    assert "/severity" not in text and "internal secret" not in text and "wrote:" not in text
    assert tag(desk.report_id) in str(to_reporter.msg["Subject"])
    assert PROJECT in str(to_reporter.msg["From"])
    assert to_reporter.msg["Auto-Submitted"] is None
    assert to_reporter.msg["In-Reply-To"] == "<orig@outside.example>"
    assert ALICE not in to_reporter.raw.decode() and BOB not in to_reporter.raw.decode()


def test_without_reply_nothing_reaches_the_reporter(desk: Desk) -> None:
    sent = desk.send("Looks real, I'll look tomorrow.\n")
    assert sent == []
    assert desk.show()["events"][-1]["kind"] == "note"
    sent = desk.send("/note\nInternal: the fix is in branch sec-42.\n")
    assert sent_to(sent, REPORTER) == []


def test_state_changes_the_reporter_should_know_reach_them(desk: Desk) -> None:
    assert [c.msg["Subject"] for c in sent_to(desk.send("/confirm\n"), REPORTER)] == [
        f"{tag(desk.report_id)} Your report is confirmed"
    ]
    assert sent_to(desk.send("/state fixing\n"), REPORTER) == []
    sent = desk.send("/fixed-in 1.0.4\n/state fixed\n")
    # With no credit preference stated, the reporter is also asked how to be credited, once.
    fixed, question = sent_to(sent, REPORTER)
    assert "fixed in 1.0.4" in fixed.msg.get_content()
    assert str(question.msg["Subject"]).endswith("How would you like to be credited?")


def test_cc_adds_a_participant_and_tells_the_reporter_without_the_address(desk: Desk) -> None:
    sent = desk.send("/cc upstream@example.net\n")
    (told,) = sent_to(sent, REPORTER)
    assert "upstream@example.net" not in told.raw.decode()
    assert any(p["address"] == "upstream@example.net" for p in desk.show()["participants"])
    # The new participant's mail now threads.
    desk.send("Here is the upstream patch.\n", sender="upstream@example.net")
    assert desk.show()["messages"][-1]["kind"] == "followup"


def test_assign_and_cc_take_only_an_exact_well_formed_address(desk: Desk) -> None:
    sent = desk.send('/cc "upstream @example.net"\n/assign \u212aob@example.org\n/cc a..b@x.net\n')
    body = sent_to(sent, ALICE)[0].msg.get_content()
    assert body.count("REFUSED") == 3 and body.count("is not an address") == 3
    shown = desk.show()
    assert shown["handler"] is None
    assert [p["address"] for p in shown["participants"]] == [REPORTER]


def test_from_a_maintainer_without_token_or_dmarc_is_refused(
    tmp_dir: Path, imap_account: ImapAccount, smtp_sink: SmtpSink
) -> None:
    config = imap_config(tmp_dir, imap_account, smtp_sink)
    config.path.write_text(
        config.path.read_text().replace(
            "[maintainers]\n", '[maintainers]\nteam = "security-team@example.org"\n'
        )
    )
    from triaged.config import load

    h = Harness(load(config.path))
    try:
        d = Desk(h, imap_account, smtp_sink)
        before = d.show()
        sent = d.send("/close\n/severity low\n", to=PROJECT)
        assert [c.rcpt_tos for c in sent] == [["security-team@example.org"]]
        notice = sent[0].msg.get_content()
        assert "REFUSED" in notice and "no valid reply token" in notice
        after = d.show()
        assert (after["state"], after["severity"]) == (before["state"], before["severity"])
        assert any(e["kind"] == "commands_refused" for e in after["events"])
    finally:
        h.close()


def test_token_for_another_maintainer_or_report_is_refused(desk: Desk) -> None:
    # Bob's token, Alice's From.
    sent = desk.send("/severity low\n", sender=ALICE, to=desk.reply_to(BOB))
    assert desk.show()["severity"] is None
    assert sent and all("Refused commands" in str(c.msg["Subject"]) for c in sent)
    # A token of another report.
    new = desk.other_report()
    other_token = next(str(c.msg["Reply-To"]) for c in new if c.rcpt_tos == [ALICE])
    sent = desk.send("/severity low\n", to=other_token)
    assert desk.show()["severity"] is None
    assert all(c.rcpt_tos != [ALICE] or "Refused" in str(c.msg["Subject"]) for c in sent)


@pytest.fixture
def dmarc_desk(tmp_dir: Path, imap_account: ImapAccount, smtp_sink: SmtpSink) -> Iterator[Desk]:
    config = imap_config(tmp_dir, imap_account, smtp_sink)
    config.path.write_text(
        config.path.read_text() + '\n[auth]\nproofs = ["dmarc"]\nauthserv_id = "mx.example.org"\n'
    )
    from triaged.config import load

    h = Harness(load(config.path))
    yield Desk(h, imap_account, smtp_sink)
    h.close()


def test_dmarc_pass_from_the_trusted_authserv_id_counts(dmarc_desk: Desk) -> None:
    ar = "mx.example.org; dkim=pass header.d=example.org; dmarc=pass header.from=example.org"
    dmarc_desk.send("/severity medium\n", to=PROJECT, headers={"Authentication-Results": ar})
    assert dmarc_desk.show()["severity"] == "medium"


def test_forged_authentication_results_from_another_authserv_id_is_ignored(
    dmarc_desk: Desk,
) -> None:
    ar = "evil.example; dmarc=pass header.from=example.org"
    sent = dmarc_desk.send("/severity low\n", to=PROJECT, headers={"Authentication-Results": ar})
    assert dmarc_desk.show()["severity"] is None
    assert all("Refused" in str(c.msg["Subject"]) for c in sent)


def test_commands_in_quoted_text_or_html_are_ignored(desk: Desk) -> None:
    sent = desk.send("Thanks!\n\n> /close\n> /severity low\n")
    assert sent == [] and desk.show()["severity"] is None
    html = (
        f"From: {ALICE}\r\nTo: {desk.reply_to(ALICE)}\r\n"
        f"Subject: Re: {tag(desk.report_id)}\r\nMIME-Version: 1.0\r\n"
        "Content-Type: text/html; charset=utf-8\r\n\r\n<p>/severity low</p>\r\n"
    ).encode()
    assert desk.send("", raw=html) == []
    assert desk.show()["severity"] is None
    attached = (
        f"From: {ALICE}\r\nTo: {desk.reply_to(ALICE)}\r\n"
        f"Subject: Re: {tag(desk.report_id)}\r\nMIME-Version: 1.0\r\n"
        'Content-Type: multipart/mixed; boundary="b"\r\n\r\n'
        "--b\r\nContent-Type: message/rfc822\r\n\r\n"
        "From: x@y\r\nSubject: fwd\r\n\r\n/severity low\r\n--b--\r\n"
    ).encode()
    desk.send("", raw=attached)
    assert desk.show()["severity"] is None


def test_a_replayed_command_mail_has_no_second_effect(desk: Desk) -> None:
    body = "/reply\nWe are on it.\n"
    first = desk.send(body, message_id="<cmd-1@example.org>")
    assert len(sent_to(first, REPORTER)) == 1
    second = desk.send(body + "\n", message_id="<cmd-1@example.org>")
    assert second == []
    assert sum(1 for e in desk.show()["events"] if e["kind"] == "reply") == 1


def test_reporter_may_only_set_their_credit(desk: Desk) -> None:
    sent = desk.send("/close\n", sender=REPORTER)
    (answer,) = sent_to(sent, REPORTER)
    assert "REFUSED /close" in answer.msg.get_content()
    assert desk.show()["state"] == "new"
    # The follow-up still reaches the maintainers.
    assert len([c for c in sent if c.rcpt_tos[0] in MAINTAINERS]) == len(MAINTAINERS)
    sent = desk.send('/credit "Jane Q. Researcher"\n', sender=REPORTER)
    assert "done" in sent_to(sent, REPORTER)[0].msg.get_content()
    credit = desk.show()["credit"]
    assert credit["name"] == "Jane Q. Researcher" and credit["by"] == REPORTER


def test_waiting_ends_when_the_reporter_writes(desk: Desk) -> None:
    desk.send("/waiting\n")
    assert desk.show()["waiting"] is True
    desk.send("Here are the steps you asked for.\n", sender=REPORTER)
    assert desk.show()["waiting"] is False


def test_help_lists_every_command(desk: Desk) -> None:
    body = sent_to(desk.send("/help\n"), ALICE)[0].msg.get_content()
    for name in COMMANDS:
        assert f"/{name}" in body


def test_help_lists_the_commands_in_the_order_of_the_readme_table(desk: Desk) -> None:
    assert set(HELP_ORDER) == set(COMMANDS), "a registered command has no place in HELP_ORDER"
    readme = (Path(__file__).parent.parent / "README.md").read_text()
    table = re.findall(r"^\| `/([a-z-]+)", readme, re.M)
    body = sent_to(desk.send("/help\n"), ALICE)[0].msg.get_content()
    listed = re.findall(r"^ +/([a-z-]+)", body, re.M)
    assert listed == table == list(HELP_ORDER)


def test_help_with_a_command_shows_only_its_entry(desk: Desk) -> None:
    body = sent_to(desk.send("/help embargo\n/help /credit\n/help frobnicate\n"), ALICE)[0]
    text = body.msg.get_content()
    assert "/embargo YYYY-MM-DD | +DURATION | none" in text and "e.g. /embargo 2026-12-01" in text
    assert 'e.g. /credit "Jane Doe"' in text
    assert "/severity" not in text and "/ack" not in text
    assert "REFUSED /help frobnicate" in text and "unknown command /frobnicate" in text
    # The same entry as in the full list: both are generated from the command's class.
    for name in COMMANDS:
        assert help_for(name) in help_text()


def test_status_summarises_the_report(desk: Desk) -> None:
    desk.send("/severity high\n/cve CVE-2026-0001\n")
    body = sent_to(desk.send("/status\n"), ALICE)[0].msg.get_content()
    assert "severity:  high" in body and "CVE-2026-0001" in body and REPORTER in body


def test_every_command_is_documented_in_the_readme() -> None:
    readme = (Path(__file__).parent.parent / "README.md").read_text()
    for name, command in COMMANDS.items():
        assert f"`/{name}" in readme, f"/{name} is not in the README"
        assert command.example.split()[0] in readme


def test_auth_key_file_is_private(tmp_path: Path) -> None:
    config = make_config(tmp_path)
    from triaged.mail.auth import load_or_create_key

    load_or_create_key(config.auth.key_file)
    assert config.auth.key_file.stat().st_mode & 0o777 == 0o600


def test_advisory_drafts_to_each_maintainer_carry_their_reply_token(desk: Desk) -> None:
    sent = desk.send("/advisory")
    drafts = [c for c in sent if "Advisory draft" in str(c.msg["Subject"])]
    assert sorted(c.rcpt_tos[0] for c in drafts) == sorted(MAINTAINERS)
    for captured in drafts:
        # The same token as in triaged's other mail to that maintainer: a reply is a command.
        assert captured.msg["Reply-To"] == desk.reply_to(captured.rcpt_tos[0])
