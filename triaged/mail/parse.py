"""Parsing one raw message into the few fields triaged acts on: bytes in, fields out.

Everything here treats the message as hostile. `parse` checks the size caps before the parser
sees a byte, parses once with the stdlib's tolerant compat32 parser (with the MIME depth and
part count enforced while it runs, and a linear boundary lookup), walks the tree once without
recursion, and degrades rather than fails on broken headers, bogus charsets, NUL bytes or bad
encodings. The only exception that leaves `parse` is `UnsafeMessage`: for a message that breaks
a cap or cannot be read at all, which intake quarantines.

Every str field that could end up in a header of a mail triaged sends is single-line and free
of control characters (`clean_header_text`). No I/O, no logging.
"""

from __future__ import annotations

import binascii
import codecs
import encodings
import functools
import hashlib
import re
import struct
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import UTC, datetime
from email.feedparser import BytesFeedParser
from email.generator import BytesGenerator
from email.message import Message
from email.policy import Policy, compat32
from email.utils import parsedate_to_datetime
from email.utils import unquote as _unquote_param
from encodings.aliases import aliases as _CODEC_ALIASES
from io import BytesIO
from typing import TYPE_CHECKING, Any, cast

from triaged.config import LimitsConfig
from triaged.core.protection import OpenPGPStatus
from triaged.core.text import (
    UNSAFE_CHARS,
    address_list,
    clean_body_text,
    clean_header_text,
    parse_address,
)
from triaged.errors import UnsafeMessage

__all__ = [
    "Attachment",
    "ListHeaders",
    "ParsedMessage",
    "attachment_data",
    "clean_body_text",
    "clean_header_text",
    "parse",
]

MAX_SUBJECT = 300
MAX_NAME = 300
MAX_FILENAME = 200
MAX_MESSAGE_ID = 998
MAX_REFERENCES = 100
MAX_BOUNDARY = 200  # RFC 2046 says 70
MAX_PARAMS_CHARS = 16384  # of a Content-Type or Content-Disposition value
MAX_AUTH_RESULTS = 8192  # an Authentication-Results value is long; it is sanitized, not cut short
MAX_FIELD = 998  # of one header value in `fields`


@dataclass(frozen=True)
class Attachment:
    filename: str  # sanitized (no path separators, no control chars, <= 200 chars), "" if none
    content_type: str  # e.g. "application/pdf", lowercased; "application/octet-stream" if bogus
    # The size and SHA-256 (hex) of the attachment's bytes (`attachment_data`): the decoded
    # payload, or the raw payload when it cannot be decoded; for a message/* part (a forwarded
    # message, a delivery-status report) everything inside it, as a file of its own.
    size: int
    sha256: str = ""


@dataclass(frozen=True)
class ListHeaders:
    """What a mailing list in front of the mailbox may have written (read only for the lists
    named in `mailbox.own_lists`, by triaged.intake.lists)."""

    list_id: str  # the identifier in List-Id, lowercased ("security.example.org")
    post: str | None  # the address in List-Post (<mailto:...>), lowercased
    # The message's auto_reason when the headers a list adds (List-*, "Precedence: list") do
    # not count.
    auto_reason: str | None
    # (address, display name) of X-Original-From and of Reply-To, each only when it names
    # exactly one valid address.
    original_from: tuple[str, str] | None
    reply_to: tuple[str, str] | None
    # The first of X-Original-From and Reply-To that is present but names no single
    # well-formed address, as written (sanitized, not decoded); "" when there is none.
    unreadable_author: str


@dataclass(frozen=True)
class ParsedMessage:
    message_id: str | None  # "<...>" form, sanitized, <= 998 chars; None if absent or garbage
    in_reply_to: tuple[str, ...]  # message-ids in In-Reply-To, "<...>" form
    references: tuple[str, ...]  # message-ids in References, the last 100
    # The one author's address, lowercased (core.text.parse_address); None unless the From
    # field names exactly one well-formed address.
    from_addr: str | None
    from_name: str  # its display name, decoded and sanitized ("" if none)
    # The From field as written (not decoded), unfolded and sanitized, <= 300 chars: what the
    # maintainers are shown when from_addr is None. "" if there is none.
    from_text: str
    to_addrs: tuple[str, ...]  # addr-specs of To, Cc and Delivered-To, lowercased, no repeats
    subject: str  # RFC 2047-decoded, sanitized single line, <= 300 chars
    date: datetime | None  # aware ("-0000" is taken as UTC); None if absent or garbage
    auto_reason: str | None  # why this is automatic mail (RFC 3834 and practice), else None
    # The first text/plain part that is not an attachment nor inside a message/* part, decoded
    # (unknown charset: UTF-8 with replacement), NULs removed, line ends as "\n", capped at
    # limits.max_text_chars. When there is no such part, or it holds only white space: the
    # first such text/html part converted to text (`text_from_html`); else "".
    text: str
    # True when `text` is the first leaf reached through the first child of every container
    # (or any child of a multipart/alternative on that chain): where commands are read.
    text_is_first_part: bool
    # Every leaf that is an attachment (disposition "attachment", or a file name without
    # "inline") or is not text/*, and every message/* part; not containers, not the body.
    attachments: tuple[Attachment, ...]
    authentication_results: tuple[str, ...]  # raw values, unfolded and sanitized, in order
    # The first Return-Path: "" for the null path "<>", its address lowercased, else its
    # sanitized text; None when absent.
    return_path: str | None
    # The messages a read receipt says it is about (Original-Message-ID of its disposition
    # notification part), "<...>" form; () for anything else.
    about: tuple[str, ...]
    # True when `text` was converted from HTML (triaged.mail.htmltext): there was no usable
    # text/plain part. Commands are never read from it.
    text_from_html: bool = False
    # The List-Id and what a list may have rewritten, when the message has a List-Id.
    mailing_list: ListHeaders | None = None
    # How the message was protected, set by intake after `triaged.mail.openpgp` opened it;
    # None for mail that was neither encrypted nor signed (and always None from `parse`).
    openpgp: OpenPGPStatus | None = None
    # Every top-level header field as (name lowercased, value unfolded and sanitized, at most
    # 998 characters, encoded words left as they are), in order: for rules on any header,
    # such as the spam verdicts of [intake].
    fields: tuple[tuple[str, str], ...] = ()

    def values(self, name: str) -> list[str]:
        """The values of every field named `name` (any case), in order."""
        key = name.lower()
        return [value for field, value in self.fields if field == key]

    # The first X-Triaged-Canary field, sanitized: a canary probe's token, if it is one (only
    # triaged.mail.auth.canary_probe can tell).
    canary: str | None = None


