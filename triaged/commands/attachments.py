"""/attachments: a report's attachments, byte for byte, to the maintainer who asks."""

from __future__ import annotations

from triaged.commands.base import Command, CommandContext, register
from triaged.core import events as ev
from triaged.errors import Refused
from triaged.views import ReportAttachment, attachment_bytes, report_messages


@register
class Attachments(Command):
    name = "attachments"
    arguments = "[N ...]"
    description = (
        "mail you (only you) the report's attachments, byte for byte; N picks some by number"
    )
    example = "/attachments 1 3"

    def run(self, ctx: CommandContext, args: tuple[str, ...]) -> str:
        limits = ctx.config.limits
        messages = report_messages(ctx.store, ctx.report_id, limits, keyring=ctx.keyring)
        every = [item for stored in messages for item in stored.attachments]
        if not every:
            raise Refused("the report has no attachments")
        wanted = _pick(every, args)
        sent: list[ReportAttachment] = []
        over: list[ReportAttachment] = []
        total = 0
        for item in wanted:
            if total + item.attachment.size <= limits.max_attachments_mail:
                sent.append(item)
                total += item.attachment.size
            else:
                over.append(item)
        data = attachment_bytes(messages, sent, limits)
        ctx.outgoing.append(
            ctx.composer.build(
                kind="attachments",
                to=ctx.actor,
                subject="Attachments: " + ", ".join(str(item.index) for item in wanted),
                template="attachments_mail.txt",
                context={
                    "sent": [_line(item) for item in sent],
                    "over": [_line(item) for item in over],
                    "limit": limits.max_attachments_mail,
                },
                now=ctx.now,
                report_id=ctx.report_id,
                auto="auto-generated",
                reply_to=ctx.reply_to_for(ctx.actor),
                attachments=[(_name(item), data[item.index]) for item in sent],
            )
        )
        ctx.event(
            ev.ATTACHMENTS_SENT,
            to=ctx.actor,
            sent=[item.index for item in sent],
            over=[item.index for item in over],
        )
        line = f"attachments {_numbers(sent) or 'none'} mailed to {ctx.actor} (only)"
        if over:
            line += (
                f"; {_numbers(over)} over the {limits.max_attachments_mail}-byte limit of one"
                f" mail: triaged export {ctx.report_id}"
            )
        return line


def _pick(every: list[ReportAttachment], args: tuple[str, ...]) -> list[ReportAttachment]:
    if not args:
        return every
    by_index = {item.index: item for item in every}
    picked: dict[int, ReportAttachment] = {}
    for arg in args:
        if not arg.isdigit() or int(arg) not in by_index:
            raise Refused(
                f"{arg[:20]!r} is not an attachment number of this report (1 to {len(every)})"
            )
        picked[int(arg)] = by_index[int(arg)]
    return [picked[index] for index in sorted(picked)]


def _name(item: ReportAttachment) -> str:
    return f"{item.index}-{item.attachment.filename or 'attachment'}"


def _line(item: ReportAttachment) -> dict[str, object]:
    a = item.attachment
    return {
        "index": item.index,
        "filename": a.filename or "(no name)",
        "content_type": a.content_type,
        "size": a.size,
        "sha256": a.sha256,
    }


def _numbers(items: list[ReportAttachment]) -> str:
    return ", ".join(str(item.index) for item in items)
