"""triaged.mail.parse: hostile bytes in, safe fields out, and nothing but UnsafeMessage raised."""

from __future__ import annotations

import email
import random
import re
import sysconfig
import time
from datetime import UTC, datetime, timedelta, timezone
from pathlib import Path

import pytest

import triaged.mail.parse as message_module
from triaged.config import LimitsConfig
from triaged.errors import UnsafeMessage
from triaged.mail.parse import Attachment, ParsedMessage, clean_header_text, parse

CORPUS = Path(__file__).parent / "corpus"

LIMITS = LimitsConfig(
    max_message_size=2_000_000,
    max_header_bytes=64 * 1024,
    max_headers=1000,
    max_mime_depth=20,
    max_parts=500,
    max_text_chars=100_000,
    receipts_per_sender_per_day=1,
)
# Small caps, so that random input reaches them too.
TIGHT = LimitsConfig(
    max_message_size=64 * 1024,
    max_header_bytes=4096,
    max_headers=60,
    max_mime_depth=6,
    max_parts=40,
    max_text_chars=2000,
    receipts_per_sender_per_day=1,
)

UNSAFE_CHAR = re.compile("[\x00-\x1f\x7f-\x9f\u2028\u2029\ud800-\udfff]")


def _described(attachments: tuple[Attachment, ...]) -> tuple[Attachment, ...]:
    """The attachments without their SHA-256 (tested on its own)."""
    return tuple(Attachment(a.filename, a.content_type, a.size) for a in attachments)


def make(*headers: str, body: str = "body\n", charset: str = "utf-8") -> bytes:
    head = "\r\n".join(headers)
    return f"{head}\r\n\r\n{body}".encode(charset, "surrogateescape")


def simple(*extra: str, body: str = "hello\n") -> bytes:
    return make(
        "From: Alice Reporter <Alice@Example.ORG>",
        "To: security@example.net",
        "Subject: a report",
        "Message-ID: <m1@example.org>",
        "Date: Mon, 2 Mar 2026 10:00:00 +0100",
        *extra,
        body=body,
    )


def header_fields(parsed: ParsedMessage) -> list[str]:
    """Every str field that may end up in a header of a mail triaged sends."""
    fields = [parsed.from_name, parsed.subject]
    fields += [x for x in (parsed.message_id, parsed.from_addr, parsed.return_path) if x]
    fields += list(parsed.in_reply_to) + list(parsed.references) + list(parsed.to_addrs)
    fields += list(parsed.authentication_results)
    if parsed.auto_reason:
        fields.append(parsed.auto_reason)
    for attachment in parsed.attachments:
        fields += [attachment.filename, attachment.content_type]
    return fields


def check_invariants(parsed: ParsedMessage, limits: LimitsConfig) -> None:
    for value in header_fields(parsed):
        assert isinstance(value, str)
        assert "\r" not in value and "\n" not in value, value
        assert not UNSAFE_CHAR.search(value), repr(value)
    assert len(parsed.subject) <= 300
    assert len(parsed.from_name) <= 300
    for mid in (parsed.message_id, *parsed.in_reply_to, *parsed.references):
        if mid is not None:
            assert mid.startswith("<") and mid.endswith(">") and len(mid) <= 998
            assert not re.search(r"\s", mid)
    assert len(parsed.references) <= 100
    for addr in (parsed.from_addr, *parsed.to_addrs):
        if addr is not None:
            assert addr == addr.lower() and "@" in addr and " " not in addr
    for attachment in parsed.attachments:
        assert len(attachment.filename) <= 200
        assert "/" not in attachment.filename and "\\" not in attachment.filename
        assert attachment.content_type == attachment.content_type.lower()
        assert attachment.content_type.count("/") == 1
        assert attachment.size >= 0
    assert parsed.date is None or parsed.date.tzinfo is not None
    assert "\x00" not in parsed.text
    assert len(parsed.text) <= limits.max_text_chars


def parse_or_unsafe(raw: bytes, limits: LimitsConfig = LIMITS) -> ParsedMessage | None:
    """Parses; None for UnsafeMessage; any other exception fails the test with the input."""
    try:
        parsed = parse(raw, limits)
    except UnsafeMessage as exc:
        assert exc.reason
        return None
    except BaseException as exc:  # pragma: no cover - the failure being tested for
        pytest.fail(f"{type(exc).__name__}: {exc} for input {raw[:300]!r}")
    check_invariants(parsed, limits)
    return parsed


# --- clean_header_text ------------------------------------------------------------------------


@pytest.mark.parametrize(
    "value",
    [
        "a\r\nb",
        "a\rb",
        "a\nb",
        "a\x00b",
        "a\x1bb",
        "a\x7fb",
        "a\x85b",
        "a\x9bb",
        "a\u2028b",
        "a\u2029b",
        "a\tb",
        "a\u202eb",
        "a\ud800b",
        " \r\n a \t\x0b\x0c  b \n",
    ],
)
def test_clean_header_text_replaces_controls_by_one_space(value: str) -> None:
    assert clean_header_text(value) == "a b"


def test_clean_header_text_truncates_and_decodes_nothing() -> None:
    assert clean_header_text("x" * 500) == "x" * 300
    assert clean_header_text("abc def", max_len=4) == "abc"
    assert clean_header_text("=?utf-8?q?a?=") == "=?utf-8?q?a?="
    assert clean_header_text("  \r\n  ") == ""
    assert clean_header_text("héllo wörld ✓") == "héllo wörld ✓"
    assert clean_header_text("abc", max_len=0) == ""


# --- caps before parsing ----------------------------------------------------------------------


def test_too_large() -> None:
    raw = simple(body="x" * 3_000_000)
    with pytest.raises(UnsafeMessage) as info:
        parse(raw, LIMITS)
    assert info.value.reason == f"too large: {len(raw)} bytes"


def test_exactly_max_size_is_fine() -> None:
    raw = simple(body="x" * 100)
    limits = LimitsConfig(**{**LIMITS.__dict__, "max_message_size": len(raw)})
    assert parse(raw, limits).text.startswith("x")


