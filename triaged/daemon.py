"""The daemon: the intake loop (IDLE-driven) and the outbox worker, until told to stop.

Under systemd (Type=notify) it says READY=1 once the database is open and the first mailbox
login succeeded, keeps STATUS= current, sends WATCHDOG=1 only while both loops keep turning,
RELOADING=1 on SIGHUP and STOPPING=1 on SIGTERM.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from datetime import UTC, datetime

from triaged.compose import Composer
from triaged.config import Config, load
from triaged.errors import ConfigError, MailboxError
from triaged.intake import IntakeRunner
from triaged.lock import InstanceLock
from triaged.mailbox import open_mailbox
from triaged.outbox import OutboxRunner
from triaged.sdnotify import Notifier
from triaged.store import Store
from triaged.transport import open_transport

log = logging.getLogger("triaged.daemon")

Clock = Callable[[], datetime]
MAX_BACKOFF = 60.0


def utcnow() -> datetime:
    return datetime.now(UTC)


class Daemon:
    def __init__(self, config: Config, clock: Clock = utcnow) -> None:
        self.config = config
        self.clock = clock
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
            threads = [
                threading.Thread(target=self._outbox_loop, name="outbox", daemon=True),
            ]
            if self.watchdog is not None:
                threads.append(
                    threading.Thread(target=self._watchdog_loop, name="watchdog", daemon=True)
                )
            for thread in threads:
                thread.start()
            try:
                self._intake_loop()
            finally:
                self.request_stop()
                threads[0].join(timeout=20)
                log.info("stopped")

    def _wait_slice(self) -> float:
        """How long one wait for new mail may last: the watchdog needs to see the loop turn."""
        limit = float(self.config.mailbox.idle_renew.seconds)
        if self.watchdog is not None:
            limit = min(limit, self.watchdog)
        return limit

    def _set_status(self, text: str) -> None:
        if text != self.status:
            self.status = text
            self.notifier.notify(f"STATUS={text}")

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
        self.config = new
        self.generation += 1
        self.outbox_wake.set()
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
                mailbox = open_mailbox(self.config.mailbox)
                try:
                    mailbox.connect()
                    runner = IntakeRunner(
                        self.config, store, mailbox, Composer(self.config), self.stop
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
                    while not self.stop.is_set() and not self.reload_requested.is_set():
                        handled = runner.run_once(self.clock())
                        if handled:
                            self.outbox_wake.set()
                            if self.on_intake is not None:
                                self.on_intake(handled)
                        self.progress["intake"] = time.monotonic()
                        self._set_status(
                            f"reading {mailbox.name}; last look "
                            f"{self.clock().strftime('%H:%M:%S')} UTC; "
                            f"{store.outbox_backlog()} message(s) waiting in the outbox"
                        )
                        log.debug("waiting for new mail")
                        self.wake.clear()
                        # Checked after clear(): a request that comes later sets `wake` again.
                        if self.stop.is_set() or self.reload_requested.is_set():
                            break
                        mailbox.wait(self._wait_slice(), self.wake)
                        self.progress["intake"] = time.monotonic()
                except MailboxError as exc:
                    failures += 1
                    self._set_status(f"mailbox unavailable: {exc}")
                    # One line per outage, not one per retry.
                    if failures == 1:
                        log.warning("mailbox unavailable, retrying with backoff: %s", exc)
                    else:
                        log.debug("mailbox still unavailable (try %d): %s", failures, exc)
                except Exception:
                    failures += 1
                    log.exception("intake pass failed; retrying")
                finally:
                    mailbox.close()
                self.progress["intake"] = time.monotonic()
                if failures and not self.stop.is_set():
                    self.wake.clear()
                    if not self.reload_requested.is_set():
                        self.wake.wait(backoff)
                    backoff = min(backoff * 2, MAX_BACKOFF)
        finally:
            store.close()

    def _outbox_loop(self) -> None:
        store = Store(self.config.database)
        generation = self.generation
        transport = open_transport(self.config.smtp)
        runner = OutboxRunner(store, transport, self.config.smtp)
        try:
            while not self.stop.is_set():
                if generation != self.generation:
                    transport.close()
                    generation = self.generation
                    transport = open_transport(self.config.smtp)
                    runner = OutboxRunner(store, transport, self.config.smtp)
                self.outbox_wake.clear()
                timeout = 60.0 if self.watchdog is None else min(60.0, self.watchdog)
                try:
                    runner.run_once(self.clock())
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

    def _watchdog_loop(self) -> None:
        assert self.watchdog is not None
        # Pinged only while both loops turned within two ping intervals: a loop stuck in a
        # call that never returns stops the pings, and systemd restarts the service.
        limit = 2 * self.watchdog
        while not self.stop.wait(self.watchdog / 2):
            now = time.monotonic()
            stuck = [name for name, at in self.progress.items() if now - at > limit]
            if stuck:
                log.error("no progress in %s for %.0fs: not petting the watchdog", stuck, limit)
                continue
            self.notifier.notify("WATCHDOG=1")