# --- decoding header text ------------------------------------------------------------------


def _text(value: str) -> str:
    """A raw header value as the parser left it (8-bit bytes as surrogates) -> real text.

    Raw 8-bit bytes are read as UTF-8 when they are valid UTF-8, else as windows-1252 (a
    superset of latin-1 for text).
    """
    if value.isascii():
        return value
    try:
        data = value.encode("ascii", "surrogateescape")
    except UnicodeEncodeError:
        return value  # already text (not from the bytes parser)
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError:
        return data.decode("cp1252", "replace")


def _unfold(value: str) -> str:
    return value.replace("\r\n", "").replace("\n", "").replace("\r", "")


# --- charsets ---------------------------------------------------------------------------------

# Only names Python knows are looked up: looking up arbitrary names grows the codec registry's
# cache of misses without bound, and hostile mail can carry any number of made-up charsets.
_KNOWN_CODECS = (
    frozenset(_CODEC_ALIASES)
    | frozenset(_CODEC_ALIASES.values())
    | frozenset(
        (
            "cp1006",
            "cp720",
            "cp737",
            "cp856",
            "cp874",
            "cp875",
            "koi8_t",
            "koi8_u",
            "mac_arabic",
            "mac_croatian",
            "mac_farsi",
            "mac_romanian",
            "palmos",
            "utf_8_sig",
        )
    )
)
_EXTRA_ALIASES = {
    "windows_874": "cp874",
    "x_mac_roman": "mac_roman",
    "x_sjis": "shift_jis",
    "x_euc_jp": "euc_jp",
    "unknown_8bit": "utf_8",
    "x_unknown": "utf_8",
}
# Never decode with these, whatever a message asks for.
_REFUSED_CODECS = frozenset(
    ("unicode_escape", "raw_unicode_escape", "idna", "punycode", "undefined", "mbcs", "oem")
)


@functools.cache  # keys come from _KNOWN_CODECS: bounded
def _lookup_codec(name: str) -> str:
    try:
        info = codecs.lookup(name)
    except LookupError:
        return "utf-8"
    if not getattr(info, "_is_text_encoding", True):
        return "utf-8"
    if encodings.normalize_encoding(info.name).replace("-", "_") in _REFUSED_CODECS:
        return "utf-8"
    return info.name


def _codec(charset: str | None) -> str:
    """A Python codec name for a MIME charset; UTF-8 for anything unknown, bogus or unsafe."""
    if not charset:
        return "utf-8"
    name = charset.strip().strip("\"'").lower()
    if not name or len(name) > 40 or not name.isascii():
        return "utf-8"
    norm = encodings.normalize_encoding(name)
    norm = _EXTRA_ALIASES.get(norm, norm)
    if norm in _REFUSED_CODECS:
        return "utf-8"
    if norm not in _KNOWN_CODECS:
        norm = norm.replace(".", "_")
        if norm not in _KNOWN_CODECS:
            return "utf-8"
    codec = _lookup_codec(norm)
    # US-ASCII text with 8-bit bytes in it is nearly always UTF-8; UTF-8 is a superset.
    return "utf-8" if codec == "ascii" else codec


def _decode_bytes(data: bytes, charset: str | None) -> str:
    try:
        return data.decode(_codec(charset), "replace")
    except (LookupError, UnicodeError, ValueError, TypeError):
        return data.decode("utf-8", "replace")


def _decode_text(data: bytes, charset: str | None, truncated: bool = False) -> str:
    """A text part's payload: its charset, or for none / US-ASCII, UTF-8 if it is valid UTF-8
    and windows-1252 otherwise (8-bit text labelled as nothing is usually one of the two)."""
    label = (charset or "").strip().strip("\"'").lower()
    if label not in ("", "us-ascii", "ascii"):
        return _decode_bytes(data, charset)
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError as exc:
        if truncated and exc.reason == "unexpected end of data":  # cut short by the cap
            return data.decode("utf-8", "replace")
        return data.decode("cp1252", "replace")


