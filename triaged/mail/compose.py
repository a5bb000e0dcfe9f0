"""Building the mail triaged sends: templates in, complete RFC 5322 bytes out.

Sender text only ever reaches a template as a variable (data, never template source), and every
header value passes `clean_header_text`, so nothing a sender wrote can add a header.

The message is written directly (one text/plain part, UTF-8): the stdlib's EmailMessage with
policy SMTP produces the same headers and body encodings but parses every header it is given
and refolds it again on output, which made composing the largest cost of intake (bench/).
"""

from __future__ import annotations

import base64
import binascii
import secrets
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime
from email import message_from_bytes
from email.headerregistry import Address
from email.message import EmailMessage
from email.policy import SMTP, default
from email.utils import format_datetime
from pathlib import Path
from typing import Any
from urllib.parse import quote

import jinja2
from jinja2.sandbox import ImmutableSandboxedEnvironment

from triaged.config import Config
from triaged.core.ids import new_message_id, tag
from triaged.core.text import clean_header_text

MAX_LINE = 78  # RFC 5322's recommended line length, as the stdlib's policy folds
_WORD_BYTES = 39  # UTF-8 bytes per encoded word: "=?utf-8?b?" + 52 + "?=" is 64 characters


@dataclass(frozen=True)
class Outgoing:
    """One complete message for one recipient, ready for the outbox."""

    message_id: str
    kind: str
    recipient: str
    envelope_from: str
    raw: bytes
    report_id: str | None


def template_environment(directory: Path | None) -> jinja2.Environment:
    loaders: list[jinja2.BaseLoader] = []
    if directory is not None:
        loaders.append(jinja2.FileSystemLoader(str(directory)))
    loaders.append(jinja2.PackageLoader("triaged", "templates"))
    return ImmutableSandboxedEnvironment(
        loader=jinja2.ChoiceLoader(loaders),
        autoescape=False,
        undefined=jinja2.StrictUndefined,
        keep_trailing_newline=True,
        trim_blocks=True,
        lstrip_blocks=True,
    )


# --- headers -------------------------------------------------------------------------------


def _encoded_words(text: str) -> list[str]:
    """RFC 2047 B-encoded words for `text`, never splitting a character across two words."""
    words: list[str] = []
    chunk = b""
    for char in text:
        data = char.encode("utf-8", "replace")
        if len(chunk) + len(data) > _WORD_BYTES:
            words.append(f"=?utf-8?b?{base64.b64encode(chunk).decode('ascii')}?=")
            chunk = b""
        chunk += data
    if chunk or not words:
        words.append(f"=?utf-8?b?{base64.b64encode(chunk).decode('ascii')}?=")
    return words


def _needs_encoding(word: str) -> bool:
    # "=?" in plain text would be decoded by the reader as if it were an encoded word; a word
    # too long for a folded line is split across encoded words, as the stdlib does, so that no
    # line of a hostile sender's References (ids up to 998 characters) passes 998.
    return not word.isascii() or "=?" in word or len(word) >= MAX_LINE


def _unstructured(value: str) -> list[str]:
    """The value as tokens to be joined by single spaces: ASCII words as they are, each run of
    words that need encoding as encoded words (with the spaces inside the run), so that a
    reader decodes exactly `value`."""
    tokens: list[str] = []
    run: list[str] = []
    for word in value.split(" "):
        if _needs_encoding(word):
            run.append(word)
            continue
        if run:
            tokens += _encoded_words(" ".join(run))
            run = []
        tokens.append(word)
    if run:
        tokens += _encoded_words(" ".join(run))
    return tokens


def _field(name: str, tokens: list[str]) -> str:
    """One header field, folded (CRLF before a space) so lines stay within MAX_LINE where a
    space allows it; unfolding gives back the tokens joined by single spaces."""
    line = f"{name}:"
    lines: list[str] = []
    first = True
    for token in tokens:
        if not first and len(line) + 1 + len(token) > MAX_LINE:
            lines.append(line)
            line = ""
        line += " " + token
        first = False
    lines.append(line)
    text = "\r\n".join(lines)
    if "\n" in text.replace("\r\n ", "") or "\r" in text.replace("\r\n ", ""):
        raise ValueError(f"a line break in the value of {name}")  # never: values are cleaned
    return text