def test_header_too_large() -> None:
    raw = simple(*(f"X-Filler-{i}: {'y' * 1000}" for i in range(70)))
    with pytest.raises(UnsafeMessage, match=r"^header too large$"):
        parse(raw, LIMITS)


def test_one_huge_folded_header_too_large() -> None:
    raw = simple("X-Big: start\r\n" + "\r\n".join(" " + "z" * 900 for _ in range(100)))
    with pytest.raises(UnsafeMessage, match=r"^header too large$"):
        parse(raw, LIMITS)


def test_header_without_end_too_large() -> None:
    raw = b"Subject: x\r\n" + b"X-A: b\r\n" * 20_000  # no empty line, all header lines
    with pytest.raises(UnsafeMessage):
        parse(raw, LIMITS)


def test_big_body_after_missing_separator_is_not_a_big_header() -> None:
    # The parser ends the headers at the first line that is not a header line.
    raw = b"From: a@example.org\r\nSubject: x\r\nbody line\r\n" + b"more body\r\n" * 20_000
    parsed = parse(raw, LIMITS)
    assert parsed.from_addr == "a@example.org"
    assert parsed.text.startswith("body line\n")


def test_too_many_headers() -> None:
    raw = simple(*(f"X-N{i}: v" for i in range(1000)))
    with pytest.raises(UnsafeMessage, match=r"^too many headers$"):
        parse(raw, LIMITS)


def test_header_count_is_fields_not_continuation_lines() -> None:
    fields = [f"X-N{i}: v" for i in range(LIMITS.max_headers - 5)]  # simple() adds 5
    assert parse(simple(*fields), LIMITS).subject == "a report"
    folded = "X-Folded: a\r\n" + "\r\n".join(" more" for _ in range(50))
    limits = LimitsConfig(**{**LIMITS.__dict__, "max_headers": 6})
    assert parse(simple(folded), limits).subject == "a report"


# --- MIME structure caps ----------------------------------------------------------------------


def nested_multipart(levels: int) -> bytes:
    parts = [b"From: a@example.org\r\nContent-Type: multipart/mixed; boundary=b0\r\n\r\n"]
    for i in range(1, levels + 1):
        parts.append(b"--b%d\r\nContent-Type: multipart/mixed; boundary=b%d\r\n\r\n" % (i - 1, i))
    parts.append(b"--b%d\r\nContent-Type: text/plain\r\n\r\ndeep\r\n" % levels)
    return b"".join(parts)


def test_nesting_10000_levels_is_unsafe_without_recursion_error() -> None:
    start = time.monotonic()
    with pytest.raises(UnsafeMessage) as info:
        parse(nested_multipart(10_000), LIMITS)
    assert info.value.reason == "MIME nesting deeper than 20"
    assert time.monotonic() - start < 10


def test_message_rfc822_nesting_10000_levels() -> None:
    raw = b"From: a@example.org\r\n" + b"Content-Type: message/rfc822\r\n\r\n" * 10_000 + b"x"
    with pytest.raises(UnsafeMessage, match=r"^MIME nesting deeper than 20$"):
        parse(raw, LIMITS)


def test_nesting_up_to_the_limit_is_fine() -> None:
    # The innermost text part is 20 levels below the top.
    parsed = parse(nested_multipart(19), LIMITS)
    assert parsed.text == "deep"
    assert parsed.text_is_first_part is True
    with pytest.raises(UnsafeMessage, match="nesting"):
        parse(nested_multipart(20), LIMITS)


def test_too_many_parts() -> None:
    body = "".join(f"--b\r\nContent-Type: text/plain\r\n\r\npart {i}\r\n" for i in range(600))
    raw = make("From: a@example.org", "Content-Type: multipart/mixed; boundary=b", body=body)
    with pytest.raises(UnsafeMessage, match="MIME parts"):
        parse(raw, LIMITS)


def test_many_siblings_within_limits_are_fine() -> None:
    body = "".join(
        f"--b\r\nContent-Type: application/octet-stream; name=f{i}.bin\r\n\r\n{i}\r\n"
        for i in range(300)
    )
    raw = make("From: a@example.org", "Content-Type: multipart/mixed; boundary=b", body=body)
    assert len(parse(raw, LIMITS).attachments) == 300


def test_quadratic_parameter_lists_stay_fast() -> None:
    # The stdlib splits parameters in quadratic time: this part header would take minutes.
    evil = 'multipart/mixed; boundary="x' + ";a" * 500_000
    body = f"--outer\r\nContent-Type: {evil}\r\n\r\ninner\r\n--outer--\r\n"
    raw = make("From: a@example.org", "Content-Type: multipart/mixed; boundary=outer", body=body)
    start = time.monotonic()
    parse_or_unsafe(raw)
    assert time.monotonic() - start < 5


def test_very_long_boundary_counts_as_none() -> None:
    # A part's headers are not bounded by the header cap; the parser would compile this
    # boundary into a regular expression.
    boundary = "b" * 1_000_000
    body = (
        f"--outer\r\nContent-Type: multipart/mixed; boundary={boundary}\r\n\r\n"
        f"--{boundary}\r\nContent-Type: text/plain\r\n\r\ninner\r\n--{boundary}--\r\n"
        "--outer--\r\n"
    )
    raw = make("From: a@example.org", "Content-Type: multipart/mixed; boundary=outer", body=body)
    limits = LimitsConfig(**{**LIMITS.__dict__, "max_message_size": 4_000_000})
    start = time.monotonic()
    parsed = parse(raw, limits)
    assert time.monotonic() - start < 5
    assert parsed.text == ""
    assert [a.content_type for a in parsed.attachments] == ["multipart/mixed"]


# --- headers ----------------------------------------------------------------------------------


def test_encoded_newline_in_subject_is_one_line() -> None:
    raw = simple().replace(
        b"Subject: a report", b"Subject: =?utf-8?q?hello=0D=0ABcc:_victim@example.org?="
    )
    parsed = parse(raw, LIMITS)
    assert parsed.subject == "hello Bcc: victim@example.org"
    assert "\r" not in parsed.subject and "\n" not in parsed.subject