# --- RFC 2047 encoded words -------------------------------------------------------------------

# Bounded and linear: no part of an encoded word may contain "?" or whitespace.
_ENCODED_WORD = re.compile(r"=\?([^?\s]{1,75})\?([BbQq])\?([^?\s]*)\?=")


def _decode_word(encoding: str, payload: str) -> bytes | None:
    if not payload.isascii():
        return None
    try:
        if encoding in "Qq":
            return binascii.a2b_qp(payload.encode("ascii"), header=True)
        missing = -len(payload) % 4
        if missing == 3:
            return None
        return binascii.a2b_base64(payload + "=" * missing)
    except (binascii.Error, ValueError):
        return None


def _decode_words(value: str) -> str:
    """Decodes the RFC 2047 encoded words of an unfolded header value; never raises.

    Whitespace between two encoded words is dropped, adjacent words in the same charset are
    joined before decoding (a character may be split across words), an unknown charset
    decodes as UTF-8 with replacement, and a broken word is left as it is.
    """
    if "=?" not in value:
        return value
    out: list[str] = []
    pending: list[bytes] = []
    pending_charset = ""
    pos = 0
    previous_was_word = False

    def flush() -> None:
        if pending:
            out.append(_decode_bytes(b"".join(pending), pending_charset))
            pending.clear()

    for match in _ENCODED_WORD.finditer(value):
        between = value[pos : match.start()]
        charset, encoding, payload = match.groups()
        charset = charset.split("*", 1)[0].lower()  # RFC 2231 language suffix
        data = _decode_word(encoding, payload)
        pos = match.end()
        if data is None:
            flush()
            out.append(between + match.group())
            previous_was_word = False
            continue
        if not (previous_was_word and not between.strip()):
            flush()
            out.append(between)
        elif pending and charset != pending_charset:
            flush()
        pending.append(data)
        pending_charset = charset
        previous_was_word = True
    flush()
    out.append(value[pos:])
    return "".join(out)


def _header_text(raw: str, max_len: int, *, decode: bool = True) -> str:
    """A raw header value -> decoded, sanitized single line; degrades instead of failing."""
    try:
        text = _unfold(_text(raw))
        if decode:
            text = _decode_words(text)
        return clean_header_text(text, max_len)
    except Exception:
        return clean_header_text(raw.encode("utf-8", "replace").decode("utf-8", "replace"), max_len)


# --- MIME parameters (linear; the stdlib's parameter splitting is quadratic) -------------------

# One parameter: runs of plain characters, quoted strings (to their closing quote, or the end),
# and backslash escapes. The alternatives start with different characters: no backtracking.
_PARAM_PIECE = re.compile(r'(?:[^";\\]+|"(?:[^"\\]|\\.)*"?|\\.?)*', re.DOTALL)


def _split_params(value: str) -> list[str]:
    """Splits a header value on the semicolons that are not inside a quoted string.

    Only the first MAX_PARAMS_CHARS characters count: nothing legitimate is longer, and the
    parser asks for the boundary of every multipart part.
    """
    value = value[:MAX_PARAMS_CHARS]
    if '"' not in value and "\\" not in value:
        return value.split(";")
    pieces: list[str] = []
    pos = 0
    while True:
        match = _PARAM_PIECE.match(value, pos)
        end = match.end() if match else len(value)
        pieces.append(value[pos:end])
        if end >= len(value):
            return pieces
        pos = end + 1


def content_params(value: str) -> tuple[str, dict[str, str]]:
    """("main value" lowercased, {parameter name lowercased: raw value}); first one wins."""
    pieces = _split_params(value)
    params: dict[str, str] = {}
    for piece in pieces[1:]:
        name, sep, raw = piece.partition("=")
        if sep:
            params.setdefault(name.strip().lower(), raw.strip())
    return pieces[0].strip().lower(), params


def _pct_decode(value: str) -> bytes:
    try:
        data = value.encode("ascii", "surrogateescape")
    except UnicodeEncodeError:
        data = value.encode("utf-8", "replace")
    return re.sub(rb"%([0-9A-Fa-f]{2})", lambda m: bytes((int(m.group(1), 16),)), data)


def content_param(params: dict[str, str], key: str) -> str | None:
    """A parameter's value, unquoted, with RFC 2231 extended and continued values decoded."""
    if key in params:
        return _unquote_param(params[key])
    extended = params.get(key + "*")
    if extended is not None:
        charset, _, rest = _unquote_param(extended).partition("'")
        _, _, text = rest.partition("'")
        return _decode_bytes(_pct_decode(text), charset)
    if key + "*0" not in params and key + "*0*" not in params:
        return None
    chunks: list[bytes] = []
    charset = ""
    for index in range(100):
        plain = params.get(f"{key}*{index}")
        if plain is not None:
            chunks.append(_unquote_param(plain).encode("utf-8", "surrogateescape"))
            continue
        piece = params.get(f"{key}*{index}*")
        if piece is None:
            break
        encoded = _unquote_param(piece)
        if index == 0:
            charset, _, rest = encoded.partition("'")
            _, _, encoded = rest.partition("'")
        chunks.append(_pct_decode(encoded))
    return _decode_bytes(b"".join(chunks), charset or "utf-8")


