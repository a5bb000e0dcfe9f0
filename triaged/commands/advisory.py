"""The advisory draft and /help."""

from __future__ import annotations

from triaged.commands.base import Command, Context, Outcome, done, help_text, refused, register
from triaged.core import workflow as wf
from triaged.disclosure.advisory import draft


@register
class Advisory(Command):
    name = "advisory"
    description = "mail the advisory draft (Markdown and OSV JSON) to the team"
    example = "/advisory"

    def run(self, ctx: Context, args: tuple[str, ...]) -> Outcome:
        if args:
            return refused("takes no arguments")
        report = ctx.report
        advisory = draft(report, ctx.config, ctx.now)
        recipients = ctx.config.maintainers.notify
        for address in recipients:
            ctx.outgoing.append(
                ctx.composer.build(
                    kind="advisory",
                    to=address,
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
                    auto="auto-generated",
                    reply_to=ctx.reply_to_for(address),
                )
            )
        ctx.event("advisory_draft", advisory=advisory.id, gaps=len(advisory.gaps))
        checks = f"; {len(advisory.gaps)} thing(s) to check" if advisory.gaps else ""
        return done(f"advisory draft {advisory.id} sent to {', '.join(recipients)}{checks}")


@register
class Help(Command):
    name = "help"
    description = "this list"
    example = "/help"

    def run(self, ctx: Context, args: tuple[str, ...]) -> Outcome:
        return done("commands:\n" + help_text())
