"""Commands about people: participants, the reporter's credit, replies and notes."""

from __future__ import annotations

import json
import re
from typing import Any

from triaged.commands.base import (
    Command,
    Context,
    Outcome,
    done,
    one_argument,
    refused,
    register,
    text_argument,
)
from triaged.core.timefmt import ts
from triaged.mail.parse import clean_header_text

_ADDRESS = re.compile(r"^[A-Za-z0-9!#$%&'*+/=?^_`{|}~.-]{1,64}@[A-Za-z0-9.-]{1,253}$")


@register
class Credit(Command):
    name = "credit"
    arguments = '"NAME" | anonymous'
    description = "how the reporter is credited (the reporter may use this command too)"
    example = '/credit "Jane Doe"'
    for_reporters = True

    def run(self, ctx: Context, args: tuple[str, ...]) -> Outcome:
        name = text_argument(args, 'a name in double quotes, or "anonymous"', 100)
        if isinstance(name, Outcome):
            return name
        anonymous = name.lower() == "anonymous"
        credit = {
            "kind": "anonymous" if anonymous else "name",
            "name": None if anonymous else name,
            "by": ctx.actor,
            "at": ts(ctx.now),
        }
        old = ctx.set("credit", json.dumps(credit, sort_keys=True))
        line = "credit: anonymous" if anonymous else f"credit: {name}"
        return done(line + _overrides_reporter(ctx, old, credit))


def _overrides_reporter(ctx: Context, old: str | None, new: dict[str, Any]) -> str:
    """A transcript note when a maintainer replaces the reporter's own stated choice."""
    reporter = ctx.report["reporter"]
    prior = json.loads(old) if old else None
    if not isinstance(prior, dict) or ctx.actor == reporter or prior.get("by") != reporter:
        return ""
    if (prior.get("kind"), prior.get("name")) == (new["kind"], new["name"]):
        return ""
    said = "anonymous" if prior.get("kind") == "anonymous" else f'"{prior.get("name")}"'
    return f"\nnote: this replaces the reporter's own choice ({said})"


@register
class Cc(Command):
    name = "cc"
    arguments = "ADDRESS"
    description = "add a participant (their mail then threads; the reporter is told)"
    example = "/cc upstream-maintainer@example.net"

    def run(self, ctx: Context, args: tuple[str, ...]) -> Outcome:
        address = one_argument(args, "an address")
        if isinstance(address, Outcome):
            return address
        address = address.lower()
        if not _ADDRESS.match(address):
            return refused(f"{clean_header_text(address, 80)!r} is not an address")
        if address in ctx.store.participants(ctx.report_id):
            return refused(f"{address} already takes part")
        ctx.store.insert(
            "participants",
            {
                "report_id": ctx.report_id,
                "address": address,
                "role": "cc",
                "added_by": ctx.actor,
                "added_at": ts(ctx.now),
            },
        )
        ctx.event("participant_added", address=address)
        # The reporter learns that someone was added, never who: addresses stay private.
        ctx.tell_reporter("reporter_cc.txt", "Another participant was added to your report")
        return done(f"participant added: {address}")


@register
class Reply(Command):
    name = "reply"
    description = "everything below this line goes to the reporter (quoted text is cut)"
    example = "/reply"

    def run(self, ctx: Context, args: tuple[str, ...]) -> Outcome:
        text = (ctx.reply_text or "").strip()
        if not text:
            return refused("nothing to send: write the reply below the /reply line")
        ctx.tell_reporter("reporter_reply.txt", "Re: your report", text=text)
        ctx.event("reply", chars=len(text))
        return done(f"reply sent to the reporter ({len(text.splitlines())} lines)")


@register
class Note(Command):
    name = "note"
    description = "the text of this message is an internal note (the default anyway)"
    example = "/note"

    def run(self, ctx: Context, args: tuple[str, ...]) -> Outcome:
        return done("kept as an internal note")
