"""A mailbox behind the project's own list (`[mailbox] own_lists`): end to end through Dovecot
and the SMTP sink, and the pure rule (triaged/intake/lists.py) on its own."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path

import pytest
from helpers import MAINTAINERS, Harness, base_sections, config_text, mail, make_config
from servers import ImapAccount, SmtpSink

from triaged.config import LimitsConfig, load
from triaged.errors import ConfigError
from triaged.intake.lists import through_own_list
from triaged.mail.parse import parse

OWN = "security.example.org"
LIST_ADDRESS = "security@example.org"  # Google Groups: the group is the project's address
JANE = "jane@researcher.example"


def own_list_mail(
    sender: str = f"'Jane Doe' via security <{LIST_ADDRESS}>",
    list_id: str = f"Security team <{OWN}>",
    **headers: str,
) -> bytes:
    return mail(
        sender=sender,
        subject="SQL injection in search",
        headers={
            "List-Id": list_id,
            "List-Post": f"<mailto:{LIST_ADDRESS}>",
            "List-Unsubscribe": "<mailto:security+unsubscribe@example.org>",
            "Precedence": "list",
            "Mailing-list": f"list {LIST_ADDRESS}; contact security+owners@example.org",
            **headers,
        },
    )


@pytest.fixture
def harness(tmp_dir: Path, imap_account: ImapAccount, smtp_sink: SmtpSink) -> Iterator[Harness]:
    sections = base_sections(
        tmp_dir,
        mailbox_url=imap_account.url(),
        smtp_url=smtp_sink.url,
        password_file=str(imap_account.password_file),
    )
    sections["mailbox"].update(poll_interval="1h", own_lists=[OWN])
    sections["smtp"].update(retry_initial="1s", retry_max="2s")
    h = Harness(make_config(tmp_dir, sections=sections))
    yield h
    h.close()


def test_report_through_the_own_list_gets_its_receipt_at_the_original_sender(
    harness: Harness, imap_account: ImapAccount, smtp_sink: SmtpSink
) -> None:
    imap_account.append(own_list_mail(**{"X-Original-From": f"Jane Doe <{JANE}>"}))
    assert harness.pump() == 1
    sent = smtp_sink.wait_for(1 + len(MAINTAINERS))
    receipts = [c for c in sent if c.msg["Auto-Submitted"] == "auto-replied"]
    assert [c.rcpt_tos for c in receipts] == [[JANE]]
    (report,) = harness.reports()
    assert report["reporter"] == JANE
    note = next(c for c in sent if c.rcpt_tos == [MAINTAINERS[0]])
    assert f"From:      {JANE}" in note.msg.get_content()
    assert [m["from_addr"] for m in harness.messages()] == [JANE]


def test_a_rewritten_from_through_a_list_not_ours_stays_automatic(
    harness: Harness, imap_account: ImapAccount, smtp_sink: SmtpSink
) -> None:
    imap_account.append(
        own_list_mail(
            sender="Jane Doe via Security <security@lists.example.org>",
            list_id="<security.lists.example.org>",
            **{"Reply-To": f"Jane Doe <{JANE}>"},
        )
    )
    assert harness.pump() == 1
    assert harness.reports() == []
    assert [(m["kind"], m["from_addr"]) for m in harness.messages()] == [
        ("automatic", "security@lists.example.org")
    ]


def test_another_lists_mail_is_still_automatic(
    harness: Harness, imap_account: ImapAccount, smtp_sink: SmtpSink
) -> None:
    imap_account.append(
        mail(
            sender="dev@project.example",
            subject="[dev] weekly sync",
            headers={"List-Id": "<dev.project.example>", "Precedence": "list"},
        )
    )
    imap_account.append(mail(sender="news@vendor.example", headers={"List-Id": "<news.vendor>"}))
    assert harness.pump() == 2
    assert harness.reports() == []
    assert [(m["kind"], m["reason"]) for m in harness.messages()] == [
        ("automatic", "precedence: list"),
        ("automatic", "mailing list"),
    ]
    harness.outbox.run_once(datetime.now(UTC))
    assert smtp_sink.messages == []


def test_an_auto_reply_through_the_own_list_is_still_automatic(
    harness: Harness, imap_account: ImapAccount, smtp_sink: SmtpSink
) -> None:
    imap_account.append(
        own_list_mail(**{"X-Original-From": JANE, "Auto-Submitted": "auto-replied"})
    )
    assert harness.pump() == 1
    assert harness.reports() == []
    assert [(m["kind"], m["reason"]) for m in harness.messages()] == [
        ("automatic", "auto-submitted: auto-replied")
    ]
    assert smtp_sink.messages == []


LIMITS = LimitsConfig(
    max_message_size=1_000_000,
    max_header_bytes=65536,
    max_headers=200,
    max_mime_depth=20,
    max_parts=100,
    max_text_chars=100_000,
    receipts_per_sender_per_day=1,
)


def _through(raw: bytes) -> tuple[str | None, str | None]:
    msg = through_own_list(parse(raw, LIMITS), frozenset({OWN}), "security@example.org")
    return msg.from_addr, msg.auto_reason


@pytest.mark.parametrize(
    ("sender", "headers", "expected"),
    [
        # Rewritten to the group's (the project's) address: X-Original-From first.
        (
            f"'Jane' via security <{LIST_ADDRESS}>",
            {"X-Original-From": JANE, "Reply-To": "other@example.net"},
            JANE,
        ),
        # Rewritten, only Reply-To: taken.
        (f"Jane via security <{LIST_ADDRESS}>", {"Reply-To": f"Jane <{JANE}>"}, JANE),
        # Rewritten to the address the List-Id spells (Mailman): Reply-To taken.
        ("Jane via Security <security@example.org>", {"Reply-To": JANE}, JANE),
        # Not rewritten (a member posting as herself): Reply-To is never followed.
        ("Joe <joe@example.net>", {"Reply-To": "victim@example.net"}, "joe@example.net"),
        # Rewritten, but the only candidate is the list itself: From stays (our own address).
        (f"x via security <{LIST_ADDRESS}>", {"Reply-To": LIST_ADDRESS}, LIST_ADDRESS),
        # Two addresses in Reply-To: none is the author.
        (
            f"x via security <{LIST_ADDRESS}>",
            {"Reply-To": "a@example.net, b@example.net"},
            LIST_ADDRESS,
        ),
    ],
)
def test_which_headers_name_the_original_sender(
    sender: str, headers: dict[str, str], expected: str
) -> None:
    from_addr, reason = _through(own_list_mail(sender=sender, **headers))
    assert (from_addr, reason) == (expected, None)


def test_only_the_named_lists_are_unwrapped() -> None:
    raw = own_list_mail(list_id="<security.other.example>", **{"X-Original-From": JANE})
    assert _through(raw) == (LIST_ADDRESS, "precedence: list")


def test_own_lists_must_be_list_ids(tmp_path: Path) -> None:
    sections = base_sections(tmp_path)
    sections["mailbox"]["own_lists"] = ["security list"]
    path = tmp_path / "config.toml"
    path.write_text(config_text(sections))
    with pytest.raises(ConfigError) as info:
        load(path)
    assert info.value.key == "mailbox.own_lists"
    assert str(path) in str(info.value)
    sections["mailbox"]["own_lists"] = ["<Security.Example.ORG>"]
    path.write_text(config_text(sections))
    assert load(path).mailbox.own_lists == frozenset({OWN})