def _ascii(value: str, what: str) -> str:
    value = clean_header_text(value, 998)
    if not value.isascii():
        raise ValueError(f"{what} must be ASCII: {value!r}")
    return value


# --- the body ------------------------------------------------------------------------------


def _body(text: str) -> tuple[str, bytes]:
    """(Content-Transfer-Encoding, body with CRLF line ends), chosen as the stdlib chooses
    for UTF-8 text: as it is (7bit or 8bit) when every line fits in MAX_LINE, else
    quoted-printable or base64, whichever is shorter for the first ten lines."""
    lines = text.encode("utf-8", "replace").splitlines()
    data = b"\r\n".join(lines) + b"\r\n"
    if max(map(len, lines), default=0) <= MAX_LINE:
        return ("7bit" if data.isascii() else "8bit"), data
    sniff = b"\r\n".join(lines[:10]) + b"\r\n"
    if len(binascii.b2a_qp(sniff, istext=True)) > len(binascii.b2a_base64(sniff)):
        return "base64", base64.encodebytes(data).replace(b"\n", b"\r\n")
    # The text's line ends are CRLF, so the encoder writes its soft line breaks with CRLF too.
    return "quoted-printable", binascii.b2a_qp(data, istext=True)


def _filename_param(name: str) -> str:
    """A Content-Disposition filename parameter for any name (RFC 2231 when not plain ASCII)."""
    name = clean_header_text(name, 200) or "attachment"
    if name.isascii() and not any(char in name for char in '"\\'):
        return f'filename="{name}"'
    return "filename*=utf-8''" + quote(name, safe="")


def _mixed(
    boundary: str, text_fields: list[str], text: bytes, attachments: Sequence[tuple[str, bytes]]
) -> bytes:
    """A multipart/mixed body: the text part, then each attachment in base64."""
    delimiter = f"--{boundary}\r\n".encode("ascii")
    parts = [delimiter, ("\r\n".join(text_fields) + "\r\n\r\n").encode("ascii"), text]
    for name, data in attachments:
        head = (
            "Content-Type: application/octet-stream\r\n"
            f"Content-Disposition: attachment; {_filename_param(name)}\r\n"
            "Content-Transfer-Encoding: base64\r\n\r\n"
        )
        encoded = base64.encodebytes(data).replace(b"\n", b"\r\n")
        parts += [b"\r\n", delimiter, head.encode("ascii"), encoded]
    parts.append(f"\r\n--{boundary}--\r\n".encode("ascii"))
    return b"".join(parts)