@pytest.mark.parametrize(
    ("subject", "expected"),
    [
        ("=?utf-8?q?caf=C3=A9?=", "café"),
        ("=?UTF-8?B?Y2Fmw6k=?=", "café"),
        ("=?utf-8?b?Y2Fmw6k?=", "café"),  # missing padding
        ("=?utf-8?q?a?= =?utf-8?q?b?=", "ab"),  # whitespace between words dropped
        ("=?utf-8?q?caf=C3?= =?utf-8?q?=A9?=", "café"),  # a character split across words
        ("x =?iso-8859-1?q?=E9t=E9?= y", "x été y"),
        ("=?utf-8*en?q?lang?=", "lang"),
        ("=?x-bogus?q?caf=C3=A9?=", "café"),  # unknown charset: UTF-8
        ("=?utf-8?b?#?= ok", "=?utf-8?b?#?= ok"),  # broken word kept as is
        ("=?utf-8?z?abc?=", "=?utf-8?z?abc?="),
        ("Re: plain", "Re: plain"),
        ("=?utf-8?q?a=00b?=", "a b"),
        ("=?utf-8?q?tab=09and=E2=80=A8sep?=", "tab and sep"),
    ],
)
def test_subject_decoding(subject: str, expected: str) -> None:
    raw = simple().replace(b"Subject: a report", f"Subject: {subject}".encode())
    assert parse(raw, LIMITS).subject == expected


def test_folded_subject_and_cap() -> None:
    raw = simple().replace(b"Subject: a report", b"Subject: one\r\n two\r\n\tthree")
    assert parse(raw, LIMITS).subject == "one two three"
    raw = simple().replace(b"Subject: a report", b"Subject: " + b"w " * 400)
    assert len(parse(raw, LIMITS).subject) <= 300


def test_missing_subject_is_empty() -> None:
    raw = make("From: a@example.org")
    assert parse(raw, LIMITS).subject == ""


def test_latin1_8bit_headers() -> None:
    raw = (
        b"From: J\xfcrgen <J@Example.de>\r\nSubject: Caf\xe9 cr\xe8me\r\n"
        b"To: s@example.net\r\n\r\nbody\r\n"
    )
    parsed = parse(raw, LIMITS)
    assert parsed.subject == "Café crème"
    assert parsed.from_name == "Jürgen"
    assert parsed.from_addr == "j@example.de"


def test_utf8_8bit_headers() -> None:
    raw = "From: Jürgen <j@example.de>\r\nSubject: Grüße ✓\r\n\r\nbody\r\n".encode()
    parsed = parse(raw, LIMITS)
    assert parsed.subject == "Grüße ✓"
    assert parsed.from_name == "Jürgen"


def test_nul_bytes_in_headers_and_body() -> None:
    raw = b"From: A\x00B <a@example.org>\r\nSubject: x\x00y\r\n\r\nbe\x00fore\r\n"
    parsed = parse(raw, LIMITS)
    assert parsed.subject == "x y"
    assert parsed.from_name == "A B"
    assert parsed.text == "before\n"


def test_message_ids() -> None:
    raw = simple(
        "In-Reply-To: <parent@example.org> (comment)",
        "References: <r1@example.org>\r\n <r2@example.org>  garbage <r3@exa mple.org>",
    ).replace(b"Message-ID: <m1@example.org>", b"Message-ID: <  m1@example.org >")
    parsed = parse(raw, LIMITS)
    assert parsed.message_id == "<m1@example.org>"
    assert parsed.in_reply_to == ("<parent@example.org>",)
    assert parsed.references == ("<r1@example.org>", "<r2@example.org>", "<r3@example.org>")


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        ("garbage", None),
        ("", None),
        ("<>", None),
        ("bare@example.org", "<bare@example.org>"),
        ("<a\x01b\x7fc@example.org>", "<abc@example.org>"),
        ("<" + "x" * 1000 + "@example.org>", None),
        ("<first@x> <second@x>", "<first@x>"),
    ],
)
def test_message_id_forms(value: str, expected: str | None) -> None:
    raw = simple().replace(b"Message-ID: <m1@example.org>", f"Message-ID: {value}".encode())
    assert parse(raw, LIMITS).message_id == expected


def test_missing_message_id() -> None:
    assert parse(make("From: a@example.org"), LIMITS).message_id is None


def test_references_keep_the_last_100() -> None:
    refs = " ".join(f"<r{i}@example.org>" for i in range(250))
    parsed = parse(simple(f"References: {refs}"), LIMITS)
    assert len(parsed.references) == 100
    assert parsed.references[0] == "<r150@example.org>"
    assert parsed.references[-1] == "<r249@example.org>"


@pytest.mark.parametrize(
    ("value", "addr", "name"),
    [
        ("Alice <Alice@Example.ORG>", "alice@example.org", "Alice"),
        ('"Doe, Jane" <jane@example.org>', "jane@example.org", "Doe, Jane"),
        ("jane@example.org (Jane Doe)", "jane@example.org", "Jane Doe"),
        ("jane@example.org", "jane@example.org", ""),
        ("=?utf-8?q?J=C3=BCrgen?= <j@example.de>", "j@example.de", "Jürgen"),
        ('"=?utf-8?q?J=C3=BCrgen?=" <j@example.de>', "j@example.de", "Jürgen"),
        ('"Mallory <boss@example.net>" <mallory@example.com>', "mallory@example.com", None),
        ("=?utf-8?q?x_=3Cboss=40example=2Enet=3E?= <m@example.com>", "m@example.com", None),
        ("not an address, <second@example.org>", "second@example.org", ""),
        ("Group: <g@example.org>;", "g@example.org", ""),
        ("<@relay.example:route@example.org>", "route@example.org", ""),
        ("(((((((((((((((((((((((((((((((((((((((((((((((", None, ""),
        ("<>", None, ""),
        ("", None, ""),
        ("=?utf-8?q?Eve=0D=0ABcc:_x@example.org?= <eve@example.org>", "eve@example.org", None),
        ("Bad <a@b@c>, Good <good@example.org>", "good@example.org", "Good"),
    ],
)
def test_from(value: str, addr: str | None, name: str | None) -> None:
    raw = simple().replace(b"From: Alice Reporter <Alice@Example.ORG>", f"From: {value}".encode())
    parsed = parse(raw, LIMITS)
    assert parsed.from_addr == addr
    if name is not None:
        assert parsed.from_name == name


