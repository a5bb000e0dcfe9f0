"""Finding the commands in a maintainer's reply: text in, command lines, reply and note out.

A maintainer answers triaged's mail. The lines at the top of the first text/plain part that
start with `/` are commands; the first other non-blank line ends them. `/reply` is the last
command: what follows it goes to the reporter, cut where quoted material or a signature
begins; but `/reply template NAME` is an ordinary command line (the reply is the template), and
the lines after it are read as usual. Everything else after the commands is an internal note.

Pure: no I/O, no logging, never raises on any input string. What a sender wrote is only ever
split and cleaned here, never interpreted beyond that; the caller decides what a name means
and reports unknown ones.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from triaged.core.text import LINE_AND_BIDI_CHARS, SURROGATE_CHARS, TEXT_CONTROL_CHARS

__all__ = ["MAX_LINE", "CommandLine", "Commands", "extract"]

MAX_LINE = 500  # characters of one command line, after cleaning

# Removed from all text: C0 controls but tab and newline, DEL, C1, and lone surrogates (which
# could not be encoded into a mail anyway).
_CONTROL = re.compile(f"[{TEXT_CONTROL_CHARS}{SURROGATE_CHARS}]+")
# Also removed from a command line, which is shown on one line in the transcript: the line and
# paragraph separators and the bidi embedding, override and isolate controls.
_LINE_UNSAFE = re.compile(f"[{LINE_AND_BIDI_CHARS}]+")
# Invisible characters some clients put before the first line.
_INVISIBLE_LEAD = "\ufeff\u200b\u200c\u200d\u2060"

# Mail clients turn typed double quotes into typographic ones; both kinds are quotes here.
_QUOTES = frozenset('"\u201c\u201d\u201e')

# Where the reporter's text stops: the start of quoted material or of a signature.
_ATTRIBUTION = re.compile(
    r"(?:\bwrote|\ba\s+[ée]crit|\bschrieb|\bescribi[óo]|\bha\s+scritto|\bschreef|\bskrev"
    r"|\bescreveu|\bnapisa[łl](?:\(a\))?)\s*:\s*$",
    re.IGNORECASE,
)
# The first line of an attribution that a client wrapped onto two lines.
_ATTRIBUTION_START = re.compile(r"^(?:On|Le|Am|El|Il|Op|Em|Den|På)\s", re.IGNORECASE)
# An attribution with the verb before the name, "Am ... schrieb Alice <a@example.org>:", when
# the line also ends with a colon.
_ATTRIBUTION_VERB_FIRST = re.compile(
    r"^(?:Am|Op|Den|På)\s.*\b(?:schrieb|schreef|skrev)\b", re.IGNORECASE
)
_ORIGINAL_MESSAGE = re.compile(
    r"^-{2,}\s*(?:Original Message|Ursprüngliche Nachricht|Message d'origine"
    r"|Mensaje original|Messaggio originale|Oorspronkelijk bericht)\s*-{2,}$",
    re.IGNORECASE,
)
_OUTLOOK_RULE = re.compile(r"^_{20,}$")
_OUTLOOK_FROM = re.compile(r"^(?:From|De|Von|Van|Da):\s", re.IGNORECASE)
_OUTLOOK_NEXT = re.compile(r"^(?:Sent|Date|Envoyé|Gesendet|Verzonden|Inviato):\s", re.IGNORECASE)


@dataclass(frozen=True)
class CommandLine:
    name: str  # lowercased, without the slash: "severity"
    args: tuple[str, ...]
    raw: str  # the line as written (cleaned of control characters, <= MAX_LINE characters)
    error: str | None  # why the line cannot be used ("unbalanced double quote"); args == ()


@dataclass(frozen=True)
class Commands:
    lines: tuple[CommandLine, ...]
    reply: str | None  # the text for the reporter after a `/reply` line; None without /reply
    note: str  # the text after the commands when there is no /reply: the internal note


def extract(text: str, max_commands: int = 50) -> Commands:
    """The command lines at the top of `text`, then the reply or the note that follows.

    At most `max_commands` lines are parsed; beyond that, one CommandLine(name="") with an
    error says so, and the remaining command lines (a `/reply` among them included) are not
    honoured.
    """
    limit = max(0, max_commands)
    lines = _CONTROL.sub("", text.replace("\r\n", "\n").replace("\r", "\n")).split("\n")
    if lines:
        lines[0] = lines[0].lstrip(_INVISIBLE_LEAD)

    commands: list[CommandLine] = []
    count = 0
    index = 0
    while index < len(lines):
        stripped = lines[index].strip()
        if not stripped:
            index += 1
            continue
        if not stripped.startswith("/"):
            break
        count += 1
        index += 1
        if count > limit:
            if count == limit + 1:
                error = f"too many commands (limit {limit})"
                commands.append(CommandLine(name="", args=(), raw="", error=error))
            continue
        line = _LINE_UNSAFE.sub("", stripped)
        name, rest = _split_name(line)
        if name == "reply" and not _is_template(rest):
            # The rest of the /reply line, if any, is the first line of the reply.
            reply_lines = [rest.strip(), *lines[index:]] if rest.strip() else lines[index:]
            commands.append(CommandLine(name=name, args=(), raw=line[:MAX_LINE], error=None))
            return Commands(lines=tuple(commands), reply=_cut_reply(reply_lines), note="")
        commands.append(_command(name, rest, line))

    note = "\n".join(lines[index:]).strip()
    return Commands(lines=tuple(commands), reply=None, note=note)


def _is_template(rest: str) -> bool:
    """True for the rest of `/reply template NAME`: two words, the first "template"."""
    words = rest.split()
    return len(words) == 2 and words[0].lower() == "template"


def _split_name(line: str) -> tuple[str, str]:
    """("severity", " high") for "/Severity high": the name lowercased, and the rest."""
    body = line[1:]
    parts = body.split(None, 1)
    if not parts or not body[:1].strip():
        return "", body
    name = parts[0]
    return name.lower(), body[len(name) :]


def _command(name: str, rest: str, line: str) -> CommandLine:
    raw = line[:MAX_LINE]
    if len(line) > MAX_LINE:
        error = f"command line too long (limit {MAX_LINE} characters)"
        return CommandLine(name=name[:MAX_LINE], args=(), raw=raw, error=error)
    args = _split_args(rest)
    if args is None:
        return CommandLine(name=name, args=(), raw=raw, error="unbalanced double quote")
    return CommandLine(name=name, args=args, raw=raw, error=None)


def _split_args(rest: str) -> tuple[str, ...] | None:
    """Words split at whitespace, with double-quoted groups; None for an unbalanced quote.

    Only double quotes group (an apostrophe is a letter: `it's` stays one word). Inside quotes
    a backslash escapes a quote or a backslash; outside them it escapes a quote only, so
    `C:\\dir` is kept as written. Adjacent quoted and plain text form one word, as in a shell.
    """
    args: list[str] = []
    word: list[str] = []
    in_word = False
    quoted = False
    pos = 0
    end = len(rest)
    while pos < end:
        char = rest[pos]
        nxt = rest[pos + 1] if pos + 1 < end else ""
        if char == "\\" and (nxt in _QUOTES or (quoted and nxt == "\\")):
            word.append(nxt)
            in_word = True
            pos += 2
            continue
        if char in _QUOTES:
            quoted = not quoted
            in_word = True
        elif quoted or not char.isspace():
            word.append(char)
            in_word = True
        elif in_word:
            args.append("".join(word))
            word = []
            in_word = False
        pos += 1
    if quoted:
        return None
    if in_word:
        args.append("".join(word))
    return tuple(args)


def _cut_reply(lines: list[str]) -> str:
    """The reply text: up to where quoted material or a signature starts, without blank ends."""
    kept: list[str] = []
    for position, line in enumerate(lines):
        stripped = line.strip()
        if _starts_quote(stripped, line, lines, position):
            # A client may wrap an attribution: "On Mon, ... Alice <a@b>" / "wrote:".
            if (
                _ATTRIBUTION.search(stripped)
                and not _ATTRIBUTION_START.match(stripped)
                and kept
                and _ATTRIBUTION_START.match(kept[-1].strip())
            ):
                kept.pop()
            break
        kept.append(line)
    while kept and not kept[-1].strip():
        kept.pop()
    first = next((n for n, line in enumerate(kept) if line.strip()), len(kept))
    return "\n".join(kept[first:])


def _starts_quote(stripped: str, line: str, lines: list[str], position: int) -> bool:
    if stripped.startswith(">"):
        return True
    # The signature separator is "-- "; many clients drop its trailing space.
    if line.rstrip() == "--":
        return True
    if _ATTRIBUTION.search(stripped):
        return True
    if stripped.endswith(":") and _ATTRIBUTION_VERB_FIRST.match(stripped):
        return True
    if _ORIGINAL_MESSAGE.match(stripped):
        return True
    if _OUTLOOK_RULE.match(stripped):
        return True
    # Outlook's plain-text reply header without the rule: "From: ..." then "Sent: ...".
    if _OUTLOOK_FROM.match(stripped) and position + 1 < len(lines):
        return bool(_OUTLOOK_NEXT.match(lines[position + 1].strip()))
    return False
