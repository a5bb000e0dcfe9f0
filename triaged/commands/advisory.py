"""The advisory draft and /help."""

from __future__ import annotations

from triaged.commands import replies
from triaged.commands.base import (
    Command,
    CommandContext,
    help_for,
    help_text,
    no_arguments,
    one_argument,
    register,
)
from triaged.core import events as ev
from triaged.core import workflow as wf
from triaged.disclosure.advisory import draft


@register
class Advisory(Command):
    name = "advisory"
    description = "mail the advisory draft (Markdown and OSV JSON) to the team"
    example = "/advisory"

    def run(self, ctx: CommandContext, args: tuple[str, ...]) -> str:
        no_arguments(args)
        report = ctx.report
        advisory = draft(report, ctx.config, ctx.now)
        recipients = ctx.config.maintainers.notify
        ctx.outgoing += ctx.composer.to_each(
            recipients,
            kind="advisory",
            subject=f"Advisory draft {advisory.id}",
            template="advisory.txt",
            context={
                "advisory_id": advisory.id,
                "actor": ctx.actor,
                "public": report["state"] in (wf.DISCLOSED, wf.CLOSED),
                "embargo": report["embargo"],
                "gaps": advisory.gaps,
                "markdown": advisory.markdown,
                "osv": advisory.osv_json(),
            },
            now=ctx.now,
            report_id=ctx.report_id,
            reply_to=ctx.reply_to_for,
        )
        ctx.event(ev.ADVISORY_DRAFT, advisory=advisory.id, gaps=len(advisory.gaps))
        checks = f"; {len(advisory.gaps)} thing(s) to check" if advisory.gaps else ""
        return f"advisory draft {advisory.id} sent to {', '.join(recipients)}{checks}"


@register
class Help(Command):
    name = "help"
    arguments = "[COMMAND]"
    description = "this list, or one command's entry of it"
    example = "/help embargo"

    def run(self, ctx: CommandContext, args: tuple[str, ...]) -> str:
        if args:
            return help_for(one_argument(args, "a command's name"))
        return f"commands:\n{help_text()}\n\n{replies.listing(ctx.config.templates_dir)}"