class Composer:
    def __init__(self, config: Config) -> None:
        self.config = config
        self.env = template_environment(config.templates_dir)
        self.domain = config.project.address.rpartition("@")[2]
        # The same for every message: folded once, by the stdlib (quoting, encoded words).
        project = config.project
        sender = Address(display_name=f"{project.name} security", addr_spec=project.address)
        head = EmailMessage(policy=SMTP)
        head["From"] = sender
        self._from = SMTP.fold("From", head["From"]).rstrip("\r\n")

    def render(self, template: str, **context: Any) -> str:
        context.setdefault("project", self.config.project)
        return self.env.get_template(template).render(**context)

    def when(self, moment: datetime) -> str:
        """A due date as people read it: "Tuesday 24 November 2026, 14:00 UTC"."""
        local = moment.astimezone(self.config.project.timezone)
        return local.strftime("%A %d %B %Y, %H:%M %Z")

    def build(
        self,
        *,
        kind: str,
        to: str,
        subject: str,
        template: str,
        context: dict[str, Any],
        now: datetime,
        report_id: str | None = None,
        in_reply_to: str | None = None,
        references: tuple[str, ...] = (),
        auto: str | None = None,
        reply_to: str | None = None,
        headers: Mapping[str, str] | None = None,
        attachments: Sequence[tuple[str, bytes]] = (),
    ) -> Outgoing:
        """`auto` is an RFC 3834 Auto-Submitted value ("auto-replied", "auto-generated");
        auto-replies go out with an empty envelope sender so nothing bounces back to us.
        `headers`: more fields of triaged's own (names and ASCII values, e.g. the canary's).
        `attachments` (file name, bytes) make it multipart/mixed: the text, then each file as
        application/octet-stream, so that no mail client renders or runs one."""
        project = self.config.project
        message_id = new_message_id(self.domain)
        line = clean_header_text(subject, 250)
        fields = [
            self._from,
            _field("To", [_ascii(to, "To")]),
            _field("Subject", _unstructured(f"{tag(report_id)} {line}" if report_id else line)),
            _field("Date", [format_datetime(now)]),
            _field("Message-ID", [message_id]),
        ]
        if in_reply_to:
            fields.append(_field("In-Reply-To", _unstructured(clean_header_text(in_reply_to, 998))))
        refs = [clean_header_text(r, 998) for r in (*references, in_reply_to) if r]
        if refs:
            # Keep the thread intact without letting a sender grow our headers without bound.
            fields.append(_field("References", _unstructured(" ".join(dict.fromkeys(refs[-20:])))))
        if reply_to:
            fields.append(_field("Reply-To", [_ascii(reply_to, "Reply-To")]))
        if auto:
            fields.append(_field("Auto-Submitted", [_ascii(auto, "Auto-Submitted")]))
        fields.append("X-Auto-Response-Suppress: All")
        if report_id:
            fields.append(_field("X-Triaged-Report", [_ascii(report_id, "X-Triaged-Report")]))
        for name, value in (headers or {}).items():
            fields.append(_field(_ascii(name, "a header name"), [_ascii(value, name)]))
        cte, body = _body(self.render(template, report_id=report_id, **context))
        text_fields = [
            'Content-Type: text/plain; charset="utf-8"',
            f"Content-Transfer-Encoding: {cte}",
        ]
        if attachments:
            boundary = f"=_triaged_{secrets.token_hex(16)}"
            fields += [f'Content-Type: multipart/mixed; boundary="{boundary}"', "MIME-Version: 1.0"]
            body = _mixed(boundary, text_fields, body, attachments)
        else:
            fields += [*text_fields, "MIME-Version: 1.0"]
        head = ("\r\n".join(fields) + "\r\n\r\n").encode("ascii")
        return Outgoing(
            message_id=message_id,
            kind=kind,
            recipient=to,
            envelope_from="" if auto == "auto-replied" else project.address,
            raw=head + body,
            report_id=report_id,
        )

    def to_each(
        self,
        recipients: Iterable[str],
        *,
        kind: str,
        subject: str,
        template: str,
        context: dict[str, Any],
        now: datetime,
        report_id: str | None = None,
        reply_to: Callable[[str], str | None] | None = None,
        personal: Callable[[str], dict[str, Any]] | None = None,
        attachments: Sequence[tuple[str, bytes]] = (),
    ) -> list[Outgoing]:
        """One notice to each of `recipients` (the maintainers, the team address), one mail
        each, auto-generated (RFC 3834): `reply_to(address)` gives each one's Reply-To (their
        reply token), `personal(address)` adds template variables of their own."""
        return [
            self.build(
                kind=kind,
                to=address,
                subject=subject,
                template=template,
                context=context if personal is None else {**context, **personal(address)},
                now=now,
                report_id=report_id,
                auto="auto-generated",
                reply_to=None if reply_to is None else reply_to(address),
                attachments=attachments,
            )
            for address in recipients
        ]


def rewrite_text(raw: bytes, change: Callable[[str], str]) -> bytes:
    """`raw`, a message `Composer.build` wrote, with `change` applied to its Subject and to the
    text of each text/plain part that is not an attachment; the same bytes when nothing
    changes. Rare (see triaged/mail/sealing.py), so the stdlib writes the changed message."""
    msg = message_from_bytes(raw, policy=default)
    changed = False
    subject = str(msg.get("Subject", ""))
    new = change(subject)
    if new != subject:
        msg.replace_header("Subject", clean_header_text(new, 998))
        changed = True
    for part in msg.walk():
        if part.get_content_type() != "text/plain" or part.is_attachment():
            continue
        assert isinstance(part, EmailMessage)
        text = part.get_content()
        new = change(text)
        if new != text:
            part.set_content(new, charset="utf-8")
            changed = True
    return msg.as_bytes(policy=SMTP) if changed else raw
