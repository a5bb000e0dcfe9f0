"""The classifier on its own: pure decisions over a parsed message and a thread."""

from __future__ import annotations

from dataclasses import replace

import pytest

from triaged.config import SpamVerdict
from triaged.intake.classify import (
    AUTOMATIC,
    BLOCKED,
    FOLLOWUP,
    LOOP,
    MAINTAINER,
    REPORT,
    SPAM,
    UNVERIFIED,
    Context,
    Thread,
    classify,
)
from triaged.mail.parse import ParsedMessage

CTX = Context("security@example.org", frozenset({"alice@example.org"}))
THREAD = Thread("abcd2345", {"jane@outside.example": "reporter", "up@example.net": "cc"}, "tag")
BASE = ParsedMessage(
    message_id="<m@x>",
    in_reply_to=(),
    references=(),
    from_addr="jane@outside.example",
    from_name="Jane",
    from_text="Jane <jane@outside.example>",
    to_addrs=("security@example.org",),
    subject="s",
    date=None,
    auto_reason=None,
    text="t",
    text_is_first_part=True,
    attachments=(),
    authentication_results=(),
    return_path=None,
    about=(),
)


@pytest.mark.parametrize(
    ("changes", "thread", "kind", "report"),
    [
        ({}, None, REPORT, None),
        ({}, THREAD, FOLLOWUP, "abcd2345"),
        ({"from_addr": "up@example.net"}, THREAD, FOLLOWUP, "abcd2345"),
        ({"from_addr": "alice@example.org"}, THREAD, MAINTAINER, "abcd2345"),
        ({"from_addr": "alice@example.org"}, None, MAINTAINER, None),
        ({"from_addr": "mallory@evil.example"}, THREAD, UNVERIFIED, "abcd2345"),
        ({"from_addr": None}, THREAD, UNVERIFIED, "abcd2345"),
        ({"from_addr": None}, None, REPORT, None),
        ({"auto_reason": "precedence: bulk"}, THREAD, AUTOMATIC, "abcd2345"),
        ({"auto_reason": "mailing list"}, None, AUTOMATIC, None),
        (
            {"auto_reason": "auto-submitted: auto-replied", "from_addr": "mallory@evil.example"},
            THREAD,
            AUTOMATIC,
            "abcd2345",
        ),
        ({"from_addr": "security@example.org"}, None, LOOP, None),
        ({"from_addr": "security+token@example.org"}, THREAD, LOOP, "abcd2345"),
    ],
)
def test_rules(
    changes: dict[str, object], thread: Thread | None, kind: str, report: str | None
) -> None:
    decision = classify(replace(BASE, **changes), thread, CTX)  # type: ignore[arg-type]
    assert (decision.kind, decision.report_id) == (kind, report)
    assert decision.reason


def test_a_lookalike_domain_is_not_our_address() -> None:
    msg = replace(BASE, from_addr="security@example.org.evil.example")
    assert classify(msg, None, CTX).kind == REPORT


SPAM_CTX = replace(
    CTX,
    spam_verdicts=(SpamVerdict("X-Spam-Flag", "YES"), SpamVerdict("X-Spam-Status", "Yes*")),
    blocking=lambda address: "@spam.example" if (address or "").endswith("@spam.example") else None,
)


@pytest.mark.parametrize(
    ("fields", "kind"),
    [
        ((("x-spam-flag", "YES"),), SPAM),
        ((("x-spam-flag", " yes "),), SPAM),
        ((("x-spam-status", "Yes, score=9.1 required=5.0"),), SPAM),
        ((("x-spam-status", "No, score=0.3"),), REPORT),
        ((("x-spam-flag", "NO"), ("subject", "X-Spam-Flag: YES")), REPORT),
        ((), REPORT),
    ],
)
def test_a_spam_verdict_of_our_mail_server_marks_a_new_report(
    fields: tuple[tuple[str, str], ...], kind: str
) -> None:
    assert classify(replace(BASE, fields=fields), None, SPAM_CTX).kind == kind


def test_a_verdict_only_concerns_new_reports() -> None:
    msg = replace(BASE, fields=(("x-spam-flag", "YES"),))
    assert classify(msg, THREAD, SPAM_CTX).kind == FOLLOWUP
    assert classify(replace(msg, from_addr="alice@example.org"), None, SPAM_CTX).kind == MAINTAINER


def test_mail_from_a_blocked_sender_is_blocked_wherever_it_goes() -> None:
    for thread in (None, THREAD):
        msg = replace(BASE, from_addr="bot@spam.example", auto_reason="precedence: bulk")
        decision = classify(msg, thread, SPAM_CTX)
        assert decision.kind == BLOCKED and decision.reason == "blocked: @spam.example"
    assert classify(BASE, None, SPAM_CTX).kind == REPORT
