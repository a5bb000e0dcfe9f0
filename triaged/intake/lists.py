"""Mail through the project's own mailing list (`mailbox.own_lists`), read as its sender wrote it.

Many projects' security address is a list (Google Groups, Mailman) that forwards to the
mailbox, adding `List-*` headers and often `Precedence: list` to every message. For a message
whose List-Id is one of the project's own lists:

- those headers do not count: the message is classified by its other signals (an
  auto-reply that came through the list is still automatic); another list's mail still is;
- when the list rewrote From to its own address (DMARC mitigation: "Jane via security"
  <security@...>), the sender is the original author, read from exactly these headers, the
  first that names one address that is not the list's or the project's own:
  1. `X-Original-From` (Google Groups puts the original From there);
  2. `Reply-To` (Mailman's "munge From" puts it there).
  From counts as rewritten only when its address is the list's own (its `List-Post` address,
  the address its List-Id spells, `security.example.org` for `security@example.org`) or the
  project's address. Reply-To is never followed otherwise.

Why these may be trusted: a message reaches this code only with a List-Id the operator named,
and From already names the list, not a person; the headers the list wrote are all that says
who the author is. Anyone can forge them, exactly as anyone can forge From itself: what a
forger gains (a receipt sent to an address of their choosing, once a day at most) is what a
forged From already gives, and commands still need their own proof (a reply token, or DMARC
for the author's domain, which a list-rewritten message does not carry). Pure: no I/O.
"""

from __future__ import annotations

from dataclasses import replace

from triaged.intake.classify import same_mailbox
from triaged.mail.parse import ListHeaders, ParsedMessage


def through_own_list(
    msg: ParsedMessage, own_lists: frozenset[str], project_address: str
) -> ParsedMessage:
    """`msg` as its author sent it, when it came through one of `own_lists`; else `msg`."""
    found = msg.mailing_list
    if found is None or found.list_id not in own_lists:
        return msg
    original = _original_sender(msg, found, project_address)
    if original is None:
        return replace(msg, auto_reason=found.auto_reason)
    address, name = original
    return replace(
        msg, auto_reason=found.auto_reason, from_addr=address, from_name=name or _name(msg)
    )


def _is_list(address: str, found: ListHeaders, project_address: str) -> bool:
    return (
        address == found.post
        or address.replace("@", ".", 1) == found.list_id
        or same_mailbox(address, project_address)
    )


def _original_sender(
    msg: ParsedMessage, found: ListHeaders, project_address: str
) -> tuple[str, str] | None:
    """The author of a message whose From the list rewrote to its own address, else None."""
    if msg.from_addr is None or not _is_list(msg.from_addr, found, project_address):
        return None
    for candidate in (found.original_from, found.reply_to):
        if candidate is not None and not _is_list(candidate[0], found, project_address):
            return candidate
    return None


def _name(msg: ParsedMessage) -> str:
    """The author's name from a rewritten From's display name: "Jane Doe via security"."""
    name, via, _ = msg.from_name.rpartition(" via ")
    return name.strip(" '\"") if via else ""