def test_missing_from() -> None:
    parsed = parse(make("Subject: x"), LIMITS)
    assert parsed.from_addr is None
    assert parsed.from_name == ""


def test_recipients_from_to_cc_and_delivered_to() -> None:
    raw = make(
        "From: a@example.org",
        'To: "Sec, Team" <Security@Example.NET>, other@example.net',
        "Cc: undisclosed-recipients:;, third@example.net (Third)",
        "Cc: fourth@example.net",
        "Delivered-To: security+tok3n@example.net",
        "To: OTHER@example.net",
    )
    assert parse(raw, LIMITS).to_addrs == (
        "security@example.net",
        "other@example.net",
        "third@example.net",
        "fourth@example.net",
        "security+tok3n@example.net",
    )


def test_date() -> None:
    parsed = parse(simple(), LIMITS)
    assert parsed.date == datetime(2026, 3, 2, 9, 0, tzinfo=UTC)
    assert parsed.date.utcoffset() == timedelta(hours=1)
    raw = simple().replace(b"+0100", b"-0000")
    assert parse(raw, LIMITS).date == datetime(2026, 3, 2, 10, 0, tzinfo=UTC)
    raw = simple().replace(b"+0100", b"EST")
    est = timezone(-timedelta(hours=5))
    assert parse(raw, LIMITS).date == datetime(2026, 3, 2, 10, 0, tzinfo=est)


@pytest.mark.parametrize(
    "value",
    ["garbage", "", "Mon, 99 Foo 99999 99:99:99 +9999", "1 2 3", "Mon, 1 Jan 2026 25:61:00"],
)
def test_bad_dates_are_none(value: str) -> None:
    raw = simple().replace(b"Date: Mon, 2 Mar 2026 10:00:00 +0100", f"Date: {value}".encode())
    assert parse(raw, LIMITS).date is None


def test_return_path() -> None:
    assert parse(simple(), LIMITS).return_path is None
    assert parse(simple("Return-Path: <>"), LIMITS).return_path == ""
    assert parse(simple("Return-Path: < >"), LIMITS).return_path == ""
    assert parse(simple("Return-Path: <B@Example.org>"), LIMITS).return_path == "b@example.org"
    first = simple("Return-Path: <first@example.org>", "Return-Path: <>")
    assert parse(first, LIMITS).return_path == "first@example.org"


def test_authentication_results_in_order_unfolded() -> None:
    raw = simple(
        "Authentication-Results: mx.example.net;\r\n dkim=pass header.d=example.org;\r\n"
        "\tdmarc=pass header.from=example.org",
        "Authentication-Results: other.example; spf=fail",
    )
    assert parse(raw, LIMITS).authentication_results == (
        "mx.example.net; dkim=pass header.d=example.org; dmarc=pass header.from=example.org",
        "other.example; spf=fail",
    )
    assert parse(simple(), LIMITS).authentication_results == ()


def test_broken_header_decoding_degrades(monkeypatch: pytest.MonkeyPatch) -> None:
    def boom(value: str) -> str:
        raise LookupError("decoder broke")

    monkeypatch.setattr(message_module, "_decode_words", boom)
    raw = simple().replace(b"Subject: a report", b"Subject: =?utf-8?q?x=0Ay?=\r\n more")
    assert parse(raw, LIMITS).subject == "=?utf-8?q?x=0Ay?= more"


def test_unexpected_failure_becomes_unsafe(monkeypatch: pytest.MonkeyPatch) -> None:
    def boom(*args: object) -> None:
        raise KeyError("surprise")

    monkeypatch.setattr(message_module, "_walk", boom)
    with pytest.raises(UnsafeMessage, match="KeyError"):
        parse(simple(), LIMITS)


def test_no_header_fields_is_unsafe() -> None:
    for raw in (b"", b"\r\n\r\nbody only", b"no headers here\r\n\r\nat all\r\n"):
        with pytest.raises(UnsafeMessage, match="no header fields"):
            parse(raw, LIMITS)


# --- auto_reason ------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("extra", "reason"),
    [
        (["Auto-Submitted: auto-replied"], "auto-submitted: auto-replied"),
        (["Auto-Submitted: Auto-Generated (bounce); x=y"], "auto-submitted: auto-generated"),
        (["Auto-Submitted: no"], None),
        (["Auto-Submitted: No (a human)"], None),
        (["Precedence: bulk"], "precedence: bulk"),
        (["Precedence: JUNK"], "precedence: junk"),
        (["Precedence: list"], "precedence: list"),
        (["Precedence: first-class"], None),
        (["List-Id: <dev.example.org>"], "mailing list"),
        (["List-Unsubscribe: <mailto:u@example.org>"], "mailing list"),
        (["List-Post: NO"], "mailing list"),
        (["X-Autoreply: yes"], "autoreply header"),
        (["X-Autorespond: on vacation"], "autoreply header"),
        (["X-Auto-Response-Suppress: All"], None),
        (["Return-Path: <>"], "null return path"),
        (["Return-Path: <bounces@example.org>"], None),
        (["Auto-Submitted: auto-generated", "List-Id: <x>"], "auto-submitted: auto-generated"),
        (["Precedence: bulk", "List-Id: <x>"], "precedence: bulk"),
        (["List-Id: <x>", "X-Autoreply: yes", "Return-Path: <>"], "mailing list"),
        ([], None),
    ],
)
def test_auto_reason_headers(extra: list[str], reason: str | None) -> None:
    assert parse(simple(*extra), LIMITS).auto_reason == reason


