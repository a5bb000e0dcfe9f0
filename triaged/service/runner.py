"""The runner loop: one source of work, served until the daemon stops (Mailman 3's `Runner`).

A subclass says how to reach its source and what one turn of work is; the loop around them is
the same for every source (the mailbox, the outbox):

    setup
    until stopped:
        prepare, connect
        until stopped or restart_wanted:  _one_iteration, then _wait
        disconnect
        after a failure: back off (first_backoff, doubling up to max_backoff), then again
    close

A failure anywhere in a cycle (connecting, a turn of work) is caught here, at the loop's
boundary, and handed to `_failed` (which logs it and tells liveness and STATUS=); the loop never
dies of one. `_recovered` is called after the first turn that worked on each connection, which
is when an outage is over. Progress for the daemon's watchdog is marked by the subclasses, where
a turn really reached its source (see `Host.mark_progress`).
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable
from datetime import UTC, datetime
from typing import Protocol, TypeVar

from triaged.config import Config

log = logging.getLogger(__name__)

# What the code reads the time from: the wall clock, or a test's.
Now = Callable[[], datetime]
MAX_BACKOFF = 60.0
T = TypeVar("T")


def utcnow() -> datetime:
    return datetime.now(UTC)


class Host(Protocol):
    """What a runner loop needs of the daemon that runs it."""

    config: Config
    clock: Now
    stop: threading.Event

    def set_status(self, text: str, part: str) -> None:
        """Sets this loop's part of systemd's STATUS= line."""

    def mark_progress(self, name: str) -> None:
        """A turn of the named loop completed (what the watchdog waits for)."""


class RunnerLoop:
    """The loop; subclasses override the hooks below (each documented where it is defined)."""

    name = "runner"
    first_backoff = 1.0
    max_backoff = MAX_BACKOFF

    def __init__(self, host: Host, wake: threading.Event) -> None:
        self.host = host
        # Set to cut a wait short: new work, a stop, a reload.
        self.wake = wake
        # Failed cycles in a row (0 once a connection worked again).
        self.failures = 0

    @property
    def stop(self) -> threading.Event:
        return self.host.stop

    # --- the loop ----------------------------------------------------------------------------

    def run(self) -> None:
        """Serves the source until the host's `stop` is set."""
        self.setup()
        backoff = self.first_backoff
        try:
            while not self.stop.is_set():
                self.prepare()
                error: Exception | None = None
                try:
                    self.connect()
                    self._connected(self.failures)
                    self.failures, backoff = 0, self.first_backoff
                    self._serve()
                except Exception as exc:
                    error = exc
                finally:
                    # Before the failure is handled (which may take a while, with the database
                    # in trouble): whoever waits on the source gets its answer now.
                    self.disconnect()
                if error is not None:
                    self.failures += 1
                    self._failed(error)
                if self.failures and not self.stop.is_set():
                    self._back_off(backoff)
                    backoff = min(backoff * 2, self.max_backoff)
        finally:
            self.close()

    def _serve(self) -> None:
        recovered = False
        while not self.stop.is_set() and not self.restart_wanted():
            self._one_iteration()
            if not recovered:
                # A whole turn worked on this connection: an outage, if any, is over.
                recovered = True
                self._recovered()
            if self.stop.is_set() or self.restart_wanted():
                break
            self._wait()

    def _back_off(self, delay: float) -> None:
        self.wake.clear()
        # Checked after clear(): a request that comes later sets `wake` again.
        if not self.restart_wanted():
            self.wake.wait(delay)

    def guarded(self, what: str, fn: Callable[[], T]) -> T | None:
        """Bookkeeping (liveness, callbacks) must never stop a loop: a failure is logged."""
        try:
            return fn()
        except Exception:
            log.exception("%s failed", what)
            return None

    # --- hooks ---------------------------------------------------------------------------------

    def setup(self) -> None:
        """Once, in the loop's own thread, before anything else (open the database here)."""

    def prepare(self) -> None:
        """Before each connect (a reload is applied here)."""

    def connect(self) -> None:
        """Reaches the source; raises when it cannot."""

    def _connected(self, failures: int) -> None:
        """The source was reached (`failures`: failed cycles before this one)."""

    def _one_iteration(self) -> None:
        """One turn of work; raises on failure."""
        raise NotImplementedError

    def _wait(self) -> None:
        """Waits for more work (until `wake` is set, or a time the subclass decides)."""
        raise NotImplementedError

    def _recovered(self) -> None:
        """The first turn after a connect worked."""

    def _failed(self, exc: Exception) -> None:
        """A cycle failed with `exc` (already counted in `failures`)."""
        log.error("%s failed; retrying", self.name, exc_info=exc)

    def restart_wanted(self) -> bool:
        """True when the loop must disconnect and connect again (a new configuration)."""
        return False

    def disconnect(self) -> None:
        """After each cycle, whatever happened; never raises."""

    def close(self) -> None:
        """Once, at the end (close the database here); never raises."""
