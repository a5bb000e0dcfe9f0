"""The daemon's timetable: when the digest is due (pure), and the jobs over a real database."""

from __future__ import annotations

import threading
from datetime import UTC, datetime, timedelta
from pathlib import Path
from zoneinfo import ZoneInfo

from apscheduler.triggers.cron import CronTrigger
from helpers import base_sections, make_config

from triaged.service.scheduler import Scheduler, digest_slot
from triaged.store.db import Store

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


def test_the_digest_job_queues_one_digest_per_slot_for_the_team(tmp_path: Path) -> None:
    sections = base_sections(tmp_path)
    sections["project"]["timezone"] = "Europe/Paris"
    sections["maintainers"]["team"] = "security-team@example.org"
    config = make_config(tmp_path, sections=sections)
    now = [MONDAY_9 + timedelta(minutes=2)]
    wake = threading.Event()
    scheduler = Scheduler(lambda: config, lambda: now[0], wake)

    assert scheduler.digest_pass() is True
    assert wake.is_set()
    assert scheduler.digest_pass() is False  # the same slot: nothing twice
    now[0] += timedelta(days=3)
    assert scheduler.digest_pass() is False
    now[0] += timedelta(days=4)  # the next Monday, 09:02
    assert scheduler.digest_pass() is True

    store = Store(config.database)
    try:
        rows = store.all("SELECT recipient, raw FROM outbox WHERE kind = 'digest'")
    finally:
        store.close()
    assert [r["recipient"] for r in rows] == ["security-team@example.org"] * 2
    assert b"security digest" in rows[0]["raw"]


def test_the_security_txt_job_warns_the_team_once_before_expiry(tmp_path: Path) -> None:
    sections = base_sections(tmp_path)
    sections["security_txt"] = {"published_expires": "2026-12-10T00:00:00Z"}
    config = make_config(tmp_path, sections=sections)
    now = [datetime(2026, 11, 1, tzinfo=UTC)]
    scheduler = Scheduler(lambda: config, lambda: now[0], threading.Event())
    assert scheduler.security_txt_pass() is False  # 39 days ahead: not yet
    now[0] = datetime(2026, 11, 12, tzinfo=UTC)
    assert scheduler.security_txt_pass() is True
    assert scheduler.security_txt_pass() is False