@pytest.mark.parametrize(
    "sender",
    [
        "MAILER-DAEMON@mx.example.net",
        "Mail Delivery System <Mailer-Daemon@mx.example.net>",
        "postmaster@example.org",
        "Mail Delivery Subsystem <MAILER-DAEMON>",
    ],
)
def test_auto_reason_mailer_daemon(sender: str) -> None:
    raw = make(f"From: {sender}", "Subject: failure")
    assert parse(raw, LIMITS).auto_reason == "mailer-daemon"


def test_auto_reason_postmaster_lookalike_is_human() -> None:
    assert parse(make("From: postmaster-team@example.org"), LIMITS).auto_reason is None


@pytest.mark.parametrize("report_type", ["delivery-status", "disposition-notification"])
def test_auto_reason_multipart_report(report_type: str) -> None:
    raw = make(
        "From: someone@example.org",
        f'Content-Type: multipart/report; report-type="{report_type}"; boundary=r',
        body="--r\r\nContent-Type: text/plain\r\n\r\nreport\r\n--r--\r\n",
    )
    assert parse(raw, LIMITS).auto_reason == "delivery status report"


def test_multipart_report_of_other_type_is_not_a_bounce() -> None:
    raw = make(
        "From: someone@example.org",
        "Content-Type: multipart/report; report-type=feedback-report; boundary=r",
        body="--r\r\nContent-Type: text/plain\r\n\r\nreport\r\n--r--\r\n",
    )
    assert parse(raw, LIMITS).auto_reason is None


def test_auto_reason_delivery_status_part() -> None:
    raw = make(
        "From: someone@example.org",
        "Content-Type: multipart/mixed; boundary=r",
        body=(
            "--r\r\nContent-Type: text/plain\r\n\r\nfailed\r\n"
            "--r\r\nContent-Type: message/delivery-status\r\n\r\n"
            "Reporting-MTA: dns; mx.example.net\r\n\r\nAction: failed\r\n--r--\r\n"
        ),
    )
    parsed = parse(raw, LIMITS)
    assert parsed.auto_reason == "delivery status report"
    assert parsed.text == "failed"


def test_forwarded_bounce_is_not_automatic() -> None:
    raw = make(
        "From: maintainer@example.org",
        "Content-Type: multipart/mixed; boundary=r",
        body=(
            "--r\r\nContent-Type: text/plain\r\n\r\nlook at this bounce\r\n"
            "--r\r\nContent-Type: message/rfc822\r\n\r\n"
            "From: MAILER-DAEMON@x\r\nAuto-Submitted: auto-replied\r\n"
            "Content-Type: multipart/report; report-type=delivery-status; boundary=i\r\n\r\n"
            "--i\r\nContent-Type: message/delivery-status\r\n\r\nAction: failed\r\n--i--\r\n"
            "--r--\r\n"
        ),
    )
    parsed = parse(raw, LIMITS)
    assert parsed.auto_reason is None
    assert parsed.text == "look at this bounce"


# --- body text --------------------------------------------------------------------------------


def test_plain_message_text() -> None:
    parsed = parse(simple(body="/ack\r\n/severity high\r\n"), LIMITS)
    assert parsed.text == "/ack\n/severity high\n"
    assert parsed.text_is_first_part is True
    assert _described(parsed.attachments) == ()


def test_text_from_multipart_alternative() -> None:
    raw = make(
        "From: a@example.org",
        "Content-Type: multipart/alternative; boundary=alt",
        body=(
            "--alt\r\nContent-Type: text/html\r\n\r\n<p>/ack</p>\r\n"
            "--alt\r\nContent-Type: text/plain; charset=utf-8\r\n"
            "Content-Transfer-Encoding: quoted-printable\r\n\r\n/ack caf=C3=A9\r\n--alt--\r\n"
        ),
    )
    parsed = parse(raw, LIMITS)
    assert parsed.text == "/ack café"
    assert parsed.text_is_first_part is True
    assert _described(parsed.attachments) == ()  # the HTML alternative is text, not an attachment


def test_text_after_an_inline_image_is_not_the_first_part() -> None:
    raw = make(
        "From: a@example.org",
        "Content-Type: multipart/mixed; boundary=m",
        body=(
            "--m\r\nContent-Type: image/png\r\nContent-Transfer-Encoding: base64\r\n\r\n"
            "iVBORw0KGgo=\r\n--m\r\nContent-Type: text/plain\r\n\r\n/ack\r\n--m--\r\n"
        ),
    )
    parsed = parse(raw, LIMITS)
    assert parsed.text == "/ack"
    assert parsed.text_is_first_part is False
    assert _described(parsed.attachments) == (Attachment("", "image/png", 8),)


def test_forwarded_message_text_is_not_the_body() -> None:
    inner = (
        "From: original@example.com\r\nSubject: inner\r\n"
        "Content-Type: text/plain\r\n\r\nthe forwarded text\r\n"
    )
    raw = make(
        "From: a@example.org",
        "Content-Type: multipart/mixed; boundary=f",
        body=f"--f\r\nContent-Type: message/rfc822\r\n\r\n{inner}--f--\r\n",
    )
    parsed = parse(raw, LIMITS)
    assert parsed.text == ""
    assert parsed.text_is_first_part is False
    assert [a.content_type for a in parsed.attachments] == ["message/rfc822"]
    assert parsed.attachments[0].size > 0


def test_forwarded_message_then_text() -> None:
    raw = make(
        "From: a@example.org",
        "Content-Type: multipart/mixed; boundary=f",
        body=(
            "--f\r\nContent-Type: message/rfc822\r\n\r\nSubject: inner\r\n\r\ninner text\r\n"
            "--f\r\nContent-Type: text/plain\r\n\r\nouter text\r\n--f--\r\n"
        ),
    )
    parsed = parse(raw, LIMITS)
    assert parsed.text == "outer text"
    assert parsed.text_is_first_part is False


