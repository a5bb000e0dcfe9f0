"""Email commands: one small registered class per command; `/help` is generated from them.

A command gets the report's context and its arguments, changes the report through the
context (which records every change as an event), and returns one line for the transcript.
"""

from __future__ import annotations

import json
import re
from abc import ABC, abstractmethod
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any, ClassVar

from cvss import CVSS3, CVSS4
from cvss.exceptions import CVSSError

from triaged import disclosure
from triaged import workflow as wf
from triaged.advisory import draft
from triaged.compose import Composer, Outgoing
from triaged.config import SEVERITIES, Config
from triaged.core.text import parse_address
from triaged.durations import add
from triaged.message import clean_header_text
from triaged.store import Store, parse_ts, ts
from triaged.versions import only_unsupported

_CVE = re.compile(r"^CVE-\d{4}-\d{4,19}$")
_VERSION = re.compile(r"^[A-Za-z0-9][A-Za-z0-9.+_~-]{0,63}$")


@dataclass(frozen=True)
class Outcome:
    ok: bool
    text: str


def done(text: str) -> Outcome:
    return Outcome(True, text)


def refused(text: str) -> Outcome:
    return Outcome(False, text)


@dataclass
class Context:
    """What a command may read and change: one report, inside the message's transaction."""

    store: Store
    config: Config
    composer: Composer
    report_id: str
    actor: str
    message: int | None
    now: datetime
    reply_text: str | None = None
    outgoing: list[Outgoing] = field(default_factory=list)
    reply_to_for: Callable[[str], str | None] = lambda _addr: None

    @property
    def report(self) -> dict[str, Any]:
        row = self.store.report(self.report_id)
        assert row is not None
        return dict(row)

    def event(self, kind: str, **detail: Any) -> None:
        self.store.event(
            self.report_id, self.now, kind, actor=self.actor, message=self.message, **detail
        )

    def set(self, column: str, value: Any) -> Any:
        """Changes one field of the report and records the change; returns the old value."""
        old = self.report[column]
        self.store.conn.execute(
            f"UPDATE reports SET {column} = ?, updated_at = ? WHERE id = ?",
            (value, ts(self.now), self.report_id),
        )
        self.event("set", field=column, old=old, new=value)
        return old

    def transition(self, target: str, **detail: Any) -> Outcome:
        current = self.report["state"]
        refusal = wf.check(current, target)
        if refusal is not None:
            return refused(refusal.reason)
        self.store.conn.execute(
            "UPDATE reports SET state = ?, previous_state = ?, updated_at = ? WHERE id = ?",
            (target, current, ts(self.now), self.report_id),
        )
        self.event("state", old=current, new=target, **detail)
        if target == wf.DISCLOSED:
            self.set("disclosed_at", ts(self.now))
        if target in wf.REPORTER_TOLD:
            self.tell_reporter(f"reporter_{target}.txt", f"Your report is {target}", **detail)
        return done(f"state: {current} -> {target}" + after_transition(self, target))

    def tell_reporter(self, template: str, subject: str, **context: Any) -> bool:
        reporter = self.report["reporter"]
        if not reporter:
            return False
        first = self.store.one(
            "SELECT message_id FROM messages WHERE report_id = ? AND kind = 'report'",
            (self.report_id,),
        )
        in_reply_to = first["message_id"] if first else None
        self.outgoing.append(
            self.composer.build(
                kind="reporter",
                to=reporter,
                subject=subject,
                template=template,
                context={"report": self.report, **disclosure_context(self), **context},
                now=self.now,
                report_id=self.report_id,
                in_reply_to=in_reply_to,
            )
        )
        self.event("reporter_mail", template=template)
        return True


class Command(ABC):
    name: ClassVar[str]
    arguments: ClassVar[str] = ""
    description: ClassVar[str]
    example: ClassVar[str]
    # Reporters may use only the commands marked as theirs.
    for_reporters: ClassVar[bool] = False

    @abstractmethod
    def run(self, ctx: Context, args: tuple[str, ...]) -> Outcome:
        """Does the command; returns the transcript line."""

    @classmethod
    def usage(cls) -> str:
        return f"/{cls.name} {cls.arguments}".rstrip()


