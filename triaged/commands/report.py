"""Commands on the report itself: its state, severity, handler, and its summary."""

from __future__ import annotations

import json
from datetime import timedelta

from cvss import CVSS3, CVSS4
from cvss.exceptions import CVSSError

from triaged.clocks import engine, wording
from triaged.commands import replies
from triaged.commands.base import (
    Command,
    CommandContext,
    Refused,
    address_argument,
    one_argument,
    register,
    text_argument,
)
from triaged.config import SEVERITIES
from triaged.core import workflow as wf
from triaged.core.text import clean_header_text
from triaged.disclosure.credit import reporter_credit
from triaged.disclosure.policy import disclose
from triaged.store import events, reports
from triaged.store.db import Store

# A reporter's /status is answered at most this often.
REPORTER_STATUS_EVERY = timedelta(hours=1)


@register
class Ack(Command):
    name = "ack"
    description = "acknowledge the report (meets the acknowledge clock)"
    example = "/ack"

    def run(self, ctx: CommandContext, args: tuple[str, ...]) -> str:
        return ctx.transition(wf.ACKNOWLEDGED)


@register
class Assign(Command):
    name = "assign"
    arguments = "ADDRESS"
    description = "make a maintainer the primary handler"
    example = "/assign alice@example.org"

    def run(self, ctx: CommandContext, args: tuple[str, ...]) -> str:
        address = address_argument(args, "a maintainer's address")
        if address not in ctx.config.maintainers.members:
            raise Refused(f"{address} is not a maintainer")
        ctx.set("handler", address)
        return f"handler: {address}"


@register
class Severity(Command):
    name = "severity"
    arguments = "|".join(SEVERITIES)
    description = "set the severity"
    example = "/severity high"

    def run(self, ctx: CommandContext, args: tuple[str, ...]) -> str:
        value = one_argument(args, "|".join(SEVERITIES))
        if value.lower() not in SEVERITIES:
            raise Refused(f"{value!r} is not a severity: use {', '.join(SEVERITIES)}")
        ctx.set("severity", value.lower())
        return f"severity: {value.lower()}"


@register
class Cvss(Command):
    name = "cvss"
    arguments = "VECTOR"
    description = "set the CVSS 3.x or 4.0 vector (the score is computed)"
    example = "/cvss CVSS:3.1/AV:N/AC:L/PR:N/UI:N/S:U/C:H/I:H/A:H"

    def run(self, ctx: CommandContext, args: tuple[str, ...]) -> str:
        vector = one_argument(args, "a CVSS vector")
        try:
            if vector.startswith("CVSS:4.0/"):
                v4 = CVSS4(vector)
                clean, score = v4.clean_vector(), float(v4.base_score)
            elif vector.startswith(("CVSS:3.0/", "CVSS:3.1/")):
                v3 = CVSS3(vector)
                clean, score = v3.clean_vector(), float(v3.base_score)
            else:
                raise Refused("the vector must start with CVSS:3.0/, CVSS:3.1/ or CVSS:4.0/")
        except CVSSError as exc:
            raise Refused(f"invalid vector: {clean_header_text(str(exc), 200)}") from None
        ctx.set("cvss", clean)
        ctx.set("cvss_score", score)
        return f"cvss: {clean} (base score {score})"


@register
class State(Command):
    name = "state"
    arguments = "STATE"
    description = "move the report to another state: " + ", ".join(wf.STATES)
    example = "/state fixing"

    def run(self, ctx: CommandContext, args: tuple[str, ...]) -> str:
        target = one_argument(args, "a state")
        if target.lower() == wf.DUPLICATE:
            raise Refused("use /duplicate ID")
        if target.lower() == wf.REJECTED:
            raise Refused("use /reject REASON")
        if target.lower() == wf.DISCLOSED:
            return disclose(ctx)
        return ctx.transition(target.lower())


@register
class Confirm(Command):
    name = "confirm"
    description = "confirm the problem (the reporter is told)"
    example = "/confirm"

    def run(self, ctx: CommandContext, args: tuple[str, ...]) -> str:
        return ctx.transition(wf.CONFIRMED)