def test_text_attachment_is_not_the_body() -> None:
    raw = make(
        "From: a@example.org",
        "Content-Type: multipart/mixed; boundary=t",
        body=(
            "--t\r\nContent-Type: text/plain\r\nContent-Disposition: attachment; filename=log.txt"
            "\r\n\r\nlog\r\n--t\r\nContent-Type: text/plain\r\n\r\nreal text\r\n--t--\r\n"
        ),
    )
    parsed = parse(raw, LIMITS)
    assert parsed.text == "real text"
    assert _described(parsed.attachments) == (Attachment("log.txt", "text/plain", 3),)


def test_html_only_gives_its_text_but_never_the_first_part() -> None:
    raw = make("From: a@example.org", "Content-Type: text/html", body="<p>/ack</p>\r\n")
    parsed = parse(raw, LIMITS)
    assert parsed.text == "/ack"
    assert parsed.text_from_html is True
    # Commands are read only from a text/plain first part, never from converted HTML.
    assert parsed.text_is_first_part is False


@pytest.mark.parametrize(
    ("charset", "body", "expected"),
    [
        ("x-no-such-charset", "caf\xc3\xa9", "café"),
        ("unicode_escape", "\\x41", "\\x41"),
        ("base64", "abc", "abc"),
        ("utf-8", "caf\xe9", "caf\ufffd"),
        ("iso-8859-1", "caf\xe9", "café"),
        ("windows-1252", "\x93q\x94", "\u201cq\u201d"),
        ('"UTF-8"', "caf\xc3\xa9", "café"),
        ("", "caf\xe9", "café"),  # no charset, not UTF-8: windows-1252
        ("us-ascii", "caf\xc3\xa9", "café"),
    ],
)
def test_body_charsets(charset: str, body: str, expected: str) -> None:
    ctype = "Content-Type: text/plain" + (f"; charset={charset}" if charset else "")
    raw = make("From: a@example.org", ctype, body=body, charset="latin-1")
    assert parse(raw, LIMITS).text == expected


def test_base64_body_and_broken_base64() -> None:
    raw = make(
        "From: a@example.org",
        "Content-Type: text/plain; charset=utf-8",
        "Content-Transfer-Encoding: base64",
        body="L2Fjaw==\r\n",
    )
    assert parse(raw, LIMITS).text == "/ack"
    broken = raw.replace(b"L2Fjaw==", b"L2Fja!!w=*=x")
    parse_or_unsafe(broken)


def test_text_is_capped() -> None:
    limits = LimitsConfig(**{**LIMITS.__dict__, "max_text_chars": 10})
    for body in ("é" * 50, "€" * 11, "a" + "€" * 20):  # the byte cap may cut a character
        raw = simple("Content-Type: text/plain", body=body)
        assert parse(raw, limits).text == body[:10]


def test_line_endings_are_normalized() -> None:
    raw = b"From: a@example.org\r\n\r\none\r\ntwo\rthree\nfour"
    assert parse(raw, LIMITS).text == "one\ntwo\nthree\nfour"


# --- attachments ------------------------------------------------------------------------------


def test_attachments_listed_with_name_type_and_size() -> None:
    raw = make(
        "From: a@example.org",
        "Content-Type: multipart/mixed; boundary=a",
        body=(
            "--a\r\nContent-Type: text/plain\r\n\r\nsee attached\r\n"
            '--a\r\nContent-Type: Application/PDF; name="report.pdf"\r\n'
            "Content-Transfer-Encoding: base64\r\n\r\nJVBERi0xLjQK\r\n"
            "--a\r\nContent-Type: application/octet-stream\r\n"
            'Content-Disposition: attachment; filename="../../etc/passwd"\r\n\r\nroot\r\n'
            "--a\r\nContent-Type: image/png\r\n"
            "Content-Disposition: attachment; filename*=utf-8''%E2%82%AC%0Ax.png\r\n"
            "Content-Transfer-Encoding: base64\r\n\r\niVBORw0KGgo=\r\n"
            "--a\r\nContent-Type: application/zip\r\n"
            'Content-Disposition: attachment; filename="=?utf-8?q?a=0D=0Ab=5C..=5Cc.zip?="'
            "\r\n\r\nPK\r\n"
            "--a\r\nContent-Type: application/x-unnamed\r\n\r\n12345\r\n"
            f"--a\r\nContent-Type: text/plain; name={'n' * 300}.txt\r\n\r\nlong\r\n--a--\r\n"
        ),
    )
    parsed = parse(raw, LIMITS)
    assert parsed.text == "see attached"
    assert _described(parsed.attachments[:6]) == (
        Attachment("report.pdf", "application/pdf", 9),
        Attachment("passwd", "application/octet-stream", 4),
        Attachment("€ x.png", "image/png", 8),
        Attachment("c.zip", "application/zip", 2),
        Attachment("", "application/x-unnamed", 5),
        Attachment("n" * 196 + ".txt", "text/plain", 4),
    )


def test_bad_content_type_is_sanitized() -> None:
    raw = make(
        "From: a@example.org",
        "Content-Type: multipart/mixed; boundary=a",
        body=("--a\r\nContent-Type: appl\x01ication/x-\xe9vil; name=x\r\n\r\nx\r\n--a--\r\n"),
        charset="latin-1",
    )
    assert _described(parse(raw, LIMITS).attachments) == (
        Attachment("x", "application/octet-stream", 1),
    )


def test_undecodable_attachment_reports_raw_size() -> None:
    raw = make(
        "From: a@example.org",
        "Content-Type: multipart/mixed; boundary=a",
        body=(
            "--a\r\nContent-Type: application/octet-stream; name=u.bin\r\n"
            "Content-Transfer-Encoding: x-uuencode\r\n\r\nnot uuencoded at all\r\n--a--\r\n"
        ),
    )
    assert _described(parse(raw, LIMITS).attachments) == (
        Attachment("u.bin", "application/octet-stream", len("not uuencoded at all")),
    )