def first_raw(part: Message, name: str) -> str | None:
    for key, value in part.raw_items():
        if key.lower() == name:
            return value
    return None


# --- the parser -------------------------------------------------------------------------------


class _Message(Message):
    """A compat32 Message whose boundary lookup is linear in the header's length.

    The stdlib's get_boundary splits parameters in quadratic time (an unbalanced quote
    followed by many semicolons takes seconds per 100 KB), and the parser calls it for every
    multipart part, whose headers are not bounded by the top-level header cap. Boundaries
    longer than MAX_BOUNDARY are ignored.
    """

    def get_boundary(self, failobj: Any = None) -> Any:
        raw = first_raw(self, "content-type")
        if raw is None:
            return failobj
        boundary = content_param(content_params(raw)[1], "boundary")
        if boundary is None:
            return failobj
        boundary = _unquote_param(boundary).rstrip()
        # RFC 2046 allows 70 characters; the parser compiles the boundary into a regular
        # expression, which takes seconds for a megabyte. Too long counts as no boundary:
        # the part's body stays one opaque payload.
        return boundary if len(boundary) <= MAX_BOUNDARY else failobj


if TYPE_CHECKING:
    _FeedParser = BytesFeedParser[_Message]
else:  # not subscriptable at run time
    _FeedParser = BytesFeedParser


class _Parser(_FeedParser):
    """compat32's feed parser, refusing too deep nesting and too many parts as it goes.

    Each nested part is one level of recursion inside the stdlib parser; checking as each
    part is created stops a 10,000-level message at the limit instead of deep in the stack.
    """

    def __init__(self, max_depth: int, max_parts: int) -> None:
        super().__init__(_Message, policy=cast("Policy[_Message]", compat32))
        self._max_depth = max_depth
        self._max_parts = max_parts
        self._parts = 0

    def _new_message(self) -> None:
        self._parts += 1
        if self._parts > self._max_parts:
            raise UnsafeMessage(f"more than {self._max_parts} MIME parts")
        state: Any = self
        # _msgstack holds the part being parsed and its ancestors.
        if len(state._msgstack) > self._max_depth:
            raise UnsafeMessage(f"MIME nesting deeper than {self._max_depth}")
        parent: Any = super()
        parent._new_message()


def _feed(raw: bytes, limits: LimitsConfig) -> Message:
    """The parser over bytes whose caps were checked (parse_tree)."""
    parser = _Parser(limits.max_mime_depth, limits.max_parts)
    try:
        parser.feed(raw)
        return parser.close()
    except UnsafeMessage:
        raise
    except RecursionError:
        raise UnsafeMessage(f"MIME nesting deeper than {limits.max_mime_depth}") from None
    except Exception as exc:
        raise UnsafeMessage(f"unparseable message ({type(exc).__name__})") from None


# The parser's own test for a header line (feedparser.headerRE), on bytes.
_HEADER_LINE = re.compile(rb"From |[\x21-\x39\x3b-\x7e]*:|[\t ]")
HEADER_END = re.compile(rb"(?:\r\n|\n|\r(?!\n))(?:\r\n|\n|\r(?!\n))")


def _check_header_block(raw: bytes, limits: LimitsConfig) -> None:
    """The header block is the lines before the first empty line (or the first line that is not
    a header line, where the parser stops too); caps its size and its number of fields."""
    limit = limits.max_header_bytes
    window = raw[: limit + 4]
    end = HEADER_END.search(window)
    size = 0
    fields = 0
    for line in window[: end.start() if end else len(window)].splitlines(keepends=True):
        if not _HEADER_LINE.match(line):
            break
        size += len(line)
        if line[:1] not in (b" ", b"\t"):
            fields += 1
            if fields > limits.max_headers:
                raise UnsafeMessage("too many headers")
    else:
        if end is None and len(raw) > len(window):
            raise UnsafeMessage("header too large")
    if size > limit:
        raise UnsafeMessage("header too large")


# --- addresses --------------------------------------------------------------------------------


def _addresses(raw_values: Iterable[str]) -> tuple[str, ...]:
    seen: dict[str, None] = {}
    for raw in raw_values:
        try:
            for box in address_list(_unfold(_text(raw))).mailboxes:
                if box.address is not None:
                    seen.setdefault(box.address, None)
        except Exception:  # noqa: S112 - one broken header must not lose the others
            continue
    return tuple(seen)


def _is_daemon(spec: str) -> bool:
    """Whether a mailbox's spec names a mailer daemon: its local part, with or without a
    domain (bounces come from "MAILER-DAEMON" alone too)."""
    local = spec.rsplit(":", 1)[-1].rsplit("@", 1)[0] if "@" in spec else spec
    return local.strip().lower() in ("mailer-daemon", "postmaster")


def _from(raw: str | None) -> tuple[str | None, str, bool]:
    """(the one author's address, its display name, whether any mailbox is a mailer daemon).

    No address unless the field names exactly one well-formed address (core.text): nothing
    to answer, and nothing a maintainer could be recognised by.
    """
    if raw is None:
        return None, "", False
    try:
        addresses = address_list(_unfold(_text(raw)))
    except Exception:
        return None, "", False
    daemon = any(_is_daemon(box.spec) for box in addresses.mailboxes)
    box = addresses.single()
    if box is None:
        return None, "", daemon
    return box.address, _header_text(box.name, MAX_NAME), daemon


