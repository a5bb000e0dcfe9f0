"""The policy's clocks, and the notices they give. Pure: no I/O, no database.

The clock runner reads a report's events, turns them into `Happening`s (`parse_happenings`),
derives the report's `Clock`s (`clocks`), and asks which `Notice`s are due (`notices_due`),
passing the keys of the notices it has already sent for that report.

Happenings (kinds)
    received        the report came in: every clock starts here.
    ack             a maintainer's /ack (the report became "acknowledged").
    reply           a /reply to the reporter.
    confirmed       /confirm (the reporter is told).
    rejected        /reject (the reporter is told); the report also ends ("closed").
    fixed           the report became "fixed".
    unfixed         "fixed" went back to "fixing": the fix was not one.
    closed          any terminal state: closed, rejected, duplicate, spam.
    reopened        /reopen; `value` is the state the report went back to.
    waiting         /waiting: we wait on the reporter.
    reporter_wrote  the wait is over (the reporter, or another participant, wrote).
    severity        the severity was set; `value` is the new one (None when cleared).
    update_sent     the runner sent a periodic update to the reporter.
    embargo         the embargo was set; `value` is the stored end (see
                    triaged/disclosure/embargo.py), None when it was cleared.
    disclosed       the report was disclosed (its `disclosed_at` was set).

Clocks
    acknowledge  from "received" until the first ack, reply, confirmed or rejected (a
                 /confirm or /reject of a new report tells the reporter, so it acknowledges
                 too). Never paused.
    respond      the detailed response / initial assessment: from "received" until the first
                 "reply" sent once the report was already acknowledged (a reply that is itself
                 the acknowledgement does not count; `/ack` and `/reply` in one mail do, since
                 the commands run in order), or "confirmed" / "rejected".
    resolve      from "received" (policies promise a fix within N days of the report, as the
                 reporter counts), for the duration of the current severity: a severity change
                 recomputes the due time (same clock, same notice keys, so nothing is sent
                 twice). No severity, or none configured for it: no resolve clock, unless the
                 policy's mapping has a "default" entry. Met at "fixed"; "unfixed" makes it
                 unmet again with its original due time. Never paused.
    update       while the report is open and not fixed, the reporter hears from us at least
                 every `update_every`: due = last contact + update_every, where a contact is an
                 "update_sent", a "reply", or a state mail ("confirmed"; "rejected" and
                 "fixed" end the clock anyway). It is never "met": it stops (`stopped_at`) at
                 "fixed" or a terminal state, and resumes on "unfixed" from the last contact.
    embargo      from the latest "embargo" happening until the embargo's end (its due time);
                 met at "disclosed". Moving the date moves the due time under the same keys,
                 so nothing already sent is sent again; but a date set once the previous end
                 has passed (the team postponed the announcement) starts a new round
                 ("embargo#2"), with its own reminders and "publish now". Cleared: no clock.
                 A terminal state stops it; /reopen starts a new round if it is still unmet.
                 Not a policy promise with a duration: it exists only while an embargo is set.

Pauses: between "waiting" and the next "reporter_wrote", respond and update are paused (never
acknowledge or resolve). A pause that begins before the clock's due time moves the due time
later by its length: due = add(start + total pause, duration), for business-day durations
too (simple: a pause over a weekend shifts a business-day deadline by the calendar days).
A pause that begins after the due time does not move it (the deadline was already missed),
but no notices are sent while it lasts. While paused, `due` is None and `remaining` says
what was left when the pause began.

Terminal states stop every unmet clock (`stopped_at`). "reopened" starts a new cycle: respond,
resolve and update restart from the reopen time (resolve and update only when the report went
back to a state before "fixed"), and acknowledge restarts too if it had never been met. Clocks
of a later cycle have `cycle` 2, 3, ... and their notice keys say so ("respond#2:escalate").

Notices (`notices_due`), for each clock neither met, stopped nor paused:
    "<key>:remind:<offset>"  `offset` before the due time, for each offset of `remind_before`
                             (of `embargo_remind` for the embargo clock);
                             none when it would come at or before the clock's start, and none
                             once the due time has passed (the escalation supersedes it).
    "<key>:escalate"         at the due time (for the embargo: "publish now").
    "<key>:overdue:<n>"      n * overdue_every after the due time, n = 1, 2, ...
    "<key>:<n>"              (update clock, e.g. "update:7") at its due time; n = periodic
                             updates sent so far + 1, so the runner must record an
                             "update_sent" event when it sends one.
<key> is the clock's name, or "name#cycle" after a reopen. Keys do not depend on the due time:
a deadline moved by a pause or a severity change does not repeat a notice already sent.
Only notices due at `now` count, and of each (clock, kind) only the latest one: if its key was
sent, nothing is returned for that group (earlier ones are superseded for good). So a daemon
that was down for days sends one mail per due item, and a pass run twice at the same instant,
with the first pass's keys added to `sent`, returns nothing.
"""

