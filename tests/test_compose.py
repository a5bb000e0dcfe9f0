"""Composing outgoing mail: what a reader decodes is exactly what triaged meant to say."""

from __future__ import annotations

import email
import email.policy
from datetime import UTC, datetime
from pathlib import Path

import pytest
from helpers import make_config

from triaged.core.text import clean_header_text
from triaged.mail.compose import Composer, _body

NOW = datetime(2026, 11, 22, 14, 0, tzinfo=UTC)
HOSTILE_SUBJECTS = [
    "Überlauf im Parser – ça déborde",
    "=?utf-8?q?looks_encoded?= but is plain text",
    "日本語のテキスト " * 12,
    'mixed ascii and 😀 emoji, (comments) <angles> "quotes" \\ back',
    "x" * 120 + " tail",
]


def _build(tmp_path: Path, subject: str, body: str, refs: tuple[str, ...] = ()) -> bytes:
    composer = Composer(make_config(tmp_path))
    out = composer.build(
        kind="notify",
        to="alice@example.org",
        subject=subject,
        template="receipt.txt",
        context={"tag": "[security report #abcdefgh]", "promises": [body]},
        now=NOW,
        report_id="abcdefgh",
        in_reply_to=refs[-1] if refs else None,
        references=refs,
        auto="auto-generated",
    )
    return out.raw


@pytest.mark.parametrize("subject", HOSTILE_SUBJECTS)
def test_subject_decodes_to_exactly_the_text_and_lines_stay_short(
    tmp_path: Path, subject: str
) -> None:
    raw = _build(tmp_path, subject, "short")
    msg = email.message_from_bytes(raw, policy=email.policy.default)
    assert str(msg["Subject"]) == f"[security report #abcdefgh] {clean_header_text(subject, 250)}"
    head = raw.split(b"\r\n\r\n", 1)[0]
    assert all(len(line) <= 78 for line in head.split(b"\r\n")), head
    assert b"\n" not in raw.replace(b"\r\n", b"")


def test_overlong_references_from_a_hostile_sender_keep_lines_legal(tmp_path: Path) -> None:
    refs = ("<" + "a" * 990 + "@x>", "<short@example.net>")
    raw = _build(tmp_path, "s", "short", refs)
    msg = email.message_from_bytes(raw, policy=email.policy.default)
    assert str(msg["References"]) == " ".join(refs)
    assert str(msg["In-Reply-To"]) == refs[-1]
    assert max(len(line) for line in raw.split(b"\r\n")) <= 78


@pytest.mark.parametrize(
    ("text", "encoding"),
    [
        ("plain and short\n", "7bit"),
        ("déjà vu, short lines\n", "8bit"),
        ("long line " * 30 + "\nvoilà\n", "quoted-printable"),
        ("日本語のテキスト" * 20 + "\n", "base64"),
    ],
)
def test_body_encoding_is_chosen_as_the_stdlib_does_and_decodes_back(
    tmp_path: Path, text: str, encoding: str
) -> None:
    cte, body = _body(text)
    assert cte == encoding
    raw = (
        f'Content-Type: text/plain; charset="utf-8"\r\nContent-Transfer-Encoding: {cte}\r\n\r\n'
    ).encode() + body
    msg = email.message_from_bytes(raw, policy=email.policy.default)
    assert msg.get_content().replace("\r\n", "\n") == text
    assert not msg.defects
    # Through build() too (the receipt's own lines are longer than 78: quoted-printable).
    built = email.message_from_bytes(_build(tmp_path, "s", text), policy=email.policy.default)
    assert text.rstrip("\n") in built.get_content().replace("\r\n", "\n")