def _return_path(raw: str | None) -> str | None:
    if raw is None:
        return None
    value = _unfold(_text(raw)).strip()
    try:
        addresses = address_list(value)
    except Exception:
        return clean_header_text(value, MAX_NAME)
    if not value or (len(addresses.mailboxes) == 1 and addresses.mailboxes[0].spec == ""):
        return ""  # the null path, "<>"
    box = addresses.single()
    return box.address if box is not None else clean_header_text(value, MAX_NAME)


# --- message ids ------------------------------------------------------------------------------

_ANGLE_TOKEN = re.compile(r"<([^<>]{1,2000})>")
_BARE_ID = re.compile(r"[^\s<>@]+@[^\s<>@]+")
_ID_JUNK = re.compile(f"[\\s{UNSAFE_CHARS}]+")


def _message_ids(raw: str | None) -> list[str]:
    if raw is None:
        return []
    try:
        value = _text(raw)
        ids: list[str] = []
        for match in _ANGLE_TOKEN.finditer(value):
            inner = _ID_JUNK.sub("", match.group(1))
            if inner and len(inner) + 2 <= MAX_MESSAGE_ID:
                ids.append(f"<{inner}>")
        if not ids:
            bare = _ID_JUNK.sub(" ", value).strip()
            if _BARE_ID.fullmatch(bare) and len(bare) + 2 <= MAX_MESSAGE_ID:
                ids.append(f"<{bare}>")
        return ids
    except Exception:
        return []


# --- the rest of the top-level headers --------------------------------------------------------


def _date(raw: str | None) -> datetime | None:
    if raw is None:
        return None
    try:
        text = clean_header_text(_text(raw), 200)
        if not text:
            return None
        value = parsedate_to_datetime(text)
        if value.tzinfo is None:  # "-0000": the time is UTC, the zone unknown
            value = value.replace(tzinfo=UTC)
        return value
    except Exception:
        return None


def _simple_value(raw: str) -> str:
    """A structured field's main token: comments and parameters removed, lowercased."""
    text = _unfold(_text(raw))
    text = re.sub(r"\([^()]*\)", " ", text).split(";", 1)[0]
    return clean_header_text(text, 60).lower()


# The top-level headers read once each (the first occurrence).
_SINGLE = frozenset(
    (
        "message-id",
        "in-reply-to",
        "references",
        "from",
        "subject",
        "date",
        "auto-submitted",
        "precedence",
        "return-path",
        "content-type",
        "content-class",
        "list-id",
        "x-triaged-canary",
        "list-post",
        "reply-to",
        "x-original-from",
    )
)
_RECIPIENTS = frozenset(("to", "cc", "delivered-to"))
_AUTOREPLY = frozenset(("x-autoreply", "x-autorespond"))
# What each kind of automatic report is called in auto_reason: delivery status notifications
# (bounces, RFC 3464) and message disposition notifications (read receipts, RFC 8098).
DELIVERY = "delivery status report"
READ_RECEIPT = "read receipt"
_REPORT_TYPES = {"delivery-status": DELIVERY, "disposition-notification": READ_RECEIPT}
_STATUS_PARTS = {
    "message/delivery-status": DELIVERY,
    "message/global-delivery-status": DELIVERY,
    "message/disposition-notification": READ_RECEIPT,
    "message/global-disposition-notification": READ_RECEIPT,
}
# Outlook marks its own read receipts with this Content-Class; sent with TNEF (winmail.dat),
# the receipt itself is a TNEF stream whose message class says what it is.
_MDN_CLASS = "urn:content-classes:mdn"
_TNEF_TYPES = frozenset(("application/ms-tnef", "application/vnd.ms-tnef"))


# --- the walk ---------------------------------------------------------------------------------

_CONTENT_TYPE = re.compile(r"[a-z0-9!#$&^_.+-]{1,64}/[a-z0-9!#$&^_.+-]{1,127}")
_EOL = re.compile(r"\r\n?")


def _safe_type(ctype: str) -> str:
    return ctype if _CONTENT_TYPE.fullmatch(ctype) else "application/octet-stream"


def _filename(value: str | None) -> str:
    if not value:
        return ""
    try:
        name = _decode_words(_text(value))
    except Exception:
        name = value
    name = clean_header_text(re.split(r"[/\\]", name)[-1], len(name))
    stem, dot, extension = name.rpartition(".")
    if len(name) > MAX_FILENAME and dot and stem and len(extension) <= 20:
        # Cut the name, not its extension: "x...x.pdf" stays a .pdf.
        name = stem[: MAX_FILENAME - len(extension) - 1].rstrip() + "." + extension
    name = name[:MAX_FILENAME]
    return "" if name in (".", "..") else name


def _payload_bytes(part: Message) -> bytes | None:
    """The decoded payload of a leaf part, or None when it cannot be decoded."""
    try:
        data = part.get_payload(decode=True)
    except Exception:
        return None
    return data if isinstance(data, bytes) else None


def _raw_payload(part: Message) -> bytes:
    """A leaf part's payload as it came (the bytes parser keeps 8-bit bytes as surrogates)."""
    payload = part.get_payload()
    if not isinstance(payload, str):
        return b""
    return payload.encode("utf-8", "surrogateescape")


