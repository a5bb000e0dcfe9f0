"""Commands about people: participants, the reporter's credit, replies and notes."""

from __future__ import annotations

from triaged.commands import replies
from triaged.commands.base import (
    Command,
    CommandContext,
    Refused,
    address_argument,
    register,
    text_argument,
)
from triaged.core import events as ev
from triaged.disclosure import credit
from triaged.store import reports


@register
class Credit(Command):
    name = "credit"
    arguments = '"NAME" | anonymous'
    description = "how the reporter is credited (the reporter may use this command too)"
    example = '/credit "Jane Doe"'
    for_reporters = True

    def run(self, ctx: CommandContext, args: tuple[str, ...]) -> str:
        new = credit.Credit.chosen(
            text_argument(args, 'a name in double quotes, or "anonymous"', credit.NAME_LIMIT)
        )
        old = credit.reporter_credit(ctx.report)
        ctx.set("credit", credit.stored(new, ctx.actor, ctx.now))
        line = f"credit: {new.label()}"
        replaced = credit.replaced_choice(ctx.report, old, new, ctx.actor)
        if replaced is not None:
            line += f"\nnote: this replaces the reporter's own choice ({replaced})"
        return line


@register
class Cc(Command):
    name = "cc"
    arguments = "ADDRESS"
    description = "add a participant (their mail then threads; the reporter is told)"
    example = "/cc upstream-maintainer@example.net"

    def run(self, ctx: CommandContext, args: tuple[str, ...]) -> str:
        address = address_argument(args, "an address")
        if address in ctx.store.participants(ctx.report_id):
            raise Refused(f"{address} already takes part")
        reports.add_participant(
            ctx.store, ctx.report_id, address, at=ctx.now, added_by=ctx.actor, message=ctx.message
        )
        # The reporter learns that someone was added, never who: addresses stay private.
        ctx.tell_reporter("reporter_cc.txt", "Another participant was added to your report")
        return f"participant added: {address}"


@register
class Reply(Command):
    name = "reply"
    arguments = "[template NAME]"
    description = (
        "everything below this line goes to the reporter (quoted text is cut);"
        " with template NAME, the reply template NAME instead"
    )
    example = "/reply"

    def run(self, ctx: CommandContext, args: tuple[str, ...]) -> str:
        if args:
            text = replies.render(ctx.composer, template_name(args), ctx.report, ctx.now)
            told = f"reply template {args[1].lower()} sent to the reporter"
        else:
            text = (ctx.reply_text or "").strip()
            if not text:
                raise Refused("nothing to send: write the reply below the /reply line")
            told = f"reply sent to the reporter ({len(text.splitlines())} lines)"
        if not ctx.tell_reporter("reporter_reply.txt", "Re: your report", text=text):
            raise Refused("the report has no reporter address to reply to")
        ctx.event(ev.REPLY, chars=len(text))
        return told


def template_name(args: tuple[str, ...]) -> str:
    """NAME of the arguments `template NAME`; Refused for anything else."""
    if len(args) != 2 or args[0].lower() != "template":
        raise Refused("takes no arguments, or: template NAME")
    return args[1]


@register
class Note(Command):
    name = "note"
    description = "the text of this message is an internal note (the default anyway)"
    example = "/note"

    def run(self, ctx: CommandContext, args: tuple[str, ...]) -> str:
        return "kept as an internal note"