from __future__ import annotations

from collections.abc import Collection, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import TYPE_CHECKING, Any
from zoneinfo import ZoneInfo

from triaged.core import events as ev
from triaged.core import workflow as wf
from triaged.core.durations import Calendar, Duration, Share, add
from triaged.core.timefmt import parse_ts
from triaged.disclosure.embargo import embargo_end

if TYPE_CHECKING:
    from triaged.config import PolicyConfig

ACKNOWLEDGE = "acknowledge"
RESPOND = "respond"
RESOLVE = "resolve"
UPDATE = "update"
CLOCK_NAMES = (ACKNOWLEDGE, RESPOND, RESOLVE, UPDATE)
# Not a duration of the policy: it runs while an embargo is set, after the others.
EMBARGO = "embargo"

# Happening kinds.
RECEIVED = "received"
ACK = "ack"
REPLY = "reply"
CONFIRMED = "confirmed"
REJECTED = "rejected"
FIXED = "fixed"
UNFIXED = "unfixed"
CLOSED = "closed"
REOPENED = "reopened"
WAITING = "waiting"
REPORTER_WROTE = "reporter_wrote"
SEVERITY = "severity"
UPDATE_SENT = "update_sent"
EMBARGO_SET = "embargo"
DISCLOSED = "disclosed"

_ACKS = frozenset({ACK, REPLY, CONFIRMED, REJECTED})
_CONTACTS = frozenset({UPDATE_SENT, REPLY, CONFIRMED, REJECTED, FIXED})
_PAUSABLE = frozenset({RESPOND, UPDATE})
_BEFORE_FIX = frozenset({wf.NEW, wf.ACKNOWLEDGED, wf.CONFIRMED, wf.FIXING})
_ONE_DAY = Duration(1, "d")


@dataclass(frozen=True)
class Happening:
    """One thing that happened to a report, derived from its events."""

    at: datetime  # aware
    kind: str
    value: str | None = None


@dataclass(frozen=True)
class ClockPolicy:
    acknowledge: Duration | None
    respond: Duration | None
    resolve: Mapping[str, Duration]  # by severity; "default" applies to any other
    update_every: Duration | None
    remind_before: tuple[Duration | Share, ...] = ()
    overdue_every: Duration = _ONE_DAY
    calendar: Calendar = field(default_factory=lambda: Calendar(ZoneInfo("UTC")))
    embargo_remind: tuple[Duration | Share, ...] = (Duration(2, "d"),)

    @classmethod
    def from_config(cls, policy: PolicyConfig) -> ClockPolicy:
        return cls(
            acknowledge=policy.acknowledge,
            respond=policy.respond,
            resolve=dict(policy.resolve),
            update_every=policy.update_every,
            remind_before=policy.remind_before,
            overdue_every=policy.overdue_every,
            calendar=policy.calendar,
            embargo_remind=policy.embargo_remind,
        )

    def reminders(self, name: str) -> tuple[Duration | Share, ...]:
        return self.embargo_remind if name == EMBARGO else self.remind_before

    def duration(self, name: str, severity: str | None = None) -> Duration | None:
        if name == ACKNOWLEDGE:
            return self.acknowledge
        if name == RESPOND:
            return self.respond
        if name == UPDATE:
            return self.update_every
        if name == RESOLVE:
            found = self.resolve.get(severity) if severity is not None else None
            return found if found is not None else self.resolve.get("default")
        raise ValueError(f"unknown clock {name!r}")