# Headers as they came, never re-wrapped; "From " lines in bodies left alone.
_AS_RECEIVED = compat32.clone(max_line_length=0)


def _message_bytes(part: Message) -> bytes:
    """A message/* part's content as a file of its own: the message (or, for a delivery-status
    report, the header blocks) inside it, written out again with the headers as received."""
    out = BytesIO()
    generator = BytesGenerator(out, mangle_from_=False, policy=_AS_RECEIVED)
    payload = part.get_payload()
    try:
        for child in payload if isinstance(payload, list) else ():
            if isinstance(child, Message):
                generator.flatten(child)
    except Exception:  # noqa: S110 - what cannot be written again is left out; the raw is kept
        pass
    return out.getvalue()


def _attachment_bytes(part: Message) -> bytes:
    if isinstance(part.get_payload(), list):
        return _message_bytes(part)
    data = _payload_bytes(part)
    return _raw_payload(part) if data is None else data


# --- TNEF (MS-OXTNEF), only as far as its message class ------------------------------------

_TNEF_SIGNATURE = b"\x78\x9f\x3e\x22"
_ATT_MESSAGE_CLASS = 0x00078008
_TNEF_ATTRIBUTES = 32  # attMessageClass is among the first few; look no further


def _tnef_report(data: bytes) -> str | None:
    """What a TNEF stream's message class makes the message (READ_RECEIPT, DELIVERY), or None.

    The stream is the signature, a 2-byte key, then attributes: a level byte, a 4-byte ID, a
    4-byte length, the data and a 2-byte checksum. attMessageClass holds, NUL-terminated,
    e.g. "REPORT.IPM.Note.IPNRN" (read), "...IPNNRN" (not read), "...DR" / "...NDR" (delivery).
    """
    if not data.startswith(_TNEF_SIGNATURE):
        return None
    pos = 6
    for _ in range(_TNEF_ATTRIBUTES):
        if pos + 9 > len(data):
            return None
        _level, ident, length = struct.unpack_from("<BII", data, pos)
        pos += 9
        if ident == _ATT_MESSAGE_CLASS:
            name = data[pos : pos + min(length, 255)].split(b"\x00", 1)[0].upper()
            if not name.startswith(b"REPORT."):
                return None
            last = name.rsplit(b".", 1)[-1]
            if last in (b"IPNRN", b"IPNNRN"):
                return READ_RECEIPT
            return DELIVERY if last in (b"DR", b"NDR") else None
        pos += length + 2
    return None


@dataclass
class _Walk:
    text: str = ""
    text_is_first_part: bool = False
    text_from_html: bool = False
    attachments: tuple[Attachment, ...] = ()
    report: str | None = None  # READ_RECEIPT or DELIVERY, from the first report part
    about: tuple[str, ...] = ()  # Original-Message-ID of a disposition notification
    # The attachments' bytes, in the same order, when the walk was asked to keep them.
    data: list[bytes] | None = None


def _decoded_text(part: Message, type_params: dict[str, str], cap: int) -> str:
    """A text part's payload as text: at most `cap` characters, NULs removed, "\n" line ends."""
    data = _payload_bytes(part)
    if data is None:
        data = b""
    limit = cap * 4  # bytes enough for `cap` characters
    text = _decode_text(data[:limit], content_param(type_params, "charset"), len(data) > limit)
    return _EOL.sub("\n", text.replace("\x00", ""))[:cap]


def _walk(root: Message, limits: LimitsConfig, keep: bool = False) -> _Walk:
    """One iterative, depth-first walk: the body text, the attachments, status report parts.

    Nothing inside a message/* part (a forwarded message, a bounce's returned copy) is
    looked at: its text is not the body and its report parts do not make this one a report.
    With `keep`, the attachments' bytes are collected too (`attachment_data`).
    """
    result = _Walk(data=[] if keep else None)
    body: Message | None = None
    html: tuple[Message, dict[str, str]] | None = None
    attachments: list[Attachment] = []

    def attach(part: Message, name: str | None, ctype: str) -> bytes:
        data = _attachment_bytes(part)
        digest = hashlib.sha256(data).hexdigest()
        attachments.append(Attachment(_filename(name), _safe_type(ctype), len(data), digest))
        if result.data is not None:
            result.data.append(data)
        return data

    # (part, on the first-part chain): the first child of each container, or any child of a
    # multipart/alternative on that chain (alternatives are the same content).
    stack: list[tuple[Message, bool]] = [(root, True)]
    while stack:
        part, first = stack.pop()
        ctype = part.get_content_type()
        payload = part.get_payload()
        if isinstance(payload, list) and ctype.startswith("multipart/"):
            alternative = ctype == "multipart/alternative"
            for index in range(len(payload) - 1, -1, -1):
                child = payload[index]
                if isinstance(child, Message):
                    stack.append((child, first and (index == 0 or alternative)))
            continue
        raw_type = first_raw(part, "content-type")
        type_params = content_params(raw_type)[1] if raw_type is not None else {}
        raw_disposition = first_raw(part, "content-disposition")
        disposition, disposition_params = (
            content_params(raw_disposition) if raw_disposition is not None else ("", {})
        )
        name = content_param(disposition_params, "filename") or content_param(type_params, "name")
        is_attachment = disposition == "attachment" or (bool(name) and disposition != "inline")
        if isinstance(payload, list):  # message/*: parsed, but a single opaque attachment
            if ctype in _STATUS_PARTS:
                result.report = result.report or _STATUS_PARTS[ctype]
                if _STATUS_PARTS[ctype] == READ_RECEIPT and not result.about:
                    result.about = _original_message_ids(payload)
            attach(part, name, ctype)
            continue
        if ctype == "text/plain" and body is None and not is_attachment:
            body = part
            result.text = _decoded_text(part, type_params, limits.max_text_chars)
            result.text_is_first_part = first
            continue
        if ctype == "text/html" and html is None and not is_attachment:
            html = (part, type_params)
            continue
        if is_attachment or not ctype.startswith("text/"):
            data = attach(part, name, ctype)
            if ctype in _STATUS_PARTS:
                result.report = result.report or _STATUS_PARTS[ctype]
            elif ctype in _TNEF_TYPES:
                result.report = result.report or _tnef_report(data)
    result.attachments = tuple(attachments)
    if html is not None and not result.text.strip():
        # No usable text/plain part (none, or only white space): the HTML part, as text.
        # Imported here: BeautifulSoup and its CSS parser cost every process that reads mail
        # nearly a tenth of a second at its start (bench/fixes.md, 7.), and most mail has a
        # text/plain part.
        from triaged.mail.htmltext import MAX_HTML_CHARS, to_text

        source = _decoded_text(html[0], html[1], MAX_HTML_CHARS)
        result.text = to_text(source, limits.max_text_chars)
        result.text_is_first_part = False
        result.text_from_html = True
    return result