COMMANDS: dict[str, Command] = {}


def register(cls: type[Command]) -> type[Command]:
    COMMANDS[cls.name] = cls()
    return cls


def help_text(for_reporters: bool = False) -> str:
    lines = []
    for command in COMMANDS.values():
        if for_reporters and not command.for_reporters:
            continue
        lines.append(f"{command.usage():<34} {command.description}")
        lines.append(f"{'':<34} e.g. {command.example}")
    return "\n".join(lines)


def _one(args: tuple[str, ...], what: str) -> str | Outcome:
    if len(args) != 1:
        return refused(f"takes exactly one argument: {what}")
    return args[0]


def _text(args: tuple[str, ...], what: str, limit: int = 500) -> str | Outcome:
    text = clean_header_text(" ".join(args), limit)
    return text if text else refused(f"needs {what}")


@register
class Ack(Command):
    name = "ack"
    description = "acknowledge the report (meets the acknowledge clock)"
    example = "/ack"

    def run(self, ctx: Context, args: tuple[str, ...]) -> Outcome:
        return ctx.transition(wf.ACKNOWLEDGED)


@register
class Assign(Command):
    name = "assign"
    arguments = "ADDRESS"
    description = "make a maintainer the primary handler"
    example = "/assign alice@example.org"

    def run(self, ctx: Context, args: tuple[str, ...]) -> Outcome:
        written = _one(args, "a maintainer's address")
        if isinstance(written, Outcome):
            return written
        address = parse_address(written)
        if address is None:
            return refused(f"{clean_header_text(written, 80)!r} is not an address")
        if address not in ctx.config.maintainers.members:
            return refused(f"{address} is not a maintainer")
        ctx.set("handler", address)
        return done(f"handler: {address}")


@register
class Severity(Command):
    name = "severity"
    arguments = "|".join(SEVERITIES)
    description = "set the severity"
    example = "/severity high"

    def run(self, ctx: Context, args: tuple[str, ...]) -> Outcome:
        value = _one(args, "|".join(SEVERITIES))
        if isinstance(value, Outcome):
            return value
        if value.lower() not in SEVERITIES:
            return refused(f"{value!r} is not a severity: use {', '.join(SEVERITIES)}")
        ctx.set("severity", value.lower())
        return done(f"severity: {value.lower()}")


@register
class Cvss(Command):
    name = "cvss"
    arguments = "VECTOR"
    description = "set the CVSS 3.x or 4.0 vector (the score is computed)"
    example = "/cvss CVSS:3.1/AV:N/AC:L/PR:N/UI:N/S:U/C:H/I:H/A:H"

    def run(self, ctx: Context, args: tuple[str, ...]) -> Outcome:
        vector = _one(args, "a CVSS vector")
        if isinstance(vector, Outcome):
            return vector
        try:
            if vector.startswith("CVSS:4.0/"):
                v4 = CVSS4(vector)
                clean, score = v4.clean_vector(), float(v4.base_score)
            elif vector.startswith(("CVSS:3.0/", "CVSS:3.1/")):
                v3 = CVSS3(vector)
                clean, score = v3.clean_vector(), float(v3.base_score)
            else:
                return refused("the vector must start with CVSS:3.0/, CVSS:3.1/ or CVSS:4.0/")
        except CVSSError as exc:
            return refused(f"invalid vector: {clean_header_text(str(exc), 200)}")
        ctx.set("cvss", clean)
        ctx.set("cvss_score", score)
        return done(f"cvss: {clean} (base score {score})")