# --- the corpus of malformed messages ---------------------------------------------------------


def corpus_files() -> list[Path]:
    return sorted(CORPUS.glob("*.eml"))


def test_corpus_is_there() -> None:
    assert len(corpus_files()) >= 25


@pytest.mark.parametrize("path", corpus_files(), ids=lambda p: p.stem)
def test_corpus_parses_or_is_unsafe(path: Path) -> None:
    raw = path.read_bytes()
    parse_or_unsafe(raw, LIMITS)
    parse_or_unsafe(raw, TIGHT)


def corpus(name: str) -> ParsedMessage:
    parsed = parse_or_unsafe((CORPUS / f"{name}.eml").read_bytes())
    assert parsed is not None, name
    return parsed


def test_corpus_expectations() -> None:
    assert corpus("no_boundary").text == ""
    assert corpus("start_boundary_missing").attachments[0].content_type == "multipart/mixed"
    parsed = corpus("close_boundary_missing")
    assert parsed.text == "the report text"
    assert _described(parsed.attachments) == (Attachment("poc.bin", "application/octet-stream", 6),)
    assert corpus("double_boundary").text == "first"
    assert corpus("bad_base64").text.startswith("hello world")
    parsed = corpus("bogus_charset")
    assert parsed.text.startswith("Grüße aus Köln")
    assert parsed.subject.startswith("café and ")
    assert "=?utf-8?b?#####?=" in corpus("broken_encoded_words").subject
    parsed = corpus("latin1_headers")
    assert (parsed.subject, parsed.from_name) == ("Café crème: Sicherheitslücke", "Jürgen Müller")
    assert parsed.text == "Grüße"
    assert parsed.attachments[0].filename == "résumé.txt"
    parsed = corpus("nul_bytes")
    assert (parsed.subject, parsed.message_id) == ("a b c", "<nulid@example.org>")
    assert parsed.text.startswith("beforeafter")
    assert corpus("first_line_continuation").from_addr == "cont@example.org"
    assert "/ack" in corpus("no_header_separator").text
    assert corpus("misplaced_unixfrom").from_addr == "unix@example.org"
    parsed = corpus("dsn_bounce")
    assert parsed.auto_reason == "null return path"
    assert parsed.return_path == ""
    assert parsed.text.startswith("This is the mail system")
    assert [a.content_type for a in parsed.attachments] == [
        "message/delivery-status",
        "message/rfc822",
    ]
    parsed = corpus("digest")
    assert parsed.text == ""
    assert [a.content_type for a in parsed.attachments] == ["message/rfc822"] * 2
    assert [a.filename for a in corpus("rfc2231").attachments] == [
        "€ exploit.py",
        "été.pdf",
        "été.zip",
    ]
    assert corpus("uuencode").attachments[0].size == 3
    parsed = corpus("forwarded")
    assert (parsed.text, parsed.text_is_first_part) == ("forwarding the report below", True)
    assert [a.content_type for a in parsed.attachments] == ["message/rfc822"]
    parsed = corpus("header_injection")
    assert parsed.subject == "hello Bcc: victim@example.org"
    assert parsed.message_id == "<injected@example.org>"
    assert parsed.in_reply_to == ("<ab@example.org>", "<cd@example.org>")
    assert _described(parsed.attachments) == (Attachment("passwd", "application/octet-stream", 1),)
    assert parsed.authentication_results == (
        "mx.example.net; dkim=pass header.d=example.org; dmarc=pass",
    )
    assert corpus("bare_cr").text == "line one\nline two\n"
    parsed = corpus("weird_addresses")
    # Two authors in From: no single address to answer or trust.
    assert parsed.from_addr is None
    assert parsed.to_addrs == (
        "one@example.net",
        "two@example.net",
        "three@example.net",
        "four@example.net",
        "security@example.net",
    )
    assert corpus("invalid_content_types").text == "no slash: taken as text/plain"
    assert corpus("multipart_base64_cte").text == "plain"
    assert corpus("binary_body").attachments[0].size == 8
    parsed = corpus("html_only")
    assert (parsed.text, parsed.text_from_html, parsed.text_is_first_part) == ("/ack", True, False)
    assert corpus("long_subject").subject == "é" * 300
    assert corpus("rfc822_garbage").text == "see below"
    assert corpus("bad_dates").date is None
    parsed = corpus("nested_first_part")
    assert (parsed.text, parsed.text_is_first_part) == ("/ack\n/severity high", True)
    assert _described(parsed.attachments) == (Attachment("logo.png", "image/png", 8),)
    assert corpus("crlf_mixed_endings").text == "line\nline2"
    for name in ("no_headers", "empty"):
        with pytest.raises(UnsafeMessage):
            parse((CORPUS / f"{name}.eml").read_bytes(), LIMITS)


# --- CPython's own test corpus ----------------------------------------------------------------


def cpython_email_data() -> list[Path]:
    candidates = [
        Path(email.__file__).parent.parent / "test" / "test_email" / "data",
        Path(sysconfig.get_paths()["stdlib"]) / "test" / "test_email" / "data",
    ]
    for directory in candidates:
        if directory.is_dir():
            return [directory]
    return candidates


def test_cpython_email_corpus() -> None:
    found = cpython_email_data()
    files = sorted(found[0].glob("msg_*.txt")) if len(found) == 1 else []
    if not files:
        where = " or ".join(str(p) for p in found)
        pytest.skip(
            f"CPython's email test data (msg_*.txt) is not installed at {where}; "
            "tests/corpus covers the same kinds of breakage"
        )
    parsed = 0
    for path in files:
        raw = path.read_bytes()
        if parse_or_unsafe(raw, LIMITS) is not None:
            parsed += 1
        parse_or_unsafe(raw, TIGHT)
    assert parsed >= len(files) * 3 // 4  # nearly all of them are usable messages


# --- random and mutated input -----------------------------------------------------------------