def _original_message_ids(payload: list[Any]) -> tuple[str, ...]:
    """The Original-Message-ID of a parsed disposition notification part."""
    for fields in payload:
        if isinstance(fields, Message):
            found = _message_ids(first_raw(fields, "original-message-id"))
            if found:
                return tuple(found[:MAX_REFERENCES])
    return ()


def attachment_data(raw: bytes, limits: LimitsConfig) -> list[bytes]:
    """The bytes of each of `parse(raw, limits).attachments`, in the same order.

    Raises UnsafeMessage as `parse` does (a stored message parsed once already never does).
    """
    root = parse_tree(raw, limits)
    try:
        data = _walk(root, limits, keep=True).data
    except Exception as exc:
        raise UnsafeMessage(f"unreadable message ({type(exc).__name__})") from None
    return data or []


# --- parse ------------------------------------------------------------------------------------


# What some senders put before the header: UTF-8 byte-order marks (editors, scripts that write
# a file as "UTF-8 with BOM") and empty lines (a script's stray newline). The parser takes
# either as the start of the body, and the message as one without header fields. An mbox
# envelope line ("From sender date") is the parser's own business; whitespace at the start of
# the first line is a broken first field (the parser drops it), not a prefix.
_PREFIX = re.compile(rb"(?:\xef\xbb\xbf|\r\n|\n|\r)+")


def parse_tree(raw: bytes, limits: LimitsConfig) -> Message:
    """The parsed tree of a whole raw message, whatever came before its header (_PREFIX).

    The one way in for every reader of raw mail (`parse`, `attachment_data`, OpenPGP): the
    size and header caps are checked first, on the bytes the parser is given. Raises only
    UnsafeMessage.
    """
    if len(raw) > limits.max_message_size:
        raise UnsafeMessage(f"too large: {len(raw)} bytes")
    prefix = _PREFIX.match(raw)
    if prefix is not None:
        raw = raw[prefix.end() :]
    _check_header_block(raw, limits)
    return _feed(raw, limits)


def parse(raw: bytes, limits: LimitsConfig) -> ParsedMessage:
    """Parses one raw message; raises UnsafeMessage(reason), and nothing else, for any input."""
    root = parse_tree(raw, limits)
    try:
        return _extract(root, limits)
    except UnsafeMessage:
        raise
    except RecursionError:
        raise UnsafeMessage(f"MIME nesting deeper than {limits.max_mime_depth}") from None
    except Exception as exc:  # the last line of defence: nothing else may leave parse()
        raise UnsafeMessage(f"unreadable message ({type(exc).__name__})") from None


