"""The daemon's two runner loops (triaged/service/runner.py): intake and outbox.

Intake reads the mailbox (IMAP IDLE, a Maildir, or the LMTP server) and hands what waits to
`IntakeRunner.run_once`. Only a completed round trip with the mailbox (a pass over the folder,
a wait that ended) counts as progress, never a failed reconnect, so a hung IMAP server stops the
watchdog's pings. A failure starts (or goes on with) the mailbox outage.

Outbox hands due rows to `OutboxRunner.run_once`; SMTP trouble is not an exception there but the
runner's `error`, which this loop reports to liveness (the SMTP outage) after each pass.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from datetime import datetime
from typing import Protocol

from triaged.errors import MailboxError
from triaged.intake.runner import IntakeRunner
from triaged.mail.compose import Composer
from triaged.mail.mailbox import open_mailbox
from triaged.mail.mailbox.base import Mailbox
from triaged.mail.oauth2 import TokenManager
from triaged.mail.openpgp import Keyring
from triaged.mail.sealing import Sealer
from triaged.mail.transport import Transport, open_transport
from triaged.service.liveness import MAILBOX, SMTP, Liveness, Outage
from triaged.service.outbox import OutboxRunner
from triaged.service.runner import Host, RunnerLoop
from triaged.store import outbox as queue
from triaged.store.db import Store

log = logging.getLogger(__name__)

# How long the outbox loop sleeps when nothing is due (it is woken when mail is queued).
OUTBOX_IDLE = 60.0
# After an unexpected error in an outbox pass (not an SMTP failure: those are retried per row).
OUTBOX_RETRY = 5.0
# How often the intake loop's STATUS= may change while all is well (seconds).
STATUS_EVERY = 1.0


class DaemonHost(Host, Protocol):
    """What the two loops need of the daemon besides the runner loop's basics."""

    generation: int
    tokens: TokenManager | None  # OAuth2: one grant for both loops
    keyring: Keyring | None  # OpenPGP: the daemon's keys, None when it is off
    watchdog: float | None
    outbox_wake: threading.Event
    reload_requested: threading.Event
    on_intake: Callable[[int], None] | None

    def reload(self) -> bool:
        """Loads the configuration again (a bad one is refused and the running one kept)."""
        ...

    def mark_ready(self) -> None:
        """The service is up (READY=1, once)."""


def since(outage: Outage | None) -> str:
    return "" if outage is None else " " + outage.summary()


class IntakeLoop(RunnerLoop):
    name = "intake"

    def __init__(self, host: DaemonHost, wake: threading.Event) -> None:
        super().__init__(host, wake)
        self.daemon = host
        self.store: Store | None = None
        self.mailbox: Mailbox | None = None
        self.runner: IntakeRunner | None = None
        self.liveness: Liveness | None = None
        self.composer: Composer | None = None
        self._status_at: float | None = None

    def setup(self) -> None:
        self.store = Store(self.host.config.database)

    def prepare(self) -> None:
        if self.daemon.reload_requested.is_set():
            self.daemon.reload()
        config = self.host.config
        assert self.store is not None
        composer = Composer(config)
        self.liveness = Liveness(config, self.store, composer, self.daemon.outbox_wake.set)
        self.composer = composer
        self.mailbox = open_mailbox(
            config.mailbox,
            self.daemon.tokens,
            project_address=config.project.address,
            max_message_size=config.limits.max_message_size,
        )
        self.runner = None

    def connect(self) -> None:
        assert self.mailbox is not None and self.store is not None
        self._status_at = None  # the first turn on a connection says so at once
        self.mailbox.connect()
        self.runner = IntakeRunner(
            self.host.config,
            self.store,
            self.mailbox,
            self.composer,
            self.stop,
            self.daemon.keyring,
        )
        self.runner.start(self.host.clock())

    def _connected(self, failures: int) -> None:
        assert self.mailbox is not None
        if failures:
            log.info("mailbox %s reachable again", self.mailbox.name)
        else:
            log.info("reading %s", self.mailbox.name)
        self.daemon.mark_ready()

    def _one_iteration(self) -> None:
        assert self.runner is not None and self.mailbox is not None and self.store is not None
        handled = self.runner.run_once(
            self.host.clock(), self.host.clock, lambda: self.host.mark_progress(self.name)
        )
        if handled:
            self.daemon.outbox_wake.set()
            on_intake = self.daemon.on_intake
            if on_intake is not None:
                on_intake(handled)
        self._reading_status()

    def _reading_status(self) -> None:
        """STATUS= while all is well, at most once a second: with LMTP a turn can take a
        millisecond, and counting the outbox's backlog then costs more than the turn."""
        assert self.mailbox is not None and self.store is not None
        now = time.monotonic()
        if self._status_at is not None and now - self._status_at < STATUS_EVERY:
            return
        self._status_at = now
        self.host.set_status(
            f"reading {self.mailbox.name}; last look "
            f"{self.host.clock().strftime('%H:%M:%S')} UTC; "
            f"{queue.backlog(self.store)} message(s) waiting in the outbox",
            self.name,
        )

    def _recovered(self) -> None:
        liveness = self.liveness
        assert liveness is not None
        self.guarded(
            "ending the mailbox outage", lambda: liveness.succeeded(MAILBOX, self.host.clock())
        )

    def _wait(self) -> None:
        assert self.mailbox is not None
        log.debug("waiting for new mail")
        self.wake.clear()
        # Checked after clear(): a request that comes later sets `wake` again.
        if self.stop.is_set() or self.restart_wanted():
            return
        self.mailbox.wait(self._wait_slice(), self.wake)
        self.host.mark_progress(self.name)

    def _wait_slice(self) -> float:
        """How long one wait for new mail may last: the watchdog needs to see the loop turn."""
        limit = float(self.host.config.mailbox.idle_renew.seconds)
        watchdog = self.daemon.watchdog
        return limit if watchdog is None else min(limit, watchdog)

    def _failed(self, exc: Exception) -> None:
        if isinstance(exc, MailboxError):
            outage = self._outage(str(exc))
            self.host.set_status(f"mailbox unavailable{since(outage)}: {exc}", self.name)
            # One line per outage, not one per retry.
            if self.failures == 1:
                log.warning("mailbox unavailable, retrying with backoff: %s", exc)
            else:
                log.debug("mailbox still unavailable (try %d): %s", self.failures, exc)
            return
        log.error("intake pass failed; retrying", exc_info=exc)
        error = f"intake failed: {type(exc).__name__}: {exc}"
        outage = self._outage(error)
        self.host.set_status(f"intake failing{since(outage)}: {error}", self.name)

    def _outage(self, error: str) -> Outage | None:
        liveness = self.liveness
        if liveness is None:
            return None
        return self.guarded(
            "recording the mailbox outage",
            lambda: liveness.failed(MAILBOX, self.host.clock(), error),
        )

    def restart_wanted(self) -> bool:
        return self.daemon.reload_requested.is_set()

    def disconnect(self) -> None:
        # No progress mark here: a failed try is not progress.
        if self.mailbox is not None:
            self.mailbox.close()

    def close(self) -> None:
        if self.store is not None:
            self.store.close()