TOKENS = [
    b"\r\n",
    b"\n",
    b"\r",
    b"\r\n\r\n",
    b"\x00",
    b"\xff",
    b"\xe9",
    b"\xc3",
    b"\x85",
    b" ",
    b"\t",
    b":",
    b";",
    b'"',
    b"\\",
    b"(",
    b")",
    b"<",
    b">",
    b"@",
    b",",
    b"=?",
    b"?=",
    b"=?utf-8?q?",
    b"=?utf-8?b?",
    b"=?x-bogus?q?=0D=0A?=",
    b"=0D=0A",
    b"--",
    b"--b\r\n",
    b"--b--\r\n",
    b"boundary=b",
    b"From: ",
    b"From x@y Mon",
    b"Subject: ",
    b"Content-Type: multipart/mixed; boundary=b\r\n",
    b"Content-Type: message/rfc822\r\n\r\n",
    b"Content-Type: message/delivery-status\r\n\r\n",
    b"Content-Type: text/plain; charset=",
    b"Content-Transfer-Encoding: base64\r\n",
    b"Content-Transfer-Encoding: quoted-printable\r\n",
    b"Content-Transfer-Encoding: x-uuencode\r\n\r\nbegin 644 f\r\n",
    b"Content-Disposition: attachment; filename*0*=utf-8''%E2%82",
    b"name=",
    b"Message-ID: <",
    b"References: <a@b> <",
    b"Auto-Submitted: ",
    b"Return-Path: <>",
    b"List-Id: ",
    b"Date: ",
]


def random_message(rng: random.Random) -> bytes:
    if rng.random() < 0.3:
        return rng.randbytes(rng.randrange(0, 400))
    return b"".join(
        rng.choice(TOKENS) if rng.random() < 0.6 else rng.randbytes(rng.randrange(1, 8))
        for _ in range(rng.randrange(0, 120))
    )


def mutate(raw: bytes, rng: random.Random) -> bytes:
    data = bytearray(raw)
    for _ in range(rng.randrange(1, 8)):
        op = rng.randrange(6)
        pos = rng.randrange(len(data) + 1)
        if op == 0 and data:
            data[min(pos, len(data) - 1)] = rng.randrange(256)
        elif op == 1:
            data[pos:pos] = rng.choice(TOKENS)
        elif op == 2:
            del data[pos : pos + rng.randrange(1, 40)]
        elif op == 3:
            chunk = data[pos : pos + rng.randrange(1, 200)]
            data[pos:pos] = chunk * rng.randrange(1, 4)
        elif op == 4:
            del data[pos:]
        else:
            data[pos:pos] = rng.randbytes(rng.randrange(1, 16))
    return bytes(data)


SEEDS = [
    simple(),
    simple("Content-Type: text/plain; charset=iso-8859-1", body="caf\xe9\r\n"),
    nested_multipart(4),
    make(
        "From: =?utf-8?q?J=C3=BCrgen?= <j@example.de>",
        'To: "a, b" <a@example.org>, c@example.org (c)',
        "Subject: =?utf-8?b?w6nDqQ==?= =?utf-8?q?x?=",
        "Content-Type: multipart/mixed; boundary=b",
        body=(
            "--b\r\nContent-Type: multipart/alternative; boundary=c\r\n\r\n"
            "--c\r\nContent-Type: text/plain\r\n\r\n/ack\r\n--c\r\nContent-Type: text/html\r\n\r\n"
            '<p>x</p>\r\n--c--\r\n--b\r\nContent-Type: application/pdf; name="r.pdf"\r\n'
            "Content-Transfer-Encoding: base64\r\n\r\nJVBERi0xLjQK\r\n"
            "--b\r\nContent-Type: message/rfc822\r\n\r\nSubject: inner\r\n\r\ninner\r\n--b--\r\n"
        ),
    ),
]


def test_random_bytes_never_raise_anything_but_unsafe() -> None:
    rng = random.Random(20260302)
    for _ in range(3000):
        raw = random_message(rng)
        parse_or_unsafe(raw, LIMITS)
        parse_or_unsafe(raw, TIGHT)


def test_mutated_messages_never_raise_anything_but_unsafe() -> None:
    rng = random.Random(4242)
    seeds = SEEDS + [path.read_bytes() for path in corpus_files()]
    seeds = [seed for seed in seeds if seed]
    for _ in range(3000):
        raw = mutate(rng.choice(seeds), rng)
        parse_or_unsafe(raw, LIMITS)
        parse_or_unsafe(raw, TIGHT)


def test_injected_line_breaks_never_reach_header_fields() -> None:
    rng = random.Random(7)
    breakers = ["\r", "\n", "\r\n", "\x85", "\u2028", "\x00", "=0D=0A", "=0A", "=E2=80=A8"]
    for _ in range(500):
        word = "".join(
            rng.choice(breakers) if rng.random() < 0.3 else rng.choice("ab:@<> ") for _ in range(20)
        )
        encoded = "=?utf-8?q?" + word.replace(" ", "_").replace("?", "=3F") + "?="
        raw = make(
            f"From: {encoded} <a@example.org>",
            f"Subject: {encoded}",
            f"To: {encoded} <b@example.org>",
            f"Message-ID: <{word}@x>",
            "Content-Type: multipart/mixed; boundary=b",
            body=(f'--b\r\nContent-Type: application/pdf; name="{encoded}"\r\n\r\nx\r\n--b--\r\n'),
        )
        parse_or_unsafe(raw, LIMITS)


def test_several_authors_give_no_from_address() -> None:
    two_fields = b"From: a@x.example\r\nFrom: b@y.example\r\nSubject: s\r\n\r\nbody\r\n"
    assert parse(two_fields, LIMITS).from_addr is None
    two_boxes = b"From: a@x.example, b@y.example\r\nSubject: s\r\n\r\nbody\r\n"
    assert parse(two_boxes, LIMITS).from_addr is None
    same_twice = b"From: A <a@x.example>, a@x.example\r\nSubject: s\r\n\r\nbody\r\n"
    assert parse(same_twice, LIMITS).from_addr == "a@x.example"