def _extract(root: Message, limits: LimitsConfig) -> ParsedMessage:
    single: dict[str, str] = {}
    recipients: list[str] = []
    auth_results: list[str] = []
    fields: list[tuple[str, str]] = []
    list_header = False
    autoreply_header = False
    any_header = False
    from_fields = 0
    for name, value in root.raw_items():
        any_header = True
        key = name.strip().lower()
        fields.append((key, _header_text(value, MAX_FIELD, decode=False)))
        from_fields += key == "from"
        if key in _SINGLE:
            single.setdefault(key, value)
        elif key in _RECIPIENTS:
            recipients.append(value)
        elif key == "authentication-results":
            auth_results.append(_header_text(value, MAX_AUTH_RESULTS, decode=False))
        elif key in _AUTOREPLY:
            autoreply_header = True
        list_header = list_header or key.startswith("list-")
    if not any_header:
        raise UnsafeMessage("no header fields")

    message_ids = _message_ids(single.get("message-id"))
    raw_from = single.get("from")
    from_addr, from_name, daemon = _from(raw_from)
    if from_fields > 1:
        # Two From fields: no single author, so no address to answer or to trust.
        from_addr, from_name = None, ""
    return_path = _return_path(single.get("return-path"))
    walk = _walk(root, limits)

    report = walk.report
    if root.get_content_type() == "multipart/report":
        raw_type = single.get("content-type", "")
        report_type = content_param(content_params(_text(raw_type))[1], "report-type") or ""
        report = _REPORT_TYPES.get(report_type.strip().lower(), report)
    if report is None and "content-class" in single:
        report = READ_RECEIPT if _simple_value(single["content-class"]) == _MDN_CLASS else None

    signals = _AutoSignals(
        auto_submitted=single.get("auto-submitted"),
        precedence=_simple_value(single["precedence"]) if "precedence" in single else "",
        list_header=list_header,
        autoreply_header=autoreply_header,
        null_return_path=return_path == "",
        daemon=daemon,
        report=report,
    )
    subject = single.get("subject")
    return ParsedMessage(
        message_id=message_ids[0] if message_ids else None,
        in_reply_to=tuple(_message_ids(single.get("in-reply-to"))[:MAX_REFERENCES]),
        references=tuple(_message_ids(single.get("references"))[-MAX_REFERENCES:]),
        from_addr=from_addr,
        from_name=from_name,
        from_text=_header_text(raw_from, MAX_NAME, decode=False) if raw_from is not None else "",
        to_addrs=_addresses(recipients),
        subject=_header_text(subject, MAX_SUBJECT) if subject is not None else "",
        date=_date(single.get("date")),
        auto_reason=signals.reason(count_list=True),
        text=walk.text,
        text_is_first_part=walk.text_is_first_part,
        text_from_html=walk.text_from_html,
        attachments=walk.attachments,
        authentication_results=tuple(auth_results),
        return_path=return_path,
        about=walk.about if report == READ_RECEIPT else (),
        mailing_list=_list_headers(single, signals),
        fields=tuple(fields),
        canary=_canary_token(single.get("x-triaged-canary")),
    )


def _canary_token(raw: str | None) -> str | None:
    return None if raw is None else _header_text(raw, 200, decode=False)


@dataclass(frozen=True)
class _AutoSignals:
    """What can make a message automatic mail (RFC 3834 and practice), in order of weight."""

    auto_submitted: str | None
    precedence: str
    list_header: bool
    autoreply_header: bool
    null_return_path: bool
    daemon: bool
    report: str | None  # READ_RECEIPT or DELIVERY

    def reason(self, count_list: bool) -> str | None:
        """The first signal present, or None; without `count_list`, the headers a mailing
        list adds (List-*, "Precedence: list") do not count."""
        if self.auto_submitted is not None and _simple_value(self.auto_submitted) != "no":
            value = _simple_value(self.auto_submitted)
            return f"auto-submitted: {value}" if value else "auto-submitted"
        if self.precedence in ("bulk", "junk") or (count_list and self.precedence == "list"):
            return f"precedence: {self.precedence}"
        if count_list and self.list_header:
            return "mailing list"
        if self.autoreply_header:
            return "autoreply header"
        if self.null_return_path:
            return "null return path"
        if self.daemon:
            return "mailer-daemon"
        return self.report


_LIST_ID = re.compile(r"[a-z0-9!#$%&'*+/=?^_`{|}~.-]{1,255}")
_LIST_ID_IN_ANGLES = re.compile(r"<([^<>]*)>")


def _list_id(raw: str) -> str | None:
    """The identifier of a List-Id (RFC 2919: `Description <list-id>`), lowercased."""
    value = _unfold(_text(raw))
    found = _LIST_ID_IN_ANGLES.findall(value)
    candidate = (found[-1] if found else value).strip().lower()
    return candidate if _LIST_ID.fullmatch(candidate) else None


def _list_post(raw: str | None) -> str | None:
    """The address of a List-Post (RFC 2369: `<mailto:list@example.org>`), or None ("NO")."""
    if raw is None:
        return None
    match = re.search(r"<\s*mailto:([^<>?]{1,254})", _unfold(_text(raw)), re.IGNORECASE)
    return parse_address(match.group(1).strip()) if match else None


def _one_mailbox(raw: str | None) -> tuple[str, str] | None:
    """(address, display name) when the header names exactly one well-formed address, read
    as From is (core.text)."""
    if raw is None:
        return None
    try:
        box = address_list(_unfold(_text(raw))).single()
    except Exception:
        return None
    if box is None or box.address is None:
        return None
    return box.address, _header_text(box.name, MAX_NAME)


def _list_headers(single: dict[str, str], signals: _AutoSignals) -> ListHeaders | None:
    raw_id = single.get("list-id")
    list_id = _list_id(raw_id) if raw_id is not None else None
    if list_id is None:
        return None
    authors = {name: single.get(name) for name in ("x-original-from", "reply-to")}
    found = {name: _one_mailbox(raw) for name, raw in authors.items()}
    unreadable = [
        _header_text(raw, MAX_NAME, decode=False)
        for name, raw in authors.items()
        if raw is not None and found[name] is None
    ]
    return ListHeaders(
        list_id=list_id,
        post=_list_post(single.get("list-post")),
        auto_reason=signals.reason(count_list=False),
        original_from=found["x-original-from"],
        reply_to=found["reply-to"],
        unreadable_author=unreadable[0] if unreadable else "",
    )