@register
class State(Command):
    name = "state"
    arguments = "STATE"
    description = "move the report to another state: " + ", ".join(wf.STATES)
    example = "/state fixing"

    def run(self, ctx: Context, args: tuple[str, ...]) -> Outcome:
        target = _one(args, "a state")
        if isinstance(target, Outcome):
            return target
        if target.lower() == wf.DUPLICATE:
            return refused("use /duplicate ID")
        if target.lower() == wf.REJECTED:
            return refused("use /reject REASON")
        if target.lower() == wf.DISCLOSED:
            return COMMANDS["disclose"].run(ctx, ())
        return ctx.transition(target.lower())


@register
class Confirm(Command):
    name = "confirm"
    description = "confirm the problem (the reporter is told)"
    example = "/confirm"

    def run(self, ctx: Context, args: tuple[str, ...]) -> Outcome:
        return ctx.transition(wf.CONFIRMED)


@register
class Reject(Command):
    name = "reject"
    arguments = "REASON"
    description = "reject the report; the reason goes to the reporter"
    example = "/reject works as documented: the file is world-readable by design"

    def run(self, ctx: Context, args: tuple[str, ...]) -> Outcome:
        reason = _text(args, "a reason for the reporter")
        if isinstance(reason, Outcome):
            return reason
        return ctx.transition(wf.REJECTED, reason=reason)


@register
class Duplicate(Command):
    name = "duplicate"
    arguments = "ID"
    description = "mark the report a duplicate of another one"
    example = "/duplicate k7f3q9xm"

    def run(self, ctx: Context, args: tuple[str, ...]) -> Outcome:
        other = _one(args, "the ID of the other report")
        if isinstance(other, Outcome):
            return other
        other = other.lower().lstrip("#")
        if other == ctx.report_id:
            return refused("a report cannot duplicate itself")
        if ctx.store.report(other) is None:
            return refused(f"there is no report {other}")
        outcome = ctx.transition(wf.DUPLICATE, of=other)
        if outcome.ok:
            ctx.set("duplicate_of", other)
        return outcome


@register
class Affects(Command):
    name = "affects"
    arguments = "RANGE"
    description = "the affected versions"
    example = "/affects >=1.0 <1.0.4"

    def run(self, ctx: Context, args: tuple[str, ...]) -> Outcome:
        text = _text(args, "a version range", 200)
        if isinstance(text, Outcome):
            return text
        ctx.set("affected", text)
        if only_unsupported(text, ctx.config):
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
        version = _one(args, "a version")
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
        cve = _one(args, "a CVE ID")
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


def fixed_at(ctx: Context) -> datetime | None:
    """When the report became fixed (the latest time, not counting a /reopen into fixed);
    None unless it is fixed or disclosed now."""
    if ctx.report["state"] not in (wf.FIXED, wf.DISCLOSED):
        return None
    rows = ctx.store.all(
        "SELECT at, detail FROM events WHERE report_id = ? AND kind = 'state' ORDER BY id DESC",
        (ctx.report_id,),
    )
    for row in rows:
        detail = json.loads(row["detail"] or "{}")
        if detail.get("new") == wf.FIXED and not detail.get("reopened"):
            return parse_ts(str(row["at"]))
    return None


def ask_credit_once(ctx: Context) -> bool:
    """Asks the reporter how to credit them, once per report, unless they (or a maintainer)
    already said; the `credit_asked` event marks it. True when the question went out."""
    report = ctx.report
    if disclosure.credit_words(report)["kind"] != "none":
        return False
    asked = ctx.store.one(
        "SELECT 1 FROM events WHERE report_id = ? AND kind = 'credit_asked'", (ctx.report_id,)
    )
    if asked is not None:
        return False
    if not ctx.tell_reporter("reporter_credit.txt", "How would you like to be credited?"):
        return False
    ctx.event("credit_asked")
    return True


