from __future__ import annotations

from datetime import date, datetime, timedelta
from zoneinfo import ZoneInfo

import pytest

from triaged.core.durations import Calendar, Duration, add, parse_duration, span

PARIS = ZoneInfo("Europe/Paris")


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("48h", Duration(48, "h")),
        ("5bd", Duration(5, "bd")),
        ("1w", Duration(1, "w")),
        ("14d", Duration(14, "d")),
        ("30m", Duration(30, "m")),
    ],
)
def test_parse(text: str, expected: Duration) -> None:
    assert parse_duration(text) == expected


@pytest.mark.parametrize("text", ["", "48", "h", "2 days", "-1h", "1.5h", "0bd"])
def test_parse_rejects(text: str) -> None:
    with pytest.raises(ValueError):
        parse_duration(text)


def test_hours_are_elapsed_time_across_dst() -> None:
    start = datetime(2026, 10, 24, 12, 0, tzinfo=PARIS)  # DST ends on the 25th
    due = add(start, Duration(48, "h"), Calendar(PARIS))
    assert (due - start).total_seconds() == 48 * 3600


def test_business_days_skip_weekend_and_holiday() -> None:
    cal = Calendar(PARIS, holidays=frozenset({date(2026, 12, 25)}))
    start = datetime(2026, 12, 23, 14, 0, tzinfo=PARIS)  # Wednesday
    due = add(start, Duration(2, "bd"), cal)
    # Thursday 24th, (Friday 25th is a holiday, weekend), Monday 28th.
    assert due == datetime(2026, 12, 28, 14, 0, tzinfo=PARIS)


def test_business_days_from_a_weekend_start_at_the_next_working_morning() -> None:
    start = datetime(2026, 11, 21, 15, 0, tzinfo=PARIS)  # Saturday
    due = add(start, Duration(1, "bd"), Calendar(PARIS))
    assert due == datetime(2026, 11, 24, 0, 0, tzinfo=PARIS)


def test_business_days_keep_wall_clock_across_dst() -> None:
    start = datetime(2026, 10, 23, 10, 0, tzinfo=PARIS)  # Friday, CEST
    due = add(start, Duration(1, "bd"), Calendar(PARIS))
    assert due.astimezone(PARIS).hour == 10
    assert due.astimezone(PARIS).date() == date(2026, 10, 26)


def test_human_names() -> None:
    assert parse_duration("1w").human() == "1 week"
    assert parse_duration("5bd").human() == "5 business days"
    assert parse_duration("48h").human() == "48 hours"


@pytest.mark.parametrize(
    ("delta", "words"),
    [
        (timedelta(days=2, hours=3, minutes=5), "2 days 3 hours"),
        (timedelta(days=1, minutes=5), "1 day"),
        (timedelta(hours=1, minutes=5, seconds=9), "1 hour 5 minutes"),
        (timedelta(minutes=45, seconds=30), "45 minutes"),
        (timedelta(seconds=40), "40 seconds"),
        (timedelta(seconds=1), "1 second"),
        (timedelta(milliseconds=430), "0.4 seconds"),
        (timedelta(seconds=12, milliseconds=700), "12 seconds"),
        (-timedelta(hours=2), "2 hours"),
    ],
)
def test_span_says_a_length_in_its_two_largest_units(delta: timedelta, words: str) -> None:
    # The one formatter of lengths of time in mail: clock notices, the digest, outage alerts.
    assert span(delta) == words
