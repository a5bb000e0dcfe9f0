"""Commands against junk: /spam (and the block of its sender), /not-spam, /unblock."""

from __future__ import annotations

from triaged.commands.base import Command, CommandContext, Refused, one_argument, register
from triaged.config import Config
from triaged.core import events as ev
from triaged.core import workflow as wf
from triaged.core.text import clean_header_text
from triaged.store import blocklist

DOMAIN = "domain"


@register
class Spam(Command):
    name = "spam"
    arguments = "[domain]"
    description = (
        "mark the report as spam and block its sender's address (domain: the whole domain);"
        " their mail is then stored and counted, never answered nor forwarded"
    )
    example = "/spam"

    def run(self, ctx: CommandContext, args: tuple[str, ...]) -> str:
        if args and (len(args) > 1 or args[0].lower() != DOMAIN):
            raise Refused("takes no argument, or: domain")
        report = ctx.report
        sender = report["reporter"]
        if not sender:
            raise Refused("the report has no sender address to block")
        pattern = blocklist.domain_pattern(sender.rpartition("@")[2]) if args else sender
        protect(pattern, ctx.config)
        lines = []
        if report["state"] != wf.SPAM:
            lines.append(ctx.transition(wf.SPAM))
        if blocklist.block(ctx.store, pattern, report_id=ctx.report_id, by=ctx.actor, at=ctx.now):
            ctx.event(ev.SENDER_BLOCKED, pattern=pattern)
            lines.append(f"blocked: {shown(pattern)} (/unblock {shown(pattern)} lifts it)")
        else:
            lines.append(f"{shown(pattern)} was blocked already")
        return "\n".join(lines)


@register
class NotSpam(Command):
    name = "not-spam"
    description = (
        "the report is not spam: one a spam verdict held comes in now (receipt, notification);"
        " one marked with /spam goes back to its state, and its sender's block is lifted"
    )
    example = "/not-spam"

    def run(self, ctx: CommandContext, args: tuple[str, ...]) -> str:
        if args:
            raise Refused("takes no arguments")
        report = ctx.report
        if report["state"] != wf.SPAM:
            raise Refused(f"the report is {report['state']}, not spam")
        if ctx.held_as_spam():
            return ctx.transition(wf.NEW)
        lines = [ctx.reopen()]
        for pattern in blocklist.set_on(ctx.store, ctx.report_id):
            blocklist.unblock(ctx.store, pattern)
            ctx.event(ev.SENDER_UNBLOCKED, pattern=pattern)
            lines.append(f"unblocked: {shown(pattern)}")
        return "\n".join(lines)


@register
class Unblock(Command):
    name = "unblock"
    arguments = "ADDRESS | DOMAIN"
    description = "lift a block that /spam set (triaged blocked lists them)"
    example = "/unblock jane@example.net"

    def run(self, ctx: CommandContext, args: tuple[str, ...]) -> str:
        pattern = pattern_of(one_argument(args, "an address or a domain"))
        if not blocklist.unblock(ctx.store, pattern):
            raise Refused(f"{shown(pattern)} is not blocked; triaged blocked lists the blocks")
        ctx.event(ev.SENDER_UNBLOCKED, pattern=pattern)
        return f"unblocked: {shown(pattern)}"


def pattern_of(text: str) -> str:
    """The block pattern an /unblock argument names: an address, or "@domain" for a domain
    (written with or without its "@")."""
    text = text.lower()
    local, at, domain = text.rpartition("@")
    if at and local:
        return text
    return blocklist.domain_pattern(domain or text)


def shown(pattern: str) -> str:
    """A pattern as people write it: the address, or the bare domain."""
    return clean_header_text(pattern.lstrip("@") if pattern.startswith("@") else pattern, 120)


def protect(pattern: str, config: Config) -> None:
    """Refused when `pattern` would block mail of a maintainer or triaged's own addresses."""
    own = [*config.maintainers.members, *config.maintainers.notify, config.project.address]
    for address in own:
        if pattern == address:
            raise Refused(f"{address} is a maintainer's or the project's own address")
        if pattern == blocklist.domain_pattern(address.rpartition("@")[2]):
            raise Refused(f"{shown(pattern)} is the domain of {address}, which cannot be blocked")