@dataclass(frozen=True)
class Clock:
    name: str  # "acknowledge" | "respond" | "resolve" | "update" | "embargo"
    started: datetime  # update: the last contact (or the cycle's start)
    due: datetime | None  # None while paused
    met_at: datetime | None
    paused: bool
    stopped_at: datetime | None = None  # ended unmet: a terminal state; update: also "fixed"
    remaining: timedelta | None = None  # while paused: what was left when the pause began
    cycle: int = 1  # 2 after the first /reopen that restarted it, ...
    duration: Duration | None = None
    updates_sent: int = 0  # update clock: periodic updates sent so far (the whole report)

    @property
    def key(self) -> str:
        """The prefix of this clock's notice keys."""
        return self.name if self.cycle == 1 else f"{self.name}#{self.cycle}"

    @property
    def running(self) -> bool:
        """Neither met, stopped nor paused: it may give notices."""
        return self.met_at is None and self.stopped_at is None and not self.paused

    def overdue(self, now: datetime) -> bool:
        return self.running and self.due is not None and self.due <= now


@dataclass(frozen=True)
class Notice:
    key: str  # idempotency key, unique per (report, clock, kind, instance)
    clock: str
    kind: str  # "remind" | "escalate" | "overdue" | "update"
    at: datetime  # when it became due


# --- events -> happenings ---------------------------------------------------------------


def _detail(row: Mapping[str, Any]) -> dict[str, Any]:
    try:
        raw = row["detail"]
    except (KeyError, IndexError):
        return {}
    return ev.decode_detail(raw)


def _kinds(kind: str, detail: dict[str, Any]) -> list[tuple[str, str | None]]:
    if kind == ev.RECEIVED:
        return [(RECEIVED, None)]
    if kind == ev.REPLY:
        return [(REPLY, None)]
    if kind == ev.UPDATE_SENT:
        return [(UPDATE_SENT, None)]
    if kind in (ev.WAITING_OVER, ev.FOLLOWUP):
        return [(REPORTER_WROTE, None)]
    if kind == ev.SET:
        name, new = detail.get("field"), detail.get("new")
        if name == "severity":
            return [(SEVERITY, None if new is None else str(new))]
        if name == "waiting":
            return [(WAITING, None)] if new else [(REPORTER_WROTE, None)]
        if name == "embargo":
            return [(EMBARGO_SET, str(new) if new else None)]
        if name == "disclosed_at":
            return [(DISCLOSED, None)] if new else []
        return []
    if kind != ev.STATE:
        return []
    new, old = detail.get("new"), detail.get("old")
    if detail.get("reopened"):
        return [(REOPENED, None if new is None else str(new))]
    if new == wf.ACKNOWLEDGED:
        return [(ACK, None)]
    if new == wf.CONFIRMED:
        return [(CONFIRMED, None)]
    if new == wf.REJECTED:
        return [(REJECTED, None), (CLOSED, None)]
    if new == wf.FIXED:
        return [(FIXED, None)]
    if new == wf.FIXING and old == wf.FIXED:
        return [(UNFIXED, None)]
    if new in wf.TERMINAL:
        return [(CLOSED, None)]
    return []


def parse_happenings(events: Iterable[Mapping[str, Any]]) -> list[Happening]:
    """Rows of the events table (at, kind, detail) as Happenings, in the rows' order.

    Event kinds: "received"; "reply"; "update_sent"; "followup" and "waiting_over" (the
    reporter wrote); "set" of severity or waiting (1: "waiting", 0: "reporter_wrote"), of
    embargo ("embargo" with the new value) and of disclosed_at ("disclosed"); "state"
    (acknowledged: "ack", confirmed, rejected (+ "closed"), fixed, fixing after fixed:
    "unfixed", closed / duplicate / spam: "closed", and detail reopened=true: "reopened" with
    the new state). Every other event is ignored.
    """
    out: list[Happening] = []
    for row in events:
        kinds = _kinds(str(row["kind"]), _detail(row))
        if not kinds:
            continue
        at = row["at"]
        when = at if isinstance(at, datetime) else parse_ts(str(at))
        out.extend(Happening(when, kind, value) for kind, value in kinds)
    return out


# --- happenings -> clocks ---------------------------------------------------------------


