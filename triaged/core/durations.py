"""Policy durations ("48h", "5bd", "1w") and the deadlines they give. Pure: no I/O."""

from __future__ import annotations

import re
from dataclasses import dataclass
from datetime import date, datetime, time, timedelta
from zoneinfo import ZoneInfo

_UNITS = {"s": 1, "m": 60, "h": 3600, "d": 86400, "w": 7 * 86400}
_NAMES = {"s": "second", "m": "minute", "h": "hour", "d": "day", "w": "week", "bd": "business day"}
_PATTERN = re.compile(r"^\s*(\d{1,6})\s*(s|m|h|d|w|bd)\s*$")


@dataclass(frozen=True)
class Duration:
    """An amount of time: either plain seconds, or a count of business days."""

    amount: int
    unit: str

    @property
    def business_days(self) -> bool:
        return self.unit == "bd"

    @property
    def seconds(self) -> int:
        """Length in seconds; a business day counts as 24 hours here (only for ordering)."""
        if self.unit == "bd":
            return self.amount * 86400
        return self.amount * _UNITS[self.unit]

    def __str__(self) -> str:
        return f"{self.amount}{self.unit}"

    def human(self) -> str:
        """For mail: "48 hours", "1 week", "5 business days"."""
        name = _NAMES[self.unit]
        return f"{self.amount} {name}{'' if self.amount == 1 else 's'}"


@dataclass(frozen=True)
class Calendar:
    """Where business days are counted: a time zone, working weekdays (0 = Monday), holidays."""

    timezone: ZoneInfo
    workdays: frozenset[int] = frozenset({0, 1, 2, 3, 4})
    holidays: frozenset[date] = frozenset()

    def is_business_day(self, day: date) -> bool:
        return day.weekday() in self.workdays and day not in self.holidays


@dataclass(frozen=True)
class Share:
    """A part of a clock's length, for reminders: "25%" is a quarter of the way before due."""

    percent: int

    def __str__(self) -> str:
        return f"{self.percent}%"

    def human(self) -> str:
        return f"{self.percent}% of the time"


_SHARE = re.compile(r"^\s*(\d{1,2})\s*%\s*$")


def parse_offset(text: str) -> Duration | Share:
    """A reminder offset: a duration ("24h", "1bd") or a share of the clock ("25%", 1-99)."""
    match = _SHARE.match(text) if isinstance(text, str) else None
    if match is not None:
        percent = int(match.group(1))
        if not 1 <= percent <= 99:
            raise ValueError(f"{text!r}: a share of the clock must be between 1% and 99%")
        return Share(percent)
    try:
        return parse_duration(text)
    except ValueError:
        raise ValueError(
            f"{text!r} is neither a duration (e.g. '24h', '1bd') nor a share of the clock"
            " (e.g. '25%')"
        ) from None


def parse_duration(text: str) -> Duration:
    """Parses "48h", "96h", "5bd", "14d", "1w", "30m", "10s"; raises ValueError otherwise."""
    match = _PATTERN.match(text) if isinstance(text, str) else None
    if match is None:
        raise ValueError(
            f"{text!r} is not a duration (a whole number and one of s, m, h, d, w, bd; e.g. '48h')"
        )
    amount, unit = int(match.group(1)), match.group(2)
    if amount == 0 and unit == "bd":
        raise ValueError("a business-day duration must be at least 1bd")
    return Duration(amount, unit)


def add(start: datetime, duration: Duration, calendar: Calendar) -> datetime:
    """The instant `duration` after `start` (aware datetimes).

    Business days: the deadline is the same wall-clock time on the N-th business day after the
    start day, in the calendar's time zone; a start outside a business day counts from the start
    of the next one.
    """
    if not duration.business_days:
        return start + timedelta(seconds=duration.seconds)
    if not calendar.workdays:
        raise ValueError("no working weekdays configured")
    local = start.astimezone(calendar.timezone)
    day, clock = local.date(), local.time()
    if not calendar.is_business_day(day):
        while not calendar.is_business_day(day):
            day += timedelta(days=1)
        clock = time(0, 0)
    remaining = duration.amount
    while remaining:
        day += timedelta(days=1)
        if calendar.is_business_day(day):
            remaining -= 1
    naive = datetime.combine(day, clock)
    return naive.replace(tzinfo=calendar.timezone)


def span(delta: timedelta) -> str:
    """A length of time as people say it, in its two largest units: "2 days 3 hours",
    "1 hour 5 minutes", "45 minutes", under a minute "40 seconds", and a fraction under ten
    seconds "0.4 seconds". The sign is dropped (how long ago and how long until read the same).
    """
    total = abs(delta).total_seconds()
    days, rest = divmod(int(total), 86400)
    hours, rest = divmod(rest, 3600)
    minutes, seconds = divmod(rest, 60)
    parts = [(days, "day"), (hours, "hour")] if days else [(hours, "hour"), (minutes, "minute")]
    words = [f"{n} {unit}{'' if n == 1 else 's'}" for n, unit in parts if n]
    if words:
        return " ".join(words)
    if total < 10 and total != seconds:
        return f"{total:.1f} seconds"
    return f"{seconds} second{'' if seconds == 1 else 's'}"