class OutboxLoop(RunnerLoop):
    name = "outbox"
    first_backoff = OUTBOX_RETRY
    max_backoff = OUTBOX_RETRY

    def __init__(self, host: DaemonHost) -> None:
        super().__init__(host, host.outbox_wake)
        self.daemon = host
        self.store: Store | None = None
        self.generation: int | None = None
        self.transport: Transport | None = None
        self.runner: OutboxRunner | None = None
        self.liveness: Liveness | None = None
        self.timeout = OUTBOX_IDLE

    def setup(self) -> None:
        self.store = Store(self.host.config.database)

    def connect(self) -> None:
        """(Re)builds the transport for the running configuration; the transport opens its SMTP
        connection itself when it has mail to send, and keeps it between passes."""
        if self.runner is not None and self.generation == self.daemon.generation:
            return
        assert self.store is not None
        if self.transport is not None:
            self.transport.close()
        config = self.host.config
        self.generation = self.daemon.generation
        self.transport = open_transport(config.smtp, self.daemon.tokens)
        keyring = self.daemon.keyring
        sealer = Sealer(config, keyring) if keyring is not None else None
        self.runner = OutboxRunner(self.store, self.transport, config.smtp, sealer)
        self.liveness = Liveness(config, self.store)

    def restart_wanted(self) -> bool:
        return self.generation != self.daemon.generation

    def _one_iteration(self) -> None:
        runner = self.runner
        assert runner is not None
        self.wake.clear()
        now = self.host.clock()
        sent = runner.run_once(now)
        self.guarded("recording the SMTP outage", lambda: self._smtp_liveness(sent, now))
        watchdog = self.daemon.watchdog
        self.timeout = OUTBOX_IDLE if watchdog is None else min(OUTBOX_IDLE, watchdog)
        due = runner.next_due()
        if due is not None:
            self.timeout = min(self.timeout, max((due - self.host.clock()).total_seconds(), 0.0))
        self.host.mark_progress(self.name)

    def _wait(self) -> None:
        self.wake.wait(self.timeout)

    def _failed(self, exc: Exception) -> None:
        log.error("outbox pass failed; retrying", exc_info=exc)
        # A pass that failed over the outbox table is still a turn of the loop: SMTP and the
        # database have their own alarms, and the watchdog is for a loop that hangs.
        self.host.mark_progress(self.name)

    def _smtp_liveness(self, sent: int, now: datetime) -> None:
        """After an outbox pass: SMTP took mail, kept failing, or (nothing waits) is not needed.

        Also alerts any outage that has lasted long enough (the loops only report tries, and
        a try can be far apart from the next one), and keeps the SMTP part of STATUS= current.
        """
        liveness, runner = self.liveness, self.runner
        assert liveness is not None and runner is not None
        if sent:
            liveness.succeeded(SMTP, now)
        elif runner.error is not None:
            liveness.failed(SMTP, now, runner.error)
        elif liveness.outage(SMTP) is not None and queue.backlog(liveness.store) == 0:
            # Nothing waits to be sent any more, so nothing is failing.
            liveness.succeeded(SMTP, now)
        liveness.check(now)
        outage = liveness.outage(SMTP)
        text = "" if outage is None else f"SMTP failing{since(outage)}: {outage.last_error}"
        self.host.set_status(text, "smtp")

    def close(self) -> None:
        if self.transport is not None:
            self.transport.close()
        if self.store is not None:
            self.store.close()