@dataclass
class _Run:
    """One clock's instance while the happenings are replayed."""

    name: str
    started: datetime
    cycle: int
    met_at: datetime | None = None
    stopped_at: datetime | None = None

    @property
    def open(self) -> bool:
        return self.met_at is None and self.stopped_at is None

    @property
    def ended(self) -> datetime | None:
        return self.met_at or self.stopped_at


@dataclass
class _Embargo:
    """The embargo clock while the happenings are replayed."""

    value: str | None = None
    started: datetime | None = None
    due: datetime | None = None  # the end of the latest embargo set, kept when it is cleared
    cycle: int = 0
    met_at: datetime | None = None
    stopped_at: datetime | None = None
    disclosed_at: datetime | None = None

    def set(self, at: datetime, value: str | None, calendar: Calendar) -> None:
        due = embargo_end(value, calendar.timezone)
        if due is None:
            self.value = None
            return
        ended = self.met_at is not None or self.stopped_at is not None
        if self.cycle == 0 or ended or (self.due is not None and self.due <= at):
            self.cycle += 1
            self.met_at = self.stopped_at = None
        self.value, self.started, self.due = value, at, due
        if self.disclosed_at is not None:
            self.met_at = at

    def disclosed(self, at: datetime) -> None:
        self.disclosed_at = at
        if self.value is not None and self.met_at is None and self.stopped_at is None:
            self.met_at = at

    def stop(self, at: datetime) -> None:
        if self.value is not None and self.met_at is None and self.stopped_at is None:
            self.stopped_at = at

    def reopen(self, at: datetime) -> None:
        if self.value is not None and self.met_at is None and self.stopped_at is not None:
            self.cycle += 1
            self.stopped_at = None
            self.started = at

    def clock(self) -> Clock | None:
        if self.value is None or self.started is None:
            return None
        return Clock(
            name=EMBARGO,
            started=self.started,
            due=self.due,
            met_at=self.met_at,
            paused=False,
            stopped_at=self.stopped_at,
            cycle=self.cycle,
        )


@dataclass
class _Pause:
    start: datetime
    end: datetime | None = None


def _schedule(
    start: datetime,
    duration: Duration,
    calendar: Calendar,
    pauses: Sequence[_Pause],
    ended: datetime | None,
) -> tuple[datetime | None, timedelta | None]:
    """(due, remaining): due None (and remaining set) when a pause is running now.

    For a clock that ended (met or stopped) at `ended`, later pauses do not count and a
    pause still running then counts until then.
    """
    shift = timedelta(0)
    due = add(start, duration, calendar)
    for pause in pauses:
        end = pause.end
        if ended is not None:
            if pause.start >= ended:
                break
            end = ended if end is None else min(end, ended)
        if end is not None and end <= start:
            continue
        begin = max(pause.start, start)
        if begin >= due:
            if end is None:
                return None, timedelta(0)
            continue
        if end is None:
            return None, due - begin
        shift += end - begin
        due = add(start + shift, duration, calendar)
    return due, None


