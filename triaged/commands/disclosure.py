"""Commands about disclosure: affected and fixed versions, CVE IDs, the embargo, /disclose."""

from __future__ import annotations

import json
import re

from triaged.commands.base import (
    Command,
    CommandContext,
    Refused,
    one_argument,
    register,
    text_argument,
)
from triaged.core.related import cve_term
from triaged.core.text import clean_header_text
from triaged.core.versions import touches_only_unsupported
from triaged.disclosure import embargo
from triaged.disclosure.credit import ask_credit_once
from triaged.disclosure.policy import disclose, fixed_at
from triaged.store import terms

_CVE = re.compile(r"^CVE-\d{4}-\d{4,19}$")
_VERSION = re.compile(r"^[A-Za-z0-9][A-Za-z0-9.+_~-]{0,63}$")


@register
class Affects(Command):
    name = "affects"
    arguments = "RANGE"
    description = "the affected versions"
    example = "/affects >=1.0 <1.0.4"

    def run(self, ctx: CommandContext, args: tuple[str, ...]) -> str:
        text = text_argument(args, "a version range", 200)
        ctx.set("affected", text)
        if touches_only_unsupported(text, ctx.config.package.supported):
            lines = ", ".join(ctx.config.package.supported)
            return f"affects: {text}\nnote: only unsupported versions (supported: {lines})"
        return f"affects: {text}"


@register
class FixedIn(Command):
    name = "fixed-in"
    arguments = "VERSION"
    description = "the release that fixes it"
    example = "/fixed-in 1.0.4"

    def run(self, ctx: CommandContext, args: tuple[str, ...]) -> str:
        version = one_argument(args, "a version")
        if not _VERSION.match(version):
            raise Refused(f"{clean_header_text(version, 80)!r} is not a version")
        ctx.set("fixed_in", version)
        return f"fixed in: {version}"


@register
class Cve(Command):
    name = "cve"
    arguments = "CVE-YYYY-NNNN"
    description = "add a CVE ID"
    example = "/cve CVE-2026-1234"

    def run(self, ctx: CommandContext, args: tuple[str, ...]) -> str:
        cve = one_argument(args, "a CVE ID").upper()
        if not _CVE.match(cve):
            raise Refused(f"{clean_header_text(cve, 80)!r} is not a CVE ID (CVE-YYYY-NNNN)")
        cves = json.loads(ctx.report["cves"])
        if cve in cves:
            raise Refused(f"{cve} is already recorded")
        ctx.set("cves", json.dumps([*cves, cve]))
        # Another report naming this CVE now lists this one as possibly related.
        terms.add(ctx.store, ctx.report_id, [cve_term(cve)])
        return f"cve: {', '.join([*cves, cve])}"


@register
class Embargo(Command):
    name = "embargo"
    arguments = "YYYY-MM-DD | +DURATION | none"
    description = (
        "set the embargo: when the announcement is planned (a date, a date and time, or +72h"
        " from now; none clears it; alone: the policy's embargo_default); the reporter is told"
    )
    example = "/embargo 2026-12-01"

    def run(self, ctx: CommandContext, args: tuple[str, ...]) -> str:
        if len(args) > 1:
            raise Refused("takes one argument: YYYY-MM-DD, YYYY-MM-DDTHH:MM, +DURATION or none")
        report, when = ctx.report, ctx.composer.when
        change = embargo.change(
            args[0] if args else None,
            state=report["state"],
            stored=report["embargo"],
            now=ctx.now,
            fixed_at=fixed_at(ctx),
            policy=ctx.config.policy,
            when=when,
        )
        current = embargo.embargo_end(report["embargo"], ctx.config.policy.calendar.timezone)
        previous = when(current) if current else None
        ctx.set("embargo", change.stored)
        if change.end is None:
            ctx.tell_reporter(
                "reporter_embargo.txt",
                "The planned disclosure date is withdrawn",
                previous=previous,
            )
            return "embargo: none (the reporter is told the date is withdrawn)"
        ctx.tell_reporter(
            "reporter_embargo.txt", f"Planned disclosure: {when(change.end)}", previous=previous
        )
        asked = ask_credit_once(ctx)
        told = "the reporter is told" + ("; asked how to credit them" if asked else "")
        why = f" ({change.why})" if change.why else ""
        return f"embargo: ends {when(change.end)}{why} ({told})"


@register
class Disclose(Command):
    name = "disclose"
    arguments = "[early]"
    description = (
        "the fix and the announcement are public (fixed -> disclosed; the reporter is told);"
        " refused before the embargo ends or the policy's disclose_after_fix, unless early"
    )
    example = "/disclose"

    def run(self, ctx: CommandContext, args: tuple[str, ...]) -> str:
        early = len(args) == 1 and args[0].lower() == "early"
        if args and not early:
            raise Refused('takes no argument, or "early" when the issue is public already')
        return disclose(ctx, early=early)
