"""The daemon's timetable: when the digest is due (pure), and the jobs over a real database."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from zoneinfo import ZoneInfo

from apscheduler.triggers.cron import CronTrigger

from triaged.scheduler import digest_slot

PARIS = ZoneInfo("Europe/Paris")
# Mondays at 09:00, Paris time.
WEEKLY = CronTrigger.from_crontab("0 9 * * mon", timezone=PARIS)
MONDAY_9 = datetime(2026, 11, 23, 9, 0, tzinfo=PARIS)


def test_the_digest_is_due_at_its_slot_in_the_project_time_zone() -> None:
    assert digest_slot(WEEKLY, None, MONDAY_9 - timedelta(minutes=1)) is None
    assert digest_slot(WEEKLY, None, MONDAY_9) == MONDAY_9
    assert digest_slot(WEEKLY, None, MONDAY_9 + timedelta(minutes=3)) == MONDAY_9


def test_once_sent_the_same_slot_is_not_due_again() -> None:
    assert digest_slot(WEEKLY, MONDAY_9, MONDAY_9 + timedelta(hours=5)) is None
    assert digest_slot(WEEKLY, MONDAY_9, MONDAY_9 + timedelta(days=7)) == MONDAY_9 + timedelta(
        days=7
    )


def test_a_new_install_sends_no_digest_for_the_past() -> None:
    assert digest_slot(WEEKLY, None, MONDAY_9 + timedelta(hours=2)) is None


def test_after_three_weeks_down_one_digest_for_the_latest_slot() -> None:
    now = MONDAY_9 + timedelta(days=21, hours=4)
    assert digest_slot(WEEKLY, MONDAY_9, now) == MONDAY_9 + timedelta(days=21)


def test_a_schedule_every_minute_after_a_long_outage_still_gives_one_slot() -> None:
    every_minute = CronTrigger.from_crontab("* * * * *", timezone=UTC)
    last = datetime(2026, 1, 1, tzinfo=UTC)
    now = last + timedelta(days=30)
    slot = digest_slot(every_minute, last, now)
    assert slot is not None and last < slot <= now
