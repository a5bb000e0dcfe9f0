"""The daemon: the intake and outbox runner loops, the scheduler and the watchdog, until told
to stop.

The loops themselves are in triaged/service/loops.py, on the one loop of
triaged/service/runner.py. Under systemd (Type=notify) the daemon says READY=1 once the database
is open and the first mailbox login succeeded, keeps STATUS= current (each loop sets its part),
and says RELOADING=1 on SIGHUP and STOPPING=1 on SIGTERM. It sends WATCHDOG=1 only while both
loops make progress: the intake loop counts a completed round trip with the mailbox (a pass over
the folder, an IDLE or NOOP cycle), never a failed reconnect, so a hung IMAP server stops the
pings and systemd restarts the service. Outages of the mailbox and of SMTP are recorded and told
to the team by triaged.service.liveness.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable

from triaged.config import Config, load
from triaged.errors import ConfigError
from triaged.mail.oauth2 import tokens_for
from triaged.mail.openpgp import Keyring, open_keyring
from triaged.service.lock import InstanceLock
from triaged.service.loops import IntakeLoop, OutboxLoop
from triaged.service.runner import Now, utcnow
from triaged.service.scheduler import Scheduler
from triaged.service.sdnotify import Notifier
from triaged.store.db import Store

log = logging.getLogger(__name__)


class Daemon:
    """The host of the runner loops (triaged/service/loops.py): intake on the calling thread,
    outbox and watchdog on their own; the scheduler's jobs on its worker thread."""

    def __init__(self, config: Config, clock: Now = utcnow) -> None:
        self.config = config
        self.clock = clock
        # One token manager for both loops (OAuth2): they share one grant.
        self.tokens = tokens_for(config)
        self.stop = threading.Event()
        # Set to interrupt the intake loop's wait: on stop, on a reload request, on new mail.
        self.wake = threading.Event()
        self.outbox_wake = threading.Event()
        self.reload_requested = threading.Event()
        self.generation = 0
        self.on_intake: Callable[[int], None] | None = None
        # Called once, when the mailbox was first opened and read to (after IntakeRunner.start).
        self.on_ready: Callable[[], None] | None = None
        self.notifier = Notifier()
        self.watchdog = self.notifier.watchdog_interval()
        self.progress = {"intake": time.monotonic(), "outbox": time.monotonic()}
        self.ready = False
        self.status = ""
        # STATUS= is the intake loop's part, then the outbox loop's (only during an SMTP outage),
        # then the canary's (only while its probes do not come back).
        self._status_parts = {"intake": "", "smtp": "", "canary": ""}
        self._status_lock = threading.Lock()
        # Clock passes, outbox retries and the digest (triaged/service/scheduler.py).
        # triaged's OpenPGP keys (None: OpenPGP is off), loaded by run() and on reload.
        self.keyring: Keyring | None = None
        self.scheduler = Scheduler(
            lambda: self.config, self.clock, self.outbox_wake, self.set_status
        )

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
            outbox = threading.Thread(target=OutboxLoop(self).run, name="outbox", daemon=True)
            threads = [outbox]
            if self.watchdog is not None:
                threads.append(
                    threading.Thread(target=self._watchdog_loop, name="watchdog", daemon=True)
                )
            for thread in threads:
                thread.start()
            self.scheduler.start()
            try:
                IntakeLoop(self, self.wake).run()
            finally:
                self.request_stop()
                self.scheduler.shutdown()
                outbox.join(timeout=20)
                if self.keyring is not None:
                    self.keyring.close()
                log.info("stopped")

    # --- what the loops call (service/loops.DaemonHost) -------------------------------------

    def set_status(self, text: str, part: str) -> None:
        with self._status_lock:
            self._status_parts[part] = " ".join(text.split())  # one line, whatever a server said
            status = "; ".join(p for p in self._status_parts.values() if p)
            if status != self.status:
                self.status = status
                self.notifier.notify(f"STATUS={status}")

    def mark_progress(self, name: str) -> None:
        self.progress[name] = time.monotonic()

    def mark_ready(self) -> None:
        if not self.ready:
            self.ready = True
            self.notifier.notify("READY=1")
            if self.on_ready is not None:
                self.on_ready()

    def reload(self) -> bool:
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
        if new.oauth2 != self.config.oauth2 or self.tokens is None:
            self.tokens = tokens_for(new)
        self.keyring = keyring
        self.config = new
        self.generation += 1
        self.outbox_wake.set()
        self.scheduler.reloaded()
        log.info("configuration and templates reloaded from %s", new.path)
        self.notifier.notify("READY=1")
        return True

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
