"""The daemon: the intake loop (IDLE-driven) and the outbox worker, until told to stop."""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable
from datetime import UTC, datetime

from triaged.compose import Composer
from triaged.config import Config
from triaged.errors import MailboxError
from triaged.intake import IntakeRunner
from triaged.mailbox import open_mailbox
from triaged.outbox import OutboxRunner
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
        self.outbox_wake = threading.Event()
        self.on_intake: Callable[[int], None] | None = None

    def run(self) -> None:
        # Migrations run once here, before any runner opens its own connection.
        Store(self.config.database).close()
        worker = threading.Thread(target=self._outbox_loop, name="outbox", daemon=True)
        worker.start()
        try:
            self._intake_loop()
        finally:
            self.stop.set()
            self.outbox_wake.set()
            worker.join(timeout=self.config.smtp.timeout.seconds + 5)
            log.info("stopped")

    def _intake_loop(self) -> None:
        store = Store(self.config.database)
        composer = Composer(self.config)
        backoff, failures = 1.0, 0
        try:
            while not self.stop.is_set():
                mailbox = open_mailbox(self.config.mailbox)
                try:
                    mailbox.connect()
                    runner = IntakeRunner(self.config, store, mailbox, composer)
                    runner.start(self.clock())
                    if failures:
                        log.info("mailbox %s reachable again", mailbox.name)
                    else:
                        log.info("reading %s", mailbox.name)
                    backoff, failures = 1.0, 0
                    while not self.stop.is_set():
                        handled = runner.run_once(self.clock())
                        if handled:
                            self.outbox_wake.set()
                            if self.on_intake is not None:
                                self.on_intake(handled)
                        log.debug("waiting for new mail")
                        mailbox.wait(self.config.mailbox.idle_renew.seconds, self.stop)
                except MailboxError as exc:
                    failures += 1
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
                if not self.stop.is_set():
                    self.stop.wait(backoff)
                    backoff = min(backoff * 2, MAX_BACKOFF)
        finally:
            store.close()

    def _outbox_loop(self) -> None:
        store = Store(self.config.database)
        transport = open_transport(self.config.smtp)
        runner = OutboxRunner(store, transport, self.config.smtp)
        try:
            while not self.stop.is_set():
                self.outbox_wake.clear()
                timeout = 60.0
                try:
                    runner.run_once(self.clock())
                    due = runner.next_due()
                except Exception:
                    log.exception("outbox pass failed; retrying")
                    due, timeout = None, 5.0
                if due is not None:
                    timeout = min(timeout, max((due - self.clock()).total_seconds(), 0.0))
                self.outbox_wake.wait(timeout)
        finally:
            transport.close()
            store.close()