@dataclass
class _Replay:
    """A report's clocks while its happenings are replayed, oldest first, from "received"."""

    received: datetime
    runs: dict[str, _Run]
    last_contact: datetime  # update: the last time the reporter heard from us
    cycle: int = 1
    acked: bool = False
    closed: bool = False
    fixed: bool = False
    severity: str | None = None
    updates_sent: int = 0
    pauses: list[_Pause] = field(default_factory=list)
    embargo: _Embargo = field(default_factory=_Embargo)

    @classmethod
    def start(cls, received: datetime) -> _Replay:
        runs = {name: _Run(name, received, 1) for name in CLOCK_NAMES}
        return cls(received, runs, last_contact=received)

    def apply(self, h: Happening, calendar: Calendar) -> None:
        """One happening. While the report is closed only its severity, pauses and a reopen
        count."""
        if h.kind == REOPENED:
            self._reopen(h)
            return
        self._note(h)
        if self.closed:
            return
        if h.kind == EMBARGO_SET:
            self.embargo.set(h.at, h.value, calendar)
        elif h.kind == DISCLOSED:
            self.embargo.disclosed(h.at)
        self._contact(h)
        self._fix(h)
        if h.kind in (CLOSED, REJECTED):
            self._close(h.at)

    def _note(self, h: Happening) -> None:
        """The severity, and the pauses (a wait on the reporter, until the reporter wrote)."""
        if h.kind == SEVERITY:
            self.severity = h.value
        elif h.kind == WAITING and not self.waiting:
            self.pauses.append(_Pause(h.at))
        elif h.kind == REPORTER_WROTE and self.waiting:
            self.pauses[-1].end = h.at

    @property
    def waiting(self) -> bool:
        """A pause is running (we wait on the reporter)."""
        return bool(self.pauses) and self.pauses[-1].end is None

    def _reopen(self, h: Happening) -> None:
        """A new cycle: respond restarts, resolve and update too unless the report went back to
        a state after the fix, acknowledge only if it was never met."""
        if not self.closed:
            return
        self.closed = False
        self.cycle += 1
        self.fixed = h.value is not None and h.value not in _BEFORE_FIX
        restart = [RESPOND] if self.fixed else [RESPOND, RESOLVE, UPDATE]
        if self.runs[ACKNOWLEDGE].met_at is None:
            restart.append(ACKNOWLEDGE)
        for name in restart:
            self.runs[name] = _Run(name, h.at, self.cycle)
        self.last_contact = h.at
        self.embargo.reopen(h.at)

    def _contact(self, h: Happening) -> None:
        """What the reporter heard from us: the update cadence, acknowledge and respond."""
        kind = h.kind
        if kind in _CONTACTS:
            self.last_contact = h.at
        if kind == UPDATE_SENT:
            self.updates_sent += 1
        # Read before this happening counts as an acknowledgement: a reply that is itself the
        # acknowledgement does not meet respond.
        responds = kind in (CONFIRMED, REJECTED) or (kind == REPLY and self.acked)
        if kind in _ACKS:
            self.acked = True
            self._meet(ACKNOWLEDGE, h.at)
        if responds:
            self._meet(RESPOND, h.at)

    def _fix(self, h: Happening) -> None:
        """A fix meets resolve and stops the update cadence; "unfixed" undoes both."""
        if h.kind == FIXED and not self.fixed:
            self.fixed = True
            self._meet(RESOLVE, h.at)
            self.runs[UPDATE].stopped_at = h.at
        elif h.kind == UNFIXED and self.fixed:
            self.fixed = False
            self.runs[RESOLVE].met_at = None
            self.runs[UPDATE].stopped_at = None

    def _meet(self, name: str, at: datetime) -> None:
        if self.runs[name].open:
            self.runs[name].met_at = at

    def _close(self, at: datetime) -> None:
        """A terminal state stops every clock still running."""
        self.closed = True
        for run in self.runs.values():
            if run.open:
                run.stopped_at = at
        self.embargo.stop(at)

    def clock(self, name: str, policy: ClockPolicy) -> Clock | None:
        """The clock `name` as replayed so far; None when the policy has no duration for it."""
        run = self.runs[name]
        duration = policy.duration(name, self.severity)
        if duration is None:
            return None
        start = max(self.last_contact, run.started) if name == UPDATE else run.started
        remaining: timedelta | None = None
        due: datetime | None
        if name in _PAUSABLE:
            due, remaining = _schedule(start, duration, policy.calendar, self.pauses, run.ended)
        else:
            due = add(start, duration, policy.calendar)
        return Clock(
            name=name,
            started=start,
            due=due,
            met_at=run.met_at,
            paused=due is None,
            stopped_at=run.stopped_at,
            remaining=remaining,
            cycle=run.cycle,
            duration=duration,
            updates_sent=self.updates_sent if name == UPDATE else 0,
        )


def clocks(happenings: Sequence[Happening], policy: ClockPolicy, now: datetime) -> list[Clock]:
    """The report's clocks as of `now` (later happenings are ignored), in CLOCK_NAMES order,
    then the embargo clock while an embargo is set.

    A clock the policy does not have is absent; so is resolve without a duration for the
    report's severity, and every clock when the report has no "received" happening.
    """
    history = sorted((h for h in happenings if h.at <= now), key=lambda h: h.at)
    received = next((h.at for h in history if h.kind == RECEIVED), None)
    if received is None:
        return []
    replay = _Replay.start(received)
    for happening in history:
        if happening.at >= received:
            replay.apply(happening, policy.calendar)
    out = [clock for name in CLOCK_NAMES if (clock := replay.clock(name, policy)) is not None]
    embargo = replay.embargo.clock()
    return out if embargo is None else [*out, embargo]


