"""The daemon's signals (SIGTERM, SIGINT, SIGHUP), acted on in a thread of their own.

Python runs a signal handler in the main thread, between two bytecodes of whatever that thread
was doing, and the daemon's intake loop runs there. A handler that sets a `threading.Event` takes
the lock inside it; when the intake loop was itself inside that Event's `set()`, `clear()` or
`wait()` (it sets the outbox's wake-up after every pass that stored mail, the moment the MTA got
its 250s), the thread waits for a lock it holds, and the daemon never stops. So the handler only
writes the signal's number to a pipe, which takes no lock, and the "signals" thread reads it and
does the work (logging included: a log line written from a handler can break into another one).
"""

from __future__ import annotations

import contextlib
import logging
import os
import signal
import threading
from collections.abc import Callable, Mapping
from types import FrameType, TracebackType
from typing import Any

log = logging.getLogger(__name__)


class SignalRelay:
    """`with SignalRelay({signal.SIGTERM: stop, ...}):` calls `stop(signal.SIGTERM)` in the relay's
    thread on each SIGTERM while the block runs; on leaving, the previous handlers are back."""

    def __init__(self, actions: Mapping[int, Callable[[int], None]]) -> None:
        self.actions = dict(actions)
        self._previous: dict[int, Any] = {}
        self._read, self._write = os.pipe()
        # A full pipe (signals arriving faster than they are acted on) drops the extra ones:
        # the handler must never block.
        os.set_blocking(self._write, False)
        self._thread = threading.Thread(target=self._relay, name="signals", daemon=True)

    def __enter__(self) -> SignalRelay:
        self._thread.start()
        for signum in self.actions:
            self._previous[signum] = signal.signal(signum, self._handler)
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        for signum, previous in self._previous.items():
            signal.signal(signum, previous)
        # The relay thread reads the end of the pipe and returns.
        os.close(self._write)
        self._thread.join(timeout=5)
        os.close(self._read)

    def _handler(self, signum: int, frame: FrameType | None) -> None:
        with contextlib.suppress(BlockingIOError):
            os.write(self._write, bytes([signum]))

    def _relay(self) -> None:
        while data := os.read(self._read, 64):
            for signum in data:
                try:
                    self.actions[signum](signum)
                except Exception:
                    log.exception("acting on signal %d failed", signum)
