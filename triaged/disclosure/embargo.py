"""Disclosure decisions: when an embargo ends, which end dates the policy allows, what
`/embargo` may set and when the announcement may come. Pure: no I/O. A decision that says no
raises `Refused` with the reason a maintainer reads in the transcript.

The embargo is stored in `reports.embargo` as text: a date ("2026-12-01": the embargo ends at
the start of that day in the project's time zone, the day the announcement may be made), or a
date and time with its offset ("2026-11-05T10:00+01:00", from `/embargo +72h` or
`/embargo 2026-11-05T10:00`). `embargo_end` reads either back as an instant.

The window the policy allows for the end of an embargo set at `now`:
    earliest  the later of `now` and the fix time + `disclose_after_fix`; before the report is
              fixed, the fix can come no earlier than now, so it is now + `disclose_after_fix`
              (and the date is checked again when the report becomes fixed).
    latest    now + `embargo_max`: the cap counts from when the embargo is set.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from datetime import date, datetime, time, timedelta
from typing import TYPE_CHECKING
from zoneinfo import ZoneInfo

from triaged.core import workflow as wf
from triaged.core.durations import add, parse_duration
from triaged.core.text import clean_header_text
from triaged.errors import Refused

if TYPE_CHECKING:
    from triaged.config import PolicyConfig


def embargo_end(value: str | None, tz: ZoneInfo) -> datetime | None:
    """The instant a stored embargo ends; None when there is none or it cannot be read."""
    if not value:
        return None
    try:
        if len(value) == 10:
            return datetime.combine(date.fromisoformat(value), time(0), tzinfo=tz)
        moment = datetime.fromisoformat(value)
    except ValueError:
        return None
    return moment.replace(tzinfo=tz) if moment.tzinfo is None else moment


@dataclass(frozen=True)
class Requested:
    """An embargo end as a maintainer asked for it, and how to store it."""

    end: datetime
    stored: str


def parse_request(text: str, now: datetime, policy: PolicyConfig) -> Requested:
    """`YYYY-MM-DD`, `YYYY-MM-DDTHH:MM` (project time unless an offset is given) or
    `+DURATION` ("+72h", "+7d", "+5bd"); raises ValueError saying what is accepted."""
    tz = policy.calendar.timezone
    if text.startswith("+"):
        try:
            duration = parse_duration(text[1:])
        except ValueError:
            raise ValueError(f"{text!r} is not a duration from now (+72h, +7d, +5bd)") from None
        return at_instant(add(now, duration, policy.calendar), tz)
    if len(text) == 10:
        try:
            day = date.fromisoformat(text)
        except ValueError:
            raise ValueError(f"{text!r} is not a date (YYYY-MM-DD)") from None
        return Requested(datetime.combine(day, time(0), tzinfo=tz), day.isoformat())
    try:
        moment = datetime.fromisoformat(text)
    except ValueError:
        raise ValueError(
            f"{text!r} is not a date (YYYY-MM-DD), a date and time (YYYY-MM-DDTHH:MM)"
            " or a duration from now (+72h)"
        ) from None
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=tz)
    return at_instant(moment, tz)


def at_instant(moment: datetime, tz: ZoneInfo) -> Requested:
    """An embargo ending at `moment`, rounded up to the minute, stored in project time."""
    if moment.second or moment.microsecond:
        moment = moment.replace(second=0, microsecond=0) + timedelta(minutes=1)
    local = moment.astimezone(tz)
    return Requested(local, local.isoformat(timespec="minutes"))


@dataclass(frozen=True)
class Window:
    """The ends the policy allows for an embargo set now."""

    earliest: datetime
    latest: datetime | None
    why: str  # why `earliest`, for a transcript: "7 days after the fix (...)"


def window(
    now: datetime,
    fixed_at: datetime | None,
    policy: PolicyConfig,
    when: Callable[[datetime], str] = str,
) -> Window:
    """`when` formats an instant for people (the composer's `when`)."""
    after = policy.disclose_after_fix
    latest = add(now, policy.embargo_max, policy.calendar) if policy.embargo_max else None
    if after is None:
        return Window(now, latest, "now")
    if fixed_at is None:
        return Window(
            add(now, after, policy.calendar),
            latest,
            f"{after.human()} after the fix, which is not released yet"
            " (disclose_after_fix, counted from now)",
        )
    earliest = add(fixed_at, after, policy.calendar)
    why = f"{after.human()} after the fix of {when(fixed_at)} (disclose_after_fix)"
    return Window(max(earliest, now), latest, why)


def first_allowed_date(moment: datetime, tz: ZoneInfo) -> date:
    """The first date whose start (project time) is not before `moment`."""
    local = moment.astimezone(tz)
    day = local.date()
    return day if local.time() == time(0) else day + timedelta(days=1)


@dataclass(frozen=True)
class Change:
    """What `/embargo` sets: the value stored in `reports.embargo` (None withdraws the
    embargo), the instant it ends, and why that instant when the maintainer named none."""

    stored: str | None
    end: datetime | None
    why: str = ""


def change(
    request: str | None,
    *,
    state: str,
    stored: str | None,
    now: datetime,
    fixed_at: datetime | None,
    policy: PolicyConfig,
    when: Callable[[datetime], str] = str,
) -> Change:
    """The embargo that `/embargo [request]` sets on a report in `state` whose embargo is
    `stored` now: `request` is a date, a date and time, "+DURATION", "none", or None for the
    policy's `embargo_default`. Raises Refused when the policy does not allow it."""
    if state in wf.TERMINAL or state == wf.DISCLOSED:
        raise Refused(f"the report is {state}: an embargo no longer applies")
    tz = policy.calendar.timezone
    if request is not None and request.lower() == "none":
        if stored is None:
            raise Refused("no embargo is set")
        return Change(None, None)
    allowed = window(now, fixed_at, policy, when)
    if allowed.latest is not None and allowed.earliest > allowed.latest:
        raise Refused(
            f"the policy allows no date now: the earliest, {when(allowed.earliest)}"
            f" ({allowed.why}), is after the latest, {when(allowed.latest)} (embargo_max)"
        )
    why = ""
    if request is not None:
        try:
            requested = parse_request(request, now, policy)
        except ValueError as exc:
            raise Refused(clean_header_text(str(exc), 200)) from None
    elif policy.embargo_default is not None:
        default_end = add(now, policy.embargo_default, policy.calendar)
        requested = at_instant(max(default_end, allowed.earliest), tz)
        why = f"{policy.embargo_default.human()} from now: embargo_default"
        if default_end < allowed.earliest:
            why = "the earliest the policy allows, later than embargo_default"
    else:
        raise Refused("needs a date (YYYY-MM-DD) or +DURATION: the policy has no embargo_default")
    _check_end(requested.end, now, allowed, policy, when)
    if requested.stored == stored:
        raise Refused(f"the embargo already ends {when(requested.end)}")
    return Change(requested.stored, requested.end, why)


def _check_end(
    end: datetime,
    now: datetime,
    allowed: Window,
    policy: PolicyConfig,
    when: Callable[[datetime], str],
) -> None:
    """Refused unless `end` is in the future and inside the window the policy allows."""
    tz = policy.calendar.timezone
    if end <= now:
        raise Refused(
            f"the embargo would have ended {when(end)}, which is past;"
            " /disclose once the issue is public"
        )
    if end < allowed.earliest:
        day = first_allowed_date(allowed.earliest, tz)
        local = allowed.earliest.astimezone(tz)
        exact = f" (or /embargo {local.strftime('%Y-%m-%dT%H:%M')})" if local.date() != day else ""
        raise Refused(
            f"{when(end)} is earlier than the policy allows: the earliest is"
            f" {when(allowed.earliest)}, {allowed.why}; /embargo {day}{exact} or later"
        )
    if allowed.latest is not None and end > allowed.latest:
        cap = policy.embargo_max.human() if policy.embargo_max else ""
        raise Refused(
            f"{when(end)} is later than the policy allows: an embargo lasts at most {cap}"
            f" from when it is set (embargo_max), so it must end by {when(allowed.latest)}"
        )


def check_announcement(
    *,
    state: str,
    stored: str | None,
    now: datetime,
    fixed_at: datetime | None,
    policy: PolicyConfig,
    when: Callable[[datetime], str] = str,
) -> None:
    """Refused while a fixed report may not be announced yet: before its embargo ends, or
    before the policy's `disclose_after_fix` has passed since the fix."""
    if state != wf.FIXED:
        return
    end = embargo_end(stored, policy.calendar.timezone)
    if end is not None and end > now:
        raise Refused(
            f"the embargo ends {when(end)}: /disclose early if the issue is public"
            " already, or move the date with /embargo"
        )
    after = policy.disclose_after_fix
    if fixed_at is not None and after is not None:
        allowed = add(fixed_at, after, policy.calendar)
        if allowed > now:
            raise Refused(
                f"the policy allows the announcement from {when(allowed)},"
                f" {after.human()} after the fix (disclose_after_fix): /disclose early"
                " if the issue is public already"
            )