def at_receipt(policy: ClockPolicy, received: datetime) -> list[Clock]:
    """The clocks a report starts with when it is received at `received`: what its receipt
    promises (triaged/clocks/wording.py)."""
    return clocks([Happening(received, RECEIVED)], policy, received)


# --- clocks -> notices ------------------------------------------------------------------


def _before(
    due: datetime, offset: Duration | Share, calendar: Calendar, started: datetime
) -> datetime:
    """`offset` before `due`; business days: the same wall-clock time N business days back;
    a share: that part of the clock's whole length (from `started`) before `due`."""
    if isinstance(offset, Share):
        return due - (due - started) * offset.percent / 100
    if not offset.business_days:
        return due - timedelta(seconds=offset.seconds)
    local = due.astimezone(calendar.timezone)
    day, remaining = local.date(), offset.amount
    while remaining:
        day -= timedelta(days=1)
        if calendar.is_business_day(day):
            remaining -= 1
    return datetime.combine(day, local.time()).replace(tzinfo=calendar.timezone)


def _latest_overdue(
    due: datetime, every: Duration, calendar: Calendar, now: datetime
) -> tuple[int, datetime] | None:
    """(n, instant) of the latest overdue repeat at or before `now`, if any."""
    if every.business_days:
        n, at = 0, due
        while True:
            following = add(at, every, calendar)
            if following > now:
                break
            n, at = n + 1, following
        return (n, at) if n else None
    if every.seconds <= 0:
        raise ValueError("overdue_every must be a positive duration")
    step = timedelta(seconds=every.seconds)
    n = (now - due) // step
    return (n, due + n * step) if n >= 1 else None


def notices_due(
    clocks: Sequence[Clock], policy: ClockPolicy, now: datetime, sent: Collection[str]
) -> list[Notice]:
    """The notices to send now, oldest first (see the module docstring)."""
    out: list[Notice] = []

    def offer(candidates: Iterable[Notice]) -> None:
        due = [n for n in candidates if n.at <= now]
        if due:
            latest = max(due, key=lambda n: n.at)
            if latest.key not in sent:
                out.append(latest)

    for clock in clocks:
        if not clock.running or clock.due is None:
            continue
        due, prefix = clock.due, clock.key
        if clock.name == UPDATE:
            number = clock.updates_sent + 1
            offer([Notice(f"{prefix}:{number}", clock.name, "update", due)])
            continue
        if due > now:
            reminders = []
            for offset in policy.reminders(clock.name):
                at = _before(due, offset, policy.calendar, clock.started)
                if at > clock.started:
                    reminders.append(Notice(f"{prefix}:remind:{offset}", clock.name, "remind", at))
            offer(reminders)
            continue
        offer([Notice(f"{prefix}:escalate", clock.name, "escalate", due)])
        latest = _latest_overdue(due, policy.overdue_every, policy.calendar, now)
        if latest is not None:
            n, at = latest
            offer([Notice(f"{prefix}:overdue:{n}", clock.name, "overdue", at)])
    out.sort(key=lambda n: (n.at.astimezone(UTC), n.key))
    return out


def next_notice_at(clocks: Sequence[Clock], policy: ClockPolicy, now: datetime) -> datetime | None:
    """The first instant after `now` at which `notices_due` could return a new notice, if the
    report's history stays as it is (a new event makes the runner look again anyway)."""
    candidates: list[datetime] = []
    for clock in clocks:
        if not clock.running or clock.due is None:
            continue
        due = clock.due
        if due > now:
            candidates.append(due)
            if clock.name != UPDATE:
                for offset in policy.reminders(clock.name):
                    at = _before(due, offset, policy.calendar, clock.started)
                    if now < at and at > clock.started:
                        candidates.append(at)
            continue
        if clock.name == UPDATE:
            continue
        latest = _latest_overdue(due, policy.overdue_every, policy.calendar, now)
        at = due if latest is None else latest[1]
        candidates.append(_following(at, policy.overdue_every, policy.calendar))
    return min(candidates, default=None)


def _following(at: datetime, every: Duration, calendar: Calendar) -> datetime:
    if every.business_days:
        return add(at, every, calendar)
    return at + timedelta(seconds=every.seconds)
