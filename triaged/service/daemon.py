"""The daemon: the intake loop (IDLE-driven) and the outbox worker, until told to stop.

Under systemd (Type=notify) it says READY=1 once the database is open and the first mailbox
login succeeded, keeps STATUS= current, and says RELOADING=1 on SIGHUP and STOPPING=1 on SIGTERM.
It sends WATCHDOG=1 only while both loops make progress: the intake loop counts a completed
round trip with the mailbox (a pass over the folder, an IDLE or NOOP cycle), never a failed
reconnect, so a hung IMAP server stops the pings and systemd restarts the service. Outages of
the mailbox and of SMTP are recorded and told to the team by triaged.service.liveness.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from datetime import UTC, datetime
from typing import TypeVar

from triaged.config import Config, load
from triaged.errors import ConfigError, MailboxError
from triaged.intake.runner import IntakeRunner
from triaged.mail.compose import Composer
from triaged.mail.mailbox import open_mailbox
from triaged.mail.oauth2 import tokens_for
from triaged.mail.openpgp import Keyring, open_keyring
from triaged.mail.sealing import Sealer
from triaged.mail.transport import open_transport
from triaged.service.liveness import MAILBOX, SMTP, Liveness, Outage
from triaged.service.lock import InstanceLock
from triaged.service.outbox import OutboxRunner
from triaged.service.scheduler import Scheduler
from triaged.service.sdnotify import Notifier
from triaged.store import outbox as queue
from triaged.store.db import Store

log = logging.getLogger(__name__)

Clock = Callable[[], datetime]
MAX_BACKOFF = 60.0
T = TypeVar("T")


def utcnow() -> datetime:
    return datetime.now(UTC)


class Daemon:
    def __init__(self, config: Config, clock: Clock = utcnow) -> None:
        self.config = config
        self.clock = clock
        # One token manager for both loops (OAuth2): they share one grant.
        self.tokens = tokens_for(config)
        self.stop = threading.Event()
        # Set to interrupt the intake loop's wait: on stop, and on a reload request.
        self.wake = threading.Event()
        self.outbox_wake = threading.Event()
        self.reload_requested = threading.Event()
        self.generation = 0
        self.on_intake: Callable[[int], None] | None = None
        self.notifier = Notifier()
        self.watchdog = self.notifier.watchdog_interval()
        self.progress = {"intake": time.monotonic(), "outbox": time.monotonic()}
        self.ready = False
        self.status = ""
        # STATUS= is the intake loop's part, then the outbox loop's (only during an SMTP outage).
        self._status_parts = {"intake": "", "smtp": ""}
        self._status_lock = threading.Lock()
        # Clock passes, outbox retries and the digest (triaged/service/scheduler.py).
        # triaged's OpenPGP keys (None: OpenPGP is off), loaded by run() and on reload.
        self.keyring: Keyring | None = None
        self.scheduler = Scheduler(lambda: self.config, self.clock, self.outbox_wake)

    # --- control (signal handlers call these) --------------------------------------------

    def request_stop(self) -> None:
        self.notifier.notify("STOPPING=1")
        self.stop.set()
        self.wake.set()
        self.outbox_wake.set()

    def request_reload(self) -> None:
        self.reload_requested.set()
        self.wake.set()

    # --- the process ---------------------------------------------------------------------

    def run(self) -> None:
        """Runs until stopped; raises AlreadyRunning when another daemon has the database."""
        with InstanceLock(self.config.database):
            # Migrations run once here, before any runner opens its own connection.
            Store(self.config.database).close()
            # The keys load once here (and on reload); a bad key file stops the start.
            self.keyring = open_keyring(self.config)
            threads = [
                threading.Thread(target=self._outbox_loop, name="outbox", daemon=True),
            ]
            if self.watchdog is not None:
                threads.append(
                    threading.Thread(target=self._watchdog_loop, name="watchdog", daemon=True)
                )
            for thread in threads:
                thread.start()
            self.scheduler.start()
            try:
                self._intake_loop()
            finally:
                self.request_stop()
                self.scheduler.shutdown()
                threads[0].join(timeout=20)
                if self.keyring is not None:
                    self.keyring.close()
                log.info("stopped")

    def _wait_slice(self) -> float:
        """How long one wait for new mail may last: the watchdog needs to see the loop turn."""
        limit = float(self.config.mailbox.idle_renew.seconds)
        if self.watchdog is not None:
            limit = min(limit, self.watchdog)
        return limit

    def _set_status(self, text: str, part: str = "intake") -> None:
        with self._status_lock:
            self._status_parts[part] = " ".join(text.split())  # one line, whatever a server said
            status = "; ".join(p for p in self._status_parts.values() if p)
            if status != self.status:
                self.status = status
                self.notifier.notify(f"STATUS={status}")

    def _intake_progress(self) -> None:
        """A round trip with the mailbox completed: the only thing that feeds the watchdog."""
        self.progress["intake"] = time.monotonic()

    def _guarded(self, what: str, fn: Callable[..., T], *args: object) -> T | None:
        """Liveness bookkeeping must never stop a loop: a failure is logged and skipped."""
        try:
            return fn(*args)
        except Exception:
            log.exception("%s failed", what)
            return None

    def _reload(self) -> bool:
        """Loads the config again; a bad one is refused and the running one kept."""
        self.reload_requested.clear()
        self.notifier.notify("RELOADING=1")
        try:
            new = load(self.config.path)
        except ConfigError as exc:
            log.error("reload refused, keeping the running configuration: %s", exc)
            self.notifier.notify("READY=1")
            return False
        if new.database != self.config.database:
            log.error(
                "reload refused: database.path changed (%s -> %s); restart to switch databases",
                self.config.database,
                new.database,
            )
            self.notifier.notify("READY=1")
            return False
        try:
            keyring = open_keyring(new)
        except ConfigError as exc:
            log.error("reload refused, keeping the running configuration: %s", exc)
            self.notifier.notify("READY=1")
            return False
        self.keyring = keyring
        if new.oauth2 != self.config.oauth2 or self.tokens is None:
            self.tokens = tokens_for(new)
        self.config = new
        self.generation += 1
        self.outbox_wake.set()
        self.scheduler.reloaded()
        log.info("configuration and templates reloaded from %s", new.path)
        self.notifier.notify("READY=1")
        return True

    def _intake_loop(self) -> None:
        store = Store(self.config.database)
        backoff, failures = 1.0, 0
        try:
            while not self.stop.is_set():
                if self.reload_requested.is_set():
                    self._reload()
                composer = Composer(self.config)
                liveness = Liveness(self.config, store, composer, self.outbox_wake.set)
                mailbox = open_mailbox(self.config.mailbox, self.tokens)
                try:
                    mailbox.connect()
                    runner = IntakeRunner(
                        self.config, store, mailbox, composer, self.stop, self.keyring
                    )
                    runner.start(self.clock())
                    if failures:
                        log.info("mailbox %s reachable again", mailbox.name)
                    else:
                        log.info("reading %s", mailbox.name)
                    backoff, failures = 1.0, 0
                    if not self.ready:
                        self.ready = True
                        self.notifier.notify("READY=1")
                    readable = False
                    while not self.stop.is_set() and not self.reload_requested.is_set():
                        handled = runner.run_once(self.clock())
                        self._intake_progress()
                        if not readable:
                            # A whole pass over the folder worked: an outage, if any, is over.
                            readable = True
                            self._guarded(
                                "ending the mailbox outage",
                                liveness.succeeded,
                                MAILBOX,
                                self.clock(),
                            )
                        if handled:
                            self.outbox_wake.set()
                            if self.on_intake is not None:
                                self.on_intake(handled)
                        self._set_status(
                            f"reading {mailbox.name}; last look "
                            f"{self.clock().strftime('%H:%M:%S')} UTC; "
                            f"{queue.backlog(store)} message(s) waiting in the outbox"
                        )
                        log.debug("waiting for new mail")
                        self.wake.clear()
                        # Checked after clear(): a request that comes later sets `wake` again.
                        if self.stop.is_set() or self.reload_requested.is_set():
                            break
                        mailbox.wait(self._wait_slice(), self.wake)
                        self._intake_progress()
                except MailboxError as exc:
                    failures += 1
                    outage = self._mailbox_failed(liveness, str(exc))
                    self._set_status(f"mailbox unavailable{_since(outage)}: {exc}")
                    # One line per outage, not one per retry.
                    if failures == 1:
                        log.warning("mailbox unavailable, retrying with backoff: %s", exc)
                    else:
                        log.debug("mailbox still unavailable (try %d): %s", failures, exc)
                except Exception as exc:
                    failures += 1
                    log.exception("intake pass failed; retrying")
                    error = f"intake failed: {type(exc).__name__}: {exc}"
                    outage = self._mailbox_failed(liveness, error)
                    self._set_status(f"intake failing{_since(outage)}: {error}")
                finally:
                    mailbox.close()
                # No progress mark here: a failed try is not progress (see _intake_progress).
                if failures and not self.stop.is_set():
                    self.wake.clear()
                    if not self.reload_requested.is_set():
                        self.wake.wait(backoff)
                    backoff = min(backoff * 2, MAX_BACKOFF)
        finally:
            store.close()

    def _sealer(self) -> Sealer | None:
        return Sealer(self.config, self.keyring) if self.keyring is not None else None

    def _mailbox_failed(self, liveness: Liveness, error: str) -> Outage | None:
        return self._guarded(
            "recording the mailbox outage", liveness.failed, MAILBOX, self.clock(), error
        )

    def _outbox_loop(self) -> None:
        store = Store(self.config.database)
        generation = self.generation
        transport = open_transport(self.config.smtp, self.tokens)
        runner = OutboxRunner(store, transport, self.config.smtp, self._sealer())
        liveness = Liveness(self.config, store)
        try:
            while not self.stop.is_set():
                if generation != self.generation:
                    transport.close()
                    generation = self.generation
                    transport = open_transport(self.config.smtp, self.tokens)
                    runner = OutboxRunner(store, transport, self.config.smtp, self._sealer())
                    liveness = Liveness(self.config, store)
                self.outbox_wake.clear()
                timeout = 60.0 if self.watchdog is None else min(60.0, self.watchdog)
                try:
                    now = self.clock()
                    sent = runner.run_once(now)
                    self._guarded(
                        "recording the SMTP outage",
                        self._smtp_liveness,
                        liveness,
                        runner,
                        sent,
                        now,
                    )
                    due = runner.next_due()
                except Exception:
                    log.exception("outbox pass failed; retrying")
                    due, timeout = None, 5.0
                self.progress["outbox"] = time.monotonic()
                if due is not None:
                    timeout = min(timeout, max((due - self.clock()).total_seconds(), 0.0))
                self.outbox_wake.wait(timeout)
        finally:
            transport.close()
            store.close()

    def _smtp_liveness(
        self, liveness: Liveness, runner: OutboxRunner, sent: int, now: datetime
    ) -> None:
        """After an outbox pass: SMTP took mail, kept failing, or (nothing waits) is not needed.

        Also alerts any outage that has lasted long enough (the loops only report tries, and
        a try can be far apart from the next one), and keeps the SMTP part of STATUS= current.
        """
        if sent:
            liveness.succeeded(SMTP, now)
        elif runner.error is not None:
            liveness.failed(SMTP, now, runner.error)
        elif liveness.outage(SMTP) is not None and queue.backlog(liveness.store) == 0:
            # Nothing waits to be sent any more, so nothing is failing.
            liveness.succeeded(SMTP, now)
        liveness.check(now)
        outage = liveness.outage(SMTP)
        text = "" if outage is None else f"SMTP failing{_since(outage)}: {outage.last_error}"
        self._set_status(text, part="smtp")

    def _watchdog_loop(self) -> None:
        assert self.watchdog is not None
        # Pinged only while both loops made progress within two ping intervals: a loop stuck
        # in a call that never returns, or an intake that cannot complete a round trip with
        # the mailbox, stops the pings, and systemd restarts the service.
        limit = 2 * self.watchdog
        stalled: list[str] = []
        while not self.stop.wait(self.watchdog / 2):
            now = time.monotonic()
            stuck = [name for name, at in self.progress.items() if now - at > limit]
            if stuck:
                if stuck != stalled:  # once per stall, not every half interval
                    log.error(
                        "no progress in %s for %.0fs: not petting the watchdog",
                        ", ".join(stuck),
                        limit,
                    )
                stalled = stuck
                continue
            if stalled:
                log.info("progress again in %s: petting the watchdog", ", ".join(stalled))
                stalled = []
            self.notifier.notify("WATCHDOG=1")


def _since(outage: Outage | None) -> str:
    return "" if outage is None else " " + outage.summary()
