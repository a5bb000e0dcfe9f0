"""Commands about disclosure: affected and fixed versions, CVE IDs, the embargo, /disclose."""

from __future__ import annotations

import json
import re

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
from triaged.core import workflow as wf
from triaged.core.durations import add
from triaged.core.versions import touches_only_unsupported
from triaged.disclosure import embargo as disclosure
from triaged.disclosure.credit import ask_credit_once
from triaged.disclosure.policy import fixed_at
from triaged.mail.parse import clean_header_text

_CVE = re.compile(r"^CVE-\d{4}-\d{4,19}$")
_VERSION = re.compile(r"^[A-Za-z0-9][A-Za-z0-9.+_~-]{0,63}$")


@register
class Affects(Command):
    name = "affects"
    arguments = "RANGE"
    description = "the affected versions"
    example = "/affects >=1.0 <1.0.4"

    def run(self, ctx: Context, args: tuple[str, ...]) -> Outcome:
        text = text_argument(args, "a version range", 200)
        if isinstance(text, Outcome):
            return text
        ctx.set("affected", text)
        if touches_only_unsupported(text, ctx.config.package.supported):
            lines = ", ".join(ctx.config.package.supported)
            return done(f"affects: {text}\nnote: only unsupported versions (supported: {lines})")
        return done(f"affects: {text}")


@register
class FixedIn(Command):
    name = "fixed-in"
    arguments = "VERSION"
    description = "the release that fixes it"
    example = "/fixed-in 1.0.4"

    def run(self, ctx: Context, args: tuple[str, ...]) -> Outcome:
        version = one_argument(args, "a version")
        if isinstance(version, Outcome):
            return version
        if not _VERSION.match(version):
            return refused(f"{clean_header_text(version, 80)!r} is not a version")
        ctx.set("fixed_in", version)
        return done(f"fixed in: {version}")


@register
class Cve(Command):
    name = "cve"
    arguments = "CVE-YYYY-NNNN"
    description = "add a CVE ID"
    example = "/cve CVE-2026-1234"

    def run(self, ctx: Context, args: tuple[str, ...]) -> Outcome:
        cve = one_argument(args, "a CVE ID")
        if isinstance(cve, Outcome):
            return cve
        cve = cve.upper()
        if not _CVE.match(cve):
            return refused(f"{clean_header_text(cve, 80)!r} is not a CVE ID (CVE-YYYY-NNNN)")
        cves = json.loads(ctx.report["cves"])
        if cve in cves:
            return refused(f"{cve} is already recorded")
        ctx.set("cves", json.dumps([*cves, cve]))
        return done(f"cve: {', '.join([*cves, cve])}")


