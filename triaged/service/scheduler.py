"""The daemon's timetable (apscheduler 3): what runs when, besides reading mail.

- a clock pass every minute, and one at start so a daemon that was down catches up;
- an outbox look every 30 seconds (retries whose time came);
- the digest on the crontab of `[digest] schedule`, in the project's time zone; one missed
  while the daemon was down is sent at start (once), never several;
- a look at the published security.txt's Expires every 6 hours (and at start): the team is
  warned once before it passes;
- a look for team notices held back by `[limits] notices_per_report_per_hour` every 5 minutes:
  a report's summary goes out once the first of them is an hour old;
- with `[liveness] canary_every`, the canary (triaged/service/canary.py): a probe sent when one
  is due, a missing one alerted; STATUS= says while probes do not come back.

Jobs run one at a time (on one worker thread, and under the scheduler's lock when a test or a
command runs one directly); they share one database connection and one clock runner, kept for
the daemon's life (the runner is made again after a reload). The scheduler only wakes the
work: what is due is decided from SQLite (the clocks' `next_at`, the `notices` already sent), so
a pass that runs twice sends nothing twice.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from typing import Any

from apscheduler.executors.pool import ThreadPoolExecutor
from apscheduler.schedulers.background import BackgroundScheduler
from apscheduler.triggers.cron import CronTrigger
from apscheduler.triggers.interval import IntervalTrigger

from triaged.clocks.runner import ClockRunner
from triaged.config import Config
from triaged.core.timefmt import parse_ts, ts
from triaged.intake.notices import summaries
from triaged.mail import auth
from triaged.mail.compose import Composer
from triaged.service.canary import Canary, check_every
from triaged.service.liveness import CANARY
from triaged.service.outbox import enqueue
from triaged.service.runner import Now
from triaged.store import notices
from triaged.store.db import Store

log = logging.getLogger(__name__)
# apscheduler logs every job run at INFO: a few lines a minute that say nothing to operators.
logging.getLogger("apscheduler").setLevel(logging.WARNING)

CLOCK_PASS_EVERY = timedelta(minutes=1)
OUTBOX_LOOK_EVERY = timedelta(seconds=30)
# Team notices over the hourly limit wait for a summary an hour after the first of them.
NOTICES_LOOK_EVERY = timedelta(minutes=5)
# With no digest sent yet, a schedule slot this recent still counts (the job may start late).
_FIRST_DIGEST_GRACE = timedelta(minutes=10)
_DIGEST_KEY = "digest:"


def digest_trigger(config: Config) -> CronTrigger:
    return CronTrigger.from_crontab(config.digest.schedule, timezone=config.project.timezone)


def digest_slot(trigger: CronTrigger, last: datetime | None, now: datetime) -> datetime | None:
    """The latest scheduled instant at or before `now` for which no digest went out yet.

    `last` is the slot of the last digest sent; without one, only a slot in the last few
    minutes counts (a new install sends none for the past).
    """
    start = last if last is not None else now - _FIRST_DIGEST_GRACE
    slot = None
    fire = trigger.get_next_fire_time(None, start)
    # Bounded: a schedule every minute after a long outage still gives one digest.
    for _ in range(10_000):
        if fire is None or fire > now:
            break
        if last is None or fire > last:
            slot = fire
        fire = trigger.get_next_fire_time(fire, fire + timedelta(seconds=1))
    return slot


def last_digest_slot(store: Store) -> datetime | None:
    key = notices.last_team_key(store, _DIGEST_KEY)
    return parse_ts(key[len(_DIGEST_KEY) :]) if key else None


class Scheduler:
    """Runs the clock pass and the digest for a daemon; wakes its outbox."""

    def __init__(
        self,
        config: Callable[[], Config],
        clock: Now,
        outbox_wake: threading.Event,
        on_status: Callable[[str, str], None] | None = None,
    ) -> None:
        """`on_status(text, part)` sets the scheduler's part ("canary") of STATUS=."""
        self.config = config
        self.clock = clock
        self.outbox_wake = outbox_wake
        self.on_status = on_status
        # Every job runs holding the lock, so the connection and the runner are never used by
        # two threads at once.
        self.lock = threading.Lock()
        self._store: Store | None = None
        self._clocks: ClockRunner | None = None
        self._key: tuple[Config, bytes] | None = None
        self.scheduler = BackgroundScheduler(
            timezone=UTC,
            executors={"default": ThreadPoolExecutor(1)},
            job_defaults={"coalesce": True, "max_instances": 1, "misfire_grace_time": None},
        )

    def start(self) -> None:
        now = datetime.now(UTC)
        self.scheduler.add_job(
            self.clock_pass, IntervalTrigger(seconds=60), id="clocks", next_run_time=now
        )
        self.scheduler.add_job(
            self.outbox_wake.set,
            IntervalTrigger(seconds=OUTBOX_LOOK_EVERY.total_seconds()),
            id="outbox",
        )
        self.scheduler.add_job(
            self.security_txt_pass, IntervalTrigger(hours=6), id="security-txt", next_run_time=now
        )
        self.scheduler.add_job(
            self.notices_pass,
            IntervalTrigger(seconds=NOTICES_LOOK_EVERY.total_seconds()),
            id="notice-summaries",
        )
        self._schedule_digest(now)
        self._schedule_canary(now)
        self.scheduler.start()

    def shutdown(self) -> None:
        if self.scheduler.running:
            self.scheduler.shutdown(wait=True)
        with self.lock:
            if self._store is not None:
                self._store.close()
                self._store = None
                self._clocks = None

    def reloaded(self) -> None:
        """After a reload: the policy and the digest and canary schedules may have changed."""
        for job in ("digest", "canary"):
            if self.scheduler.get_job(job) is not None:
                self.scheduler.remove_job(job)
        now = datetime.now(UTC)
        self._schedule_digest(now)
        self._schedule_canary(now)
        self.run_clocks_now()

    def run_clocks_now(self) -> None:
        """Asks for a clock pass at once (the next one of the interval follows as before)."""
        self.scheduler.add_job(self.clock_pass, id="clocks-now", replace_existing=True)

    def _schedule_digest(self, now: datetime) -> None:
        config = self.config()
        if not config.digest.enabled:
            return
        # First run at start (to catch up a missed slot), then on the schedule.
        self.scheduler.add_job(
            self.digest_pass, digest_trigger(config), id="digest", next_run_time=now
        )

    def _schedule_canary(self, now: datetime) -> None:
        every = check_every(self.config())
        if every is None:
            self._status("", "canary")
            return
        # Not at start: what came back while the daemon was down is still in the mailbox, and
        # the first intake pass takes it back.
        self.scheduler.add_job(
            self.canary_pass,
            IntervalTrigger(seconds=every.total_seconds()),
            id="canary",
            next_run_time=now + every,
        )

    def _status(self, text: str, part: str) -> None:
        if self.on_status is not None:
            self.on_status(text, part)

    # --- the jobs ------------------------------------------------------------------------

    def clock_pass(self) -> int:
        with self.lock:
            try:
                sent = self._clock_runner(self.config()).run_once(self.clock())
            except Exception:
                log.exception("clock pass failed; the next one tries again")
                return 0
        if sent:
            self.outbox_wake.set()
        return sent

    def _store_for_jobs(self, config: Config) -> Store:
        """The jobs' connection (the lock held), opened at the first job."""
        if self._store is None:
            self._store = Store(config.database, shared=True)
        return self._store

    def _clock_runner(self, config: Config) -> ClockRunner:
        """The clock runner for `config` (the lock held). At start and after a reload (the
        policy may have changed) a new one is made, with the token key read once, and every
        open report is looked at again."""
        if self._clocks is not None and self._clocks.config is config:
            return self._clocks
        store = self._store_for_jobs(config)
        tokens = auth.ReplyTokens(
            self._key_for(config), config.project.address, frozenset(config.maintainers.members)
        )
        runner = ClockRunner(config, store, Composer(config), tokens)
        runner.recompute_all()
        self._clocks = runner
        return runner

    def _key_for(self, config: Config) -> bytes:
        """The token key (the lock held), read once per configuration."""
        if self._key is None or self._key[0] is not config:
            self._key = (config, auth.load_or_create_key(config.auth.key_file))
        return self._key[1]

    def canary_pass(self) -> bool:
        """Sends a probe when one is due and alerts one missing too long; True when it sent."""
        config = self.config()
        now = self.clock()
        with self.lock:
            try:
                store = self._store_for_jobs(config)
                canary = Canary(
                    config, store, self._key_for(config), Composer(config), self.outbox_wake.set
                )
                sent = canary.run_once(now)
                outage = canary.liveness.outage(CANARY)
            except Exception:
                log.exception("canary check failed; it is tried again at its next run")
                return False
        missing = "" if outage is None else f"canary probes not coming back {outage.summary()}"
        self._status(missing, "canary")
        if sent:
            self.outbox_wake.set()
        return bool(sent)

    def digest_pass(self) -> bool:
        """Queues the digest when a slot of its schedule passed without one."""
        # Imported here: the digest module builds on the clocks' tables, not the reverse.
        from triaged.digest import compose

        def job(config: Config, store: Store, composer: Composer, now: datetime) -> list[Any]:
            slot = digest_slot(digest_trigger(config), last_digest_slot(store), now)
            if slot is None:
                return []
            out = compose(config, store, composer, now, self._clock_runner(config).tokens)
            notices.mark_team_sent(store, _DIGEST_KEY + ts(slot), now)
            log.info("digest for %s queued for %d address(es)", ts(slot), len(out))
            return out

        return self._mail_job("digest", job)

    def notices_pass(self) -> bool:
        """Sends the summaries of the team notices held back by the hourly limit."""

        def job(config: Config, store: Store, composer: Composer, now: datetime) -> list[Any]:
            return summaries(config, store, composer, now, self._clock_runner(config).tokens)

        return self._mail_job("notice summaries", job)

    def security_txt_pass(self) -> bool:
        """Warns the team once when the published security.txt is about to expire."""
        from triaged.disclosure.securitytxt import expiry_notices

        return self._mail_job("security.txt check", expiry_notices)

    def _mail_job(
        self, name: str, job: Callable[[Config, Store, Composer, datetime], list[Any]]
    ) -> bool:
        """Runs `job` in one transaction with the outbox rows it returns; True when it queued
        mail. A failure is logged and tried again at the next run."""
        config = self.config()
        now = self.clock()
        with self.lock:
            try:
                store = self._store_for_jobs(config)
                with store.transaction():
                    out = job(config, store, Composer(config), now)
                    enqueue(store, out, now)
            except Exception:
                log.exception("%s failed; it is tried again at its next run", name)
                return False
        if out:
            self.outbox_wake.set()
        return bool(out)