def after_transition(ctx: Context, target: str) -> str:
    """What becoming `target` adds to the transcript: once fixed, the credit question and the
    embargo the policy allows."""
    if target != wf.FIXED:
        return ""
    notes = []
    if ask_credit_once(ctx):
        notes.append("the reporter is asked how to credit them")
    policy, when = ctx.config.policy, ctx.composer.when
    allowed = disclosure.window(ctx.now, ctx.now, policy, when)
    end = disclosure.embargo_end(ctx.report["embargo"], policy.calendar.timezone)
    if end is not None and end < allowed.earliest:
        day = disclosure.first_allowed_date(allowed.earliest, policy.calendar.timezone)
        notes.append(
            f"the embargo ends {when(end)}, earlier than the policy allows now that the fix is"
            f" out ({allowed.why}): /embargo {day} or later"
        )
    elif end is None and policy.embargo_default is not None:
        proposed = max(add(ctx.now, policy.embargo_default, policy.calendar), allowed.earliest)
        notes.append(
            f"no embargo yet: /embargo alone sets one ending {when(proposed)}"
            f" ({policy.embargo_default.human()}, embargo_default)"
        )
    elif end is None and policy.disclose_after_fix is not None:
        notes.append(f"the announcement may come from {when(allowed.earliest)} ({allowed.why})")
    return "".join(f"\nnote: {note}" for note in notes)


def disclosure_context(ctx: Context) -> dict[str, Any]:
    """What every mail to the reporter may say of the disclosure: the planned date in the
    project's time zone, and how they are credited."""
    report = ctx.report
    end = disclosure.embargo_end(report["embargo"], ctx.config.project.timezone)
    return {
        "embargo_ends": ctx.composer.when(end) if end else None,
        "embargo_over": end is not None and end <= ctx.now,
        "credit": disclosure.credit_words(report),
    }


@register
class Credit(Command):
    name = "credit"
    arguments = '"NAME" | anonymous'
    description = "how the reporter is credited (the reporter may use this command too)"
    example = '/credit "Jane Doe"'
    for_reporters = True

    def run(self, ctx: Context, args: tuple[str, ...]) -> Outcome:
        name = _text(args, 'a name in double quotes, or "anonymous"', 100)
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
        written = _one(args, "an address")
        if isinstance(written, Outcome):
            return written
        address = parse_address(written)
        if address is None:
            return refused(f"{clean_header_text(written, 80)!r} is not an address")
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
class Waiting(Command):
    name = "waiting"
    description = "we wait for the reporter: the response clocks pause until they write"
    example = "/waiting"

    def run(self, ctx: Context, args: tuple[str, ...]) -> Outcome:
        if ctx.report["waiting"]:
            return refused("already waiting on the reporter")
        ctx.set("waiting", 1)
        return done("waiting on the reporter")


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


@register
class Close(Command):
    name = "close"
    description = "close the report"
    example = "/close"

    def run(self, ctx: Context, args: tuple[str, ...]) -> Outcome:
        return ctx.transition(wf.CLOSED)


@register
class Reopen(Command):
    name = "reopen"
    description = "reopen a closed, rejected, duplicate or spam report"
    example = "/reopen"

    def run(self, ctx: Context, args: tuple[str, ...]) -> Outcome:
        report = ctx.report
        if report["state"] not in wf.TERMINAL:
            return refused(f"the report is {report['state']}, not ended")
        target = wf.reopen_target(report["previous_state"])
        ctx.store.conn.execute(
            "UPDATE reports SET state = ?, previous_state = ?, duplicate_of = NULL,"
            " updated_at = ? WHERE id = ?",
            (target, report["state"], ts(ctx.now), ctx.report_id),
        )
        ctx.event("state", old=report["state"], new=target, reopened=True)
        return done(f"state: {report['state']} -> {target}")


@register
class Status(Command):
    name = "status"
    description = "the report's summary, in this transcript"
    example = "/status"

    def run(self, ctx: Context, args: tuple[str, ...]) -> Outcome:
        return done("status:\n" + summary(ctx.store, ctx.report_id))


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


def summary(store: Store, report_id: str) -> str:
    row = store.report(report_id)
    assert row is not None
    r = dict(row)
    credit = json.loads(r["credit"]) if r["credit"] else None
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
        "  credit:    "
        + (
            "-"
            if credit is None
            else "anonymous"
            if credit["kind"] == "anonymous"
            else credit["name"]
        ),
    ]
    return "\n".join(lines)