@register
class Embargo(Command):
    name = "embargo"
    arguments = "YYYY-MM-DD | +DURATION | none"
    description = (
        "set the embargo: when the announcement is planned (a date, a date and time, or +72h"
        " from now; none clears it; alone: the policy's embargo_default); the reporter is told"
    )
    example = "/embargo 2026-12-01"

    def run(self, ctx: Context, args: tuple[str, ...]) -> Outcome:
        if len(args) > 1:
            return refused("takes one argument: YYYY-MM-DD, YYYY-MM-DDTHH:MM, +DURATION or none")
        report = ctx.report
        if report["state"] in wf.TERMINAL or report["state"] == wf.DISCLOSED:
            return refused(f"the report is {report['state']}: an embargo no longer applies")
        policy, when = ctx.config.policy, ctx.composer.when
        tz = policy.calendar.timezone
        current = disclosure.embargo_end(report["embargo"], tz)
        previous = when(current) if current else None
        if args and args[0].lower() == "none":
            if report["embargo"] is None:
                return refused("no embargo is set")
            ctx.set("embargo", None)
            ctx.tell_reporter(
                "reporter_embargo.txt",
                "The planned disclosure date is withdrawn",
                previous=previous,
            )
            return done("embargo: none (the reporter is told the date is withdrawn)")
        allowed = disclosure.window(ctx.now, fixed_at(ctx), policy, when)
        if allowed.latest is not None and allowed.earliest > allowed.latest:
            return refused(
                f"the policy allows no date now: the earliest, {when(allowed.earliest)}"
                f" ({allowed.why}), is after the latest, {when(allowed.latest)} (embargo_max)"
            )
        note = ""
        if args:
            try:
                requested = disclosure.parse_request(args[0], ctx.now, policy)
            except ValueError as exc:
                return refused(clean_header_text(str(exc), 200))
        elif policy.embargo_default is not None:
            default_end = add(ctx.now, policy.embargo_default, policy.calendar)
            requested = disclosure.at_instant(max(default_end, allowed.earliest), tz)
            note = f" ({policy.embargo_default.human()} from now: embargo_default)"
            if default_end < allowed.earliest:
                note = " (the earliest the policy allows, later than embargo_default)"
        else:
            return refused(
                "needs a date (YYYY-MM-DD) or +DURATION: the policy has no embargo_default"
            )
        end = requested.end
        if end <= ctx.now:
            return refused(
                f"the embargo would have ended {when(end)}, which is past;"
                " /disclose once the issue is public"
            )
        if end < allowed.earliest:
            day = disclosure.first_allowed_date(allowed.earliest, tz)
            local = allowed.earliest.astimezone(tz)
            exact = (
                f" (or /embargo {local.strftime('%Y-%m-%dT%H:%M')})" if local.date() != day else ""
            )
            return refused(
                f"{when(end)} is earlier than the policy allows: the earliest is"
                f" {when(allowed.earliest)}, {allowed.why}; /embargo {day}{exact} or later"
            )
        if allowed.latest is not None and end > allowed.latest:
            cap = policy.embargo_max.human() if policy.embargo_max else ""
            return refused(
                f"{when(end)} is later than the policy allows: an embargo lasts at most {cap}"
                f" from when it is set (embargo_max), so it must end by {when(allowed.latest)}"
            )
        if requested.stored == report["embargo"]:
            return refused(f"the embargo already ends {when(end)}")
        ctx.set("embargo", requested.stored)
        ctx.tell_reporter(
            "reporter_embargo.txt", f"Planned disclosure: {when(end)}", previous=previous
        )
        asked = ask_credit_once(ctx)
        told = "the reporter is told" + ("; asked how to credit them" if asked else "")
        return done(f"embargo: ends {when(end)}{note} ({told})")


@register
class Disclose(Command):
    name = "disclose"
    arguments = "[early]"
    description = (
        "the fix and the announcement are public (fixed -> disclosed; the reporter is told);"
        " refused before the embargo ends or the policy's disclose_after_fix, unless early"
    )
    example = "/disclose"

    def run(self, ctx: Context, args: tuple[str, ...]) -> Outcome:
        early = len(args) == 1 and args[0].lower() == "early"
        if args and not early:
            return refused('takes no argument, or "early" when the issue is public already')
        report, policy, when = ctx.report, ctx.config.policy, ctx.composer.when
        if report["state"] == wf.FIXED and not early:
            end = disclosure.embargo_end(report["embargo"], policy.calendar.timezone)
            if end is not None and end > ctx.now:
                return refused(
                    f"the embargo ends {when(end)}: /disclose early if the issue is public"
                    " already, or move the date with /embargo"
                )
            fixed, after = fixed_at(ctx), policy.disclose_after_fix
            if fixed is not None and after is not None:
                allowed = add(fixed, after, policy.calendar)
                if allowed > ctx.now:
                    return refused(
                        f"the policy allows the announcement from {when(allowed)},"
                        f" {after.human()} after the fix (disclose_after_fix): /disclose early"
                        " if the issue is public already"
                    )
        if early:
            return ctx.transition(wf.DISCLOSED, early=True)
        return ctx.transition(wf.DISCLOSED)
