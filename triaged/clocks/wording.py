"""How mail speaks of the clocks: their names, what meets each one, what a receipt promises.

One place for the words; the dates always come from the engine (triaged/clocks/engine.py), so
a receipt promises exactly the deadlines the clocks then hold the team to.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from datetime import datetime

from triaged.clocks import engine
from triaged.core import workflow as wf

# How mail names each clock.
LABELS = {
    engine.ACKNOWLEDGE: "Acknowledge",
    engine.RESPOND: "Detailed response",
    engine.RESOLVE: "Resolve",
    engine.UPDATE: "Reporter update",
    engine.EMBARGO: "Embargo",
}
# The one command line that meets a clock, and what it does.
MEETS = {
    engine.ACKNOWLEDGE: (
        "/ack",
        "acknowledges the report (the reporter hears from you with /reply).",
    ),
    engine.RESPOND: (
        "/reply",
        "with your detailed response on the lines below it, sends it to the reporter;"
        " /confirm or /reject REASON also meet this clock.",
    ),
    engine.RESOLVE: ("/state fixed", "once the fix is released (add /fixed-in VERSION)."),
}
# The subjects of the maintainers' notices, by notice kind.
NOTICE_SUBJECTS = {
    "remind": "Reminder: {label} due {due}",
    "escalate": "Missed: {label} was due {due}",
    "overdue": "Still overdue: {label} was due {due}",
}
EMBARGO_SUBJECTS = {
    "remind": "Reminder: the embargo ends {ends}",
    "escalate": "Publish now: the embargo ended {ends}",
    "overdue": "Still not disclosed: the embargo ended {ends}",
}
# What the reporter reads about a state in a periodic update.
PUBLIC_STATES = {
    wf.NEW: "received; we are looking at it",
    wf.ACKNOWLEDGED: "acknowledged; we are assessing it",
    wf.CONFIRMED: "confirmed; we are working on a fix",
    wf.FIXING: "being fixed",
    wf.FIXED: "fixed",
    wf.DISCLOSED: "fixed and disclosed",
}
# The clocks a receipt names with their date, in the receipt's words.
PROMISES = {
    engine.ACKNOWLEDGE: "an acknowledgement from a maintainer by {when}",
    engine.RESPOND: "a detailed response with the next steps by {when}",
}

When = Callable[[datetime], str]


def label(clock: engine.Clock, severity: str | None = None) -> str:
    """ "Acknowledge"; the resolve clock with the severity it runs for: "Resolve (high)"."""
    text = LABELS[clock.name]
    return f"{text} ({severity})" if clock.name == engine.RESOLVE and severity else text


def receipt_promises(clocks: Sequence[engine.Clock], when: When) -> list[str]:
    """What a receipt promises the reporter, from the clocks the report starts with."""
    promises = [
        PROMISES[clock.name].format(when=when(clock.due))
        for clock in clocks
        if clock.name in PROMISES and clock.due is not None
    ]
    update = next((c for c in clocks if c.name == engine.UPDATE and c.duration), None)
    if update is not None and update.duration is not None:
        every = update.duration.human()
        promises.append(f"an update at least every {every} while the report is open")
    return promises


def first_deadlines(clocks: Sequence[engine.Clock], when: When) -> list[str]:
    """The same deadlines, as the maintainers' notification lists them: "Acknowledge by: ..."."""
    return [
        f"{LABELS[clock.name]} by: {when(clock.due)}"
        for clock in clocks
        if clock.name in PROMISES and clock.due is not None
    ]


# What a reporter's /status says is next, by clock (the receipt's words for the first two).
NEXT = {
    **PROMISES,
    engine.RESOLVE: "the fix our policy promises, by {when}",
    engine.UPDATE: "our next update, by {when}",
    engine.EMBARGO: "the planned disclosure, {when}",
}
# The ended states as a reporter reads them (PUBLIC_STATES has the open ones).
ENDED_STATES = {
    wf.CLOSED: "closed",
    wf.REJECTED: "rejected",
    wf.DUPLICATE: "closed as a duplicate of another report",
    wf.SPAM: "closed",
}


def public_state(state: str) -> str:
    """A report's state as the reporter reads it."""
    return PUBLIC_STATES.get(state) or ENDED_STATES.get(state) or state


def next_for_reporter(clocks: Sequence[engine.Clock], when: When) -> list[str]:
    """What the reporter may expect next and by when the policy promises it, earliest first;
    nothing internal (no severity, names or notes)."""
    running = sorted(
        (c for c in clocks if c.running and c.due is not None and c.name in NEXT),
        key=lambda c: c.due or c.started,
    )
    lines = [NEXT[c.name].format(when=when(c.due)) for c in running if c.due is not None]
    if any(c.paused for c in clocks if c.met_at is None and c.stopped_at is None):
        lines.append("some of our deadlines are on hold while we wait for your answer")
    return lines
