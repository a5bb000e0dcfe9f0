"""Text from outside: the one place where it is made safe to show, and where it becomes an
e-mail address.

Safe to show: `UNSAFE_CHARS` is the one definition of the characters that act instead of
showing (C0, DEL, C1 with U+0085, the line and paragraph separators, the bidi embedding,
override and isolate controls, lone surrogates); `clean_header_text` and `clean_body_text`
apply it, and every other filter of control characters is built from it.

Addresses:
Every address triaged acts on is read here: the From of a message, the recipients that carry
a reply token, the Return-Path, the domains of an Authentication-Results header, the
maintainers and addresses of the configuration, and the arguments of `/assign` and `/cc`.
One rule holds for all of them: an address is one well-formed addr-spec, `local@domain`,
written without whitespace, comments or quotes inside it, and nothing is ever repaired.
Removing the space from "ali ce@acme.test" gives alice@acme.test, an address its writer never
wrote, and possibly a maintainer's; such text is no address at all.

Pure: no I/O, no logging, no imports from the rest of triaged.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

__all__ = [
    "CONTROL_CHARS",
    "LINE_AND_BIDI_CHARS",
    "SURROGATE_CHARS",
    "TEXT_CONTROL_CHARS",
    "UNSAFE_CHARS",
    "AddressList",
    "Mailbox",
    "address_list",
    "clean_body_text",
    "clean_header_text",
    "parse_address",
    "parse_domain",
]

# --- making text safe -------------------------------------------------------------------------

# The bodies of regex character classes, to be put between [ and ].
CONTROL_CHARS = "\x00-\x1f\x7f-\x9f"  # C0, DEL, C1 (which holds U+0085)
# The same but tab and line feed, which are text in a body.
TEXT_CONTROL_CHARS = "\x00-\x08\x0b-\x1f\x7f-\x9f"
LINE_AND_BIDI_CHARS = "\u2028\u2029\u202a-\u202e\u2066-\u2069"
SURROGATE_CHARS = "\ud800-\udfff"
UNSAFE_CHARS = CONTROL_CHARS + LINE_AND_BIDI_CHARS + SURROGATE_CHARS

_UNSAFE = re.compile(f"[{UNSAFE_CHARS}]+")
# The same, but line feeds and tabs are text here.
_UNSAFE_IN_TEXT = re.compile(f"[{TEXT_CONTROL_CHARS}{LINE_AND_BIDI_CHARS}{SURROGATE_CHARS}]")


def clean_header_text(value: str, max_len: int = 300) -> str:
    """Makes `value` safe for one header line: decodes nothing.

    Every unsafe character (`UNSAFE_CHARS`) becomes a space, runs of whitespace collapse to one
    space, the ends are stripped, and the result is cut to `max_len` characters.
    """
    if max_len <= 0:
        return ""
    text = " ".join(_UNSAFE.sub(" ", value).split())
    if len(text) > max_len:
        text = text[:max_len].rstrip()
    return text


def clean_body_text(value: str) -> str:
    """Makes a message's text safe to print on a terminal: line feeds and tabs stay, every
    other unsafe character (escape sequences, carriage returns, bidi overrides) becomes
    U+FFFD, so it is seen but does nothing."""
    return _UNSAFE_IN_TEXT.sub("\ufffd", value)


# --- addresses --------------------------------------------------------------------------------


MAX_ADDRESS = 254  # RFC 5321's limit for a forward path, less the angle brackets
MAX_LOCAL = 64
MAX_DOMAIN = 253

_ATEXT = r"[a-z0-9!#$%&'*+/=?^_`{|}~-]"
_LABEL = r"[a-z0-9](?:[a-z0-9-]{0,61}[a-z0-9])?"
_DOMAIN = re.compile(rf"{_LABEL}(?:\.{_LABEL})*")
_ADDRESS = re.compile(rf"({_ATEXT}+(?:\.{_ATEXT}+)*)@({_DOMAIN.pattern})")


def parse_address(text: str) -> str | None:
    """`text`, lowercased, when it is exactly one well-formed address; None otherwise.

    The local part is a dot-atom (no quoted string, no leading, trailing or double dot), the
    domain a host name (no address literal, no trailing dot), both ASCII: at most 64, 253 and
    254 characters in all. Nothing around or inside `text` is removed first.
    """
    # ASCII before lowercasing: "\u212a".lower() is "k", and a lookalike must stay one.
    if len(text) > MAX_ADDRESS or not text.isascii():
        return None
    address = text.lower()
    match = _ADDRESS.fullmatch(address)
    if match is None or len(match.group(1)) > MAX_LOCAL or len(match.group(2)) > MAX_DOMAIN:
        return None
    return address


def parse_domain(text: str) -> str | None:
    """`text`, lowercased, when it is exactly one well-formed host name; None otherwise."""
    if len(text) > MAX_DOMAIN or not text.isascii():
        return None
    domain = text.lower()
    return domain if _DOMAIN.fullmatch(domain) else None


# --- address lists in header fields (RFC 5322 3.4) --------------------------------------------


@dataclass(frozen=True)
class Mailbox:
    """One mailbox of an address-list header field."""

    # The display name as written (quotes removed, encoded words not decoded), or the text of
    # its comments when it has none.
    name: str
    # What stands for the address: inside the angle brackets, or the whole mailbox without its
    # comments; only the ends are stripped. "" for "<>".
    spec: str
    # parse_address(spec) (after an obsolete source route), or None when the mailbox is
    # malformed or its spec is not an address.
    address: str | None


@dataclass(frozen=True)
class AddressList:
    mailboxes: tuple[Mailbox, ...]
    # Something outside any one mailbox is broken: an unclosed quoted string, comment or
    # group, a nested group, or a stray ";".
    malformed: bool

    def single(self) -> Mailbox | None:
        """The one mailbox, when the field names exactly one address and nothing is broken.

        The same address written twice counts once; a second, different address or any
        mailbox that is not an address means no single one.
        """
        if self.malformed or not self.mailboxes:
            return None
        addresses = {box.address for box in self.mailboxes}
        if None in addresses or len(addresses) != 1:
            return None
        return self.mailboxes[0]


_PLAIN_RUN = re.compile(r'(?:[^"()<>,;:\\=]|=(?!\?))+')  # stops before "=?"
# An RFC 2047 encoded word is one atom, whatever specials a careless encoder left inside it (as
# Python's own header parser reads it): its ":" starts no group, its "," ends no mailbox.
_ENCODED_WORD = re.compile(r"=\?[^?\s]{1,75}\?[BbQq]\?[^?\s]*\?=")
_ANGLE_RUN = re.compile(r'[^"()<>\\]+')
_COMMENT_RUN = re.compile(r"[^()\\]+")
_QUOTED = re.compile(r'"((?:[^"\\]|\\.)*)(")?', re.DOTALL)
_QUOTED_PAIR = re.compile(r"\\(.)", re.DOTALL)


def _without_route(spec: str) -> str | None:
    """An addr-spec from `spec`, dropping an obsolete source route (`@relay,@relay2:`)."""
    route, colon, rest = spec.rpartition(":")
    if not colon:
        return spec
    hops = route.split(",")
    if not all(hop.startswith("@") and parse_domain(hop[1:]) for hop in hops):
        return None
    return rest


class _Scanner:
    """A linear scan of an address-list (see `address_list`); one instance per field."""

    def __init__(self) -> None:
        self.boxes: list[Mailbox] = []
        self.malformed = False
        self.in_group = False
        self._reset()

    def _reset(self) -> None:
        # Outside angle brackets: the text as written (comments as spaces), for a bare
        # addr-spec, and the display name (quoted strings unquoted).
        self.raw: list[str] = []
        self.name: list[str] = []
        self.comments: list[str] = []
        self.angle: list[str] | None = None
        self.in_angle = False
        self.broken = False

    def flush(self) -> None:
        if self.in_angle:
            self.broken = True  # "<" without its ">"
        if self.angle is not None:
            name = " ".join("".join(self.name).split())
            spec = "".join(self.angle).strip()
        else:
            name = " ".join("".join(self.comments).split())
            spec = "".join(self.raw).strip()
        if self.angle is not None or spec or self.broken:
            address = None
            if not self.broken:
                addr_spec = _without_route(spec) if self.angle is not None else spec
                address = parse_address(addr_spec) if addr_spec is not None else None
            self.boxes.append(Mailbox(name, spec, address))
        self._reset()

    def scan(self, value: str) -> AddressList:
        pos = 0
        length = len(value)
        while pos < length:
            char = value[pos]
            if char == '"':
                quoted = _QUOTED.match(value, pos)
                assert quoted is not None
                if quoted.group(2) is None:
                    self.malformed = True  # runs to the end of the field
                text = _QUOTED_PAIR.sub(r"\1", quoted.group(1))
                if self.in_angle and self.angle is not None:
                    self.angle.append(quoted.group())
                else:
                    self.raw.append(quoted.group())
                    self.name.append(text)
                pos = quoted.end()
                continue
            if char == "(":
                pos = self._comment(value, pos)
                continue
            if self.in_angle and self.angle is not None:
                if char == ">":
                    self.in_angle = False
                elif char == "<":
                    self.broken = True
                    self.angle.append(char)
                else:
                    run = _ANGLE_RUN.match(value, pos)
                    if run is None:  # a lone backslash
                        self.angle.append(char)
                    else:
                        self.angle.append(run.group())
                        pos = run.end()
                        continue
            elif char == "<":
                if self.angle is not None:
                    self.broken = True  # a second address in one mailbox
                self.in_angle = True
                self.angle = []
            elif char == ">":
                self.broken = True
            elif char == ",":
                self.flush()
            elif char == ";":
                self.flush()
                if not self.in_group:
                    self.malformed = True
                self.in_group = False
            elif char == ":":
                if self.in_group or self.angle is not None:
                    self.malformed = True
                self.in_group = True
                self._reset()  # what came before was the group's name
            else:
                run = _ENCODED_WORD.match(value, pos) or _PLAIN_RUN.match(value, pos)
                if run is None:  # a lone backslash, or "=?" that starts no encoded word
                    self.raw.append(char)
                    self.name.append(char)
                else:
                    self.raw.append(run.group())
                    self.name.append(run.group())
                    pos = run.end()
                    continue
            pos += 1
        self.flush()
        if self.in_group:
            self.malformed = True
        return AddressList(tuple(self.boxes), self.malformed)

    def _comment(self, value: str, pos: int) -> int:
        """Skips the (nested) comment at `pos`; returns the position after it.

        A comment separates what is around it, as whitespace does: "ali(x)ce@acme.test" is no
        address either.
        """
        depth = 0
        text: list[str] = []
        length = len(value)
        while pos < length:
            char = value[pos]
            if char == "(":
                depth += 1
            elif char == ")":
                depth -= 1
                text.append(" ")
                if depth == 0:
                    pos += 1
                    break
            elif char == "\\":
                text.append(value[pos + 1 : pos + 2])
                pos += 2
                continue
            else:
                run = _COMMENT_RUN.match(value, pos)
                assert run is not None
                text.append(run.group())
                pos = run.end()
                continue
            pos += 1
        else:
            if depth:
                self.malformed = True  # runs to the end of the field
        if self.in_angle and self.angle is not None:
            self.angle.append(" ")
        else:
            self.raw.append(" ")
            self.comments.append("".join(text))
        return pos


def address_list(value: str) -> AddressList:
    """The mailboxes of an unfolded address-list field value (From, To, Cc, Return-Path...).

    A linear scanner honouring quoted strings, nested comments, angle brackets and groups (the
    stdlib's getaddresses recurses, and raises RecursionError on "((((..."). Display names are
    not decoded here: they are split off before any encoded word is decoded, so an encoded
    "<x@y>" in a name can never become an address. Never raises for any str.
    """
    return _Scanner().scan(value)
