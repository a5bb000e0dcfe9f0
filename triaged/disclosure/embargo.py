"""Disclosure decisions: when an embargo ends and which end dates the policy allows. Pure: no
I/O.

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

from triaged.core.durations import add, parse_duration

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
