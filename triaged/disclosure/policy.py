"""What disclosure adds to a report's life: when it became fixed, the notes a transition to
fixed adds to the transcript, the move to disclosed (`/disclose` and `/state disclosed`), and
what mail to the reporter says of the embargo and credit."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from triaged.core import events as ev
from triaged.core import workflow as wf
from triaged.core.durations import add
from triaged.core.timefmt import parse_ts
from triaged.disclosure.credit import ReportContext, ask_credit_once, credit_words
from triaged.disclosure.embargo import (
    check_announcement,
    embargo_end,
    first_allowed_date,
    window,
)
from triaged.store import events


def fixed_at(ctx: ReportContext) -> datetime | None:
    """When the report became fixed (the latest time, not counting a /reopen into fixed);
    None unless it is fixed or disclosed now."""
    if ctx.report["state"] not in (wf.FIXED, wf.DISCLOSED):
        return None
    for row in events.state_changes(ctx.store, ctx.report_id):
        detail = ev.decode_detail(row["detail"])
        if detail.get("new") == wf.FIXED and not detail.get("reopened"):
            return parse_ts(str(row["at"]))
    return None


def disclose(ctx: ReportContext, *, early: bool = False) -> str:
    """Moves the report to disclosed, if the policy allows the announcement now (`early`: the
    issue is public already, so the embargo and `disclose_after_fix` no longer hold it back).
    Returns the transcript line; raises Refused."""
    if not early:
        report = ctx.report
        check_announcement(
            state=report["state"],
            stored=report["embargo"],
            now=ctx.now,
            fixed_at=fixed_at(ctx),
            policy=ctx.config.policy,
            when=ctx.composer.when,
        )
        return ctx.transition(wf.DISCLOSED)
    return ctx.transition(wf.DISCLOSED, early=True)


def after_transition(ctx: ReportContext, target: str) -> str:
    """What becoming `target` adds to the transcript: once fixed, the credit question and the
    embargo the policy allows."""
    if target != wf.FIXED:
        return ""
    notes = []
    if ask_credit_once(ctx):
        notes.append("the reporter is asked how to credit them")
    policy, when = ctx.config.policy, ctx.composer.when
    allowed = window(ctx.now, ctx.now, policy, when)
    end = embargo_end(ctx.report["embargo"], policy.calendar.timezone)
    if end is not None and end < allowed.earliest:
        day = first_allowed_date(allowed.earliest, policy.calendar.timezone)
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


def disclosure_context(ctx: ReportContext) -> dict[str, Any]:
    """What every mail to the reporter may say of the disclosure: the planned date in the
    project's time zone, and how they are credited."""
    report = ctx.report
    end = embargo_end(report["embargo"], ctx.config.project.timezone)
    return {
        "embargo_ends": ctx.composer.when(end) if end else None,
        "embargo_over": end is not None and end <= ctx.now,
        "credit": credit_words(report),
    }