@register
class Reject(Command):
    name = "reject"
    arguments = "REASON | template NAME"
    description = (
        "reject the report; the reason goes to the reporter (or, with template NAME, the reply"
        " template NAME)"
    )
    example = "/reject works as documented: the file is world-readable by design"

    def run(self, ctx: CommandContext, args: tuple[str, ...]) -> str:
        if len(args) == 2 and args[0].lower() == "template":
            text = replies.render(ctx.composer, args[1], ctx.report, ctx.now)
            return ctx.transition(wf.REJECTED, text=text, reason=f"template {args[1].lower()}")
        reason = text_argument(args, "a reason for the reporter")
        return ctx.transition(wf.REJECTED, reason=reason)


@register
class Duplicate(Command):
    name = "duplicate"
    arguments = "ID"
    description = "mark the report a duplicate of another one"
    example = "/duplicate k7f3q9xm"

    def run(self, ctx: CommandContext, args: tuple[str, ...]) -> str:
        other = one_argument(args, "the ID of the other report")
        other = other.lower().lstrip("#")
        if other == ctx.report_id:
            raise Refused("a report cannot duplicate itself")
        if ctx.store.report(other) is None:
            raise Refused(f"there is no report {other}")
        line = ctx.transition(wf.DUPLICATE, of=other)
        ctx.set("duplicate_of", other)
        return line


@register
class Waiting(Command):
    name = "waiting"
    description = "we wait for the reporter: the response clocks pause until they write"
    example = "/waiting"

    def run(self, ctx: CommandContext, args: tuple[str, ...]) -> str:
        started = reports.start_waiting(
            ctx.store, ctx.report_id, ctx.now, actor=ctx.actor, message=ctx.message
        )
        if not started:
            raise Refused("already waiting on the reporter")
        return "waiting on the reporter"


@register
class Close(Command):
    name = "close"
    description = "close the report"
    example = "/close"

    def run(self, ctx: CommandContext, args: tuple[str, ...]) -> str:
        return ctx.transition(wf.CLOSED)


@register
class Reopen(Command):
    name = "reopen"
    description = "reopen a closed, rejected, duplicate or spam report"
    example = "/reopen"

    def run(self, ctx: CommandContext, args: tuple[str, ...]) -> str:
        return ctx.reopen()


@register
class Status(Command):
    name = "status"
    description = (
        "the report's summary, in this transcript (a reporter may ask too: the state, what is"
        " next and by when, once an hour)"
    )
    example = "/status"
    for_reporters = True

    def run(self, ctx: CommandContext, args: tuple[str, ...]) -> str:
        if ctx.as_reporter:
            return reporter_status(ctx)
        return "status:\n" + summary(ctx.store, ctx.report_id)


def summary(store: Store, report_id: str) -> str:
    row = store.report(report_id)
    assert row is not None
    r = dict(row)
    lines = [
        f"  report:    {r['id']} {r['title']}",
        f"  state:     {r['state']}" + (" (waiting on the reporter)" if r["waiting"] else ""),
        f"  severity:  {r['severity'] or '-'}" + (f" (CVSS {r['cvss']})" if r["cvss"] else ""),
        f"  handler:   {r['handler'] or '-'}",
        f"  reporter:  {r['reporter'] or '-'}",
        f"  affects:   {r['affected'] or '-'}",
        f"  fixed in:  {r['fixed_in'] or '-'}",
        f"  CVEs:      {', '.join(json.loads(r['cves'])) or '-'}",
        f"  embargo:   {r['embargo'] or '-'}",
        f"  credit:    {reporter_credit(r).label()}",
    ]
    return "\n".join(lines)


def reporter_status(ctx: CommandContext) -> str:
    """What a reporter's /status answers: the state, and what is next with the date the
    policy promises it; nothing internal (no notes, names or severity). Once an hour."""
    when = ctx.composer.when
    last = events.last_command(
        ctx.store, ctx.report_id, ctx.actor, "status", ctx.now - REPORTER_STATUS_EVERY
    )
    if last is not None:
        raise Refused(
            f"you asked at {when(last)} already; the answer stands until"
            f" {when(last + REPORTER_STATUS_EVERY)}"
        )
    report = ctx.report
    history = (dict(row) for row in events.of_report(ctx.store, ctx.report_id))
    policy = engine.ClockPolicy.from_config(ctx.config.policy)
    running = engine.clocks(engine.parse_happenings(history), policy, ctx.now)
    # Not even the title: what a sender wrote is never mailed back (see the receipt).
    lines = [f"report {report['id']}: {wording.public_state(str(report['state']))}"]
    upcoming = wording.next_for_reporter(running, when) if report["state"] in wf.OPEN else []
    lines += [f"next: {line}" for line in upcoming]
    return "\n".join(lines)
